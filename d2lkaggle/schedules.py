"""Learning-rate schedules as pure functions ``lr(epoch)``.

The loop asks the schedule for the rate of each epoch and hands it to the backend, so the
same schedule means the same thing in every framework (timm's scheduler style).
"""
from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    """Constant learning rate."""
    return lambda epoch: float(lr)


def step_lr(lr: float, period: int | None = None, decay: float = 1.0) -> Schedule:
    """The chapters' StepLR: multiply ``lr`` by ``decay`` every ``period`` epochs.

    ``lr(epoch) = lr * decay ** (epoch // period)`` with epochs counted from 0, which is
    what ``torch.optim.lr_scheduler.StepLR`` stepped once per epoch gives, and what the
    MXNet tab's ``if epoch > 0 and epoch % lr_period == 0`` does.
    """
    if period is None:
        return constant(lr)
    if int(period) < 1:
        raise ValueError(f"lr_period must be >= 1, got {period!r}")
    if decay <= 0:
        raise ValueError(f"lr_decay must be > 0, got {decay!r}")
    return lambda epoch: float(lr) * float(decay) ** (int(epoch) // int(period))


def cosine(lr: float, num_epochs: int, warmup: int = 0, min_lr: float = 0.0) -> Schedule:
    """Cosine decay from ``lr`` to ``min_lr`` after ``warmup`` linear warm-up epochs."""
    def f(epoch: int) -> float:
        if epoch < warmup:
            return lr * (epoch + 1) / (warmup + 1)
        span = max(1, num_epochs - warmup)
        t = min(1.0, (epoch - warmup) / span)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))
    return f
