"""Models of the two chapters in PaddlePaddle: the book's ResNet-18, ResNet-34 (torchvision's
v1 architecture) and the fine-tune net.

BatchNorm momentum 0.9 here is torch's 0.1; epsilon 1e-5 in both.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F


def init_like_torch(net: nn.Layer) -> nn.Layer:
    """PyTorch's default initialisation for every Conv2D/Linear: weights and biases uniform in
    ±1/sqrt(fan_in).

    Paddle's own default (He-normal convolutions) starts with weights ~2.4x larger; behind
    BatchNorm that shrinks the effective learning rate ~6x, so one lr would not mean the
    same training as in the other backends.
    """
    weight_init = nn.initializer.KaimingUniform(negative_slope=math.sqrt(5), nonlinearity="leaky_relu")
    for layer in net.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Linear)):
            weight_init(layer.weight)
            if layer.bias is not None:
                shape = layer.weight.shape
                fan_in = int(np.prod(shape[1:])) if isinstance(layer, nn.Conv2D) else int(shape[0])
                bound = 1.0 / math.sqrt(fan_in)
                nn.initializer.Uniform(-bound, bound)(layer.bias)
    return net


def _bn(c: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(c, momentum=0.9, epsilon=1e-5)


class Residual(nn.Layer):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, num_channels, 3, stride=strides, padding=1)
        self.bn1 = _bn(num_channels)
        self.conv2 = nn.Conv2D(num_channels, num_channels, 3, padding=1)
        self.bn2 = _bn(num_channels)
        self.conv3 = (nn.Conv2D(in_channels, num_channels, 1, stride=strides)
                      if use_1x1conv else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class ResNet18(nn.Layer):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, width, 3, stride=1, padding=1)
        self.bn1 = _bn(width)
        prev = width
        for i, c in enumerate([width, width * 2, width * 4, width * 8]):
            first = Residual(prev, c) if i == 0 else Residual(prev, c, True, 2)
            setattr(self, f"layer{i + 1}", nn.Sequential(first, Residual(c, c)))
            prev = c
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(paddle.mean(x, axis=[2, 3]))


class BasicBlock(nn.Layer):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn (no biases) + identity or 1×1 downsample."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2D(channels, channels, 3, padding=1, bias_attr=False)
        self.bn2 = _bn(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2D(in_channels, channels, 1, stride=stride, bias_attr=False), _bn(channels))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(y + x)


class ResNet34(nn.Layer):
    """torchvision's ResNet-34 (v1); without ``fc`` (``num_classes=None``) it returns the
    pooled 512 features."""

    def __init__(self, num_classes: int | None = 1000):
        super().__init__()
        self.conv1 = nn.Conv2D(3, 64, 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        prev = 64
        for i, (c, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(prev, c, 2 if (j == 0 and i > 0) else 1))
                prev = c
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, num_classes) if num_classes else None

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return paddle.mean(x, axis=[2, 3])

    def forward(self, x):
        x = self.features(x)
        return self.fc(x) if self.fc is not None else x


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book)."""
    return init_like_torch(ResNet18(num_classes, in_channels, width))


def resnet34(num_classes: int = 1000) -> ResNet34:
    """torchvision's ResNet-34 (v1) architecture, randomly initialised."""
    return init_like_torch(ResNet34(num_classes))


class FineTuneNet(ResNet34):
    """ResNet-34 backbone (pooled 512 features) + a new head Linear→ReLU→Linear.

    When ``frozen``, the backbone's parameters have ``stop_gradient=True`` and the backbone
    stays in eval mode (BatchNorm uses and keeps its running statistics); only ``head`` trains.
    """

    def __init__(self, num_classes: int, hidden: int = 256, freeze: bool = True):
        super().__init__(None)
        self.head = nn.Sequential(nn.Linear(512, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.frozen = False
        if freeze:
            self.freeze()

    def backbone_layers(self):
        return [layer for name, layer in self.named_children() if name != "head"]

    def freeze(self) -> None:
        self.frozen = True
        for layer in self.backbone_layers():
            for p in layer.parameters():
                p.stop_gradient = True
        self.train() if self.training else self.eval()

    def train(self):
        super().train()
        if self.frozen:
            for layer in self.backbone_layers():
                layer.eval()
        return self

    def forward(self, x):
        if self.frozen:
            with paddle.no_grad():
                feats = self.features(x)
            return self.head(feats.detach())
        return self.head(self.features(x))


def finetune_net(num_classes: int, weights: str | None = None, hidden: int = 256,
                 freeze: bool = True) -> FineTuneNet:
    """The Dog Breed chapter's net: pretrained ResNet-34 features + a small trainable head.

    ``weights``: ``None`` (random backbone), ``"imagenet"`` or a path to a neutral weight file
    (``.safetensors``/``.npz``) or a torch ``.pth`` state_dict (read with torch when installed).
    """
    from .weights import load_backbone
    net = init_like_torch(FineTuneNet(num_classes, hidden=hidden, freeze=False))
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net
