"""What a run will cost, said before it starts, and the whole run's ETA on every epoch line.

A run is a sequence of :class:`Part` s — a phase's epochs (training batches, each epoch's
validation and checkpoint), the features a frozen backbone computes once, the predictions of
the validation and test images. :func:`time_training` and :func:`time_prediction` time a few
batches of the run's own training function and prediction on a throwaway model (whatever
model, batch, precision, schedule, mixing and TTA the run uses: nothing is assumed about a
recipe); the run scales them by its own counts. :class:`RunClock` holds the parts: its
:meth:`~RunClock.total` is the expected duration, and after each epoch it gives the time
left for the whole run — the parts still to come, rescaled by how long the parts done so far
really took (so a busy machine or a slow first epoch corrects the estimate as the run goes).
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .callbacks import Callback, FitState

__all__ = ["Part", "RunClock", "FirstBatches", "BatchTimer", "time_training", "time_prediction",
           "duration", "RELATIVE_COSTS"]

#: relative costs when nothing was timed (``estimate=False``): training an image costs about
#: three forward passes (forward, backward, update), predicting one a forward pass; the
#: ETA rescales them by the real time of the parts done, so only their ratio matters
RELATIVE_COSTS = {"train_image": 3.0, "predict_image": 1.0}


def duration(seconds: float) -> str:
    """``< 1 s``, ``45 s``, ``2 min 07 s`` or ``3 h 05 min``: a duration as a person says it."""
    if seconds < 0.5:
        return "< 1 s"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class Part:
    """One part of a run, in the order it runs: ``once_s`` seconds (a prediction, a frozen
    backbone's features, a first evaluation) and then ``epochs`` epochs of ``epoch_s`` seconds
    each, ``start`` of which a resumed run has done already."""

    name: str
    epochs: float = 0
    epoch_s: float = 0.0
    once_s: float = 0.0
    start: float = 0
    detail: str = ""          # what the figure counts, for the estimate's line

    @property
    def seconds(self) -> float:
        """This part's expected seconds in this process (resumed epochs left out)."""
        return self.once_s + max(0.0, self.epochs - self.start) * self.epoch_s

    def left_after(self, epochs_done: float) -> float:
        """Expected seconds of this part still to come once ``epochs_done`` of its epochs are
        done."""
        return max(0.0, self.epochs - epochs_done) * self.epoch_s


@dataclass
class RunClock:
    """The run's parts and its clock: :meth:`total` before it starts, :meth:`eta` after
    every epoch of the part :meth:`begin` named.

    The time left is the expected seconds of what is still to come, times the ratio of the
    real to the expected seconds of what is done (the whole run's average, as the progress
    line's ETA: the validation between epochs and a slow first batch are in it)."""

    parts: list[Part] = field(default_factory=list)
    timed: bool = False       # the costs were measured (not RELATIVE_COSTS)
    t0: float | None = None
    current: int = -1

    def total(self) -> float:
        """Expected seconds of the whole run in this process."""
        return sum(p.seconds for p in self.parts)

    def start(self) -> None:
        """The run's work starts now (after the estimate: its own seconds are not the run's)."""
        self.t0 = time.monotonic()

    def begin(self, name: str) -> None:
        """The part ``name`` starts (a phase: its epoch lines follow)."""
        names = [p.name for p in self.parts]
        if name in names:
            self.current = names.index(name)
        if self.t0 is None:
            self.start()

    def left(self, epochs_done: float) -> float | None:
        """Seconds left for the whole run once ``epochs_done`` epochs of the current part are
        done; ``None`` before anything measurable was done."""
        if self.t0 is None or not 0 <= self.current < len(self.parts):
            return None
        part = self.parts[self.current]
        to_come = part.left_after(epochs_done) + sum(p.seconds for p in self.parts[self.current + 1:])
        done = self.total() - to_come
        elapsed = time.monotonic() - self.t0
        if done <= 0 or elapsed <= 0:
            return None
        return to_come * elapsed / done

    def eta(self, epochs_done: float) -> str:
        """``run ETA 14:05 (2 min 10 s left)`` for an epoch line ('' when it cannot tell)."""
        left = self.left(epochs_done)
        if left is None or not math.isfinite(left):
            return ""
        end = time.time() + left
        fmt = "%H:%M" if time.strftime("%x", time.localtime(end)) == time.strftime("%x") \
            else "%a %H:%M"
        return f"run ETA {time.strftime(fmt, time.localtime(end))} ({duration(left)} left)"

    def line(self, timing: str = "") -> str:
        """The estimate said before the run: the total, what was timed, each part's share."""
        about = lambda s: duration(s) if s < 0.5 else "≈ " + duration(s)  # noqa: E731  (< 1 s)
        parts = [f"{p.name} {p.detail} {about(p.seconds)}" if p.detail else
                 f"{p.name} {about(p.seconds)}" for p in self.parts if p.seconds > 0]
        total = duration(self.total())
        return (f"expected duration: {'under a second' if total.startswith('<') else 'about ' + total}"
                " from now on this machine"
                + (f" ({timing})" if timing else "") + (": " + ", ".join(parts) if parts else ""))


class FirstBatches:
    """``n`` batches of a loader's epoch 0, as a loader of its own (the same source, transform,
    batch size, mean/std and seed): what a throwaway model is timed on. A set of fewer
    batches gives them again, so even one batch per epoch is timed after a warm-up; ``size``
    keeps the first images of each batch (a prediction's cost per image hardly depends on
    the batch, and a large one would make the timing long). Made in this thread, in order;
    the loader itself is left as it was (its epoch is not advanced)."""

    def __init__(self, loader: Any, n: int, size: int | None = None):
        self.loader, self.n, self.size = loader, max(1, int(n)), size
        self.dist = None          # timed in this process alone: never a collective
        self.epoch = 0

    def __len__(self) -> int:
        return self.n if len(self.loader) else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[np.ndarray]:
        """The index arrays of the batches this gives (the first ``size`` images of each)."""
        batches = self.loader.batch_indices(0)
        return [batches[b % len(batches)][:self.size] for b in range(len(self))] if batches else []

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b, idx in enumerate(self.indices()):
            yield self.loader.make_batch(0, b, idx)

    def __getattr__(self, name: str) -> Any:   # source, labels, batch_size, mean, std, seed ...
        if name == "loader":   # (not set yet: copy/pickle look it up before __init__)
            raise AttributeError(name)
        return getattr(self.loader, name)


class BatchTimer(Callback):
    """Seconds between consecutive training batches (the first ``warmup`` left out: they build
    kernels, graphs and optimizer state) and from the last batch to the epoch's end (its
    checkpoint and the other side jobs), recorded by a throwaway fit."""

    def __init__(self, warmup: int = 2):
        self.warmup, self.times, self.epoch_end = warmup, [], 0.0
        self.t = 0.0
        self.seen = 0

    def on_epoch_begin(self, state: FitState) -> None:
        self.t = time.perf_counter()

    def on_batch_end(self, state: FitState, loss_sum: float, correct: int, n: int) -> None:
        now = time.perf_counter()
        if self.seen >= self.warmup:
            self.times.append(now - self.t)
        self.seen += 1
        self.t = now

    def on_epoch_end(self, state: FitState) -> None:
        self.epoch_end = time.perf_counter() - self.t

    @property
    def batch_s(self) -> float:
        """The median seconds of a timed batch (NaN when none was timed)."""
        return float(np.median(self.times)) if self.times else math.nan


def time_training(train_fn: Callable[..., Any], net: Any, loader: Any, *, timed: int = 3,
                  warmup: int = 2, **train_kwargs: Any) -> tuple[float, float]:
    """``(seconds per training batch, seconds of an epoch's end)`` of ``train_fn(net, loader,
    None, 1, ...)`` — a backend's ``train`` or the run's own training function — over the
    first ``warmup + timed`` batches of ``loader``, with checkpoints written to a temporary
    folder as the run writes them; ``net`` is trained, so it must be a throwaway."""
    timer = BatchTimer(warmup)
    first = FirstBatches(loader, warmup + timed)
    lr, wd = train_kwargs.pop("lr"), train_kwargs.pop("wd")
    # the run's own keywords (a recipe's callbacks too), but quiet and into a folder of its own
    callbacks = [*train_kwargs.pop("callbacks", ()), timer]
    with tempfile.TemporaryDirectory(prefix="d2lkaggle-estimate-") as tmp:
        train_fn(net, first, None, 1, lr, wd, **{
            **train_kwargs, "checkpoint_dir": tmp, "resume": False, "progress": False,
            "plot": None, "log": None, "epoch_log": False, "callbacks": callbacks})
    return timer.batch_s, timer.epoch_end


def time_prediction(predict_fn: Callable[..., np.ndarray], loader: Any, *, batches: int = 2,
                    size: int | None = 32, **predict_kwargs: Any) -> float:
    """Seconds per image of ``predict_fn(loader_of_some_batches, **predict_kwargs)`` (a
    backend's ``predict`` with the run's net, precision and TTA bound), over ``batches``
    batches of at most ``size`` images after one untimed one that builds the framework's
    kernels; decoding the images is in the figure, as it is in the run's prediction."""
    predict_fn(FirstBatches(loader, 1, size), **predict_kwargs)
    timed = FirstBatches(loader, batches, size)
    n = sum(len(idx) for idx in timed.indices())
    t = time.perf_counter()
    predict_fn(timed, **predict_kwargs)
    return (time.perf_counter() - t) / max(1, n)
