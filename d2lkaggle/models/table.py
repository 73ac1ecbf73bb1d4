"""The model table and every architecture as data (framework-free).

One list of names (:data:`MODEL_NAMES`) is what every backend's ``list_models()`` returns and
``create_model(name, ...)`` accepts (a contract test checks it). The architectures are
described here, once, as rows; each backend only turns rows into its own layers, so the three
wings cannot disagree about a channel count, a stride or a stochastic-depth rate:

* the CIFAR-10 chapter's ResNet-18 and torchvision's ResNet-34: :data:`RESNET18_STAGES`,
  :data:`RESNET34_STAGES` → :func:`resnet_blocks`;
* the ELU + BatchNorm CNN of the CIFAR-10 MixUp write-up: :data:`CNN_ELU`;
* EfficientNetV2-S/M/L: :data:`EFFICIENTNET_V2` holds torchvision's ``FusedMBConvConfig`` /
  ``MBConvConfig`` rows → :func:`efficientnet_v2_blocks`, one row per block with the channel
  counts, squeeze-excitation width and stochastic-depth rate torchvision computes;
* the CIFAR-10 speed-run record's net (airbench94): :data:`AIRBENCH94` → :func:`airbench_layers`.

Stochastic depth ("drop path") follows torchvision's ``StochasticDepth(p, "row")``: in
training, each example's residual branch is dropped with probability ``p`` and kept ones are
scaled by ``1/(1-p)``; in evaluation it is the identity. The rate grows linearly with the
block index: block ``i`` of ``n`` gets ``rate·i/n`` (:func:`stochastic_depth_rates`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

#: every model name a backend's ``create_model`` accepts, in the order ``list_models`` gives
MODEL_NAMES: tuple[str, ...] = (
    "resnet18",           # the CIFAR-10 chapter's ResNet-18 (3×3 stem, no max-pool)
    "resnet34",           # torchvision's ResNet-34 (v1)
    "finetune",           # the Dog Breed chapter's frozen backbone + new head
    "cnn_elu",            # the CIFAR-10 MixUp write-up's ELU + BatchNorm CNN
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "airbench94",         # the CIFAR-10 speed-run record's net (airbench94: 94 % in 9.9 epochs)
)

#: architectures ``finetune_net(arch=...)`` can put under a new head
FINETUNE_ARCHS: tuple[str, ...] = ("resnet34", "efficientnet_v2_s", "efficientnet_v2_m",
                                   "efficientnet_v2_l")


def check_model_name(name: str) -> str:
    """``name`` when it is in the table, else ``ValueError`` listing the valid names."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return name


def check_finetune_arch(arch: str) -> str:
    """``arch`` when ``finetune_net`` can fine-tune it, else ``ValueError`` listing them."""
    if arch not in FINETUNE_ARCHS:
        raise ValueError(f"finetune_net cannot fine-tune {arch!r}; choose from "
                         f"{', '.join(FINETUNE_ARCHS)}")
    return arch


#: what a ``weights`` argument may say for "no pretrained weights" (the CLI's ``--weights none``)
NO_WEIGHTS = ("none", "random")


def weights_choice(weights: Any) -> str | None:
    """A ``weights`` argument as the builders read it: ``None``, ``"none"`` or ``"random"``
    (any case; what ``--weights none`` passes) → ``None``, a random backbone; ``"imagenet"``
    or a weight file's path (``str`` or ``os.PathLike``) as given."""
    if weights is None:
        return None
    weights = os.fspath(weights)
    return None if weights.strip().lower() in NO_WEIGHTS else weights


def stochastic_depth_rates(rate: float, n: int) -> list[float]:
    """Drop probability of each of ``n`` residual blocks: ``rate·i/n`` (torchvision's rule).

    The first block is never dropped; the last gets ``rate·(n-1)/n``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"a stochastic-depth / drop-path rate must be in [0, 1), got {rate}")
    return [rate * i / n for i in range(n)]


# ----------------------------------------------------------------------------- ResNets

class Stage(NamedTuple):
    """One ResNet stage: output channels (× ``width`` for the book's net), blocks, stride."""

    channels: int
    blocks: int
    stride: int


#: the CIFAR-10 chapter's ResNet-18: channels are multiples of ``width`` (64 in the book)
RESNET18_STAGES = (Stage(1, 2, 1), Stage(2, 2, 2), Stage(4, 2, 2), Stage(8, 2, 2))
#: torchvision's ResNet-34 (BasicBlock, 7×7 stride-2 stem, max-pool)
RESNET34_STAGES = (Stage(64, 3, 1), Stage(128, 4, 2), Stage(256, 6, 2), Stage(512, 3, 2))


class ResBlock(NamedTuple):
    """One residual block: where it sits, its channels, stride, shortcut and drop rate."""

    stage: int            # 0-based stage index (module ``layer{stage+1}``)
    index: int            # block index inside the stage
    in_channels: int
    out_channels: int
    stride: int
    shortcut: bool        # a 1×1 convolution on the shortcut
    drop_path: float      # stochastic-depth probability of this block's residual branch


def resnet_blocks(stages: tuple[Stage, ...], in_channels: int, drop_path: float = 0.0,
                  width: int = 1) -> list[ResBlock]:
    """The blocks of a ResNet, in order (channels of each stage multiplied by ``width``)."""
    n = sum(s.blocks for s in stages)
    rates = stochastic_depth_rates(drop_path, n)
    out, prev, k = [], in_channels, 0
    for i, s in enumerate(stages):
        c = s.channels * width
        for j in range(s.blocks):
            stride = s.stride if j == 0 else 1
            out.append(ResBlock(i, j, prev, c, stride, stride != 1 or prev != c, rates[k]))
            prev, k = c, k + 1
    return out


def resnet18_blocks(width: int = 64, drop_path: float = 0.0) -> list[ResBlock]:
    """The book's ResNet-18 (the first stage keeps its channels, no shortcut conv there)."""
    return resnet_blocks(RESNET18_STAGES, width, drop_path, width)


def resnet34_blocks(drop_path: float = 0.0) -> list[ResBlock]:
    """torchvision's ResNet-34 after its 64-channel stem."""
    return resnet_blocks(RESNET34_STAGES, 64, drop_path)


# ----------------------------------------------------------------------------- cnn_elu

@dataclass(frozen=True)
class CnnEluSpec:
    """The write-up's CNN: each conv (3×3, padding 1) → ELU → BatchNorm, max-pool 2 where
    ``pool_after`` says, then FC (flattened 64 × (size/4)²) → ELU → Dropout → BatchNorm1d → classes.

    The module names are the write-up's ``layer.{i}`` and ``fc_layer.{i}`` (torch Sequential
    positions, activations and pools included), so its checkpoints keep their names.
    """

    convs: tuple[int, ...] = (16, 32, 64)
    pool_after: tuple[bool, ...] = (False, True, True)
    kernel: int = 3
    hidden: int = 100
    elu_alpha: float = 1.0
    dropout: float = 0.5

    def layer_names(self) -> list[tuple[str, int, int | None]]:
        """``(kind, position, channels)`` of the feature layers, in torch Sequential order."""
        rows, pos = [], 0
        for c, pool in zip(self.convs, self.pool_after):
            rows += [("conv", pos, c), ("elu", pos + 1, None), ("bn", pos + 2, c)]
            pos += 3
            if pool:
                rows.append(("pool", pos, None))
                pos += 1
        return rows

    def flat_features(self, image_size: int) -> int:
        """Inputs of the first FC layer for square images of ``image_size`` pixels."""
        side = image_size
        for pool in self.pool_after:
            if pool:
                if side % 2:
                    raise ValueError(f"cnn_elu needs an image size divisible by "
                                     f"{2 ** sum(self.pool_after)}, got {image_size}")
                side //= 2
        return self.convs[-1] * side * side


CNN_ELU = CnnEluSpec()


# ----------------------------------------------------------------------------- EfficientNetV2

class MBConvRow(NamedTuple):
    """A torchvision ``FusedMBConvConfig`` / ``MBConvConfig`` row (one stage)."""

    fused: bool
    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


def _fused(e, k, s, i, o, n) -> MBConvRow:
    return MBConvRow(True, e, k, s, i, o, n)


def _mb(e, k, s, i, o, n) -> MBConvRow:
    return MBConvRow(False, e, k, s, i, o, n)


#: torchvision's ``_efficientnet_conf`` for the V2 models: stage rows, last channels, default
#: classifier dropout. BatchNorm everywhere: eps 1e-3, torch momentum 0.1.
EFFICIENTNET_V2: dict[str, dict[str, Any]] = {
    "efficientnet_v2_s": {"stages": (
        _fused(1, 3, 1, 24, 24, 2), _fused(4, 3, 2, 24, 48, 4), _fused(4, 3, 2, 48, 64, 4),
        _mb(4, 3, 2, 64, 128, 6), _mb(6, 3, 1, 128, 160, 9), _mb(6, 3, 2, 160, 256, 15)),
        "last_channel": 1280, "dropout": 0.2},
    "efficientnet_v2_m": {"stages": (
        _fused(1, 3, 1, 24, 24, 3), _fused(4, 3, 2, 24, 48, 5), _fused(4, 3, 2, 48, 80, 5),
        _mb(4, 3, 2, 80, 160, 7), _mb(6, 3, 1, 160, 176, 14), _mb(6, 3, 2, 176, 304, 18),
        _mb(6, 3, 1, 304, 512, 5)),
        "last_channel": 1280, "dropout": 0.3},
    "efficientnet_v2_l": {"stages": (
        _fused(1, 3, 1, 32, 32, 4), _fused(4, 3, 2, 32, 64, 7), _fused(4, 3, 2, 64, 96, 7),
        _mb(4, 3, 2, 96, 192, 10), _mb(6, 3, 1, 192, 224, 19), _mb(6, 3, 2, 224, 384, 25),
        _mb(6, 3, 1, 384, 640, 7)),
        "last_channel": 1280, "dropout": 0.4},
}
EFFNET_BN_EPS = 1e-3
EFFNET_BN_MOMENTUM = 0.1   # torch's convention (weight of the batch); MXNet/Paddle: 1 − this


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round channels to a multiple of ``divisor``."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:   # never round down by more than 10 %
        new_v += divisor
    return new_v


class MBBlock(NamedTuple):
    """One EfficientNetV2 block as torchvision builds it (module ``features.{stage}.{index}``).

    ``fused``: FusedMBConv (``block.0`` k×k expand conv, ``block.1`` 1×1 project; or a single
    k×k conv when ``expanded == in_channels``). Otherwise MBConv: ``block.0`` 1×1 expand (when
    expanded != in), then the depthwise k×k, squeeze-excitation (``fc1``/``fc2``, 1×1 convs
    with biases, ``squeeze`` channels) and the 1×1 project.
    """

    stage: int            # position in ``features`` (1-based: ``features.0`` is the stem)
    index: int
    fused: bool
    in_channels: int
    out_channels: int
    expanded: int
    kernel: int
    stride: int
    squeeze: int          # squeeze-excitation channels (MBConv only; 0 for fused)
    residual: bool        # stride 1 and in == out: the branch is added to the input
    drop_path: float      # its stochastic-depth probability


def efficientnet_v2_blocks(arch: str, stochastic_depth: float = 0.2) -> list[MBBlock]:
    """Every block of EfficientNetV2-S/M/L with torchvision's channels and drop rates."""
    if arch not in EFFICIENTNET_V2:
        raise ValueError(f"unknown EfficientNetV2 {arch!r}; choose from {', '.join(EFFICIENTNET_V2)}")
    rows = EFFICIENTNET_V2[arch]["stages"]
    rates = stochastic_depth_rates(stochastic_depth, sum(r.num_layers for r in rows))
    out, k = [], 0
    for s, r in enumerate(rows):
        for j in range(r.num_layers):
            cin = r.input_channels if j == 0 else r.out_channels
            stride = r.stride if j == 0 else 1
            expanded = make_divisible(cin * r.expand_ratio)
            squeeze = 0 if r.fused else max(1, cin // 4)
            out.append(MBBlock(s + 1, j, r.fused, cin, r.out_channels, expanded, r.kernel, stride,
                               squeeze, stride == 1 and cin == r.out_channels, rates[k]))
            k += 1
    return out


def efficientnet_v2_head(arch: str) -> tuple[int, int, int]:
    """``(stem channels, last-conv input channels, last-conv output channels)``."""
    rows = EFFICIENTNET_V2[arch]["stages"]
    return rows[0].input_channels, rows[-1].out_channels, EFFICIENTNET_V2[arch]["last_channel"]


# ----------------------------------------------------------------------------- airbench94

@dataclass(frozen=True)
class AirbenchSpec:
    """The net of the CIFAR-10 speed-run record, Keller Jordan's airbench94 ("94% on CIFAR-10 in
    3.29 Seconds on a Single GPU", arXiv:2404.00498; the ``airbench`` package, 0.1.8).

    A 2×2 convolution whose weights are the training patches' whitening filters (frozen; its
    bias trains for the recipe's first epochs) → GELU → three conv groups, each
    ``conv 3×3 → max-pool 2 → BatchNorm → GELU → conv 3×3 → BatchNorm → GELU`` → max-pool 3 →
    a linear layer without bias → × ``scale``. Its convolutions have no bias; their first
    ``in_channels`` filters start as the identity (``dirac_``) on top of torch's default
    initialisation. BatchNorm: eps ``bn_eps``, weights frozen at 1, biases trained.
    """

    widths: tuple[int, int, int] = (64, 256, 256)
    whiten_kernel: int = 2
    bn_momentum: float = 0.4    # torch's convention; airbench writes 0.6 (the old value's weight)
    bn_eps: float = 1e-12
    scale: float = 1 / 9        # the logits' scaling factor
    whiten_images: int = 5000   # training images the whitening filters are computed from

    @property
    def whiten_width(self) -> int:
        """Filters of the whitening layer: each eigenvector of the k×k×3 patches, both signs."""
        return 2 * 3 * self.whiten_kernel ** 2

    def with_width(self, width: int) -> "AirbenchSpec":
        """The record's widths scaled so that the first group has ``width`` channels (64: the
        record's 64/256/256)."""
        from dataclasses import replace
        return replace(self, widths=tuple(int(round(w * width / self.widths[0]))
                                          for w in self.widths))


AIRBENCH94 = AirbenchSpec()


class ConvGroupRow(NamedTuple):
    """One conv group of airbench's net (module ``block{index}``)."""

    index: int
    in_channels: int
    out_channels: int


def airbench_layers(spec: AirbenchSpec = AIRBENCH94) -> list[ConvGroupRow]:
    """The three conv groups, in order, after the whitening layer."""
    rows, prev = [], spec.whiten_width
    for i, c in enumerate(spec.widths):
        rows.append(ConvGroupRow(i + 1, prev, c))
        prev = c
    return rows


#: airbench's own module names (its ``nn.Sequential`` positions) → ours, to read its state dicts
AIRBENCH_NAMES = {"0": "whiten", "2": "block1", "3": "block2", "4": "block3", "7": "head"}


def from_airbench_names(state: dict[str, Any]) -> dict[str, Any]:
    """An airbench94 ``state_dict`` under this library's canonical names (``num_batches_tracked``
    dropped), e.g. to start ``--weights`` from a net trained by airbench itself."""
    out = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if k.endswith("num_batches_tracked"):
            continue
        if head not in AIRBENCH_NAMES:
            raise ValueError(f"{k!r} is not a parameter of airbench94's net")
        out[f"{AIRBENCH_NAMES[head]}.{rest}"] = v
    return out


def airbench_dirac(weight: Any) -> Any:
    """airbench94's start for a convolution's ``(out, in, kh, kw)`` weight array (numpy, in
    place, returned): its first ``in`` filters the identity at the kernel's centre, as torch's
    ``nn.init.dirac_`` on ``weight[:in]`` — for the wings whose framework has no ``dirac_``."""
    import numpy as np
    cin, (kh, kw) = weight.shape[1], weight.shape[2:]
    weight[:cin] = 0.0
    weight[np.arange(cin), np.arange(cin), kh // 2, kw // 2] = 1.0
    return weight


def airbench_frozen(name: str) -> bool:
    """Parameters airbench never trains: the whitening filters and the BatchNorm weights."""
    return name == "whiten.weight" or (".norm" in name and name.endswith(".weight"))


# ----------------------------------------------------------------------------- weights as data

#: torchvision's ImageNet files (weights described by data: file, URL, classes)
IMAGENET_WEIGHTS: dict[str, dict[str, Any]] = {
    "resnet34": {"enum": "ResNet34_Weights", "tag": "IMAGENET1K_V1",
                 "url": "https://download.pytorch.org/models/resnet34-b627a593.pth"},
    "efficientnet_v2_s": {"enum": "EfficientNet_V2_S_Weights", "tag": "IMAGENET1K_V1",
                          "url": "https://download.pytorch.org/models/efficientnet_v2_s-dd5fe13b.pth"},
    "efficientnet_v2_m": {"enum": "EfficientNet_V2_M_Weights", "tag": "IMAGENET1K_V1",
                          "url": "https://download.pytorch.org/models/efficientnet_v2_m-dc08266a.pth"},
    "efficientnet_v2_l": {"enum": "EfficientNet_V2_L_Weights", "tag": "IMAGENET1K_V1",
                          "url": "https://download.pytorch.org/models/efficientnet_v2_l-59c71312.pth"},
}


#: each model's classifier (a canonical name prefix): what a checkpoint made for another number
#: of classes leaves new (``--weights``; :func:`d2lkaggle.models.weights.match_weights`)
HEADS: dict[str, str] = {
    "resnet18": "fc.", "resnet34": "fc.", "finetune": "head.", "cnn_elu": "fc_layer.4.",
    "efficientnet_v2_s": "classifier.", "efficientnet_v2_m": "classifier.",
    "efficientnet_v2_l": "classifier.", "airbench94": "head.",
}
#: a backbone file's own ImageNet classifier, which a fine-tune net (its own ``head.``) drops
BACKBONE_CLASSIFIERS: dict[str, tuple[str, ...]] = {"finetune": ("fc.", "classifier.")}
#: models whose builder takes ``weights="imagenet"`` (torchvision's ImageNet files)
IMAGENET_MODELS: tuple[str, ...] = ("finetune", "efficientnet_v2_s", "efficientnet_v2_m",
                                    "efficientnet_v2_l")


#: which models take each stochastic-depth field of a Recipe (``--drop-path``, ``--stochastic-depth``)
REGULARIZERS: dict[str, tuple[str, ...]] = {
    "drop_path": ("resnet18", "resnet34"),
    "stochastic_depth": ("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"),
}
#: models whose builder takes ``bn_momentum`` (the recipe's ``--bn-momentum``)
BN_MOMENTUM_MODELS: tuple[str, ...] = ("resnet18", "airbench94")


def check_regularization(recipe: Any) -> None:
    """A recipe's ``drop_path`` / ``stochastic_depth``: a rate in [0, 1), set only for a model
    that has that knob (``ValueError`` naming the flag, the model and the models that have it)."""
    import math
    model = getattr(recipe, "model", None)
    for field, models in REGULARIZERS.items():
        v = getattr(recipe, field, None)
        if v is None:
            continue
        flag = "--" + field.replace("_", "-")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not 0.0 <= v < 1.0:
            raise ValueError(f"{flag} must be a drop rate in [0, 1), got {v!r}")
        if model not in models:
            other = [f for f, ms in REGULARIZERS.items() if model in ms]
            hint = (f"; for {model} use --{other[0].replace('_', '-')}" if other else
                    f"; {model} has no residual blocks to drop" if model == "cnn_elu" else "")
            raise ValueError(f"{flag} {v:g}: model {model!r} has no {field.replace('_', ' ')}; "
                             f"it applies to {', '.join(models)}{hint}")


# ----------------------------------------------------------------------------- the table

#: model name → the builder function every backend's models.py defines under that name
BUILDERS: dict[str, str] = {
    "resnet18": "resnet18", "resnet34": "resnet34", "finetune": "finetune_net",
    "cnn_elu": "cnn_elu", "efficientnet_v2_s": "efficientnet_v2_s",
    "efficientnet_v2_m": "efficientnet_v2_m", "efficientnet_v2_l": "efficientnet_v2_l",
    "airbench94": "airbench94",
}


def create(namespace: dict[str, Any], name: str, num_classes: int, **kw: Any) -> Any:
    """Build table model ``name`` from a backend's ``namespace`` (its models module's globals).

    Unknown names and keywords raise ``ValueError`` listing what exists.
    """
    import inspect
    fn = namespace[BUILDERS[check_model_name(name)]]
    params = inspect.signature(fn).parameters
    bad = [k for k in kw if k not in params or k == "num_classes"]
    if bad:
        valid = [p for p in params if p != "num_classes"]
        raise ValueError(f"model {name!r} takes no argument {', '.join(map(repr, bad))}; "
                         f"its arguments: {', '.join(valid)}")
    return fn(num_classes, **kw)
