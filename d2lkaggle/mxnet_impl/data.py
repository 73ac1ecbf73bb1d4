"""uint8 NHWC batches from the core loader → normalised float arrays on a context."""
from __future__ import annotations

from typing import Sequence

import mxnet as mx
import numpy as np
from mxnet import np as mnp

from ..common.book import tensor_loader
from ..data.transforms import normalize_nchw
from .device import try_all_gpus


def to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: "mx.Context | str" = "cpu", channels_last: bool = True,
              dtype: str = "float32") -> "mnp.ndarray":
    """Convert an N×H×W×3 uint8 (or float32 0..255, MixUp's) batch to a normalised
    N×3×H×W ``dtype`` array on ``device``.

    ``channels_last`` is accepted for the shared signature; Gluon's convolutions take NCHW.
    """
    ctx = mx.cpu() if device in (None, "cpu") else device
    # normalised in numpy (one fused pass) before the copy: fewer framework ops per batch
    return mnp.array(normalize_nchw(x, mean, std, dtype), ctx=ctx, dtype=dtype)


def to_labels(y: np.ndarray, device: "mx.Context | str" = "cpu") -> "mnp.ndarray":
    """int64 labels on ``device``."""
    ctx = mx.cpu() if device in (None, "cpu") else device
    return mnp.array(np.asarray(y, dtype=np.int64), ctx=ctx, dtype=np.int64)


def _soft_or_int(y: np.ndarray, ctx) -> "mnp.ndarray":
    # soft targets (MixUp/label smoothing) stay float; class indices become int64
    y = np.asarray(y)
    if y.ndim == 2:
        return mnp.array(y, ctx=ctx, dtype=np.float32)
    return to_labels(y, ctx)


def tensors(data_iter, devices: "Sequence[mx.Context] | None" = None):
    """The loader's batches as arrays for hand-written loops (the chapters' ``for X, y in ...``).

    ``for X, y in tensors(train_iter, devices)``: X float32 N×3×H×W normalised with the
    loader's mean/std, X and y on ``devices[0]`` (default: the first GPU, else the CPU).
    Re-iterable (one epoch per ``for``) and ``len()`` gives the number of batches.
    """
    return tensor_loader(data_iter, devices, try_all_gpus, to_tensor, _soft_or_int)
