"""Training, evaluation and prediction in PaddlePaddle, driven by the core loop.

The optimizer is the core's (``sgd``, ``nesterov``, ``adam``, ``adamw``), applied with
Paddle's own ``Momentum``/``Adam``/``AdamW``, whose dense kernels compute torch's forms
(:mod:`.optim`); the loss is the batch mean, so ``lr``/``wd`` mean what they mean in the
torch backend.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F

from ..common import book as _book
from ..parallel.distributed import Collectives, DistEnv
from ..train import loop, lrfind
from ..train import optim as core_optim
from . import distributed as _distributed
from .data import as_input, labels_numpy, to_labels
from .device import try_all_gpus
from .optim import Optimizer
from .weights import canonical_name_of, get_state, set_state


def _rank_place(env: DistEnv):
    """This rank's device: GPU ``local_rank`` when the machine has it, else the CPU."""
    n = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    if n == 0:
        return paddle.CPUPlace()
    if env.local_rank >= n:
        raise ValueError(f"local rank {env.local_rank} has no GPU (this machine has {n}); start "
                         f"at most {n} processes per node (--nproc_per_node {n})")
    return paddle.CUDAPlace(env.local_rank)


def _cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Per-example cross-entropy ``logsumexp(z) − z_y``.

    Paddle's ``F.cross_entropy`` (and ``log_softmax``) clamp log-probabilities at −64 on the
    CPU, so a loss above 64 — a diverging run, a badly initialised head — was reported as 64
    (its gradient was right); this form reports the true value, with the same gradient.
    """
    picked = paddle.take_along_axis(logits, labels.unsqueeze(1), axis=1).squeeze(1)
    return paddle.logsumexp(logits, axis=1) - picked


def _soft_cross_entropy(logits: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Per-example ``−Σ y·log_softmax(z) = logsumexp(z)·Σy − Σ y·z`` for soft targets
    (the logsumexp form: Paddle's ``log_softmax`` clamps at −64 on the CPU)."""
    return paddle.logsumexp(logits, axis=1) * targets.sum(axis=1) - (targets * logits).sum(axis=1)


class PaddleStep(Collectives):
    """The core loop's step interface for a Paddle model (mean loss; the core's optimizer:
    ``sgd``, ``nesterov``, ``adam``, ``adamw``; int or soft targets).

    Several GPUs need one process each (``python -m paddle.distributed.launch``, docs/scale.md):
    with ``dist`` (a multi-process :class:`~d2lkaggle.parallel.distributed.DistEnv`) the net trains
    wrapped in ``paddle.DataParallel`` (gradients averaged over the ranks by Paddle); without
    it this step trains on the first device of ``devices``.
    """

    _collectives = _distributed   # all_reduce_sum / barrier across ranks (core Collectives)

    def __init__(self, net: nn.Layer, *, lr: float = 0.0, wd: float = 0.0, momentum: float = 0.9,
                 devices: Sequence | None = None,
                 mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1),
                 amp: Any = "auto", dtype: str = "float32",
                 optimizer: "str | core_optim.OptimizerSpec" = "sgd", nesterov: bool = False,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                 wd_exclude: str | None = None, dist: DistEnv | None = None,
                 bn_bias_lr: float = 1.0):
        self.spec = core_optim.make_spec(optimizer, lr=lr, wd=wd, momentum=momentum,
                                         nesterov=nesterov, betas=betas, eps=eps,
                                         wd_exclude=wd_exclude, bn_bias_lr=bn_bias_lr)
        self.dist = dist if dist is not None and dist.enabled else None
        if self.dist is not None:   # one process per device: this rank's GPU, or the CPU
            _distributed.init(self.dist)
            devices = [_rank_place(self.dist)]
        self.devices = list(devices) if devices else try_all_gpus()
        self.device = self.devices[0]
        # the book's paddle.DataParallel(net) in one process: the layer it wraps
        self.net = net._layers if isinstance(net, paddle.DataParallel) else net
        net = self.net
        self.dtype = loop.check_dtype(dtype)
        if self.dtype != "float32":
            self.net.to(dtype=self.dtype)
        # DataParallel broadcasts rank 0's weights now and averages gradients in backward()
        self.model = paddle.DataParallel(self.net) if self.dist is not None else self.net
        self.mean, self.std = tuple(mean), tuple(std)
        names = canonical_name_of(net)
        untrained = set(getattr(net, "untrained", ()))   # (see models.airbench94)
        params = {names[id(p)][0]: p for p in net.parameters()
                  if not p.stop_gradient and names[id(p)][0] not in untrained}
        transposed = [n for n, p in params.items() if names[id(p)][1]]
        self.optimizer = Optimizer(params, self.spec, transposed) if params else None

    @property
    def precision(self) -> str:
        """What the step computes in: its dtype (Paddle has no CPU bf16 path, device.py)."""
        return self.dtype

    def set_lr(self, lr: float) -> None:
        if self.optimizer is not None:
            self.optimizer.set_lr(lr)

    def freeze(self, names: Sequence[str]) -> None:
        """Stop training the parameters ``names`` (canonical) from the next batch on."""
        if self.optimizer is not None:
            self.optimizer.freeze(names)

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        """One optimizer step on the batch-mean cross-entropy; ``y`` is int labels (N,) or
        float soft targets (N, C) (−Σ y·log_softmax(z), mean). Accuracy against argmax(y)."""
        if self.optimizer is None:
            raise ValueError("the model has no trainable parameter")
        soft, hard = core_optim.split_targets(labels_numpy(y), len(x))
        self.net.train()
        X, Y = self._inputs(x), to_labels(hard, self.device)
        out = self.model(X)
        if soft is None:
            loss = _cross_entropy(out, Y).mean()  # batch mean
        else:
            T = paddle.to_tensor(soft.astype(self.dtype), place=X.place)
            loss = _soft_cross_entropy(out, T).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        n = len(hard)
        correct = int((out.argmax(axis=1) == Y).astype("int64").sum())
        return float(loss) * n, correct, n

    def _inputs(self, x) -> paddle.Tensor:
        # d2lkaggle's numpy batches are normalised here; paddle.vision's tensors are used as
        # they are (common/batches.py)
        return as_input(x, self.mean, self.std, self.device, dtype=self.dtype)

    def _logits(self, x: np.ndarray) -> paddle.Tensor:
        self.net.eval()
        with paddle.no_grad():
            return self.net(self._inputs(x))

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        out, Y = self._logits(x), to_labels(labels_numpy(y), self.device)
        loss = _cross_entropy(out, Y).sum()
        return float(loss), int((out.argmax(axis=1) == Y).astype("int64").sum()), len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        return F.softmax(self._logits(x), axis=1).numpy()  # over the classes, not the batch

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """The net's outputs before the softmax (what a logit-averaging TTA combines)."""
        return self._logits(x).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"model/" + k: v for k, v in get_state(self.net).items()}
        if self.optimizer is not None:
            state.update(self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_state(self.net, {k[6:]: v for k, v in state.items() if k.startswith("model/")},
                  source="checkpoint")
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state)


def train(net: nn.Layer, train_iter, valid_iter, num_epochs: int, lr: float, wd: float,
          devices: Sequence | None = None, lr_period: int | None = None,
          lr_decay: float = 1.0, *, optimizer: "str | core_optim.OptimizerSpec" = "sgd",
          schedule: Any = None, mixing: Any = None, momentum: float = 0.9,
          nesterov: bool = False, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
          wd_exclude: str | None = None, amp: Any = "auto", checkpoint_dir: str | None = None,
          resume: bool = False, progress: bool = True, plot: str | None = None,
          log: Any = print, bn_bias_lr: float = 1.0, average: Any = None, freeze: Any = None,
          **fit_kwargs: Any) -> loop.History:
    """The chapters' ``train`` on the core loop; returns the history.

    The book's positional arguments keep their meaning (SGD + momentum, StepLR every
    ``lr_period`` epochs by ``lr_decay``); ``optimizer`` is ``sgd``, ``nesterov``, ``adam`` or
    ``adamw`` (torch's definitions), ``schedule`` a core schedule that overrides the StepLR,
    ``mixing`` a core MixUp/CutMix callable, ``wd_exclude="bn_bias"`` timm's no-decay set;
    the speed-run record's ``bn_bias_lr``, ``average`` and ``freeze`` as in
    :func:`d2lkaggle.train.loop.train_net`.
    """
    return loop.train_net(PaddleStep, net, train_iter, valid_iter, num_epochs, lr, wd, devices,
                          lr_period, lr_decay, optimizer=optimizer, schedule=schedule,
                          mixing=mixing, momentum=momentum, nesterov=nesterov, betas=betas,
                          eps=eps, wd_exclude=wd_exclude, amp=amp, bn_bias_lr=bn_bias_lr,
                          average=average, freeze=freeze,
                          checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          plot=plot, log=log, **fit_kwargs)


def evaluate_loss(net: nn.Layer, data_iter, devices: Sequence | None = None,
                  amp: Any = False) -> float:
    """Mean cross-entropy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, nn.Layer)  # also the Dog chapter's (data_iter, net)
    return loop.evaluate(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter)[0]


def evaluate_accuracy(net: nn.Layer, data_iter, devices: Sequence | None = None,
                      amp: Any = False) -> float:
    """Accuracy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, nn.Layer)  # the book's (data_iter, net) order too
    return loop.evaluate(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter)[1]


def predict(net: nn.Layer, data_iter, devices: Sequence | None = None,
            amp: Any = False, tta: Any = None) -> np.ndarray:
    """Class probabilities (softmax over classes) for every example of ``data_iter``;
    ``tta`` ("flip", "flip-crop" or N views) averages augmented views in the core."""
    net, data_iter = _book.net_first(net, data_iter, nn.Layer)  # the book's (data_iter, net) order too
    return loop.predict(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter,
                        tta=tta)


def lr_find(net: nn.Layer, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, *, wd: float = 0.0, momentum: float = 0.9,
            devices: Sequence | None = None, amp: Any = "auto", plot: str | None = None,
            progress: bool = True, log: Any = None) -> lrfind.LRFinderResult:
    """The lr finder (fastai's range test) on ``net``; weights are restored afterwards."""
    return lrfind.lr_find_net(PaddleStep, net, train_iter, start_lr, end_lr, num_iter, wd=wd,
                              momentum=momentum, devices=devices, amp=amp, plot=plot,
                              progress=progress, log=log)


def forward(net: nn.Layer, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: eval mode, no autocast."""
    net.eval()
    with paddle.no_grad():
        out = net(paddle.to_tensor(np.ascontiguousarray(x, dtype=np.float32)))
    return out.numpy().astype(np.float32)
