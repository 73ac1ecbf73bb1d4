"""MixUp / CutMix / label smoothing in the core: exact values, seeding, and the loop's use."""
import numpy as np
import pytest

from d2lkaggle.train import loop
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.data.mixing import MIX_TAG, Mixup, batch_rng, cutmix, label_smoothing, mixup, one_hot
from d2lkaggle.train.schedules import step_lr

from conftest import NumpyStep


def batch(n=8, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.arange(n) % 4


def test_label_smoothing_alone_gives_soft_targets_and_keeps_pixels():
    x, y = batch()
    xs, t = label_smoothing(0.1, num_classes=4)(x, y, np.random.default_rng(0))
    assert xs is x and xs.dtype == np.uint8
    assert t.dtype == np.float32 and t.shape == (8, 4)
    np.testing.assert_allclose(t[np.arange(8), y], 0.9 + 0.025, rtol=1e-6)
    np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)
    assert (t.argmax(1) == y).all()


def test_mixup_mixes_in_float32_with_the_reversed_batch():
    x, y = batch()
    m = mixup(0.4, num_classes=4)
    lam, use_cutmix = m.params(np.random.default_rng(3))
    xm, t = m(x, y, np.random.default_rng(3))
    assert not use_cutmix and 0 < lam < 1 and xm.dtype == np.float32
    ref = x.astype(np.float32) * np.float32(lam) + x[::-1].astype(np.float32) * np.float32(1 - lam)
    np.testing.assert_array_equal(xm, ref)
    assert not np.all(xm == np.round(xm))  # no uint8 rounding
    expect = lam * one_hot(y, 4) + (1 - lam) * one_hot(y[::-1], 4)
    np.testing.assert_allclose(t, expect, rtol=1e-6)
    np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)


def test_cutmix_pastes_a_box_and_corrects_lambda_to_its_area():
    x, y = batch(h=16, w=20)
    m = cutmix(1.0, num_classes=4)
    for seed in range(30):
        xm, t = m(x, y, np.random.default_rng(seed))
        assert xm.dtype == np.uint8
        from_partner = np.all(xm == x[::-1], axis=-1) & np.any(x != x[::-1], axis=-1)
        frac = from_partner[0].mean()  # example 0's partner is example 7 (a different label)
        lam = t[0, y[0]]  # target weight of the own label
        assert lam == pytest.approx(1 - frac, abs=1e-6)
        # untouched pixels are the example's own
        assert np.array_equal(xm[0][~from_partner[0]], x[0][~from_partner[0]])
    # the box can leave the image: then the corrected lambda differs from the Beta draw
    diffs = []
    for seed in range(200):
        lam0, _ = m.params(np.random.default_rng(seed))
        _, t = m(x, y, np.random.default_rng(seed))
        diffs.append(abs(t[0, y[0]] - lam0))
    assert max(diffs) > 0.05


def test_prob_and_switch_prob_choose_per_batch():
    m = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.5, switch_prob=0.25, num_classes=4)
    draws = [m.params(batch_rng(0, 0, b)) for b in range(2000)]
    mixed = [c for lam, c in draws if lam < 1]
    assert 0.45 < len(mixed) / 2000 < 0.55
    assert 0.2 < sum(mixed) / len(mixed) < 0.3
    assert Mixup(mixup_alpha=1.0, prob=0.0, num_classes=4).params(batch_rng(0, 0, 0)) == (1.0, False)


def test_same_batch_generator_same_bytes():
    x, y = batch()
    m = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=4)
    a = m(x, y, batch_rng(7, 2, 5))
    b = m(x, y, np.random.default_rng([7, 2, 5, MIX_TAG]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kw, match", [
    (dict(mixup_alpha=-1), "mixup_alpha must be >= 0"),
    (dict(cutmix_alpha=float("nan")), "cutmix_alpha"),
    (dict(prob=1.5), "prob is a probability"),
    (dict(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\)"),
    (dict(num_classes=1), "num_classes"),
])
def test_bad_settings_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        Mixup(**kw)


def test_unlabelled_batches_cannot_be_mixed():
    x, _ = batch()
    with pytest.raises(ValueError, match="labels must be in 0..3"):
        mixup(1.0, num_classes=4)(x, np.full(8, -1), batch_rng(0, 0, 0))


class SoftStep(NumpyStep):
    """NumpyStep taking soft targets (cross-entropy −Σ y log p), recording what it got."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.train_seen, self.eval_seen = [], []

    def train_batch(self, x, y):
        self.train_seen.append((x.copy(), y.copy()))
        p = self._probs(x)
        n = len(y)
        g = (p - y) / n
        feats = x.reshape(n, -1).astype(np.float64) / 255.0
        self.vw = self.momentum * self.vw + feats.T @ g
        self.vb = self.momentum * self.vb + g.sum(0)
        self.w -= self.lr * self.vw
        self.b -= self.lr * self.vb
        loss = -(y * np.log(p + 1e-12)).sum()
        return float(loss), int((p.argmax(1) == y.argmax(1)).sum()), n

    def eval_batch(self, x, y):
        self.eval_seen.append(y.copy())
        return super().eval_batch(x, y)


def test_fit_mixes_each_training_batch_with_its_own_generator(blobs):
    x, y = blobs
    tr = ImageLoader(ArraySource(x[:128]), y[:128], 16, shuffle=True, drop_last=True, seed=3)
    va = ImageLoader(ArraySource(x[128:]), y[128:], 16)
    m = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.8, label_smoothing=0.1, num_classes=4)
    step = SoftStep(192, 4)
    h = loop.fit(step, tr, va, 3, step_lr(0.5), mixing=m, progress=False, log=None)
    assert len(step.train_seen) == 3 * 8
    tr2 = ImageLoader(ArraySource(x[:128]), y[:128], 16, shuffle=True, drop_last=True, seed=3)
    for e in range(3):
        tr2.set_epoch(e)
        for b, (xb, yb) in enumerate(tr2):
            xs, ys = step.train_seen[e * 8 + b]
            xe, ye = m(xb, yb, batch_rng(3, e, b))
            np.testing.assert_array_equal(xs, xe)
            np.testing.assert_array_equal(ys, ye)
            assert ys.shape == (16, 4) and np.allclose(ys.sum(1), 1, atol=1e-6)
    assert any(xs.dtype == np.float32 for xs, _ in step.train_seen)  # some batch was MixUp'd
    assert all(ys.ndim == 1 and ys.dtype == np.int64 for ys in step.eval_seen)  # never mixed
    assert h.last["valid_acc"] >= 0.9


def test_resumed_mixed_run_equals_the_uninterrupted_one(blobs, tmp_path):
    x, y = blobs

    def loaders():
        return (ImageLoader(ArraySource(x[:128]), y[:128], 16, shuffle=True, drop_last=True, seed=1),
                ImageLoader(ArraySource(x[128:]), y[128:], 16))

    m = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=4)
    full = SoftStep(192, 4)
    loop.fit(full, *loaders(), 4, step_lr(0.3), mixing=m, progress=False, log=None,
             checkpoint_dir=str(tmp_path / "a"))
    loop.fit(SoftStep(192, 4), *loaders(), 2, step_lr(0.3), mixing=m, progress=False, log=None,
             checkpoint_dir=str(tmp_path / "b"))
    second = SoftStep(192, 4, seed=7)
    loop.fit(second, *loaders(), 4, step_lr(0.3), mixing=m, progress=False, log=None,
             checkpoint_dir=str(tmp_path / "b"), resume=True)
    np.testing.assert_array_equal(second.w, full.w)
