"""Competition specs: where each competition keeps its files and the recipe that trains it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

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


#: the CIFAR-10 speed-run record, Keller Jordan's airbench94 (``airbench`` 0.1.8; the paper "94%
#: on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498): 94.01 % mean test accuracy
#: over 1,000 runs, training on the 50,000 labelled images, no validation split, no retrain.
#: Its values are "per 1,024 examples" on a *summed* loss with decoupled lr and wd; on the
#: batch-mean loss every backend uses they are lr = 11.5 / (1 + 1/(1 − 0.85)) = 1.5 at batch 1,024
#: and torch's (coupled) weight decay 0.0153 / 11.5 — the same SGD step (docs/airbench.md).
AIRBENCH94_RECIPE = Recipe(
    "airbench94", epochs=9.9, batch_size=1024, lr=1.5, wd=0.0153 / 11.5,
    # (lr_decay: torch's MultiStepLR gamma, for --sched step / multistep / plateau; the
    # record's triangle does not read it)
    lr_period=None, lr_decay=0.1, valid_ratio=0.0, optimizer="nesterov", momentum=0.85,
    sched="triangle", label_smoothing=0.2, augment="shift-altflip", whiten=True,
    whiten_bias_epochs=3, bn_bias_lr=64.0, average="lookahead", tta="flip-shift",
    normalize="airbench", small_set_batch=None)
#: the default's test-time augmentation on the Kaggle test set (docs/airbench.md, 300,000 images)
DEFAULT_TTA = None
#: ours for the CIFAR competitions (docs/airbench.md): the record's net and training,
#: validated on 10 % of the labels, and its validated model writes the submission (a retrain
#: on all labels doubled the time for no measured gain); a small set (< 40 steps per epoch at
#: 1,024) trains at batch 64 with lr × sqrt(64/1024) (docs/recipes.md, the small-set rule)
AIRBENCH_DEFAULT = replace(AIRBENCH94_RECIPE, valid_ratio=0.1, retrain=False, small_set_batch=64,
                           tta=DEFAULT_TTA)
#: the demo's: the same, 32 channels wide (64/128/128 would be the record's 64/256/256 ÷ 2), 3 epochs
AIRBENCH_DEMO = replace(AIRBENCH_DEFAULT, width=32, epochs=3)

#: the CIFAR competitions' ResNet-18 recipes (``--recipe resnet18``, and ``--model resnet18``):
#: the book's model and batch; AdamW (decoupled wd 0.05) with one-cycle (30 % warm-up, cosine)
#: peaking at 2e-3; lr_period/lr_decay are the book's, used by --sched step; a small set (< 40
#: steps per epoch at 128) trains at batch 32 (Adam's lr unscaled). Learning from the first
#: epoch at any --epochs: the stem whitened from the training images, the speed-runs' light
#: augmentation (2 px shift + flip, no resampling), BatchNorm statistics at momentum 0.4 — hard
#: demo, 5 epochs 0.93 where the chapter's values gave 0.18, 15 epochs 1.00 (docs/recipes.md).
#: The default of cifar10, cifar100 and demo until airbench94 measured faster to the same
#: accuracy (docs/airbench.md).
RESNET18_CIFAR = Recipe("resnet18", epochs=20, batch_size=128, lr=2e-3, wd=0.05, lr_period=4,
                        lr_decay=0.9, optimizer="adamw", sched="onecycle", small_set_batch=32,
                        augment="shift-flip", whiten=True, bn_momentum=0.4)
#: the demo's: a narrow ResNet-18 (width 16), 3 epochs (valid accuracy 0.94-0.97)
RESNET18_DEMO = replace(RESNET18_CIFAR, epochs=3, batch_size=64, lr_decay=0.5, width=16)

COMPETITIONS: dict[str, Competition] = {
    "cifar10": Competition(
        "cifar10", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        AIRBENCH_DEFAULT,
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
        # the ResNet-18 recipe (the speed-run net is tuned for CIFAR-10: --model airbench94 or
        # --recipe airbench94 is the option, docs/airbench.md); --recipe book gives the CIFAR-10
        # chapter's values, --recipe writeup-cifar100-effnetv2 the write-up's
        RESNET18_CIFAR,
        url="https://www.cs.toronto.edu/~kriz/cifar.html",
        notes="Kaggle CIFAR-10 layout with 100 classes, or cifar-100-python.tar.gz",
        num_classes=100),
    "demo": Competition(
        "demo", "trainLabels.csv", "id", "label", "sampleSubmission.csv", "label", 32,
        CIFAR10_MEAN, CIFAR10_STD, "cifar", True,
        AIRBENCH_DEMO, num_classes=10),
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
#: public recipes kept exactly, by name (``--recipe airbench94``)
RECORDS: dict[str, Recipe] = {"airbench94": AIRBENCH94_RECIPE}
#: the CIFAR competitions' ResNet-18 recipes (``--recipe resnet18``): the chapter's model with
#: AdamW one-cycle, the whitened stem and light augmentation (the default before airbench94)
RESNET18_RECIPES: dict[str, Recipe] = {"cifar10": RESNET18_CIFAR, "cifar100": RESNET18_CIFAR,
                                        "demo": RESNET18_DEMO}
#: every name ``--recipe`` accepts: ours, the chapter's, ResNet-18's, the record's, each write-up's
RECIPE_NAMES = ("default", "book", "resnet18") + tuple(RECORDS) + tuple(WRITEUPS)


#: each CIFAR competition's recipe for a model other than its default's (``--model NAME``)
MODEL_RECIPES: dict[str, dict[str, Recipe]] = {
    "cifar10": {"resnet18": RESNET18_CIFAR},
    "cifar100": {"airbench94": replace(AIRBENCH_DEFAULT, normalize="competition")},
    "demo": {"resnet18": RESNET18_DEMO},
}


def model_recipe(comp: "Competition", model: str) -> Recipe | None:
    """The competition's own recipe for ``model`` (``--model resnet18`` trains ResNet-18 with
    its recipe, not with the default's values), or ``None`` when it has none."""
    if comp.recipe is not None and comp.recipe.model == model:
        return comp.recipe
    return MODEL_RECIPES.get(comp.name, {}).get(model)


def recipe_for(comp: "Competition", which: str = "default") -> Recipe:
    """The competition's ``default`` recipe (ours) or the chapter's exact ``book`` one."""
    if which not in RECIPE_NAMES:
        raise ValueError(f"unknown recipe {which!r}; choose from {', '.join(RECIPE_NAMES)}")
    if which in WRITEUPS:
        return WRITEUPS[which].to_recipe(comp)
    if which == "resnet18":
        if comp.name not in RESNET18_RECIPES:
            raise ValueError(f"--recipe resnet18 is for {', '.join(RESNET18_RECIPES)}; "
                             f"{comp.name} has its own default (--recipe default)")
        return RESNET18_RECIPES[comp.name]
    if which in RECORDS:
        if comp.image_size != 32 or comp.submission != "label":
            raise ValueError(f"--recipe {which} is the CIFAR speed-run record's (32 px images, "
                             f"one label each); {comp.name} is not a CIFAR-layout competition")
        return RECORDS[which]
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
    "default": "ours, per competition: the CIFAR-10 speed-run record's net and training "
               "(airbench94) for cifar10 and demo, validated on 10% and submitted without a "
               "retrain (docs/airbench.md); ResNet-18 with AdamW one-cycle for cifar100; Dog "
               "Breed's frozen ResNet-34 with AdamW one-cycle (docs/kaggle_dog.md)",
    "book": "each chapter's exact values from Dive into Deep Learning (SGD with momentum, "
            "StepLR, the chapter's augmentation)",
    "resnet18": "the chapter's ResNet-18 with AdamW one-cycle, a whitened first layer and "
                "light augmentation (cifar10, cifar100, demo)",
    "airbench94": "the CIFAR-10 speed-run record (airbench94, 94% on CIFAR-10 in 9.9 epochs), "
                  "every value as published: its net, batch 1024, Nesterov SGD, triangle "
                  "schedule, label smoothing, weight averaging, flip-shift TTA, no validation",
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
        if name in RECORDS:
            r = RECORDS[name]
            out += [f"{name}  ({RECIPE_WORDS[name]})",
                    f"    cifar10, cifar100, demo {r.model}: {recipe_text(r)}"]
            continue
        if name == "resnet18":
            out.append(f"{name}  ({RECIPE_WORDS[name]})")
            out += [f"    {c:10s} {r.model}: {recipe_text(r)}" for c, r in RESNET18_RECIPES.items()]
            continue
        out.append(f"{name}  ({RECIPE_WORDS[name]})")
        for comp in COMPETITIONS.values():
            if comp.recipe is not None:
                r = recipe_for(comp, name)
                weights = f" from {r.weights} weights" if r.weights else ""
                out.append(f"    {comp.name:10s} {model_text(r)}{weights}: {recipe_text(r)}")
    return "\n".join(out)
