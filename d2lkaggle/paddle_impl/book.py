"""The d2l calls of the two Kaggle chapters, in Paddle (``from d2lkaggle import paddle_impl as d2l``).

Framework-free helpers (``Timer``, ``Accumulator``, ``Animator``, the hub and reorg functions)
come from the core; only what touches tensors is here. Mapping table: docs/from-the-book.md.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import paddle
from paddle import nn

from ..common import book as _book
from ..common.book import Accumulator, Animator, Timer  # noqa: F401  (the book's d2l.* names)
from ..data.hub import DATA_HUB, DATA_URL, download, download_extract, extract  # noqa: F401
from ..data.labels import read_csv_labels  # noqa: F401
from ..data.reorg import reorg_test, reorg_train_valid  # noqa: F401
from ..common.batches import LIBRARY, batch_norm, input_kind
from .data import _soft_or_int, labels_numpy, to_tensor
from .device import try_all_gpus
from .train import evaluate_accuracy


def _devices(devices: Any) -> list:
    return _book.device_list(devices, try_all_gpus)


def get_net(devices: Sequence | None = None, competition: str = "dog-breed",
            num_classes: int | None = None, weights: str | None = "recipe") -> nn.Layer:
    """The chapters' ``get_net(devices)``: the recipe's model (Paddle places it on its device).

    Default: the Dog chapter's frozen ResNet-34 + head, 120 classes, ImageNet weights;
    ``competition="cifar10"`` gives the CIFAR-10 chapter's ``resnet18(10, 3)``.
    """
    return _book.get_net(sys.modules[__package__], competition, num_classes, weights)


def _net_place(net: nn.Layer):
    # the book's evaluate_accuracy_gpu: the place of the net's first parameter
    p = next(iter(net.parameters()), None)
    return paddle.CPUPlace() if p is None or p.place.is_cpu_place() else \
        paddle.CUDAPlace(p.place.gpu_device_id())


def _as_tensors(X, y, place, where: str):
    """A batch given to a batch-level helper, by type: paddle.vision's tensors as they are (the
    book's path), d2lkaggle's numpy batch normalised with its loader's mean/std."""
    if input_kind(X, paddle.Tensor, "paddle") == LIBRARY:
        mean, std = batch_norm(X, f"d2l.{where}")
        X = to_tensor(X, mean, std, place)
    if not isinstance(y, paddle.Tensor):
        y = _soft_or_int(labels_numpy(y), place)
    return X, y


def split_batch(X: paddle.Tensor, y: paddle.Tensor, devices: Sequence):
    """The book's ``d2l.split_batch``; this backend trains on one device, so one shard each
    (paddle.vision's tensors, or d2lkaggle's numpy batch normalised with its loader's
    mean/std)."""
    X, y = _as_tensors(X, y, _devices(devices)[0], "split_batch")
    return [X], [y]


def train_batch_ch13(net: nn.Layer, X: paddle.Tensor, y: paddle.Tensor, loss, trainer,
                     devices: Sequence | None = None, split_f=None):
    """The book's ``d2l.train_batch_ch13``: one optimizer step; returns (loss sum, correct).

    As in the book, ``loss`` has ``reduction="none"`` and the SUM is back-propagated. ``X``:
    what paddle.vision's loader gives (a normalised tensor) or d2lkaggle's numpy batch,
    normalised here with its loader's mean/std.
    """
    X, y = _as_tensors(X, y, _devices(devices)[0], "train_batch_ch13")
    net.train()
    trainer.clear_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    return float(l.sum()), float((pred.argmax(axis=1) == y.reshape([-1])).astype("float32").sum())


def evaluate_accuracy_gpu(net: nn.Layer, data_iter, device=None) -> float:
    """The book's ``d2l.evaluate_accuracy_gpu(net, data_iter, device)`` (inference mode) on
    ``device``, by default the net's own place, as in the book. ``data_iter``: paddle.vision's
    loader as the chapter builds it, or a d2lkaggle loader."""
    return evaluate_accuracy(net, data_iter, [_net_place(net)] if device is None else _devices(device))


def evaluate_accuracy_gpus(net: nn.Layer, data_iter, split_f=None) -> float:
    """The MXNet tab's ``d2l.evaluate_accuracy_gpus(net, data_iter, split_f)`` on the net's
    place (inference mode)."""
    return evaluate_accuracy(net, data_iter, [_net_place(net)])
