"""The one training loop, written once for every framework.

A backend supplies a small *step* object (see :class:`Step`); :func:`fit` owns everything
else the chapters' ``train`` functions do: epochs, the per-epoch learning rate, metric
accumulation, progress, the history and curves, checkpoints and resuming.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from ..utils.files import load_npz, save_npz
from ..data.mixing import MIX_TAG, batch_rng
from .schedules import check_lr, check_schedule

#: ``fit(plot=PATH)`` redraws the curves at most this often (seconds), and after the last epoch
PLOT_EVERY_S = 10.0

HISTORY_COLUMNS = ("epoch", "lr", "lr_last", "train_loss", "train_acc", "valid_loss", "valid_acc",
                   "seconds", "examples_per_sec")


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


@dataclass
class History:
    """Per-epoch records of a run (what the chapters' Animator plots)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    devices: str = ""

    def add(self, **row: float) -> None:
        self.rows.append({k: row.get(k, math.nan) for k in HISTORY_COLUMNS})

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[float]:
        return [r[name] for r in self.rows]

    @property
    def last(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {k: math.nan for k in HISTORY_COLUMNS}

    @property
    def best_valid_acc(self) -> float:
        accs = [a for a in self.column("valid_acc") if not math.isnan(a)]
        return max(accs) if accs else math.nan

    @property
    def examples_per_sec(self) -> float:
        """Training throughput over all epochs (examples / seconds spent in training)."""
        n = sum(r["examples_per_sec"] * r["seconds"] for r in self.rows)
        s = sum(r["seconds"] for r in self.rows)
        return n / s if s > 0 else math.nan

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "devices": self.devices})

    @classmethod
    def from_json(cls, text: str) -> "History":
        d = json.loads(text)
        # columns added later (lr_last) read as NaN from older checkpoints
        return cls(rows=[{k: (math.nan if r.get(k) is None else r[k]) for k in HISTORY_COLUMNS}
                         for r in d["rows"]], devices=d.get("devices", ""))

    def to_csv(self, path: str, extra: dict[str, Any] | None = None) -> str:
        """Write the history as CSV (atomically)."""
        from ..utils.files import atomic_write_text
        cols = list(extra or {}) + list(HISTORY_COLUMNS)
        lines = [",".join(cols)]
        for r in self.rows:
            vals = list((extra or {}).values()) + [r[k] for k in HISTORY_COLUMNS]
            lines.append(",".join("" if isinstance(v, float) and math.isnan(v) else str(v)
                                  for v in vals))
        return atomic_write_text(path, "\n".join(lines) + "\n")

    def summary(self) -> str:
        r = self.last
        text = f"train loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}"
        if not math.isnan(r["valid_acc"]):
            text += f", valid loss {r['valid_loss']:.3f}, valid acc {r['valid_acc']:.3f}"
        return text + f"\n{self.examples_per_sec:.1f} examples/sec on {self.devices}"


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


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    if hasattr(enabled, "epoch_bar"):  # a progress.RunProgress: one overall line across phases
        return enabled.epoch_bar(total, desc)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(step: Step, train_data, valid_data, num_epochs: int,
        schedule: Callable[[float], float], *, mixing: Callable | None = None,
        num_classes: int | None = None, checkpoint_dir: str | None = None,
        resume: bool = False, progress: bool = True, plot: str | None = None,
        devices: str = "", on_epoch: Callable[[int, History], None] | None = None,
        log: Callable[[str], None] | None = print, config: dict | None = None) -> History:
    """Train for ``num_epochs`` epochs: the chapters' ``train`` loop, once for all backends.

    Before batch ``b`` of epoch ``e`` it sets ``schedule(e + b / len(train_data))`` as the
    learning rate (see :mod:`d2lkaggle.train.schedules`; every rate is checked before training
    starts), trains on every batch of ``train_data`` (metrics accumulated from the per-batch
    loss sums), then evaluates on ``valid_data`` when given and passes the validation loss
    (the training loss without validation data) to ``schedule.observe`` if it has one.
    ``mixing`` (e.g. :class:`d2lkaggle.data.mixing.Mixup`) is applied to every training batch with
    the batch's own generator ``default_rng([loader seed, epoch, b, MIX_TAG])``; training
    accuracy is then counted against the argmax of the soft targets.
    With ``checkpoint_dir`` it writes ``last.npz`` after every
    epoch and ``best.npz`` when valid accuracy improves (both atomically); ``resume=True``
    continues from ``last.npz`` and ends with the weights an uninterrupted run would have.
    ``plot`` is a PNG path for the curves or ``"live"`` for Jupyter. The PNG is redrawn after
    the last epoch and after any epoch that ends at least :data:`PLOT_EVERY_S` seconds (and 20
    drawing times) after the previous drawing: every epoch of a real run, while a run of
    one-second epochs does not spend half its time in matplotlib.
    A non-finite loss raises ``FloatingPointError`` naming the epoch and batch.
    """
    if num_epochs < 0:
        raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
    history, start, best = History(devices=devices), 0, -math.inf
    last_path = best_path = None
    from ..parallel import distributed
    dist = getattr(step, "dist", None) or distributed.DistEnv()
    if not dist.is_main:  # data parallel: rank 0 writes checkpoints and curves, and prints
        plot, progress, log = None, False, None
    if checkpoint_dir:
        if dist.is_main:
            os.makedirs(checkpoint_dir, exist_ok=True)
        last_path = os.path.join(checkpoint_dir, "last.npz")
        best_path = os.path.join(checkpoint_dir, "best.npz")
        if resume and os.path.exists(last_path):
            state, meta = load_npz(last_path)
            step.load_state_dict(state)
            history = History.from_json(meta["history"])
            history.devices = devices
            start, best = int(meta["epoch"]) + 1, float(meta["best"])
            if meta.get("schedule") is not None and hasattr(schedule, "load_state_dict"):
                schedule.load_state_dict(meta["schedule"])  # plateau counters
            if log:
                log(f"resumed from {last_path} after epoch {start}")
    live = None
    if plot == "live":
        from .plotting import LivePlot
        live = LivePlot(has_valid=valid_data is not None)
    from .diagnostics import LearningMonitor
    monitor = LearningMonitor(train_data, num_epochs, log)

    # every rate of the run, before anything is trained (a plateau schedule: its current rate)
    check_schedule(schedule, num_epochs, len(train_data), start)
    if mixing is not None:
        num_classes = num_classes or getattr(mixing, "num_classes", None) or _num_classes(train_data)
    mix_seed = int(getattr(train_data, "seed", 0))
    lr = None
    drawn_at, draw_cost = time.perf_counter(), 0.0
    for epoch in range(start, num_epochs):
        for d in (train_data, valid_data):
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)
        bar = _progress(len(train_data), f"epoch {epoch + 1}/{num_epochs}", progress)
        loss_sum, correct, n, seconds = 0.0, 0, 0, 0.0
        t0 = time.perf_counter()
        nb = max(1, len(train_data))
        lr_first = None
        for b, (x, y) in enumerate(train_data):
            new_lr = check_lr(schedule, epoch + b / nb)
            if new_lr != lr:  # setting the same rate again would be a no-op
                step.set_lr(new_lr)
                lr = new_lr
            lr_first = lr if lr_first is None else lr_first
            if mixing is not None:
                x, y = mixing(x, y, batch_rng(mix_seed, epoch, b) if not dist.enabled else
                              np.random.default_rng([mix_seed, epoch, b, MIX_TAG, dist.rank]),
                              num_classes)
            ls, c, k = step.train_batch(x, y)
            if not math.isfinite(ls):
                if bar is not None:
                    bar.close()
                raise FloatingPointError(
                    f"loss is {ls} at epoch {epoch + 1}, batch {b + 1} (lr {lr:g}); "
                    "lower the learning rate or check the inputs")
            loss_sum, correct, n = loss_sum + ls, correct + c, n + k
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}")
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        loss_sum, correct, n = distributed.reduce_metrics(step, loss_sum, correct, n)
        if n == 0:
            raise ValueError("training data yielded no batch (is batch_size larger than the "
                             "training set with drop_last?)")
        valid_loss = valid_acc = math.nan
        if valid_data is not None:
            valid_loss, valid_acc = evaluate(step, valid_data)
        if hasattr(schedule, "observe"):
            schedule.observe(valid_loss if valid_data is not None else loss_sum / n)
        history.add(epoch=epoch + 1, lr=lr_first, lr_last=lr, train_loss=loss_sum / n, train_acc=correct / n,
                    valid_loss=valid_loss, valid_acc=valid_acc, seconds=seconds,
                    examples_per_sec=n / seconds if seconds > 0 else math.nan)
        if log:
            r = history.last
            msg = (f"epoch {epoch + 1}/{num_epochs}  lr {lr_first:.3g}  train loss {r['train_loss']:.4f}"
                   f"  train acc {r['train_acc']:.3f}")
            if valid_data is not None:
                msg += f"  valid loss {valid_loss:.4f}  valid acc {valid_acc:.3f}"
            log(msg + f"  ({r['examples_per_sec']:.0f} ex/s)")
        monitor.after_epoch(history)
        if checkpoint_dir and dist.is_main:
            improved = (valid_data is not None and math.isfinite(valid_loss)
                        and valid_acc > best)  # a NaN loss never becomes "best"
            best = max(best, valid_acc) if improved else best
            meta = {"epoch": epoch, "best": best, "history": history.to_json()}
            if config is not None:  # what shaped this training: resume compares it
                meta["config"] = config
            if hasattr(schedule, "state_dict"):
                meta["schedule"] = schedule.state_dict()
            state = step.state_dict()
            save_npz(last_path, state, meta)
            if improved:
                save_npz(best_path, state, meta)
        now = time.perf_counter()
        if (plot and plot != "live" and (epoch == num_epochs - 1
                                         or now - drawn_at >= max(PLOT_EVERY_S, 20 * draw_cost))):
            from .plotting import plot_history
            plot_history(history, plot)
            drawn_at, draw_cost = time.perf_counter(), time.perf_counter() - now
        if live is not None:
            live.update(history)
        if on_epoch is not None:
            on_epoch(epoch, history)
    if start >= num_epochs and checkpoint_dir and log:
        log(f"{last_path} already holds all {num_epochs} epochs; nothing to train")
    distributed.step_barrier(step)  # rank 0's last checkpoint is on disk when fit returns
    return history


def _num_classes(data) -> int:
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ValueError("mixing needs num_classes: give fit(..., num_classes=C) or Mixup(num_classes=C)")
    return int(np.max(labels)) + 1


def loader_norm(data_iter) -> dict[str, tuple[float, ...]]:
    """The ``mean``/``std`` a core loader carries, for the backend step that normalises batches."""
    return {"mean": tuple(getattr(data_iter, "mean", (0.0, 0.0, 0.0))),
            "std": tuple(getattr(data_iter, "std", (1.0, 1.0, 1.0)))}


def train_net(step_cls: Callable[..., Step], net: Any, train_iter, valid_iter, num_epochs: int,
              lr: float, wd: float, devices: Any = None, lr_period: int | None = None,
              lr_decay: float = 1.0, *, optimizer: Any = "sgd", schedule: Any = None,
              mixing: Any = None, momentum: float = 0.9, nesterov: bool = False,
              betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
              wd_exclude: str | None = None, amp: Any = "auto", dist: Any = None,
              **fit_kwargs: Any) -> History:
    """Build a backend's training step for ``net`` (with the core's optimizer) and train it.

    ``schedule`` (a core schedule) overrides the chapters' StepLR ``lr_period``/``lr_decay``;
    ``mixing`` is handed to :func:`fit` only when given. Every backend's ``train`` is this
    call with its own step class, so none has a loop. ``dist`` (a
    :class:`d2lkaggle.parallel.distributed.DistEnv`; default: the training loader's) makes the step
    data parallel (torch DDP, paddle.DataParallel, MXNet kvstore).
    """
    from .schedules import step_lr
    dist = dist if dist is not None else getattr(train_iter, "dist", None)
    # (a step is only handed ``dist`` for a real multi-process run)
    dist_kw = {"dist": dist} if dist is not None and dist.enabled else {}
    step = step_cls(net, lr=lr, wd=wd, momentum=momentum, devices=devices, amp=amp,
                    optimizer=optimizer, nesterov=nesterov, betas=betas, eps=eps,
                    wd_exclude=wd_exclude, **loader_norm(train_iter), **dist_kw)
    names = ", ".join(str(d) for d in getattr(step, "devices", []))
    if dist_kw:   # e.g. "cpu x 2 processes (data parallel)"
        names += f" x {dist.world_size} processes (data parallel)"
    if mixing is not None:   # (a fit without mixing support is never handed the keyword)
        fit_kwargs["mixing"] = mixing
    history = fit(step, train_iter, valid_iter, num_epochs,
                  schedule if schedule is not None else step_lr(lr, lr_period, lr_decay),
                  devices=names, **fit_kwargs)
    log = fit_kwargs.get("log", print)
    if log and len(history) and (dist is None or dist.is_main):
        log(history.summary())
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
