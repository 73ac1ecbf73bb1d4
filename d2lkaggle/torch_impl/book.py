"""The d2l calls of the two Kaggle chapters, in PyTorch (``from d2lkaggle import torch_impl as d2l``).

Framework-free helpers (``Timer``, ``Accumulator``, ``Animator``, the hub and reorg functions)
come from the core; only what touches tensors is here. Mapping table: docs/from-the-book.md.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import torch
from torch import nn

from ..common import book as _book
from ..common.book import Accumulator, Animator, Timer  # noqa: F401  (the book's d2l.* names)
from ..data.hub import DATA_HUB, DATA_URL, download, download_extract, extract  # noqa: F401
from ..data.labels import read_csv_labels  # noqa: F401
from ..data.reorg import reorg_test, reorg_train_valid  # noqa: F401
from ..common.batches import LIBRARY, batch_norm, input_kind
from .data import _soft_or_int, labels_numpy, to_tensor
from .device import try_all_gpus
from .train import evaluate_accuracy
from .weights import _module


def _devices(devices: Any) -> list:
    return _book.device_list(devices, try_all_gpus)


def get_net(devices: Sequence[torch.device] | None = None, competition: str = "dog-breed",
            num_classes: int | None = None, weights: str | None = "recipe") -> nn.Module:
    """The chapters' ``get_net(devices)``: the recipe's model on ``devices[0]``.

    Default: the Dog chapter's frozen ResNet-34 + head, 120 classes, ImageNet weights;
    ``competition="cifar10"`` gives the CIFAR-10 chapter's ``resnet18(10, 3)``.
    """
    net = _book.get_net(sys.modules[__package__], competition, num_classes, weights)
    return net.to(torch.device(_devices(devices)[0]))


def _net_device(net: nn.Module) -> torch.device:
    # the book's evaluate_accuracy_gpu: "the device of the net's first parameter"
    p = next(iter(_module(net).parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _as_tensors(X, y, device: torch.device, where: str):
    """A batch given to a batch-level helper, by type: torchvision's tensors as they are (the
    book's path), d2lkaggle's numpy batch normalised with its loader's mean/std."""
    if input_kind(X, torch.Tensor, "torch") == LIBRARY:
        mean, std = batch_norm(X, f"d2l.{where}")
        X = to_tensor(X, mean, std, device, channels_last=False)
    else:
        X = X.to(device)
    y = y.to(device) if isinstance(y, torch.Tensor) else _soft_or_int(labels_numpy(y), device)
    return X, y


def split_batch(X: torch.Tensor, y: torch.Tensor, devices: Sequence[torch.device]):
    """The book's ``d2l.split_batch``: the batch in equal parts, one per device (torchvision's
    tensors, or d2lkaggle's numpy batch normalised with its loader's mean/std)."""
    devices = _devices(devices)
    X, y = _as_tensors(X, y, torch.device("cpu"), "split_batch")
    return ([x.to(d) for x, d in zip(X.chunk(len(devices)), devices)],
            [t.to(d) for t, d in zip(y.chunk(len(devices)), devices)])


def train_batch_ch13(net: nn.Module, X: torch.Tensor, y: torch.Tensor, loss, trainer,
                     devices: Sequence[torch.device] | None = None, split_f=None):
    """The book's ``d2l.train_batch_ch13``: one SGD step on a batch; returns (loss sum, correct).

    As in the book, ``loss`` has ``reduction="none"`` and the SUM is back-propagated (so the
    book's lr 2e-4 pairs with it; this library's ``train`` uses the mean and lr 0.02). ``X``
    is what torchvision's loader gives (a normalised tensor; a list for the book's BERT) or
    d2lkaggle's numpy batch, normalised here with its loader's mean/std.
    """
    device = torch.device(_devices(devices)[0])
    if isinstance(X, list):
        X, y = [x.to(device) for x in X], y.to(device)
    else:
        X, y = _as_tensors(X, y, device, "train_batch_ch13")
    net.train()
    trainer.zero_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    return l.sum().detach(), (pred.argmax(dim=1) == y).sum().detach()


def evaluate_accuracy_gpu(net: nn.Module, data_iter, device: torch.device | None = None) -> float:
    """The book's ``d2l.evaluate_accuracy_gpu(net, data_iter, device)`` (inference mode) on
    ``device``, by default the net's own, as in the book. ``data_iter``: torchvision's loader
    as the chapter builds it, or a d2lkaggle loader."""
    device = _net_device(net) if device is None else device
    return evaluate_accuracy(net, data_iter, _devices(device))


def evaluate_accuracy_gpus(net: nn.Module, data_iter, split_f=None) -> float:
    """The MXNet tab's ``d2l.evaluate_accuracy_gpus(net, data_iter, split_f)`` on the net's
    device (inference mode)."""
    return evaluate_accuracy(net, data_iter, [_net_device(net)])
