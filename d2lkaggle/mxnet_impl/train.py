"""Training, evaluation and prediction in MXNet, driven by the core loop.

The optimizer is the core's (``sgd``, ``nesterov``, ``adam``, ``adamw`` in torch's form,
written in MXNet ops in :mod:`.optim`). Gluon's ``Trainer`` is not used: its optimizers
differ from torch's (lr inside the SGD velocity, 32-bit β in Adam, ...) and
``Trainer.step(batch_size)`` rescales gradients. Here the loss is the batch MEAN and no
rescaling happens anywhere (the one place: ``train_batch`` divides the summed loss by the
batch size before ``backward``), so ``lr``/``wd`` mean exactly what they mean in the torch
backend (checked by the parity tests), the optimizer state is torch's
(``optim/<name>/momentum``, ``exp_avg``, ... in checkpoints) and a resumed run continues exactly.
"""
from __future__ import annotations

from typing import Any, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, npx
from mxnet import np as mnp
from mxnet.contrib.amp.amp import bfloat16 as _BF16   # MXNet's bfloat16, as a numpy dtype
from mxnet.gluon import Block, HybridBlock, nn

from ..common import book as _book
from ..parallel.distributed import Collectives, DistEnv
from ..train import loop, lrfind
from ..train import optim as core_optim
from . import distributed as _distributed
from .data import as_input, labels_numpy, to_labels
from .device import SUPPORTS_BF16, try_all_gpus
from .models import StochasticDepth
from .optim import Optimizer
from .weights import canonical_parameters, get_state, set_state


def _rank_context(env: DistEnv) -> mx.Context:
    """This worker's device: GPU ``local_rank`` when the machine has it, else the CPU."""
    n = mx.context.num_gpus()
    if n == 0:
        return mx.cpu()
    if env.local_rank >= n:
        raise ValueError(f"worker {env.local_rank} has no GPU (this machine has {n}); start "
                         f"at most {n} workers per machine (--nproc_per_node {n})")
    return mx.gpu(env.local_rank)


def _blocks(block: Block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def bf16_capable(net: Block) -> bool:
    """Whether every operator of ``net`` has a oneDNN bfloat16 kernel in MXNet 1.9: the
    ResNets and the fine-tune net (``bf16 = True`` on their class), not with stochastic depth
    (``Dropout`` has no bf16 kernel: "Unknown type enum 12"); cnn_elu and EfficientNetV2 train
    in float32."""
    return bool(getattr(net, "bf16", False)) and not any(
        isinstance(b, StochasticDepth) and b.p > 0 for b in _blocks(net))


def amp_enabled(amp: Any, dtype: str = "float32", cpu: bool = True, capable: bool = True,
                native: bool = SUPPORTS_BF16) -> bool:
    """Whether a step computes in bfloat16 — torch's rule (``autocast_dtype``): on the CPU
    with ``amp="auto"`` where the CPU has native bf16, always with ``amp=True``; never in
    float64 (the parity reference), with ``amp=False`` or for a net that cannot
    (:func:`bf16_capable`). On a GPU this backend stays float32."""
    if dtype != "float32" or not amp or not capable or not cpu:
        return False
    return amp != "auto" or native


def _narrow_forward(block: HybridBlock):
    """``block``'s forward with its weight (and bias) cast to the input's type when that is
    narrower (bf16 input: bf16 weights; float32/float64 input: unchanged). The parameters stay
    float32 and ``amp_cast``'s backward hands them float32 gradients."""
    forward = type(block).hybrid_forward

    def hybrid_forward(self, F, x, weight, bias=None):
        args = [a.as_nd_ndarray() for a in (x, weight, bias) if a is not None]
        cast = F.amp_multicast(*args, num_outputs=len(args), cast_narrow=True)
        return forward(self, F, *(cast[i].as_np_ndarray() for i in range(len(args))))
    return hybrid_forward.__get__(block)


def _enable_bf16(net: Block) -> None:
    """Let ``net`` compute in the precision of its input (once per net): Conv2D and Dense cast
    their parameters to a bf16 input's type; BatchNorm keeps float32 parameters and running
    statistics (oneDNN's bf16 BatchNorm takes them as they are); the cached graphs are traced
    again on the next call."""
    if getattr(net, "_d2l_bf16", False):
        return
    for b in _blocks(net):
        if isinstance(b, (nn.Conv2D, nn.Dense)):
            b.hybrid_forward = _narrow_forward(b)
        if isinstance(b, HybridBlock):
            b._clear_cached_op()
    net._d2l_bf16 = True


def _to_bf16(x):
    return nd_cast(x, _BF16)


def nd_cast(x, dtype):
    """``x`` (a numpy-semantics array) as ``dtype`` through the legacy ``amp_cast`` (which,
    unlike ``astype``, knows bfloat16 and has a backward)."""
    return mx.nd.amp_cast(x.as_nd_ndarray(), dtype=dtype).as_np_ndarray()


def _log_softmax_loss(logits, y):
    # per-example cross-entropy from logits, numerically stable
    return -npx.pick(npx.log_softmax(logits, axis=-1), y, axis=-1)


def _soft_loss(logits, y):
    # per-example cross-entropy with soft targets: −Σ y·log_softmax(z)
    return -(y * npx.log_softmax(logits, axis=-1)).sum(axis=-1)


class MXNetStep(Collectives):
    """The core loop's step interface for a Gluon model (mean loss; the core's optimizer:
    ``sgd``, ``nesterov``, ``adam``, ``adamw`` in torch's form; int or soft targets).

    With ``dist`` (a multi-process :class:`~d2lkaggle.parallel.distributed.DistEnv` under a ps-lite
    job, :mod:`.distributed`) the step trains on this worker's device, starts from rank 0's
    weights and averages every gradient over the workers through the ``dist_sync`` kvstore
    before the optimizer step.
    """

    _collectives = _distributed   # all_reduce_sum / barrier across ranks (core Collectives)

    def __init__(self, net: Block, *, lr: float = 0.0, wd: float = 0.0, momentum: float = 0.9,
                 devices: Sequence[mx.Context] | None = None,
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
        if self.dist is not None:   # one worker per device
            _distributed.init(self.dist)
            devices = [_rank_context(self.dist)]
        self.devices = list(devices) if devices else try_all_gpus()
        self.net = net
        self.dtype = loop.check_dtype(dtype)
        if self.dtype != "float32":
            self.net.cast(self.dtype)   # before hybridize: the cached graph is typed
        if self.net.collect_params().list_ctx() != self.devices:
            self.net.collect_params().reset_ctx(self.devices)
        # bf16 on oneDNN where the CPU has it (torch's rule): the input is cast once, Conv2D and
        # Dense cast their float32 weights, BatchNorm statistics and the update stay float32
        self.amp = amp_enabled(amp, self.dtype, all(d.device_type == "cpu" for d in self.devices),
                               bf16_capable(self.net))
        if self.amp:
            _enable_bf16(self.net)
        if not getattr(self.net, "_active", False):
            # hybridizing again would throw away the cached graph (evaluate/predict build a
            # step per call), so a net that is already hybridized keeps its graph
            self.net.hybridize(static_alloc=True)
        self.mean, self.std = tuple(mean), tuple(std)
        self.params = {n: p for n, p in canonical_parameters(net).items() if p.grad_req != "null"}
        self.optimizer = Optimizer(self.params, self.spec, ctx=self.devices[0], dtype=self.dtype)
        self.sync = None
        if self.dist is not None:
            self.sync = _distributed.GradientSync(list(self.params), self.dist)
            everything = canonical_parameters(net)
            self.sync.broadcast(list(everything), [p.data(self.devices[0]).as_nd_ndarray()
                                                   for p in everything.values()])

    @property
    def precision(self) -> str:
        """What the step computes in: ``bf16`` (oneDNN), else its dtype."""
        return "bf16" if self.amp else self.dtype

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_lr(lr)

    def freeze(self, names: Sequence[str]) -> None:
        """Stop training the parameters ``names`` (canonical) from the next batch on."""
        self.optimizer.freeze(names)

    def _target(self, y: np.ndarray, d):
        # int labels, or float soft targets (N×C) in the step's dtype
        if y.ndim == 2:
            return mnp.array(y, ctx=d, dtype=self.dtype)
        return to_labels(y, d)

    def _shards(self, x, y: np.ndarray | None = None):
        # the batch split across the devices (like ``gluon.utils.split_and_load`` with
        # even_split=False), each part on its device: d2lkaggle's numpy batches normalised
        # there, Gluon's arrays as they are (common/batches.py)
        if len(self.devices) == 1:
            d = self.devices[0]
            return [(self._input(x, d), None if y is None else self._target(y, d))]
        parts = np.array_split(np.arange(len(x)), len(self.devices))
        return [(self._input(x[int(p[0]):int(p[-1]) + 1], d),
                 None if y is None else self._target(y[int(p[0]):int(p[-1]) + 1], d))
                for p, d in zip(parts, self.devices) if len(p)]

    def _input(self, x: np.ndarray, d):
        X = as_input(x, self.mean, self.std, d, dtype=self.dtype)
        return _to_bf16(X) if self.amp else X

    def _forward(self, X):
        # logits in float32 whatever the net computed in (bf16: cast back, with a backward)
        out = self.net(X)
        return nd_cast(out, np.float32) if self.amp else out

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        """One optimizer step on the batch-mean cross-entropy; ``y`` is int labels (N,) or
        float soft targets (N, C) (−Σ y·log_softmax(z), mean). Accuracy against argmax(y)."""
        if not self.params:
            raise ValueError("the model has no trainable parameter")
        soft, hard = core_optim.split_targets(labels_numpy(y), len(x))
        n = len(hard)
        shards = self._shards(x, hard if soft is None else soft)
        lossf = _log_softmax_loss if soft is None else _soft_loss
        with autograd.record():
            outs = [self._forward(X) for X, _ in shards]
            # the ONE place the batch size enters: each shard contributes (sum of its losses)/n,
            # so the gradients add up to those of the batch MEAN; nothing rescales them later
            losses = [lossf(o, Y).sum() / n for o, (_, Y) in zip(outs, shards)]
        for loss in losses:
            loss.backward()
        if self.sync is not None:   # the kvstore's mean over the workers (one device each)
            self.sync.average([p.grad(self.devices[0]).as_nd_ndarray()
                               for p in self.params.values()])
        self.optimizer.step()
        loss_sum = sum(float(loss) for loss in losses) * n
        pred = np.concatenate([o.argmax(axis=1).asnumpy() for o in outs])   # shards in order
        correct = int((pred == hard).sum())
        return loss_sum, correct, n

    def _logits(self, shards):
        return [self._forward(X) for X, _ in shards]

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        loss_sum, correct = 0.0, 0
        y = labels_numpy(y)
        shards = self._shards(x, y)
        for o, (_, Y) in zip(self._logits(shards), shards):
            loss_sum += float(_log_softmax_loss(o, Y).sum())
            correct += int((o.argmax(axis=1) == Y).sum())
        return loss_sum, correct, len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        # softmax over the classes (axis 1), never over the batch
        return np.concatenate([npx.softmax(o, axis=1).asnumpy()
                               for o in self._logits(self._shards(x))])

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """The net's outputs before the softmax (what a logit-averaging TTA combines)."""
        return np.concatenate([o.asnumpy() for o in self._logits(self._shards(x))])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"model/" + k: v for k, v in get_state(self.net).items()}
        state.update(self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_state(self.net, {k[6:]: v for k, v in state.items() if k.startswith("model/")},
                  source="checkpoint")
        self.optimizer.load_state_dict(state)


def train(net: Block, train_iter, valid_iter, num_epochs: int, lr: float, wd: float,
          devices: Sequence[mx.Context] | None = None, lr_period: int | None = None,
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
    return loop.train_net(MXNetStep, net, train_iter, valid_iter, num_epochs, lr, wd, devices,
                          lr_period, lr_decay, optimizer=optimizer, schedule=schedule,
                          mixing=mixing, momentum=momentum, nesterov=nesterov, betas=betas,
                          eps=eps, wd_exclude=wd_exclude, amp=amp, bn_bias_lr=bn_bias_lr,
                          average=average, freeze=freeze,
                          checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          plot=plot, log=log, **fit_kwargs)


def evaluate_loss(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
                  amp: Any = False) -> float:
    """Mean cross-entropy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, Block)  # also the Dog chapter's (data_iter, net)
    return loop.evaluate(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter)[0]


def evaluate_accuracy(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
                      amp: Any = False) -> float:
    """Accuracy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, Block)  # the book's (data_iter, net) order too
    return loop.evaluate(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter)[1]


def predict(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
            amp: Any = False, tta: Any = None) -> np.ndarray:
    """Class probabilities (softmax over classes) for every example of ``data_iter``;
    ``tta`` ("flip", "flip-crop" or N views) averages augmented views in the core."""
    net, data_iter = _book.net_first(net, data_iter, Block)  # the book's (data_iter, net) order too
    return loop.predict(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter,
                        tta=tta)


def lr_find(net: Block, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, *, wd: float = 0.0, momentum: float = 0.9,
            devices: Sequence[mx.Context] | None = None, amp: Any = "auto", plot: str | None = None,
            progress: bool = True, log: Any = None) -> lrfind.LRFinderResult:
    """The lr finder (fastai's range test) on ``net``; weights are restored afterwards."""
    return lrfind.lr_find_net(MXNetStep, net, train_iter, start_lr, end_lr, num_iter, wd=wd,
                              momentum=momentum, devices=devices, amp=amp, plot=plot,
                              progress=progress, log=log)


def forward(net: Block, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: inference mode, CPU."""
    if net.collect_params().list_ctx() != [mx.cpu()]:
        net.collect_params().reset_ctx(mx.cpu())
    out = net(mnp.array(np.ascontiguousarray(x, dtype=np.float32), ctx=mx.cpu()))
    return out.asnumpy().astype(np.float32)
