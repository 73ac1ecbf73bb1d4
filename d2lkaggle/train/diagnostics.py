"""Is training learning at all? One warning, early, naming the usual causes — and at the end
of a run, a diagnosis of how it ended.

The Dog chapter's net with a *random* frozen backbone trains at loss ~600 and accuracy 0.10
without complaint; a learning rate off by 100x looks the same. :class:`LearningMonitor`
looks once, after ``after`` epochs and after the schedule's start-up (a warm-up, a cyclic
schedule's first cycle: slow by design), and warns only when the loss is not falling; a run
that learns slowly is judged at its end (:func:`not_learning` with ``final=True``), which keeps
a warning only when the run ENDED near chance and names a too-short run when that is the cause.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

from ..utils.progress import plural

#: epochs after which the check runs (or the last epoch of a shorter run of >= 2 epochs)
CHECK_AFTER = 3

CAUSES = ("Usual causes: a frozen backbone with random weights (fine-tuning without pretrained "
          "weights: pass weights='imagenet' or a weight file, CLI --weights), a learning rate far "
          "too high (loss grows) or too low (loss flat; `d2lkaggle lr-find` measures one), or "
          "labels that do not match the images")
TOO_SHORT = ("The run is too short for it: the loss was still falling when it ended; train "
             "longer (--epochs)")
FROZEN_RANDOM = ("The cause: a frozen backbone with random weights (fine-tuning without "
                 "pretrained weights); pass weights='imagenet' or a weight file (CLI --weights)")


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


def _accs(row) -> list[float]:
    return [row["train_acc"]] + ([row["valid_acc"]] if not math.isnan(row["valid_acc"]) else [])


def not_learning(history, num_classes: int | None, after: int = CHECK_AFTER, *,
                 final: bool = False, frozen_random: bool = False) -> str | None:
    """The warning text when ``history`` did not learn, else ``None``.

    Early (the first ``after`` epochs): the loss did not fall — it stayed at or above 98 % of
    the first epoch's and no better than uniform guessing (``ln(num_classes)``) —, or the
    accuracy stayed at chance (train, and valid when measured, at most 1.5x ``1/num_classes``)
    while the loss fell by less than 10 %. A run at chance whose loss falls is learning slowly:
    the end of the run judges it.

    ``final``: the whole run, judged by how it ended — near chance at its last epoch, or
    nothing. The causes named are the likely ones: a too-short run when the loss was still
    falling, a frozen random backbone when ``frozen_random``, else the usual list.
    """
    rows = history.rows if final else history.rows[:after]
    if len(rows) < 2 or not num_classes or num_classes < 2:
        return None
    first, last = rows[0], rows[-1]
    chance = 1.0 / num_classes
    at_chance = all(a <= 1.5 * chance for a in _accs(last))
    uniform = math.log(num_classes)
    flat = last["train_loss"] >= 0.98 * first["train_loss"] and last["train_loss"] >= uniform
    falling = last["train_loss"] < 0.9 * first["train_loss"]
    if final:
        if not at_chance:
            return None
    elif not (flat or (at_chance and not falling)):
        return None
    what = []
    if flat or not final:
        what.append(f"train loss {first['train_loss']:.4g} -> {last['train_loss']:.4g} "
                    f"(uniform guessing: {uniform:.3g})")
    acc = f"train acc {last['train_acc']:.3f}"
    if not math.isnan(last["valid_acc"]):
        acc += f", valid acc {last['valid_acc']:.3f}"
    what.append(acc + f" (chance: {chance:.3g} for {num_classes} classes)")
    if not final:
        return f"training is not learning after {plural(len(rows), 'epoch')}: {'; '.join(what)}. {CAUSES}."
    tail = rows[-max(2, len(rows) // 3):]   # the last third: still falling there?
    still_falling = falling and tail[-1]["train_loss"] < 0.97 * tail[0]["train_loss"]
    cause = (FROZEN_RANDOM if frozen_random else TOO_SHORT if still_falling else CAUSES)
    if still_falling:
        what.insert(0, f"train loss {first['train_loss']:.4g} -> {last['train_loss']:.4g}, "
                       "still falling")
    return f"training ended near chance after {plural(len(rows), 'epoch')}: {'; '.join(what)}. {cause}."


class LearningMonitor:
    """Checks a run once, after epoch ``max(after, the schedule's start-up)`` (when the run is
    that long); warns through ``log`` (as ``"warning: ..."``) or, without a log, with
    :class:`NotLearningWarning`."""

    def __init__(self, train_data, num_epochs: int, log: Callable[[str], None] | None = print,
                 after: int = CHECK_AFTER, startup: float = 0.0):
        self.num_classes = num_classes_of(train_data)
        self.at = max(min(after, num_epochs), math.ceil(startup - 1e-9))
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
