"""``--cache-features`` in Paddle: the frozen backbone's features and the head trained on them.

The core (:mod:`d2lkaggle.train.features`) decides when features may be cached, keys and stores
them; this file only runs the framework parts.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import paddle
from paddle import nn

from ..train import features, loop
from ..train import optim as core_optim
from .data import to_labels, to_tensor
from .device import try_all_gpus
from .train import PaddleStep, _cross_entropy
from .weights import get_state


def _check(net: Any) -> nn.Layer:
    return features.frozen_head_net(net, nn.Layer)


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
    m.eval()
    with paddle.no_grad():
        return m.features(to_tensor(x, mean, std)).numpy().astype(np.float32, copy=False)


class FeatureStep(PaddleStep):
    """A :class:`PaddleStep` whose forward pass is the head alone, on feature batches (N×D).

    Built on the whole net: its optimizer holds exactly the parameters (and names) training
    on images would hold, and its checkpoints are the whole net's.
    """

    def __init__(self, net: nn.Layer, **kwargs: Any):
        super().__init__(_check(net), **kwargs)
        self.head = self.net.head

    def _features(self, x: np.ndarray) -> paddle.Tensor:
        place = paddle.CPUPlace() if self.device in (None, "cpu") else self.device
        return paddle.to_tensor(np.ascontiguousarray(x, dtype=self.dtype), place=place)

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        """One optimizer step of the head on a feature batch (batch-mean cross-entropy)."""
        soft, hard = core_optim.split_targets(y, len(x))
        if soft is not None:
            raise ValueError("cached features train on class labels, not soft targets")
        self.head.train()
        out = self.head(self._features(x))
        Y = to_labels(hard, self.device)
        loss = _cross_entropy(out, Y).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        n = len(hard)
        return float(loss) * n, int((out.argmax(axis=1) == Y).astype("int64").sum()), n

    def _logits(self, x: np.ndarray) -> paddle.Tensor:
        self.head.eval()
        with paddle.no_grad():
            return self.head(self._features(x))


def train_head(net: nn.Layer, train_feats, valid_feats, num_epochs: int, lr: float, wd: float,
               devices: Sequence | None = None, lr_period: int | None = None,
               lr_decay: float = 1.0, **kwargs: Any) -> loop.History:
    """The chapters' ``train`` on feature batches (``d2lkaggle.train.features.FeatureLoader``):
    updates ``net``'s head in place; arguments as :func:`d2lkaggle.paddle_impl.train`."""
    return loop.train_net(FeatureStep, net, train_feats, valid_feats, num_epochs, lr, wd,
                          devices or try_all_gpus(), lr_period, lr_decay, **kwargs)
