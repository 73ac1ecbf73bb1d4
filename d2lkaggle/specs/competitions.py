"""Competition specs: where each competition keeps its files and the recipe that trains it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Recipe:
    """Default hyperparameters of a competition (losses are batch means in every backend)."""

    model: str                       # "resnet18" (the CIFAR-10 chapter) or "finetune" (Dog Breed)
    epochs: int
    batch_size: int
    lr: float
    wd: float
    lr_period: int | None
    lr_decay: float
    valid_ratio: float = 0.1
    width: int = 64                  # first-stage channels of resnet18
    weights: str | None = None       # finetune backbone: None, "imagenet" or a path
    hidden: int = 256                # finetune head width
    # training tricks (issue 11; docs/recipes.md): optimizer, per-batch schedule, mixing, augmentation
    optimizer: str = "sgd"           # sgd | nesterov | adam | adamw
    sched: str = "step"              # step | multistep | cyclic | onecycle | cosine | plateau
    warmup: float | None = None      # warm-up epochs (cosine: 0, onecycle: 30 % of the run)
    base_lr: float | None = None     # cyclic: lowest rate (default lr / 2)
    max_lr: float | None = None      # cyclic: peak (default 2 * lr); onecycle: peak (default lr)
    step_size: int | None = None     # cyclic: iterations per half cycle (default 2 epochs)
    cycle_mode: str | None = None    # cyclic: triangular (default) | triangular2 | exp_range
    milestones: tuple[int, ...] | None = None  # multistep epochs (default 1/2 and 3/4 of the run)
    mixup: float = 0.0               # MixUp Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0              # CutMix Beta(alpha, alpha); 0 = off
    mix_prob: float | None = None    # probability a batch is mixed (default 1)
    switch_prob: float = 0.5         # with both alphas: probability of CutMix for a mixed batch
    label_smoothing: float = 0.0     # epsilon of the soft targets
    augment: str = "book"            # book | crop-flip | crop-flip-rotate | none
    wd_exclude: str | None = None    # "bn_bias": no weight decay on biases and norm layers
    # the write-up recipes (issue 13; d2lkaggle/writeups.py)
    image_size: int | None = None    # training/test image size (None: the competition's)
    cycles: int | None = None        # cyclic: full triangles over the run (sets step_size)
    keep: str = "last"               # "best": predict with the best-validation epoch, no retrain
    normalize: str = "competition"   # loaders' mean/std: the competition's, or "imagenet" (003)
    # stochastic depth of the model-table models (d2lkaggle.models.table; None: the model's default)
    drop_path: float | None = None         # resnet18/resnet34 (default 0, off)
    stochastic_depth: float | None = None  # efficientnet_v2_s|m|l (default 0.2, torchvision's)
    # a training set too small for batch_size (fewer than recipes.MIN_STEPS_PER_EPOCH steps per
    # epoch) trains at this batch, lr scaled by the same factor (docs/recipes.md); None: never
    small_set_batch: int | None = None

    def with_overrides(self, **kw: Any) -> "Recipe":
        """A copy with every non-``None`` keyword replaced."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


@dataclass(frozen=True)
class Competition:
    """Files, columns, submission kind and image statistics of one Kaggle competition."""

    name: str
    labels_file: str
    id_column: str
    label_column: str
    sample_file: str
    submission: str                  # "label" (CIFAR-10) or "proba" (Dog Breed)
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: str                     # augmentation recipe in d2lkaggle.data.transforms
    fixed_size: bool                 # all images the same size: decode once into one array
    recipe: Recipe | None
    train_dir: str = "train"
    test_dir: str = "test"
    url: str = ""
    notes: str = field(default="", compare=False)


COMPETITIONS: dict[str, Competition] = {
    "cifar10": Competition(
        "cifar10", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        # ours (docs/recipes.md): the book's model and batch; AdamW (decoupled wd 0.05) with
        # one-cycle (30 % warm-up, cosine) peaking at 2e-3; lr_period/lr_decay are the book's,
        # used by --sched step; a small set (< 40 steps per epoch at 128) trains at batch 32
        # (Adam's lr unscaled): 0.993 / 1.000 on the hard demo where SGD gave 0.918
        Recipe("resnet18", epochs=20, batch_size=128, lr=2e-3, wd=0.05, lr_period=4,
               lr_decay=0.9, optimizer="adamw", sched="onecycle", small_set_batch=32),
        url="https://www.kaggle.com/c/cifar-10"),
    "dog-breed": Competition(
        "dog-breed", "labels.csv", "id", "breed", "sample_submission.csv", "proba", 224,
        IMAGENET_MEAN, IMAGENET_STD, "dog", False,
        Recipe("finetune", epochs=10, batch_size=128, lr=5e-3, wd=1e-4, lr_period=2,
               lr_decay=0.9, weights="imagenet"),
        url="https://www.kaggle.com/c/dog-breed-identification"),
    "cifar100": Competition(
        "cifar100", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar", True,
        # cifar10's default (ours: the chapter's ResNet-18 with one-cycle) for 100 classes;
        # --recipe book gives the chapter's values, --recipe writeup-cifar100-effnetv2 the write-up's
        Recipe("resnet18", epochs=20, batch_size=128, lr=2e-3, wd=0.05, lr_period=4,
               lr_decay=0.9, optimizer="adamw", sched="onecycle", small_set_batch=32),
        url="https://www.cs.toronto.edu/~kriz/cifar.html",
        notes="Kaggle CIFAR-10 layout with 100 classes, or cifar-100-python.tar.gz"),
    "demo": Competition(
        "demo", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        # a narrow ResNet-18 so the whole demo (train + retrain) fits in minutes on 2 CPU cores;
        # one-cycle peaking at 0.2 (the best of the hard-demo runs in docs/recipes.md); the
        # demo's 900 training images give 14 steps per epoch at 64, so the small-set rule
        # trains it at batch 32, peak 0.1 (docs/recipes.md: 10 epochs with drop path)
        Recipe("resnet18", epochs=16, batch_size=64, lr=0.2, wd=5e-4, lr_period=4,
               lr_decay=0.5, width=16, sched="onecycle", small_set_batch=32)),
}
#: each chapter's exact hyperparameters (``--recipe book``): SGD + momentum, StepLR per epoch,
#: integer labels, the chapter's augmentation. The COMPETITIONS recipes are the defaults.
BOOK_RECIPES: dict[str, Recipe] = {
    # the MXNet tab's values (mean loss); the torch tab's 2e-4 assumed a summed loss
    "cifar10": Recipe("resnet18", epochs=20, batch_size=128, lr=0.02, wd=5e-4, lr_period=4,
                      lr_decay=0.9),
    "dog-breed": Recipe("finetune", epochs=10, batch_size=128, lr=5e-3, wd=1e-4, lr_period=2,
                        lr_decay=0.9, weights="imagenet"),
    "cifar100": Recipe("resnet18", epochs=20, batch_size=128, lr=0.02, wd=5e-4, lr_period=4,
                       lr_decay=0.9),   # the CIFAR-10 chapter's values, 100 classes
    "demo": Recipe("resnet18", epochs=16, batch_size=64, lr=0.05, wd=5e-4, lr_period=4,
                   lr_decay=0.5, width=16),
}
RECIPE_NAMES = ("default", "book")
from .writeups import WRITEUPS  # noqa: E402  (the write-ups as named recipes; no cycle: data only)
RECIPE_NAMES = RECIPE_NAMES + tuple(WRITEUPS)


def recipe_for(comp: "Competition", which: str = "default") -> Recipe:
    """The competition's ``default`` recipe (ours) or the chapter's exact ``book`` one."""
    if which not in RECIPE_NAMES:
        raise ValueError(f"unknown recipe {which!r}; choose from {', '.join(RECIPE_NAMES)}")
    if which in WRITEUPS:
        return WRITEUPS[which].to_recipe(comp)
    recipe = BOOK_RECIPES.get(comp.name, comp.recipe) if which == "book" else comp.recipe
    if recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    return recipe


ALIASES = {"cifar-10": "cifar10", "dog": "dog-breed", "dog-breed-identification": "dog-breed",
           "cifar-100": "cifar100"}


def get_competition(name: str) -> Competition:
    """The spec of competition ``name`` (``cifar10``, ``dog-breed``, ``cifar100``, ``demo``)."""
    key = ALIASES.get(name, name)
    if key not in COMPETITIONS:
        raise ValueError(f"unknown competition {name!r}; choose from {', '.join(COMPETITIONS)}")
    return COMPETITIONS[key]
