"""The write-ups' augmentations and the named presets."""
import numpy as np
import pytest

from d2lkaggle.data import transforms as A


def img(h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "symmetric"])
def test_random_crop_pads_like_torchvision_and_crops_in_range(mode):
    x = img(6, 5)
    padded = A.pad(x, 2, mode, fill=7)
    assert padded.shape == (10, 9, 3)
    np.testing.assert_array_equal(padded[2:8, 2:7], x)
    if mode == "constant":
        assert (padded[0] == 7).all()
    elif mode == "reflect":  # edge pixel not repeated: row -1 is row 1
        np.testing.assert_array_equal(padded[1, 2:7], x[1])
    elif mode == "edge":
        np.testing.assert_array_equal(padded[0, 2:7], x[0])
    else:
        np.testing.assert_array_equal(padded[1, 2:7], x[0])
    crop = A.RandomCrop(6, padding=2, padding_mode=mode, fill=7)
    outs = [crop(x, np.random.default_rng(s)) for s in range(40)]
    for o in outs:
        assert o.shape == (6, 6, 3)
        # every crop is a window of the padded image
        assert any(np.array_equal(o, padded[t:t + 6, l:l + 6]) for t in range(5) for l in range(4))
    assert len({o.tobytes() for o in outs}) > 5
    np.testing.assert_array_equal(crop(x, np.random.default_rng(1)), crop(x, np.random.default_rng(1)))


def test_random_crop_needs_a_large_enough_image():
    with pytest.raises(ValueError, match="pad_if_needed"):
        A.RandomCrop(40)(img(), np.random.default_rng(0))
    assert A.RandomCrop(40, pad_if_needed=True)(img(), np.random.default_rng(0)).shape == (40, 40, 3)
    with pytest.raises(ValueError, match="padding_mode"):
        A.RandomCrop(32, 4, padding_mode="wrap")


def test_rotation_is_counter_clockwise_and_fills_corners():
    x = img(8, 8)
    r90 = A.RandomRotation((90, 90))(x, np.random.default_rng(0))
    np.testing.assert_array_equal(r90, np.rot90(x))  # counter-clockwise, like torchvision
    r = A.RandomRotation((45, 45), fill=(255, 0, 0))(img(16, 16), np.random.default_rng(0))
    assert tuple(r[0, 0]) == (255, 0, 0)
    angles = {A.RandomRotation(15)(x, np.random.default_rng(s)).tobytes() for s in range(10)}
    assert len(angles) > 1


def test_random_erasing_and_cutout():
    x = np.full((20, 20, 3), 200, np.uint8)
    e = A.RandomErasing(p=1.0, scale=(0.1, 0.2), value=0)(x, np.random.default_rng(0))
    frac = (e == 0).all(-1).mean()
    assert 0.05 < frac < 0.25
    assert A.RandomErasing(p=0.0)(x, np.random.default_rng(0)) is x
    noisy = A.RandomErasing(p=1.0, value="random")(x, np.random.default_rng(1))
    assert (noisy != 200).any()
    c = A.Cutout(8)(x, np.random.default_rng(0))
    zeros = (c == 0).all(-1)
    assert 0 < zeros.sum() <= 64
    rows, cols = np.nonzero(zeros)
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8  # one square
    assert (x == 200).all()  # input never modified


def test_resize_interpolations_differ_and_bad_names_fail():
    x = img(10, 10)
    outs = {m: A.Resize(25, m)(x) for m in A.INTERPOLATIONS}
    assert all(o.shape == (25, 25, 3) for o in outs.values())
    assert not np.array_equal(outs["nearest"], outs["bicubic"])
    np.testing.assert_array_equal(outs["nearest"][::5, ::5][:5, :5], x[::2, ::2][:5, :5])
    with pytest.raises(ValueError, match="interpolation"):
        A.Resize(25, "lanczos")


@pytest.mark.parametrize("preset", A.PRESETS)
@pytest.mark.parametrize("book, shape, size", [("cifar", (32, 32), 32), ("dog", (50, 40), 32)])
def test_presets_give_seeded_fixed_size_images(preset, book, shape, size):
    train, test = A.preset_transforms(preset, size, book=book)
    x = img(*shape)
    a, b = train(x, np.random.default_rng(5)), train(x, np.random.default_rng(5))
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert test(x, np.random.default_rng(0)).shape == (size, size, 3)
    if preset == "none":
        np.testing.assert_array_equal(a, train(x, np.random.default_rng(6)))


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="crop-flip-rotate"):
        A.preset_transforms("autoaugment", 32)


def test_load_data_takes_a_preset_or_a_pair(demo_dir):
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.compete.load import load_data
    comp = get_competition("demo")
    d = load_data(comp, demo_dir, batch_size=16, valid_ratio=0.1, augment="crop-flip-rotate")
    assert repr(d.train_iter.transform).count("RandomRotation") == 1
    mine = (A.Compose([A.Cutout(4)]), A.Compose([]))
    d = load_data(comp, demo_dir, batch_size=16, valid_ratio=0.1, augment=mine)
    assert d.train_iter.transform is mine[0] and d.valid_iter.transform is mine[1]
    x, _ = next(iter(d.train_iter))
    assert x.shape == (16, 32, 32, 3)
    with pytest.raises(ValueError, match="preset name"):
        load_data(comp, demo_dir, batch_size=16, valid_ratio=0.1, augment=42)
