"""Test sets at Kaggle's size stream: checked before training, never held decoded (issue 15)."""
import shutil

import numpy as np
import pytest
from PIL import Image

from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.data.stream import FolderSource
from d2lkaggle.data.images import read_image
from d2lkaggle.compete.load import load_data
from d2lkaggle.compete.run import run_competition
from d2lkaggle.data.stream import check_test_images


@pytest.fixture
def cifar(demo_dir, tmp_path):
    return shutil.copytree(demo_dir, tmp_path / "cifar")


def test_test_images_stream_from_files_in_submission_order(cifar):
    comp = get_competition("cifar10")
    data = load_data(comp, str(cifar), batch_size=8, valid_ratio=0.1)
    src = data.test_iter.source
    assert isinstance(src, FolderSource)   # nothing decoded is held for the test set
    assert [p.split("/")[-1] for p in src.paths] == [f"{i}.png" for i in data.test_ids]
    x = np.concatenate([b for b, _ in data.test_iter])
    assert x.shape == (len(data.test_ids), 32, 32, 3)
    np.testing.assert_array_equal(x[4], read_image(cifar / "test" / f"{data.test_ids[4]}.png"))


@pytest.mark.parametrize("damage", ["truncated", "other size"])
def test_bad_test_png_is_named_before_the_first_epoch(cifar, tmp_path, damage):
    victim = cifar / "test" / "7.png"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:60])   # its header still reads
    else:
        Image.new("RGB", (33, 32)).save(victim)
    logs = []
    with pytest.raises(ValueError, match="7.png"):
        run_competition("demo", str(cifar), out=str(tmp_path / "run"), progress=False,
                        log=logs.append, epochs=1)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not any("epoch" in line for line in logs)


def test_check_test_images_decodes_in_chunks_and_checks_the_shape(cifar):
    paths = sorted(str(p) for p in (cifar / "test").iterdir())
    assert check_test_images(paths, (32, 32, 3), num_workers=0, chunk=7) == len(paths)
    with pytest.raises(ValueError, match=r"training images are \(16, 16, 3\)"):
        check_test_images(paths, (16, 16, 3), chunk=7)


def test_scan_ids_names_two_files_with_one_id_and_keeps_the_natural_order(tmp_path):
    from d2lkaggle.data.stream import scan_ids
    for name in ("10.png", "2.png", "1.jpg", "b.png", "a.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"")
    ids = scan_ids(str(tmp_path))
    assert list(ids) == ["1", "2", "10", "a", "b"] and ids["1"] == ".jpg"
    src = FolderSource(str(tmp_path), list(ids), ids)
    assert src.paths[0].endswith("1.jpg") and src.path(2).endswith("10.png")
    (tmp_path / "2.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="'2.jpg' and '2.png'"):
        scan_ids(str(tmp_path))
