"""``--cache-features`` in MXNet: the frozen backbone's features and the head trained on them.

The core (:mod:`d2lkaggle.train.features`) decides when features may be cached, keys and stores
them; this file only runs the framework parts.
"""
from __future__ import annotations

from typing import Any, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet import np as mnp
from mxnet.gluon import Block

from ..train import features, loop
from .data import to_tensor
from .device import try_all_gpus
from .train import MXNetStep
from .weights import get_state


def _check(net: Any) -> Block:
    return features.frozen_head_net(net, Block)


def backbone_state(net: Any) -> dict[str, np.ndarray]:
    """The frozen backbone's arrays (every state entry outside ``head.``), for the cache key."""
    return features.backbone_arrays(get_state(_check(net)))


def uses_amp(net: Any, amp: Any) -> bool:
    """Whether ``amp`` means reduced precision here: never (this backend trains in float32)."""
    _check(net)
    return False


def backbone_features(net: Any, x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                      amp: Any = False) -> np.ndarray:
    """The pooled backbone features (float32 N×512) of one uint8 N×H×W×3 batch (inference mode)."""
    m = _check(net)
    ctx = m.backbone.collect_params().list_ctx()[0] if m.backbone.collect_params() else mx.cpu()
    with autograd.predict_mode():
        return m.backbone(to_tensor(x, mean, std, ctx)).asnumpy().astype(np.float32, copy=False)


class FeatureStep(MXNetStep):
    """An :class:`MXNetStep` whose forward pass is the head alone, on feature batches (N×D).

    Built on the whole net: its optimizer holds exactly the parameters (and names) training
    on images would hold, and its checkpoints are the whole net's.
    """

    def __init__(self, net: Block, **kwargs: Any):
        # the head alone is a few Dense layers on cached float32 features: float32 (uses_amp)
        super().__init__(_check(net), **dict(kwargs, amp=False))
        self.full_net = self.net
        self.net = self.full_net.head

    def _shards(self, x: np.ndarray, y: np.ndarray | None = None):
        parts = (np.array_split(np.arange(len(x)), len(self.devices)) if len(self.devices) > 1
                 else [np.arange(len(x))])
        return [(mnp.array(np.asarray(x)[p], ctx=d, dtype=self.dtype),
                 None if y is None else self._target(np.asarray(y)[p], d))
                for p, d in zip(parts, self.devices) if len(p)]

    def state_dict(self) -> dict[str, np.ndarray]:
        head, self.net = self.net, self.full_net
        try:
            return super().state_dict()
        finally:
            self.net = head

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        head, self.net = self.net, self.full_net
        try:
            super().load_state_dict(state)
        finally:
            self.net = head


def train_head(net: Block, train_feats, valid_feats, num_epochs: int, lr: float, wd: float,
               devices: Sequence[mx.Context] | None = None, lr_period: int | None = None,
               lr_decay: float = 1.0, **kwargs: Any) -> loop.History:
    """The chapters' ``train`` on feature batches (``d2lkaggle.train.features.FeatureLoader``):
    updates ``net``'s head in place; arguments as :func:`d2lkaggle.mxnet_impl.train`."""
    return loop.train_net(FeatureStep, net, train_feats, valid_feats, num_epochs, lr, wd,
                          devices or try_all_gpus(), lr_period, lr_decay, **kwargs)
