"""The core's optimizers (:mod:`d2lkaggle.train.optim`) applied with ``torch.optim``.

torch defines the meaning, so this wing only builds ``torch.optim.SGD`` / ``Adam`` /
``AdamW`` with one parameter group per weight decay (timm's exclusion decided in the core)
and maps their state to and from the neutral checkpoint names.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..train import optim as core

# torch's per-parameter state keys ↔ the neutral slot names
_SLOTS = {"momentum": "momentum_buffer", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq",
          "step": "step"}


class Optimizer:
    """One optimizer over ``params`` (``{canonical name: parameter}``, trainable only).

    ``transposed`` names parameters whose framework layout is the transpose of the canonical
    one (none in torch; the argument keeps the three wings' signatures the same).
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], spec: core.OptimizerSpec,
                 transposed: Sequence[str] = ()):
        self.spec, self.params = spec, dict(params)
        self.frozen: set[str] = set()
        self.shapes = {n: tuple(p.shape) for n, p in self.params.items()}
        groups = [{"params": [self.params[n] for n in names], "weight_decay": wd,
                   "lr": spec.lr * f, "lr_factor": f}
                  for wd, f, names in core.param_groups(self.shapes, spec)]
        if spec.name == "sgd":
            self.opt = torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum,
                                       nesterov=spec.nesterov)
        else:
            cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
            self.opt = cls(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr * g["lr_factor"]

    def freeze(self, names: Sequence[str]) -> None:
        """Stop updating ``names`` from now on: like airbench's ``requires_grad = False`` mid-run,
        torch.optim then skips them (no momentum, no weight decay). Their gradients are still
        computed and dropped before each step, so DDP's bucketed all-reduce keeps its layout."""
        self.frozen.update(n for n in names if n in self.params)

    def drop_frozen_grads(self) -> None:
        for n in self.frozen:
            self.params[n].grad = None

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.drop_frozen_grads()
        self.opt.step()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Optimizer state under neutral names (``optim/<param>/<slot>``), torch's values."""
        out = {}
        for name, p in self.params.items():
            st = self.opt.state.get(p, {})
            for slot in self.spec.slots:
                v = st.get(_SLOTS[slot])
                if v is not None:
                    out[core.state_key(name, slot)] = (np.array(float(v)) if slot == "step"
                                                      else v.detach().cpu().numpy().copy())
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` (of any backend) saved; missing slots stay empty."""
        for name, arrays in core.saved_slots(state, self.spec, self.shapes):
            p = self.params[name]
            self.opt.state[p] = {
                _SLOTS[slot]: (torch.tensor(float(a.reshape(-1)[0]), dtype=torch.float32)
                               if slot == "step" else
                               torch.from_numpy(np.array(a)).to(p.device, dtype=p.dtype))
                for slot, a in arrays.items()}
