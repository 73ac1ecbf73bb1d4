"""read_image, read_images, load_image_array (cache), list_images."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from d2lkaggle.data import images
from d2lkaggle.data.images import list_images, load_image_array, read_image, read_images


def rgb(seed: int, h: int = 8, w: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_png(path, arr: np.ndarray) -> str:
    Image.fromarray(arr).save(path)
    return str(path)


# ----------------------------------------------------------------------------- read_image

def test_rgb_png_roundtrip(tmp_path):
    a = rgb(0)
    out = read_image(save_png(tmp_path / "a.png", a))
    assert out.dtype == np.uint8 and out.shape == (8, 6, 3)
    np.testing.assert_array_equal(out, a)
    out[0, 0] = 0  # writable


def test_grey_rgba_palette_cmyk_become_rgb(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(8, 6) * 5
    g = read_image(save_png(tmp_path / "g.png", grey))
    assert g.shape == (8, 6, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, np.repeat(grey[:, :, None], 3, axis=2))

    rgba = np.dstack([rgb(1), np.full((8, 6), 7, np.uint8)])
    r = read_image(save_png(tmp_path / "r.png", rgba))
    np.testing.assert_array_equal(r, rgba[:, :, :3])  # alpha dropped, like ImageFolder

    pal = Image.new("P", (3, 2))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 0])
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    p = read_image(tmp_path / "p.png")
    expected = np.array([[10, 20, 30], [200, 100, 50], [10, 20, 30],
                         [200, 100, 50], [200, 100, 50], [10, 20, 30]], np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(p, expected)

    Image.new("CMYK", (4, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    c = read_image(tmp_path / "c.jpg")
    assert c.shape == (3, 4, 3) and c.dtype == np.uint8 and c.min() >= 250  # white

    la = Image.fromarray(np.dstack([grey, grey]), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[:, :, 1], grey)


def test_16_bit_grey_scaled(tmp_path):
    a16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[:, :, 0], (a16 >> 8).astype(np.uint8))


def test_jpeg(tmp_path):
    a = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert np.abs(out.astype(int) - a).max() <= 3


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(bad)
    good = save_png(tmp_path / "good.png", rgb(2, 64, 64))
    with open(good, "rb") as f:
        data = f.read()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.png"):
        read_image(trunc)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_read_images_order_and_errors(tmp_path):
    arrays = [rgb(i) for i in range(20)]
    paths = [save_png(tmp_path / f"{i}.png", a) for i, a in enumerate(arrays)]
    for workers in (None, 0, 4):
        out = read_images(paths, num_workers=workers)
        assert len(out) == 20
        for a, b in zip(arrays, out):
            np.testing.assert_array_equal(a, b)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="x.png"):
        read_images(paths + [str(tmp_path / "x.png")], num_workers=3)


# ----------------------------------------------------------------------------- cache

@pytest.fixture
def data(tmp_path):
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    arrays = [rgb(i, 4, 5) for i in range(6)]
    paths = [save_png(train / f"{i}.png", a) for i, a in enumerate(arrays)]
    return tmp_path / "data", paths, arrays


def count_reads(monkeypatch) -> list[int]:
    calls = []
    real = images.read_images

    def counting(paths, num_workers=None):
        calls.append(len(list(paths)))
        return real(paths, num_workers)

    monkeypatch.setattr(images, "read_images", counting)
    return calls


def test_load_image_array_builds_and_reuses_cache(data, monkeypatch):
    root, paths, arrays = data
    calls = count_reads(monkeypatch)
    a = load_image_array(paths)
    assert a.shape == (6, 4, 5, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, np.stack(arrays))
    assert calls == [6]
    cache_files = os.listdir(root / ".d2lkaggle_cache")  # next to the data by default
    assert len(cache_files) == 1 and cache_files[0].endswith(".npy")
    b = load_image_array(paths)
    assert calls == [6]  # served from the cache, nothing decoded
    np.testing.assert_array_equal(a, b)


def test_cache_invalidated_when_a_file_changes(data, monkeypatch):
    root, paths, arrays = data
    calls = count_reads(monkeypatch)
    load_image_array(paths)
    new = rgb(99, 4, 5)
    save_png(paths[2], new)
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # be sure mtime moves
    c = load_image_array(paths)
    assert calls == [6, 6]
    np.testing.assert_array_equal(c[2], new)
    load_image_array(paths[:4])  # another file list, another cache
    assert calls == [6, 6, 4]
    load_image_array(paths)  # the changed set is cached now
    assert calls == [6, 6, 4]


def test_cache_dir_and_damaged_cache(data, tmp_path, monkeypatch):
    _, paths, arrays = data
    calls = count_reads(monkeypatch)
    cache_dir = tmp_path / "cache"
    load_image_array(paths, cache_dir=cache_dir)
    (f,) = os.listdir(cache_dir)
    (cache_dir / f).write_bytes(b"garbage")
    a = load_image_array(paths, cache_dir=cache_dir)
    assert calls == [6, 6]  # rebuilt, not crashed
    np.testing.assert_array_equal(a, np.stack(arrays))
    assert [n for n in os.listdir(cache_dir) if n.startswith(".tmp")] == []


def test_different_sizes_name_the_file(data):
    root, paths, _ = data
    odd = save_png(root / "train" / "odd.png", rgb(5, 7, 5))
    with pytest.raises(ValueError) as e:
        load_image_array(paths[:3] + [odd] + paths[3:])
    msg = str(e.value)
    assert "odd.png" in msg and "(7, 5, 3)" in msg and "(4, 5, 3)" in msg


def test_load_image_array_empty():
    with pytest.raises(ValueError, match="no image paths"):
        load_image_array([])


# ----------------------------------------------------------------------------- listing

def test_list_images_natural_order_and_hidden(tmp_path):
    for name in ["10.png", "2.png", "1.png", "b.jpg", "a10.png", "a2.png", ".DS_Store", "._1.png"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    names = [os.path.basename(p) for p in list_images(tmp_path)]
    assert names == ["1.png", "2.png", "10.png", "a10.png", "a2.png", "b.jpg"]
    assert list_images(tmp_path)[0] == os.path.join(str(tmp_path), "1.png")


# ----------------------------------------------------------------------------- issue 12

def test_huge_image_is_named_before_anything_is_allocated(tmp_path):
    from PIL import Image

    from d2lkaggle.data.images import check_images, image_size, read_image
    (tmp_path / "train").mkdir()
    paths = [save_png(tmp_path / "train" / f"{i}.png", rgb(i, 8, 8)) for i in range(1, 6)]
    huge = str(tmp_path / "train" / "0.png")
    Image.new("1", (12000, 12000)).save(huge)  # 18 MB of bits; 432 MB as RGB
    with pytest.raises(ValueError) as e:
        load_image_array([huge] + paths)  # the huge one first: it would set the shape
    assert huge in str(e.value) and "12000x12000" in str(e.value)
    with pytest.raises(ValueError, match="12000x12000"):
        read_image(huge)
    with pytest.raises(ValueError, match="0.png"):
        image_size(huge)
    assert check_images(paths, same_size=True) == (8, 8)


def test_check_images_names_a_file_that_is_not_an_image(tmp_path):
    from d2lkaggle.data.images import check_images
    good = save_png(tmp_path / "a.png", rgb(0, 6, 6))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="b.jpg"):
        check_images([good, str(bad)])


def test_odd_sized_first_image_is_the_one_named(tmp_path):
    (tmp_path / "train").mkdir()
    paths = [save_png(tmp_path / "train" / f"{i}.png", rgb(i, 8, 8)) for i in range(1, 6)]
    big = save_png(tmp_path / "train" / "0.png", rgb(0, 3000, 2000))  # under the pixel limit
    with pytest.raises(ValueError) as e:
        load_image_array([big] + paths)
    assert str(e.value).startswith(f"images differ in size: {big} is (3000, 2000, 3)")
