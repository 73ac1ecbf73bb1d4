"""Competition specs: where each competition keeps its files and the recipe that trains it."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .recipe import Recipe
from .writeups import WRITEUPS, format_writeups


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
    metric: str = "accuracy"         # how Kaggle scores it: "accuracy" or "log_loss"
    num_classes: int | None = None   # the competition's classes (the chapters' get_net builds
                                     # its model before any data is read)


COMPETITIONS: dict[str, Competition] = {
    "cifar10": Competition(
        "cifar10", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        # ours (docs/recipes.md): the book's model and batch; AdamW (decoupled wd 0.05) with
        # one-cycle (30 % warm-up, cosine) peaking at 2e-3; lr_period/lr_decay are the book's,
        # used by --sched step; a small set (< 40 steps per epoch at 128) trains at batch 32
        # (Adam's lr unscaled). Learning from the first epoch at any --epochs: the
        # stem whitened from the training images, the speed-runs' light augmentation (2 px
        # shift + flip, no resampling), BatchNorm statistics at momentum 0.4 — hard demo,
        # 5 epochs 0.93 where it gave 0.18, 15 epochs 1.00
        Recipe("resnet18", epochs=20, batch_size=128, lr=2e-3, wd=0.05, lr_period=4,
               lr_decay=0.9, optimizer="adamw", sched="onecycle", small_set_batch=32,
               augment="shift-flip", whiten=True, bn_momentum=0.4),
        url="https://www.kaggle.com/c/cifar-10", num_classes=10),
    "dog-breed": Competition(
        "dog-breed", "labels.csv", "id", "breed", "sample_submission.csv", "proba", 224,
        IMAGENET_MEAN, IMAGENET_STD, "dog", False,
        # ours (docs/kaggle_dog.md): the chapter's frozen ResNet-34 and head, trained with
        # AdamW (wd 0.05) and one-cycle peaking at 1e-3 on unaugmented images, so the backbone
        # runs once per image (cached features); predictions average the image and its mirror
        # (TTA flip) and are calibrated (a temperature fitted on validation). A small set
        # (< 40 steps per epoch at 128) trains at batch 32. Stand-in Dog set, 64 px, 5 epochs,
        # 3 seeds, every backend: valid log loss 0.151 where the chapter's values gave 0.470
        Recipe("finetune", epochs=10, batch_size=128, lr=1e-3, wd=0.05, lr_period=2,
               lr_decay=0.9, weights="imagenet", optimizer="adamw", sched="onecycle",
               augment="none", tta="flip", small_set_batch=32),
        url="https://www.kaggle.com/c/dog-breed-identification", metric="log_loss",
        num_classes=120),
    "cifar100": Competition(
        "cifar100", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar", True,
        # cifar10's default (ours: the chapter's ResNet-18 with one-cycle) for 100 classes;
        # --recipe book gives the chapter's values, --recipe writeup-cifar100-effnetv2 the write-up's
        Recipe("resnet18", epochs=20, batch_size=128, lr=2e-3, wd=0.05, lr_period=4,
               lr_decay=0.9, optimizer="adamw", sched="onecycle", small_set_batch=32,
               augment="shift-flip", whiten=True, bn_momentum=0.4),
        url="https://www.cs.toronto.edu/~kriz/cifar.html",
        notes="Kaggle CIFAR-10 layout with 100 classes, or cifar-100-python.tar.gz",
        num_classes=100),
    "demo": Competition(
        "demo", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        # cifar10's default on a narrow ResNet-18 (width 16), 3 epochs: `d2lkaggle demo` (train +
        # retrain, 900 training images at batch 32 by the small-set rule) in about a minute on
        # 2 cores in every backend, valid accuracy 0.94-0.97 from epoch 1's 0.4-0.6
        # (docs/recipes.md; 16 epochs of SGD one-cycle before)
        Recipe("resnet18", epochs=3, batch_size=64, lr=2e-3, wd=0.05, lr_period=4,
               lr_decay=0.5, width=16, optimizer="adamw", sched="onecycle", small_set_batch=32,
               augment="shift-flip", whiten=True, bn_momentum=0.4),
        num_classes=10),
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
#: every name ``--recipe`` accepts: ours, the chapter's, and each write-up's
RECIPE_NAMES = ("default", "book") + tuple(WRITEUPS)


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


#: what ``default`` and ``book`` are, in ``d2lkaggle recipes``
RECIPE_WORDS = {
    "default": "ours, per competition (docs/recipes.md): the chapters' models with a one-cycle "
               "schedule where it measured better",
    "book": "each chapter's exact values from Dive into Deep Learning (SGD with momentum, "
            "StepLR, the chapter's augmentation)",
}


def format_recipes(names: list[str] | None = None) -> str:
    """Every name ``--recipe`` accepts (``default``, ``book``, each write-up) with what it
    trains, per competition for ``default`` and ``book`` (``d2lkaggle recipes``)."""
    from .tricks import model_text, recipe_text
    names = names or list(RECIPE_NAMES)
    unknown = [n for n in names if n not in RECIPE_NAMES]
    if unknown:
        raise ValueError(f"unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPE_NAMES)}")
    out = []
    for name in names:
        if name in WRITEUPS:
            listing = format_writeups([name]).split("\n")
            r = WRITEUPS[name].to_recipe()
            out += [listing[0], f"    {'trains':17s} {model_text(r)}: {recipe_text(r)}", *listing[1:]]
            continue
        out.append(f"{name}  ({RECIPE_WORDS[name]})")
        for comp in COMPETITIONS.values():
            if comp.recipe is not None:
                r = recipe_for(comp, name)
                weights = f" from {r.weights} weights" if r.weights else ""
                out.append(f"    {comp.name:10s} {model_text(r)}{weights}: {recipe_text(r)}")
    return "\n".join(out)
