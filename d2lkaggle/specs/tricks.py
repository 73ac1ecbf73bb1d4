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
from ..models.table import BN_MOMENTUM_MODELS, check_regularization
from ..models.whitening import FIRST_CONV
from ..train import schedules as S
from ..train.averaging import check_average, make_average
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


def _sched(*names: str) -> tuple[Callable[[Recipe], bool], str, Callable[[Recipe], str]]:
    return (lambda r: r.sched in names, "--sched " + " or ".join(names),
            lambda r: f"--sched {r.sched}")


def _model(models: Any, what: str) -> tuple[Callable[[Recipe], bool], str, Callable[[Recipe], str]]:
    return (lambda r: r.model in models, f"{what} ({', '.join(models)})",
            lambda r: f"--model {r.model}")


#: models whose BatchNorm biases ``bn_bias_lr`` finds by name (d2lkaggle.train.optim.is_norm_bias)
BN_BIAS_MODELS = ("resnet18", "airbench94")

_NO_MIX = lambda r: f"--mixup {r.mixup:g} and --cutmix {r.cutmix:g}"  # noqa: E731

#: Which recipe field (its flag) applies to what: field -> (does it apply to recipe r?, where
#: it applies, what r has instead). :func:`check_recipe` refuses in one line a field the user
#: gave — or, for a field that is off by default (``None``/``False``), one the recipe set — where
#: it does not apply, so no flag is recorded in summary.json without being used. The model
#: table's own knobs are checked there (``models.table.check_regularization``: --drop-path,
#: --stochastic-depth). tests/cli/test_flags_apply.py walks every flag of ``d2lkaggle run``
#: against every schedule, mixing and model: a new schedule, mixing or model field adds its
#: row here.
APPLIES: dict[str, tuple[Callable[[Recipe], bool], str, Callable[[Recipe], str]]] = {
    "lr": (lambda r: not (r.sched == "onecycle" and r.max_lr is not None)
           and not (r.sched == "cyclic" and r.max_lr is not None and r.base_lr is not None),
           "every schedule but one-cycle with --max-lr and cyclic with --base-lr and --max-lr",
           lambda r: f"--sched {r.sched} with its rates given"),
    "lr_period": (lambda r: r.sched == "plateau" or (r.sched == "step" and r.lr_decay != 1),
                  "--sched step (with an --lr-decay other than 1) or plateau",
                  lambda r: f"--sched {r.sched}" + (" with --lr-decay 1" if r.sched == "step"
                                                    else "")),
    "lr_decay": (lambda r: r.sched in ("multistep", "plateau")
                 or (r.sched == "step" and r.lr_period is not None),
                 "--sched step (with an --lr-period), multistep or plateau",
                 lambda r: f"--sched {r.sched}" + (" without --lr-period" if r.sched == "step"
                                                   else "")),
    "warmup": _sched("cosine", "onecycle", "triangle"),
    "base_lr": _sched("cyclic"),
    "max_lr": _sched("cyclic", "onecycle"),
    "step_size": _sched("cyclic"),
    "cycle_mode": _sched("cyclic"),
    "cycles": _sched("cyclic"),
    "milestones": _sched("multistep"),
    "mix_prob": (lambda r: r.mixup > 0 or r.cutmix > 0, "--mixup or --cutmix > 0", _NO_MIX),
    "switch_prob": (lambda r: r.mixup > 0 and r.cutmix > 0, "--mixup and --cutmix both > 0 "
                    "(the choice between them)", _NO_MIX),
    "whiten": _model(FIRST_CONV, "a model with a stem convolution to whiten"),
    "bn_momentum": _model(BN_MOMENTUM_MODELS, "a model whose builder takes it"),
    # the speed-run record's (docs/airbench.md)
    "momentum": (lambda r: r.optimizer in ("sgd", "nesterov"), "--optimizer sgd or nesterov "
                 "(Adam has betas instead)", lambda r: f"--optimizer {r.optimizer}"),
    "bn_bias_lr": _model(BN_BIAS_MODELS, "a model whose BatchNorm layers are found by name"),
    "whiten_bias_epochs": (lambda r: r.model == "airbench94" and bool(r.whiten),
                           "--model airbench94 with its whitened first layer",
                           lambda r: f"--model {r.model}" + ("" if r.whiten else " --no-whiten")),
}


def _set(r: Recipe, field: str, given: Any) -> bool:
    """Whether ``field`` is in play: given by the user, or set by the recipe where its
    default is off (``None``/``False``: a field a recipe only sets to use it)."""
    if field in given:
        return True
    default = Recipe.__dataclass_fields__[field].default
    return default in (None, False) and getattr(r, field) not in (None, False)


def check_recipe(r: Recipe, given: Any = ()) -> None:
    """Every trick of ``r`` checked, with one clear message naming the flag (before training);
    ``given``: the fields the user set (flags, keywords), each refused where it does not apply
    (:data:`APPLIES`)."""
    if r.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {r.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if r.sched not in S.SCHEDULES:
        raise ValueError(f"--sched {r.sched!r} is not one of {', '.join(S.SCHEDULES)}")
    if r.augment not in PRESETS:
        raise ValueError(f"--augment {r.augment!r} is not one of {', '.join(PRESETS)}")
    if r.wd_exclude not in WD_EXCLUDE:
        raise ValueError(f"wd_exclude must be None or 'bn_bias', got {r.wd_exclude!r}")
    if isinstance(r.epochs, bool) or not isinstance(r.epochs, (int, float)) \
            or not math.isfinite(r.epochs) or r.epochs < 0:
        raise ValueError(f"--epochs must be a number >= 0, got {r.epochs!r}")
    if int(r.batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {r.batch_size}")
    _finite("--lr", r.lr, low_ok=False)
    _finite("--wd", r.wd)
    _finite("--mixup", r.mixup)
    _finite("--cutmix", r.cutmix)
    _finite("--mix-prob", r.mix_prob, high=1.0)
    _finite("--switch-prob", r.switch_prob, high=1.0)
    _finite("--label-smoothing", r.label_smoothing, high=1.0, high_ok=False)
    check_regularization(r)   # --drop-path / --stochastic-depth: a rate, for a model that has it
    for field, (applies, where, this) in APPLIES.items():
        if _set(r, field, given) and not applies(r):
            flag = "--" + field.replace("_", "-")
            if field in given:
                raise ValueError(f"{flag} applies to {where}, not to {this(r)}: drop {flag}")
            raise ValueError(f"the recipe's {field} {getattr(r, field)!r} applies to {where}, "
                             f"not to {this(r)}; keep the recipe's settings or choose another "
                             "--recipe")
    _finite("--warmup", r.warmup)
    if r.warmup is not None and r.epochs > 0 and r.warmup >= r.epochs:
        raise ValueError(f"--warmup {r.warmup:g} must be shorter than the run ({r.epochs} epochs)")
    _finite("--base-lr", r.base_lr)
    _finite("--max-lr", r.max_lr, low_ok=False)
    if r.step_size is not None and int(r.step_size) < 1:
        raise ValueError(f"--step-size must be >= 1 iteration, got {r.step_size}")
    if r.cycle_mode is not None and r.cycle_mode not in S.CYCLE_MODES:
        raise ValueError(f"--cycle-mode {r.cycle_mode!r} is not one of {', '.join(S.CYCLE_MODES)}")
    if r.cycle_mode == "exp_range":   # (schedules.cyclic takes a gamma; a recipe has none)
        raise ValueError("--cycle-mode exp_range scales the cycle by gamma ** iteration, and a "
                         "recipe has no gamma (at 1.0 it is triangular): choose triangular or "
                         "triangular2, or build the schedule with schedules.cyclic(..., "
                         "mode='exp_range', gamma=...)")
    if r.sched == "step" and r.lr_period is not None and int(r.lr_period) < 1:
        raise ValueError(f"--lr-period must be >= 1, got {r.lr_period}")
    if r.sched in ("step", "multistep", "plateau"):
        _finite("--lr-decay", r.lr_decay, low_ok=False)
    if r.sched == "multistep" and r.lr_decay == 1:
        raise ValueError("--sched multistep multiplies the lr by --lr-decay at each milestone, "
                         "and the recipe's lr_decay is 1 (the rate never changes): give "
                         "--lr-decay < 1, or --sched step for a constant rate")
    if r.sched == "plateau" and "lr_decay" in given and not r.lr_decay < 1:
        raise ValueError(f"--lr-decay {r.lr_decay:g}: a plateau lowers the lr, so its factor must "
                         "be < 1")
    if r.milestones is not None and (not r.milestones or any(
            int(m) != m or not 1 <= m < max(2, r.epochs) for m in r.milestones)):
        raise ValueError(f"--milestones must be epochs in 1..{r.epochs - 1}, got "
                         + ",".join(str(m) for m in r.milestones))
    check_tta(r.tta)   # --tta's values
    _check_record_tricks(r)
    if r.bn_momentum is not None:
        _finite("--bn-momentum", r.bn_momentum, low_ok=False, high=1.0)
    # a dry run of the schedule (a guess of 10 batches per epoch) catches bad rates early
    if r.epochs > 0:
        sched = make_schedule(r, r.epochs, 10)
        S.check_schedule(sched, r.epochs, 10)


def _check_record_tricks(r: Recipe) -> None:
    """The speed-run record's fields' values (where each applies: :data:`APPLIES`)."""
    _finite("--momentum", r.momentum, high=1.0, high_ok=False)
    if r.optimizer == "nesterov" and r.momentum == 0:
        raise ValueError("--optimizer nesterov needs --momentum > 0")
    _finite("--bn-bias-lr", r.bn_bias_lr, low_ok=False)
    check_average(r.average)
    w = r.whiten_bias_epochs
    if w is not None and (isinstance(w, bool) or int(w) != w or w < 0):
        raise ValueError(f"--whiten-bias-epochs must be a whole number of epochs >= 0, got {w!r}")


def make_schedule(r: Recipe, num_epochs: float, steps_per_epoch: int,
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
    if r.sched == "triangle":   # airbench94: the peak at 23 % of the steps unless --warmup
        peak = 0.23 if r.warmup is None else r.warmup / max(num_epochs, 1e-9)
        return S.triangle(r.lr, num_epochs, steps_per_epoch, peak=min(max(peak, 0.0), 0.99))
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
    if r.momentum is not None:
        kw["momentum"] = r.momentum
    if r.bn_bias_lr not in (None, 1.0):
        kw["bn_bias_lr"] = r.bn_bias_lr
    if check_average(r.average) != "none":
        kw["average"] = make_average(r.average)
    if r.whiten_bias_epochs is not None:
        from ..models.whitening import FIRST_CONV
        kw["freeze"] = {f"{FIRST_CONV[r.model]}.bias": int(r.whiten_bias_epochs)}
    return kw


def describe(r: Recipe, schedule: S.Schedule | None, mixing: Mixup | None) -> dict[str, Any]:
    """What summary.json records about the tricks of a run."""
    avg = make_average(r.average)
    return {"optimizer": r.optimizer, "wd_exclude": r.wd_exclude,
            "momentum": r.momentum if r.momentum is not None else (
                0.9 if r.optimizer in ("sgd", "nesterov") else None),
            "bn_bias_lr": r.bn_bias_lr if r.bn_bias_lr is not None else 1.0,
            "schedule": schedule.describe() if hasattr(schedule, "describe") else repr(schedule),
            "mixing": mixing.describe() if mixing is not None else None, "augment": r.augment,
            "average": avg.describe() if avg is not None else None,
            "whiten_bias_epochs": r.whiten_bias_epochs}


def fit_batch_to_set(r: Recipe, n_train: int | None, *, batch_given: bool = False,
                     lr_given: bool = False) -> tuple[Recipe, str | None]:
    """The recipe's batch for a training set of ``n_train`` images (train step of the chapter).

    A recipe with ``small_set_batch`` whose ``batch_size`` would leave fewer than
    :data:`MIN_STEPS_PER_EPOCH` steps per epoch trains at ``small_set_batch`` instead. SGD's
    learning rate is scaled by the square root of the batch ratio (Krizhevsky's rule: the
    gradient's noise grows as the batch shrinks; on the hard demo the speed-run recipe at
    batch 64 reached 0.99 in 5 epochs with lr × sqrt(64/1024) and 0.82 with lr × 64/1024,
    docs/recipes.md); Adam's and AdamW's is kept, because their step is normalised per
    parameter. A batch or lr the user gave is never changed. Returns the recipe and a line
    saying what changed (``None``: nothing).
    """
    b = r.small_set_batch
    if (b is None or batch_given or n_train is None or b >= r.batch_size
            or n_train // r.batch_size >= MIN_STEPS_PER_EPOCH):
        return r, None
    scaled = r.optimizer in ("sgd", "nesterov")   # Adam's step is normalised per parameter
    lr = r.lr * math.sqrt(b / r.batch_size) if scaled and not lr_given else r.lr
    why = (f"x sqrt({b}/{r.batch_size}), SGD's rule for a smaller batch" if scaled else
           f"{r.optimizer}'s step does not grow with the batch")
    note = (f"small training set: {n_train} images give {n_train // r.batch_size} steps per epoch "
            f"at batch {r.batch_size}, so the recipe trains at batch {b}"
            + ("" if lr_given else f", lr {lr:g} ({why})") + "; --batch-size sets the batch")
    return r.with_overrides(batch_size=b, lr=lr), note


def fit_tricks_to_model(r: Recipe, given: Any = ()) -> tuple[Recipe, str | None]:
    """The recipe's model-specific tricks (the whitened stem, the BatchNorm momentum) after
    ``--model`` chose another model: kept where the model has them, dropped where it has not
    unless the user gave them (then :func:`check_recipe` refuses them in one line). Returns
    the recipe and a line saying what was dropped (``None``: nothing)."""
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


def fit_tricks_to_recipe(r: Recipe, given: Any = ()) -> tuple[Recipe, str | None]:
    """The recipe's own tricks that are off by default (:data:`APPLIES` rows whose default is
    ``None``/``False``) and no longer apply after the user's flags (``--sched onecycle`` on a
    cyclic write-up, ``--mixup 0`` where the recipe sets ``mix_prob``): dropped, with a line
    saying so; the ones the user gave stay, for :func:`check_recipe` to refuse."""
    drop = {}
    for field, (applies, _, _) in APPLIES.items():
        default = Recipe.__dataclass_fields__[field].default
        if field not in given and default in (None, False) \
                and getattr(r, field) not in (None, False) and not applies(r):
            drop[field] = default
    if not drop:
        return r, None
    where = {APPLIES[k][1] for k in drop}
    this = {APPLIES[k][2](r) for k in drop}
    what = ", ".join(f"{k} {getattr(r, k)!r}" for k in drop)
    return replace(r, **drop), (f"the recipe's {what} {'apply' if len(drop) > 1 else 'applies'} "
                                f"to {' / '.join(sorted(where))} only; this run "
                                f"({', '.join(sorted(this))}) trains without "
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
    if r.sched == "triangle":
        peak = f"{r.warmup:g} epochs" if r.warmup is not None else "23% of the run"
        return f"triangle lr {0.2 * r.lr:g} -> {r.lr:g} at {peak} -> {0.07 * r.lr:g} (per step)"
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


#: the models whose builders read ``Recipe.width`` (models/build.py's recipe_kwargs)
WIDTH_MODELS = ("resnet18", "airbench94")


def model_text(r: Recipe) -> str:
    """The model a recipe builds, by its table name and what sets it apart from that name's
    default (``airbench94 (width 32)``: the demo's narrow net, not the record's)."""
    default = Recipe.__dataclass_fields__["width"].default
    if r.model in WIDTH_MODELS and r.width != default:
        return f"{r.model} (width {r.width})"
    return r.model


def recipe_text(r: Recipe) -> str:
    """What a run trains with, from its recipe (after the overrides and the small-set rule):
    epochs, batch, optimizer and weight decay, the schedule and its parameters, mixing and the
    augmentation — the words of titles, legends and ``d2lkaggle recipes``."""
    opt = OPTIMIZER_WORDS.get(r.optimizer, r.optimizer)
    if r.momentum is not None:
        opt = opt.replace("momentum 0.9", f"momentum {r.momentum:g}")
    opt += f" wd {r.wd:g}"
    if r.wd_exclude:
        opt += " (none on biases and norms)"
    if r.bn_bias_lr not in (None, 1.0):
        opt += f", BatchNorm biases at lr x{r.bn_bias_lr:g}"
    batch = f"batch {r.batch_size}"
    if r.small_set_batch is not None and r.small_set_batch < r.batch_size:   # not applied yet
        batch += f" ({r.small_set_batch} on a small set)"
    parts = [plural(r.epochs, "epoch"), batch, opt, schedule_text(r)]
    mix = mixing_text(r)
    if mix:
        parts.append(mix)
    parts.append(f"augment {r.augment}")
    if r.whiten:
        parts.append("whitened first layer" + (
            f" (its bias trained {r.whiten_bias_epochs} epochs)"
            if r.whiten_bias_epochs is not None else ""))
    if check_average(r.average) != "none":
        parts.append(f"weights averaged ({r.average})")
    if r.bn_momentum is not None:
        parts.append(f"BatchNorm momentum {r.bn_momentum:g}")
    if r.tta:
        parts.append(f"TTA {r.tta}")
    return ", ".join(parts)
