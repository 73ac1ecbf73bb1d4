"""Training, evaluation and prediction in PaddlePaddle, driven by the core loop.

``paddle.optimizer.Momentum`` with a float ``weight_decay`` adds ``wd·w`` to the gradient
and updates ``v = m·v + g; w -= lr·v`` — PyTorch's form — and the loss is the
batch mean, so ``lr``/``wd`` mean what they mean in the torch backend.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F

from .. import loop
from .data import to_labels, to_tensor
from .weights import canonical_name_of, get_state, set_state

#: capability flag: bf16 autocast measured no faster for Paddle 3.3 on this CPU
SUPPORTS_BF16 = False


def try_gpu(i: int = 0):
    """GPU ``i`` if it exists, else the CPU."""
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > i:
        return paddle.CUDAPlace(i)
    return paddle.CPUPlace()


def try_all_gpus() -> list:
    """All GPUs, or ``[CPUPlace]`` — always a list (the book's Paddle version returns a bare place)."""
    n = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    return [paddle.CUDAPlace(i) for i in range(n)] or [paddle.CPUPlace()]


def set_seed(seed: int) -> None:
    """Seed paddle, numpy and random so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def _cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Per-example cross-entropy ``logsumexp(z) − z_y``.

    Paddle's ``F.cross_entropy`` (and ``log_softmax``) clamp log-probabilities at −64 on the
    CPU, so a loss above 64 — a diverging run, a badly initialised head — was reported as 64
    (its gradient was right); this form reports the true value, with the same gradient.
    """
    picked = paddle.take_along_axis(logits, labels.unsqueeze(1), axis=1).squeeze(1)
    return paddle.logsumexp(logits, axis=1) - picked


class PaddleStep:
    """The core loop's step interface for a Paddle model (Momentum SGD, mean loss).

    Several GPUs would need ``paddle.distributed`` processes; this step trains on the first
    device of ``devices``.
    """

    def __init__(self, net: nn.Layer, *, lr: float = 0.0, wd: float = 0.0, momentum: float = 0.9,
                 devices: Sequence | None = None,
                 mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1),
                 amp: Any = "auto", dtype: str = "float32"):
        self.devices = list(devices) if devices else try_all_gpus()
        self.device = self.devices[0]
        self.net = net
        self.dtype = loop.check_dtype(dtype)
        if self.dtype != "float32":
            self.net.to(dtype=self.dtype)
        self.mean, self.std = tuple(mean), tuple(std)
        self.names = canonical_name_of(net)
        params = [p for p in net.parameters() if not p.stop_gradient]
        self.optimizer = (paddle.optimizer.Momentum(learning_rate=lr, momentum=momentum,
                                                    parameters=params, weight_decay=wd or None)
                          if params else None)
        self.params = params

    def set_lr(self, lr: float) -> None:
        if self.optimizer is not None:
            self.optimizer.set_lr(lr)

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if self.optimizer is None:
            raise ValueError("the model has no trainable parameter")
        self.net.train()
        X, Y = to_tensor(x, self.mean, self.std, self.device, dtype=self.dtype), to_labels(y, self.device)
        out = self.net(X)
        loss = _cross_entropy(out, Y).mean()  # batch mean
        loss.backward()
        self.optimizer.step()
        self.optimizer.clear_grad()
        n = len(y)
        correct = int((out.argmax(axis=1) == Y).astype("int64").sum())
        return float(loss) * n, correct, n

    def _logits(self, x: np.ndarray) -> paddle.Tensor:
        self.net.eval()
        with paddle.no_grad():
            return self.net(to_tensor(x, self.mean, self.std, self.device, dtype=self.dtype))

    def eval_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        out, Y = self._logits(x), to_labels(y, self.device)
        loss = _cross_entropy(out, Y).sum()
        return float(loss), int((out.argmax(axis=1) == Y).astype("int64").sum()), len(y)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        return F.softmax(self._logits(x), axis=1).numpy()  # over the classes, not the batch

    def _velocity(self, p) -> paddle.Tensor | None:
        acc = getattr(self.optimizer, "_accumulators", {}).get("velocity", {})
        return acc.get(p.name)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"model/" + k: v for k, v in get_state(self.net).items()}
        for p in self.params:
            v = self._velocity(p)
            if v is not None:
                name, transposed = self.names[id(p)]
                a = v.numpy().astype(np.float32)
                state[f"optim/{name}/momentum"] = np.ascontiguousarray(a.T) if transposed else a
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_state(self.net, {k[6:]: v for k, v in state.items() if k.startswith("model/")},
                  source="checkpoint")
        if self.optimizer is None:
            return
        for p in self.params:
            name, transposed = self.names[id(p)]
            key = f"optim/{name}/momentum"
            if key not in state:
                continue
            a = np.ascontiguousarray(state[key].T if transposed else state[key], dtype=np.float32)
            v = self._velocity(p)
            if v is None:
                # create the accumulator the way Momentum does on its first step
                self.optimizer._add_accumulator("velocity", p)
                v = self._velocity(p)
            v.set_value(a)


def train(net: nn.Layer, train_iter, valid_iter, num_epochs: int, lr: float, wd: float,
          devices: Sequence | None = None, lr_period: int | None = None,
          lr_decay: float = 1.0, *, momentum: float = 0.9, amp: Any = "auto",
          checkpoint_dir: str | None = None, resume: bool = False, progress: bool = True,
          plot: str | None = None, log: Any = print) -> loop.History:
    """The chapters' ``train``: Momentum SGD (wd) with StepLR on the core loop; returns the history."""
    return loop.train_net(PaddleStep, net, train_iter, valid_iter, num_epochs, lr, wd, devices,
                          lr_period, lr_decay, momentum=momentum, amp=amp,
                          checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          plot=plot, log=log)


def evaluate_loss(net: nn.Layer, data_iter, devices: Sequence | None = None,
                  amp: Any = False) -> float:
    """Mean cross-entropy of ``net`` over ``data_iter`` (inference mode)."""
    return loop.evaluate(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter)[0]


def evaluate_accuracy(net: nn.Layer, data_iter, devices: Sequence | None = None,
                      amp: Any = False) -> float:
    """Accuracy of ``net`` over ``data_iter`` (inference mode)."""
    return loop.evaluate(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter)[1]


def predict(net: nn.Layer, data_iter, devices: Sequence | None = None,
            amp: Any = False) -> np.ndarray:
    """Class probabilities (softmax over classes) for every example of ``data_iter``."""
    return loop.predict(loop.inference_step(PaddleStep, net, data_iter, devices, amp), data_iter)


def lr_find(net: nn.Layer, train_iter, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, *, wd: float = 0.0, momentum: float = 0.9,
            devices: Sequence | None = None, amp: Any = "auto", plot: str | None = None,
            progress: bool = True, log: Any = None) -> "lrfind.LRFinderResult":
    """The lr finder (fastai's range test) on ``net``; weights are restored afterwards."""
    from .. import lrfind
    return lrfind.lr_find_net(PaddleStep, net, train_iter, start_lr, end_lr, num_iter, wd=wd,
                              momentum=momentum, devices=devices, amp=amp, plot=plot,
                              progress=progress, log=log)


def forward(net: nn.Layer, x: np.ndarray) -> np.ndarray:
    """float32 NCHW numpy in, float32 logits out: eval mode, no autocast."""
    net.eval()
    with paddle.no_grad():
        out = net(paddle.to_tensor(np.ascontiguousarray(x, dtype=np.float32)))
    return out.numpy().astype(np.float32)
