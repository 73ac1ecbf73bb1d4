"""Training curves: a PNG in scripts, a live figure in Jupyter (the book's Animator)."""
from __future__ import annotations

import math

from .checkpoint import atomic_path


def _figure(history):
    import matplotlib
    if not _in_notebook():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    # losses and accuracies on separate axes: early valid-loss spikes would flatten the rest
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3.2))
    epochs = history.column("epoch")
    for ax, keys in ((ax_loss, ("train_loss", "valid_loss")), (ax_acc, ("train_acc", "valid_acc"))):
        for key, style in zip(keys, ("-", "--")):
            ys = history.column(key)
            if ys and not all(math.isnan(v) for v in ys):
                ax.plot(epochs, ys, style, marker=".", label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    ax_acc.set_ylim(0, 1.02)
    fig.tight_layout()
    return fig, plt


def plot_history(history, path: str) -> str:
    """Draw train loss/acc and valid loss/acc per epoch into a PNG at ``path`` (atomically)."""
    fig, plt = _figure(history)
    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


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
        fig, plt = _figure(history)
        display.clear_output(wait=True)
        display.display(fig)
        plt.close(fig)
