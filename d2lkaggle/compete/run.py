"""One ``d2lkaggle run``: a whole chapter as a short sequence of named stages.

:func:`run_competition` is the sequence; each stage is a function a user or a test can call:

1. :func:`plan_run` — resolve the recipe, the overrides and every setting, and check them
   (nothing is written yet);
2. :func:`open_run_folder` — lock ``out`` for this run, refuse a finished run (or, with
   ``overwrite``, build the new one beside it), open ``log.txt``, join the ranks;
3. :func:`load_stage` — labels, split, loaders, the first line, a placeholder submission;
4. :func:`start_training` — the configuration checkpoints are checked against, the backend;
5. :func:`train_phase` — a fresh model trained on one phase's data; called for the
   validation phase (:func:`validate` adds its probabilities, their calibration —
   :func:`calibrate_stage` — and pictures) and for the retrain on all labels;
6. :func:`finish_run` — predict the test set, write the submission, history, curves and
   ``summary.json`` (and with ``overwrite``, put the new run in place of the old one);
   :func:`close_run_folder` releases the folder, also when the run fails.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from types import ModuleType
from typing import Any, Callable

import numpy as np

from ..data.loader import source_images
from ..data.splits import split_digest
from ..models.build import (build_net, check_imagenet_weights, check_weights, start_weights,
                            weights_file)
from ..models.table import weights_choice
from ..models.weights import StartWeights
from ..models.whitening import whiten_first_conv
from ..parallel import distributed as D
from ..specs.competitions import COMPETITIONS, Competition, get_competition, recipe_for
from ..specs.recipe import Recipe
from ..specs.tricks import (
    check_recipe,
    fit_batch_to_set,
    fit_tricks_to_model,
    fit_tricks_to_recipe,
    make_mixing,
    make_schedule,
    train_kwargs,
)
from ..specs.tricks import describe as describe_tricks
from ..specs.writeups import cycle_step_size
from ..train.estimate import RunClock
from ..train.features import cacheable
from ..train.loop import History
from ..train.tta import check_tta
from ..utils.files import atomic_write_text, load_npz
from ..utils.progress import RunProgress, plural, resolve_verbose
from ..utils.registry import canonical_name, get_backend
from .calibration import Calibration, calibrate, resolve_calibration
from .load import (CompetitionData, load_data, loading_line, normalized, shard_data,
                   training_set_size)
from .preflight import (check_checkpoint, check_data_dir, check_labels_header,
                        check_out_outside_data, check_resume, check_sample_header, check_settings,
                        prepare_out, resume_line)
from .report import (
    ending_line,
    header,
    json_float,
    labelled_test_metrics,
    plot_run,
    run_outcome,
    summary_line,
    title,
    valid_pictures,
    write_history,
)
from .runfolder import (RunFolderLock, RunLog, check_run_folder, clear_run, epochs_done,
                        install_run, recover_swaps, retarget, save_run_predictions,
                        stage_folder)
from .submission import preflight_submission, write_submission


@dataclass
class RunPlan:
    """Everything one run will do, resolved and checked before anything is written."""

    comp: Competition          # with ImageNet statistics when the recipe asks for them
    data_dir: str
    recipe: Recipe             # the overrides applied, and the small-set rule
    backend: str               # canonical name
    out: str                   # the run folder, absolute
    image_size: int | None     # as given or the recipe's (None: the competition's)
    seed: int
    predict_with: str          # retrain | best | last
    dist: Any                  # a parallel.distributed.DistEnv
    amp: Any = "auto"
    tta: Any = None
    split: Any = None          # (train_ids, valid_ids) of k-fold or bagging
    label_kind: str | None = None
    num_workers: int | None = None
    augment: Any = None        # a preset name or a (train, test) transform pair
    cache_features: bool = False
    resume: Any = False
    overwrite: bool = False
    progress: Any = True
    log: Callable[[str], Any] | None = print
    batch_note: str | None = None
    calibrate: str = "none"    # none | temperature (compete/calibration.py), resolved
    calibrate_note: str = ""
    verbose: int = 2           # Keras' levels: 0 no epoch lines, 1 live bars, 2 one line per epoch
    final_out: str | None = None   # with overwrite: where the run goes once finished (out: beside it)
    lock: Any = None           # the run folder's RunFolderLock (rank 0)
    runlog: Any = None         # log.txt (rank 0)
    estimate: bool = False     # time a few batches first and say how long the run will take
    notes: tuple[str, ...] = ()   # what the checks before the run accepted and say (a header)

    @property
    def retrain(self) -> bool:
        return self.predict_with == "retrain"

    @property
    def size(self) -> int:
        return int(self.image_size or self.comp.image_size)

    def say(self, msg: str) -> None:
        if self.runlog is not None:
            self.runlog(msg)
        elif self.log:
            self.log(msg)

    @property
    def lines(self) -> Callable[[str], Any] | None:
        """Where the run's lines go: the log and ``log.txt``."""
        return self.runlog if self.runlog is not None else self.log


@dataclass
class Phase:
    """One training phase's result: ``valid`` (train split, validated) or ``final`` (all labels)."""

    name: str
    net: Any
    history: History
    tricks: dict[str, Any]
    seconds: float


@dataclass
class Run:
    """A run in progress: its plan, data and backend, and what each stage has produced."""

    plan: RunPlan
    data: CompetitionData
    timings: dict[str, float]
    bk: ModuleType | None = None
    train_fn: Callable[..., History] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)
    bar: Any = None
    start: StartWeights | None = None      # what --weights FILE loads into each phase's model
    start_acc: float | None = None         # the validation accuracy the file starts at
    train_kw: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Phase] = field(default_factory=dict)
    valid_probs: np.ndarray | None = None     # calibrated, as the run would submit them
    pictures: dict[str, str] = field(default_factory=dict)
    calibration: Calibration | None = None
    forced: dict[str, list[dict[str, Any]]] = field(default_factory=dict)   # --resume force, per phase
    clock: RunClock | None = None          # the run's parts: its estimate and every epoch's ETA
    features: dict[str, Any] = field(default_factory=dict)   # cached features' seconds, counts


def run_competition(competition: str | Competition, data_dir: str, *, backend: str = "torch",
                    out: str | None = None, epochs: int | None = None,
                    batch_size: int | None = None, lr: float | None = None,
                    wd: float | None = None, lr_period: int | None = None,
                    lr_decay: float | None = None, valid_ratio: float | None = None,
                    image_size: int | None = None, weights: str | None = None,
                    retrain: bool = True, seed: int = 0, resume: bool = False,
                    progress: bool = True, num_workers: int | None = None, amp: Any = "auto",
                    log: Callable[[str], Any] | None = print,
                    label_kind: str | None = None, model: str | None = None,
                    recipe: str | Recipe = "default", tta: Any = None,
                    split: tuple[Any, Any] | None = None, predict_with: str | None = None,
                    overwrite: bool = False, distributed: Any = None,
                    calibrate: str | None = None, verbose: Any = "auto", estimate: bool = False,
                    **tricks: Any) -> dict[str, Any]:
    """Run a whole chapter and write ``out/{submission.csv, history.csv, curves.png,
    confusion.png, mistakes.png, summary.json, checkpoints/}``; returns the summary.

    ``predict_with``: ``"retrain"`` (the chapters: a fresh model on all labels; the default),
    ``"best"`` (the validation phase's best epoch) or ``"last"`` (its last epoch; what
    ``retrain=False`` means). A finished run in ``out`` is kept unless ``overwrite`` (the new
    run is built beside it and replaces it only once finished) or ``resume`` is given; a run
    folder belongs to one run at a time (a lock held for the whole run).

    ``verbose`` is Keras': ``"auto"`` (a live bar on a terminal, one line per epoch anywhere
    else), 0 (no epoch lines), 1 (bars), 2 (one line per epoch); ``progress=False`` turns the
    bars off. ``out/log.txt`` keeps the lines either way.

    Settings, inputs (labels, every image, the sample file's ids and columns) and the
    resume configuration are checked before the first epoch. ``resume``: False, True
    (refuses a checkpoint trained with another :func:`run_config`) or ``"force"``.

    ``recipe`` is ``"default"`` (ours), ``"book"`` (the chapter's exact values) or a
    :class:`Recipe`; ``tricks`` override its training tricks by field name (``optimizer``,
    ``sched``, ``warmup``, ``base_lr``, ``max_lr``, ``step_size``, ``cycle_mode``,
    ``milestones``, ``mixup``, ``cutmix``, ``mix_prob``, ``switch_prob``, ``label_smoothing``,
    ``augment``, ``wd_exclude``; see docs/recipes.md). ``augment`` may also be a
    ``(train_transform, test_transform)`` pair. ``tta``: ``None`` is the recipe's
    test-time augmentation (``flip`` for Dog Breed's default), ``False`` or ``"none"`` none.

    ``calibrate``: ``"temperature"`` fits one temperature on the validation probabilities
    (minimising their log loss) and applies it to the test probabilities, also the retrained
    model's; ``"none"`` writes the net's softmax as it is; ``None`` is the competition's
    default (temperature for Dog Breed, scored by log loss; none for the others).

    ``distributed`` (data parallel, docs/scale.md): ``None`` follows the launcher (torchrun
    ...), ``True`` requires one, ``False`` ignores it, or a
    :class:`d2lkaggle.parallel.distributed.DistEnv`. Every rank trains its shard of each global
    batch; rank 0 alone predicts and writes the run folder while the others wait for it.

    ``estimate``: before the first epoch, time a few batches of a throwaway model and say how
    long the whole run will take on this machine (``d2lkaggle demo`` does; see
    :func:`estimate_duration`).
    """
    # (the keywords are this function's public signature; plan_run takes the same ones)
    given = {k: v for k, v in locals().items() if k not in ("competition", "data_dir", "tricks")}
    plan = open_run_folder(plan_run(competition, data_dir, **given, **tricks))
    try:
        run = load_stage(plan)
        start_training(run)
        if plan.dist.is_main:   # the expected duration (timed, or only planned) and the ETAs
            run.clock = estimate_duration(run) if plan.estimate else run_clock(run)
            run.clock.start()
            run.train_kw["clock"] = run.clock
        if run.data.valid_iter is not None:
            validate(run)
        if plan.retrain or run.data.valid_iter is None:
            train_phase(run, "final")
        if run.bar is not None:
            run.bar.close()
        if not plan.dist.is_main:   # rank 0 predicts everything and writes; the others wait
            return _dist_done(plan.backend, plan.dist, plan.out)
        return finish_run(run)
    except BaseException as e:   # log.txt ends with how the run ended, whatever the cause
        _say_ending(plan, e)
        raise
    finally:
        close_run_folder(plan)


def plan_run(competition: str | Competition, data_dir: str, *, backend: str = "torch",
             out: str | None = None, epochs: int | None = None, batch_size: int | None = None,
             lr: float | None = None, wd: float | None = None, lr_period: int | None = None,
             lr_decay: float | None = None, valid_ratio: float | None = None,
             image_size: int | None = None, weights: str | None = None, retrain: bool = True,
             seed: int = 0, resume: Any = False, progress: Any = True,
             num_workers: int | None = None, amp: Any = "auto",
             log: Callable[[str], Any] | None = print, label_kind: str | None = None,
             model: str | None = None, recipe: str | Recipe = "default", tta: Any = None,
             split: tuple[Any, Any] | None = None, predict_with: str | None = None,
             overwrite: bool = False, distributed: Any = None, calibrate: str | None = None,
             verbose: Any = "auto", estimate: bool = False, **tricks: Any) -> RunPlan:
    """Stage 1: the run's :class:`RunPlan` — the recipe with every override, checked before
    anything is written or loaded (the keywords of :func:`run_competition`)."""
    comp = get_competition(competition) if isinstance(competition, str) else competition
    which = recipe if isinstance(recipe, str) else None   # a recipe's name, as given
    base = recipe if isinstance(recipe, Recipe) else recipe_for(comp, recipe)
    aug_pair = tricks.pop("augment") if not isinstance(tricks.get("augment", ""), str) else None
    # cache_features=True (--cache-features): the frozen backbone runs once per image
    # (d2lkaggle.train.features); it trains the same head, so it is not part of run_config.
    # None: on when the recipe allows it (frozen backbone, unaugmented files, one process)
    cache_features = tricks.pop("cache_features", None)
    unknown = sorted(set(tricks) - set(Recipe.__dataclass_fields__))
    if unknown:
        raise TypeError(f"run_competition() got unknown keyword(s) {', '.join(unknown)}")
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, wd=wd, lr_period=lr_period,
                     lr_decay=lr_decay, valid_ratio=valid_ratio, weights=weights, **tricks)
    given = {k for k, v in overrides.items() if v is not None}   # what the user set
    recipe = base.with_overrides(**overrides)
    model_note = None
    if model is not None:   # --model: a model-table name instead of the recipe's
        from ..models.table import check_model_name
        from ..specs.competitions import model_recipe
        own = model_recipe(comp, check_model_name(model)) if which == "default" else None
        if own is not None and own.model != base.model:
            # the competition has a recipe made for that model: it, not the default's tricks
            default_model = base.model
            base, recipe = own, own.with_overrides(**overrides)
            model_note = (f"--model {model}: {comp.name}'s own recipe for {model}, not the "
                          f"default's {default_model} values (d2lkaggle recipes lists both)")
        recipe = recipe.with_overrides(model=check_model_name(model))
        recipe, note = fit_tricks_to_model(recipe, given=tricks)
        model_note = "\n".join(n for n in (model_note, note) if n) or None
    recipe, unused_note = fit_tricks_to_recipe(recipe, given)
    model_note = "\n".join(n for n in (model_note, unused_note) if n) or None
    check_recipe(recipe, given)  # every trick checked (and given where it applies) first
    if cache_features:   # refused now, before the run folder exists, when it cannot apply
        from ..data.transforms import preset_transforms
        from ..train.features import check_cacheable
        check_cacheable(recipe, aug_pair[0] if aug_pair is not None else preset_transforms(
            recipe.augment, int(image_size or recipe.image_size or comp.image_size),
            book=comp.augment)[0])
    check_label_kind(label_kind, data_dir)
    check_keep(recipe)
    check_weights(_random_init(recipe))
    if recipe.whiten and weights_file(recipe.weights) is not None:
        # a weights file brings its own first layer: the whitened stem is the recipe's
        # start from scratch, so it is dropped (said), or refused when asked for
        if "whiten" in tricks:
            raise ValueError("--whiten initialises the first layer from the training images and "
                             "--weights from a file: give one of them (--no-whiten)")
        recipe = recipe.with_overrides(whiten=False)
        model_note = "\n".join(n for n in (model_note, "--weights: the first layer starts from "
                                           "the file, not whitened") if n)
    if image_size is None:   # a write-up recipe's size (224 px for the EfficientNetV2 one)
        image_size = recipe.image_size
    comp = normalized(comp, recipe)    # ImageNet statistics for pretrained weights
    check_settings(recipe, image_size)
    size = int(image_size or comp.image_size)
    if recipe.model == "airbench94" and size != 32:
        raise ValueError(f"model airbench94 is the CIFAR speed-run net for 32 px images (its "
                         f"pools end at 1×1 there); {comp.name} trains at {size} px: choose "
                         f"another --model or --image-size 32")
    recipe, batch_note = fit_batch_to_set(
        _random_init(recipe), training_set_size(comp, data_dir, recipe.valid_ratio, split),
        batch_given=batch_size is not None, lr_given=lr is not None)
    recipe = replace(recipe, small_set_batch=None)   # decided: batch_size and lr say what runs
    if predict_with is None and recipe.keep == "best" and recipe.valid_ratio > 0:
        predict_with = "best"   # a write-up that keeps its best-validation epoch
    if predict_with is None and retrain and not recipe.retrain and recipe.valid_ratio > 0:
        predict_with = "last"   # a recipe that submits its validated model (the record's way)
    predict_with = _predict_with(predict_with, retrain, recipe.valid_ratio > 0)
    tta = check_tta(recipe.tta if tta is None else tta)   # None: the recipe's; False/"none": off
    recipe = replace(recipe, tta=tta)   # what the run predicts with (titles, summary.json)
    calibrate, calibrate_note = resolve_calibration(
        calibrate, comp, bool(split[1]) if split is not None else recipe.valid_ratio > 0)
    name = canonical_name(backend)
    out = os.path.abspath(out or os.path.join("runs", f"{comp.name}-{name}"))
    check_out_outside_data(out, comp, data_dir)
    dist = D.run_env(distributed, recipe.batch_size)  # (batch size checked: nothing written yet)
    if cache_features is None:
        cache_features = (aug_pair is None and not comp.fixed_size and cacheable(recipe)
                          and not dist.enabled)
    check_data_dir(comp, data_dir, COMPETITIONS.values())
    # the inputs' headers and the pretrained weights, before anything is written or loaded
    notes = (check_labels_header(comp, data_dir),) if os.path.isdir(data_dir) else ()
    if os.path.isdir(data_dir):
        check_sample_header(comp, data_dir)
    check_imagenet_weights(recipe, name)
    if weights_file(recipe.weights) is not None:
        # a file that fits nothing is refused now, before the run folder exists (the classes
        # are the file's here: another number of classes only means a new classifier)
        start_weights(name, recipe, None, image_size)
    return RunPlan(comp, data_dir, recipe, name, out, image_size, seed, predict_with, dist,
                   amp=amp, tta=tta, split=split, label_kind=label_kind, num_workers=num_workers,
                   augment=aug_pair or recipe.augment, cache_features=bool(cache_features),
                   resume=resume, overwrite=overwrite, progress=progress, log=log,
                   batch_note="\n".join(n for n in (model_note, batch_note) if n) or None,
                   verbose=resolve_verbose(verbose), estimate=bool(estimate),
                   calibrate=calibrate, calibrate_note=calibrate_note,
                   notes=tuple(n for n in notes if n))


def open_run_folder(plan: RunPlan) -> RunPlan:
    """Stage 2: create ``out`` and lock it for this run (a second run into it gets one line
    naming the running one), refuse a finished run in it — or with ``overwrite`` build the new
    run in a folder beside it, which replaces it only once finished —, open ``log.txt``, and
    join the ranks of a data-parallel run (only rank 0 prints and writes)."""
    if not plan.dist.is_main:
        if not plan.overwrite:
            check_run_folder(plan.out, overwrite=False, resume=plan.resume)
        plan = replace(plan, log=None, progress=False)
        D.join(plan.backend, plan.dist)
        return plan
    out = prepare_out(plan.out)
    lock = RunFolderLock(out).acquire()
    swaps: list[str] = []
    try:
        swaps = recover_swaps(out)   # an --overwrite that died mid-way: finished or undone
        staged = check_run_folder(out, overwrite=plan.overwrite, resume=plan.resume)
        work = stage_folder(out) if staged and not plan.dist.enabled else out
        if staged and plan.dist.enabled:   # every rank must see one folder: the old run goes now
            clear_run(out)
        runlog = RunLog(os.path.join(work, "log.txt"), plan.log, append=bool(plan.resume))
    except BaseException:
        if plan.log:
            for line in swaps:   # said even when the run stops here
                plan.log(line)
        lock.release()
        raise
    plan = replace(plan, out=work, final_out=out if work != out else None,
                   lock=lock, runlog=runlog)
    if lock.stale_note():
        plan.say(lock.stale_note())
    for line in swaps:
        plan.say(line)
    if work != out:
        plan.say(f"overwrite: the new run is built in {work} and replaces the finished run "
                 f"in {out} once it has finished")
    D.join(plan.backend, plan.dist)
    return plan


def _say_ending(plan: RunPlan, e: BaseException) -> None:
    """The last line of ``log.txt`` of a run that did not finish: interrupted (said on the
    screen too, with the command that resumes it) or failed (the screen has the error)."""
    if plan.runlog is None or plan.runlog.file.closed:
        return
    valid = bool(plan.split[1]) if plan.split is not None else plan.recipe.valid_ratio > 0
    phases = {PHASES[ph][0]: (ph, epochs_done(os.path.join(plan.out, "checkpoints", ph,
                                                          "last.npz")), plan.recipe.epochs)
              for ph in ((["valid"] if valid else []) + (["final"] if plan.retrain or not valid
                                                          else []))}
    line = ending_line(e, plan.final_out or plan.out, phases, staged_for=plan.final_out)
    if isinstance(e, KeyboardInterrupt):
        plan.say(line)
    else:
        plan.runlog.write(line)


def close_run_folder(plan: RunPlan) -> None:
    """Close ``log.txt`` and release the run folder's lock (rank 0); a run that failed in a
    folder beside the old one (``overwrite``) leaves the old run as it was."""
    if plan.runlog is not None:
        plan.runlog.close()
    if plan.final_out is not None and os.path.isdir(plan.out) \
            and not os.path.exists(os.path.join(plan.out, "summary.json")):
        import shutil
        shutil.rmtree(plan.out, ignore_errors=True)   # unfinished: the old run stays
    # (a finished one whose swap failed stays for the next start: recover_swaps completes it)
    if plan.lock is not None:
        plan.lock.release()


def load_stage(plan: RunPlan) -> Run:
    """Stage 3: labels, split and loaders (every image checked), the run's first lines, and a
    placeholder submission checked against the sample file before any training."""
    t0 = time.perf_counter()
    plan.say(loading_line(plan.comp, plan.data_dir))   # a line before the minutes of decoding
    for note in plan.notes:
        plan.say(note)
    data = load_data(plan.comp, plan.data_dir, batch_size=plan.recipe.batch_size,
                     valid_ratio=plan.recipe.valid_ratio, image_size=plan.image_size,
                     seed=plan.seed, num_workers=plan.num_workers, augment=plan.augment,
                     label_kind=plan.label_kind, split=plan.split)
    data = shard_data(data, plan.dist)
    plan.say(header(plan.comp, data, plan.backend, plan.recipe))
    for note in data.notes or ():
        plan.say(note)
    if plan.batch_note:
        plan.say(plan.batch_note)
    if plan.dist.enabled:
        plan.say(f"data parallel: {plan.dist.world_size} processes ({plan.dist.launcher}), each "
                 f"trains {plan.recipe.batch_size // plan.dist.world_size} of every batch of "
                 f"{plan.recipe.batch_size}")
    preflight_submission(plan.comp, plan.data_dir, data)
    return Run(plan, data, {"start": t0, "data_s": time.perf_counter() - t0})


def start_training(run: Run) -> None:
    """Stage 4: the configuration every checkpoint is checked against (``--resume`` refuses
    another one), the backend, its ``train`` (or the cached-features one), the progress line."""
    plan, data = run.plan, run.data
    run.bk = get_backend(plan.backend)
    run.start = start_weights(run.bk, plan.recipe, len(data.classes), plan.size)
    if run.start is not None:
        plan.say(run.start.note)
    run.config = run_config(plan.comp, plan.recipe, backend=plan.backend,
                            image_size=plan.image_size, seed=plan.seed, amp=plan.amp,
                            num_classes=len(data.classes),
                            num_labelled=data.train_valid_iter.labels.size,
                            **({"split": split_digest(plan.split)} if plan.split is not None else {}),
                            **({"world_size": plan.dist.world_size} if plan.dist.enabled else {}),
                            **({"weights_sha1": run.start.sha1} if run.start else {}),
                            **(data.fingerprint or {}))
    # (--resume force's warning: once on stderr, and in log.txt, never on stdout as well)
    to_file = plan.runlog.write if plan.runlog is not None else None
    run.resume = {phase: check_resume(os.path.join(plan.out, "checkpoints", phase), run.config,
                                      plan.resume, to_file, run.forced.setdefault(phase, []))
                  for phase in ("valid", "final")}
    if plan.resume:   # what it found, in one line
        plan.say(resume_line(plan.out, run_phases(run), plan.recipe.epochs,
                             os.path.exists(os.path.join(plan.out, "summary.json"))))
    run.train_fn = run.bk.train
    if plan.cache_features:
        from functools import partial

        from ..train.features import check_cacheable, train_with_cached_features
        check_cacheable(plan.recipe, data.train_iter.transform)   # before the first epoch
        run.train_fn = partial(train_with_cached_features, run.bk, backend=plan.backend,
                               record=run.features)   # the backbone's time apart from the head's
    bars = plan.progress is True and plan.verbose == 1
    run.bar = _run_progress(bars, plan.recipe.epochs, data, plan.retrain,
                            plan.out if plan.resume else None)
    # verbose 0: no epoch lines on the screen, but log.txt keeps them
    epoch_log = True if plan.verbose else (plan.runlog.write if plan.runlog else False)
    run.train_kw = dict(lr_period=plan.recipe.lr_period, lr_decay=plan.recipe.lr_decay,
                        progress=bars, log=plan.lines, amp=plan.amp, config=run.config,
                        epoch_log=epoch_log)
    if run.bar is not None:
        run.train_kw.update(progress=run.bar, log=run.bar.wrap(plan.lines))


def estimate_duration(run: Run) -> RunClock:
    """Stage 4b: the seconds this run will take on this machine, said before the first epoch.

    A throwaway model of the run's recipe is trained for a few batches by the run's own
    training function (its model, batch, precision, optimizer, schedule, mixing; a
    frozen-backbone run times its backbone's features and its head apart) and predicts a few
    test batches with the run's TTA; :func:`run_clock` scales these by the run's counts —
    every phase and epoch still to train, each epoch's validation, the validation and test
    predictions. The figure goes to the log and, as the first ETA, to the progress line; the
    clock then gives every epoch line the whole run's ETA. The models that train afterwards
    start from their own seed, so the run is the one it would have been."""
    plan = run.plan
    say = run.bar.wrap(plan.lines) if run.bar is not None else plan.lines   # above the bars
    try:
        costs, timing = measure_costs(run)
    except FloatingPointError as e:   # the run's settings diverge: the run itself will say so
        if say:
            say(f"expected duration: not timed (the throwaway model's loss was not finite: {e})")
        return run_clock(run)
    clock = run_clock(run, costs)
    if say:
        say(clock.line(timing))
    if run.bar is not None:
        run.bar.set_estimate(clock.total())
    return clock


def measure_costs(run: Run, timed: int = 5, warmup: int = 2) -> tuple[dict[str, float], str]:
    """Seconds per unit of the run's work, timed just now on throwaway models (see
    :func:`run_clock` for the units), and what was timed, in words."""
    from ..train.estimate import time_prediction, time_training
    from ..train.tta import num_views
    plan, data, bk = run.plan, run.data, run.bk
    first = data.train_iter if data.valid_iter is not None else data.train_valid_iter
    kw = {k: v for k, v in run.train_kw.items()
          if k not in ("progress", "log", "epoch_log", "clock", "config")}
    if plan.cache_features:
        from ..train.features import time_cached_features, uncached_images
        # the real weights: the feature cache is keyed by them
        net = recipe_net(bk, plan.recipe, len(data.classes), plan.size, first, plan.seed,
                         start=run.start)
        todo = uncached_images(bk, net, [data.train_iter, data.valid_iter,
                                         data.train_valid_iter], backend=plan.backend, amp=plan.amp)
        feature_s, batch_s, end_s, head = time_cached_features(
            bk, net, first, plan.recipe.lr, plan.recipe.wd, backend=plan.backend,
            timed=timed, warmup=warmup, make_tricks=lambda loader: tricks_for(
                plan.recipe, loader, len(data.classes))[0], **kw)
        costs = {"feature_image": feature_s, "features_todo": todo}
        what = (f"the backbone's features took {feature_s * 1e3:.0f} ms per image and a head "
                f"batch of {head} {batch_s:.3f} s")
    else:
        net = build_net(bk, replace(plan.recipe, weights=None), len(data.classes), plan.size)
        extra, _ = tricks_for(plan.recipe, first, len(data.classes))
        batch_s, end_s = time_training(run.train_fn, net, first, timed=timed, warmup=warmup,
                                       lr=plan.recipe.lr, wd=plan.recipe.wd,
                                       **{**kw, **extra, "config": None})
        costs = {}
        what = f"a training batch of {first.batch_size} took {batch_s:.2f} s"
    predict_s = time_prediction(lambda loader: bk.predict(net, loader, amp=plan.amp, tta=plan.tta),
                                data.test_iter)
    views = num_views(plan.tta)
    costs.update(train_batch=batch_s, epoch_end=end_s, predict_image=predict_s,
                 eval_image=0.0 if plan.cache_features else predict_s / views)
    tta = f" with TTA {plan.tta}" if views > 1 else ""
    return costs, f"timed just now: {what}, predicting an image{tta} {predict_s * 1e3:.1f} ms"


def run_phases(run: Run) -> list[str]:
    """The phases this run trains, in order (``valid``, ``final``; see :data:`PHASES`)."""
    phases = ["valid"] if run.data.valid_iter is not None else []
    return phases + (["final"] if run.plan.retrain or run.data.valid_iter is None else [])


def run_clock(run: Run, costs: dict[str, float] | None = None) -> RunClock:
    """The run's parts in the order they run, each with its expected seconds: the backbone's
    features (a cached-features run), each phase's epochs still to train (training batches,
    the epoch's end, its validation), the validation and the test predictions.

    ``costs`` (from :func:`measure_costs`): seconds per training batch (``train_batch``), per
    epoch's end (``epoch_end``), per validated image (``eval_image``), per predicted image
    with the run's TTA (``predict_image``), per backbone feature (``feature_image``) and the
    images whose features are not cached (``features_todo``). Without them the relative costs
    of :data:`~d2lkaggle.train.estimate.RELATIVE_COSTS` stand in: the ETAs are then right
    once an epoch has shown how fast the machine is, and no estimate is said."""
    from ..train.estimate import RELATIVE_COSTS, Part
    from ..train.tta import num_views
    plan, data = run.plan, run.data
    epochs, views = plan.recipe.epochs, num_views(plan.tta)
    timed = costs is not None
    if costs is None:
        train_image = RELATIVE_COSTS["train_image"] * (0.01 if plan.cache_features else 1)
        costs = {"train_batch": train_image * data.train_valid_iter.batch_size,
                 "eval_image": 0.0 if plan.cache_features else RELATIVE_COSTS["predict_image"],
                 "predict_image": RELATIVE_COSTS["predict_image"] * views,
                 "feature_image": RELATIVE_COSTS["predict_image"],
                 "features_todo": len(data.train_valid_iter.source)}
    c = {"epoch_end": 0.0, "feature_image": 0.0, "features_todo": 0, **costs}
    parts = []
    if plan.cache_features and c["features_todo"]:
        parts.append(Part("backbone features", once_s=c["features_todo"] * c["feature_image"],
                          detail=f"of {int(c['features_todo'])} images"))
    views_text = f" × {views} TTA views" if views > 1 else ""
    head = "head " if plan.cache_features else ""
    for ph in run_phases(run):
        label, train_name, valid_name, _ = PHASES[ph]
        tr, va = getattr(data, train_name), getattr(data, valid_name) if valid_name else None
        n_va = len(va.source) if va is not None else 0
        done = (epochs_done(os.path.join(plan.out, "checkpoints", ph, "last.npz"))
                if run.resume.get(ph) else 0)
        parts.append(Part(
            label, epochs=epochs, start=min(done, epochs),
            epoch_s=len(tr) * c["train_batch"] + c["epoch_end"] + n_va * c["eval_image"],
            once_s=n_va * c["eval_image"] if run.start is not None and va is not None else 0.0,
            detail=f"{plural(epochs, 'epoch')} × {plural(len(tr), head + 'batch', head + 'batches')}"
                   f" of {tr.batch_size}"
                   + (f" + {n_va} validation images" if n_va else "")))
        if va is not None:
            parts.append(Part("validation predictions", once_s=n_va * c["predict_image"],
                              detail=f"of {n_va} images{views_text}"))
    n_test = len(data.test_ids)
    parts.append(Part("test predictions", once_s=n_test * c["predict_image"],
                      detail=f"of {n_test} images{views_text}"))
    return RunClock(parts, timed=timed)


#: phase -> (progress label, training loader, validation loader, timings key)
PHASES = {"valid": ("train/valid", "train_iter", "valid_iter", "train_s"),
          "final": ("retrain", "train_valid_iter", None, "retrain_s")}


def recipe_net(bk: ModuleType, recipe: Recipe, num_classes: int, image_size: int | None,
               train_iter, seed: int, start: StartWeights | None = None) -> Any:
    """A fresh, seeded model of ``recipe`` in backend ``bk`` (the chapters' ``get_net``), its
    stem whitened from ``train_iter``'s own images when the recipe says so (never from the
    validation images, never over a --weights file's stem: :func:`plan_run` drops it then)."""
    bk.set_seed(seed)
    net = build_net(bk, recipe, num_classes, image_size, start=start)
    if recipe.whiten and weights_file(recipe.weights) is None:
        from ..models.whitening import WHITEN_IMAGES
        limit = WHITEN_IMAGES.get(recipe.model, 1024)
        whiten_first_conv(bk, net, recipe.model, source_images(train_iter, limit=limit, seed=seed),
                          train_iter.mean, train_iter.std, seed=seed, max_images=limit)
    return net


def train_phase(run: Run, phase: str) -> Phase:
    """Stage 5: a fresh model (seeded) trained on one phase's loader, with its own schedule
    and checkpoints: ``"valid"`` trains on the split and validates every epoch, ``"final"``
    is the chapters' last step, a new model on every labelled image."""
    plan, data = run.plan, run.data
    label, train_name, valid_name, timing = PHASES[phase]
    train_iter = getattr(data, train_name)
    valid_iter = getattr(data, valid_name) if valid_name else None
    net = recipe_net(run.bk, plan.recipe, len(data.classes), plan.size, train_iter, plan.seed,
                     start=run.start)
    if run.start is not None and valid_iter is not None and plan.dist.is_main \
            and not run.resume[phase]:
        # where the file starts: a checkpoint of this model and split, at its own accuracy
        run.start_acc = float(run.bk.evaluate_accuracy(net, D.unsharded(valid_iter), amp=plan.amp))
        plan.say(f"starting from --weights {os.path.basename(run.start.file)} "
                 f"({run.start.parts}): valid acc {run.start_acc:.4f} before the first epoch")
    t0, features_before = time.perf_counter(), run.features.get("features_s", 0.0)
    extra, tricks = tricks_for(plan.recipe, train_iter, len(data.classes), plan.say)
    if run.bar is not None:
        run.bar.set_phase(label)
    if run.clock is not None:
        run.clock.begin(label)
    curves = os.path.join(plan.out, "curves.png")
    history = run.train_fn(net, train_iter, valid_iter, plan.recipe.epochs, plan.recipe.lr,
                           plan.recipe.wd, None,
                           checkpoint_dir=os.path.join(plan.out, "checkpoints", phase),
                           resume=run.resume[phase],
                           plot=None if "valid" in run.phases else curves, label=label,
                           **run.train_kw, **extra)
    # a cached-features run: the backbone's seconds go to features_s, the phase's are the head's
    features_s = run.features.get("features_s", 0.0) - features_before
    run.timings[timing] = time.perf_counter() - t0 - features_s
    if features_s:
        run.timings["features_s"] = run.timings.get("features_s", 0.0) + features_s
    run.phases[phase] = Phase(phase, net, history, tricks, run.timings[timing])
    return run.phases[phase]


def validate(run: Run) -> Phase:
    """Stage 5a: the validation phase, then (rank 0) its model's probabilities on the
    validation images and the confusion and mistakes pictures; with ``predict_with="best"``
    the best epoch's weights are put back first."""
    plan = run.plan
    phase = train_phase(run, "valid")
    if plan.predict_with == "best":
        _load_best(run.bk, phase.net, os.path.join(plan.out, "checkpoints", "valid", "best.npz"),
                   run.config)
    if plan.dist.is_main:
        run.valid_probs = valid_predictions(run.bk, phase.net, run.data, plan.amp, tta=plan.tta)
        run.calibration = calibrate_stage(run)
        run.valid_probs = run.calibration.apply(run.valid_probs)
        hist = phase.history   # the predicting epoch's plain accuracy, beside a TTA one
        plain = hist.best_valid_acc if plan.predict_with == "best" else hist.last["valid_acc"]
        run.pictures = valid_pictures(plan.out, run.data, run.valid_probs,
                                       title(plan.comp, plan.backend, plan.recipe),
                                       tta=plan.tta, plain_acc=plain)
    return phase


def calibrate_stage(run: Run) -> Calibration:
    """Stage 5b: the plan's calibration fitted on the validation phase's probabilities
    (``run.valid_probs``, before calibration), said in one line and written to
    ``calibration.json``; :func:`finish_run` applies it to the test probabilities of the model
    that writes the submission (the retrained one too: it reuses this temperature)."""
    plan = run.plan
    cal = calibrate(run.valid_probs, run.data.valid_iter.labels, plan.calibrate,
                    plan.calibrate_note)
    plan.say(cal.line())
    for w in cal.warnings:   # (summary.json["warnings"] keeps them: finish_run)
        plan.say(f"warning: calibration: {w}")
    atomic_write_text(os.path.join(plan.out, "calibration.json"),
                      json.dumps(cal.to_json(), indent=2) + "\n")
    return cal


def finish_run(run: Run) -> dict[str, Any]:
    """Stage 6: predict the test set with the model ``predict_with`` names, write
    ``submission.csv`` (checked against the sample), ``history.csv``, ``curves.png``, the
    predictions ensembles read, and ``summary.json`` (last); returns the summary."""
    plan, data = run.plan, run.data
    valid, final = run.phases.get("valid"), run.phases.get("final")
    net = (final or valid).net
    t0 = time.perf_counter()
    probs = run.bk.predict(net, data.test_iter, amp=plan.amp, tta=plan.tta)
    if run.calibration is None:   # no validation phase: nothing to fit a temperature on
        run.calibration = Calibration("none", note=plan.calibrate_note)
        plan.say(run.calibration.line())
    probs = run.calibration.apply(probs)
    sub = write_submission(plan.comp, plan.data_dir, probs, data,
                           os.path.join(plan.out, "submission.csv"))
    run.timings["predict_s"] = time.perf_counter() - t0
    histories = [(p.name if p.name == "valid" else "train_valid", p.history)
                 for p in (valid, final) if p is not None]
    write_history(plan.out, histories)
    plot_run(histories, os.path.join(plan.out, "curves.png"),
             title(plan.comp, plan.backend, plan.recipe))
    summary = _summary(run, probs, sub)
    summary.update(save_run_predictions(plan.out, data, probs,
                                        run.valid_probs if valid is not None else None,
                                        tta=plan.tta, split=plan.split, files=summary["files"]))
    summary.update(run_outcome(valid.history if valid else None,
                                final.history if final else None, plan.predict_with,
                                len(data.classes), plan.recipe))
    summary["warnings"] = (list(summary.get("warnings") or [])
                           + [f["warning"] for fs in run.forced.values() for f in fs]
                           + [f"calibration: {w}" for w in run.calibration.warnings])
    summary["files"].update(run.pictures if valid is not None else {})
    summary["calibration"] = dict(run.calibration.to_json(), applied_to=(
        "submission.csv, test_probs.npy" + (", valid_probs.npy" if valid is not None else "")
        if run.calibration.method != "none" else "nothing"))
    if valid is not None:
        summary["files"]["calibration"] = os.path.join(plan.out, "calibration.json")
    summary["world_size"] = plan.dist.world_size
    if plan.final_out is not None:   # --overwrite: built beside the old run, which it replaces now
        summary = retarget(summary, plan.out, plan.final_out)
    atomic_write_text(os.path.join(plan.out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    if plan.runlog is not None:   # how the run ended, last in log.txt
        plan.runlog.write(f"finished in {summary['timings']['total_s']:.1f} s: "
                          + summary_line(summary))
    if plan.final_out is not None:
        plan.runlog.close()
        install_run(plan.out, plan.final_out)
    return _dist_done(plan.backend, plan.dist, plan.out, summary)


def _summary(run: Run, probs: np.ndarray, sub: str) -> dict[str, Any]:
    """``summary.json``'s figures, settings and files (before the predictions' and the
    outcome's entries join it)."""
    plan, data = run.plan, run.data
    valid = run.phases.get("valid")
    vh = valid.history if valid else None
    main = vh if vh is not None else run.phases["final"].history
    tricks = (valid or run.phases["final"]).tricks
    timings = {k: v for k, v in run.timings.items() if k != "start"}
    timings["total_s"] = time.perf_counter() - run.timings["start"]
    out = plan.out
    summary = {
        "competition": plan.comp.name, "backend": plan.backend,
        "data_dir": os.path.abspath(plan.data_dir), "recipe": asdict(plan.recipe),
        "tricks": tricks, "amp": _precision(run), "image_size": plan.size, "seed": plan.seed,
        "num_classes": len(data.classes), "num_test": len(data.test_ids),
        # what ran at prediction too (not part of the configuration --resume compares)
        "config": dict(run.config, tta=check_tta(plan.tta) or "none",
                       calibrate=run.calibration.method if run.calibration else "none"),
        "weights": _weights_record(run), "data": _trained_on(run),
        "valid_acc": json_float(vh.last["valid_acc"]) if vh else None,
        "valid_loss": json_float(vh.last["valid_loss"]) if vh else None,
        "best_valid_acc": json_float(vh.best_valid_acc) if vh else None,
        "train_acc": json_float(main.last["train_acc"]) if len(main) else None,
        "examples_per_sec": json_float(main.examples_per_sec) if len(main) else None,
        "devices": main.devices, "timings": {k: round(v, 2) for k, v in timings.items()},
        "cache_features": plan.cache_features,
        # a cached-features run: the backbone's time apart (examples_per_sec is the head's)
        **({"features": _features_record(run.features)} if run.features else {}),
        "files": {"submission": sub, "history": os.path.join(out, "history.csv"),
                  "curves": os.path.join(out, "curves.png"),
                  "checkpoints": os.path.join(out, "checkpoints"),
                  "log": os.path.join(out, "log.txt"),
                  "summary": os.path.join(out, "summary.json")},
    }
    if data.test_labels is not None:
        # The CIFAR archives label their test split: report what Kaggle would have scored.
        summary.update(labelled_test_metrics(probs, data.test_labels),
                       label_kind=plan.label_kind or "fine")
        plan.say(f"test accuracy {summary['test_acc']:.4f} on {len(data.test_ids)} labelled "
                 "test images")
    return summary


def _precision(run: Run) -> Any:
    """``summary.json["amp"]``: what the model that writes the submission trained in
    (``bf16``, ``float32`` ...; ``amp="auto"`` decides per backend and CPU), else the request."""
    phase = run.phases.get("final") or run.phases.get("valid")
    return (phase.history.precision if phase is not None else "") or run.plan.amp


def _trained_on(run: Run) -> dict[str, Any] | None:
    """``summary.json["data"]``: the fingerprint of the data the submission's model was
    trained on — the checkpoint's when ``--resume force`` continued it on other data (with
    this run's data and a note beside it)."""
    from .preflight import DATA_KEYS
    now = run.data.fingerprint
    phase = "final" if "final" in run.phases else "valid"
    for f in run.forced.get(phase, []):
        old = {k: f["config"].get(k) for k in DATA_KEYS if f["config"].get(k) is not None}
        if now and old and any(old[k] != now.get(k) for k in old):
            return dict(now, **old, this_run=now, note=(
                "the model was trained on these data (its checkpoint's) and continued with "
                "--resume force on this run's, which differ"))
    return now
def _features_record(record: dict[str, Any]) -> dict[str, Any]:
    """``summary.json["features"]``: the frozen backbone's features, timed apart from the
    head's training (whose examples/s the run's figures are)."""
    seconds, computed = float(record.get("features_s", 0.0)), int(record.get("features_computed", 0))
    return {"seconds": round(seconds, 2), "images_computed": computed,
            "images_from_cache": int(record.get("features_cached", 0)),
            "images_per_sec": round(computed / seconds, 2) if computed and seconds > 0 else None,
            "examples_per_sec_is": "the head's training on cached features"}


def _weights_record(run: Run) -> dict[str, Any] | None:
    """``summary.json["weights"]``: what the models started from — the file, its SHA-1 and the
    parts loaded, or ImageNet's weights through the builder; ``None``: a random start."""
    if run.start is not None:
        rec = run.start.record()
        if run.start_acc is not None:
            rec["valid_acc_at_start"] = run.start_acc
        return rec
    if run.plan.recipe.weights == "imagenet":
        return {"file": None, "source": "torchvision's ImageNet weights", "parts":
                "backbone" if run.plan.recipe.model == "finetune" else "all but the classifier"}
    return None


def tricks_for(recipe: Recipe, train_iter, num_classes: int,
               log: Callable[[str], Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(extra ``train`` keywords, summary) of the recipe's tricks for one training phase.

    Built per phase: a schedule depends on the loader's batches per epoch, and a plateau
    schedule carries state that a second run must not inherit.
    """
    recipe = cycle_step_size(recipe, len(train_iter))  # the CIFAR-10 write-up: cycles per run
    sched = make_schedule(recipe, recipe.epochs, len(train_iter), log)
    mix = make_mixing(recipe, num_classes)
    return train_kwargs(recipe, sched, mix), describe_tricks(recipe, sched, mix)

def run_config(comp: Competition, recipe: Recipe, *, backend: str, image_size: int | None = None,
               seed: int = 0, amp: Any = "auto", **extra: Any) -> dict[str, Any]:
    """Every setting that shapes training, as one flat JSON-ready dict.

    Stored in each checkpoint's metadata and in ``summary.json["config"]``; ``--resume``
    refuses a checkpoint whose configuration differs (see :func:`preflight.check_resume`).
    Every field of the :class:`Recipe` joins automatically; a new run setting that is not a
    Recipe field is passed as a keyword (``run_config(..., augment="crop-flip")``). Settings
    that do not change what is trained (workers, progress bars, ``retrain``, folders) stay
    out. ``run_competition`` checks ``resume`` (False, True or ``"force"``) against it
    before the first epoch, together with the settings and every input.
    """
    config = {"competition": comp.name, "backend": canonical_name(backend),
              "augment": comp.augment, **asdict(recipe),  # a Recipe's own augment wins
              "image_size": int(image_size or comp.image_size), "seed": int(seed), "amp": amp,
              **extra}
    config.pop("small_set_batch", None)  # a rule, applied already: batch_size and lr record it
    config.pop("tta", None)   # how the trained net predicts, not what is trained
    return json.loads(json.dumps(config, default=str))

def check_label_kind(label_kind: str | None, data_dir: str) -> None:
    """``--label-kind`` chooses between CIFAR-100's fine and coarse labels: refused (one line)
    for any other data, where there is one kind of label only."""
    if label_kind is None:
        return
    from ..data.cifar import archive_kind, find_cifar_archive
    archive = find_cifar_archive(data_dir) if os.path.isdir(data_dir) or \
        os.path.isfile(data_dir) else None
    kind = archive_kind(archive) if archive is not None else None
    if kind != "cifar100":
        what = ("a CIFAR-10 archive, which has no coarse labels" if kind == "cifar10" else
                "a folder layout with one label per image")
        raise ValueError(f"--label-kind {label_kind} applies to a CIFAR-100 python archive "
                         f"(cifar-100-python.tar.gz: fine or coarse labels); {data_dir} is "
                         f"{what}: drop --label-kind")

def check_keep(recipe: Recipe) -> None:
    """``keep`` is ``"last"`` (the chapters: retrain, predict with the last epoch) or ``"best"``."""
    if recipe.keep not in ("last", "best"):
        raise ValueError(f"recipe keep={recipe.keep!r}; choose 'last' or 'best'")
    if recipe.normalize not in ("competition", "imagenet", "airbench"):
        raise ValueError(f"recipe normalize={recipe.normalize!r}; choose 'competition', "
                         "'imagenet' or 'airbench'")

PREDICT_WITH = ("retrain", "best", "last")

def _random_init(recipe: Recipe) -> Recipe:
    """``weights="none"`` (CLI ``--weights none``) means a random backbone, like ``weights=None``."""
    if recipe.weights is not None and weights_choice(recipe.weights) is None:
        return replace(recipe, weights=None)
    return recipe

def _recipe_for(comp: Competition, **overrides: Any) -> Recipe:
    """The competition's recipe with the non-``None`` ``overrides`` (a clear error without one)."""
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    return _random_init(comp.recipe.with_overrides(**overrides))

def _predict_with(predict_with: str | None, retrain: bool, has_valid: bool) -> str:
    """Which model writes submission.csv: ``retrain`` (default), ``best`` or ``last``."""
    if predict_with is None:
        return "retrain" if retrain or not has_valid else "last"
    if predict_with not in PREDICT_WITH:
        raise ValueError(f"predict_with must be one of {', '.join(PREDICT_WITH)}, got {predict_with!r}")
    if predict_with == "retrain" and not retrain:
        raise ValueError("predict_with='retrain' contradicts retrain=False (--no-retrain); "
                         "choose --predict-with best or last")
    if predict_with != "retrain" and not has_valid:
        raise ValueError(f"predict_with={predict_with!r} (--predict-with {predict_with}"
                         f"{', --no-retrain' if predict_with == 'last' else ''}) needs a "
                         "validation phase; set valid_ratio > 0 (--valid-ratio) or predict with "
                         "'retrain'")
    return predict_with

def _run_progress(progress: Any, epochs: int, data: CompetitionData, retrain: bool,
                  resume_from: str | None = None):
    """One overall progress line over every phase's batches (``None`` when progress is off);
    with ``resume_from`` (the run folder) the epochs its checkpoints already hold are left out."""
    if progress is not True:
        return None
    phases = [("valid", len(data.train_iter))] if data.valid_iter is not None else []
    if retrain or data.valid_iter is None:
        phases.append(("final", len(data.train_valid_iter)))
    done = {ph: epochs_done(os.path.join(resume_from, "checkpoints", ph, "last.npz"))
            if resume_from else 0 for ph, _ in phases}
    return RunProgress(RunProgress.plan(*((max(0, epochs - done[ph]), n) for ph, n in phases)))

def _load_best(bk, net, path: str, config: dict[str, Any] | None = None) -> None:
    """Put the validation phase's best epoch (``best.npz``) into ``net``, after checking it was
    made by this run's configuration and data (``config``)."""
    state, meta = load_npz(path)
    if config is not None:
        check_checkpoint(path, meta, config)
    bk.set_state(net, {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")},
                 source=f"checkpoint {path}")

def valid_predictions(bk, net, data: CompetitionData, amp: Any = "auto", tta: Any = None) -> np.ndarray:
    """Class probabilities of ``net`` on the validation images, in ``data.valid_iter`` order."""
    # every image, also when training was data parallel
    return bk.predict(net, D.unsharded(data.valid_iter), amp=amp, tta=tta)

def _dist_done(backend: str, env, out: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every rank waits until rank 0 has written the run; the others return a short summary
    (``is_main`` False) that the CLI does not print."""
    D.barrier(backend, env)
    if summary is not None:
        return summary
    return {"is_main": False, "rank": env.rank, "world_size": env.world_size,
            "files": {"summary": os.path.join(out, "summary.json")}}
