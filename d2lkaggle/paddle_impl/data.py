"""Batches → the net's input: the core loader's uint8 NHWC batches normalised to float tensors,
paddle.vision's own (already normalised NCHW) tensors as they are (``common/batches.py``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import paddle

from ..common.batches import FRAMEWORK, LIBRARY, host_labels, input_kind, label_kind
from ..common.book import tensor_loader
from ..data.transforms import normalize_nchw
from .device import try_all_gpus


def to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: "paddle.CPUPlace | str" = "cpu", channels_last: bool = True,
              dtype: str = "float32") -> paddle.Tensor:
    """Convert an N×H×W×3 uint8 (or float32 0..255, MixUp's) batch to a normalised
    N×3×H×W ``dtype`` tensor on ``device``.

    ``channels_last`` is accepted for the shared signature; NHWC measured no faster here.
    """
    place = paddle.CPUPlace() if device in (None, "cpu") else device
    # normalised in numpy (one pass) before the copy: dygraph ops are costly on CPU
    return paddle.to_tensor(normalize_nchw(x, mean, std, dtype), place=place)


def as_input(x, mean: Sequence[float], std: Sequence[float],
             device: "paddle.CPUPlace | str" = "cpu", channels_last: bool = True,
             dtype: str = "float32") -> paddle.Tensor:
    """A batch as the net's input, told apart by type: d2lkaggle's numpy N×H×W×3 →
    :func:`to_tensor` (normalised with ``mean``/``std``); a Paddle tensor from paddle.vision's
    loaders (the chapters' ``DatasetFolder`` + ``paddle.io.DataLoader``, already normalised
    N×C×H×W) → on ``device`` in ``dtype`` as it is; anything else → one-line error."""
    if input_kind(x, paddle.Tensor, "paddle") == LIBRARY:
        return to_tensor(x, mean, std, device, channels_last, dtype)
    place = paddle.CPUPlace() if device in (None, "cpu") else device
    if isinstance(place, paddle.CPUPlace):
        x = x if x.place.is_cpu_place() else x.cpu()
    else:
        x = x.cuda(place.get_device_id())
    return x if x.dtype == getattr(paddle, dtype) else x.astype(dtype)


def labels_numpy(y) -> np.ndarray:
    """Labels on the host as numpy, told apart by type: a Paddle tensor (paddle.vision's
    loaders) or d2lkaggle's numpy labels; class indices (N,) or soft targets (N, C)."""
    if label_kind(y, paddle.Tensor, "paddle") == FRAMEWORK:
        y = y.numpy()
    return host_labels(y)


def to_labels(y: np.ndarray, device: "paddle.CPUPlace | str" = "cpu") -> paddle.Tensor:
    """int64 labels on ``device``."""
    place = paddle.CPUPlace() if device in (None, "cpu") else device
    return paddle.to_tensor(np.asarray(y, dtype=np.int64), place=place)


def _soft_or_int(y: np.ndarray, place) -> paddle.Tensor:
    # soft targets (MixUp/label smoothing) stay float; class indices become int64
    y = np.asarray(y)
    if y.ndim == 2:
        return paddle.to_tensor(np.ascontiguousarray(y, dtype=np.float32), place=place)
    return to_labels(y, place)


def tensors(data_iter, devices: "Sequence[paddle.CPUPlace] | None" = None):
    """The loader's batches as tensors for hand-written loops (the chapters' ``for X, y in ...``).

    ``for X, y in tensors(train_iter, devices)``: X float32 N×3×H×W normalised with the
    loader's mean/std, X and y on ``devices[0]`` (default: the first GPU, else the CPU).
    Re-iterable (one epoch per ``for``) and ``len()`` gives the number of batches.
    """
    return tensor_loader(data_iter, devices, try_all_gpus, to_tensor, _soft_or_int)
