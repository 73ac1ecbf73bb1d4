"""Models in PaddlePaddle: the book's ResNet-18, ResNet-34 (torchvision's v1 architecture),
the fine-tune net, the write-ups' ELU CNN and EfficientNetV2 (torchvision's architecture and
parameter names, built from the core table), the CIFAR-10 speed-run record's net
(airbench94), and the model table (``create_model``).

BatchNorm momentum 0.9 here is torch's 0.1 (Paddle's momentum is the weight of the OLD
statistics: 1 − torch's); epsilon 1e-5, EfficientNetV2's 1e-3.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F

from ..models import table


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


def _bn(c: int, eps: float = 1e-5, torch_momentum: float = 0.1) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(c, momentum=1.0 - torch_momentum, epsilon=eps)


class StochasticDepth(nn.Layer):
    """torchvision's ``StochasticDepth(p, "row")``: in training each example's input is zeroed
    with probability ``p`` and the kept ones scaled by ``1/(1-p)``; identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        # one Bernoulli draw per example (axis 0), broadcast over C, H, W; upscale in training
        return F.dropout(x, self.p, axis=0, training=True, mode="upscale_in_train")


class Residual(nn.Layer):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1, drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, num_channels, 3, stride=strides, padding=1)
        self.bn1 = _bn(num_channels, torch_momentum=bn_momentum)
        self.conv2 = nn.Conv2D(num_channels, num_channels, 3, padding=1)
        self.bn2 = _bn(num_channels, torch_momentum=bn_momentum)
        self.conv3 = (nn.Conv2D(in_channels, num_channels, 1, stride=strides)
                      if use_1x1conv else None)
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.drop_path is not None:
            y = self.drop_path(y)
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class ResNet18(nn.Layer):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, width, 3, stride=1, padding=1)
        self.bn1 = _bn(width, torch_momentum=bn_momentum)
        stages: list[list[Residual]] = [[] for _ in table.RESNET18_STAGES]
        for b in table.resnet18_blocks(width, drop_path):
            stages[b.stage].append(Residual(b.in_channels, b.out_channels, b.shortcut, b.stride,
                                            b.drop_path, bn_momentum))
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(width * table.RESNET18_STAGES[-1].channels, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(paddle.mean(x, axis=[2, 3]))


class BasicBlock(nn.Layer):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn (no biases) + identity or 1×1 downsample."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2D(channels, channels, 3, padding=1, bias_attr=False)
        self.bn2 = _bn(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2D(in_channels, channels, 1, stride=stride, bias_attr=False), _bn(channels))
        self.stochastic_depth = StochasticDepth(drop_path) if drop_path > 0 else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.stochastic_depth is not None:
            y = self.stochastic_depth(y)
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(y + x)


class ResNet34(nn.Layer):
    """torchvision's ResNet-34 (v1); without ``fc`` (``num_classes=None``) it returns the
    pooled 512 features."""

    def __init__(self, num_classes: int | None = 1000, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2D(3, 64, 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        stages: list[list[BasicBlock]] = [[] for _ in table.RESNET34_STAGES]
        for b in table.resnet34_blocks(drop_path):
            stages[b.stage].append(BasicBlock(b.in_channels, b.out_channels, b.stride, b.drop_path))
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, num_classes) if num_classes else None

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return paddle.mean(x, axis=[2, 3])

    def forward(self, x):
        x = self.features(x)
        return self.fc(x) if self.fc is not None else x


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64,
             drop_path: float = 0.0, bn_momentum: float = 0.1) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book).

    ``drop_path``: stochastic depth (torchvision's "row" mode; block ``i`` of
    8 drops its residual branch with probability ``drop_path·i/8``); 0 is the book's network.
    ``bn_momentum``: the BatchNorm running statistics' momentum (torch's convention; 0.1 is
    the book's).
    """
    return init_like_torch(ResNet18(num_classes, in_channels, width, drop_path, bn_momentum))


def resnet34(num_classes: int = 1000, drop_path: float = 0.0) -> ResNet34:
    """torchvision's ResNet-34 (v1), randomly initialised; ``drop_path`` as in :func:`resnet18`
    (over its 16 blocks)."""
    return init_like_torch(ResNet34(num_classes, drop_path))


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
                 freeze: bool = True, arch: str = "resnet34") -> nn.Layer:
    """The Dog Breed chapter's net: pretrained features + a new trainable head.

    ``arch="resnet34"``: ResNet-34 features + Linear→ReLU→Linear (``hidden`` units).
    ``arch="efficientnet_v2_s|m|l"``: EfficientNetV2 with a new ``num_classes`` classifier
    (``hidden`` unused). ``freeze=True`` trains only the head (the chapter); ``False`` trains
    everything (the EfficientNetV2 write-up's full fine-tuning).
    ``weights``: ``None`` or ``'none'`` (random backbone), ``"imagenet"`` (torchvision's file from torch's
    cache) or a path to a neutral weight file (``.safetensors``/``.npz``) or a torch ``.pth``
    state_dict (read with torch when installed).
    """
    weights = table.weights_choice(weights)   # 'none' as on the command line: random
    if table.check_finetune_arch(arch) != "resnet34":
        return _efficientnet(arch, num_classes, None, None, weights, freeze)
    from .weights import load_backbone
    net = init_like_torch(FineTuneNet(num_classes, hidden=hidden, freeze=False))
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net


def _he_normal_zero_bias(net: nn.Layer) -> nn.Layer:
    # Kaiming-normal (fan-in, gain √2) weights and zero biases; Paddle's Linear weight is
    # [in, out], so its fan-in is shape[0], which is what KaimingNormal reads
    for layer in net.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Linear)):
            nn.initializer.KaimingNormal(nonlinearity="relu")(layer.weight)
            nn.initializer.Constant(0.0)(layer.bias)
    return net


class CnnElu(nn.Layer):
    """The CIFAR-10 MixUp write-up's CNN (:data:`d2lkaggle.models.table.CNN_ELU`): conv 16-32-pool-
    64-pool, each conv → ELU → BatchNorm; FC → ELU → Dropout → BatchNorm1d → classes.

    Returns logits and flattens each example (the write-up's two bugs are not copied).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        spec = table.CNN_ELU
        layers, prev = [], in_channels
        for kind, _, c in spec.layer_names():
            if kind == "conv":
                layers.append(nn.Conv2D(prev, c, spec.kernel, padding=spec.kernel // 2))
                prev = c
            elif kind == "elu":
                layers.append(nn.ELU(spec.elu_alpha))
            elif kind == "bn":
                layers.append(_bn(c))
            else:
                layers.append(nn.MaxPool2D(2, 2))
        self.layer = nn.Sequential(*layers)
        self.fc_layer = nn.Sequential(
            nn.Linear(spec.flat_features(image_size), spec.hidden), nn.ELU(spec.elu_alpha),
            nn.Dropout(dropout), nn.BatchNorm1D(spec.hidden, momentum=0.9, epsilon=1e-5),
            nn.Linear(spec.hidden, num_classes))

    def forward(self, x):
        return self.fc_layer(paddle.flatten(self.layer(x), 1))


def cnn_elu(num_classes: int, in_channels: int = 3, image_size: int = 32,
            dropout: float = 0.5) -> CnnElu:
    """The MixUp write-up's ELU + BatchNorm CNN (He init); ``image_size`` sets the first FC
    layer's inputs (64·(size/4)²: 4096 at the write-up's 32 px)."""
    return _he_normal_zero_bias(CnnElu(num_classes, in_channels, image_size, dropout))


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` (conv without bias, BatchNorm, SiLU)."""
    layers = [nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                        bias_attr=False),
              _bn(cout, table.EFFNET_BN_EPS, table.EFFNET_BN_MOMENTUM)]
    if act:
        layers.append(nn.Silu())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Layer):
    """torchvision's ``SqueezeExcitation``: pool → 1×1 conv ``fc1`` → SiLU → ``fc2`` → sigmoid."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2D(channels, squeeze, 1)
        self.fc2 = nn.Conv2D(squeeze, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return F.sigmoid(self.fc2(F.silu(self.fc1(s)))) * x


class MBConv(nn.Layer):
    """One EfficientNetV2 block from a core :class:`d2lkaggle.models.table.MBBlock` row (fused or not)."""

    def __init__(self, b: table.MBBlock):
        super().__init__()
        layers: list[nn.Layer] = []
        if b.fused:
            if b.expanded != b.in_channels:
                layers += [_conv_bn_act(b.in_channels, b.expanded, b.kernel, b.stride),
                           _conv_bn_act(b.expanded, b.out_channels, 1, act=False)]
            else:
                layers.append(_conv_bn_act(b.in_channels, b.out_channels, b.kernel, b.stride))
        else:
            if b.expanded != b.in_channels:
                layers.append(_conv_bn_act(b.in_channels, b.expanded, 1))
            layers += [_conv_bn_act(b.expanded, b.expanded, b.kernel, b.stride, groups=b.expanded),
                       SqueezeExcitation(b.expanded, b.squeeze),
                       _conv_bn_act(b.expanded, b.out_channels, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = b.residual
        self.stochastic_depth = StochasticDepth(b.drop_path)

    def forward(self, x):
        y = self.block(x)
        return self.stochastic_depth(y) + x if self.residual else y


class EfficientNetV2(nn.Layer):
    """EfficientNetV2-S/M/L with torchvision's modules and parameter names (``features``,
    ``classifier``), built from :func:`d2lkaggle.models.table.efficientnet_v2_blocks`.

    When frozen, ``features`` has ``stop_gradient=True`` and stays in eval mode; only
    ``classifier`` trains.
    """

    def __init__(self, arch: str, num_classes: int = 1000, stochastic_depth: float = 0.2,
                 dropout: float | None = None):
        super().__init__()
        stem, last_in, last_out = table.efficientnet_v2_head(arch)
        blocks = table.efficientnet_v2_blocks(arch, stochastic_depth)
        stages: list[list[MBConv]] = [[] for _ in table.EFFICIENTNET_V2[arch]["stages"]]
        for b in blocks:
            stages[b.stage - 1].append(MBConv(b))
        self.features = nn.Sequential(_conv_bn_act(3, stem, 3, 2),
                                      *[nn.Sequential(*s) for s in stages],
                                      _conv_bn_act(last_in, last_out, 1))
        p = table.EFFICIENTNET_V2[arch]["dropout"] if dropout is None else dropout
        self.classifier = nn.Sequential(nn.Dropout(p), nn.Linear(last_out, num_classes))
        self.arch, self.frozen = arch, False
        self._init()

    def _init(self) -> None:
        # torchvision's: conv Kaiming-normal (fan-out), zero biases; Linear uniform ±1/√out
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                shape = layer.weight.shape
                std = math.sqrt(2.0 / (shape[0] * int(np.prod(shape[2:]))))
                nn.initializer.Normal(0.0, std)(layer.weight)
                if layer.bias is not None:
                    nn.initializer.Constant(0.0)(layer.bias)
            elif isinstance(layer, nn.Linear):
                r = 1.0 / math.sqrt(layer.weight.shape[1])
                nn.initializer.Uniform(-r, r)(layer.weight)
                nn.initializer.Constant(0.0)(layer.bias)

    def freeze(self) -> None:
        self.frozen = True
        for p in self.features.parameters():
            p.stop_gradient = True
        self.train() if self.training else self.eval()

    def train(self):
        super().train()
        if self.frozen:
            self.features.eval()
        return self

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(paddle.flatten(x, 1))


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


class ConvGroup(nn.Layer):
    """airbench's conv group: conv → max-pool 2 → BatchNorm → GELU → conv → BatchNorm → GELU."""

    def __init__(self, cin: int, cout: int, momentum: float, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2D(cin, cout, 3, padding=1, bias_attr=False)
        self.norm1 = _bn(cout, eps, momentum)
        self.conv2 = nn.Conv2D(cout, cout, 3, padding=1, bias_attr=False)
        self.norm2 = _bn(cout, eps, momentum)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))   # erf GELU, torch's
        return F.gelu(self.norm2(self.conv2(x)))


class Airbench94(nn.Layer):
    """The CIFAR-10 speed-run record's net (:class:`d2lkaggle.models.table.AirbenchSpec`)."""

    def __init__(self, num_classes: int = 10, width: int = 64, bn_momentum: float | None = None):
        super().__init__()
        spec = table.AIRBENCH94.with_width(width)
        momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
        self.whiten = nn.Conv2D(3, spec.whiten_width, spec.whiten_kernel)
        for g in table.airbench_layers(spec):
            self.add_sublayer(f"block{g.index}", ConvGroup(g.in_channels, g.out_channels,
                                                           momentum, spec.bn_eps))
        self.head = nn.Linear(spec.widths[-1], num_classes, bias_attr=False)
        self.scale = spec.scale

    def forward(self, x):
        x = F.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(paddle.flatten(F.max_pool2d(x, 3), 1)) * self.scale


def airbench94(num_classes: int = 10, width: int = 64, bn_momentum: float | None = None) -> Airbench94:
    """The CIFAR-10 speed-run record's net (airbench94; ``width`` 64: its 64/256/256 channels,
    other widths scale all three). ``bn_momentum``: torch's convention (None: the record's 0.4).
    Initialised as airbench does: torch's default, the first filters of every convolution the
    identity (torch's ``dirac_``), zero biases; the whitening filters and BatchNorm weights
    do not train. Its stem is whitened from the training images by the recipe."""
    net = init_like_torch(Airbench94(num_classes, width, bn_momentum))
    for layer in net.sublayers():
        if isinstance(layer, nn.Conv2D):
            layer.weight.set_value(table.airbench_dirac(layer.weight.numpy()))
            if layer.bias is not None:
                layer.bias.set_value(np.zeros(layer.bias.shape, np.float32))
    # Paddle 3.3's batch_norm backward drops the bias gradient when the weight has
    # stop_gradient=True, so the BatchNorm weights keep their gradient and are left out of
    # the optimizer instead (``untrained``, read by the Step); the whitening weights stop theirs
    untrained = []
    for name, p in net.named_parameters():   # (parameters keep torch's names here)
        if table.airbench_frozen(name):
            if ".norm" in name:
                untrained.append(name)
            else:
                p.stop_gradient = True
    net.untrained = tuple(untrained)
    return net


def list_models() -> list[str]:
    """Names ``create_model`` accepts (the core's :data:`d2lkaggle.models.table.MODEL_NAMES`)."""
    return list(table.MODEL_NAMES)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Layer:
    """Model ``name`` of the table with ``num_classes`` outputs (``kwargs`` go to its builder);
    an unknown name or keyword raises ``ValueError`` listing the valid ones."""
    return table.create(globals(), name, num_classes, **kwargs)
