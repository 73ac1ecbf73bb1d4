"""Batches → the net's input: the core loader's uint8 NHWC batches normalised to float tensors,
torchvision's own (already normalised NCHW) tensors as they are (``common/batches.py``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..common.batches import FRAMEWORK, LIBRARY, host_labels, input_kind, label_kind
from ..common.book import tensor_loader
from ..data.transforms import normalize_nchw
from .device import try_all_gpus


def copy_settings(device_type: str) -> tuple[bool, bool]:
    """``(pin_memory, non_blocking)`` for host→device batch copies: pinned, asynchronous
    copies to a GPU (they overlap the previous step); plain copies on the CPU (pinning there
    is a wasted copy, and non_blocking a no-op)."""
    cuda = device_type == "cuda"
    return cuda, cuda


def _to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    pin, non_blocking = copy_settings(torch.device(device).type)
    if pin:
        t = t.pin_memory()   # (a fresh pinned copy: the caller's numpy buffer is free again)
    return t.to(device, non_blocking=non_blocking)


def to_tensor(x: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: torch.device | str = "cpu", channels_last: bool = True,
              dtype: str = "float32") -> torch.Tensor:
    """Convert an N×H×W×3 batch — uint8, or float32 0..255 pixels (MixUp mixes in float)
    — to a normalised N×3×H×W ``dtype`` tensor.

    With ``channels_last`` the tensor keeps NHWC memory, which oneDNN convolutions prefer.
    float32 is normalised on the device (uint8 travels: 4× fewer bytes to a GPU); float64,
    the parity reference, by the core in numpy, the same bits as in the other backends.
    """
    if dtype != "float32":
        t = torch.from_numpy(normalize_nchw(x, mean, std, dtype)).to(device)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t
    x = np.asarray(x)
    if x.dtype != np.uint8 and x.dtype != np.float32:
        x = x.astype(np.float32)
    t = _to_device(torch.from_numpy(np.ascontiguousarray(x)), device)
    # (not in place: a float32 batch on the CPU shares the caller's numpy memory)
    t = t.permute(0, 3, 1, 2).float().div(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=t.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=t.device).view(1, -1, 1, 1)
    t = (t - m) / s
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def as_input(x, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu",
             channels_last: bool = True, dtype: str = "float32") -> torch.Tensor:
    """A batch as the net's input, told apart by type: d2lkaggle's numpy N×H×W×3 →
    :func:`to_tensor` (normalised with ``mean``/``std``); a torch tensor from torchvision's
    loaders (the chapters' ``ImageFolder`` + ``DataLoader``, already normalised N×C×H×W) →
    moved to ``device`` in ``dtype`` as it is; anything else → one-line error."""
    if input_kind(x, torch.Tensor, "torch") == LIBRARY:
        return to_tensor(x, mean, std, device, channels_last, dtype)
    t = x.to(device=torch.device(device), dtype=getattr(torch, dtype))
    return t.contiguous(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format)


def labels_numpy(y) -> np.ndarray:
    """Labels on the host as numpy, told apart by type: a torch tensor (torchvision's loaders)
    or d2lkaggle's numpy labels; class indices (N,) or soft targets (N, C)."""
    if label_kind(y, torch.Tensor, "torch") == FRAMEWORK:
        y = y.detach().cpu().numpy()
    return host_labels(y)


def to_labels(y: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 labels on ``device``."""
    return _to_device(torch.from_numpy(np.asarray(y, dtype=np.int64)), device)


def _soft_or_int(y: np.ndarray, device) -> torch.Tensor:
    # soft targets (MixUp/label smoothing) stay float; class indices become int64
    y = np.asarray(y)
    if y.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(device)
    return to_labels(y, device)


def tensors(data_iter, devices: Sequence[torch.device] | None = None):
    """The loader's batches as tensors for hand-written loops (the chapters' ``for X, y in ...``).

    ``for X, y in tensors(train_iter, devices)``: X float32 N×3×H×W normalised with the
    loader's mean/std, X and y on ``devices[0]`` (default: the first GPU, else the CPU).
    Re-iterable (one epoch per ``for``) and ``len()`` gives the number of batches.
    """
    # contiguous NCHW (not channels_last): what a hand-written loop's convolutions expect
    return tensor_loader(data_iter, devices, try_all_gpus,
                         lambda x, m, s, d: to_tensor(x, m, s, torch.device(d), channels_last=False),
                         lambda y, d: _soft_or_int(y, torch.device(d)))
