"""The learning-rate finder (fastai's ``lr_find``, Smith 2015), once for every backend.

The chapters' results swing between chance and 0.97 on the learning rate alone. The finder
trains for ``num_iter`` batches while the rate grows exponentially from ``start_lr`` to
``end_lr``, records the bias-corrected exponentially smoothed loss, stops when that loss
diverges, and suggests the rate of the steepest descent (or, when the loss hardly fell,
fastai's older rule: the rate of the minimum divided by 10). The weights are restored afterwards, so the net
trains from where it was.

A backend's ``lr_find(net, train_iter, ...)`` builds its Step and calls :func:`lr_find_net`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class LRFinderResult:
    """What the finder measured and what it suggests."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)      # batch-mean loss of each batch
    smoothed: list[float] = field(default_factory=list)    # bias-corrected EMA of ``losses``
    suggestion: float = math.nan                            # the rate to use (see ``rule``)
    steepest: float = math.nan                              # steepest descent of ``smoothed``
    min_lr: float = math.nan                                # rate at the smoothed minimum
    rule: str = ""                                          # which of the two ``suggestion`` is
    stopped: str = ""                                       # "diverged", "end_lr" or "non-finite loss"

    def to_csv(self, path: str) -> str:
        """Write ``lr,loss,smoothed`` rows (atomically)."""
        from ..utils.files import atomic_write_text
        lines = ["lr,loss,smoothed"] + [f"{a!r},{b!r},{c!r}" for a, b, c in
                                        zip(self.lrs, self.losses, self.smoothed)]
        return atomic_write_text(path, "\n".join(lines) + "\n")

    def plot(self, path: str, title: str | None = None):
        """``lr_find.png``: smoothed loss against the rate, suggestions marked."""
        from .plotting import plot_lr_find
        return plot_lr_find(self, path, title)


def suggest(lrs: list[float], smoothed: list[float], skip_start: int = 10,
            skip_end: int = 5) -> tuple[float, float, float, str]:
    """``(suggestion, steepest, at_minimum, rule)`` from a range test.

    ``steepest``: where the smoothed loss falls fastest per decade, measured over a window
    of ~1/20 of the points (a single-step gradient follows the batch noise) and searched
    before the minimum, edges skipped as fastai does. ``at_minimum``: the rate of the
    smallest smoothed loss. The suggestion is ``steepest`` when the loss really fell (by
    5 % or more of its start) and ``at_minimum / 10`` otherwise (a flat curve has no
    meaningful steepest point).
    """
    lr = np.asarray(lrs, dtype=np.float64)
    loss = np.asarray(smoothed, dtype=np.float64)
    ok = np.isfinite(loss)
    lr, loss = lr[ok], loss[ok]
    if not len(lr):
        return math.nan, math.nan, math.nan, "none"
    i_min = int(np.argmin(loss))
    at_min = float(lr[i_min])
    w = max(1, len(lr) // 20)
    lo = min(skip_start, max(0, i_min - 2 * w))
    hi = min(len(lr) - max(skip_end, w), i_min + 1)
    x = np.log10(lr)
    best, steepest = 0.0, math.nan
    for i in range(max(lo, w), hi):
        j0, j1 = i - w, min(len(lr) - 1, i + w)
        slope = (loss[j1] - loss[j0]) / (x[j1] - x[j0])
        if slope < best:
            best, steepest = slope, float(lr[i])
    start = loss[: max(1, w)].mean()
    if math.isfinite(steepest) and start - loss[i_min] >= 0.05 * abs(start):
        return steepest, steepest, at_min, "steepest descent"
    return at_min / 10, steepest, at_min, "minimum / 10"


def lr_find(step, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
            *, beta: float = 0.98, diverge: float = 4.0, progress: bool = True,
            log: Callable[[str], Any] | None = None) -> LRFinderResult:
    """Run the range test on a backend ``step`` (``set_lr``/``train_batch``) and restore its
    model and optimizer state afterwards. Iterates ``train_iter`` (several epochs if needed)."""
    if not (0 < start_lr < end_lr):
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if num_iter < 5:
        raise ValueError(f"num_iter must be >= 5, got {num_iter}")
    # copies: some backends hand out numpy views of the live parameters
    saved = {k: np.array(v, copy=True) for k, v in step.state_dict().items()}
    saved_epoch = getattr(train_iter, "epoch", None)
    ratio = (end_lr / start_lr) ** (1.0 / (num_iter - 1))
    res = LRFinderResult(stopped="end_lr")
    avg, best = 0.0, math.inf
    bar = None
    from ..utils.progress import interactive
    if progress and interactive():   # (off a terminal a bar would write frames, not lines)
        from tqdm.auto import tqdm
        bar = tqdm(total=num_iter, desc="lr finder", leave=False, dynamic_ncols=True)
    try:
        epoch = 0
        while len(res.lrs) < num_iter:
            if hasattr(train_iter, "set_epoch"):
                train_iter.set_epoch(epoch)
            n_before = len(res.lrs)
            for x, y in train_iter:
                lr = start_lr * ratio ** len(res.lrs)
                step.set_lr(lr)
                loss_sum, _, n = step.train_batch(x, y)
                loss = loss_sum / max(n, 1)
                if bar is not None:
                    bar.update(1)
                if not math.isfinite(loss):
                    res.stopped = "non-finite loss"
                    break
                avg = beta * avg + (1 - beta) * loss
                smooth = avg / (1 - beta ** (len(res.lrs) + 1))
                res.lrs.append(lr)
                res.losses.append(loss)
                res.smoothed.append(smooth)
                best = min(best, smooth)
                if len(res.lrs) > 5 and smooth > diverge * best:
                    res.stopped = "diverged"
                    break
                if len(res.lrs) >= num_iter:
                    break
            if res.stopped != "end_lr" or len(res.lrs) == n_before:
                break
            epoch += 1
    finally:
        if bar is not None:
            bar.close()
        step.load_state_dict(saved)
        if saved_epoch is not None and hasattr(train_iter, "set_epoch"):
            train_iter.set_epoch(saved_epoch)
    if not res.lrs:
        raise ValueError("the lr finder got no batch from the training data")
    res.suggestion, res.steepest, res.min_lr, res.rule = suggest(res.lrs, res.smoothed)
    if log:
        log(f"lr finder: {len(res.lrs)} batches, stopped: {res.stopped}; suggested lr "
            f"{res.suggestion:.3g} ({res.rule}; steepest descent {res.steepest:.3g}, "
            f"minimum / 10 {res.min_lr / 10:.3g})")
    return res


def lr_find_net(step_cls: Callable[..., Any], net: Any, train_iter, start_lr: float = 1e-7,
                end_lr: float = 10.0, num_iter: int = 100, *, wd: float = 0.0,
                momentum: float = 0.9, devices: Any = None, amp: Any = "auto",
                plot: str | None = None, progress: bool = True,
                log: Callable[[str], Any] | None = None) -> LRFinderResult:
    """Build a backend's Step for ``net`` (SGD, the chapters' optimizer) and run :func:`lr_find`;
    with ``plot`` a PNG path, draw ``lr_find.png`` there."""
    from .loop import loader_norm
    step = step_cls(net, lr=start_lr, wd=wd, momentum=momentum, devices=devices, amp=amp,
                    **loader_norm(train_iter))
    res = lr_find(step, train_iter, start_lr, end_lr, num_iter, progress=progress, log=log)
    if plot:
        res.plot(plot)
    return res
