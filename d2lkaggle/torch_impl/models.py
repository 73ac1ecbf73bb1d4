"""Models of the two chapters in PyTorch: the book's ResNet-18, ResNet-34, the fine-tune net."""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F


class Residual(nn.Module):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, 3, padding=1, stride=strides)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.conv3 = (nn.Conv2d(in_channels, num_channels, 1, stride=strides)
                      if use_1x1conv else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class ResNet18(nn.Module):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        chans = [width, width * 2, width * 4, width * 8]
        prev = width
        for i, c in enumerate(chans):
            first = Residual(prev, c) if i == 0 else Residual(prev, c, use_1x1conv=True, strides=2)
            self.add_module(f"layer{i + 1}", nn.Sequential(first, Residual(c, c)))
            prev = c
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book)."""
    return ResNet18(num_classes, in_channels, width)


def resnet34(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-34 (v1), randomly initialised."""
    return torchvision.models.resnet34(weights=None, num_classes=num_classes)


class FineTuneNet(torchvision.models.ResNet):
    """ResNet-34 backbone (pooled 512 features) + a new head Linear→ReLU→Linear.

    When ``frozen``, the backbone stays in eval mode (its BatchNorm statistics never move)
    and has ``requires_grad=False``; only ``head`` is trained.
    """

    def __init__(self, num_classes: int, hidden: int = 256, freeze: bool = True):
        super().__init__(torchvision.models.resnet.BasicBlock, [3, 4, 6, 3])
        self.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(512, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.frozen = False
        if freeze:
            self.freeze()

    def backbone_modules(self):
        return [m for name, m in self.named_children() if name != "head"]

    def freeze(self) -> None:
        self.frozen = True
        for m in self.backbone_modules():
            m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "FineTuneNet":
        super().train(mode)
        if self.frozen:
            for m in self.backbone_modules():
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._forward_impl(x))


def finetune_net(num_classes: int, weights: str | None = None, hidden: int = 256,
                 freeze: bool = True) -> FineTuneNet:
    """The Dog Breed chapter's net: pretrained ResNet-34 features + a small trainable head.

    ``weights``: ``None`` (random backbone), ``"imagenet"`` (torchvision's ImageNet weights
    through its download cache) or a path to a ``.pth`` state_dict / neutral weight file.
    """
    from .weights import load_backbone
    net = FineTuneNet(num_classes, hidden=hidden, freeze=False)
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net
