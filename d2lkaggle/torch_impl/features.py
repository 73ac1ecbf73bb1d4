"""``--cache-features`` in PyTorch: the frozen backbone's features and the head trained on them.

The core (:mod:`d2lkaggle.train.features`) decides when features may be cached, keys and stores
them; this file only runs the framework parts.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..train import features, loop
from .device import SUPPORTS_BF16, try_all_gpus
from .train import TorchStep, _cuda_bf16, autocast_dtype
from .weights import _module, get_state


def _check(net: Any) -> nn.Module:
    return features.frozen_head_net(_module(net), nn.Module)


def backbone_state(net: Any) -> dict[str, np.ndarray]:
    """The frozen backbone's arrays (every state entry outside ``head.``), for the cache key."""
    return features.backbone_arrays(get_state(_check(net)))


def uses_amp(net: Any, amp: Any) -> bool:
    """Whether ``amp`` ("auto", True, False) means bf16 autocast for ``net`` here."""
    device = next(_check(net).parameters()).device
    return autocast_dtype(device.type, amp, SUPPORTS_BF16, _cuda_bf16()) is not None


@torch.no_grad()
def backbone_features(net: Any, x: np.ndarray, mean: Sequence[float], std: Sequence[float],
                      amp: Any = False) -> np.ndarray:
    """The pooled backbone features (float32 N×512) of one uint8 N×H×W×3 batch (inference mode)."""
    m = _check(net)
    step = TorchStep(m, mean=mean, std=std, amp=amp, devices=[next(m.parameters()).device])
    m.eval()
    with step._autocast():
        return m._forward_impl(step._inputs(x)).float().cpu().numpy()


class FeatureStep(TorchStep):
    """A :class:`TorchStep` whose forward pass is the head alone, on feature batches (N×D).

    It is built on the whole net, so its optimizer holds exactly the parameters (and names)
    training on images would hold, and its checkpoints are the whole net's.
    """

    def __init__(self, net: nn.Module, **kwargs: Any):
        super().__init__(_check(net), **kwargs)
        self.model = self.eval_model = self.net.head
        self.channels_last = False

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=self.dtype)).to(self.device)


def train_head(net: nn.Module, train_feats, valid_feats, num_epochs: int, lr: float, wd: float,
               devices: Sequence[torch.device] | None = None, lr_period: int | None = None,
               lr_decay: float = 1.0, **kwargs: Any) -> loop.History:
    """The chapters' ``train`` on feature batches (``d2lkaggle.train.features.FeatureLoader``):
    updates ``net``'s head in place; arguments as :func:`d2lkaggle.torch_impl.train`."""
    return loop.train_net(FeatureStep, net, train_feats, valid_feats, num_epochs, lr, wd,
                          devices or try_all_gpus(), lr_period, lr_decay, **kwargs)
