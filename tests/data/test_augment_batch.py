"""The vectorised CIFAR recipe (Compose.batch) against the image-by-image transforms."""
from __future__ import annotations

import numpy as np

from d2lkaggle.data import transforms as A
from d2lkaggle.data.loader import ArraySource, ImageLoader


def _images(n=48, size=32, seed=0):
    rng = np.random.default_rng(seed)
    # smooth images plus noise: interpolation differences show, but are not all noise
    yy, xx = np.mgrid[0:size, 0:size]
    base = (np.stack([xx * 7, yy * 5, (xx + yy) * 3], -1) % 256).astype(np.float64)
    return np.clip(base[None] + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _per_image_with(x, boxes, flips, mid=40, size=32):
    out = []
    for img, (top, left, ch, cw), f in zip(x, boxes, flips):
        r = A._resize(A.Resize(mid)(img), size, size, box=(left, top, left + cw, top + ch))
        out.append(r[:, ::-1] if f else r)
    return np.stack(out)


def test_batch_recipe_matches_the_per_image_transforms_given_the_same_draws():
    x = _images()
    t = A.cifar_train(32)
    out = t.batch(x, np.random.default_rng(7))
    # the batch form draws every box (image order, the per-image rule), then one coin each
    g = np.random.default_rng(7)
    boxes = [t.transforms[1].box(40, 40, g) for _ in x]
    flips = g.random(len(x)) < 0.5
    ref = _per_image_with(x, boxes, flips)
    d = np.abs(out.astype(int) - ref)
    assert out.shape == (48, 32, 32, 3) and out.dtype == np.uint8
    # no rounding between the resize and the crop: at most 2 levels apart, on average < 0.5
    assert d.max() <= 2 and d.mean() < 0.5, (d.max(), d.mean())
    assert 0 < flips.sum() < len(x)


def test_batch_recipe_is_seeded_and_has_the_per_image_distribution():
    x = np.repeat(_images(1), 400, axis=0)
    t = A.cifar_train(32)
    a, b = t.batch(x, np.random.default_rng(1)), t.batch(x, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, t.batch(x, np.random.default_rng(2)))
    # flip rate and crop-scale statistics agree with the per-image path on the same image
    per = np.stack([t(img, np.random.default_rng([3, i])) for i, img in enumerate(x)])
    flip_b = t.batch(x, np.random.default_rng(4))
    assert abs(per.astype(float).mean() - flip_b.astype(float).mean()) < 2.0
    stat = lambda z: z.astype(float).std(axis=(1, 2, 3)).mean()  # noqa: E731 (zoom blurs)
    assert abs(stat(per) - stat(flip_b)) / stat(per) < 0.05


def test_other_lists_run_image_by_image_with_the_same_draws():
    x = _images(16)
    t = A.Compose([A.Resize(32), A.RandomCrop(32, 4), A.RandomHorizontalFlip()])
    ref = np.stack([t(img, g) for g in [np.random.default_rng(5)] for img in x])
    assert np.array_equal(t.batch(x, np.random.default_rng(5)), ref)
    nearest = A.Compose([A.Resize(40, "nearest"), A.RandomResizedCrop(32), A.RandomHorizontalFlip()])
    g = np.random.default_rng(6)
    ref = np.stack([nearest(img, g) for img in x])
    assert np.array_equal(nearest.batch(x, np.random.default_rng(6)), ref)


def test_loader_uses_the_batch_form_on_decoded_arrays():
    x = _images(40)
    y = np.arange(40) % 4
    t = A.cifar_train(32)
    loader = ImageLoader(ArraySource(x), y, 16, transform=t, shuffle=True, seed=3, num_workers=2)
    batches = list(loader)
    order = loader.order(0)
    for b, (xb, yb) in enumerate(batches):
        idx = order[b * 16:(b + 1) * 16]
        want = t.batch(x[idx], np.random.default_rng([3, 0, b]))
        assert np.array_equal(xb, want) and np.array_equal(yb, y[idx])
    # the same bytes on a second pass over epoch 0 (what every backend would receive)
    loader.set_epoch(0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, loader))


def test_batch_results_own_their_memory_while_scratch_is_reused():
    # the recipe reuses per-thread scratch arrays; a batch handed out must never be one of them
    x = _images(32)
    t = A.cifar_train(32)
    first = t.batch(x, np.random.default_rng(1))
    kept = first.copy()
    second = t.batch(x[::-1].copy(), np.random.default_rng(2))
    assert np.array_equal(first, kept) and not np.shares_memory(first, second)
    # a batch of another size after it still comes out right (scratch made again)
    small = t.batch(x[:5], np.random.default_rng(1))
    assert small.shape == (5, 32, 32, 3) and np.array_equal(small, t.batch(x[:5], np.random.default_rng(1)))


def test_random_resized_crop_draws_the_same_boxes_one_by_one_or_all_at_once():
    crop = A.RandomResizedCrop(32, scale=(0.08, 1.0))   # small areas: some tries miss
    together = crop.boxes(40, 30, 64, np.random.default_rng(9))
    g = np.random.default_rng(9)
    assert [tuple(b) for b in together.tolist()] == [crop.box(40, 30, g) for _ in range(64)]
    top, left, h, w = together.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    # an impossible aspect range falls back to the central crop, as torchvision does
    wide = A.RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(3.0, 4.0))
    assert [tuple(b) for b in wide.boxes(40, 40, 3, np.random.default_rng(0)).tolist()] == [(13, 0, 13, 40)] * 3
