"""The core's optimizers (:mod:`d2lkaggle.train.optim`) with Paddle's own kernels.

Paddle's dense CPU kernels compute torch's forms (measured against the core's numpy
reference in float64: ``Momentum`` 3e-8 — its ``mu`` is a 32-bit attribute —, ``Adam`` 1e-16,
``AdamW`` 5e-10 after six steps with lr changes), so this wing builds them with one parameter
*group* per weight decay:

* ``sgd``/``nesterov``: ``Momentum(use_nesterov=)`` with the float ``weight_decay`` fused as
  ``l2_decay`` (added to the gradient, torch's coupling);
* ``adam``: ``Adam`` with a float ``weight_decay`` (an ``L2Decay`` added to the gradient);
* ``adamw``: ``AdamW`` (``w *= 1 − lr·wd`` before the step). Its own
  ``apply_decay_param_fun`` sees Paddle's generated tensor names (``linear_0.w_0``), not the
  structured ones, so timm's exclusion is a group with decay 0 instead; ``lr_ratio`` is
  unimplemented on the CPU and not used.

``lazy_mode`` only concerns sparse (SelectedRows) gradients and ``multi_precision`` only
fp16/bf16 parameters: both stay off. The state maps to the neutral names: ``velocity`` →
``momentum``, ``moment1``/``moment2`` → ``exp_avg``/``exp_avg_sq``; Paddle keeps no step count
but ``beta1_pow_acc = β1^(t+1)`` (it starts at β1 and is advanced after each update), so the
step is counted here and the powers are rebuilt from it when a checkpoint is loaded.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import paddle

from ..train import optim as core

_PADDLE_SLOT = {"momentum": "velocity", "exp_avg": "moment1", "exp_avg_sq": "moment2"}


_POWERS: dict = {}


def _beta_power(beta: float, t: int, dtype) -> float:
    """``beta1_pow_acc`` after ``t`` updates, bit for bit as Paddle's kernel builds it: it starts
    at β and is multiplied by β in the accumulator's dtype after every update. (The exact
    power differs in the last bits, and Adam turns any such difference into O(lr) moves of
    the parameters whose gradient is pure rounding, so a resumed run would not be exact.)"""
    key = (float(beta), np.dtype(dtype).str)
    powers = _POWERS.setdefault(key, [np.asarray(beta, dtype)])
    b = np.asarray(beta, dtype)
    while len(powers) <= t:
        powers.append(np.asarray(b * powers[-1], dtype))
    return powers[t]


class Optimizer:
    """One optimizer over ``params`` (``{canonical name: parameter}``, trainable only);
    ``transposed`` names parameters stored as the transpose of the canonical layout
    (Paddle's ``Linear.weight``)."""

    def __init__(self, params: Mapping[str, paddle.Tensor], spec: core.OptimizerSpec,
                 transposed: Sequence[str] = ()):
        self.spec, self.params = spec, dict(params)
        self.transposed = set(transposed)
        self.shapes = {n: tuple(p.shape[::-1]) if n in self.transposed else tuple(p.shape)
                       for n, p in self.params.items()}
        # a group's "learning_rate" multiplies the optimizer's rate (Paddle's per-parameter
        # optimize_attr): the BatchNorm biases' bn_bias_lr
        groups = [{"params": [self.params[n] for n in names], "weight_decay": float(wd),
                   "learning_rate": float(f)}
                  for wd, f, names in core.param_groups(self.shapes, spec)]
        self.frozen: set[str] = set()
        wd = float(spec.wd)
        if spec.name == "sgd":
            self.opt = paddle.optimizer.Momentum(learning_rate=spec.lr, momentum=spec.momentum,
                                                 parameters=groups, use_nesterov=spec.nesterov,
                                                 weight_decay=wd)
        elif spec.name == "adam":
            self.opt = paddle.optimizer.Adam(learning_rate=spec.lr, beta1=spec.betas[0],
                                             beta2=spec.betas[1], epsilon=spec.eps,
                                             parameters=groups, weight_decay=wd)
        else:
            self.opt = paddle.optimizer.AdamW(learning_rate=spec.lr, beta1=spec.betas[0],
                                              beta2=spec.betas[1], epsilon=spec.eps,
                                              parameters=groups, weight_decay=wd)
        self.steps = {n: 0 for n in self.params}

    def set_lr(self, lr: float) -> None:
        self.opt.set_lr(float(lr))

    def zero_grad(self) -> None:
        self.opt.clear_grad()

    def freeze(self, names: Sequence[str]) -> None:
        """Stop updating ``names``: their gradients are dropped before each step, and Paddle,
        like torch, skips a parameter without one (no momentum, no weight decay)."""
        self.frozen.update(n for n in names if n in self.params)

    def step(self) -> None:
        for n in self.frozen:
            self.params[n].clear_gradient(False)
        for n, p in self.params.items():
            if p.grad is not None:   # (Paddle, like torch, skips a parameter without a gradient)
                self.steps[n] += 1
        self.opt.step()

    def _acc(self, slot: str, p: paddle.Tensor) -> paddle.Tensor | None:
        return getattr(self.opt, "_accumulators", {}).get(slot, {}).get(p.name)

    def _canon(self, name: str, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T) if name in self.transposed else a

    def state_dict(self) -> dict[str, np.ndarray]:
        """Optimizer state under neutral names (``optim/<param>/<slot>``), torch's values."""
        out = {}
        for name, p in self.params.items():
            for slot in self.spec.slots:
                if slot == "step":
                    if self._acc("moment1", p) is not None:
                        out[core.state_key(name, slot)] = np.array(float(self.steps[name]))
                    continue
                v = self._acc(_PADDLE_SLOT[slot], p)
                if v is not None:
                    out[core.state_key(name, slot)] = self._canon(name, np.array(v.numpy()))
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` (of any backend) saved; missing slots stay empty."""
        for name, arrays in core.saved_slots(state, self.spec, self.shapes):
            p = self.params[name]
            if self.spec.name == "sgd":
                self.opt._add_accumulator("velocity", p)   # as Momentum does on its first step
            else:
                self.opt._add_moments_pows(p)
            self.opt._already_create_accumulator.add(p.name)
            for slot, a in arrays.items():
                if slot == "step":
                    t = self.steps[name] = int(round(float(a.reshape(-1)[0])))
                    for acc, beta in (("beta1_pow_acc", self.spec.betas[0]),
                                      ("beta2_pow_acc", self.spec.betas[1])):
                        pw = self._acc(acc, p)
                        dt = pw.numpy().dtype
                        pw.set_value(np.full(pw.shape, _beta_power(beta, t, dt), dtype=dt))
                else:
                    acc = self._acc(_PADDLE_SLOT[slot], p)
                    a = a.T if name in self.transposed else a
                    acc.set_value(np.ascontiguousarray(a, dtype=acc.numpy().dtype))
