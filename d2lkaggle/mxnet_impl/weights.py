"""Weights in MXNet: canonical numpy state, neutral files, and backbone loading.

Canonical names are torch's (see :mod:`d2lkaggle.models.weights`): the path of attribute names
from the root block plus the parameter name, with Gluon's BatchNorm ``gamma``/``beta`` called
``weight``/``bias``. Dense weights are ``[out, in]`` in both frameworks: no transposes.
"""
from __future__ import annotations

import os
from typing import Iterator

import mxnet as mx
import numpy as np
from mxnet.gluon import Block, Parameter

from ..models import weights as neutral

_RENAME = {"gamma": "weight", "beta": "bias"}


def _backbone_prefix(block: Block) -> str:
    # the fine-tune net keeps its backbone as a child block; canonically it is the root
    return "backbone." if hasattr(block, "backbone") and hasattr(block, "head") else ""


def named_parameters(block: Block, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
    """(canonical name, Parameter) for every parameter and running statistic of ``block``."""
    for name, p in block._reg_params.items():
        yield prefix + _RENAME.get(name, name), p
    for child_name, child in block._children.items():
        child = child() if callable(child) and not isinstance(child, Block) else child
        if child is None:
            continue
        yield from named_parameters(child, prefix + child_name + ".")


def canonical_parameters(net: Block) -> dict[str, Parameter]:
    """``{canonical name: Parameter}``; the fine-tune backbone's ``backbone.`` is dropped."""
    strip = _backbone_prefix(net)
    return {(n[len(strip):] if strip and n.startswith(strip) else n): p
            for n, p in named_parameters(net)}


def get_state(net: Block) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics as float32 numpy under canonical names."""
    return {n: p.data(p.list_ctx()[0]).asnumpy().astype(np.float32)
            for n, p in canonical_parameters(net).items()}


def set_state(net: Block, state: dict[str, np.ndarray], source: str = "weights",
              allow_missing: tuple[str, ...] = (), ignore_extra: tuple[str, ...] = ()) -> None:
    """Copy canonical numpy ``state`` into ``net`` after checking every name and shape."""
    params = canonical_parameters(net)
    neutral.check_state({n: p.shape for n, p in params.items()}, state, source=source,
                        allow_missing=allow_missing, ignore_extra=ignore_extra)
    for n, p in params.items():
        if n in state:
            value = mx.np.array(np.asarray(state[n], dtype=np.float32), ctx=mx.cpu())
            p.set_data(value)


def save_weights(net: Block, path: str) -> str:
    """Save ``net``'s weights as a neutral ``.safetensors``/``.npz`` file."""
    path = os.fspath(path)
    if not neutral.is_neutral(path):
        raise ValueError(f"{path}: MXNet saves neutral weight files; use a "
                         f"{' or '.join(neutral.NEUTRAL_SUFFIXES)} name")
    return neutral.save_neutral(path, get_state(net))


def load_weights(net: Block, path: str) -> Block:
    """Load a neutral file (from any backend) or a torch ``.pth`` into ``net``."""
    set_state(net, neutral.read_weights(path), source=f"weights in {path}")
    return net


def load_backbone(net: Block, weights: str) -> None:
    """Load a ResNet-34 backbone (and the head, when the file has one) into a fine-tune net."""
    state, source = neutral.backbone_state(weights, "MXNet")
    set_state(net, state, source=source, allow_missing=("head.",))


def load_pretrained(net: Block, weights: str, arch: str, head: str) -> None:
    """Load ``"imagenet"`` (torchvision's file from torch's cache) or a weight file into a whole
    model (EfficientNetV2); another number of classes in the file's classifier → the model
    keeps its new one (said once)."""
    neutral.load_pretrained(net, weights, arch, head, framework="MXNet", get_state=get_state,
                            set_state=set_state)
