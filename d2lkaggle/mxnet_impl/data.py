"""Batches → the net's input: the core loader's uint8 NHWC batches normalised to float arrays,
Gluon's own (already normalised NCHW) arrays as they are (``common/batches.py``)."""
from __future__ import annotations

from typing import Sequence

import mxnet as mx
import numpy as np
from mxnet import np as mnp

from ..common.batches import FRAMEWORK, LIBRARY, host_labels, input_kind, label_kind
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


def as_input(x, mean: Sequence[float], std: Sequence[float], device: "mx.Context | str" = "cpu",
             channels_last: bool = True, dtype: str = "float32") -> "mnp.ndarray":
    """A batch as the net's input, told apart by type: d2lkaggle's numpy N×H×W×3 →
    :func:`to_tensor` (normalised with ``mean``/``std``); an MXNet array from Gluon's loaders
    (the chapters' ``ImageFolderDataset.transform_first`` + ``DataLoader``, already normalised
    N×C×H×W) → on ``device`` in ``dtype`` as it is; anything else → one-line error."""
    if input_kind(x, mx.nd.NDArray, "mxnet") == LIBRARY:   # (mx.np.ndarray is an NDArray)
        return to_tensor(x, mean, std, device, channels_last, dtype)
    if not isinstance(x, mnp.ndarray):
        x = x.as_np_ndarray()
    ctx = mx.cpu() if device in (None, "cpu") else device
    x = x.as_in_ctx(ctx)
    return x if x.dtype == np.dtype(dtype) else x.astype(dtype)


def labels_numpy(y) -> np.ndarray:
    """Labels on the host as numpy, told apart by type: an MXNet array (Gluon's loaders) or
    d2lkaggle's numpy labels; class indices (N,) or soft targets (N, C)."""
    if label_kind(y, mx.nd.NDArray, "mxnet") == FRAMEWORK:
        y = y.asnumpy()
    return host_labels(y)


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
