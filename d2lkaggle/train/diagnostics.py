"""Is training learning at all? One warning, early, naming the usual causes.

The Dog chapter's net with a *random* frozen backbone trains at loss ~600 and accuracy 0.10
without complaint; a learning rate off by 100x looks the same. :class:`LearningMonitor`
looks once, after ``after`` epochs, and says so.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

#: epochs after which the check runs (or the last epoch of a shorter run of >= 2 epochs)
CHECK_AFTER = 3

CAUSES = ("Usual causes: a frozen backbone with random weights (fine-tuning without pretrained "
          "weights: pass weights='imagenet' or a weight file, CLI --weights), a learning rate far "
          "too high (loss grows) or too low (loss flat; `d2lkaggle lr-find` measures one), or "
          "labels that do not match the images")


class NotLearningWarning(UserWarning):
    """Training loss is not falling and accuracy stays at chance."""


def num_classes_of(data) -> int | None:
    """Number of classes in a loader's integer labels (``None`` when it has none to read)."""
    labels = getattr(data, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        return None
    labels = labels[labels >= 0]
    return int(labels.max()) + 1 if len(labels) else None


def not_learning(history, num_classes: int | None, after: int = CHECK_AFTER) -> str | None:
    """The warning text when the first ``after`` epochs of ``history`` did not learn, else ``None``.

    Not learning means: accuracy at chance (train, and valid when measured, at most 1.5x
    ``1/num_classes``), or a train loss that did not fall below 98 % of the first epoch's while
    still no better than uniform guessing (``ln(num_classes)``).
    """
    rows = history.rows[:after]
    if len(rows) < 2 or not num_classes or num_classes < 2:
        return None
    first, last = rows[0], rows[-1]
    chance = 1.0 / num_classes
    accs = [last["train_acc"]] + ([last["valid_acc"]] if not math.isnan(last["valid_acc"]) else [])
    at_chance = all(a <= 1.5 * chance for a in accs)
    flat = (last["train_loss"] >= 0.98 * first["train_loss"]
            and last["train_loss"] >= math.log(num_classes))
    if not (at_chance or flat):
        return None
    what = []
    if flat:
        what.append(f"train loss {first['train_loss']:.4g} -> {last['train_loss']:.4g} "
                    f"(uniform guessing: {math.log(num_classes):.3g})")
    acc = f"train acc {last['train_acc']:.3f}"
    if not math.isnan(last["valid_acc"]):
        acc += f", valid acc {last['valid_acc']:.3f}"
    what.append(acc + f" (chance: {chance:.3g} for {num_classes} classes)")
    return f"training is not learning after {len(rows)} epochs: {'; '.join(what)}. {CAUSES}."


class LearningMonitor:
    """Checks a run once, after epoch ``min(after, num_epochs)``; warns through ``log``
    (as ``"warning: ..."``) or, without a log, with :class:`NotLearningWarning`."""

    def __init__(self, train_data, num_epochs: int, log: Callable[[str], None] | None = print,
                 after: int = CHECK_AFTER):
        self.num_classes = num_classes_of(train_data)
        self.at = min(after, num_epochs)
        self.log = log
        self.message: str | None = None

    def after_epoch(self, history) -> str | None:
        if len(history) != self.at:
            return None
        self.message = not_learning(history, self.num_classes, self.at)
        if self.message:
            if self.log:
                self.log("warning: " + self.message)
            else:
                warnings.warn(self.message, NotLearningWarning, stacklevel=3)
        return self.message
