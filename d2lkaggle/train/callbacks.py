"""The side jobs of :func:`d2lkaggle.train.loop.fit`, as callbacks (Keras' idea).

The loop trains and evaluates; everything else that happens around an epoch is one of these:
resuming and writing checkpoints, the epoch's progress bar, the epoch line in the log, the
"not learning" check, the curves PNG (or the live Jupyter plot) and a user's ``on_epoch``.
:func:`default_callbacks` builds them from ``fit``'s keywords; ``fit(callbacks=[...])`` adds
your own. Each hook receives the :class:`FitState` and may read or change it (a resumed
checkpoint sets ``start``, ``best`` and ``history``).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..utils.files import load_npz, save_npz
from ..utils.progress import clock, epoch_bar, plural
from .diagnostics import LearningMonitor
from .history import History
from .schedules import epoch_steps, startup_epochs

#: ``fit(plot=PATH)`` redraws the curves at most this often (seconds), and after the last epoch
PLOT_EVERY_S = 10.0


@dataclass
class FitState:
    """What a fit is doing now: the callbacks' view of the loop."""

    step: Any
    train_data: Any
    valid_data: Any
    num_epochs: float               # may be fractional (the record's 9.9): see epochs_to_run
    schedule: Any
    history: Any                   # a loop.History
    dist: Any                      # a parallel.distributed.DistEnv
    devices: str = ""
    start: int = 0                 # first epoch this fit trains (after a resume: the next one)
    epoch: int = 0                 # the epoch being trained (0-based)
    best: float = -math.inf        # best validation accuracy so far
    lr: float | None = None        # the rate the step has now
    log: Callable[[str], None] | None = print

    @property
    def epochs_to_run(self) -> int:
        """Epochs the loop runs: ``ceil(num_epochs)`` (the last one may stop early)."""
        return epoch_steps(self.num_epochs, len(self.train_data))[0]

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole fit (``ceil(batches × num_epochs)``)."""
        return epoch_steps(self.num_epochs, len(self.train_data))[1]

    @property
    def epochs_label(self) -> str:
        """``num_epochs`` as the lines show it (``20``, ``9.9``)."""
        return f"{self.num_epochs:g}"


class Callback:
    """A side job of ``fit``; every hook is optional."""

    def on_train_begin(self, state: FitState) -> None:
        """Before the first epoch (and before the schedule is checked)."""

    def on_epoch_begin(self, state: FitState) -> None:
        """Before the first batch of ``state.epoch``."""

    def on_batch_end(self, state: FitState, loss_sum: float, correct: int, n: int) -> None:
        """After each training batch, with the epoch's running sums."""

    def on_epoch_end(self, state: FitState) -> None:
        """After the epoch's row was added to ``state.history``."""

    def on_train_end(self, state: FitState) -> None:
        """When fit ends, also when it raises (release what the callback holds)."""


class Checkpoints(Callback):
    """``last.npz`` after every epoch, ``best.npz`` when valid accuracy improves (both atomic);
    with ``resume`` the fit continues from ``last.npz`` and ends with the weights an
    uninterrupted run would have. ``config`` is stored with each checkpoint (``--resume``
    compares it). Only rank 0 writes."""

    def __init__(self, folder: str, resume: bool = False, config: dict | None = None):
        self.folder, self.resume, self.config = folder, resume, config
        self.last = os.path.join(folder, "last.npz")
        self.best = os.path.join(folder, "best.npz")

    def on_train_begin(self, state: FitState) -> None:
        if state.dist.is_main:
            os.makedirs(self.folder, exist_ok=True)
        if not (self.resume and os.path.exists(self.last)):
            return
        arrays, meta = load_npz(self.last)
        state.step.load_state_dict(arrays)
        state.history = History.from_json(meta["history"])
        state.history.devices = state.devices
        state.start, state.best = int(meta["epoch"]) + 1, float(meta["best"])
        if meta.get("schedule") is not None and hasattr(state.schedule, "load_state_dict"):
            state.schedule.load_state_dict(meta["schedule"])  # plateau counters
        if state.log:
            state.log(f"resumed from {self.last} after epoch {state.start}")

    def on_epoch_end(self, state: FitState) -> None:
        if not state.dist.is_main:
            return
        r = state.history.last
        improved = (state.valid_data is not None and math.isfinite(r["valid_loss"])
                    and r["valid_acc"] > state.best)  # a NaN loss never becomes "best"
        state.best = max(state.best, r["valid_acc"]) if improved else state.best
        meta = {"epoch": state.epoch, "best": state.best, "history": state.history.to_json()}
        if self.config is not None:  # what shaped this training: resume compares it
            meta["config"] = self.config
        if hasattr(state.schedule, "state_dict"):
            meta["schedule"] = state.schedule.state_dict()
        arrays = state.step.state_dict()
        save_npz(self.last, arrays, meta)
        if improved:
            save_npz(self.best, arrays, meta)

    def on_train_end(self, state: FitState) -> None:
        if state.start >= state.epochs_to_run and state.log:
            state.log(f"{self.last} already holds all {plural(state.num_epochs, 'epoch')}; "
                      "nothing to train")


class ProgressBar(Callback):
    """The epoch's progress bar (a tqdm bar, or the run's overall line when ``progress`` is a
    :class:`~d2lkaggle.utils.progress.RunProgress`)."""

    def __init__(self, progress: Any):
        self.progress, self.bar = progress, None

    def on_epoch_begin(self, state: FitState) -> None:
        n = min(len(state.train_data), state.total_steps - state.epoch * len(state.train_data))
        self.bar = epoch_bar(n, f"epoch {state.epoch + 1}/{state.epochs_label}", self.progress)

    def on_batch_end(self, state: FitState, loss_sum: float, correct: int, n: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}")

    def on_epoch_end(self, state: FitState) -> None:
        self.on_train_end(state)

    def on_train_end(self, state: FitState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Callback):
    """One line per epoch: the phase's ``label``, epoch, lr, train loss/accuracy, valid
    loss/accuracy, examples/s, the time since the fit began and, given a ``clock`` (a
    :class:`~d2lkaggle.train.estimate.RunClock`), the whole run's ETA (the same line on a
    terminal, in a redirected log and in the run folder's ``log.txt``)."""

    def __init__(self, log: Callable[[str], None], label: str = "", clock: Any = None):
        self.log, self.label, self.t0, self.clock = log, label, time.perf_counter(), clock

    def on_train_begin(self, state: FitState) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, state: FitState) -> None:
        r = state.history.last
        msg = (f"{self.label + ' ' if self.label else ''}epoch {state.epoch + 1}/"
               f"{state.epochs_label}  lr {r['lr']:.3g}  train loss {r['train_loss']:.4f}  "
               f"train acc {r['train_acc']:.3f}")
        if state.valid_data is not None:
            msg += f"  valid loss {r['valid_loss']:.4f}  valid acc {r['valid_acc']:.3f}"
        msg += (f"  {r['examples_per_sec']:.0f} ex/s  "
                f"elapsed {clock(time.perf_counter() - self.t0)}")
        eta = self.clock.eta(state.epoch + 1) if self.clock is not None else ""
        self.log(msg + (f"  {eta}" if eta else ""))


class NotLearning(Callback):
    """The early "not learning" check (:class:`~d2lkaggle.train.diagnostics.LearningMonitor`),
    after the schedule's start-up."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log, self.monitor = log, None

    def on_train_begin(self, state: FitState) -> None:
        # not during a warm-up or a cyclic schedule's first cycle: slow there by design
        self.monitor = LearningMonitor(state.train_data, state.epochs_to_run, self.log,
                                       startup=startup_epochs(state.schedule))

    def on_epoch_end(self, state: FitState) -> None:
        self.monitor.after_epoch(state.history)


class PlotCurves(Callback):
    """The curves PNG, redrawn after the last epoch and after any epoch that ends at least
    :data:`PLOT_EVERY_S` seconds (and 20 drawing times) after the previous drawing: every
    epoch of a real run, while a run of one-second epochs does not spend half its time in
    matplotlib."""

    def __init__(self, path: str):
        self.path, self.drawn_at, self.cost = path, time.perf_counter(), 0.0

    def on_epoch_end(self, state: FitState) -> None:
        now = time.perf_counter()
        if state.epoch == state.epochs_to_run - 1 or now - self.drawn_at >= max(PLOT_EVERY_S,
                                                                            20 * self.cost):
            from .plotting import plot_history
            plot_history(state.history, self.path)
            self.drawn_at, self.cost = time.perf_counter(), time.perf_counter() - now


class LiveCurves(Callback):
    """The curves drawn live in Jupyter (``plot="live"``)."""

    def on_train_begin(self, state: FitState) -> None:
        from .plotting import LivePlot
        self.live = LivePlot(has_valid=state.valid_data is not None)

    def on_epoch_end(self, state: FitState) -> None:
        self.live.update(state.history)


class FreezeAfter(Callback):
    """Parameters that train for their first epochs only: ``{canonical name: epochs}`` (the
    speed-run record's whitening bias, 3 epochs); from that epoch on the step's ``freeze``
    stops updating them (no gradient, no momentum, no weight decay). Set at the start of every
    epoch, so a resumed run freezes them too."""

    def __init__(self, epochs: dict[str, int]):
        self.epochs = {str(k): int(v) for k, v in dict(epochs).items()}

    def on_epoch_begin(self, state: FitState) -> None:
        names = [n for n, e in self.epochs.items() if state.epoch >= e]
        if names:
            state.step.freeze(names)


class OnEpoch(Callback):
    """A user's ``on_epoch(epoch, history)``."""

    def __init__(self, fn: Callable[[int, Any], None]):
        self.fn = fn

    def on_epoch_end(self, state: FitState) -> None:
        self.fn(state.epoch, state.history)


def default_callbacks(*, checkpoint_dir: str | None = None, resume: bool = False,
                      config: dict | None = None, progress: Any = True, plot: str | None = None,
                      log: Callable[[str], None] | None = print,
                      on_epoch: Callable[[int, Any], None] | None = None,
                      epoch_log: Any = True, label: str = "", clock: Any = None) -> list[Callback]:
    """``fit``'s keywords as callbacks, in the order they run after an epoch: log line
    (to ``log``, or to ``epoch_log`` when it is a callable, none when it is False; ``label``
    names the phase, ``clock`` adds the whole run's ETA), "not learning" check, checkpoints,
    curves, ``on_epoch``."""
    cbs: list[Callback] = [ProgressBar(progress)] if progress else []
    if callable(epoch_log) or (log and epoch_log):
        cbs.append(EpochLog(epoch_log if callable(epoch_log) else log, label, clock))
    cbs.append(NotLearning(log))
    cbs += [Checkpoints(checkpoint_dir, resume, config)] if checkpoint_dir else []
    if plot == "live":
        cbs.append(LiveCurves())
    elif plot:
        cbs.append(PlotCurves(plot))
    cbs += [OnEpoch(on_epoch)] if on_epoch is not None else []
    return cbs
