"""Pictures (curves, confusion, mistakes, lr finder), the not-learning warning and the lr
finder's logic, on a framework-free numpy step."""

import numpy as np
import pytest
from PIL import Image

from conftest import NumpyStep
from d2lkaggle.train import diagnostics
from d2lkaggle.train import lrfind
from d2lkaggle.train import plotting
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.train.loop import History, fit
from d2lkaggle.train.schedules import constant


def loaders(blobs, bs=16):
    x, y = blobs
    tr = ImageLoader(ArraySource(x[:128]), y[:128], bs, shuffle=True, drop_last=True, seed=0)
    va = ImageLoader(ArraySource(x[128:]), y[128:], bs)
    return tr, va


def hist(rows):
    h = History()
    for r in rows:
        h.add(**r)
    return h


def png_size(path):
    with Image.open(path) as im:
        return im.size


def test_curves_show_both_phases_lr_and_integer_epochs(tmp_path):
    valid = hist([dict(epoch=e, lr=0.1 * 0.5 ** (e // 2), train_loss=2.0 / e, train_acc=0.3 + 0.1 * e,
                       valid_loss=2.2 / e, valid_acc=0.25 + 0.1 * e) for e in range(1, 6)])
    final = hist([dict(epoch=e, lr=0.1 * 0.5 ** (e // 2), train_loss=1.9 / e, train_acc=0.35 + 0.1 * e)
                  for e in range(1, 6)])
    path = tmp_path / "curves.png"
    fig = plotting.plot_run([("valid", valid), ("train_valid", final)], str(path),
                            title="demo · torch · resnet18 · 5 epochs")
    assert png_size(path) == (1200, 380)
    ax_loss, ax_acc, ax_lr = fig.axes
    assert fig._suptitle.get_text() == "demo · torch · resnet18 · 5 epochs"
    assert [a.get_ylabel() for a in fig.axes] == ["cross-entropy loss (batch mean)", "accuracy",
                                                 "learning rate"]
    assert all(a.get_xlabel() == "epoch" for a in fig.axes)
    labels = [line.get_label() for line in ax_loss.lines]
    assert labels == ["train (train/valid split)", "valid (train/valid split)",
                      "train (retrain on train+valid)"]
    np.testing.assert_allclose(ax_loss.lines[2].get_ydata(), [1.9 / e for e in range(1, 6)])
    ticks = [t for t in ax_acc.get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    # the retrain repeats the validation phase's rates: one line, named for both phases
    assert len(ax_lr.lines) == 1 and list(ax_lr.lines[0].get_ydata()) == [0.1, 0.05, 0.05, 0.025, 0.025]
    assert ax_lr.lines[0].get_label() == ("lr at epoch start (train/valid split and retrain on "
                                          "train+valid)")
    # rates that differ: each phase its line, none hidden
    final.rows[0]["lr"] = 0.2
    fig = plotting.plot_run([("valid", valid), ("train_valid", final)], str(path))
    lines = fig.axes[2].lines
    assert [line.get_label() for line in lines] == [
        "lr at epoch start (train/valid split)", "lr at epoch start (retrain on train+valid)"]
    # the first phase's line wide and pale under the second's: both stay visible
    assert lines[0].get_linewidth() > 2 * lines[1].get_linewidth() and lines[0].get_alpha() < 1


def visible_labels(ax, axis="x"):
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks
            if t.get_text() and min(lo, hi) <= (t.get_position()[0 if axis == "x" else 1]) <= max(lo, hi)]


def test_one_epoch_curves_have_one_epoch_tick_and_a_readable_log_axis(tmp_path):
    one = hist([dict(epoch=1, lr=1e-3, lr_last=4e-5, train_loss=2.3, train_acc=0.1,
                     valid_loss=0.15, valid_acc=0.9)])
    fig = plotting.plot_run([("valid", one)], str(tmp_path / "c.png"), title="demo · 1 epoch")
    ax_loss, ax_acc, ax_lr = fig.axes
    for ax in fig.axes:
        assert visible_labels(ax) == ["1"]
    assert ax_loss.get_yscale() == "log" and ax_lr.get_yscale() == "log"
    for ax in (ax_loss, ax_lr):   # a decade and more: several plain labels, not one 10^0
        labels = visible_labels(ax, "y")
        assert len(labels) >= 3 and all("10^" not in t and "$" not in t for t in labels), labels

def test_curves_draw_lr_last_when_the_history_has_it(tmp_path):
    h = History()
    for e in (1, 2):
        h.add(epoch=e, lr=0.1, train_loss=1.0, train_acc=0.5)
        h.rows[-1]["lr_last"] = 0.05 * e   # the column branch recipes adds
    fig = plotting.plot_run([("valid", h)], str(tmp_path / "c.png"))
    assert [line.get_label() for line in fig.axes[2].lines] == ["lr at epoch start", "lr at epoch end"]


def test_confusion_and_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "very_long_breed_name_of_a_terrier"]
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    probs = np.full((7, 3), 0.1)
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    probs[np.arange(7), pred] = 0.8
    probs[1] = [0.01, 0.98, 0.01]          # the most confident mistake
    fig = plotting.plot_confusion(y, probs, classes, str(tmp_path / "confusion.png"), "t")
    m = plotting.confusion_matrix(y, probs.argmax(1), 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert "accuracy 0.714" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "2", "2"]
    w, h = png_size(tmp_path / "confusion.png")
    assert w > 400 and h > 400

    images = rng.integers(0, 255, (7, 20, 24, 3)).astype(np.uint8)
    assert plotting.worst_mistakes(y, probs).tolist() == [1, 5]
    fig = plotting.plot_mistakes(images, y, probs, classes, str(tmp_path / "mistakes.png"))
    shown = [a for a in fig.axes if a.images]
    assert len(shown) == 2
    assert shown[0].get_title() == "true: cat (0.01)\npred: dog (0.98)"
    assert shown[1].get_title().startswith("true: very_long_breed_name_…")   # as the columns spell it
    np.testing.assert_array_equal(shown[0].images[0].get_array(), images[1])
    assert png_size(tmp_path / "mistakes.png")[0] > 200


def test_mistakes_title_stands_clear_of_the_captions(tmp_path):
    rng = np.random.default_rng(1)
    title = ("dog-breed · torch · finetune from ImageNet weights · 1 epoch, batch 32, AdamW wd "
             "0.05, one-cycle to lr 0.001 (30% warm-up, cosine down), augment none, TTA flip")
    for n in (1, 3, 9):   # one image (the narrowest figure), a row, rows
        y = np.zeros(n, dtype=int)
        probs = np.tile([0.2, 0.8], (n, 1))
        fig = plotting.plot_mistakes(rng.integers(0, 255, (n, 30, 40, 3)).astype(np.uint8), y,
                                     probs, ["maltese_dog", "boston_bull"], str(tmp_path / "m.png"),
                                     title=title, note="with TTA flip (0.080 without)")
        # an Agg canvas of its own: newer matplotlib leaves a closed figure a bare
        # FigureCanvasBase, which has no renderer to measure text with
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        r = canvas.get_renderer()
        head = fig.texts[0]
        text = " ".join(head.get_text().split())
        assert "with TTA flip (0.080 without)" in text
        assert ("the only mistake" if n == 1 else f"all {n} mistakes") in text
        shown = [a for a in fig.axes if a.images]
        boxes = [a.title.get_window_extent(r) for a in shown]
        assert head.get_window_extent(r).y0 > max(b.y1 for b in boxes) + 5   # pixels of air
        for a, b in zip(shown, shown[4:]):   # a row's captions above the next row's, clear
            assert a.get_window_extent(r).y0 > b.title.get_window_extent(r).y1
        assert "maltese_dog" in shown[0].get_title()


def test_mistakes_with_no_mistake(tmp_path):
    probs = np.eye(3)
    fig = plotting.plot_mistakes(np.zeros((3, 8, 8, 3), np.uint8), np.arange(3), probs,
                                 ["a", "b", "c"], str(tmp_path / "m.png"))
    assert "no mistakes on 3 validation images" in fig._suptitle.get_text()
    assert not any(a.images for a in fig.axes)


def test_warning_fires_when_not_learning_and_not_when_learning(blobs):
    tr, va = loaders(blobs)
    said = []
    fit(NumpyStep(192, 4), tr, va, 4, constant(0.0), progress=False, log=said.append)
    warned = [s for s in said if s.startswith("warning: training is not learning")]
    assert len(warned) == 1                                  # once, not per epoch
    assert "after 3 epochs" in warned[0] and "chance: 0.25 for 4 classes" in warned[0]
    assert "frozen backbone with random weights" in warned[0] and "lr-find" in warned[0]

    said = []
    h = fit(NumpyStep(192, 4), tr, va, 4, constant(0.5), progress=False, log=said.append)
    assert h.last["valid_acc"] > 0.9
    assert not [s for s in said if "not learning" in s]
    assert diagnostics.not_learning(h, 4) is None


def test_warning_without_log_is_a_python_warning(blobs):
    tr, va = loaders(blobs)
    with pytest.warns(diagnostics.NotLearningWarning, match="not learning after 2 epochs"):
        fit(NumpyStep(192, 4), tr, None, 2, constant(0.0), progress=False, log=None)


def test_not_learning_rules():
    huge = hist([dict(epoch=e, train_loss=603.0 - e, train_acc=0.1, valid_acc=0.1, valid_loss=600.0)
                 for e in (1, 2, 3)])
    assert "train acc 0.100, valid acc 0.100 (chance: 0.1 for 10 classes)" in diagnostics.not_learning(huge, 10)
    # converged in the first epoch: flat loss, but far from chance
    done = hist([dict(epoch=e, train_loss=0.05, train_acc=0.99) for e in (1, 2, 3)])
    assert diagnostics.not_learning(done, 10) is None
    one = hist([dict(epoch=1, train_loss=2.3, train_acc=0.1)])
    assert diagnostics.not_learning(one, 10) is None           # one epoch says nothing yet


def test_lr_find_restores_weights_and_suggests_a_sane_rate(blobs, tmp_path):
    tr, _ = loaders(blobs)
    step = NumpyStep(192, 4, momentum=0.0)
    w0 = step.w.copy()
    res = lrfind.lr_find(step, tr, 1e-4, 100.0, 60, progress=False)
    np.testing.assert_array_equal(step.w, w0)
    assert len(res.lrs) == len(res.losses) == len(res.smoothed) <= 60
    assert res.lrs[0] == pytest.approx(1e-4) and all(b > a for a, b in zip(res.lrs, res.lrs[1:]))
    assert res.stopped in ("diverged", "end_lr")
    # softmax regression on these blobs learns fast from lr ~0.1 on and blows up near 100
    assert 1e-3 <= res.suggestion <= 30, res
    assert res.rule == "steepest descent"
    fig = res.plot(str(tmp_path / "lr_find.png"))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate (log scale)"
    assert any("suggested" in line.get_label() for line in ax.lines)
    assert png_size(tmp_path / "lr_find.png") == (650, 400)


def test_suggestion_rules():
    lrs = np.logspace(-7, 1, 100)
    loss = 2.3 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3) * 3))   # falls fastest at 1e-3
    sug, steep, at_min, rule = lrfind.suggest(list(lrs), list(loss))
    assert rule == "steepest descent" and 3e-4 < sug < 3e-3
    flat = 2.3 + 0.01 * np.sin(np.arange(100))
    sug, steep, at_min, rule = lrfind.suggest(list(lrs), list(flat))
    assert rule == "minimum / 10" and sug == pytest.approx(at_min / 10)


def test_lr_find_rejects_bad_ranges(blobs):
    tr, _ = loaders(blobs)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lrfind.lr_find(NumpyStep(192, 4), tr, 1.0, 0.1, 20, progress=False)


def test_run_progress_counts_every_phase(blobs):
    import io
    from d2lkaggle.utils.progress import RunProgress
    tr, va = loaders(blobs)
    buf = io.StringIO()
    rp = RunProgress(RunProgress.plan((2, len(tr)), (1, len(tr))), file=buf)
    said = []
    log = rp.wrap(said.append)
    rp.set_phase("train/valid")
    fit(NumpyStep(192, 4), tr, va, 2, constant(0.5), progress=rp, log=log)
    rp.set_phase("retrain")
    fit(NumpyStep(192, 4), tr, None, 1, constant(0.5), progress=rp, log=log)
    assert rp.bar.n == rp.total == 3 * len(tr)
    rp.close()
    text = buf.getvalue()
    assert "run (retrain)" in text and "left" in text and "retrain epoch 1/1" in text
    assert len([s for s in said if s.startswith("epoch ")]) == 3
