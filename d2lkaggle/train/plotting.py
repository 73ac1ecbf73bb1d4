"""Pictures of a run: curves, confusion matrix, worst mistakes, lr finder (the book's Animator and more).

Every function here draws with matplotlib only (no framework), saves a PNG atomically and
returns the closed :class:`matplotlib.figure.Figure`, so callers and tests can look at the
axes, labels and data that went into the file.
"""
from __future__ import annotations

import math
import textwrap
from typing import Sequence

import numpy as np

from ..utils.files import atomic_path

#: how the pipeline names the two phases of a chapter, and how the curves label them
PHASE_LABELS = {"valid": "train/valid split", "train_valid": "retrain on train+valid"}


def _plt():
    import matplotlib
    if not _in_notebook():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str, dpi: int = 100):
    plt = _plt()
    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return fig


def _col(history, name: str) -> list[float]:
    # columns added by later branches (e.g. ``lr_last``) may be missing from older rows
    return [float(r.get(name, math.nan)) for r in history.rows]


def _has(ys: Sequence[float]) -> bool:
    return bool(ys) and not all(math.isnan(v) for v in ys)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit a figure ``width_in`` inches wide (a long title is
    wrapped, never cut off at the figure's edge)."""
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in str(text).split("\n"))


def _figure(phases, title: str | None = None):
    """Loss, accuracy and learning-rate panels for one or more ``(phase, History)`` pairs."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    # losses and accuracies on separate axes: early valid-loss spikes would flatten the rest
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(12, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    many = len(phases) > 1
    for k, (phase, h) in enumerate(phases):
        color = colors[k % len(colors)]
        suffix = f" ({PHASE_LABELS.get(phase, phase)})" if many else ""
        epochs = _col(h, "epoch")
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in (("train", "-"), ("valid", "--")):
                ys = _col(h, f"{split}_{key}")
                if _has(ys):   # (train: solid, dots; valid: dashed, squares — as the legend)
                    ax.plot(epochs, ys, style, color=color, marker="." if split == "train" else "s",
                            markersize=4, label=f"{split}{suffix}")
        for key, style, marker, what in (("lr", "-", ".", "lr at epoch start"),
                                         ("lr_last", ":", "x", "lr at epoch end")):
            ys = _col(h, key)
            if not _has(ys):
                continue
            # the retrain repeats the validation phase's schedule: the same rates are drawn
            # once, their legend naming both phases; near-same ones (an epoch of more
            # batches ends elsewhere) keep the first phase's line wide and pale underneath
            twin = next((ln for ln in ax_lr.lines if ln.get_gid() == key
                         and _same(list(ln.get_ydata()), ys)), None)
            if twin is not None:   # one line for both: drawn plainly
                twin.set_label(twin.get_label()[:-1] + f" and {PHASE_LABELS.get(phase, phase)})")
                twin.set_linewidth(1.5)
                twin.set_alpha(1.0)
                continue
            under = many and k == 0
            ax_lr.plot(epochs, ys, style, color=color, marker=marker, gid=key,
                       lw=4.5 if under else 1.5, alpha=0.45 if under else 1.0,
                       label=f"{what}{suffix}")
    xs = [v for _, h in phases for v in _col(h, "epoch") if math.isfinite(v)]
    for ax, ylabel in ((ax_loss, "cross-entropy loss (batch mean)"), (ax_acc, "accuracy"),
                       (ax_lr, "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if xs:   # whole epochs with half an epoch each side: one epoch is one tick, "1"
            ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.grid(True, alpha=0.3)
        if ax.lines:   # long handles: a dashed or dotted line shows as one
            ax.legend(fontsize=7, handlelength=3.5)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    ax_lr.set_title("learning rate")
    # log scale only when the values span more than a decade (else its ticks say little)
    losses = [v for line in ax_loss.lines for v in line.get_ydata() if math.isfinite(v)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        _log_axis(ax_loss, losses)
    ax_acc.set_ylim(0, 1.02)
    lrs = [v for line in ax_lr.lines for v in line.get_ydata() if math.isfinite(v)]
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 20:
        _log_axis(ax_lr, lrs)
    elif lrs:
        ax_lr.set_ylim(0, 1.1 * max(lrs) or 1.0)
    if title:
        fig.suptitle(_wrap(title, 12, 10), fontsize=10)
    fig.tight_layout()
    return fig, plt


def _same(a: list[float], b: list[float]) -> bool:
    """Two columns of rates that draw the same line (NaN where both have none)."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or
                                    (not math.isnan(x) and not math.isnan(y)
                                     and abs(x - y) <= 1e-3 * max(abs(x), abs(y), 1e-12))
                                    for x, y in zip(a, b))


def _log_axis(ax, values: Sequence[float]) -> None:
    """A log-scale y axis labelled at 1-2-5 steps, as plain numbers: a range of one or two
    decades gets several labels, not a single ``10^0``."""
    from matplotlib.ticker import FixedLocator, NullFormatter, FuncFormatter
    ax.set_yscale("log")
    lo, hi = min(values), max(values)
    steps = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)]
    ticks = [t for t in steps if lo / 1.15 <= t <= hi * 1.15]
    if len(ticks) > 8:   # many decades: the decades alone
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_history(history, path: str, title: str | None = None) -> str:
    """Draw train loss/acc, valid loss/acc and the lr per epoch into a PNG at ``path`` (atomically)."""
    fig, _ = _figure([("", history)], title)
    _save(fig, path)
    return path


def plot_run(phases, path: str, title: str | None = None):
    """The curves of a whole chapter run: ``phases`` is ``[(phase, History), ...]`` in order
    (``"valid"``: the train/valid split, ``"train_valid"``: the retrain on all labels)."""
    fig, _ = _figure([(p, h) for p, h in phases if len(h)], title)
    return _save(fig, path)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``m[t, p]`` of examples of true class ``t`` predicted as ``p``."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def plot_confusion(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: str,
                   title: str | None = None, note: str = ""):
    """The validation confusion matrix (rows: true class, columns: predicted), row-normalised
    colours with the counts written in when there are few classes; ``note`` follows the
    accuracy (how the probabilities were made: ``with TTA flip (0.080 without)``)."""
    plt = _plt()
    c = len(classes)
    m = confusion_matrix(y_true, np.asarray(probs).argmax(axis=1), c)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros(m.shape, dtype=np.float64), where=rows > 0)
    side = min(16.0, max(5.0, 0.3 * c + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fs = max(3.0, min(9.0, 300.0 / max(c, 1)))
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(classes, rotation=90, fontsize=fs)
    ax.set_yticklabels(classes, fontsize=fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= 20:
        for t in range(c):
            for p in range(c):
                if m[t, p]:
                    ax.text(p, t, str(m[t, p]), ha="center", va="center", fontsize=fs,
                            color="white" if frac[t, p] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    acc = np.trace(m) / max(1, m.sum())
    off = m * (1 - np.eye(c, dtype=np.int64))
    top = [divmod(int(k), c) for k in np.argsort(-off, axis=None, kind="stable")[:3]]
    pairs = ", ".join(f"{_short(classes[t])} → {_short(classes[q])} ({off[t, q]})"
                      for t, q in top if off[t, q])
    ax.set_title(_wrap((title + "\n" if title else "") + f"validation: {m.sum()} images, accuracy "
                       f"{acc:.3f}" + (f" {note}" if note else "") + (f"\nmost confused (true → predicted): {pairs}" if pairs else ""),
                       side, 9), fontsize=9)
    fig.tight_layout()
    # many classes: tiny tick labels, so more pixels to read them when zooming in
    return _save(fig, path, dpi=150 if c > 40 else 100)


def worst_mistakes(y_true: np.ndarray, probs: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the ``k`` wrong predictions with the highest predicted probability, worst first."""
    probs = np.asarray(probs)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != np.asarray(y_true))
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")[:k]]


def plot_mistakes(images, y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: str,
                  k: int = 16, title: str | None = None, note: str = ""):
    """A grid of the most confidently wrong validation images, each with true and predicted
    label (class names as the columns spell them). ``images[i]`` is the i-th validation image
    (H×W×3 uint8, any size); ``note`` says how the probabilities were made (``with TTA
    flip``)."""
    plt = _plt()
    idx = worst_mistakes(y_true, probs, k)
    probs = np.asarray(probs)
    if not len(idx):   # a readable note under the whole title, not a blank strip
        head = f"no mistakes on {len(y_true)} validation images"
        fig = plt.figure(figsize=(7, 2.4))
        fig.suptitle(_wrap((title + "\n" if title else "") + head, 7, 9), fontsize=9)
        fig.text(0.5, 0.3, head, ha="center", va="center", fontsize=12)
        return _save(fig, path)
    cols = 4 if len(idx) > 4 else max(1, len(idx))
    nrows = max(1, math.ceil(len(idx) / cols))
    n_wrong = int((probs.argmax(axis=1) != np.asarray(y_true)).sum())
    head = ((f"the {len(idx)} most confident of {n_wrong} mistakes" if len(idx) < n_wrong else
             f"{'the only mistake' if n_wrong == 1 else f'all {n_wrong} mistakes'}")
            + f" on {len(y_true)} validation images (probabilities in brackets"
            + (f", {note}" if note else "") + ")")
    # a fixed layout in inches: the title's band, then rows of an image under its two-line
    # caption, so neither the title's last line nor a row's captions touch what is above
    cell, side, caption, pad = 2.3, 2.0, 0.42, 0.12
    width = max(cell * cols, 6.0)
    text = _wrap((title + "\n" if title else "") + head, width, 9)
    band = (text.count("\n") + 1) * 9 * 1.3 / 72 + 2 * pad
    height = band + nrows * (caption + side + pad)
    fig = plt.figure(figsize=(width, height))
    fig.text(0.5, 1 - pad / height, text, ha="center", va="top", fontsize=9)
    for n, i in enumerate(idx):
        r, c = divmod(n, cols)
        left = (width - cols * cell) / 2 + c * cell + (cell - side) / 2
        bottom = height - band - (r + 1) * (caption + side + pad) + pad
        ax = fig.add_axes([left / width, bottom / height, side / width, side / height])
        ax.axis("off")
        p = int(probs[i].argmax())
        t = int(y_true[i])
        ax.imshow(np.asarray(images[int(i)]), interpolation="nearest")
        ax.set_title(f"true: {_short(classes[t])} ({probs[i, t]:.2f})\n"
                     f"pred: {_short(classes[p])} ({probs[i, p]:.2f})", fontsize=7, color="darkred")
    return _save(fig, path)


def _short(name: str, width: int = 22) -> str:
    """A class name as the labels file and the submission's columns spell it (``maltese_dog``),
    cut to ``width`` characters with an ellipsis."""
    name = str(name)
    return name if len(name) <= width else name[:width - 1] + "…"


def plot_lr_find(result, path: str, title: str | None = None):
    """The lr finder's loss against the learning rate (log scale), with the suggestions marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (batch mean)")
    for lr, name, color in ((result.steepest, "steepest descent", "C3"),
                            (result.min_lr / 10, "minimum / 10", "C2")):
        if lr and math.isfinite(lr):
            chosen = " (suggested)" if name == result.rule else ""
            ax.axvline(lr, color=color, ls="-" if chosen else "--", lw=1.5 if chosen else 1,
                       label=f"{name}: {lr:.2g}{chosen}")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        lo, first = min(finite), finite[0]
        ax.set_ylim(lo - 0.1 * abs(lo), max(first, lo) * 1.5 + 1e-3)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title((title + "\n" if title else "") + f"lr finder: {len(result.lrs)} batches, "
                 f"stopped: {result.stopped}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


class LivePlot:
    """Redraw the curves in a Jupyter cell after every epoch."""

    def __init__(self, has_valid: bool = True):
        self.has_valid = has_valid

    def update(self, history) -> None:
        if not _in_notebook():
            return
        from IPython import display
        fig, plt = _figure([("", history)])
        display.clear_output(wait=True)
        display.display(fig)
        plt.close(fig)
