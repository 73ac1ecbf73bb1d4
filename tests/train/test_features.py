"""--cache-features: the frozen backbone runs once per image; the head trains as without it."""
import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from conftest import backend_params, run_cli, run_py
from d2lkaggle.data.transforms import preset_transforms
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.train.features import (FeatureLoader, cached_features, check_cacheable, deterministic,
                                feature_key)


def test_only_deterministic_transforms_may_be_cached():
    train, test = preset_transforms("none", 32, book="dog")
    assert deterministic(train) and deterministic(test) and deterministic(None)
    book_train, _ = preset_transforms("book", 32, book="dog")
    assert not deterministic(book_train)
    assert not deterministic(lambda img, rng: img)   # a user's callable may draw randomness


def test_refusals_are_one_clear_line():
    dog = get_competition("dog-breed").recipe
    book_train, _ = preset_transforms("book", 224, book="dog")
    with pytest.raises(ValueError, match="add --augment none"):
        check_cacheable(dog, book_train)
    with pytest.raises(ValueError, match="'finetune'"):
        check_cacheable(get_competition("cifar10").recipe, None)
    with pytest.raises(ValueError, match="MixUp"):
        check_cacheable(dog.with_overrides(mixup=0.2), None)
    check_cacheable(dog, preset_transforms("none", 224, book="dog")[0])   # allowed


def test_feature_batches_are_the_image_loaders_batches():
    x = np.zeros((23, 4, 4, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(23)              # pixel (0, 0) says which image it is
    y = np.arange(23) % 3
    img = ImageLoader(ArraySource(x), y, 5, shuffle=True, drop_last=True, seed=7)
    feats = FeatureLoader.like(img, x[:, 0, 0, :1].astype(np.float32))
    for epoch in (0, 3):
        img.set_epoch(epoch), feats.set_epoch(epoch)
        a, b = list(img), list(feats)
        assert len(a) == len(b) == len(img) == 4
        for (xi, yi), (fi, yf) in zip(a, b):
            np.testing.assert_array_equal(xi[:, 0, 0, 0], fi[:, 0])
            np.testing.assert_array_equal(yi, yf)


def _images(tmp_path, n=5):
    from PIL import Image
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_features_are_computed_once_and_never_trusted_when_stale(tmp_path):
    paths = _images(tmp_path)
    calls = []

    def compute(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :6].astype(np.float32)

    key = lambda w="w1": feature_key(w, None, backend="numpy")  # noqa: E731
    a = cached_features(paths[:3], compute, None, key(), "numpy")
    assert sum(calls) == 3 and a.shape == (3, 6)
    cache = tmp_path / "data" / ".d2lkaggle_cache"
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("features-numpy-") and files[0].endswith(".npz")
    b = cached_features(paths, compute, None, key(), "numpy")     # 3 cached, 2 new
    assert sum(calls) == 5
    np.testing.assert_array_equal(a, b[:3])
    c = cached_features(paths[::-1], compute, None, key(), "numpy")   # all from the cache
    assert sum(calls) == 5
    np.testing.assert_array_equal(c, b[::-1])
    cached_features(paths, compute, None, key("w2"), "numpy")      # other backbone weights
    assert sum(calls) == 10
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a touched image
    cached_features(paths, compute, None, key(), "numpy")
    assert sum(calls) == 11
    # new pixels, the same size, the old mtime put back: the change time still tells
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(paths[3], compress_level=0)
    cached_features(paths, compute, None, key(), "numpy")
    assert sum(calls) == 12
    before = os.stat(paths[3])
    time.sleep(0.01)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(paths[3], compress_level=0)
    os.utime(paths[3], ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(paths[3])
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == \
        (before.st_size, before.st_mtime_ns, before.st_ino)
    e = cached_features(paths, compute, None, key(), "numpy")
    assert sum(calls) == 13 and (e[3] == 200).all()
    # a copy with preserved times (shutil.copy2) put in its place: another inode
    shutil.copy2(paths[4], str(tmp_path / "copy.png"))
    os.replace(str(tmp_path / "copy.png"), paths[4])
    cached_features(paths, compute, None, key(), "numpy")
    assert sum(calls) == 14
    for f in os.listdir(cache):           # a damaged file is recomputed, never trusted
        (cache / f).write_bytes(b"PK garbage")
    d = cached_features(paths, compute, None, key(), "numpy")
    assert sum(calls) == 19
    np.testing.assert_array_equal(d[:3], b[:3])


EQUIV = r"""
import json, sys
import numpy as np
import d2lkaggle
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.train.features import train_with_cached_features
from d2lkaggle.compete.run import load_data
name, data_dir = sys.argv[1], sys.argv[2]
bk = d2lkaggle.get_backend(name)
comp = get_competition("dog-breed")
def loaders():
    return load_data(comp, data_dir, batch_size=8, valid_ratio=0.25, image_size=32, seed=0,
                     num_workers=1, augment="none")
def net():
    bk.set_seed(0)
    return bk.finetune_net(4, hidden=16)
kw = dict(lr=0.05, wd=1e-4, progress=False, log=None, amp=False)
d = loaders()
a = net(); ha = bk.train(a, d.train_iter, d.valid_iter, 3, devices=None, **kw)
logs = []
d = loaders()
b = net(); hb = train_with_cached_features(bk, b, d.train_iter, d.valid_iter, 3, devices=None,
                                           backend=name, **dict(kw, log=logs.append))
c = net(); train_with_cached_features(bk, c, d.train_iter, d.valid_iter, 1, devices=None,
                                      backend=name, **dict(kw, log=logs.append))
sa, sb = bk.get_state(a), bk.get_state(b)
assert sorted(sa) == sorted(sb)
head = [k for k in sa if k.startswith("head.")]
diff = max(float(np.abs(sa[k] - sb[k]).max()) for k in head)
back = max(float(np.abs(sa[k] - sb[k]).max()) for k in sa if k not in head)
pa, pb = bk.predict(a, d.test_iter), bk.predict(b, d.test_iter)
print(json.dumps({"head": diff, "backbone": back, "pred": float(np.abs(pa - pb).max()),
                  "loss_a": ha.column("train_loss"), "loss_b": hb.column("train_loss"),
                  "valid_a": ha.column("valid_loss"), "valid_b": hb.column("valid_loss"),
                  "moved": max(float(np.abs(sa[k] - bk.get_state(net())[k]).max()) for k in head),
                  "logs": logs}))
"""


@pytest.mark.parametrize("backend", backend_params())
def test_cached_head_training_equals_training_on_images(backend, dog_dir, tmp_path):
    data = shutil.copytree(dog_dir, tmp_path / "dog")
    r = run_py(EQUIV, backend, str(data), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["moved"] > 1e-3                  # the head did train
    assert out["backbone"] == 0.0               # the frozen backbone did not move
    assert out["head"] < 1e-4, out              # same head, up to float32 rounding
    np.testing.assert_allclose(out["loss_a"], out["loss_b"], rtol=1e-4)
    np.testing.assert_allclose(out["valid_a"], out["valid_b"], rtol=1e-4)
    assert out["pred"] < 1e-4
    assert any("computed once" in line for line in out["logs"])
    assert any("from " in line and line.endswith(".npz") for line in out["logs"][2:])  # reused


def test_cli_refuses_augmented_images_and_runs_with_augment_none(dog_dir, tmp_path):
    from d2lkaggle.utils.registry import is_installed
    if not is_installed("torch"):
        pytest.skip("torch is not installed")
    data = shutil.copytree(dog_dir, tmp_path / "dog")
    base = ["run", "dog-breed", "--data-dir", str(data), "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--quiet", "--weights", "none", "--cache-features"]
    r = run_cli(*base, "--augment", "book", "--out", str(tmp_path / "a"))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "--augment none" in err[0], r.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()
    r = run_cli(*base, "--augment", "none", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "computed once" in r.stdout
    # the retrain phase (all labelled images) reads what the train/valid phase computed
    import re
    reused = [int(n) for n in re.findall(r"computed once in [\d.]+ s \([\d.]+ images/s; (\d+) "
                                         r"from the cache\)", r.stdout)]
    assert len(reused) == 3 and reused[:2] == [0, 0] and reused[2] == 44, r.stdout
    assert (tmp_path / "b" / "submission.csv").exists()
    # the estimate counts the features still to compute (44 + 4 + the retrain's 4 through the
    # training transform) and the head's batches; the report times the two apart
    said = [line for line in r.stdout.splitlines() if line.startswith("expected duration: ")]
    assert len(said) == 1 and "backbone features of 52 images" in said[0], said
    assert "train/valid 1 epoch × 5 head batches of 8" in said[0], said
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["features"]["images_computed"] == 52 and s["features"]["images_from_cache"] == 44
    assert s["features"]["examples_per_sec_is"] == "the head's training on cached features"
    assert abs(s["timings"]["features_s"] - s["features"]["seconds"]) < 0.02
    report = [line for line in r.stdout.splitlines() if line.startswith("dog-breed with torch: ")]
    assert "backbone features of 52 images in " in report[0] and \
        "head training" in report[0] and "examples/s on them" in report[0], report
