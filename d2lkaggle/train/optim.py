"""Optimizers, one name and one meaning in every backend (framework-free).

The core decides *what* an optimizer is — its name, hyperparameters, which parameters get
weight decay, the names of its state in a checkpoint — and each backend's ``optim.py`` only
applies it. The meaning is PyTorch's, exactly:

* ``sgd`` — ``torch.optim.SGD(momentum, dampening=0)``: ``g += wd·w; v = m·v + g;
  w -= lr·v`` (``nesterov``: ``w -= lr·(g + m·v)``). ``"nesterov"`` is ``sgd`` with
  ``nesterov=True``.
* ``adam`` — ``torch.optim.Adam``: L2 weight decay coupled into the gradient (``g += wd·w``),
  ``m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²``, bias correction with the step count ``t``,
  ``w -= lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps)`` — eps added *after* the square root of the
  bias-corrected second moment.
* ``adamw`` — ``torch.optim.AdamW``: decoupled decay first, ``w *= 1 − lr·wd``, then Adam's
  step without decay in the gradient.

``wd_exclude="bn_bias"`` is timm's ``param_groups_weight_decay``: no decay on biases and on
one-dimensional parameters (BatchNorm/LayerNorm weights and biases), decided here from the
canonical (torch) parameter names and shapes, so every backend excludes the same tensors.

``bn_bias_lr=k`` is the speed-run record's ``bias_scaler`` (airbench94: 64): the BatchNorm
biases train at ``k·lr`` with weight decay ``wd / k``, so their decay per step ``lr·wd`` is
the other parameters' (torch parameter groups with their own ``lr`` and ``weight_decay``; a
schedule scales every group's rate by the same factor).

Checkpoint names are neutral: ``optim/<param>/momentum`` (sgd, nesterov) or
``optim/<param>/exp_avg``, ``optim/<param>/exp_avg_sq``, ``optim/<param>/step`` (adam,
adamw), torch's values, so a run resumes exactly and a checkpoint moves between backends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

#: the optimizer names every backend accepts (``Step(optimizer=...)``, ``train(optimizer=...)``)
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
#: the weight-decay exclusions: none, or timm's "no decay on biases and norm parameters"
WD_EXCLUDE = (None, "bn_bias")
#: the state each optimizer kind keeps per parameter, under ``optim/<param>/<slot>``
STATE_SLOTS = {"sgd": ("momentum",), "adam": ("exp_avg", "exp_avg_sq", "step"),
               "adamw": ("exp_avg", "exp_avg_sq", "step")}


def _finite(name: str, value: float, low: float = 0.0, low_open: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < low or (low_open and v == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"optimizer {name} must be a finite number {bound}, got {value!r}")
    return v


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer as data: the same object drives every backend's ``optim.py``.

    ``name`` is one of :data:`OPTIMIZERS`; ``"nesterov"`` is normalised to ``"sgd"`` with
    ``nesterov=True``. ``lr`` is the initial rate (the loop sets the scheduled one before every
    batch); ``momentum``/``nesterov`` are used by sgd, ``betas``/``eps`` by adam and adamw.
    """

    name: str = "sgd"
    lr: float = 0.0
    wd: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    wd_exclude: str | None = None
    bn_bias_lr: float = 1.0

    def __post_init__(self) -> None:
        name = str(self.name).lower() if isinstance(self.name, str) else self.name
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        nesterov = bool(self.nesterov) or name == "nesterov"
        if name == "nesterov":
            name = "sgd"
        if nesterov and name != "sgd":
            raise ValueError(f"nesterov=True is a form of SGD momentum; it does not apply to {name}")
        lr = _finite("lr", self.lr)
        wd = _finite("wd (weight decay)", self.wd)
        momentum = _finite("momentum", self.momentum)
        if momentum >= 1:
            raise ValueError(f"optimizer momentum must be < 1, got {self.momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0 (torch.optim.SGD's rule)")
        try:
            b1, b2 = (float(b) for b in self.betas)
        except (TypeError, ValueError):
            raise ValueError(f"optimizer betas must be two numbers, got {self.betas!r}") from None
        for i, b in enumerate((b1, b2)):
            if not (0.0 <= b < 1.0):
                raise ValueError(f"optimizer betas[{i}] must be in [0, 1), got {b!r}")
        eps = _finite("eps", self.eps)
        bn_bias_lr = _finite("bn_bias_lr", self.bn_bias_lr, low_open=True)
        if self.wd_exclude not in WD_EXCLUDE:
            raise ValueError(f"unknown wd_exclude {self.wd_exclude!r}; choose None or 'bn_bias' "
                             "(no weight decay on biases and BatchNorm/LayerNorm parameters)")
        for k, v in (("name", name), ("lr", lr), ("wd", wd), ("momentum", momentum),
                     ("nesterov", nesterov), ("betas", (b1, b2)), ("eps", eps),
                     ("bn_bias_lr", bn_bias_lr)):
            object.__setattr__(self, k, v)

    @property
    def label(self) -> str:
        """The user-facing name (``"nesterov"`` for Nesterov SGD)."""
        return "nesterov" if self.name == "sgd" and self.nesterov else self.name

    @property
    def slots(self) -> tuple[str, ...]:
        """State kept per parameter, as named in checkpoints (``optim/<param>/<slot>``)."""
        return STATE_SLOTS[self.name]

    def with_lr(self, lr: float) -> "OptimizerSpec":
        return replace(self, lr=lr)


def make_spec(optimizer: "str | OptimizerSpec" = "sgd", *, lr: float = 0.0, wd: float = 0.0,
              momentum: float = 0.9, nesterov: bool = False,
              betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
              wd_exclude: str | None = None, bn_bias_lr: float = 1.0) -> OptimizerSpec:
    """The Step's optimizer keywords as one checked :class:`OptimizerSpec`.

    A spec given as ``optimizer`` is used as it is (its own lr, wd, ...); a name is combined
    with the keywords. Errors list the valid choices.
    """
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    if not isinstance(optimizer, str):
        raise ValueError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or an "
                         f"OptimizerSpec, got {optimizer!r}")
    return OptimizerSpec(optimizer, lr=lr, wd=wd, momentum=momentum, nesterov=nesterov,
                         betas=tuple(betas), eps=eps, wd_exclude=wd_exclude,
                         bn_bias_lr=bn_bias_lr)


def is_no_decay(name: str, shape: Sequence[int]) -> bool:
    """timm's rule (``param_groups_weight_decay``): biases and 1-D parameters get no decay.

    ``name`` and ``shape`` are canonical (torch's): BatchNorm/LayerNorm ``weight``/``bias``
    are 1-D, every layer's ``bias`` ends in ``.bias``; conv and linear weights decay.
    """
    return len(tuple(shape)) <= 1 or name == "bias" or name.endswith(".bias")


def is_norm_bias(name: str, shape: Sequence[int]) -> bool:
    """A BatchNorm/LayerNorm bias, told by its canonical name: 1-D, ``.bias`` of a layer whose
    name says it normalises (``bn1``, ``norm2``, ``ln``) — what ``bn_bias_lr`` scales."""
    layer = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return (len(tuple(shape)) == 1 and name.endswith(".bias")
            and (layer.startswith(("bn", "ln")) or "norm" in layer))


def param_groups(shapes: Mapping[str, Sequence[int]],
                 spec: OptimizerSpec) -> list[tuple[float, float, list[str]]]:
    """``[(weight decay, lr factor, [canonical names])]``: the groups each backend builds.

    :func:`decay_groups` split further by ``bn_bias_lr``: the BatchNorm biases get
    ``lr·bn_bias_lr`` and ``wd / bn_bias_lr`` (their decay per step unchanged). Groups keep
    the order in which their first parameter appears; empty ones are left out.
    """
    k = spec.bn_bias_lr
    out: dict[tuple[float, float], list[str]] = {}
    for wd, names in decay_groups(shapes, spec):
        for n in names:
            key = (wd / k, k) if k != 1.0 and is_norm_bias(n, shapes[n]) else (wd, 1.0)
            out.setdefault(key, []).append(n)
    return [(wd, f, names) for (wd, f), names in out.items()]


def lr_factor_of(shapes: Mapping[str, Sequence[int]], spec: OptimizerSpec) -> dict[str, float]:
    """``{canonical name: lr factor}`` (the groups of :func:`param_groups`, per name)."""
    return {n: f for _, f, names in param_groups(shapes, spec) for n in names}


def decay_groups(shapes: Mapping[str, Sequence[int]], spec: OptimizerSpec) -> list[tuple[float, list[str]]]:
    """``[(weight decay, [canonical names])]``: the parameter groups each backend builds.

    Without an exclusion, one group with ``spec.wd``; with ``"bn_bias"``, the decayed
    parameters first and the excluded ones with decay 0 (empty groups are left out).
    Names keep the order of ``shapes``.
    """
    if spec.wd_exclude is None or spec.wd == 0:
        return [(spec.wd, list(shapes))] if shapes else []
    decay = [n for n, s in shapes.items() if not is_no_decay(n, s)]
    skip = [n for n, s in shapes.items() if is_no_decay(n, s)]
    return [(wd, names) for wd, names in ((spec.wd, decay), (0.0, skip)) if names]


def weight_decay_of(shapes: Mapping[str, Sequence[int]], spec: OptimizerSpec) -> dict[str, float]:
    """``{canonical name: weight decay}`` (the groups of :func:`param_groups`, per name)."""
    return {n: wd for wd, _, names in param_groups(shapes, spec) for n in names}


def state_key(name: str, slot: str) -> str:
    """The neutral checkpoint key of one optimizer state tensor."""
    return f"optim/{name}/{slot}"


def saved_slots(state: Mapping[str, np.ndarray], spec: "OptimizerSpec",
                shapes: Mapping[str, Sequence[int]]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(name, {slot: array})`` for every parameter whose optimizer state ``state`` holds.

    What each wing's ``load_state_dict`` reads, checked once here: a parameter with none of
    its slots is skipped (its state stays empty), one with only some of them is an error.
    """
    for name, shape in shapes.items():
        keys = {slot: state_key(name, slot) for slot in spec.slots}
        if not any(k in state for k in keys.values()):
            continue
        arrays = {}
        for slot, key in keys.items():
            if key not in state:
                raise ValueError(f"checkpoint: {key} is missing (the other {spec.label} "
                                 f"state of {name} is there)")
            arrays[slot] = check_state_shape(key, state[key], shape)
        yield name, arrays


def check_state_shape(key: str, value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A checkpoint's optimizer tensor, checked against the parameter's canonical shape."""
    a = np.asarray(value)
    if key.endswith("/step"):
        if a.size != 1 or not np.isfinite(a).all() or float(a.reshape(-1)[0]) < 0:
            raise ValueError(f"checkpoint: {key} must be one step count >= 0, got {a!r}")
        return a
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"checkpoint: shape of {key}: model {tuple(shape)}, file {tuple(a.shape)}")
    return a


def steps_in(state: Mapping[str, np.ndarray], names: Iterable[str]) -> dict[str, int]:
    """The per-parameter Adam step counts a checkpoint holds (0 where there is none)."""
    out = {}
    for n in names:
        v = state.get(state_key(n, "step"))
        out[n] = 0 if v is None else int(round(float(np.asarray(v).reshape(-1)[0])))
    return out


# ----------------------------------------------------------------------------- reference

def reference_step(spec: OptimizerSpec, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray],
                   lr: float, wd: float | None = None) -> np.ndarray:
    """One step of torch's algorithm in numpy float64 (the tests' yardstick); updates
    ``state`` (neutral slot names) in place and returns the new weight."""
    wd = spec.wd if wd is None else wd
    w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
    if spec.name == "sgd":
        g = g + wd * w
        buf = state.get("momentum")
        buf = g.copy() if buf is None else spec.momentum * buf + g   # torch: first buf = g
        state["momentum"] = buf
        return w - lr * (g + spec.momentum * buf if spec.nesterov else buf)
    b1, b2 = spec.betas
    if spec.name == "adamw":
        w = w * (1 - lr * wd)
    else:
        g = g + wd * w
    t = int(state.get("step", 0)) + 1
    m = b1 * state.get("exp_avg", np.zeros_like(w)) + (1 - b1) * g
    v = b2 * state.get("exp_avg_sq", np.zeros_like(w)) + (1 - b2) * g * g
    state.update(exp_avg=m, exp_avg_sq=v, step=np.array(float(t)))
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    return w - (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + spec.eps)


# ----------------------------------------------------------------------------- targets

def split_targets(y: np.ndarray, n: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """A training batch's targets as ``(soft or None, hard labels)``.

    ``y`` is int labels of shape (N,) or float soft targets of shape (N, C) (MixUp, CutMix,
    label smoothing). The hard labels of soft targets are their argmax — the larger of two
    mixed labels — against which training accuracy is counted.
    """
    y = np.asarray(y)
    if y.ndim == 2 and np.issubdtype(y.dtype, np.floating):
        if n is not None and len(y) != n:
            raise ValueError(f"soft targets have {len(y)} rows for a batch of {n}")
        return np.ascontiguousarray(y), y.argmax(1).astype(np.int64)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"targets must be int labels (N,) or float soft targets (N, C); "
                         f"got {y.dtype} {y.shape}")
    return None, y.astype(np.int64)
