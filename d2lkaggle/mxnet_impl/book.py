"""The d2l calls of the two Kaggle chapters, in MXNet (``from d2lkaggle import mxnet_impl as d2l``).

Framework-free helpers (``Timer``, ``Accumulator``, ``Animator``, the hub and reorg functions)
come from the core; only what touches arrays is here. Mapping table: docs/from-the-book.md.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import mxnet as mx
from mxnet import autograd, gluon
from mxnet import np as mnp
from mxnet.gluon import Block

from ..common import book as _book
from ..common.book import Accumulator, Animator, Timer  # noqa: F401  (the book's d2l.* names)
from ..data.hub import DATA_HUB, DATA_URL, download, download_extract, extract  # noqa: F401
from ..data.labels import read_csv_labels  # noqa: F401
from ..data.reorg import reorg_test, reorg_train_valid  # noqa: F401
from ..common.batches import LIBRARY, batch_norm, input_kind
from .data import labels_numpy, to_tensor
from .device import try_all_gpus
from .train import evaluate_accuracy


def _devices(devices: Any) -> list:
    return _book.device_list(devices, try_all_gpus)


def get_net(devices: Sequence[mx.Context] | None = None, competition: str = "dog-breed",
            num_classes: int | None = None, weights: str | None = "recipe") -> Block:
    """The chapters' ``get_net(devices)``: the recipe's model, its parameters on ``devices``.

    Default: the Dog chapter's frozen ResNet-34 + head, 120 classes, ImageNet weights;
    ``competition="cifar10"`` gives the CIFAR-10 chapter's ``resnet18(10)``.
    """
    net = _book.get_net(sys.modules[__package__], competition, num_classes, weights)
    ctx = _devices(devices)
    if net.collect_params().list_ctx() != ctx:
        net.collect_params().reset_ctx(ctx)
    return net


def _net_devices(net: Block) -> list:
    # the book's evaluate_accuracy_gpus: the contexts of the net's first parameter
    params = list(net.collect_params().values())
    return params[0].list_ctx() if params else [mx.cpu()]


def split_batch(X, y, devices: Sequence[mx.Context]):
    """The book's ``d2l.split_batch``: ``gluon.utils.split_and_load`` of both halves. ``X`` is
    what Gluon's loader gives (a normalised array) or d2lkaggle's numpy batch, normalised here
    with its loader's mean/std; numpy labels become int64 arrays."""
    devices = _devices(devices)
    if input_kind(X, mx.nd.NDArray, "mxnet") == LIBRARY:
        mean, std = batch_norm(X, "d2l.split_batch")
        X = to_tensor(X, mean, std, mx.cpu())
    if not isinstance(y, mx.nd.NDArray):
        y = mnp.array(labels_numpy(y), ctx=mx.cpu())
    return (gluon.utils.split_and_load(X, devices, even_split=False),
            gluon.utils.split_and_load(y, devices, even_split=False))


def train_batch_ch13(net: Block, X, y, loss, trainer, devices: Sequence[mx.Context] | None = None,
                     split_f=None):
    """The book's ``d2l.train_batch_ch13``: one ``Trainer`` step; returns (loss sum, correct).

    As in the book, the per-example losses are summed and ``trainer.step(batch_size)``
    divides the gradient by the batch size. ``X``: Gluon's array or d2lkaggle's numpy batch
    (see :func:`split_batch`).
    """
    X_shards, y_shards = (split_f or split_batch)(X, y, _devices(devices))
    with autograd.record():
        preds = [net(x) for x in X_shards]
        ls = [loss(p, t) for p, t in zip(preds, y_shards)]
    for l in ls:
        l.backward()
    trainer.step(len(y), ignore_stale_grad=True)
    loss_sum = sum(float(l.sum()) for l in ls)
    correct = sum(float((p.argmax(axis=1).astype("float32") == t.astype("float32")).sum())
                  for p, t in zip(preds, y_shards))
    return loss_sum, correct


def evaluate_accuracy_gpu(net: Block, data_iter, device: mx.Context | None = None) -> float:
    """The book's ``d2l.evaluate_accuracy_gpu(net, data_iter, device)`` (inference mode) on
    ``device``, by default the net's first context. ``data_iter``: Gluon's loader as the
    chapter builds it, or a d2lkaggle loader."""
    return evaluate_accuracy(net, data_iter,
                             _net_devices(net)[:1] if device is None else _devices(device))


def evaluate_accuracy_gpus(net: Block, data_iter, split_f=None) -> float:
    """The MXNet tab's ``d2l.evaluate_accuracy_gpus(net, data_iter, split_f)`` on every context
    of the net, as in the book (inference mode)."""
    return evaluate_accuracy(net, data_iter, _net_devices(net))
