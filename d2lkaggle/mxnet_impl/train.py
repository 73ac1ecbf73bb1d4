"""Training, evaluation and prediction in MXNet, driven by the core loop.

The optimizer is SGD with momentum in PyTorch's form, ``v = m·v + (g + wd·w); w -= lr·v``,
applied by hand to each trainable parameter. Gluon's ``sgd`` keeps ``lr`` inside the
velocity, so after a StepLR change its trajectory differs from torch's and Paddle's; and its
``Trainer.step(batch_size)`` rescales gradients. Here the loss is already the batch mean and
no rescaling happens anywhere, so ``lr``/``wd`` mean exactly what they mean in the torch
backend (checked by the parity tests).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, npx
from mxnet import np as mnp
from mxnet.gluon import Block

from .. import loop
from .data import to_labels, to_tensor
from .weights import canonical_parameters, get_state, set_state

#: capability flag: no bf16 training path for MXNet 1.9 on CPU in this library
SUPPORTS_BF16 = False


def try_gpu(i: int = 0) -> mx.Context:
    """GPU ``i`` if it exists, else the CPU."""
    return mx.gpu(i) if mx.context.num_gpus() > i else mx.cpu()


def try_all_gpus() -> list[mx.Context]:
    """All GPUs, or ``[cpu]`` when there is none (the book's version returns ``[]``)."""
    return [mx.gpu(i) for i in range(mx.context.num_gpus())] or [mx.cpu()]


def set_seed(seed: int) -> None:
    """Seed mxnet, numpy and random so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed)


def _log_softmax_loss(logits, y):
    # per-example cross-entropy from logits, numerically stable
    return -npx.pick(npx.log_softmax(logits, axis=-1), y, axis=-1)


class MXNetStep:
    """The core loop's step interface for a Gluon model (SGD + momentum, mean loss)."""

    def __init__(self, net: Block, *, lr: float = 0.0, wd: float = 0.0, momentum: float = 0.9,
                 devices: Sequence[mx.Context] | None = None,
                 mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1),
                 amp: Any = "auto"):
        self.devices = list(devices) if devices else try_all_gpus()
        self.net = net
        if self.net.collect_params().list_ctx() != self.devices:
            self.net.collect_params().reset_ctx(self.devices)
        self.net.hybridize(static_alloc=True)
        self.mean, self.std = tuple(mean), tuple(std)
        self.lr, self.wd, self.momentum = float(lr), float(wd), float(momentum)
        self.params = {n: p for n, p in canonical_parameters(net).items() if p.grad_req != "null"}
        ctx0 = self.devices[0]
        self.velocity = {n: mnp.zeros(p.shape, ctx=ctx0) for n, p in self.params.items()}

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def _shards(self, x: np.ndarray, y: np.ndarray | None = None):
        parts = np.array_split(np.arange(len(x)), len(self.devices))
        return [(to_tensor(x[p], self.mean, self.std, d),
                 None if y is None else to_labels(y[p], d))
                for p, d in zip(parts, self.devices) if len(p)]

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if not self.params:
            raise ValueError("the model has no trainable parameter")
        n = len(y)
        shards = self._shards(x, y)
        with autograd.record():
            outs = [self.net(X) for X, _ in shards]
            # each shard contributes sum/n: the gradients add up to those of the batch mean
            losses = [_log_softmax_loss(o, Y).sum() / n for o, (_, Y) in zip(outs, shards)]
        for loss in losses:
            loss.backward()
        self._update()
        loss_sum = sum(float(loss) for loss in losses) * n
        correct = sum(int((o.argmax(axis=1) == Y).sum()) for o, (_, Y) in zip(outs, shards))
        return loss_sum, correct, n

    def _update(self) -> None:
        ctx0 = self.devices[0]
        for name, p in self.params.items():
            grads = p.list_grad()
            g = grads[0] if len(grads) == 1 else sum(gr.as_in_ctx(ctx0) for gr in grads)
            w = p.data(ctx0)
            v = self.velocity[name]
            v[:] = self.momentum * v + g + self.wd * w
            w[:] = w - self.lr * v
            for other in p.list_data()[1:]:
                w.copyto(other)

    def _logits(self, x: np.ndarray):
        return [self.net(X) for X, _ in self._shards(x)]

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        loss_sum, correct = 0.0, 0
        for o, (_, Y) in zip(self._logits(x), self._shards(x, y)):
            loss_sum += float(_log_softmax_loss(o, Y).sum())
            correct += int((o.argmax(axis=1) == Y).sum())
        return loss_sum, correct, len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([npx.softmax(o, axis=1).asnumpy() for o in self._logits(x)])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"model/" + k: v for k, v in get_state(self.net).items()}
        for name, v in self.velocity.items():
            state[f"optim/{name}/momentum"] = v.asnumpy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_state(self.net, {k[6:]: v for k, v in state.items() if k.startswith("model/")},
                  source="checkpoint")
        ctx0 = self.devices[0]
        for name in self.velocity:
            key = f"optim/{name}/momentum"
            if key in state:
                self.velocity[name] = mnp.array(state[key], ctx=ctx0)


def train(net: Block, train_iter, valid_iter, num_epochs: int, lr: float, wd: float,
          devices: Sequence[mx.Context] | None = None, lr_period: int | None = None,
          lr_decay: float = 1.0, *, momentum: float = 0.9, amp: Any = "auto",
          checkpoint_dir: str | None = None, resume: bool = False, progress: bool = True,
          plot: str | None = None, log: Any = print) -> loop.History:
    """The chapters' ``train``: SGD(momentum, wd) with StepLR on the core loop; returns the history."""
    return loop.train_net(MXNetStep, net, train_iter, valid_iter, num_epochs, lr, wd, devices,
                          lr_period, lr_decay, momentum=momentum, amp=amp,
                          checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          plot=plot, log=log)


def evaluate_loss(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
                  amp: Any = False) -> float:
    """Mean cross-entropy of ``net`` over ``data_iter`` (inference mode)."""
    return loop.evaluate(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter)[0]


def evaluate_accuracy(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
                      amp: Any = False) -> float:
    """Accuracy of ``net`` over ``data_iter`` (inference mode)."""
    return loop.evaluate(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter)[1]


def predict(net: Block, data_iter, devices: Sequence[mx.Context] | None = None,
            amp: Any = False) -> np.ndarray:
    """Class probabilities (softmax over classes) for every example of ``data_iter``."""
    return loop.predict(loop.inference_step(MXNetStep, net, data_iter, devices, amp), data_iter)


def forward(net: Block, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: inference mode, CPU."""
    if net.collect_params().list_ctx() != [mx.cpu()]:
        net.collect_params().reset_ctx(mx.cpu())
    out = net(mnp.array(np.ascontiguousarray(x, dtype=np.float32), ctx=mx.cpu()))
    return out.asnumpy().astype(np.float32)
