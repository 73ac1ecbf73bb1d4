"""Weights in PaddlePaddle: canonical numpy state, neutral files, and backbone loading.

Canonical names are torch's (see :mod:`d2lkaggle.models.weights`). Two conventions differ and are
mapped here, in one place: BatchNorm's running statistics are ``_mean``/``_variance``
(torch: ``running_mean``/``running_var``), and ``Linear.weight`` is ``[in, out]`` (torch:
``[out, in]``), so it is transposed both ways.
"""
from __future__ import annotations

import os

import numpy as np
import paddle
from paddle import nn

from ..models import weights as neutral

_TO_CANON = {"_mean": "running_mean", "_variance": "running_var"}


def _linear_weights(net: nn.Layer) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, layer in net.named_sublayers(include_self=True)
            if isinstance(layer, nn.Linear)}


def canonical_tensors(net: nn.Layer) -> dict[str, tuple[paddle.Tensor, bool]]:
    """``{canonical name: (tensor, transposed)}`` for every parameter and running statistic."""
    linear = _linear_weights(net)
    out = {}
    for name, t in net.state_dict().items():
        prefix, _, leaf = name.rpartition(".")
        canon = (prefix + "." if prefix else "") + _TO_CANON.get(leaf, leaf)
        out[canon] = (t, name in linear)
    return out


def canonical_name_of(net: nn.Layer) -> dict[int, tuple[str, bool]]:
    """``{id(parameter): (canonical name, transposed)}`` for the optimizer's state."""
    return {id(t): (n, tr) for n, (t, tr) in canonical_tensors(net).items()}


def get_state(net: nn.Layer) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics as float32 numpy under canonical names and layouts."""
    out = {}
    for n, (t, transposed) in canonical_tensors(net).items():
        a = t.numpy().astype(np.float32)
        out[n] = np.ascontiguousarray(a.T) if transposed else a
    return out


def set_state(net: nn.Layer, state: dict[str, np.ndarray], source: str = "weights",
              allow_missing: tuple[str, ...] = (), ignore_extra: tuple[str, ...] = ()) -> None:
    """Copy canonical numpy ``state`` into ``net`` after checking every name and shape."""
    tensors = canonical_tensors(net)
    expected = {n: tuple(t.shape[::-1]) if tr else tuple(t.shape) for n, (t, tr) in tensors.items()}
    neutral.check_state(expected, state, source=source, allow_missing=allow_missing,
                        ignore_extra=ignore_extra)
    for n, (t, transposed) in tensors.items():
        if n in state:
            # in the tensor's own dtype: a float64 step (parity) loads float32 files too
            a = np.asarray(state[n], dtype=np.float64 if t.dtype == paddle.float64 else np.float32)
            t.set_value(np.ascontiguousarray(a.T) if transposed else a)


def save_weights(net: nn.Layer, path: str) -> str:
    """Save ``net``'s weights as a neutral ``.safetensors``/``.npz`` file."""
    path = os.fspath(path)
    if not neutral.is_neutral(path):
        raise ValueError(f"{path}: Paddle saves neutral weight files; use a "
                         f"{' or '.join(neutral.NEUTRAL_SUFFIXES)} name")
    return neutral.save_neutral(path, get_state(net))


def load_weights(net: nn.Layer, path: str) -> nn.Layer:
    """Load a neutral file (from any backend) or a torch ``.pth`` into ``net``."""
    set_state(net, neutral.read_weights(path), source=f"weights in {path}")
    return net


def load_backbone(net: nn.Layer, weights: str) -> None:
    """Load a ResNet-34 backbone (and the head, when the file has one) into a fine-tune net."""
    state, source = neutral.backbone_state(weights, "Paddle")
    set_state(net, state, source=source, allow_missing=("head.",))


def load_pretrained(net: nn.Layer, weights: str, arch: str, head: str) -> None:
    """Load ``"imagenet"`` (torchvision's file from torch's cache) or a weight file into a whole
    model (EfficientNetV2); another number of classes in the file's classifier → the model
    keeps its new one (said once)."""
    neutral.load_pretrained(net, weights, arch, head, framework="Paddle", get_state=get_state,
                            set_state=set_state)
