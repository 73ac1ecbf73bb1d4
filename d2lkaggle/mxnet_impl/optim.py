"""The core's optimizers (:mod:`d2lkaggle.train.optim`) in MXNet ops, with torch's numbers.

Gluon's own optimizers cannot give torch's trajectories (docs/parity.md lists each
difference), so every update is written here:

* ``sgd`` keeps the fused kernels (``sgd_mom_update`` with lr 1, then ``sgd_update``) in
  torch's form ``v = m·v + g + wd·w; w -= lr·v``; Gluon's ``sgd`` keeps lr inside the velocity.
* ``nesterov``: Gluon's ``NAG`` keeps lr inside the momentum too, and its
  ``nag_mom_update(..., out=weight)`` reads the already updated weight for ``wd·w`` on the
  CPU; torch's ``v = m·v + g + wd·w; w -= lr·(g + wd·w + m·v)`` is written with array ops.
* ``adam`` / ``adamw``: ``adam_update`` takes β1, β2 and eps as 32-bit floats, so ``1 − β2``
  is 0.000999987 instead of 0.001 (1.3e-5 relative in the second moment, in float32 AND
  float64), puts eps next to the *uncorrected* √v, and ``contrib.adamw_update`` also skips the
  update on a non-finite rescale; array ops with Python (double) scalars give torch's exact
  form, bias correction and eps after √(v/(1−β2^t)).

The state lives in torch's form and sign (``momentum``, ``exp_avg``, ``exp_avg_sq``, a per-
parameter ``step``), so checkpoints are neutral and resuming is exact.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import mxnet as mx
import numpy as np
from mxnet import nd

from ..train import optim as core


class Optimizer:
    """One optimizer over ``params`` (``{canonical name: gluon Parameter}``, trainable only).

    ``transposed`` is accepted for the shared signature (Gluon's layouts are torch's).
    """

    def __init__(self, params: Mapping[str, "mx.gluon.Parameter"], spec: core.OptimizerSpec,
                 transposed: Sequence[str] = (), ctx: "mx.Context | None" = None,
                 dtype: str = "float32"):
        self.spec, self.params, self.dtype = spec, dict(params), dtype
        self.ctx = ctx or mx.cpu()
        self.shapes = {n: tuple(p.shape) for n, p in self.params.items()}
        self.wd = core.weight_decay_of(self.shapes, spec)
        self.lr_factor = core.lr_factor_of(self.shapes, spec)   # bn_bias_lr's groups
        self.frozen: set[str] = set()
        self.lr = spec.lr
        self.state: dict[str, dict[str, nd.NDArray]] = {n: {} for n in self.params}
        self.steps = {n: 0 for n in self.params}

    def set_lr(self, lr: float) -> None:
        # nothing in the state depends on lr (torch's form), so a change is just a number
        self.lr = float(lr)

    def freeze(self, names: Sequence[str]) -> None:
        """Stop updating ``names`` (no momentum, no weight decay: torch skips a parameter
        without a gradient); their gradients are still computed by the cached graph."""
        self.frozen.update(n for n in names if n in self.params)

    def zero_grad(self) -> None:
        """Gradients are overwritten by every ``backward`` (grad_req 'write'): nothing to do."""

    def _zeros(self, name: str) -> nd.NDArray:
        return nd.zeros(self.shapes[name], ctx=self.ctx, dtype=self.dtype)

    def step(self) -> None:
        """One update of every parameter from its gradient (summed over devices)."""
        for name, p in self.params.items():
            if name in self.frozen:
                continue
            grads = p.list_grad()
            g = grads[0] if len(grads) == 1 else sum(gr.as_in_ctx(self.ctx) for gr in grads)
            w, g = p.data(self.ctx).as_nd_ndarray(), g.as_nd_ndarray()
            if self.spec.name == "sgd":
                self._sgd(name, w, g)
            else:
                self._adam(name, w, g)
            if p.grad_req == "add":  # a user's accumulating gradient: clear the scratch output
                p.zero_grad()
            for other in p.list_data()[1:]:
                p.data(self.ctx).copyto(other)

    def _sgd(self, name: str, w: nd.NDArray, g: nd.NDArray) -> None:
        s, wd, m = self.state[name], self.wd[name], self.spec.momentum
        lr = self.lr * self.lr_factor[name]
        if not self.spec.nesterov:
            # fused, no temporaries: u = −v (MXNet's sign); sgd_mom_update with lr 1 gives
            # u = m·u − (g + wd·w); its other output (w + u) is not wanted and goes to the
            # gradient's buffer, which the next backward overwrites; then w −= lr·(−u)
            if "neg_momentum" not in s:
                s["neg_momentum"] = self._zeros(name)
            u = s["neg_momentum"]
            nd.sgd_mom_update(w, g, u, lr=1.0, momentum=m, wd=wd, rescale_grad=1.0, out=g)
            nd.sgd_update(w, u, lr=lr, wd=0.0, rescale_grad=-1.0, out=w)
            return
        if "momentum" not in s:
            s["momentum"] = self._zeros(name)
        v = s["momentum"]
        if wd:
            g = g + wd * w
        v[:] = m * v + g
        w[:] = w - lr * (g + m * v)

    def _adam(self, name: str, w: nd.NDArray, g: nd.NDArray) -> None:
        s, wd, lr = self.state[name], self.wd[name], self.lr * self.lr_factor[name]
        b1, b2 = self.spec.betas
        if "exp_avg" not in s:
            s["exp_avg"], s["exp_avg_sq"] = self._zeros(name), self._zeros(name)
        m, v = s["exp_avg"], s["exp_avg_sq"]
        if self.spec.name == "adamw":
            if wd:
                w *= 1.0 - lr * wd   # decoupled, before the step (torch's AdamW)
        elif wd:
            g = g + wd * w           # coupled L2 (torch's Adam)
        self.steps[name] += 1
        t = self.steps[name]
        m[:] = b1 * m + (1.0 - b1) * g
        v[:] = b2 * v + (1.0 - b2) * g * g
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        w[:] = w - (lr / bc1) * m / (nd.sqrt(v) / math.sqrt(bc2) + self.spec.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Optimizer state under neutral names (``optim/<param>/<slot>``), torch's values."""
        out = {}
        for name, s in self.state.items():
            if "neg_momentum" in s:
                out[core.state_key(name, "momentum")] = -s["neg_momentum"].asnumpy()
            for slot in ("momentum", "exp_avg", "exp_avg_sq"):
                if slot in s:
                    out[core.state_key(name, slot)] = s[slot].asnumpy()
            if self.spec.name != "sgd" and "exp_avg" in s:
                out[core.state_key(name, "step")] = np.array(float(self.steps[name]))
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` (of any backend) saved; missing slots stay empty."""
        for name, arrays in core.saved_slots(state, self.spec, self.shapes):
            s = self.state[name] = {}
            for slot, a in arrays.items():
                if slot == "step":
                    self.steps[name] = int(round(float(a.reshape(-1)[0])))
                elif slot == "momentum" and not self.spec.nesterov:
                    s["neg_momentum"] = nd.array(-np.asarray(a, np.float64), ctx=self.ctx,
                                                 dtype=self.dtype)
                else:
                    s[slot] = nd.array(np.asarray(a, np.float64), ctx=self.ctx, dtype=self.dtype)
