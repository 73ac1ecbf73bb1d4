"""Training, evaluation and prediction in MXNet, driven by the core loop.

The optimizer is SGD with momentum in PyTorch's form, ``v = m·v + (g + wd·w); w -= lr·v``,
for every trainable parameter (BatchNorm gamma/beta and biases included, as in torch).
Gluon's ``Trainer``/``sgd`` is not used: it keeps ``lr`` inside the velocity
(``v = m·v − lr·(g + wd·w); w += v``), so after a StepLR change its trajectory differs from
torch's and Paddle's, and ``Trainer.step(batch_size)`` rescales gradients. Here the loss is
the batch MEAN and no rescaling happens anywhere (the one place: ``train_batch`` divides the
summed loss by the batch size before ``backward``), so ``lr``/``wd`` mean exactly what they
mean in the torch backend (checked by the parity tests), the momentum buffers are torch's
(``optim/<name>/momentum`` in checkpoints) and a resumed run continues exactly.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, nd, npx
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
                 amp: Any = "auto", dtype: str = "float32"):
        self.devices = list(devices) if devices else try_all_gpus()
        self.net = net
        self.dtype = loop.check_dtype(dtype)
        if self.dtype != "float32":
            self.net.cast(self.dtype)   # before hybridize: the cached graph is typed
        if self.net.collect_params().list_ctx() != self.devices:
            self.net.collect_params().reset_ctx(self.devices)
        if not getattr(self.net, "_active", False):
            # hybridizing again would throw away the cached graph (evaluate/predict build a
            # step per call), so a net that is already hybridized keeps its graph
            self.net.hybridize(static_alloc=True)
        self.mean, self.std = tuple(mean), tuple(std)
        self.lr, self.wd, self.momentum = float(lr), float(wd), float(momentum)
        self.params = {n: p for n, p in canonical_parameters(net).items() if p.grad_req != "null"}
        ctx0 = self.devices[0]
        # u = −v: torch's momentum buffer with MXNet's sign (what ``sgd_mom_update`` keeps)
        self.neg_velocity = {n: nd.zeros(p.shape, ctx=ctx0, dtype=self.dtype)
                             for n, p in self.params.items()}

    def set_lr(self, lr: float) -> None:
        # lr is not inside the velocity (torch's form), so nothing else changes
        self.lr = float(lr)

    def _shards(self, x: np.ndarray, y: np.ndarray | None = None):
        # the batch split across the devices (like ``gluon.utils.split_and_load`` with
        # even_split=False), normalised straight onto each device
        if len(self.devices) == 1:
            d = self.devices[0]
            return [(to_tensor(x, self.mean, self.std, d, dtype=self.dtype),
                     None if y is None else to_labels(y, d))]
        parts = np.array_split(np.arange(len(x)), len(self.devices))
        return [(to_tensor(x[p], self.mean, self.std, d, dtype=self.dtype),
                 None if y is None else to_labels(y[p], d))
                for p, d in zip(parts, self.devices) if len(p)]

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if not self.params:
            raise ValueError("the model has no trainable parameter")
        n = len(y)
        shards = self._shards(x, y)
        with autograd.record():
            outs = [self.net(X) for X, _ in shards]
            # the ONE place the batch size enters: each shard contributes (sum of its losses)/n,
            # so the gradients add up to those of the batch MEAN; nothing rescales them later
            losses = [_log_softmax_loss(o, Y).sum() / n for o, (_, Y) in zip(outs, shards)]
        for loss in losses:
            loss.backward()
        self._update()
        loss_sum = sum(float(loss) for loss in losses) * n
        correct = sum(int((o.argmax(axis=1) == Y).sum()) for o, (_, Y) in zip(outs, shards))
        return loss_sum, correct, n

    def _update(self) -> None:
        """torch's SGD step, two fused MXNet kernels per parameter (no temporaries).

        ``sgd_mom_update`` with lr 1: ``u = m·u − (g + wd·w)``, i.e. ``v = m·v + (g + wd·w)``
        for ``v = −u``; its other output (``w + u``) is not wanted and goes to the gradient's
        buffer, which the next ``backward`` overwrites. ``sgd_update`` with wd 0 and
        rescale −1 on ``u``: ``w = w − lr·(−1)·u = w − lr·v``. Same rounding as torch's
        ``buf.mul_(m).add_(g + wd·w); w.add_(buf, alpha=−lr)``; ~3x less memory traffic
        than the same update written with array expressions.
        """
        ctx0 = self.devices[0]
        for name, p in self.params.items():
            grads = p.list_grad()
            g = grads[0] if len(grads) == 1 else sum(gr.as_in_ctx(ctx0) for gr in grads)
            w, g, u = p.data(ctx0).as_nd_ndarray(), g.as_nd_ndarray(), self.neg_velocity[name]
            nd.sgd_mom_update(w, g, u, lr=1.0, momentum=self.momentum, wd=self.wd,
                              rescale_grad=1.0, out=g)
            nd.sgd_update(w, u, lr=self.lr, wd=0.0, rescale_grad=-1.0, out=w)
            if p.grad_req == "add":  # a user's accumulating gradient: clear the scratch output
                p.zero_grad()
            for other in p.list_data()[1:]:
                p.data(ctx0).copyto(other)

    def _logits(self, shards):
        return [self.net(X) for X, _ in shards]

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        loss_sum, correct = 0.0, 0
        shards = self._shards(x, y)
        for o, (_, Y) in zip(self._logits(shards), shards):
            loss_sum += float(_log_softmax_loss(o, Y).sum())
            correct += int((o.argmax(axis=1) == Y).sum())
        return loss_sum, correct, len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        # softmax over the classes (axis 1), never over the batch
        return np.concatenate([npx.softmax(o, axis=1).asnumpy()
                               for o in self._logits(self._shards(x))])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"model/" + k: v for k, v in get_state(self.net).items()}
        for name, u in self.neg_velocity.items():
            state[f"optim/{name}/momentum"] = -u.asnumpy()  # torch's momentum_buffer
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_state(self.net, {k[6:]: v for k, v in state.items() if k.startswith("model/")},
                  source="checkpoint")
        ctx0 = self.devices[0]
        for name, u in self.neg_velocity.items():
            key = f"optim/{name}/momentum"
            if key in state:
                v = np.asarray(state[key], dtype=np.float32)
                if v.shape != u.shape:
                    raise ValueError(f"checkpoint: shape of {key}: model {u.shape}, file {v.shape}")
                self.neg_velocity[name] = nd.array(-v, ctx=ctx0, dtype=self.dtype)


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


def lr_find(net: Block, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, *, wd: float = 0.0, momentum: float = 0.9,
            devices: Sequence[mx.Context] | None = None, amp: Any = "auto", plot: str | None = None,
            progress: bool = True, log: Any = None) -> "lrfind.LRFinderResult":
    """The lr finder (fastai's range test) on ``net``; weights are restored afterwards."""
    from .. import lrfind
    return lrfind.lr_find_net(MXNetStep, net, train_iter, start_lr, end_lr, num_iter, wd=wd,
                              momentum=momentum, devices=devices, amp=amp, plot=plot,
                              progress=progress, log=log)


def forward(net: Block, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: inference mode, CPU."""
    if net.collect_params().list_ctx() != [mx.cpu()]:
        net.collect_params().reset_ctx(mx.cpu())
    out = net(mnp.array(np.ascontiguousarray(x, dtype=np.float32), ctx=mx.cpu()))
    return out.asnumpy().astype(np.float32)
