"""The options several subcommands share, and the run keywords they become.

Help texts are generated from the tables they describe (the competitions' recipes, the model
table, the schedules), so ``--help`` says what a run will do.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from ..compete.calibration import CALIBRATIONS, default_calibration
from ..data.transforms import PRESETS
from ..models.table import MODEL_NAMES, REGULARIZERS
from ..specs.competitions import ALIASES, COMPETITIONS, RECIPE_NAMES, RECIPE_WORDS, get_competition
from ..specs.writeups import WRITEUPS
from ..specs.tricks import OPTIMIZERS
from ..train.schedules import CYCLE_MODES, SCHEDULES


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME",
                   help="model-table name: " + ", ".join(MODEL_NAMES)
                   + " (default: the competition's recipe model)")

def _drop_rate(text: str) -> float:
    """A drop probability in [0, 1) (``--drop-path``, ``--stochastic-depth``)."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise argparse.ArgumentTypeError(f"expected a drop rate in [0, 1), e.g. 0.1; got {text!r}")
    return v

def add_regularization_args(p: argparse.ArgumentParser) -> None:
    """Stochastic depth of the model-table models (d2lkaggle.models.table; docs/models.md)."""
    p.add_argument("--drop-path", type=_drop_rate, metavar="RATE",
                   help="stochastic depth of the ResNets' residual blocks ("
                        + ", ".join(REGULARIZERS["drop_path"]) + "): block i of n is dropped "
                        "per example with RATE*i/n while training (default: 0, off)")
    p.add_argument("--stochastic-depth", type=_drop_rate, metavar="RATE",
                   help="EfficientNetV2's stochastic depth, same rule (default: 0.2, torchvision's, "
                        "which the CIFAR-100 write-up's recipe writeup-cifar100-effnetv2 keeps)")

#: recipe fields only some schedules read: the others' recipes do not use them
SCHEDULE_FIELDS = {"lr_period": ("step", "plateau"), "lr_decay": ("step", "multistep", "plateau")}


def recipe_values(field: str) -> str:
    """``cifar10 0.02, dog-breed 0.005, demo 0.05``: a recipe field of every competition
    that has a recipe, read from the competitions table (for help texts); a schedule's field
    is listed only for the recipes whose schedule uses it."""
    vals, unused = [], []
    for name, comp in COMPETITIONS.items():
        if comp.recipe is None:
            continue
        if field in SCHEDULE_FIELDS and comp.recipe.sched not in SCHEDULE_FIELDS[field]:
            unused.append(f"{name}'s {comp.recipe.sched}")
            continue
        v = getattr(comp.recipe, field, getattr(comp, field, None))
        vals.append(f"{name} {'none' if v is None else format(v, 'g') if isinstance(v, float) else v}")
    text = ", ".join(vals)
    if unused:
        text += ("; " if text else "") + f"unused by {', '.join(unused)} schedule"
    return text

def recipe_help(text: str, field: str) -> str:
    """``text (recipe default: cifar10 0.02, ...)``; ``%%`` escapes argparse's format."""
    return f"{text} (recipe default: {recipe_values(field)})".replace("%", "%%")

def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    add_model_args(p)
    add_regularization_args(p)
    p.add_argument("--epochs", type=_epochs, help=recipe_help(
        "epochs of each phase; a fraction cuts the last one short (the record's 9.9)", "epochs"))
    p.add_argument("--batch-size", type=int, help=recipe_help("images per batch", "batch_size"))
    p.add_argument("--lr", type=float, help=recipe_help(
        "learning rate of the recipe's optimizer on the batch-mean loss: the peak of one-cycle, "
        "the start of step/multistep/cosine, the middle of cyclic", "lr"))
    p.add_argument("--wd", type=float, help=recipe_help("weight decay", "wd"))
    p.add_argument("--lr-period", type=int,
                   help=recipe_help("step schedule: multiply the lr by --lr-decay every this many "
                                    "epochs (plateau: the patience)", "lr_period"))
    p.add_argument("--lr-decay", type=float, help=recipe_help(
        "step schedule: the lr factor every --lr-period (multistep, plateau: their factor)",
        "lr_decay"))
    p.add_argument("--valid-ratio", type=float,
                   help=recipe_help("fraction of each class held out for validation (0: none)",
                                     "valid_ratio"))
    p.add_argument("--image-size", type=int,
                   help=recipe_help("side of the square images fed to the net", "image_size"))
    p.add_argument("--weights", help=recipe_help(
        "what every model starts from: a weight file (.safetensors, .npz or a run's "
        "checkpoints/valid/best.npz, PyTorch .pth/.pt, MXNet .params, Paddle .pdparams; read "
        "without running code from it) loads whole, with a new classifier for another number of "
        "classes, or as a backbone; 'imagenet' (finetune, efficientnet_v2_*); 'none' (random "
        "initialisation; a frozen random backbone trains poorly)", "weights"))
    p.add_argument("--out", help="run folder (default: runs/COMPETITION-BACKEND)")
    p.add_argument("--no-retrain", action="store_true",
                   help=recipe_help("predict with the validated model instead of retraining on "
                                    "all labels (same as --predict-with last); whether the "
                                    "recipe retrains", "retrain"))
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffling, augmentation "
                   "and initialisation (default: 0)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=("force",),
                   help="continue from the run folder's checkpoints; refused when they were "
                        "trained with another configuration, unless '--resume force' "
                        "(default: off, start afresh)")
    p.add_argument("--workers", type=int,
                   help="threads decoding and augmenting images (default: min(4, CPU count))")
    add_verbosity_args(p)
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16 autocast where the backend measured it faster)")
    add_output_args(p)
    add_recipe_args(p)
    add_cifar_args(p)
    add_ensemble_args(p)
    add_distributed_args(p)
    add_features_args(p)
    add_calibration_args(p)

def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """``--calibrate``: its default per competition, from the competitions table."""
    by = {m: [n for n, c in COMPETITIONS.items() if default_calibration(c) == m]
          for m in CALIBRATIONS}
    p.add_argument("--calibrate", choices=CALIBRATIONS,
                   help="temperature: divide the logits by one number fitted on the validation "
                        "images (minimising their log loss) before writing probabilities; none: "
                        "the net's softmax as it is (default: " + "; ".join(
                            f"{m} for {', '.join(v)}" for m, v in by.items() if v) + ")")

def add_verbosity_args(p: argparse.ArgumentParser) -> None:
    """Keras' ``verbose`` levels; the run folder's log.txt keeps the epoch lines at every level."""
    v = p.add_mutually_exclusive_group()
    v.add_argument("--quiet", action="store_true",
                   help="Keras' verbose=0: no progress bar and no epoch lines (the run's first "
                        "lines, warnings and the final report stay; log.txt keeps every line) "
                        "(default: off, see --verbose)")
    v.add_argument("--verbose", action="store_true",
                   help="Keras' verbose=2: one line per epoch and per phase, no bar, also on a "
                        "terminal. Default (verbose=1): a live bar with the epoch lines above it "
                        "on a terminal; outside one (a file, a pipe, CI, a notebook capturing "
                        "output) one line per epoch, as --verbose (default: off)")


def verbosity(a: argparse.Namespace) -> Any:
    """``--quiet`` 0, ``--verbose`` 2, else ``"auto"`` (Keras' levels)."""
    return 0 if getattr(a, "quiet", False) else 2 if getattr(a, "verbose", False) else "auto"


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data parallel (docs/scale.md)")
    g.add_argument("--distributed", action="store_true",
                   help="train data parallel: under torchrun it joins the launcher's processes; "
                        "outside one it starts `torchrun --standalone --nproc_per_node N` itself "
                        "with these arguments (torch; --batch-size stays the global batch) "
                        "(default: one process, unless a launcher started this one)")
    g.add_argument("--nproc-per-node", type=int,
                   help="processes --distributed starts on this machine outside a launcher "
                        "(default: one per GPU when there are several, else 2)")

def add_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-features", action="store_true",
                   help="frozen-backbone models (dog-breed's finetune): compute each image's "
                        "backbone features once, cache them next to the data and train the "
                        "head on them; needs --augment none (default: on by itself when the "
                        "run allows it: a frozen backbone, --augment none, one process)")

def features_kwargs(a: argparse.Namespace) -> dict:
    return {"cache_features": True} if getattr(a, "cache_features", False) else {}

def add_archive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extract", action="store_true",
                   help="first unpack archives found in --data-dir (train.7z, test.7z, *.zip); "
                        "default: stop and name the command that does it")

def add_output_args(p: argparse.ArgumentParser) -> None:
    """Which model writes submission.csv, and what happens to a finished run folder."""
    p.add_argument("--predict-with", choices=("retrain", "best", "last"),
                   help="model that writes submission.csv: 'retrain' (a fresh model trained on "
                        "train+valid, as the chapters do), 'best' (the validation phase's best "
                        "epoch, checkpoints/valid/best.npz) or 'last' (its last epoch); best and "
                        "last skip the retrain (default: retrain where the recipe retrains, "
                        "else last: " + recipe_values("retrain").replace("True", "retrain")
                   .replace("False", "last") + ")")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in the run folder (default: refuse; --resume "
                        "continues it instead)")

def add_ensemble_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ensembles, k-fold and test-time augmentation")
    g.add_argument("--ensemble", type=int, metavar="K",
                   help="train K >= 2 members under RUN_DIR/members/k/ and average their "
                        "probabilities (default: off, one model)")
    g.add_argument("--bagging", action="store_true",
                   help="with --ensemble: each member trains on a bootstrap sample of all labels "
                        "and validates on its out-of-bag images, no retrain (default: off)")
    g.add_argument("--members-vary", choices=("seed", "augment", "model"), default="seed",
                   help="what differs between ensemble members (default: seed; member k uses "
                        "SEED+k)")
    g.add_argument("--members-values", metavar="LIST",
                   help="with --members-vary augment|model: the presets or models the members "
                        "cycle through, comma-separated (default: every augmentation preset but "
                        "none / the recipe's model and cnn_elu)")
    g.add_argument("--folds", type=int, metavar="K",
                   help="stratified K-fold: a model per fold under RUN_DIR/folds/k/, out-of-fold "
                        "accuracy over all labels, test predictions averaged (default: off)")
    g.add_argument("--tta", nargs="?", const="flip", type=_tta, metavar="{flip,flip-crop,flip-shift,N,none}",
                   help=recipe_help("test-time augmentation of the predictions: flip (the image "
                                    "and its mirror; what --tta alone means), flip-crop (10 "
                                    "views: corners, centre, mirrored), flip-shift (the speed-run "
                                    "record's 6 views: mirror and 1 px shifts, logits averaged) "
                                    "or N random views of the training augmentation; none turns "
                                    "it off", "tta"))

def _tta(text: str) -> str | int | bool:
    """``--tta``'s value, checked when the command line is read (one-line error); ``none``
    is ``False``: off, where not given (``None``) is the recipe's."""
    from ..train.tta import check_tta
    try:
        return check_tta(text) or False
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_cifar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-kind", choices=("fine", "coarse"),
                   help="CIFAR-100 python archive: learn the 100 fine classes or the 20 coarse "
                        "superclasses (default: fine)")

def _epochs(text: str) -> int | float:
    """``--epochs``: a whole number, or a fraction such as 9.9 (the last epoch cut short)."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number of epochs > 0, e.g. 10 or 9.9; "
                                         f"got {text!r}")
    return int(v) if v.is_integer() else v

def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole epochs separated by commas, e.g. 10,15; got {text!r}")

def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """A recipe's training tricks (docs/recipes.md); unset flags keep the recipe's value."""
    g = p.add_argument_group("training recipe (docs/recipes.md; unset flags keep the recipe's value)")
    g.add_argument("--recipe", choices=RECIPE_NAMES, default="default",
                   help="; ".join(f"{n}: {RECIPE_WORDS.get(n, WRITEUPS[n].source if n in WRITEUPS else n)}"
                                  for n in RECIPE_NAMES).replace("%", "%%")
                   + " (`d2lkaggle recipes` shows every value) (default: default)")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help=f"sgd (momentum 0.9), nesterov, adam, adamw (default: the recipe's: "
                        f"{recipe_values('optimizer')})")
    g.add_argument("--momentum", type=float, metavar="M",
                   help=recipe_help("SGD's momentum (sgd, nesterov; none: 0.9)", "momentum"))
    g.add_argument("--sched", choices=SCHEDULES,
                   help=f"learning-rate schedule, set before every batch; --recipe book is step "
                        f"for every competition (default: the recipe's: {recipe_values('sched')})")
    g.add_argument("--warmup", type=float, metavar="EPOCHS",
                   help="warm-up epochs of cosine/onecycle/triangle (default: cosine 0, onecycle "
                        "30%%, triangle 23%% of the run)")
    g.add_argument("--base-lr", type=float, help="cyclic: lowest rate (default: lr/2)")
    g.add_argument("--max-lr", type=float,
                   help="cyclic: peak rate (default: 2*lr); onecycle: peak rate (default: lr)")
    g.add_argument("--step-size", type=int, metavar="ITERS",
                   help="cyclic: iterations per half cycle, as torch counts (default: 2 epochs)")
    g.add_argument("--cycle-mode", choices=CYCLE_MODES, help="cyclic: amplitude rule (default: triangular)")
    g.add_argument("--milestones", type=_milestones, metavar="E1,E2",
                   help="multistep: epochs at which lr is multiplied by --lr-decay "
                        "(default: 1/2 and 3/4 of the run)")
    g.add_argument("--mixup", type=float, metavar="ALPHA",
                   help="MixUp with Beta(ALPHA, ALPHA) on training batches, e.g. 0.4 (default: 0, off)")
    g.add_argument("--cutmix", type=float, metavar="ALPHA",
                   help="CutMix with Beta(ALPHA, ALPHA), e.g. 1.0 (default: 0, off)")
    g.add_argument("--mix-prob", type=float, metavar="P",
                   help="probability that a training batch is mixed (default: 1)")
    g.add_argument("--switch-prob", type=float, metavar="P",
                   help="with --mixup and --cutmix: probability of CutMix for a mixed batch (default: 0.5)")
    g.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help="soft targets (1-EPS)*onehot + EPS/classes (default: 0, off)")
    g.add_argument("--augment", choices=PRESETS,
                   help="augmentation preset: book (the chapter's), scaled (the chapter's crop "
                        "and jitter scaled to the image size), shift-flip (a 2 px shift and a "
                        "flip), shift-altflip (the same shift, each image mirrored every other "
                        "epoch: the speed-run record's), crop-flip, crop-flip-rotate, none "
                        "(default: the recipe's: " + recipe_values("augment") + ")")
    g.add_argument("--no-wd-bn-bias", action="store_true",
                   help="no weight decay on biases and BatchNorm parameters (default: decay all)")
    g.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="initialise the first convolution with the training images' "
                        "patch-whitening filters, the speed-runs' first layer (default: the "
                        "recipe's: on for cifar10, cifar100 and demo, off for --recipe book)")
    g.add_argument("--bn-momentum", type=float, metavar="M",
                   help="momentum of the BatchNorm running statistics, torch's convention "
                        "(default: the recipe's; the book's 0.1)")
    g.add_argument("--bn-bias-lr", type=float, metavar="K",
                   help=recipe_help("the BatchNorm biases train at K x lr with weight decay wd/K "
                                    "(the speed-run record's 64; none: 1)", "bn_bias_lr"))
    g.add_argument("--average", choices=("lookahead", "none"),
                   help=recipe_help("weight averaging during training: lookahead (the record's: "
                                    "every 5 steps the weights are pulled onto their running "
                                    "average), none", "average"))
    g.add_argument("--whiten-bias-epochs", type=int, metavar="E",
                   help=recipe_help("airbench94: epochs the whitened first layer's bias trains "
                                    "before it is frozen (none: always)", "whiten_bias_epochs"))

def recipe_kwargs(a: argparse.Namespace) -> dict:
    kw = {k: getattr(a, k, None) for k in (
        "optimizer", "sched", "warmup", "base_lr", "max_lr", "step_size", "cycle_mode",
        "milestones", "mixup", "cutmix", "mix_prob", "switch_prob", "label_smoothing", "augment",
        "whiten", "bn_momentum", "momentum", "bn_bias_lr", "average", "whiten_bias_epochs")}
    kw = {k: v for k, v in kw.items() if v is not None}
    if getattr(a, "no_wd_bn_bias", False):
        kw["wd_exclude"] = "bn_bias"
    return dict(recipe=getattr(a, "recipe", "default"), **kw)

def run_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                wd=a.wd, lr_period=a.lr_period, lr_decay=a.lr_decay, valid_ratio=a.valid_ratio,
                image_size=a.image_size, weights=a.weights, retrain=not a.no_retrain, seed=a.seed,
                resume=a.resume, progress=not a.quiet, verbose=verbosity(a),
                num_workers=a.workers,
                amp=False if a.no_amp else "auto", label_kind=a.label_kind, **recipe_kwargs(a),
                **model_kwargs(a), **output_kwargs(a), **features_kwargs(a),
                calibrate=getattr(a, "calibrate", None))

def model_kwargs(a: argparse.Namespace) -> dict:
    kw = {"model": a.model} if getattr(a, "model", None) else {}
    for k in ("drop_path", "stochastic_depth"):   # Recipe fields; None keeps the recipe's
        if getattr(a, k, None) is not None:
            kw[k] = getattr(a, k)
    return kw

def output_kwargs(a: argparse.Namespace) -> dict:
    # --no-retrain is --predict-with last (its help says so), also where a recipe would
    # predict with its best epoch
    last = "last" if getattr(a, "no_retrain", False) else None
    return dict(predict_with=getattr(a, "predict_with", None) or last,
                overwrite=getattr(a, "overwrite", False))

def competition_arg(runnable: bool):
    """argparse type: a competition of the table (aliases allowed); with ``runnable``, one
    with a training recipe, so ``run`` fails upfront, in one line, for the others."""
    def check(name: str) -> str:
        try:
            comp = get_competition(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if runnable and comp.recipe is None:
            raise argparse.ArgumentTypeError(
                f"{comp.name} has no training recipe yet ({comp.notes}); runnable: "
                + ", ".join(competition_names(runnable=True)))
        return comp.name
    return check

def competition_names(runnable: bool = False) -> list[str]:
    return [n for n, c in COMPETITIONS.items() if c.recipe is not None or not runnable]

def competition_help() -> str:
    parts = []
    for n, c in COMPETITIONS.items():
        parts.append(n if c.recipe is not None else f"{n} (not runnable yet: {c.notes})")
    return ("competition: " + ", ".join(parts) + "; aliases: "
            + ", ".join(f"{k}={v}" for k, v in ALIASES.items())).replace("%", "%%")

def set_help(p: argparse.ArgumentParser, option: str, text: str) -> None:
    for action in p._actions:
        if option in action.option_strings:
            action.help = text

def add_download_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deadline", type=float,
                   help="give up a download after this many seconds (default: no limit)")
    p.add_argument("--stall-timeout", type=float,
                   help="give up when no byte arrives for this many seconds (default: 60)")
    p.add_argument("--max-extract-gb", type=float,
                   help="largest total size an archive may unpack to, in GB (default: 20x "
                        "the archive, at least 0.27 GB: refuses zip bombs)")
