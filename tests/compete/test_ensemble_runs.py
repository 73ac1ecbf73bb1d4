"""Ensembles of real runs through the CLI, each backend in its own subprocess (tiny data)."""
import json
import os

import numpy as np
import pytest

from conftest import backend_params, run_cli
from d2lkaggle.compete.runfolder import load_run
from d2lkaggle.data.splits import bootstrap_split, stratified_folds
from d2lkaggle.data.labels import read_csv_labels

FAST = ["--epochs", "1", "--batch-size", "32", "--quiet", "--workers", "2", "--no-retrain"]
#: bagging and k-fold never retrain: --no-retrain is refused there
OWN_SPLIT = [a for a in FAST if a != "--no-retrain"]
torch_only = backend_params("torch")


def _ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def _sample_ids(demo_dir):
    with open(os.path.join(demo_dir, "sampleSubmission.csv")) as f:
        return [line.split(",")[0] for line in f.read().splitlines()[1:]]


@pytest.mark.parametrize("pair", [pytest.param(
    ("torch", "mxnet"), marks=backend_params("torch")[0].marks + backend_params("mxnet")[0].marks)])
def test_cross_backend_ensemble(pair, demo_dir, tmp_path):
    runs = []
    for name in pair:
        out = tmp_path / name
        _ok(run_cli("run", "demo", "--data-dir", demo_dir, "--backend", name, "--out", str(out),
                    *FAST, "--tta", "flip"))
        r = load_run(str(out))
        assert r.test_probs.shape == (30, 10) and r.test_ids == _sample_ids(demo_dir)
        assert np.load(out / "test_probs.npy").dtype == np.float32
        np.testing.assert_allclose(r.test_probs.sum(1), 1, atol=1e-5)
        assert len(r.valid_ids) == 20 and r.summary["tta"] == "flip"
        assert r.summary["tta_valid_acc"] is not None
        runs.append(r)
    assert runs[0].valid_ids == runs[1].valid_ids  # one seed: one split in every backend
    out = tmp_path / "ens"
    r = run_cli("ensemble", str(tmp_path / pair[0]), str(tmp_path / pair[1]), "--out", str(out),
                "--weights", "auto")
    _ok(r)
    assert "ensemble (soft vote)" in r.stdout
    s = json.load(open(out / "summary.json"))
    assert s["backend"] == "mxnet+torch" and s["num_common_valid"] == 20
    assert [m["backend"] for m in s["members"]] == list(pair)
    w = s["weights"]
    np.testing.assert_allclose(np.load(out / "test_probs.npy"),
                               w[0] * runs[0].test_probs + w[1] * runs[1].test_probs, atol=1e-5)
    assert s["valid_loss"] <= min(m["valid_loss"] for m in s["members"]) + 1e-6
    rows = open(out / "submission.csv").read().splitlines()
    assert rows[0] == "id,label" and [x.split(",")[0] for x in rows[1:]] == _sample_ids(demo_dir)


@pytest.mark.parametrize("backend", torch_only)
def test_ensemble_members_and_resume(backend, demo_dir, tmp_path):
    out = tmp_path / "ens"
    args = ["run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out), *FAST,
            "--ensemble", "2"]
    _ok(run_cli(*args))
    members = [load_run(str(out / "members" / str(k))) for k in range(2)]
    assert [m.summary["seed"] for m in members] == [0, 1]
    assert members[0].valid_ids == members[1].valid_ids  # the members share one split
    assert not np.allclose(members[0].test_probs, members[1].test_probs)
    s = json.load(open(out / "summary.json"))
    assert s["kind"] == "ensemble" and s["num_common_valid"] == 20 and s["valid_acc"] is not None
    np.testing.assert_allclose(np.load(out / "test_probs.npy"),
                               (members[0].test_probs + members[1].test_probs) / 2, atol=1e-6)
    # an interrupted second member: --resume keeps member 0 and redoes member 1 only
    first = os.path.getmtime(out / "members" / "0" / "test_probs.npy")
    os.unlink(out / "members" / "1" / "summary.json")
    os.unlink(out / "summary.json")
    r = run_cli(*args, "--resume")
    _ok(r)
    assert "member 1/2: finished earlier" in r.stdout.replace("members", "member")
    assert os.path.getmtime(out / "members" / "0" / "test_probs.npy") == first
    assert os.path.exists(out / "members" / "1" / "summary.json") and os.path.exists(out / "summary.json")
    # resuming with other settings is refused
    r = run_cli(*args[:-1], "3", "--resume")
    assert r.returncode != 0 and "members=2" in r.stderr and "members=3" in r.stderr


@pytest.mark.parametrize("backend", torch_only)
def test_bagging_members_validate_out_of_bag(backend, demo_dir, tmp_path):
    out = tmp_path / "bag"
    _ok(run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                *OWN_SPLIT, "--ensemble", "2", "--bagging", "--seed", "4"))
    ids = sorted(read_csv_labels(os.path.join(demo_dir, "trainLabels.csv")))
    oob_union = set()
    for k in range(2):
        m = load_run(str(out / "members" / str(k)))
        assert m.valid_ids == bootstrap_split(ids, 4 + k)[1]
        oob_union |= set(m.valid_ids)
    s = json.load(open(out / "summary.json"))
    assert s["kind"] == "bagging" and s["oob_images"] == len(oob_union) and 0 <= s["oob_acc"] <= 1
    assert json.load(open(out / "valid_ids.json"))["ids"] == sorted(oob_union)


@pytest.mark.parametrize("backend", torch_only)
def test_folds_out_of_fold_over_all_labels(backend, demo_dir, tmp_path):
    out = tmp_path / "folds"
    _ok(run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                *OWN_SPLIT, "--folds", "2"))
    labels = read_csv_labels(os.path.join(demo_dir, "trainLabels.csv"))
    folds = stratified_folds(labels, 2, 0)
    parts = [load_run(str(out / "folds" / str(k))) for k in range(2)]
    assert [p.valid_ids for p in parts] == folds
    s = json.load(open(out / "summary.json"))
    assert s["kind"] == "folds" and s["oof_images"] == len(labels) == 200
    oof = np.load(out / "valid_probs.npy")
    assert oof.shape == (200, 10)
    y = [json.load(open(out / "valid_ids.json"))["labels"][i] for i in range(200)]
    classes = json.load(open(out / "classes.json"))
    acc = float(np.mean([classes[k] == c for k, c in zip(oof.argmax(1), y)]))
    assert s["oof_acc"] == pytest.approx(acc)
    np.testing.assert_allclose(np.load(out / "test_probs.npy"),
                               (parts[0].test_probs + parts[1].test_probs) / 2, atol=1e-6)


def test_run_flags_bad_input(demo_dir, tmp_path):
    out = tmp_path / "x"
    for args, msg in ((["--folds", "1"], "--folds must be an integer >= 2"),
                      (["--folds", "500"], "larger than the rarest class"),
                      (["--ensemble", "0"], "--ensemble must be an integer >= 2"),
                      (["--ensemble", "1"], "--ensemble must be an integer >= 2"),
                      (["--bagging"], "--bagging needs --ensemble"),
                      (["--folds", "2", "--no-retrain"], "--no-retrain does not apply to --folds"),
                      (["--ensemble", "2", "--folds", "2"], "choose one"),
                      (["--members-vary", "model"], "need --ensemble K"),
                      (["--tta", "spin"], "unknown TTA")):
        r = run_cli("run", "demo", "--data-dir", demo_dir, "--out", str(out), *args)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
        assert not out.exists() or not any(
            f.endswith((".npy", ".csv")) or f == "summary.json" for _, _, fs in os.walk(out)
            for f in fs), args


TTA_CODE = """
import json, sys
import numpy as np
import d2lkaggle
sys.path.insert(0, "tests")
from conftest import tiny_loaders
from d2lkaggle.data.loader import ArraySource, ImageLoader
B = d2lkaggle.get_backend(sys.argv[1])
B.set_seed(0)
net = B.resnet18(4, 3, 8)
_, va = tiny_loaders(n=64, size=16)
x = va.source.array[va.source.index][:27]          # 16 + 11 rows: a partial last batch
plain = ImageLoader(ArraySource(x), None, 16, mean=va.mean, std=va.std)
mirror = ImageLoader(ArraySource(np.ascontiguousarray(x[:, :, ::-1])), None, 16,
                     mean=va.mean, std=va.std)
p, pm = B.predict(net, plain, amp=False), B.predict(net, mirror, amp=False)
t = B.predict(net, plain, amp=False, tta="flip")
t10 = B.predict(net, plain, amp=False, tta="flip-crop")
print(json.dumps({"shape": list(t.shape), "shape10": list(t10.shape),
                  "err": float(np.abs(t - (p + pm) / 2).max()),
                  "changed": float(np.abs(t - p).max()),
                  "sums": float(np.abs(t10.sum(1) - 1).max())}))
"""


@pytest.mark.parametrize("backend", backend_params())
def test_tta_in_every_backend(backend):
    from conftest import run_py
    r = run_py(TTA_CODE, backend)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["shape"] == [27, 4] and res["shape10"] == [27, 4]
    assert res["err"] < 1e-5 and res["changed"] > 1e-4 and res["sums"] < 1e-5
