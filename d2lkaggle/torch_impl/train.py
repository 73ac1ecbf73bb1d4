"""Training, evaluation and prediction in PyTorch, driven by the core loop."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from ..common import book as _book
from ..parallel.distributed import Collectives, DistEnv
from ..train import loop, lrfind
from ..train import optim as core_optim
from . import distributed as _distributed
from .data import as_input, copy_settings, labels_numpy, to_labels  # noqa: F401  (copy_settings: the GPU path)
from .device import SUPPORTS_BF16, try_all_gpus
from .optim import Optimizer
from .weights import _module, get_state, set_state


def _cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def autocast_dtype(device_type: str, amp: Any = "auto", cpu_bf16: bool = SUPPORTS_BF16,
                   cuda_bf16: bool = False, float_dtype: str = "float32") -> torch.dtype | None:
    """The autocast dtype a step trains in (``None``: no autocast, plain float32/float64).

    CUDA: bf16 where the GPU has it (compute capability >= 8.0: Ampere, Hopper), else fp16
    (with a gradient scaler, see :func:`needs_grad_scaler`). CPU: bf16 only where the CPU
    has native bf16 (AVX-512 BF16 / AMX; measured ~2x float32 in benchmarks/train_speed.py)
    with ``amp="auto"``; ``amp=True`` forces bf16 there. float64 (the parity reference) and
    ``amp=False`` never autocast.
    """
    if float_dtype != "float32" or not amp:
        return None
    if device_type == "cuda":
        return torch.bfloat16 if cuda_bf16 else torch.float16
    if device_type == "cpu":
        return torch.bfloat16 if (amp != "auto" or cpu_bf16) else None
    return None


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16's narrow range underflows small gradients: scale the loss (bf16 needs none)."""
    return dtype == torch.float16


def parallel_mode(num_devices: int, world_size: int = 1) -> str:
    """How a step spreads over devices: ``"ddp"`` under a launcher (one process per device,
    torch's ``DistributedDataParallel``), ``"single"`` for one device, and ``"first"`` for
    several devices handed to one process — it trains on the first and says how to use all
    of them. Never ``nn.DataParallel``, which torch advises against (one process, GIL-bound,
    every batch scattered and gathered through device 0)."""
    if world_size > 1:
        return "ddp"
    return "first" if num_devices > 1 else "single"


def _warn_one_device(devices: Sequence[Any]) -> None:
    import warnings
    warnings.warn(f"{len(devices)} devices given to one process: training on {devices[0]} only. "
                  f"For all of them run one process per device: torchrun --nproc_per_node "
                  f"{len(devices)} -m d2lkaggle.cli run ... (DistributedDataParallel; docs/scale.md)",
                  stacklevel=3)


class TorchStep(Collectives):
    """The core loop's step interface for a PyTorch model (mean loss; the core's optimizer:
    ``sgd``, ``nesterov``, ``adam``, ``adamw`` with torch.optim; int or soft targets)."""

    _collectives = _distributed   # all_reduce_sum / barrier across ranks (core Collectives)

    def __init__(self, net: nn.Module, *, lr: float = 0.0, wd: float = 0.0, momentum: float = 0.9,
                 devices: Sequence[torch.device] | None = None,
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
            self.devices = [_distributed.rank_device(self.dist)]
        else:
            self.devices = list(devices) if devices else try_all_gpus()
        self.device = torch.device(self.devices[0])
        mode = parallel_mode(len(self.devices), self.dist.world_size if self.dist else 1)
        if mode == "first":
            _warn_one_device(self.devices)
            self.devices = self.devices[:1]
        self.dtype = loop.check_dtype(dtype)
        # float64 is the parity reference: no bf16 there
        self.amp_dtype = autocast_dtype(self.device.type, amp, SUPPORTS_BF16, _cuda_bf16(),
                                        self.dtype)
        self.amp = self.amp_dtype is not None
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if needs_grad_scaler(self.amp_dtype) else None)
        # channels_last only together with bf16 (where it was measured faster): in float32 on
        # CPU, torch 2.14's channels_last backward differs from float64 by up to ~3 % in some
        # conv gradients of the book's ResNet-18, while contiguous tensors agree to ~1e-6
        # (found by the parity tests); exact float32 is what parity and resuming rely on.
        self.channels_last = self.amp and self.device.type == "cpu"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net = _module(net).to(self.device, dtype=getattr(torch, self.dtype), memory_format=fmt)
        # DDP broadcasts rank 0's weights now and averages gradients in backward()
        self.model = (DistributedDataParallel(
            self.net, device_ids=[self.device] if self.device.type == "cuda" else None)
            if mode == "ddp" else self.net)
        self.eval_model = self.net   # evaluation runs the bare net (no gradient sync)
        self.mean, self.std = tuple(mean), tuple(std)
        params = {n: p for n, p in self.net.named_parameters() if p.requires_grad}
        self.optimizer = Optimizer(params, self.spec) if params else None

    @property
    def precision(self) -> str:
        """What the step computes in: ``bf16``/``fp16`` (autocast), else its dtype."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, self.dtype)

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        # d2lkaggle's numpy batches are normalised here; torchvision's tensors are used as
        # they are (common/batches.py)
        return as_input(x, self.mean, self.std, self.device, self.channels_last, self.dtype)

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
        self.model.train()
        X, Y = self._inputs(x), to_labels(hard, self.device)
        with self._autocast():
            out = self.model(X)
        # batch mean: lr/wd mean the same in every backend (bf16 logits are lifted to float32)
        logits = out if self.dtype == "float64" else out.float()
        target = Y if soft is None else torch.from_numpy(soft).to(self.device, dtype=logits.dtype)
        loss = F.cross_entropy(logits, target)   # probabilities: torch's soft-target form
        self.optimizer.zero_grad()
        if self.scaler is not None:   # fp16 on CUDA: scaled loss, unscaled step
            self.scaler.scale(loss).backward()
            self.optimizer.drop_frozen_grads()
            self.scaler.step(self.optimizer.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        n = len(hard)
        return float(loss.item()) * n, int((out.argmax(1) == Y).sum().item()), n

    @torch.no_grad()
    def _logits(self, x: np.ndarray) -> torch.Tensor:
        # the bare net: evaluation needs no gradient sync, and ranks may see unequal batches
        self.eval_model.eval()
        with self._autocast():
            return self.eval_model(self._inputs(x)).float()

    def _collective_kwargs(self) -> dict[str, Any]:
        return {"device": self.device}   # NCCL reduces on the rank's GPU

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        out, Y = self._logits(x), to_labels(labels_numpy(y), self.device)
        loss = F.cross_entropy(out, Y, reduction="sum")
        return float(loss.item()), int((out.argmax(1) == Y).sum().item()), len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        return F.softmax(self._logits(x), dim=1).cpu().numpy()

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """The net's outputs before the softmax (what a logit-averaging TTA combines)."""
        return self._logits(x).cpu().numpy()

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


def train(net: nn.Module, train_iter, valid_iter, num_epochs: int, lr: float, wd: float,
          devices: Sequence[torch.device] | None = None, lr_period: int | None = None,
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
    return loop.train_net(TorchStep, net, train_iter, valid_iter, num_epochs, lr, wd, devices,
                          lr_period, lr_decay, optimizer=optimizer, schedule=schedule,
                          mixing=mixing, momentum=momentum, nesterov=nesterov, betas=betas,
                          eps=eps, wd_exclude=wd_exclude, amp=amp, bn_bias_lr=bn_bias_lr,
                          average=average, freeze=freeze,
                          checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          plot=plot, log=log, **fit_kwargs)


def evaluate_loss(net: nn.Module, data_iter, devices: Sequence[torch.device] | None = None,
                  amp: Any = False) -> float:
    """Mean cross-entropy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, nn.Module)  # also the Dog chapter's (data_iter, net)
    return loop.evaluate(loop.inference_step(TorchStep, net, data_iter, devices, amp), data_iter)[0]


def evaluate_accuracy(net: nn.Module, data_iter, devices: Sequence[torch.device] | None = None,
                      amp: Any = False) -> float:
    """Accuracy of ``net`` over ``data_iter`` (inference mode)."""
    net, data_iter = _book.net_first(net, data_iter, nn.Module)  # the book's (data_iter, net) order too
    return loop.evaluate(loop.inference_step(TorchStep, net, data_iter, devices, amp), data_iter)[1]


def predict(net: nn.Module, data_iter, devices: Sequence[torch.device] | None = None,
            amp: Any = False, tta: Any = None) -> np.ndarray:
    """Class probabilities (softmax over classes) for every example of ``data_iter``;
    ``tta`` ("flip", "flip-crop" or N views) averages augmented views in the core."""
    net, data_iter = _book.net_first(net, data_iter, nn.Module)  # the book's (data_iter, net) order too
    return loop.predict(loop.inference_step(TorchStep, net, data_iter, devices, amp), data_iter,
                        tta=tta)


def lr_find(net: nn.Module, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, *, wd: float = 0.0, momentum: float = 0.9,
            devices: Sequence[torch.device] | None = None, amp: Any = "auto", plot: str | None = None,
            progress: bool = True, log: Any = None) -> lrfind.LRFinderResult:
    """The lr finder (fastai's range test) on ``net``; weights are restored afterwards."""
    return lrfind.lr_find_net(TorchStep, net, train_iter, start_lr, end_lr, num_iter, wd=wd,
                              momentum=momentum, devices=devices, amp=amp, plot=plot,
                              progress=progress, log=log)


@torch.no_grad()
def forward(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: inference mode, CPU, no autocast."""
    net = _module(net).cpu().eval()
    out = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return out.float().numpy()
