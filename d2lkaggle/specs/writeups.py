"""The two competitors' write-ups as named recipes: every value of their training, as data.

* ``writeup-cifar10-mixup`` — a CIFAR-10 challenge notebook (its author reports 78.58 % test):
  the ELU + BatchNorm CNN, Adam (lr 2e-3, coupled weight decay 1e-3), batch 32, CyclicLR
  ``triangular2`` between lr/2 and 2·lr, MixUp α = 0.4 on every batch, RandomCrop(32, pad 4)
  + flip, the best checkpoint kept.
* ``writeup-cifar100-effnetv2`` — a team's CIFAR-100 write-up (its authors report a 5-run
  mean of 0.8667): EfficientNetV2-S from ImageNet weights, AdamW (lr 4e-4, wd 1e-3), StepLR(10, 0.9),
  batch 128, 25 epochs, reflect-padded crop + flip + rotation, CutMix with p = 0.5, images
  resized to 224 px (bilinear).

Where a write-up is weak we do not copy it: the CIFAR-10 notebook's training loop never calls
``scheduler.step()`` (its rate stays at lr/2), applies ``log_softmax`` before
``CrossEntropyLoss`` and picks its best checkpoint on the *test* set; here the schedule steps
after every batch, the model returns logits, and the best checkpoint is chosen on the
validation split. Its ``step_size_up`` is cut off in the text; its baseline cell has 10
and its schedule plot spans its 200 epochs, so the recipe makes ten full triangles over the
run (10 epochs up and 10 down at 200 epochs), scaled to whatever ``--epochs`` is.

A :class:`Writeup` is framework-free. ``schedule(steps_per_epoch)``, ``mixing()`` and
``train_kwargs(steps_per_epoch)`` give what every backend's ``train`` takes, so the same
recipe runs in torch, MXNet and Paddle.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["Writeup", "WRITEUPS", "get_writeup", "list_writeups", "format_writeups",
           "restore_checkpoint", "cycle_step_size"]


@dataclass(frozen=True)
class Writeup:
    """Every setting of one write-up's training run (see the module docstring for sources)."""

    name: str
    source: str                      # where the values come from
    competition: str                 # the competition the write-up ran
    model: str                       # a model-table name (d2lkaggle.models.table.MODEL_NAMES)
    epochs: int
    batch_size: int
    optimizer: str                   # sgd | nesterov | adam | adamw (torch's definitions)
    lr: float
    wd: float
    sched: str                       # "cyclic" or "step"
    augment: str                     # an augmentation preset of d2lkaggle.data.transforms
    image_size: int
    interpolation: str = "bilinear"
    cycle_mode: str = "triangular2"  # sched="cyclic": torch's CyclicLR mode
    base_lr_factor: float = 0.5      # sched="cyclic": base_lr = lr · factor
    max_lr_factor: float = 2.0       # sched="cyclic": max_lr = lr · factor
    cycles: int = 10                 # sched="cyclic": full triangles over the whole run
    lr_period: int | None = None     # sched="step": epochs between decays
    lr_decay: float = 1.0            # sched="step": factor per decay
    mixup: float = 0.0               # MixUp alpha (0: off)
    cutmix: float = 0.0              # CutMix alpha (0: off)
    mix_prob: float = 1.0            # probability that a batch is mixed
    weights: str | None = None       # None, "imagenet" or a weights file
    stochastic_depth: float | None = None   # EfficientNetV2's drop-path rate (None: model default)
    normalize: str = "competition"   # "competition" mean/std or "imagenet" (pretrained weights)
    keep: str = "best"               # predict with the "best" (valid accuracy) or "last" model
    valid_ratio: float = 0.1

    def with_overrides(self, **kw: Any) -> "Writeup":
        """A copy with every non-``None`` keyword replaced (flags given next to ``--recipe``)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ValueError(f"unknown recipe setting(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def step_size(self, steps_per_epoch: int) -> int:
        """Iterations of one CyclicLR half-cycle: ``cycles`` full triangles over the run."""
        return max(1, round(self.epochs * steps_per_epoch / (2 * self.cycles)))

    def schedule(self, steps_per_epoch: int):
        """The core schedule ``lr(t)`` of this recipe for loaders of ``steps_per_epoch`` batches."""
        from ..train import schedules
        if self.sched == "cyclic":
            return schedules.cyclic(self.lr * self.base_lr_factor, self.lr * self.max_lr_factor,
                                    steps_per_epoch, self.step_size(steps_per_epoch),
                                    mode=self.cycle_mode)
        if self.sched == "step":
            return schedules.step_lr(self.lr, self.lr_period, self.lr_decay)
        raise ValueError(f"recipe {self.name}: unknown schedule {self.sched!r}; "
                         "choose 'cyclic' or 'step'")

    def mixing(self):
        """The core MixUp/CutMix callable, or ``None`` when the recipe mixes nothing."""
        if self.mixup <= 0 and self.cutmix <= 0:
            return None
        from ..data.mixing import Mixup
        # with both on, timm's rule picks CutMix for half of the mixed batches
        return Mixup(mixup_alpha=self.mixup, cutmix_alpha=self.cutmix, prob=self.mix_prob,
                     switch_prob=0.5)

    def model_kwargs(self) -> dict[str, Any]:
        """Keywords for ``backend.create_model(self.model, num_classes, ...)``."""
        kw: dict[str, Any] = {}
        if self.weights is not None:
            kw["weights"] = self.weights
        if self.stochastic_depth is not None:
            kw["stochastic_depth"] = self.stochastic_depth
        return kw

    def train_kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        """Keywords for every backend's ``train(net, train_iter, valid_iter, epochs, lr, wd, ...)``."""
        kw: dict[str, Any] = {"optimizer": self.optimizer, "schedule": self.schedule(steps_per_epoch)}
        mixing = self.mixing()
        if mixing is not None:
            kw["mixing"] = mixing
        return kw

    def norm(self, comp) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the loaders normalise with: the competition's, or ImageNet's."""
        if self.normalize == "imagenet":
            from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
            return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
        return tuple(comp.mean), tuple(comp.std)

    def to_recipe(self, comp: Any = None) -> Any:
        """This write-up as a :class:`d2lkaggle.specs.competitions.Recipe` (what ``--recipe NAME`` runs).

        The cyclic rates are left to follow ``lr`` (lr/2 and 2·lr, the recipe's defaults), so
        ``--lr`` next to ``--recipe`` moves them too; ``cycles`` sets the half-cycle once the
        loader's batches per epoch are known (:func:`cycle_step_size`). Settings a Recipe does
        not hold (``interpolation`` — bilinear, the preset default) are the examples' business.
        """
        from .recipe import Recipe
        base = comp.recipe if comp is not None and comp.recipe is not None else None
        cyclic = self.sched == "cyclic"
        return Recipe(
            self.model, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, wd=self.wd,
            lr_period=None if cyclic else self.lr_period, lr_decay=self.lr_decay,
            valid_ratio=self.valid_ratio, width=base.width if base else 64,
            weights=self.weights, hidden=base.hidden if base else 256,
            optimizer=self.optimizer, sched=self.sched,
            base_lr=None if not cyclic or self.base_lr_factor == 0.5 else self.lr * self.base_lr_factor,
            max_lr=None if not cyclic or self.max_lr_factor == 2.0 else self.lr * self.max_lr_factor,
            cycle_mode=self.cycle_mode if cyclic else None,
            mixup=self.mixup, cutmix=self.cutmix, mix_prob=self.mix_prob, augment=self.augment,
            image_size=self.image_size, cycles=self.cycles if cyclic else None, keep=self.keep,
            normalize=self.normalize, stochastic_depth=self.stochastic_depth)

    def values(self) -> dict[str, Any]:
        """Every setting as a plain dict (what ``d2lkaggle recipes`` prints and summary.json keeps)."""
        return asdict(self)


WRITEUPS: dict[str, Writeup] = {w.name: w for w in (
    Writeup("writeup-cifar10-mixup",
            "a CIFAR-10 challenge notebook (an ELU + BatchNorm CNN with MixUp and CyclicLR, after "
            "He et al.'s 'Bag of tricks for image classification'); its author reports 78.58% "
            "test accuracy",
            "cifar10", "cnn_elu", epochs=200, batch_size=32, optimizer="adam", lr=2e-3, wd=1e-3,
            sched="cyclic", cycle_mode="triangular2", base_lr_factor=0.5, max_lr_factor=2.0,
            cycles=10, mixup=0.4, mix_prob=1.0, augment="crop-flip", image_size=32, keep="best"),
    Writeup("writeup-cifar100-effnetv2",
            "a team's CIFAR-100 classification write-up (EfficientNetV2-S fine-tuned from "
            "ImageNet with CutMix and StepLR, ensembled by bagging); its authors report a mean "
            "accuracy of 0.8667 over 5 runs",
            "cifar100", "efficientnet_v2_s", epochs=25, batch_size=128, optimizer="adamw",
            lr=4e-4, wd=1e-3, sched="step", lr_period=10, lr_decay=0.9, cutmix=1.0, mix_prob=0.5,
            augment="crop-flip-rotate", image_size=224, interpolation="bilinear",
            weights="imagenet", normalize="imagenet", keep="last",
            # the write-up builds torchvision's efficientnet_v2_s without touching its
            # stochastic_depth_prob, so it trained with torchvision's 0.2 (its own ablation of
            # the rate, struck out in the write-up, "made little difference")
            stochastic_depth=0.2),
)}


def list_writeups() -> list[str]:
    """Names of the write-up recipes (``--recipe NAME``)."""
    return list(WRITEUPS)


def get_writeup(name: str) -> Writeup:
    """The write-up recipe ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in WRITEUPS:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(WRITEUPS)}")
    return WRITEUPS[name]


def format_writeups(names: list[str] | None = None) -> str:
    """A readable listing of the write-up recipes and all their values (``d2lkaggle recipes``
    lists these after ``default`` and ``book``: :func:`d2lkaggle.specs.competitions.format_recipes`)."""
    out = []
    for name in names or list(WRITEUPS):
        w = get_writeup(name)
        out.append(f"{w.name}  ({w.source})")
        skip = {"name", "source"} | ({"lr_period", "lr_decay"} if w.sched == "cyclic" else
                                     {"cycle_mode", "base_lr_factor", "max_lr_factor", "cycles"})
        for k, v in w.values().items():
            if k not in skip:
                out.append(f"    {k:17s} {v}")
    return "\n".join(out)


def restore_checkpoint(backend, net: Any, path: str) -> Any:
    """Load the model weights of a training checkpoint (``best.npz``/``last.npz``) into ``net``:
    how a recipe with ``keep="best"`` predicts with its best-validation epoch."""
    from ..utils.files import load_npz
    arrays, _ = load_npz(path)
    backend.set_state(net, {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")},
                      source=path)
    return net


def cycle_step_size(recipe: Any, steps_per_epoch: int) -> Any:
    """A cyclic recipe with ``cycles`` set gets ``step_size`` = iterations of a half cycle
    (``cycles`` full triangles over ``epochs``), unless ``--step-size`` gave one."""
    if getattr(recipe, "sched", None) != "cyclic" or getattr(recipe, "cycles", None) is None \
            or recipe.step_size is not None:
        return recipe
    size = max(1, round(recipe.epochs * steps_per_epoch / (2 * recipe.cycles)))
    return replace(recipe, step_size=size)
