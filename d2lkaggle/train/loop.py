"""The one training loop, written once for every framework.

A backend supplies a small *step* object (see :class:`Step`); :func:`fit` owns everything
else the chapters' ``train`` functions do: epochs, the per-epoch learning rate, metric
accumulation, progress, the history and curves, checkpoints and resuming.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from ..data.mixing import MIX_TAG, batch_rng
from ..parallel import distributed
from .callbacks import Callback, FitState, default_callbacks
from .history import HISTORY_COLUMNS, History  # noqa: F401  (HISTORY_COLUMNS: loop's public name)
from .schedules import check_lr, check_schedule, epoch_steps


class Step(Protocol):
    """What a backend implements so that :func:`fit` can drive it.

    Losses are means over the batch for the gradient; ``train_batch`` and ``eval_batch``
    return the *sum* of per-example losses so the loop can average over an epoch exactly.
    A data-parallel step (``Step(..., dist=DistEnv)``, see :mod:`d2lkaggle.parallel.distributed`) also
    has ``dist``, ``all_reduce_sum(values) -> values summed over ranks`` and ``barrier()``:
    :func:`fit` and :func:`evaluate` then sum their metrics over the ranks and only rank 0
    writes checkpoints.
    """

    def set_lr(self, lr: float) -> None: ...
    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]: ...
    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]: ...
    def predict_batch(self, x: np.ndarray) -> np.ndarray: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


#: floating types a Step trains in: float32, or float64 as the reference for parity checks
DTYPES = ("float32", "float64")


def check_dtype(dtype: str) -> str:
    """A Step's ``dtype`` argument, checked (float64 turns autocast off in every backend)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (float64 is the parity reference), got {dtype!r}")
    return dtype


def evaluate(step: Step, data: Iterable) -> tuple[float, float]:
    """Mean loss and accuracy of ``step``'s model over ``data`` (inference mode)."""
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in data:
        if len(y) == 0:  # this rank's share of a short last batch (data parallel)
            continue
        ls, c, k = step.eval_batch(x, y)
        loss_sum, correct, n = loss_sum + ls, correct + c, n + k
    from ..parallel.distributed import reduce_metrics
    loss_sum, correct, n = reduce_metrics(step, loss_sum, correct, n)  # over ranks (DDP)
    if n == 0:
        raise ValueError("evaluation data is empty")
    if not math.isfinite(loss_sum):
        # NaN weights still give an argmax (class 0), so accuracy alone would look valid.
        raise FloatingPointError(
            f"evaluation loss is {loss_sum / n} over {n} examples: the model's outputs are not "
            "finite (training diverged?); lower the learning rate or check the inputs")
    return loss_sum / n, correct / n


def predict(step: Step, data: Iterable, tta: Any = None) -> np.ndarray:
    """Class probabilities for every example of ``data``, in order (rows sum to 1).

    ``tta`` ("flip", "flip-crop" or a number of views) averages the probabilities of the
    augmented views of each batch (see :mod:`d2lkaggle.train.tta`); rows keep their order.
    """
    if tta is not None:
        from .tta import TTAStep
        step = TTAStep(step, tta, seed=getattr(data, "seed", 0))
    out = [np.asarray(step.predict_batch(x), dtype=np.float64) for x, _ in data]
    if not out:
        raise ValueError("prediction data is empty")
    probs = np.concatenate(out)
    bad = ~np.isfinite(probs).all(axis=1) if probs.ndim == 2 else ~np.isfinite(probs)
    if bad.any():
        raise FloatingPointError(
            f"{int(bad.sum())} of {len(bad)} rows of predicted probabilities are not finite "
            "(the model diverged?); no submission is written from them")
    return probs


def fit(step: Step, train_data, valid_data, num_epochs: float,
        schedule: Callable[[float], float], *, mixing: Callable | None = None,
        num_classes: int | None = None, checkpoint_dir: str | None = None,
        resume: bool = False, progress: bool = True, plot: str | None = None,
        devices: str = "", on_epoch: Callable[[int, History], None] | None = None,
        log: Callable[[str], None] | None = print, config: dict | None = None,
        callbacks: Sequence[Callback] = (), epoch_log: Any = True, label: str = "",
        clock: Any = None) -> History:
    """Train for ``num_epochs`` epochs: the chapters' ``train`` loop, once for all backends.
    ``num_epochs`` may be fractional (the speed-run record's 9.9): the last epoch stops after
    ``ceil(batches × num_epochs)`` batches in all (:func:`~d2lkaggle.train.schedules.epoch_steps`).

    Before batch ``b`` of epoch ``e`` it sets ``schedule(e + b / len(train_data))`` as the
    learning rate (see :mod:`d2lkaggle.train.schedules`; every rate is checked before training
    starts), trains on every batch of ``train_data`` (metrics accumulated from the per-batch
    loss sums), then evaluates on ``valid_data`` when given and passes the validation loss
    (the training loss without validation data) to ``schedule.observe`` if it has one.
    ``mixing`` (e.g. :class:`d2lkaggle.data.mixing.Mixup`) is applied to every training batch
    with the batch's own generator ``default_rng([loader seed, epoch, b, MIX_TAG])``; training
    accuracy is then counted against the argmax of the soft targets.

    The side jobs are callbacks (:mod:`d2lkaggle.train.callbacks`) built from the keywords:
    ``checkpoint_dir`` (``last.npz`` every epoch, ``best.npz`` on improvement; ``resume=True``
    continues from ``last.npz``), ``progress`` (a bar, drawn only on a terminal), ``log`` (one
    line per epoch, starting with ``label``, unless ``epoch_log=False``; ending with the whole
    run's ETA given ``clock``, a :class:`d2lkaggle.train.estimate.RunClock`), ``plot`` (a PNG
    path, or ``"live"`` for Jupyter), ``on_epoch(epoch, history)``; ``callbacks`` adds yours.
    A non-finite loss raises ``FloatingPointError`` naming the epoch and batch.
    """
    if num_epochs < 0:
        raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
    dist = getattr(step, "dist", None) or distributed.DistEnv()
    if not dist.is_main:  # data parallel: rank 0 writes checkpoints and curves, and prints
        plot, progress, log, epoch_log = None, False, None, False
    state = FitState(step, train_data, valid_data, num_epochs, schedule,
                     History(devices=devices), dist, devices=devices, log=log)
    cbs = default_callbacks(checkpoint_dir=checkpoint_dir, resume=resume, config=config,
                            progress=progress, plot=plot, log=log, on_epoch=on_epoch,
                            epoch_log=epoch_log, label=label, clock=clock)
    cbs += list(callbacks)
    try:
        for cb in cbs:
            cb.on_train_begin(state)
        # every rate of the run, before anything is trained (a plateau schedule: its current rate)
        check_schedule(schedule, num_epochs, len(train_data), state.start)
        if mixing is not None:
            num_classes = (num_classes or getattr(mixing, "num_classes", None)
                           or _num_classes(train_data))
        for epoch in range(state.start, state.epochs_to_run):
            state.epoch = epoch
            for d in (train_data, valid_data):
                if hasattr(d, "set_epoch"):
                    d.set_epoch(epoch)
            for cb in cbs:
                cb.on_epoch_begin(state)
            state.history.add(**_train_epoch(state, cbs, mixing, num_classes))
            _record_precision(state.history, getattr(step, "precision", ""))
            for cb in cbs:
                cb.on_epoch_end(state)
    finally:
        for cb in cbs:
            cb.on_train_end(state)
    distributed.step_barrier(step)  # rank 0's last checkpoint is on disk when fit returns
    return state.history


def _train_epoch(state: FitState, cbs: Sequence[Callback], mixing: Callable | None,
                 num_classes: int | None) -> dict[str, float]:
    """One epoch: every training batch at the schedule's rate, then the validation; returns
    the history row."""
    step, train_data, epoch, dist = state.step, state.train_data, state.epoch, state.dist
    mix_seed = int(getattr(train_data, "seed", 0))
    loss_sum, correct, n = 0.0, 0, 0
    nb = max(1, len(train_data))
    limit = state.total_steps - epoch * nb   # a fractional last epoch stops early
    lr_first = None
    t0 = time.perf_counter()
    for b, (x, y) in enumerate(train_data):
        if b >= limit:
            break
        lr = check_lr(state.schedule, epoch + b / nb)
        if lr != state.lr:  # setting the same rate again would be a no-op
            step.set_lr(lr)
            state.lr = lr
        lr_first = lr if lr_first is None else lr_first
        if mixing is not None:
            if not isinstance(x, np.ndarray):
                raise TypeError(f"MixUp/CutMix/label smoothing mix d2lkaggle's numpy batches; "
                                f"got a {type(x).__module__}.{type(x).__name__} from a "
                                f"framework's own loader: train on d2lkaggle's loaders to mix")
            x, y = mixing(x, y, batch_rng(mix_seed, epoch, b) if not dist.enabled else
                          np.random.default_rng([mix_seed, epoch, b, MIX_TAG, dist.rank]),
                          num_classes)
        ls, c, k = step.train_batch(x, y)
        if not math.isfinite(ls):
            raise FloatingPointError(
                f"loss is {ls} at epoch {epoch + 1}, batch {b + 1} (lr {lr:g}); "
                "lower the learning rate or check the inputs")
        loss_sum, correct, n = loss_sum + ls, correct + c, n + k
        for cb in cbs:
            cb.on_batch_end(state, loss_sum, correct, n)
    seconds = time.perf_counter() - t0
    loss_sum, correct, n = distributed.reduce_metrics(step, loss_sum, correct, n)
    if n == 0:
        raise ValueError("training data yielded no batch (is batch_size larger than the "
                         "training set with drop_last?)")
    valid_loss = valid_acc = math.nan
    if state.valid_data is not None:
        valid_loss, valid_acc = evaluate(step, state.valid_data)
    if hasattr(state.schedule, "observe"):
        state.schedule.observe(valid_loss if state.valid_data is not None else loss_sum / n)
    return dict(epoch=epoch + 1, lr=lr_first, lr_last=state.lr, train_loss=loss_sum / n,
                train_acc=correct / n, valid_loss=valid_loss, valid_acc=valid_acc,
                seconds=seconds, examples_per_sec=n / seconds if seconds > 0 else math.nan)


def _num_classes(data) -> int:
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ValueError("mixing needs num_classes: give fit(..., num_classes=C) or Mixup(num_classes=C)")
    return int(np.max(labels)) + 1


def loader_norm(data_iter) -> dict[str, tuple[float, ...]]:
    """The ``mean``/``std`` a core loader carries, for the backend step that normalises batches."""
    return {"mean": tuple(getattr(data_iter, "mean", (0.0, 0.0, 0.0))),
            "std": tuple(getattr(data_iter, "std", (1.0, 1.0, 1.0)))}


def _record_precision(history: History, precision: Any) -> None:
    """What the history's epochs computed in (summary.json's ``amp``): ``bf16``, ``float32``,
    or ``bf16+float32`` when a run resumed in another precision trained more epochs."""
    if precision and str(precision) not in history.precision.split("+"):
        history.precision = "+".join(p for p in (history.precision, str(precision)) if p)


def train_net(step_cls: Callable[..., Step], net: Any, train_iter, valid_iter, num_epochs: float,
              lr: float, wd: float, devices: Any = None, lr_period: int | None = None,
              lr_decay: float = 1.0, *, optimizer: Any = "sgd", schedule: Any = None,
              mixing: Any = None, momentum: float = 0.9, nesterov: bool = False,
              betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
              wd_exclude: str | None = None, amp: Any = "auto", dist: Any = None,
              bn_bias_lr: float = 1.0, average: Any = None, freeze: Any = None,
              **fit_kwargs: Any) -> History:
    """Build a backend's training step for ``net`` (with the core's optimizer) and train it.

    ``schedule`` (a core schedule) overrides the chapters' StepLR ``lr_period``/``lr_decay``;
    ``mixing`` is handed to :func:`fit` only when given. Every backend's ``train`` is this
    call with its own step class, so none has a loop. ``dist`` (a
    :class:`d2lkaggle.parallel.distributed.DistEnv`; default: the training loader's) makes the step
    data parallel (torch DDP, paddle.DataParallel, MXNet kvstore).

    The speed-run record's pieces: ``bn_bias_lr`` (the BatchNorm biases' lr factor,
    :mod:`d2lkaggle.train.optim`), ``average`` (``"lookahead"`` or a
    :class:`~d2lkaggle.train.averaging.Lookahead`: weight averaging over the run) and
    ``freeze`` (``{canonical parameter name: epochs it trains}``, then it stops).
    """
    from .schedules import step_lr
    dist = dist if dist is not None else getattr(train_iter, "dist", None)
    # (a step is only handed ``dist`` for a real multi-process run)
    dist_kw = {"dist": dist} if dist is not None and dist.enabled else {}
    opt_kw = {"bn_bias_lr": bn_bias_lr} if bn_bias_lr != 1.0 else {}
    step = step_cls(net, lr=lr, wd=wd, momentum=momentum, devices=devices, amp=amp,
                    optimizer=optimizer, nesterov=nesterov, betas=betas, eps=eps,
                    wd_exclude=wd_exclude, **opt_kw, **loader_norm(train_iter), **dist_kw)
    names = ", ".join(str(d) for d in getattr(step, "devices", []))
    if dist_kw:   # e.g. "cpu x 2 processes (data parallel)"
        names += f" x {dist.world_size} processes (data parallel)"
    if getattr(step, "precision", None):   # what ran: "cpu, bf16" (amp="auto" decides per CPU)
        names += f", {step.precision}"
    if mixing is not None:   # (a fit without mixing support is never handed the keyword)
        fit_kwargs["mixing"] = mixing
    from .averaging import AveragedStep, make_average
    avg = make_average(average) if isinstance(average, (str, type(None), bool)) else average
    if avg is not None:
        step = AveragedStep(step, avg, epoch_steps(num_epochs, len(train_iter))[1])
    if freeze:
        from .callbacks import FreezeAfter
        fit_kwargs["callbacks"] = [*fit_kwargs.get("callbacks", ()), FreezeAfter(freeze)]
    history = fit(step, train_iter, valid_iter, num_epochs,
                  schedule if schedule is not None else step_lr(lr, lr_period, lr_decay),
                  devices=names, **fit_kwargs)
    log, label = fit_kwargs.get("log", print), fit_kwargs.get("label", "")
    if log and len(history) and (dist is None or dist.is_main):
        log((f"{label}: " if label else "") + history.summary())   # the phase's one line
    return history


def inference_step(step_cls: Callable[..., Step], net: Any, data_iter, devices: Any = None,
                   amp: Any = False) -> Step:
    """A backend step for evaluating or predicting ``net`` on ``data_iter`` (no optimizer use)."""
    return step_cls(net, devices=devices, amp=amp, **loader_norm(data_iter))


def train_with_step_lr(step: Step, train_iter, valid_iter, num_epochs: int, lr: float,
                       lr_period: int | None = None, lr_decay: float = 1.0,
                       **fit_kwargs: Any) -> History:
    """The chapters' ``train(..., lr, lr_period, lr_decay)``: :func:`fit` with StepLR.

    Backends' ``train`` functions build their step and call this, so the schedule and the
    loop are never written per framework.
    """
    from .schedules import step_lr
    history = fit(step, train_iter, valid_iter, num_epochs, step_lr(lr, lr_period, lr_decay),
                  **fit_kwargs)
    log = fit_kwargs.get("log", print)
    if log and len(history):
        log(history.summary())
    return history
