"""Models in PyTorch: the book's ResNet-18, ResNet-34, the fine-tune net, the write-ups'
ELU CNN, EfficientNetV2 (torchvision's), the CIFAR-10 speed-run record's net (airbench94),
and the model table (``create_model``).

The architectures come from :mod:`d2lkaggle.models.table` (framework-free tables).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

from ..models import table


class Residual(nn.Module):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1, drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, 3, padding=1, stride=strides)
        self.bn1 = nn.BatchNorm2d(num_channels, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_channels, momentum=bn_momentum)
        self.conv3 = (nn.Conv2d(in_channels, num_channels, 1, stride=strides)
                      if use_1x1conv else None)
        # torchvision's "row" stochastic depth on the residual branch (no parameters)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.drop_path is not None:
            y = self.drop_path(y)
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class ResNet18(nn.Module):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(width, momentum=bn_momentum)
        stages: list[list[Residual]] = [[] for _ in table.RESNET18_STAGES]
        for b in table.resnet18_blocks(width, drop_path):
            stages[b.stage].append(Residual(b.in_channels, b.out_channels, b.shortcut, b.stride,
                                            b.drop_path, bn_momentum))
        for i, blocks in enumerate(stages):
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(stages[-1][-1].bn2.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64,
             drop_path: float = 0.0, bn_momentum: float = 0.1) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book).

    ``drop_path``: stochastic depth (torchvision's "row" mode; block ``i`` of
    8 drops its residual branch with probability ``drop_path·i/8``); 0 is the book's network.
    ``bn_momentum``: the BatchNorm running statistics' momentum (torch's convention; 0.1 is
    the book's).
    """
    return ResNet18(num_classes, in_channels, width, drop_path, bn_momentum)


class DropPathBasicBlock(torchvision.models.resnet.BasicBlock):
    """torchvision's BasicBlock with stochastic depth on the residual branch (set after build)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stochastic_depth: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out)
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


def resnet34(num_classes: int = 1000, drop_path: float = 0.0) -> nn.Module:
    """torchvision's ResNet-34 (v1), randomly initialised; ``drop_path`` as in :func:`resnet18`
    (over its 16 blocks)."""
    if not drop_path:
        return torchvision.models.resnet34(weights=None, num_classes=num_classes)
    net = torchvision.models.ResNet(DropPathBasicBlock, [3, 4, 6, 3], num_classes=num_classes)
    blocks = [m for m in net.modules() if isinstance(m, DropPathBasicBlock)]
    for m, spec in zip(blocks, table.resnet34_blocks(drop_path)):
        m.stochastic_depth = StochasticDepth(spec.drop_path, "row") if spec.drop_path else None
    return net


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
                 freeze: bool = True, arch: str = "resnet34") -> nn.Module:
    """The Dog Breed chapter's net: pretrained features + a new trainable head.

    ``arch="resnet34"``: ResNet-34 features + Linear→ReLU→Linear (``hidden`` units).
    ``arch="efficientnet_v2_s|m|l"``: EfficientNetV2 with a new ``num_classes`` classifier
    (``hidden`` unused). ``freeze=True`` trains only the head (the chapter); ``False`` trains
    everything (the EfficientNetV2 write-up's full fine-tuning).
    ``weights``: ``None`` or ``'none'`` (random backbone), ``"imagenet"`` (torchvision's ImageNet weights
    through its download cache) or a path to a ``.pth`` state_dict / neutral weight file.
    """
    weights = table.weights_choice(weights)   # 'none' as on the command line: random
    if table.check_finetune_arch(arch) != "resnet34":
        return _efficientnet(arch, num_classes, None, None, weights, freeze)
    from .weights import load_backbone
    net = FineTuneNet(num_classes, hidden=hidden, freeze=False)
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net


class CnnElu(nn.Module):
    """The CIFAR-10 MixUp write-up's CNN (:data:`d2lkaggle.models.table.CNN_ELU`): conv 16-32-pool-
    64-pool, each conv → ELU → BatchNorm; FC → ELU → Dropout → BatchNorm1d → classes.

    Unlike the write-up it returns logits (its ``log_softmax`` before ``CrossEntropyLoss``
    applied softmax twice) and flattens each example (its ``view(batch_size, -1)`` broke on a
    last partial batch).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        spec = table.CNN_ELU
        layers: list[nn.Module] = []
        prev = in_channels
        for kind, _, c in spec.layer_names():
            if kind == "conv":
                layers.append(nn.Conv2d(prev, c, spec.kernel, padding=spec.kernel // 2))
                prev = c
            elif kind == "elu":
                layers.append(nn.ELU(spec.elu_alpha))
            elif kind == "bn":
                layers.append(nn.BatchNorm2d(c))
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.layer = nn.Sequential(*layers)
        self.fc_layer = nn.Sequential(
            nn.Linear(spec.flat_features(image_size), spec.hidden), nn.ELU(spec.elu_alpha),
            nn.Dropout(dropout), nn.BatchNorm1d(spec.hidden), nn.Linear(spec.hidden, num_classes))
        for m in self.modules():   # He (Kaiming-normal, fan-in) weights, zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layer(torch.flatten(self.layer(x), 1))


def cnn_elu(num_classes: int, in_channels: int = 3, image_size: int = 32,
            dropout: float = 0.5) -> CnnElu:
    """The MixUp write-up's ELU + BatchNorm CNN (He init); ``image_size`` sets the first FC
    layer's inputs (64·(size/4)²: 4096 at the write-up's 32 px)."""
    return CnnElu(num_classes, in_channels, image_size, dropout)


class EfficientNetV2(torchvision.models.EfficientNet):
    """torchvision's EfficientNetV2-S/M/L (same modules and parameter names), plus ``freeze``.

    When frozen, ``features`` has ``requires_grad=False`` and stays in eval mode (BatchNorm
    statistics fixed, no stochastic depth); only ``classifier`` trains.
    """

    def __init__(self, arch: str, num_classes: int = 1000, stochastic_depth: float = 0.2,
                 dropout: float | None = None):
        from torchvision.models.efficientnet import _efficientnet_conf
        setting, last = _efficientnet_conf(arch)
        spec = table.EFFICIENTNET_V2[arch]
        table.stochastic_depth_rates(stochastic_depth, 1)   # checks the range
        super().__init__(setting, spec["dropout"] if dropout is None else dropout,
                         stochastic_depth_prob=stochastic_depth, num_classes=num_classes,
                         norm_layer=partial(nn.BatchNorm2d, eps=table.EFFNET_BN_EPS,
                                            momentum=table.EFFNET_BN_MOMENTUM),
                         last_channel=last)
        self.arch = arch
        self.frozen = False

    def freeze(self) -> None:
        self.frozen = True
        self.features.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "EfficientNetV2":
        super().train(mode)
        if self.frozen:
            self.features.eval()
        return self


def _efficientnet(arch: str, num_classes: int, stochastic_depth: float | None,
                  dropout: float | None, weights: str | None, freeze: bool) -> EfficientNetV2:
    weights = table.weights_choice(weights)
    from .weights import load_pretrained
    net = EfficientNetV2(arch, num_classes, 0.2 if stochastic_depth is None else stochastic_depth,
                         dropout)
    if weights is not None:
        load_pretrained(net, weights, arch, head="classifier.")
    if freeze:
        net.freeze()
    return net


def efficientnet_v2_s(num_classes: int = 1000, stochastic_depth: float = 0.2,
                      dropout: float | None = None, weights: str | None = None,
                      freeze: bool = False) -> EfficientNetV2:
    """EfficientNetV2-S (torchvision's; the CIFAR-100 write-up's model). ``stochastic_depth``:
    drop rate growing linearly over the blocks ("row" mode); ``dropout`` before the classifier
    (``None``: torchvision's 0.2); ``weights``: ``None``, ``"imagenet"`` or a file (another
    number of classes → a new classifier); ``freeze``: train only the classifier."""
    return _efficientnet("efficientnet_v2_s", num_classes, stochastic_depth, dropout, weights, freeze)


def efficientnet_v2_m(num_classes: int = 1000, stochastic_depth: float = 0.2,
                      dropout: float | None = None, weights: str | None = None,
                      freeze: bool = False) -> EfficientNetV2:
    """EfficientNetV2-M (torchvision's; dropout default 0.3); arguments as ``efficientnet_v2_s``."""
    return _efficientnet("efficientnet_v2_m", num_classes, stochastic_depth, dropout, weights, freeze)


def efficientnet_v2_l(num_classes: int = 1000, stochastic_depth: float = 0.2,
                      dropout: float | None = None, weights: str | None = None,
                      freeze: bool = False) -> EfficientNetV2:
    """EfficientNetV2-L (torchvision's; dropout default 0.4); arguments as ``efficientnet_v2_s``."""
    return _efficientnet("efficientnet_v2_l", num_classes, stochastic_depth, dropout, weights, freeze)


class ConvGroup(nn.Module):
    """airbench's conv group: conv → max-pool 2 → BatchNorm → GELU → conv → BatchNorm → GELU."""

    def __init__(self, cin: int, cout: int, momentum: float, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Airbench94(nn.Module):
    """The CIFAR-10 speed-run record's net (:class:`d2lkaggle.models.table.AirbenchSpec`)."""

    def __init__(self, num_classes: int = 10, width: int = 64, bn_momentum: float | None = None):
        super().__init__()
        spec = table.AIRBENCH94.with_width(width)
        momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
        # modules are made in airbench's order, so one torch seed gives its initial weights
        self.whiten = nn.Conv2d(3, spec.whiten_width, spec.whiten_kernel, bias=True)
        for g in table.airbench_layers(spec):
            self.add_module(f"block{g.index}", ConvGroup(g.in_channels, g.out_channels,
                                                         momentum, spec.bn_eps))
        self.head = nn.Linear(spec.widths[-1], num_classes, bias=False)
        self.scale = spec.scale
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):   # airbench's Conv.reset_parameters
                    if m.bias is not None:
                        m.bias.zero_()
                    nn.init.dirac_(m.weight[:m.weight.size(1)])
        for name, p in self.named_parameters():
            p.requires_grad_(not table.airbench_frozen(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(torch.flatten(F.max_pool2d(x, 3), 1)) * self.scale


def airbench94(num_classes: int = 10, width: int = 64, bn_momentum: float | None = None) -> Airbench94:
    """The CIFAR-10 speed-run record's net (airbench94; ``width`` 64: its 64/256/256 channels,
    other widths scale all three). ``bn_momentum``: torch's convention (None: the record's 0.4).
    Its stem is whitened from the training images by the recipe (:mod:`d2lkaggle.models.whitening`)."""
    return Airbench94(num_classes, width, bn_momentum)


def list_models() -> list[str]:
    """Names ``create_model`` accepts (the core's :data:`d2lkaggle.models.table.MODEL_NAMES`)."""
    return list(table.MODEL_NAMES)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Model ``name`` of the table with ``num_classes`` outputs (``kwargs`` go to its builder);
    an unknown name or keyword raises ``ValueError`` listing the valid ones."""
    return table.create(globals(), name, num_classes, **kwargs)
