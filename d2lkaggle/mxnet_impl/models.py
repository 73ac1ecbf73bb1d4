"""Models in MXNet Gluon: the book's ResNet-18, ResNet-34 (torchvision's v1 architecture,
not Gluon's ``resnet34_v2``), the fine-tune net, the write-ups' ELU CNN and EfficientNetV2
(torchvision's architecture and parameter names, built from the core table), the CIFAR-10
speed-run record's net (airbench94), and the model table (``create_model``).

Every Conv/BatchNorm/Dense is given its input size, so parameters exist right after
``initialize`` (with deferred shapes BatchNorm skips its first running-statistics update).
BatchNorm momentum 0.9 here is torch's 0.1 (Gluon's momentum is the weight of the OLD
statistics: 1 − torch's); epsilon 1e-5, EfficientNetV2's 1e-3.
"""
from __future__ import annotations

import math
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, init
from mxnet.gluon import nn

from ..models import table


def _bn(c: int, eps: float = 1e-5, torch_momentum: float = 0.1) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=1.0 - torch_momentum, epsilon=eps, in_channels=c)


# The ResNets' ReLU, residual sum and global pooling as the legacy operators MXNet 1.9 runs on
# oneDNN (``Activation``, ``elemwise_add``, ``Pooling``): their numpy-namespace twins
# (``npx.relu``, ``+``, ``np.mean``) have no oneDNN kernel, so every one of them turned the
# convolutions' blocked layout back into NCHW and forth (a third of a training step's time in
# reorders, benchmarks/bf16_speed.py), and they have no bfloat16 kernel. Same numbers.
def _relu(F, x):
    return F.npx.activation(x, act_type="relu")


def _add(F, a, b):
    return F.elemwise_add(a.as_nd_ndarray(), b.as_nd_ndarray()).as_np_ndarray()


def _global_avg(F, x):
    pooled = F.Pooling(x.as_nd_ndarray(), kernel=(1, 1), global_pool=True, pool_type="avg")
    return F.Flatten(pooled).as_np_ndarray()


class StochasticDepth(nn.HybridBlock):
    """torchvision's ``StochasticDepth(p, "row")`` for NCHW inputs: in training each example is
    zeroed with probability ``p`` and the kept ones scaled by ``1/(1-p)``; identity in
    inference mode (MXNet's Dropout with one mask value per example: ``axes=(1, 2, 3)``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def hybrid_forward(self, F, x):
        if self.p == 0.0:
            return x
        return F.npx.dropout(x, p=self.p, axes=(1, 2, 3))


class Residual(nn.HybridBlock):
    """The book's residual block: two 3×3 conv+BN, optional 1×1 conv shortcut (``conv3``)."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1, drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2D(num_channels, 3, strides, 1, in_channels=in_channels)
        self.bn1 = _bn(num_channels, torch_momentum=bn_momentum)
        self.conv2 = nn.Conv2D(num_channels, 3, 1, 1, in_channels=num_channels)
        self.bn2 = _bn(num_channels, torch_momentum=bn_momentum)
        self.conv3 = (nn.Conv2D(num_channels, 1, strides, in_channels=in_channels)
                      if use_1x1conv else None)
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else None

    def hybrid_forward(self, F, x):
        y = _relu(F, self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.drop_path is not None:
            y = self.drop_path(y)
        if self.conv3 is not None:
            x = self.conv3(x)
        return _relu(F, _add(F, y, x))


class ResNet18(nn.HybridBlock):
    """The CIFAR-10 chapter's ResNet-18: 3×3 stride-1 stem, no max-pool, 4 stages of 2 blocks."""

    #: every operator has a oneDNN bfloat16 kernel (not Dropout: see :func:`bf16_capable`)
    bf16 = True

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 drop_path: float = 0.0, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2D(width, 3, 1, 1, in_channels=in_channels)
        self.bn1 = _bn(width, torch_momentum=bn_momentum)
        stages = [nn.HybridSequential() for _ in table.RESNET18_STAGES]
        for b in table.resnet18_blocks(width, drop_path):
            stages[b.stage].add(Residual(b.in_channels, b.out_channels, b.shortcut, b.stride,
                                         b.drop_path, bn_momentum))
        for i, stage in enumerate(stages):
            setattr(self, f"layer{i + 1}", stage)
        self.fc = nn.Dense(num_classes, in_units=width * table.RESNET18_STAGES[-1].channels)

    def hybrid_forward(self, F, x):
        x = _relu(F, self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(_global_avg(F, x))


class BasicBlock(nn.HybridBlock):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn (no biases) + identity or 1×1 downsample."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_path: float = 0.0):
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
        self.stochastic_depth = StochasticDepth(drop_path) if drop_path > 0 else None

    def hybrid_forward(self, F, x):
        y = _relu(F, self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.stochastic_depth is not None:
            y = self.stochastic_depth(y)
        if self.downsample is not None:
            x = self.downsample(x)
        return _relu(F, _add(F, y, x))


class ResNet34Features(nn.HybridBlock):
    """torchvision's ResNet-34 up to the pooled 512 features; ``fc`` when ``num_classes``."""

    bf16 = True

    def __init__(self, num_classes: int | None = None, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2D(64, 7, 2, 3, use_bias=False, in_channels=3)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        stages = [nn.HybridSequential() for _ in table.RESNET34_STAGES]
        for b in table.resnet34_blocks(drop_path):
            stages[b.stage].add(BasicBlock(b.in_channels, b.out_channels, b.stride, b.drop_path))
        for i, stage in enumerate(stages):
            setattr(self, f"layer{i + 1}", stage)
        self.fc = nn.Dense(num_classes, in_units=512) if num_classes else None

    def hybrid_forward(self, F, x):
        x = self.maxpool(_relu(F, self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = _global_avg(F, x)
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


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64,
             drop_path: float = 0.0, bn_momentum: float = 0.1) -> ResNet18:
    """The book's ResNet-18 (``width`` = channels of the first stage; 64 in the book).

    ``drop_path``: stochastic depth (torchvision's "row" mode; block ``i`` of
    8 drops its residual branch with probability ``drop_path·i/8``); 0 is the book's network.
    ``bn_momentum``: the BatchNorm running statistics' momentum (torch's convention; 0.1 is
    the book's).
    """
    return _ready(ResNet18(num_classes, in_channels, width, drop_path, bn_momentum))


def resnet34(num_classes: int = 1000, drop_path: float = 0.0) -> ResNet34Features:
    """torchvision's ResNet-34 (v1), randomly initialised; ``drop_path`` as in :func:`resnet18`
    (over its 16 blocks)."""
    return _ready(ResNet34Features(num_classes, drop_path))


class FineTuneNet(nn.Block):
    """ResNet-34 backbone (pooled 512 features) + a new head Dense→ReLU→Dense.

    When ``frozen``, the backbone's parameters get no gradient (``grad_req='null'``) and it
    always runs in inference mode, so its BatchNorm uses and keeps its running statistics;
    only ``head`` is trained. The backbone and head are hybridized separately.
    """

    bf16 = True

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
                 freeze: bool = True, arch: str = "resnet34") -> nn.Block:
    """The Dog Breed chapter's net: pretrained features + a new trainable head.

    ``arch="resnet34"``: ResNet-34 features + Dense→ReLU→Dense (``hidden`` units).
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
    net = _ready(FineTuneNet(num_classes, hidden=hidden, freeze=False))
    if weights is not None:
        load_backbone(net, weights)
    if freeze:
        net.freeze()
    return net


class CnnElu(nn.HybridBlock):
    """The CIFAR-10 MixUp write-up's CNN (:data:`d2lkaggle.models.table.CNN_ELU`): conv 16-32-pool-
    64-pool, each conv → ELU → BatchNorm; FC → ELU → Dropout → BatchNorm1d → classes.

    Returns logits and flattens each example (the write-up's two bugs are not copied).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        spec = table.CNN_ELU
        self.layer = nn.HybridSequential()
        prev = in_channels
        for kind, _, c in spec.layer_names():
            if kind == "conv":
                self.layer.add(nn.Conv2D(c, spec.kernel, 1, spec.kernel // 2, in_channels=prev))
                prev = c
            elif kind == "elu":
                self.layer.add(nn.ELU(spec.elu_alpha))
            elif kind == "bn":
                self.layer.add(_bn(c))
            else:
                self.layer.add(nn.MaxPool2D(2, 2))
        self.fc_layer = nn.HybridSequential()
        self.fc_layer.add(nn.Dense(spec.hidden, in_units=spec.flat_features(image_size)),
                          nn.ELU(spec.elu_alpha), nn.Dropout(dropout), _bn(spec.hidden),
                          nn.Dense(num_classes, in_units=spec.hidden))

    def hybrid_forward(self, F, x):
        return self.fc_layer(F.npx.batch_flatten(self.layer(x)))


def cnn_elu(num_classes: int, in_channels: int = 3, image_size: int = 32,
            dropout: float = 0.5) -> CnnElu:
    """The MixUp write-up's ELU + BatchNorm CNN (He init); ``image_size`` sets the first FC
    layer's inputs (64·(size/4)²: 4096 at the write-up's 32 px)."""
    net = CnnElu(num_classes, in_channels, image_size, dropout)
    # He (Kaiming-normal, fan-in, gain √2) weights; Gluon's biases start at zero
    net.initialize(init.MSRAPrelu(factor_type="in", slope=0.0), ctx=mx.cpu())
    return net


class SiLU(nn.HybridBlock):
    """``x · sigmoid(x)`` (torch's ``nn.SiLU``)."""

    def hybrid_forward(self, F, x):
        return x * F.npx.sigmoid(x)


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> nn.HybridSequential:
    """torchvision's ``Conv2dNormActivation`` (conv without bias, BatchNorm, SiLU)."""
    seq = nn.HybridSequential()
    seq.add(nn.Conv2D(cout, k, stride, (k - 1) // 2, groups=groups, use_bias=False, in_channels=cin),
            _bn(cout, table.EFFNET_BN_EPS, table.EFFNET_BN_MOMENTUM))
    if act:
        seq.add(SiLU())
    return seq


class SqueezeExcitation(nn.HybridBlock):
    """torchvision's ``SqueezeExcitation``: pool → 1×1 conv ``fc1`` → SiLU → ``fc2`` → sigmoid."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2D(squeeze, 1, in_channels=channels)
        self.fc2 = nn.Conv2D(channels, 1, in_channels=squeeze)

    def hybrid_forward(self, F, x):
        s = self.fc1(F.np.mean(x, axis=(2, 3), keepdims=True))
        return F.npx.sigmoid(self.fc2(s * F.npx.sigmoid(s))) * x


class MBConv(nn.HybridBlock):
    """One EfficientNetV2 block from a core :class:`d2lkaggle.models.table.MBBlock` row (fused or not)."""

    def __init__(self, b: table.MBBlock):
        super().__init__()
        self.block = nn.HybridSequential()
        if b.fused:
            if b.expanded != b.in_channels:
                self.block.add(_conv_bn_act(b.in_channels, b.expanded, b.kernel, b.stride),
                               _conv_bn_act(b.expanded, b.out_channels, 1, act=False))
            else:
                self.block.add(_conv_bn_act(b.in_channels, b.out_channels, b.kernel, b.stride))
        else:
            if b.expanded != b.in_channels:
                self.block.add(_conv_bn_act(b.in_channels, b.expanded, 1))
            self.block.add(_conv_bn_act(b.expanded, b.expanded, b.kernel, b.stride, groups=b.expanded),
                           SqueezeExcitation(b.expanded, b.squeeze),
                           _conv_bn_act(b.expanded, b.out_channels, 1, act=False))
        self.residual = b.residual
        self.stochastic_depth = StochasticDepth(b.drop_path)

    def hybrid_forward(self, F, x):
        y = self.block(x)
        return self.stochastic_depth(y) + x if self.residual else y


class EfficientNetV2(nn.Block):
    """EfficientNetV2-S/M/L with torchvision's modules and parameter names (``features``,
    ``classifier``), built from :func:`d2lkaggle.models.table.efficientnet_v2_blocks`.

    ``features`` and ``classifier`` are hybridized separately. When frozen, ``features`` has
    ``grad_req='null'`` and always runs in inference mode; only ``classifier`` trains.
    """

    def __init__(self, arch: str, num_classes: int = 1000, stochastic_depth: float = 0.2,
                 dropout: float | None = None):
        super().__init__()
        stem, last_in, last_out = table.efficientnet_v2_head(arch)
        stages = [nn.HybridSequential() for _ in table.EFFICIENTNET_V2[arch]["stages"]]
        for b in table.efficientnet_v2_blocks(arch, stochastic_depth):
            stages[b.stage - 1].add(MBConv(b))
        self.features = nn.HybridSequential()
        self.features.add(_conv_bn_act(3, stem, 3, 2), *stages, _conv_bn_act(last_in, last_out, 1))
        p = table.EFFICIENTNET_V2[arch]["dropout"] if dropout is None else dropout
        self.classifier = nn.HybridSequential()
        # torchvision's Linear init: uniform ±1/√out, zero bias
        self.classifier.add(nn.Dropout(p), nn.Dense(num_classes, in_units=last_out,
                                                    weight_initializer=init.Uniform(1 / math.sqrt(num_classes))))
        self.arch, self.frozen = arch, False

    def freeze(self) -> None:
        self.frozen = True
        self.features.collect_params().setattr("grad_req", "null")

    def hybridize(self, active: bool = True, **kwargs) -> None:
        self.features.hybridize(active, **kwargs)
        self.classifier.hybridize(active, **kwargs)

    @property
    def _active(self) -> bool:
        return self.features._active and self.classifier._active

    def forward(self, x):
        if self.frozen:
            with autograd.predict_mode():
                feats = self.features(x)
            feats = feats.detach()
        else:
            feats = self.features(x)
        return self.classifier(feats.mean(axis=(2, 3)))


def _efficientnet(arch: str, num_classes: int, stochastic_depth: float | None,
                  dropout: float | None, weights: str | None, freeze: bool) -> EfficientNetV2:
    weights = table.weights_choice(weights)
    from .weights import load_pretrained
    net = EfficientNetV2(arch, num_classes, 0.2 if stochastic_depth is None else stochastic_depth,
                         dropout)
    # torchvision's conv init: Kaiming-normal with fan-out (gain √2); biases zero
    net.initialize(init.MSRAPrelu(factor_type="out", slope=0.0), ctx=mx.cpu())
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


def _gelu(F, x):
    return F.npx.leaky_relu(x, act_type="gelu")   # the erf form, torch's nn.GELU()


def _max_pool(F, x, k: int):
    # the legacy operator, which runs on oneDNN (see _relu); floor mode, as torch's
    pooled = F.Pooling(x.as_nd_ndarray(), kernel=(k, k), stride=(k, k), pool_type="max")
    return pooled.as_np_ndarray()


class ConvGroup(nn.HybridBlock):
    """airbench's conv group: conv → max-pool 2 → BatchNorm → GELU → conv → BatchNorm → GELU."""

    def __init__(self, cin: int, cout: int, momentum: float, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2D(cout, 3, 1, 1, use_bias=False, in_channels=cin)
        self.norm1 = _bn(cout, eps, momentum)
        self.conv2 = nn.Conv2D(cout, 3, 1, 1, use_bias=False, in_channels=cout)
        self.norm2 = _bn(cout, eps, momentum)

    def hybrid_forward(self, F, x):
        x = _gelu(F, self.norm1(_max_pool(F, self.conv1(x), 2)))
        return _gelu(F, self.norm2(self.conv2(x)))


class Airbench94(nn.HybridBlock):
    """The CIFAR-10 speed-run record's net (:class:`d2lkaggle.models.table.AirbenchSpec`)."""

    def __init__(self, num_classes: int = 10, width: int = 64, bn_momentum: float | None = None):
        super().__init__()
        spec = table.AIRBENCH94.with_width(width)
        momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
        self.whiten = nn.Conv2D(spec.whiten_width, spec.whiten_kernel, in_channels=3)
        for g in table.airbench_layers(spec):
            setattr(self, f"block{g.index}", ConvGroup(g.in_channels, g.out_channels, momentum,
                                                       spec.bn_eps))
        self.head = nn.Dense(num_classes, use_bias=False, in_units=spec.widths[-1])
        self.scale = spec.scale

    def hybrid_forward(self, F, x):
        x = _gelu(F, self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(F.npx.batch_flatten(_max_pool(F, x, 3))) * self.scale


def airbench94(num_classes: int = 10, width: int = 64, bn_momentum: float | None = None) -> Airbench94:
    """The CIFAR-10 speed-run record's net (airbench94; ``width`` 64: its 64/256/256 channels,
    other widths scale all three). ``bn_momentum``: torch's convention (None: the record's 0.4).
    Initialised as airbench does: torch's default, the first filters of every convolution the
    identity (torch's ``dirac_``), zero biases; the whitening filters and BatchNorm weights
    do not train. Its stem is whitened from the training images by the recipe."""
    from .weights import canonical_parameters
    net = _ready(Airbench94(num_classes, width, bn_momentum))
    for block in _blocks(net):
        if isinstance(block, nn.Conv2D):
            w = table.airbench_dirac(block.weight.data().asnumpy())
            block.weight.set_data(mx.np.array(w, ctx=mx.cpu()))
            if block.bias is not None:
                block.bias.set_data(mx.np.zeros(block.bias.shape, ctx=mx.cpu()))
    for name, p in canonical_parameters(net).items():
        if table.airbench_frozen(name):
            p.grad_req = "null"
    return net


def list_models() -> list[str]:
    """Names ``create_model`` accepts (the core's :data:`d2lkaggle.models.table.MODEL_NAMES`)."""
    return list(table.MODEL_NAMES)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Block:
    """Model ``name`` of the table with ``num_classes`` outputs (``kwargs`` go to its builder);
    an unknown name or keyword raises ``ValueError`` listing the valid ones."""
    return table.create(globals(), name, num_classes, **kwargs)
