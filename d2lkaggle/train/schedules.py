"""Learning-rate schedules as pure functions ``lr(t)`` of the training time ``t``.

``t`` is the epoch (counted from 0) plus the fraction of that epoch already done: the loop
asks for ``lr(epoch + b / batches_per_epoch)`` before batch ``b`` and hands the rate to the
backend, so one schedule means the same numbers in every framework (timm's scheduler
style). Each schedule reproduces a torch scheduler stepped the way its name says:

========================  =====================================================  ===========
schedule                  torch equivalent                                       stepped
========================  =====================================================  ===========
:func:`step_lr`           ``StepLR(step_size=period, gamma=decay)``              per epoch
:func:`multistep`         ``MultiStepLR(milestones, gamma)``                     per epoch
:func:`cyclic`            ``CyclicLR(base_lr, max_lr, up, down, mode, gamma)``   per batch
:func:`onecycle`          ``OneCycleLR(max_lr, total_steps, pct_start, ...)``    per batch
:func:`cosine`            ``LinearLR`` warm-up then ``CosineAnnealingLR``         per batch
:class:`Plateau`          ``ReduceLROnPlateau(factor, patience, threshold...)``  per epoch
:func:`triangle`          airbench94's ``LambdaLR(triangle(...))``               per batch
========================  =====================================================  ===========

Momentum is never cycled (torch's ``cycle_momentum=False``): a schedule sets the rate only.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

Schedule = Callable[[float], float]

CYCLE_MODES = ("triangular", "triangular2", "exp_range")
SCHEDULES = ("step", "multistep", "cyclic", "onecycle", "cosine", "plateau", "triangle")


class _Schedule:
    """Base of the named schedules: ``name`` and arguments appear in errors and summaries."""

    name = "schedule"

    def __call__(self, t: float) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The schedule's name and arguments (what summary.json records)."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{self.name}({args})"


def _positive(name: str, value: float, what: str, allow_zero: bool = True) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: {what} must be a finite number {bound}, got {value!r}")
    return v


class Constant(_Schedule):
    """The same rate at every step."""

    name = "constant"

    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, t: float) -> float:
        return self.lr


def constant(lr: float) -> Schedule:
    """Constant learning rate."""
    return Constant(lr)


class StepLR(_Schedule):
    """The chapters' StepLR, see :func:`step_lr`."""

    name = "step"

    def __init__(self, lr: float, period: int, decay: float):
        self.lr, self.period, self.decay = float(lr), int(period), float(decay)

    def __call__(self, t: float) -> float:
        return self.lr * self.decay ** (math.floor(t) // self.period)


def step_lr(lr: float, period: int | None = None, decay: float = 1.0) -> Schedule:
    """The chapters' StepLR: multiply ``lr`` by ``decay`` every ``period`` epochs.

    ``lr(t) = lr * decay ** (floor(t) // period)`` with epochs counted from 0, which is
    what ``torch.optim.lr_scheduler.StepLR`` stepped once per epoch gives, and what the
    MXNet tab's ``if epoch > 0 and epoch % lr_period == 0`` does.
    """
    if period is None:
        return constant(lr)
    if int(period) < 1:
        raise ValueError(f"lr_period must be >= 1, got {period!r}")
    if decay <= 0:
        raise ValueError(f"lr_decay must be > 0, got {decay!r}")
    return StepLR(lr, int(period), decay)


class MultiStep(_Schedule):
    """``lr * gamma ** (number of milestones <= epoch)``, see :func:`multistep`."""

    name = "multistep"

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float):
        self.lr, self.milestones, self.gamma = float(lr), sorted(int(m) for m in milestones), float(gamma)

    def __call__(self, t: float) -> float:
        e = math.floor(t)
        return self.lr * self.gamma ** sum(1 for m in self.milestones if m <= e)


def multistep(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """torch's ``MultiStepLR`` stepped per epoch: decay by ``gamma`` at each milestone epoch."""
    ms = list(milestones)
    if not ms or any(int(m) != m or m < 1 for m in ms):
        raise ValueError(f"multistep: milestones must be whole epochs >= 1, got {ms!r}")
    _positive("multistep", gamma, "gamma", allow_zero=False)
    return MultiStep(lr, ms, gamma)


def _iteration(t: float, steps_per_epoch: int) -> int:
    # t = epoch + b / n is exact up to rounding; the batch counter is what torch counts
    return int(round(t * steps_per_epoch))


class Cyclic(_Schedule):
    """torch's ``CyclicLR`` (per batch), see :func:`cyclic`."""

    name = "cyclic"

    def __init__(self, base_lr, max_lr, steps_per_epoch, step_size_up, step_size_down, mode, gamma):
        self.base_lr, self.max_lr = float(base_lr), float(max_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.step_size_up, self.step_size_down = int(step_size_up), int(step_size_down)
        self.mode, self.gamma = mode, float(gamma)

    def __call__(self, t: float) -> float:
        it = _iteration(t, self.steps_per_epoch)
        total = self.step_size_up + self.step_size_down
        ratio = self.step_size_up / total
        cycle = math.floor(1 + it / total)
        x = 1.0 + it / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (self.max_lr - self.base_lr) * scale
        if self.mode == "triangular":
            f = 1.0
        elif self.mode == "triangular2":
            f = 1 / (2.0 ** (cycle - 1))
        else:  # exp_range scales by iterations, as torch does
            f = self.gamma ** it
        return self.base_lr + height * f


def cyclic(base_lr: float, max_lr: float, steps_per_epoch: int, step_size_up: int = 2000,
           step_size_down: int | None = None, mode: str = "triangular",
           gamma: float = 1.0) -> Schedule:
    """torch's ``CyclicLR`` stepped after every batch (``cycle_momentum=False``).

    ``step_size_up``/``step_size_down`` count iterations (batches), like torch; the
    schedule needs ``steps_per_epoch`` to turn ``t`` back into the batch counter.
    ``mode`` is ``triangular``, ``triangular2`` (amplitude halves every cycle) or
    ``exp_range`` (amplitude times ``gamma ** iteration``).
    """
    if mode not in CYCLE_MODES:
        raise ValueError(f"cyclic: mode must be one of {', '.join(CYCLE_MODES)}, got {mode!r}")
    _positive("cyclic", base_lr, "base_lr")
    _positive("cyclic", max_lr, "max_lr")
    if int(steps_per_epoch) < 1:
        raise ValueError(f"cyclic: steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    down = step_size_up if step_size_down is None else step_size_down
    if int(step_size_up) < 1 or int(down) < 1:
        raise ValueError(f"cyclic: step sizes must be >= 1 iteration, got up={step_size_up!r} "
                         f"down={down!r}")
    _positive("cyclic", gamma, "gamma", allow_zero=False)
    return Cyclic(base_lr, max_lr, steps_per_epoch, step_size_up, down, mode, gamma)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycle(_Schedule):
    """torch's ``OneCycleLR`` with cosine annealing (per batch), see :func:`onecycle`."""

    name = "onecycle"

    def __init__(self, max_lr, total_steps, steps_per_epoch, pct_start, div_factor,
                 final_div_factor, three_phase):
        self.max_lr, self.total_steps = float(max_lr), int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.pct_start, self.div_factor = float(pct_start), float(div_factor)
        self.final_div_factor, self.three_phase = float(final_div_factor), bool(three_phase)
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        up = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            self._phases = [(up, initial, self.max_lr), (2 * up, self.max_lr, initial),
                            (self.total_steps - 1, initial, final)]
        else:
            self._phases = [(up, initial, self.max_lr), (self.total_steps - 1, self.max_lr, final)]

    def __call__(self, t: float) -> float:
        # past the planned steps (a longer resumed run) the rate stays at its final value
        it = min(_iteration(t, self.steps_per_epoch), self.total_steps - 1)
        start = 0.0
        for i, (end, lr0, lr1) in enumerate(self._phases):
            if it <= end or i == len(self._phases) - 1:
                # (a phase shorter than one step, in runs of very few batches: its end value)
                return _cos(lr0, lr1, (it - start) / (end - start) if end > start else 1.0)
            start = end
        raise AssertionError("unreachable")


def onecycle(max_lr: float, num_epochs: int, steps_per_epoch: int, pct_start: float = 0.3,
             div_factor: float = 25.0, final_div_factor: float = 1e4,
             three_phase: bool = False) -> Schedule:
    """torch's ``OneCycleLR(anneal_strategy="cos", cycle_momentum=False)`` stepped per batch.

    Warm up from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the
    ``num_epochs * steps_per_epoch`` steps, then cosine-anneal to
    ``max_lr / div_factor / final_div_factor``.
    """
    _positive("onecycle", max_lr, "max_lr", allow_zero=False)
    total = epoch_steps(num_epochs, steps_per_epoch)[1]
    if total < 1:
        raise ValueError(f"onecycle: needs at least 1 step, got {num_epochs} epochs x "
                         f"{steps_per_epoch} steps")
    if not 0 < pct_start < 1:
        raise ValueError(f"onecycle: pct_start must be in (0, 1), got {pct_start!r}")
    _positive("onecycle", div_factor, "div_factor", allow_zero=False)
    _positive("onecycle", final_div_factor, "final_div_factor", allow_zero=False)
    return OneCycle(max_lr, total, steps_per_epoch, pct_start, div_factor, final_div_factor,
                    three_phase)


class Triangle(_Schedule):
    """airbench94's piecewise-linear schedule (per batch), see :func:`triangle`."""

    name = "triangle"

    def __init__(self, lr, total_steps, steps_per_epoch, start, peak, end):
        self.lr, self.total_steps = float(lr), int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self._top = int(self.peak * self.total_steps)   # airbench's int(peak * steps)

    def factor(self, it: int) -> float:
        """The rate's multiplier before optimizer step ``it + 1`` (``it`` steps done)."""
        it, top, total = min(max(it, 0), self.total_steps), self._top, self.total_steps
        if it <= top:
            return self.start + (1.0 - self.start) * it / top if top > 0 else 1.0
        return 1.0 + (self.end - 1.0) * (it - top) / (total - top)

    def __call__(self, t: float) -> float:
        return self.lr * self.factor(_iteration(t, self.steps_per_epoch))


def triangle(lr: float, num_epochs: float, steps_per_epoch: int, start: float = 0.2,
             peak: float = 0.23, end: float = 0.07) -> Schedule:
    """The CIFAR-10 speed-run record's schedule (airbench94, stepped per batch): the rate rises
    linearly from ``start·lr`` to ``lr`` at step ``int(peak × total)``, then falls linearly
    to ``end·lr`` at the last step (``total`` = :func:`epoch_steps`, fractional epochs too).
    """
    _positive("triangle", lr, "lr", allow_zero=False)
    total = epoch_steps(num_epochs, steps_per_epoch)[1]
    if total < 1:
        raise ValueError(f"triangle: needs at least 1 step, got {num_epochs} epochs x "
                         f"{steps_per_epoch} steps")
    if not 0 <= peak < 1:
        raise ValueError(f"triangle: the peak must be a fraction of the run in [0, 1), got {peak!r}")
    _positive("triangle", start, "start factor")
    _positive("triangle", end, "end factor")
    return Triangle(lr, total, steps_per_epoch, start, peak, end)


class Cosine(_Schedule):
    """Linear warm-up then cosine annealing, see :func:`cosine`."""

    name = "cosine"

    def __init__(self, lr, num_epochs, warmup, min_lr, warmup_start):
        self.lr, self.num_epochs, self.warmup = float(lr), float(num_epochs), float(warmup)
        self.min_lr, self.warmup_start = float(min_lr), float(warmup_start)

    def __call__(self, t: float) -> float:
        if t < self.warmup:
            f = self.warmup_start + (1.0 - self.warmup_start) * t / self.warmup
            return self.lr * f
        span = self.num_epochs - self.warmup
        p = min(1.0, (t - self.warmup) / span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * p))


def cosine(lr: float, num_epochs: int, warmup: float = 0, min_lr: float = 0.0,
           warmup_start: float = 0.1) -> Schedule:
    """Cosine annealing from ``lr`` to ``min_lr``, after ``warmup`` epochs of linear warm-up.

    Per batch: with ``N`` batches per epoch it equals torch's ``LinearLR(start_factor=
    warmup_start, total_iters=warmup*N)`` followed by ``CosineAnnealingLR(T_max=(num_epochs
    - warmup)*N, eta_min=min_lr)`` (``SequentialLR``). ``warmup`` may be a fraction of an epoch.
    """
    _positive("cosine", lr, "lr")
    _positive("cosine", min_lr, "min_lr")
    w = _positive("cosine", warmup, "warmup")
    if not w < num_epochs:
        raise ValueError(f"cosine: warmup ({warmup}) must be shorter than the run ({num_epochs} epochs)")
    if not 0 < warmup_start <= 1:
        raise ValueError(f"cosine: warmup_start must be in (0, 1], got {warmup_start!r}")
    return Cosine(lr, num_epochs, w, min_lr, warmup_start)


class Plateau(_Schedule):
    """torch's ``ReduceLROnPlateau`` (mode ``min``) on the validation loss, stepped per epoch.

    The loop calls :meth:`observe` with each epoch's validation loss (the training loss when
    there is no validation set); after ``patience`` epochs without a relative improvement of
    ``threshold`` the rate is multiplied by ``factor`` (not below ``min_lr``), followed by
    ``cooldown`` epochs in which bad epochs are not counted. :meth:`state_dict` travels in the
    checkpoint so a resumed run continues with the same counters.
    """

    name = "plateau"

    def __init__(self, lr: float, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8):
        _positive("plateau", lr, "lr")
        if not 0 < factor < 1:
            raise ValueError(f"plateau: factor must be in (0, 1), got {factor!r}")
        if int(patience) < 0 or int(cooldown) < 0:
            raise ValueError(f"plateau: patience and cooldown must be >= 0, got {patience!r}, {cooldown!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"plateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.lr, self.factor, self.patience = float(lr), float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps = int(cooldown), float(min_lr), float(eps)
        self._state = {"current": self.lr, "best": math.inf, "bad_epochs": 0,
                       "cooldown_counter": 0}

    def __call__(self, t: float) -> float:
        return self._state["current"]

    def _better(self, a: float, best: float) -> bool:
        if self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        return a < best - self.threshold

    def observe(self, metric: float) -> None:
        """One epoch's validation loss (a NaN metric counts as no improvement)."""
        s = self._state
        if self._better(float(metric), s["best"]):
            s["best"], s["bad_epochs"] = float(metric), 0
        else:
            s["bad_epochs"] += 1
        if s["cooldown_counter"] > 0:
            s["cooldown_counter"] -= 1
            s["bad_epochs"] = 0
        if s["bad_epochs"] > self.patience:
            new = max(s["current"] * self.factor, self.min_lr)
            if s["current"] - new > self.eps:
                s["current"] = new
            s["cooldown_counter"], s["bad_epochs"] = self.cooldown, 0

    def state_dict(self) -> dict[str, float]:
        """Counters to put into a checkpoint's meta (JSON-safe)."""
        s = dict(self._state)
        s["best"] = None if math.isinf(s["best"]) else s["best"]
        return s

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = dict(state)
        s["best"] = math.inf if s.get("best") is None else float(s["best"])
        self._state = {"current": float(s["current"]), "best": s["best"],
                       "bad_epochs": int(s["bad_epochs"]), "cooldown_counter": int(s["cooldown_counter"])}


def plateau(lr: float, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
            threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0) -> Plateau:
    """Reduce ``lr`` by ``factor`` when the validation loss stops improving (see :class:`Plateau`)."""
    return Plateau(lr, factor, patience, threshold, threshold_mode, cooldown, min_lr)


def startup_epochs(schedule: Schedule) -> float:
    """Epochs a schedule spends starting up, during which slow progress is by design: a
    one-cycle or cosine warm-up, a cyclic schedule's first full cycle (0 for the others)."""
    if isinstance(schedule, Cyclic):
        return (schedule.step_size_up + schedule.step_size_down) / max(1, schedule.steps_per_epoch)
    if isinstance(schedule, OneCycle):
        return schedule.pct_start * schedule.total_steps / max(1, schedule.steps_per_epoch)
    if isinstance(schedule, Cosine):
        return schedule.warmup
    if isinstance(schedule, Triangle):
        return schedule.peak * schedule.total_steps / max(1, schedule.steps_per_epoch)
    return 0.0


def schedule_name(schedule: Schedule) -> str:
    """A short name of ``schedule`` for error messages."""
    return repr(schedule) if isinstance(schedule, _Schedule) else getattr(
        schedule, "__name__", type(schedule).__name__)


def check_lr(schedule: Schedule, t: float) -> float:
    """``schedule(t)`` as a float, or a ValueError naming the schedule and ``t``."""
    lr = float(schedule(t))
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"schedule {schedule_name(schedule)} gives learning rate {lr} at t={t:.6g} "
                         f"(epoch {math.floor(t) + 1}); a rate must be finite and >= 0")
    return lr


def epoch_steps(num_epochs: float, steps_per_epoch: int) -> tuple[int, int]:
    """``(epochs that run, optimizer steps in all)`` of a run of ``num_epochs``, which may be
    fractional: the record's 9.9 epochs of 48 steps are ``ceil(48 × 9.9)`` = 476 steps, the
    tenth epoch cut short after 44 (airbench's ``total_train_steps``)."""
    n = max(1, int(steps_per_epoch))
    total = max(0, math.ceil(n * float(num_epochs) - 1e-9))
    return -(-total // n), total


def check_schedule(schedule: Schedule, num_epochs: float, steps_per_epoch: int,
                   start: int = 0) -> None:
    """Evaluate ``schedule`` at every batch of epochs ``start..`` to the end of the run
    (``num_epochs`` may be fractional, see :func:`epoch_steps`) before training.

    Raises a ValueError naming the schedule and ``t`` at the first negative or NaN rate, so a
    bad schedule fails before anything is trained or written.
    """
    n = max(1, int(steps_per_epoch))
    _, total = epoch_steps(num_epochs, n)
    for i in range(int(start) * n, total):
        check_lr(schedule, i // n + (i % n) / n)
