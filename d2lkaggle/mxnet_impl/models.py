"""Models of the two chapters in MXNet Gluon: the book's ResNet-18, ResNet-34 (torchvision's
v1 architecture, not Gluon's ``resnet34_v2``) and the fine-tune net.

Every Conv/BatchNorm/Dense is given its input size, so parameters exist right after
``initialize`` (with deferred shapes BatchNorm skips its first running-statistics update).
BatchNorm momentum 0.9 here is torch's 0.1; epsilon 1e-5 in both.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd, init
from mxnet.gluon import nn


def _bn(c: int) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, in_channels=c)


class Residual(nn.HybridBlock):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2D(num_channels, 3, strides, 1, in_channels=in_channels)
        self.bn1 = _bn(num_channels)
        self.conv2 = nn.Conv2D(num_channels, 3, 1, 1, in_channels=num_channels)
        self.bn2 = _bn(num_channels)
        self.conv3 = (nn.Conv2D(num_channels, 1, strides, in_channels=in_channels)
                      if use_1x1conv else None)

    def hybrid_forward(self, F, x):
        y = F.npx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.npx.relu(y + x)


class ResNet18(nn.HybridBlock):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2D(width, 3, 1, 1, in_channels=in_channels)
        self.bn1 = _bn(width)
        prev = width
        for i, c in enumerate([width, width * 2, width * 4, width * 8]):
            stage = nn.HybridSequential()
            stage.add(Residual(prev, c) if i == 0 else Residual(prev, c, True, 2), Residual(c, c))
            setattr(self, f"layer{i + 1}", stage)
            prev = c
        self.fc = nn.Dense(num_classes, in_units=prev)

    def hybrid_forward(self, F, x):
        x = F.npx.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.np.mean(x, axis=(2, 3)))


class BasicBlock(nn.HybridBlock):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn (no biases) + identity or 1×1 downsample."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2D(channels, 3, stride, 1, use_bias=False, in_channels=in_channels)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2D(channels, 3, 1, 1, use_bias=False, in_channels=channels)
        self.bn2 = _bn(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.HybridSequential()
            self.downsample.add(nn.Conv2D(channels, 1, stride, use_bias=False, in_channels=in_channels),
                                _bn(channels))

    def hybrid_forward(self, F, x):
        y = F.npx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.npx.relu(y + x)


class ResNet34Features(nn.HybridBlock):
    """torchvision's ResNet-34 up to the pooled 512 features; ``fc`` when ``num_classes``."""

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2D(64, 7, 2, 3, use_bias=False, in_channels=3)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        prev = 64
        for i, (c, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            stage = nn.HybridSequential()
            for j in range(n):
                stage.add(BasicBlock(prev, c, 2 if (j == 0 and i > 0) else 1))
                prev = c
            setattr(self, f"layer{i + 1}", stage)
        self.fc = nn.Dense(num_classes, in_units=512) if num_classes else None

    def hybrid_forward(self, F, x):
        x = self.maxpool(F.npx.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.np.mean(x, axis=(2, 3))
        return self.fc(x) if self.fc is not None else x


def _ready(net: nn.Block) -> nn.Block:
    """Initialise like PyTorch's defaults: Conv/Dense weights and biases uniform in
    ±1/sqrt(fan_in), BatchNorm gamma 1, beta 0 (parameters on the CPU until a step moves them).

    The MXNet tab uses ``init.Xavier()`` (fan average, magnitude 3); one initialisation in
    every backend lets one lr/wd recipe mean the same training everywhere.
    """
    # Xavier(uniform, fan_in, magnitude 1) is exactly torch's kaiming_uniform(a=sqrt(5)) bound
    net.initialize(init.Xavier(rnd_type="uniform", factor_type="in", magnitude=1), ctx=mx.cpu())
    for block in _blocks(net):
        if isinstance(block, (nn.Conv2D, nn.Dense)) and block.bias is not None:
            fan_in = int(np.prod(block.weight.shape[1:]))
            block.bias.set_data(mx.np.random.uniform(-1, 1, block.bias.shape) / np.sqrt(fan_in))
    return net


def _blocks(block: nn.Block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book)."""
    return _ready(ResNet18(num_classes, in_channels, width))


def resnet34(num_classes: int = 1000) -> ResNet34Features:
    """torchvision's ResNet-34 (v1) architecture, randomly initialised."""
    return _ready(ResNet34Features(num_classes))


class FineTuneNet(nn.Block):
    """ResNet-34 backbone (pooled 512 features) + a new head Dense→ReLU→Dense.

    When ``frozen``, the backbone's parameters get no gradient (``grad_req='null'``) and it
    always runs in inference mode, so its BatchNorm uses and keeps its running statistics;
    only ``head`` is trained. The backbone and head are hybridized separately.
    """

    def __init__(self, num_classes: int, hidden: int = 256, freeze: bool = True):
        super().__init__()
        self.backbone = ResNet34Features(None)
        self.head = nn.HybridSequential()
        self.head.add(nn.Dense(hidden, in_units=512), nn.Activation("relu"),
                      nn.Dense(num_classes, in_units=hidden))
        self.frozen = False
        if freeze:
            self.freeze()

    def freeze(self) -> None:
        self.frozen = True
        self.backbone.collect_params().setattr("grad_req", "null")

    def hybridize(self, active: bool = True, **kwargs) -> None:
        self.backbone.hybridize(active, **kwargs)
        self.head.hybridize(active, **kwargs)

    @property
    def _active(self) -> bool:
        # "hybridized", as a HybridBlock's ``_active`` says: both parts are
        return self.backbone._active and self.head._active

    def forward(self, x):
        if self.frozen:
            with autograd.predict_mode():
                feats = self.backbone(x)
            feats = feats.detach()
        else:
            feats = self.backbone(x)
        return self.head(feats)


def finetune_net(num_classes: int, weights: str | None = None, hidden: int = 256,
                 freeze: bool = True) -> FineTuneNet:
    """The Dog Breed chapter's net: pretrained ResNet-34 features + a small trainable head.

    ``weights``: ``None`` (random backbone), ``"imagenet"`` or a path to a neutral weight file
    (``.safetensors``/``.npz``) or a torch ``.pth`` state_dict (read with torch when installed).
    """
    from .weights import load_backbone
    net = _ready(FineTuneNet(num_classes, hidden=hidden, freeze=False))
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net
