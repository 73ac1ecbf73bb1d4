import numpy as np
import pytest

from d2lkaggle.data.transforms import (CenterCrop, ColorJitter, Lighting, RandomResizedCrop, Resize,
                               cifar_test, cifar_train, dog_test, dog_train, get_transforms)
from d2lkaggle.data.loader import ArraySource, FileSource, ImageLoader


def images(n=40, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def collect(loader):
    xs, ys = zip(*list(loader))
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_counts_and_drop_last():
    x = images(40)
    y = np.arange(40)
    assert len(ImageLoader(ArraySource(x), y, 16)) == 3
    dl = ImageLoader(ArraySource(x), y, 16, drop_last=True)
    assert len(dl) == 2 and dl.num_examples == 32
    xs, ys = collect(dl)
    assert xs.shape == (32, 32, 32, 3) and xs.dtype == np.uint8
    np.testing.assert_array_equal(xs, x[:32])
    _, yt = next(iter(ImageLoader(ArraySource(x), None, 8)))
    assert (yt == -1).all()


def test_seeded_epochs_and_thread_independence():
    x, y = images(50), np.arange(50)
    make = lambda w: ImageLoader(ArraySource(x), y, 8, transform=cifar_train(32), shuffle=True,
                                 seed=3, num_workers=w)
    a, b = make(1), make(4)
    a.set_epoch(2)
    b.set_epoch(2)
    xa, ya = collect(a)
    xb, yb = collect(b)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    a.set_epoch(3)
    xc, yc = collect(a)
    assert not np.array_equal(ya, yc) and not np.array_equal(xa, xc)
    assert sorted(yc) == list(range(50))


def test_iteration_without_set_epoch_advances():
    dl = ImageLoader(ArraySource(images(20)), np.arange(20), 5, shuffle=True)
    first, second = collect(dl)[1], collect(dl)[1]
    assert not np.array_equal(first, second)


def test_mixed_sizes_need_a_resizing_transform(tmp_path):
    from PIL import Image
    paths = []
    for i, (w, h) in enumerate([(30, 20), (50, 64), (41, 41)]):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(images(1, h, w, i)[0]).save(p)
        paths.append(str(p))
    with pytest.raises(ValueError, match="differ in shape"):
        next(iter(ImageLoader(FileSource(paths), None, 3)))
    x, _ = next(iter(ImageLoader(FileSource(paths), None, 3, transform=dog_test(24))))
    assert x.shape == (3, 24, 24, 3)


def test_transforms_are_deterministic_given_the_generator():
    img = images(1, 37, 53)[0]
    for t in (dog_train(32), cifar_train(32)):
        a = t(img, np.random.default_rng(7))
        b = t(img, np.random.default_rng(7))
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


def test_resize_and_center_crop_geometry():
    img = images(1, 30, 60)[0]
    assert Resize(40)(img).shape == (40, 80, 3)
    assert CenterCrop(20)(Resize(40)(img)).shape == (20, 20, 3)
    assert dog_test(224)(img, None).shape == (224, 224, 3)
    x = np.zeros((10, 10, 3), np.uint8)
    x[4:6, 4:6] = 255
    assert CenterCrop(2)(x).min() == 255


def test_random_resized_crop_box_respects_scale_and_ratio():
    t = RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = t.box(40, 40, rng)
        assert h == w and 0.6 * 1600 <= h * w <= 1600
        assert 0 <= top <= 40 - h and 0 <= left <= 40 - w


def test_flip_happens_about_half_the_time():
    img = images(1, 8, 8)[0]
    rng = np.random.default_rng(0)
    flips = sum(np.array_equal(cifar_train(8).transforms[2](img, rng), img[:, ::-1]) for _ in range(400))
    assert 150 < flips < 250


def test_color_jitter_and_lighting_stay_in_range():
    img = images(1, 16, 16)[0]
    rng = np.random.default_rng(1)
    out = ColorJitter(0.4, 0.4, 0.4)(img, rng)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    grey = np.full((4, 4, 3), 100, np.uint8)
    lit = Lighting(0.1)(grey, np.random.default_rng(2))
    assert lit.dtype == np.uint8 and np.abs(lit.astype(int) - 100).max() < 40
    assert np.array_equal(Lighting(0.0)(grey, rng), grey)


def test_cifar_test_is_identity_at_native_size():
    img = images(1)[0]
    np.testing.assert_array_equal(cifar_test(32)(img, None), img)
    with pytest.raises(ValueError, match="cifar"):
        get_transforms("nope", 32)


def test_normalize_nchw_matches_the_chapters_normalize_in_both_precisions():
    from d2lkaggle.data.transforms import normalize_nchw
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    ref = ((x / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    a32, a64 = normalize_nchw(x, mean, std), normalize_nchw(x, mean, std, "float64")
    assert a32.dtype == np.float32 and a64.dtype == np.float64 and a64.shape == (2, 3, 5, 4)
    assert a32.flags.c_contiguous and np.abs(a32 - ref).max() < 1e-5
    assert np.abs(a64 - ref).max() < 1e-12
    with pytest.raises(ValueError, match=r"\(2, 5, 4\)"):
        normalize_nchw(x[..., 0], mean, std)
