"""A :class:`~d2lkaggle.specs.competitions.Recipe`'s tricks turned into training objects.

The pipeline and the CLI call :func:`check_recipe` before anything is written, then, per
training phase (its own steps per epoch), :func:`make_schedule` and :func:`make_mixing`, and
give the backend's ``train`` the keywords of :func:`train_kwargs`. No framework is imported.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

from ..data.mixing import Mixup
from ..data.transforms import PRESETS
from ..train import schedules as S
from ..train.optim import OPTIMIZERS
from ..train.tta import check_tta
from ..utils.progress import plural
from .recipe import Recipe

WD_EXCLUDE = (None, "bn_bias")
#: one-cycle needs steps, not epochs: a default recipe whose batch leaves fewer optimizer steps
#: than this per epoch switches to its ``small_set_batch`` (docs/recipes.md, the hard demo)
MIN_STEPS_PER_EPOCH = 40

Log = Callable[[str], Any]


def _finite(name: str, v: float | None, low: float = 0.0, low_ok: bool = True,
            high: float | None = None, high_ok: bool = True) -> None:
    if v is None:
        return
    ok = isinstance(v, (int, float)) and math.isfinite(v) and (v >= low if low_ok else v > low)
    if ok and high is not None:
        ok = v <= high if high_ok else v < high
    if not ok:
        rng = ("[" if low_ok else "(") + f"{low:g}, " + (f"{high:g}" + ("]" if high_ok else ")")
                                                         if high is not None else "inf)")
        raise ValueError(f"{name} must be in {rng}, got {v!r}")


def check_recipe(r: Recipe) -> None:
    """Every trick of ``r`` checked, with one clear message naming the flag (before training)."""
    if r.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {r.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if r.sched not in S.SCHEDULES:
        raise ValueError(f"--sched {r.sched!r} is not one of {', '.join(S.SCHEDULES)}")
    if r.augment not in PRESETS:
        raise ValueError(f"--augment {r.augment!r} is not one of {', '.join(PRESETS)}")
    if r.wd_exclude not in WD_EXCLUDE:
        raise ValueError(f"wd_exclude must be None or 'bn_bias', got {r.wd_exclude!r}")
    if int(r.epochs) < 0:
        raise ValueError(f"--epochs must be >= 0, got {r.epochs}")
    if int(r.batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {r.batch_size}")
    _finite("--lr", r.lr, low_ok=False)
    _finite("--wd", r.wd)
    _finite("--mixup", r.mixup)
    _finite("--cutmix", r.cutmix)
    _finite("--mix-prob", r.mix_prob, high=1.0)
    _finite("--switch-prob", r.switch_prob, high=1.0)
    _finite("--label-smoothing", r.label_smoothing, high=1.0, high_ok=False)
    if r.mix_prob is not None and r.mixup == 0 and r.cutmix == 0:
        raise ValueError(f"--mix-prob {r.mix_prob:g} mixes nothing: MixUp and CutMix are off "
                         "(give --mixup ALPHA or --cutmix ALPHA > 0, or drop --mix-prob)")
    only = {"warmup": ("cosine", "onecycle"), "base_lr": ("cyclic",), "step_size": ("cyclic",),
            "cycle_mode": ("cyclic",), "milestones": ("multistep",),
            "max_lr": ("cyclic", "onecycle")}
    for field, scheds in only.items():
        if getattr(r, field) is not None and r.sched not in scheds:
            flag = "--" + field.replace("_", "-")
            raise ValueError(f"{flag} applies to --sched {' or '.join(scheds)}, not {r.sched!r}")
    _finite("--warmup", r.warmup)
    if r.warmup is not None and r.epochs > 0 and r.warmup >= r.epochs:
        raise ValueError(f"--warmup {r.warmup:g} must be shorter than the run ({r.epochs} epochs)")
    _finite("--base-lr", r.base_lr)
    _finite("--max-lr", r.max_lr, low_ok=False)
    if r.step_size is not None and int(r.step_size) < 1:
        raise ValueError(f"--step-size must be >= 1 iteration, got {r.step_size}")
    if r.cycle_mode is not None and r.cycle_mode not in S.CYCLE_MODES:
        raise ValueError(f"--cycle-mode {r.cycle_mode!r} is not one of {', '.join(S.CYCLE_MODES)}")
    if r.sched == "step" and r.lr_period is not None and int(r.lr_period) < 1:
        raise ValueError(f"--lr-period must be >= 1, got {r.lr_period}")
    if r.sched in ("step", "multistep", "plateau"):
        _finite("--lr-decay", r.lr_decay, low_ok=False)
    if r.milestones is not None and (not r.milestones or any(
            int(m) != m or not 1 <= m < max(2, r.epochs) for m in r.milestones)):
        raise ValueError(f"--milestones must be epochs in 1..{r.epochs - 1}, got "
                         + ",".join(str(m) for m in r.milestones))
    check_tta(r.tta)   # --tta's values
    from ..models.table import BN_MOMENTUM_MODELS, check_regularization
    from ..models.whitening import FIRST_CONV
    check_regularization(r)   # --drop-path / --stochastic-depth: a rate, for a model that has it
    if r.whiten and r.model not in FIRST_CONV:
        raise ValueError(f"--whiten: model {r.model!r} has no stem convolution to whiten; it "
                         f"applies to {', '.join(FIRST_CONV)} (--no-whiten turns it off)")
    if r.bn_momentum is not None:
        _finite("--bn-momentum", r.bn_momentum, low_ok=False, high=1.0)
        if r.model not in BN_MOMENTUM_MODELS:
            raise ValueError(f"--bn-momentum applies to {', '.join(BN_MOMENTUM_MODELS)}, not "
                             f"{r.model!r}")
    # a dry run of the schedule (a guess of 10 batches per epoch) catches bad rates early
    if r.epochs > 0:
        sched = make_schedule(r, r.epochs, 10)
        S.check_schedule(sched, r.epochs, 10)


def make_schedule(r: Recipe, num_epochs: int, steps_per_epoch: int,
                  log: Log | None = None) -> S.Schedule:
    """The recipe's learning-rate schedule for a run of ``num_epochs`` × ``steps_per_epoch``.

    ``--lr-decay``/``--lr-period`` are StepLR's factor and period, multistep's factor, and
    plateau's factor and patience. Defaults that depend on ``--lr`` are said through ``log``.
    """
    say = log or (lambda *_: None)
    if r.sched == "step":
        return S.step_lr(r.lr, r.lr_period, r.lr_decay)
    if r.sched == "multistep":
        ms = r.milestones or tuple(sorted({max(1, num_epochs // 2), max(1, num_epochs * 3 // 4)}))
        return S.multistep(r.lr, ms, r.lr_decay)
    if r.sched == "cyclic":
        base = r.base_lr if r.base_lr is not None else r.lr / 2
        peak = r.max_lr if r.max_lr is not None else 2 * r.lr
        size = r.step_size or 2 * steps_per_epoch
        if r.max_lr is None or r.base_lr is None or r.step_size is None:
            say(f"cyclic schedule: base lr {base:g}, max lr {peak:g} (defaults: lr/2 and 2*lr), "
                f"{size} iterations up and down (default: 2 epochs)")
        if base > peak:
            raise ValueError(f"--base-lr {base:g} is above the max lr {peak:g}")
        return S.cyclic(base, peak, steps_per_epoch, size, None, r.cycle_mode or "triangular")
    if r.sched == "onecycle":
        pct = 0.3 if r.warmup is None else r.warmup / max(1, num_epochs)
        return S.onecycle(r.max_lr or r.lr, max(1, num_epochs), steps_per_epoch,
                          pct_start=min(max(pct, 1e-3), 0.99))
    if r.sched == "cosine":
        return S.cosine(r.lr, num_epochs, warmup=r.warmup or 0.0)
    if r.sched == "plateau":
        return S.plateau(r.lr, factor=r.lr_decay if r.lr_decay < 1 else 0.1,
                         patience=r.lr_period if r.lr_period is not None else 10)
    raise ValueError(f"--sched {r.sched!r} is not one of {', '.join(S.SCHEDULES)}")


def make_mixing(r: Recipe, num_classes: int) -> Mixup | None:
    """The recipe's MixUp/CutMix/label smoothing, or None when all are off."""
    if r.mixup == 0 and r.cutmix == 0 and r.label_smoothing == 0:
        return None
    return Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix,
                 prob=1.0 if r.mix_prob is None else r.mix_prob, switch_prob=r.switch_prob,
                 label_smoothing=r.label_smoothing, num_classes=num_classes)


def train_kwargs(r: Recipe, schedule: S.Schedule | None, mixing: Mixup | None) -> dict[str, Any]:
    """Keywords for a backend's ``train(...)``: only those that differ from its defaults.

    (Passing only non-defaults keeps the book's plain SGD + StepLR call unchanged.)
    """
    kw: dict[str, Any] = {}
    if r.sched != "step" and schedule is not None:
        kw["schedule"] = schedule
    if mixing is not None:
        kw["mixing"] = mixing
    if r.optimizer == "nesterov":
        kw["optimizer"], kw["nesterov"] = "sgd", True
    elif r.optimizer != "sgd":
        kw["optimizer"] = r.optimizer
    if r.wd_exclude is not None:
        kw["wd_exclude"] = r.wd_exclude
    return kw


def describe(r: Recipe, schedule: S.Schedule | None, mixing: Mixup | None) -> dict[str, Any]:
    """What summary.json records about the tricks of a run."""
    return {"optimizer": r.optimizer, "wd_exclude": r.wd_exclude,
            "schedule": schedule.describe() if hasattr(schedule, "describe") else repr(schedule),
            "mixing": mixing.describe() if mixing is not None else None, "augment": r.augment}


def fit_batch_to_set(r: Recipe, n_train: int | None, *, batch_given: bool = False,
                     lr_given: bool = False) -> tuple[Recipe, str | None]:
    """The recipe's batch for a training set of ``n_train`` images (train step of the chapter).

    A recipe with ``small_set_batch`` whose ``batch_size`` would leave fewer than
    :data:`MIN_STEPS_PER_EPOCH` steps per epoch trains at ``small_set_batch`` instead. SGD's
    learning rate is scaled by the same factor (the same rate per example, so the full-size
    set's tuned value keeps its meaning); Adam's and AdamW's is kept, because their step is
    normalised per parameter and does not grow with the batch. A batch or lr the user gave
    is never changed. Returns the recipe and a line saying what changed (``None``: nothing).
    """
    b = r.small_set_batch
    if (b is None or batch_given or n_train is None or b >= r.batch_size
            or n_train // r.batch_size >= MIN_STEPS_PER_EPOCH):
        return r, None
    scaled = r.optimizer in ("sgd", "nesterov")   # Adam's step is normalised per parameter
    lr = r.lr * b / r.batch_size if scaled and not lr_given else r.lr
    why = "the same rate per example" if scaled else f"{r.optimizer}'s step does not grow with the batch"
    note = (f"small training set: {n_train} images give {n_train // r.batch_size} steps per epoch "
            f"at batch {r.batch_size}, so the recipe trains at batch {b}"
            + ("" if lr_given else f", lr {lr:g} ({why})") + "; --batch-size sets the batch")
    return r.with_overrides(batch_size=b, lr=lr), note


def fit_tricks_to_model(r: Recipe, given: Any = ()) -> tuple[Recipe, str | None]:
    """The recipe's model-specific tricks (the whitened stem, the BatchNorm momentum) after
    ``--model`` chose another model: kept where the model has them, dropped where it has not
    unless the user gave them (then :func:`check_recipe` refuses them in one line). Returns
    the recipe and a line saying what was dropped (``None``: nothing)."""
    from ..models.table import BN_MOMENTUM_MODELS
    from ..models.whitening import FIRST_CONV
    drop = {}
    if r.whiten and r.model not in FIRST_CONV and "whiten" not in given:
        drop["whiten"] = False
    if r.bn_momentum is not None and r.model not in BN_MOMENTUM_MODELS \
            and "bn_momentum" not in given:
        drop["bn_momentum"] = None
    if not drop:
        return r, None
    what = " and ".join(("whitened first layer" if k == "whiten" else
                         f"BatchNorm momentum {r.bn_momentum:g}") for k in drop)
    verb = "apply" if len(drop) > 1 else "applies"
    return replace(r, **drop), (f"--model {r.model}: the recipe's {what} {verb} to "
                                f"{', '.join(sorted(set(FIRST_CONV) | set(BN_MOMENTUM_MODELS)))} "
                                f"only; {r.model} trains without "
                                f"{'them' if len(drop) > 1 else 'it'}")


#: how titles, help and ``d2lkaggle recipes`` name each optimizer
OPTIMIZER_WORDS = {"sgd": "SGD (momentum 0.9)", "nesterov": "SGD (Nesterov momentum 0.9)",
                   "adam": "Adam", "adamw": "AdamW"}


def schedule_text(r: Recipe) -> str:
    """The recipe's learning-rate schedule with its parameters, in words (what a run uses)."""
    if r.sched == "step":
        return (f"lr {r.lr:g} x{r.lr_decay:g} every {plural(r.lr_period, 'epoch')} (StepLR)"
                if r.lr_period and r.lr_decay != 1 else f"constant lr {r.lr:g}")
    if r.sched == "multistep":
        at = ",".join(str(m) for m in r.milestones) if r.milestones else "1/2 and 3/4 of the run"
        return f"lr {r.lr:g} x{r.lr_decay:g} at epochs {at} (MultiStepLR)"
    if r.sched == "cyclic":
        base = r.base_lr if r.base_lr is not None else r.lr / 2
        peak = r.max_lr if r.max_lr is not None else 2 * r.lr
        length = (f"{r.cycles} cycles over the run" if r.cycles else
                  f"{r.step_size} iterations up and down" if r.step_size else "2 epochs up and down")
        return f"cyclic {r.cycle_mode or 'triangular'} lr {base:g}-{peak:g}, {length}"
    if r.sched == "onecycle":
        warm = f"{r.warmup:g}-epoch warm-up" if r.warmup is not None else "30% warm-up"
        return f"one-cycle to lr {(r.max_lr or r.lr):g} ({warm}, cosine down)"
    if r.sched == "cosine":
        return f"cosine from lr {r.lr:g}" + (f" after a {r.warmup:g}-epoch warm-up" if r.warmup else "")
    if r.sched == "plateau":
        return (f"lr {r.lr:g} x{r.lr_decay if r.lr_decay < 1 else 0.1:g} on a plateau "
                f"(patience {r.lr_period if r.lr_period is not None else 10})")
    return f"{r.sched} lr {r.lr:g}"


def mixing_text(r: Recipe) -> str | None:
    """MixUp / CutMix / label smoothing in words (``None``: integer labels)."""
    parts = []
    if r.mixup:
        parts.append(f"MixUp {r.mixup:g}")
    if r.cutmix:
        parts.append(f"CutMix {r.cutmix:g}")
    if parts and r.mix_prob is not None and r.mix_prob < 1:
        parts[-1] += f" on {r.mix_prob:.0%} of batches"
    if r.label_smoothing:
        parts.append(f"label smoothing {r.label_smoothing:g}")
    return " + ".join(parts) or None


def model_text(r: Recipe) -> str:
    """The model a recipe builds, by its table name and what sets it apart from that name's
    default (``resnet18 (width 16)``: the demo's narrow net, not the chapter's)."""
    default = Recipe.__dataclass_fields__["width"].default
    if r.model == "resnet18" and r.width != default:   # (only resnet18 reads the width)
        return f"{r.model} (width {r.width})"
    return r.model


def recipe_text(r: Recipe) -> str:
    """What a run trains with, from its recipe (after the overrides and the small-set rule):
    epochs, batch, optimizer and weight decay, the schedule and its parameters, mixing and the
    augmentation — the words of titles, legends and ``d2lkaggle recipes``."""
    opt = OPTIMIZER_WORDS.get(r.optimizer, r.optimizer) + f" wd {r.wd:g}"
    if r.wd_exclude:
        opt += " (none on biases and norms)"
    batch = f"batch {r.batch_size}"
    if r.small_set_batch is not None and r.small_set_batch < r.batch_size:   # not applied yet
        batch += f" ({r.small_set_batch} on a small set)"
    parts = [plural(r.epochs, "epoch"), batch, opt, schedule_text(r)]
    mix = mixing_text(r)
    if mix:
        parts.append(mix)
    parts.append(f"augment {r.augment}")
    if r.whiten:
        parts.append("whitened first layer")
    if r.bn_momentum is not None:
        parts.append(f"BatchNorm momentum {r.bn_momentum:g}")
    if r.tta:
        parts.append(f"TTA {r.tta}")
    return ", ".join(parts)
