import math
import os

import numpy as np
import pytest

from d2lkaggle.train import loop
from d2lkaggle.utils.files import load_npz
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.train.schedules import step_lr

from conftest import NumpyStep


def loaders(x, y, bs=16, seed=0):
    tr = ImageLoader(ArraySource(x[:128]), y[:128], bs, shuffle=True, drop_last=True, seed=seed)
    va = ImageLoader(ArraySource(x[128:]), y[128:], bs)
    return tr, va


def test_fit_learns_and_records_history(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)
    step = NumpyStep(8 * 8 * 3, 4)
    plot = str(tmp_path / "curves.png")
    h = loop.fit(step, tr, va, 6, step_lr(0.5, 2, 0.5), progress=False, log=None, plot=plot)
    assert len(h) == 6
    assert step.lrs == [0.5, 0.25, 0.125]  # set before every batch, passed on when it changes
    assert h.column("lr") == h.column("lr_last") == [0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert h.last["valid_acc"] >= 0.9
    assert h.column("train_loss")[-1] < h.column("train_loss")[0]
    assert all(r["examples_per_sec"] > 0 for r in h.rows)
    assert os.path.getsize(plot) > 1000
    csv = h.to_csv(str(tmp_path / "h.csv"))
    lines = open(csv).read().splitlines()
    assert lines[0].split(",") == list(loop.HISTORY_COLUMNS) and len(lines) == 7


def test_curves_are_redrawn_at_most_every_few_seconds(blobs, tmp_path, monkeypatch):
    # fast epochs: one drawing, after the last epoch; with the interval at 0, one per epoch
    from d2lkaggle.train import callbacks, plotting
    drawn = []
    monkeypatch.setattr(plotting, "plot_history", lambda h, path: drawn.append(len(h)))
    x, y = blobs
    for every, expected in ((60.0, [4]), (0.0, [1, 2, 3, 4])):
        monkeypatch.setattr(callbacks, "PLOT_EVERY_S", every)
        drawn.clear()
        tr, va = loaders(x, y)
        loop.fit(NumpyStep(192, 4), tr, va, 4, step_lr(0.5), progress=False, log=None,
                 plot=str(tmp_path / "c.png"))
        assert drawn == expected, every


def test_epoch_metrics_are_exact_means(blobs):
    x, y = blobs
    tr, va = loaders(x, y, bs=32)
    step = NumpyStep(192, 4)
    h = loop.fit(step, tr, va, 1, step_lr(0.0), progress=False, log=None)  # lr 0: weights fixed
    loss, acc = loop.evaluate(step, tr)
    assert h.last["train_loss"] == pytest.approx(loss, rel=1e-9)
    assert h.last["train_acc"] == pytest.approx(acc)
    vl, vacc = loop.evaluate(step, va)
    assert h.last["valid_loss"] == pytest.approx(vl) and h.last["valid_acc"] == pytest.approx(vacc)


def test_nan_loss_names_epoch_and_batch(blobs):
    x, y = blobs
    tr, va = loaders(x, y)

    class Exploding(NumpyStep):
        calls = 0

        def train_batch(self, x, y):
            Exploding.calls += 1
            ls, c, n = super().train_batch(x, y)
            return (math.nan if Exploding.calls == 11 else ls), c, n

    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 3"):
        loop.fit(Exploding(192, 4), tr, va, 3, step_lr(0.1), progress=False, log=None)


def test_resume_matches_uninterrupted_run(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)
    full = NumpyStep(192, 4)
    h_full = loop.fit(full, tr, va, 5, step_lr(0.3, 2, 0.5), progress=False, log=None,
                      checkpoint_dir=str(tmp_path / "a"))
    # "killed" after 3 epochs, then resumed by a fresh process-like object
    first = NumpyStep(192, 4)
    loop.fit(first, tr, va, 3, step_lr(0.3, 2, 0.5), progress=False, log=None,
             checkpoint_dir=str(tmp_path / "b"))
    second = NumpyStep(192, 4, seed=123)  # different init: everything must come from the checkpoint
    h_res = loop.fit(second, *loaders(x, y), 5, step_lr(0.3, 2, 0.5), progress=False, log=None,
                     checkpoint_dir=str(tmp_path / "b"), resume=True)
    np.testing.assert_array_equal(second.w, full.w)
    np.testing.assert_array_equal(second.vw, full.vw)
    assert second.lrs == [0.15, 0.075]
    assert len(h_res) == 5 and h_res.column("train_loss") == h_full.column("train_loss")


def test_checkpoints_last_and_best(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)
    step = NumpyStep(192, 4)
    h = loop.fit(step, tr, va, 4, step_lr(0.3), progress=False, log=None,
                 checkpoint_dir=str(tmp_path))
    last, meta = load_npz(str(tmp_path / "last.npz"))
    np.testing.assert_array_equal(last["model/w"], step.w)
    assert meta["epoch"] == 3
    best, bmeta = load_npz(str(tmp_path / "best.npz"))
    assert bmeta["best"] == pytest.approx(h.best_valid_acc)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp files left


def test_resume_of_finished_run_trains_nothing(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)
    loop.fit(NumpyStep(192, 4), tr, va, 2, step_lr(0.3), progress=False, log=None,
             checkpoint_dir=str(tmp_path))
    again = NumpyStep(192, 4, seed=5)
    h = loop.fit(again, tr, va, 2, step_lr(0.3), progress=False, log=None,
                 checkpoint_dir=str(tmp_path), resume=True)
    assert again.lrs == [] and len(h) == 2


def test_corrupt_checkpoint_is_a_clear_error(blobs, tmp_path):
    x, y = blobs
    (tmp_path / "last.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="last.npz"):
        loop.fit(NumpyStep(192, 4), *loaders(x, y), 2, step_lr(0.1), progress=False, log=None,
                 checkpoint_dir=str(tmp_path), resume=True)


def test_predict_concatenates_in_order(blobs):
    x, y = blobs
    step = NumpyStep(192, 4)
    probs = loop.predict(step, ImageLoader(ArraySource(x), None, 50))
    assert probs.shape == (160, 4)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-9)
    np.testing.assert_allclose(probs, step.predict_batch(x))


def test_step_lr_matches_the_chapters():
    f = step_lr(0.02, 4, 0.9)
    assert [round(f(e), 10) for e in range(9)] == [0.02] * 4 + [0.018] * 4 + [round(0.02 * 0.81, 10)]
    with pytest.raises(ValueError):
        step_lr(0.1, 0, 0.5)


# ----------------------------------------------------------------------------- issue 12

class DivergingStep(NumpyStep):
    """Its first update blows the weights up to NaN while reporting a finite batch loss, as
    ``--lr 1e38`` with one batch per epoch does."""

    def train_batch(self, x, y):
        out = super().train_batch(x, y)
        self.w[:] = np.nan
        return out


def test_diverged_model_raises_in_evaluate_and_is_never_best(blobs, tmp_path):
    x, y = blobs
    tr = ImageLoader(ArraySource(x[:16]), y[:16], 16, shuffle=True, drop_last=True)
    va = ImageLoader(ArraySource(x[128:]), y[128:], 16)
    with pytest.raises(FloatingPointError, match="not finite"):
        loop.fit(DivergingStep(192, 4), tr, va, 1, step_lr(0.1), progress=False, log=None,
                 checkpoint_dir=str(tmp_path))
    assert not (tmp_path / "best.npz").exists()
    with pytest.raises(FloatingPointError, match="not finite"):
        loop.evaluate(_nan_step(), va)


def _nan_step():
    s = NumpyStep(192, 4)
    s.w[:] = np.nan
    return s


def test_predict_refuses_non_finite_probabilities(blobs):
    x, _ = blobs
    with pytest.raises(FloatingPointError, match="2 of 4 rows|not finite"):
        loop.predict(_nan_step(), ImageLoader(ArraySource(x[:4]), None, 2))


def test_best_ignores_a_nan_valid_loss(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)

    class NanLossEval(NumpyStep):  # finite logits, but the reported valid loss is NaN
        def eval_batch(self, xb, yb):
            ls, c, k = super().eval_batch(xb, yb)
            return math.nan, c, k

    with pytest.raises(FloatingPointError):
        loop.fit(NanLossEval(192, 4), tr, va, 1, step_lr(0.3), progress=False, log=None,
                 checkpoint_dir=str(tmp_path))
    assert not (tmp_path / "best.npz").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "bitflip"])
def test_damaged_checkpoint_names_the_file_and_what_to_do(blobs, tmp_path, damage):
    x, y = blobs
    tr, va = loaders(x, y)
    loop.fit(NumpyStep(192, 4), tr, va, 1, step_lr(0.3), progress=False, log=None,
             checkpoint_dir=str(tmp_path))
    path = tmp_path / "last.npz"
    data = bytearray(path.read_bytes())
    if damage == "empty":
        data = b""
    elif damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[200] ^= 0xFF  # inside the first array's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        loop.fit(NumpyStep(192, 4), tr, va, 2, step_lr(0.3), progress=False, log=None,
                 checkpoint_dir=str(tmp_path), resume=True)
    assert str(path) in str(e.value) and "delete it" in str(e.value)


def test_checkpoint_meta_records_the_run_config(blobs, tmp_path):
    x, y = blobs
    tr, va = loaders(x, y)
    loop.fit(NumpyStep(192, 4), tr, va, 1, step_lr(0.3), progress=False, log=None,
             checkpoint_dir=str(tmp_path), config={"seed": 3, "lr": 0.3})
    assert load_npz(str(tmp_path / "last.npz"))[1]["config"] == {"seed": 3, "lr": 0.3}
