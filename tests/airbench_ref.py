"""The speed-run record's own code (``airbench`` 0.1.8, a test dependency) run on the CPU.

airbench builds its net in half precision on the GPU and times itself with CUDA events; here
its ``.cuda()``/``.half()`` are identities, its events no-ops, its loaders read a ``train.pt`` /
``test.pt`` the test writes and hold float32 images, and nothing else of its code changes:
``make_net94``, ``train`` (optimizer groups, schedule, lookahead, whitening bias freeze),
``init_whitening_conv`` and ``infer`` run as published.
"""
from __future__ import annotations

import contextlib
import os
from unittest import mock

import numpy as np
import torch
from torch import nn

import airbench.lib_airbench94 as lib94
import airbench.utils as abu

MEAN, STD = abu.CIFAR_MEAN.tolist(), abu.CIFAR_STD.tolist()


def images(n: int, seed: int = 0) -> np.ndarray:
    """N×32×32×3 uint8 images with structure at several scales (a whitening layer needs
    distinct eigenvalues: white noise alone would give a degenerate patch covariance)."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, 8, 8, 3)) @ np.array([[1.0, 0.6, 0.3], [0.2, 1.0, 0.5],
                                                        [0.1, 0.3, 1.0]])
    x = np.kron(coarse, np.ones((1, 4, 4, 1))) + 0.4 * rng.normal(size=(n, 32, 32, 3))
    x += np.linspace(-0.5, 0.5, 32)[None, None, :, None] * rng.normal(size=(n, 1, 1, 3))
    return np.clip(128 + 40 * x, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def on_cpu():
    """airbench's GPU-only calls made harmless (the net and tensors stay float32 on the CPU)."""
    class Event:
        def __init__(self, *a, **k):
            pass

        def record(self):
            pass

        def elapsed_time(self, other):
            return 0.0

    with mock.patch.object(nn.Module, "cuda", lambda self, *a, **k: self), \
            mock.patch.object(nn.Module, "half", lambda self: self), \
            mock.patch.object(torch.cuda, "Event", Event), \
            mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None):
        yield


def make_net(seed: int) -> nn.Module:
    """airbench94's ``make_net94()`` after ``torch.manual_seed(seed)``, float32 on the CPU."""
    torch.manual_seed(seed)
    with on_cpu():
        net = lib94.make_net94()
    return net.float().to(memory_format=torch.contiguous_format)


def loader(folder: str, x: np.ndarray, y: np.ndarray, *, train: bool, batch_size: int,
           aug: dict | None = None, **kw) -> abu.CifarLoader:
    """airbench's ``CifarLoader`` over ``x``/``y`` (written as its ``train.pt``/``test.pt``),
    images in float32 (airbench's own path casts them to half precision)."""
    os.makedirs(folder, exist_ok=True)
    torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y.astype(np.int64)),
                "classes": [str(i) for i in range(10)]},
               os.path.join(folder, "train.pt" if train else "test.pt"))
    ld = abu.CifarLoader(folder, train=train, batch_size=batch_size, aug=aug, gpu="cpu", **kw)
    ld.images = (torch.from_numpy(x).float() / 255).permute(0, 3, 1, 2).contiguous()
    return ld


def train(train_loader: abu.CifarLoader, net: nn.Module, epochs: float, *,
          whitening: np.ndarray | None = None, lookahead: bool = True, steps: list | None = None,
          **hyp) -> nn.Module:
    """airbench's ``train`` (its 94 recipe's hyperparameters unless ``hyp`` overrides them) on
    ``net``. ``whitening``: the filters its ``init_whitening_conv`` writes (to start both sides
    alike); ``lookahead=False`` leaves its weight averaging out; ``steps`` collects the weights
    after every optimizer step."""
    h = dict(lib94.hyp["opt"])
    args = dict(label_smoothing=h["label_smoothing"], learning_rate=h["lr"],
                bias_scaler=h["bias_scaler"], momentum=h["momentum"],
                weight_decay=h["weight_decay"], whiten_bias_epochs=h["whiten_bias_epochs"],
                tta_level=0)
    args.update(hyp)
    patches = [mock.patch.object(abu, "CifarLoader", lambda *a, **k: None)]   # its test set
    if whitening is not None:
        # written before airbench's LookaheadState copies the net, as the library's average
        # starts from the whitened net (docs/airbench.md: airbench copies the random filters)
        with torch.no_grad():
            net[0].weight.copy_(torch.from_numpy(whitening))

        def init(layer, train_set, eps=5e-4):
            layer.weight.data.copy_(torch.from_numpy(whitening))
        patches.append(mock.patch.object(abu, "init_whitening_conv", init))
    if not lookahead:
        class NoLookahead:
            def __init__(self, net):
                pass

            def update(self, net, decay):
                pass
        patches.append(mock.patch.object(abu, "LookaheadState", NoLookahead))
    if steps is not None:
        real_step = torch.optim.SGD.step

        def step(self, *a, **k):
            out = real_step(self, *a, **k)
            steps.append({k: v.detach().clone() for k, v in net.state_dict().items()})
            return out
        patches.append(mock.patch.object(torch.optim.SGD, "step", step))
    with on_cpu(), contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        return abu.train(train_loader, epochs, make_net=lambda: net, run=0, verbose=False,
                         **args)
