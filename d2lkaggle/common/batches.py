"""What the wings take as a batch, told apart by its type (never by the values in it).

A wing's training step (``train``, ``evaluate_*``, ``predict``) and the book's ``d2l`` names
(``train_batch_ch13``, ``split_batch``, ``evaluate_accuracy_gpu(s)``) take two kinds:

* this library's batches (:class:`~d2lkaggle.data.loader.ImageLoader`): numpy N×H×W×3 uint8
  pixels (float32 0..255 after MixUp) with int64 labels. The wing normalises the pixels with
  the loader's mean/std; a batch on its own carries them
  (:class:`~d2lkaggle.data.loader.ImageBatch`).
* the framework's own tensors, from its own loaders as the chapters build them (torchvision
  ``ImageFolder`` + ``DataLoader``; Gluon ``ImageFolderDataset.transform_first`` +
  ``DataLoader``; ``paddle.vision`` ``DatasetFolder`` + ``paddle.io.DataLoader``): already
  transformed and normalised, N×C×H×W floats, on whatever device the book put them. They are
  used as they are, moved to the step's device and dtype.

Anything else is refused with one line saying what is accepted.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: the two kinds of batch
LIBRARY, FRAMEWORK = "library", "framework"


def _name(obj: Any) -> str:
    t = type(obj)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def input_kind(x: Any, tensor_types: type | tuple[type, ...], framework: str) -> str:
    """:data:`LIBRARY` for this library's numpy N×H×W×3 batch, :data:`FRAMEWORK` for a
    ``framework`` tensor from the framework's own loader (N×C×H×W floats); ``TypeError`` /
    ``ValueError`` for anything else, in one line."""
    accepted = (f"d2lkaggle's N×H×W×3 numpy batches or {framework} tensors from {framework}'s "
                f"own loader (N×C×H×W, normalised by its ToTensor + Normalize)")
    if isinstance(x, tensor_types):
        if len(x.shape) != 4 or "float" not in str(x.dtype):
            raise TypeError(f"a {framework} tensor batch must be N×C×H×W floats, as "
                            f"{framework}'s ToTensor + Normalize give; got shape "
                            f"{tuple(x.shape)}, {x.dtype} (this takes {accepted})")
        return FRAMEWORK
    if isinstance(x, np.ndarray):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"a numpy batch must be d2lkaggle's N×H×W×3 pixels, got shape "
                             f"{x.shape} (this takes {accepted})")
        return LIBRARY
    raise TypeError(f"cannot use a {_name(x)} as a batch: this takes {accepted}")


def label_kind(y: Any, tensor_types: type | tuple[type, ...], framework: str) -> str:
    """:data:`FRAMEWORK` for ``framework`` tensor labels, :data:`LIBRARY` for numpy (or a
    list); ``TypeError`` for anything else."""
    if isinstance(y, tensor_types):
        return FRAMEWORK
    if isinstance(y, (np.ndarray, list, tuple)):
        return LIBRARY
    raise TypeError(f"cannot use a {_name(y)} as labels: this takes numpy labels (d2lkaggle's "
                    f"loaders) or {framework} tensors ({framework}'s own loader)")


def host_labels(y: np.ndarray) -> np.ndarray:
    """Labels brought to the host as numpy: class indices (N,) — an (N, 1) column, as some
    datasets give, is flattened — or soft targets (N, C) kept as they are."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and not np.issubdtype(y.dtype, np.floating):
        y = y[:, 0]
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating):
        # the MXNet tab passes ``labels.astype('float32')``: class indices held as floats
        y = y.astype(np.int64)
    return y


def batch_norm(x: np.ndarray, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` a library batch is to be normalised with, which the loader's
    :class:`~d2lkaggle.data.loader.ImageBatch` carries; a bare numpy array has none."""
    norm = getattr(x, "norm", None)
    if norm is None:
        raise TypeError(f"{where} got a numpy array that did not come from a d2lkaggle loader, "
                        f"so its normalisation is unknown; pass the loader's own batches, or "
                        f"iterate d2l.tensors(loader, devices), which gives normalised tensors")
    return norm
