"""d2lkaggle: a Kaggle image-classification competition from raw files to submission.csv, in
PyTorch, MXNet or PaddlePaddle (the two Kaggle chapters of Dive into Deep Learning).

Start with `d2lkaggle demo`; `d2lkaggle COMMAND --help` explains each command."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from ..models.table import MODEL_NAMES
    p.add_argument("--model", metavar="NAME",
                   help="model-table name: " + ", ".join(MODEL_NAMES)
                   + " (default: the competition's recipe model)")


def _drop_rate(text: str) -> float:
    """A drop probability in [0, 1) (``--drop-path``, ``--stochastic-depth``)."""
    import math
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise argparse.ArgumentTypeError(f"expected a drop rate in [0, 1), e.g. 0.1; got {text!r}")
    return v


def _add_regularization_args(p: argparse.ArgumentParser) -> None:
    """Stochastic depth of the model-table models (d2lkaggle.models.table; docs/models.md)."""
    from ..models.table import REGULARIZERS
    p.add_argument("--drop-path", type=_drop_rate, metavar="RATE",
                   help="stochastic depth of the ResNets' residual blocks ("
                        + ", ".join(REGULARIZERS["drop_path"]) + "): block i of n is dropped "
                        "per example with RATE*i/n while training (default: 0, off)")
    p.add_argument("--stochastic-depth", type=_drop_rate, metavar="RATE",
                   help="EfficientNetV2's stochastic depth, same rule (default: 0.2, torchvision's; "
                        "writeup-cifar100-effnetv2 0.2 as seeds/003)")


def _recipe_values(field: str) -> str:
    """``cifar10 0.02, dog-breed 0.005, demo 0.05``: a recipe field of every competition
    that has a recipe, read from the competitions table (for help texts)."""
    from ..specs.competitions import COMPETITIONS
    vals = []
    for name, comp in COMPETITIONS.items():
        if comp.recipe is None:
            continue
        v = getattr(comp.recipe, field, getattr(comp, field, None))
        vals.append(f"{name} {'none' if v is None else format(v, 'g') if isinstance(v, float) else v}")
    return ", ".join(vals)


def _recipe_help(text: str, field: str) -> str:
    """``text (recipe default: cifar10 0.02, ...)``; ``%%`` escapes argparse's format."""
    return f"{text} (recipe default: {_recipe_values(field)})".replace("%", "%%")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    _add_model_args(p)
    _add_regularization_args(p)
    p.add_argument("--epochs", type=int, help=_recipe_help("epochs of each phase", "epochs"))
    p.add_argument("--batch-size", type=int, help=_recipe_help("images per batch", "batch_size"))
    p.add_argument("--lr", type=float, help=_recipe_help("learning rate (SGD, batch-mean loss)", "lr"))
    p.add_argument("--wd", type=float, help=_recipe_help("weight decay", "wd"))
    p.add_argument("--lr-period", type=int,
                   help=_recipe_help("multiply the lr by --lr-decay every this many epochs", "lr_period"))
    p.add_argument("--lr-decay", type=float, help=_recipe_help("lr factor every --lr-period", "lr_decay"))
    p.add_argument("--valid-ratio", type=float,
                   help=_recipe_help("fraction of each class held out for validation (0: none)",
                                     "valid_ratio"))
    p.add_argument("--image-size", type=int,
                   help=_recipe_help("side of the square images fed to the net", "image_size"))
    p.add_argument("--weights", help=_recipe_help(
        "fine-tune backbone: 'imagenet', a .pth/.safetensors/.npz file, or 'none' (random "
        "initialisation; a frozen random backbone trains poorly)", "weights"))
    p.add_argument("--out", help="run folder (default: runs/COMPETITION-BACKEND)")
    p.add_argument("--no-retrain", action="store_true",
                   help="predict with the validated model instead of retraining on all labels "
                        "(same as --predict-with last; default: retrain)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffling, augmentation "
                   "and initialisation (default: 0)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=("force",),
                   help="continue from the run folder's checkpoints; refused when they were "
                        "trained with another configuration, unless '--resume force' "
                        "(default: off, start afresh)")
    p.add_argument("--workers", type=int,
                   help="threads decoding and augmenting images (default: min(4, CPU count))")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16 autocast where the backend measured it faster)")
    _add_output_args(p)
    _add_recipe_args(p)
    _add_cifar_args(p)
    _add_ensemble_args(p)
    _add_distributed_args(p)
    _add_features_args(p)


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data parallel (docs/scale.md)")
    g.add_argument("--distributed", action="store_true",
                   help="train data parallel: under torchrun it joins the launcher's processes; "
                        "outside one it starts `torchrun --standalone --nproc_per_node N` itself "
                        "with these arguments (torch; --batch-size stays the global batch) "
                        "(default: one process, unless a launcher started this one)")
    g.add_argument("--nproc-per-node", type=int,
                   help="processes --distributed starts on this machine outside a launcher "
                        "(default: one per GPU when there are several, else 2)")


def _distributed_run(a: argparse.Namespace, several_models: bool) -> dict | None:
    """Start this command under the backend's launcher (``--distributed`` outside one);
    ``None`` when this process is to train itself."""
    from ..parallel import distributed as D
    env = D.detect()
    if several_models and (env.enabled or getattr(a, "distributed", False)):
        raise ValueError("--ensemble/--folds train several models one after the other; run "
                         "them without --distributed (or train each member with its own "
                         "--distributed run and combine them with `d2lkaggle ensemble`)")
    if not getattr(a, "distributed", False) or env.enabled:
        return None
    nproc = a.nproc_per_node or D.default_nproc(a.backend)
    if nproc < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {nproc}")
    batch = _planned_batch_size(a)
    if batch is not None:
        D.check_batch_size(batch, D.DistEnv(rank=0, world_size=nproc))
    cmd = D.launch_command(a.backend, nproc, list(getattr(a, "argv", None) or sys.argv[1:]))
    import subprocess
    print("starting: " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
    return {"returncode": subprocess.run(cmd).returncode}


def _planned_batch_size(a: argparse.Namespace) -> int | None:
    """The global batch the run will use (None when only the run itself can tell)."""
    if a.batch_size is not None:
        return a.batch_size
    try:
        from ..specs.competitions import get_competition, recipe_for
        name = getattr(a, "competition", None) or "demo"
        return recipe_for(get_competition(name), getattr(a, "recipe", "default")).batch_size
    except Exception:   # noqa: BLE001 - the ranks check it again and say why
        return None


def _wait_for_main_rank(path: str, timeout: float = 600.0) -> bool:
    """Under a launcher, ranks > 0 wait for rank 0 to create ``path``; False for rank 0."""
    from ..parallel.distributed import detect
    env = detect()
    if not env.enabled or env.is_main:
        return False
    import time
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {env.rank}: {path} did not appear within {timeout:.0f} s")
        time.sleep(0.2)
    return True


def _add_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-features", action="store_true",
                   help="frozen-backbone models (dog-breed's finetune): compute each image's "
                        "backbone features once, cache them next to the data and train the "
                        "head on them; needs --augment none (default: off, every epoch runs "
                        "the backbone)")


def _features_kwargs(a: argparse.Namespace) -> dict:
    return {"cache_features": True} if getattr(a, "cache_features", False) else {}


def _add_archive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extract", action="store_true",
                   help="first unpack archives found in --data-dir (train.7z, test.7z, *.zip); "
                        "default: stop and name the command that does it")


def _check_archives(a: argparse.Namespace) -> None:
    """Unpacked archives in --data-dir: extract them with --extract, else say how (one line)."""
    data_dir = getattr(a, "data_dir", None)
    if not data_dir:
        return
    from ..specs.competitions import get_competition
    from ..compete.kaggle import archive_hint, extract_archives
    comp = get_competition(a.competition)
    if archive_hint(comp, data_dir) is None:
        return
    if getattr(a, "extract", False):
        extract_archives(data_dir)
        return
    raise FileNotFoundError(archive_hint(comp, data_dir))


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """Which model writes submission.csv, and what happens to a finished run folder."""
    p.add_argument("--predict-with", choices=("retrain", "best", "last"),
                   help="model that writes submission.csv: 'retrain' (a fresh model trained on "
                        "train+valid, as the chapters do), 'best' (the validation phase's best "
                        "epoch, checkpoints/valid/best.npz) or 'last' (its last epoch); best and "
                        "last skip the retrain (default: retrain)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in the run folder (default: refuse; --resume "
                        "continues it instead)")


def _add_ensemble_args(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--tta", help="test-time augmentation: flip, flip-crop or a number of views N "
                                 "(default: off)")


def _add_cifar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-kind", choices=("fine", "coarse"),
                   help="CIFAR-100 python archive: learn the 100 fine classes or the 20 coarse "
                        "superclasses (default: fine)")


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole epochs separated by commas, e.g. 10,15; got {text!r}")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """Training tricks of issue 11 (docs/recipes.md); unset flags keep the recipe's value."""
    from ..data.transforms import PRESETS
    from ..specs.competitions import RECIPE_NAMES
    from ..specs.tricks import OPTIMIZERS
    from ..train.schedules import CYCLE_MODES, SCHEDULES
    g = p.add_argument_group("training recipe (docs/recipes.md; unset flags keep the recipe's value)")
    g.add_argument("--recipe", choices=RECIPE_NAMES, default="default",
                   help="default: ours (one-cycle, see docs/recipes.md); book: the chapter's exact "
                        "values (SGD, StepLR, its augmentation) (default: default)")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd (momentum 0.9), nesterov, adam, adamw (default: the recipe's, sgd)")
    g.add_argument("--sched", choices=SCHEDULES,
                   help="learning-rate schedule, set before every batch (default: the recipe's: "
                        "onecycle for cifar10/demo, step for dog-breed and --recipe book)")
    g.add_argument("--warmup", type=float, metavar="EPOCHS",
                   help="warm-up epochs of cosine/onecycle (default: cosine 0, onecycle 30%% of the run)")
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
                   help="augmentation preset (default: book, the chapter's recipe)")
    g.add_argument("--no-wd-bn-bias", action="store_true",
                   help="no weight decay on biases and BatchNorm parameters (default: decay all)")


def _recipe_kwargs(a: argparse.Namespace) -> dict:
    kw = {k: getattr(a, k, None) for k in (
        "optimizer", "sched", "warmup", "base_lr", "max_lr", "step_size", "cycle_mode",
        "milestones", "mixup", "cutmix", "mix_prob", "switch_prob", "label_smoothing", "augment")}
    kw = {k: v for k, v in kw.items() if v is not None}
    if getattr(a, "no_wd_bn_bias", False):
        kw["wd_exclude"] = "bn_bias"
    return dict(recipe=getattr(a, "recipe", "default"), **kw)


def _run_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                wd=a.wd, lr_period=a.lr_period, lr_decay=a.lr_decay, valid_ratio=a.valid_ratio,
                image_size=a.image_size, weights=a.weights, retrain=not a.no_retrain, seed=a.seed,
                resume=a.resume, progress=not a.quiet, num_workers=a.workers,
                amp=False if a.no_amp else "auto", label_kind=a.label_kind, **_recipe_kwargs(a),
                **_model_kwargs(a), **_output_kwargs(a), **_features_kwargs(a))


def _model_kwargs(a: argparse.Namespace) -> dict:
    kw = {"model": a.model} if getattr(a, "model", None) else {}
    for k in ("drop_path", "stochastic_depth"):   # Recipe fields; None keeps the recipe's
        if getattr(a, k, None) is not None:
            kw[k] = getattr(a, k)
    return kw


def _output_kwargs(a: argparse.Namespace) -> dict:
    return dict(predict_with=getattr(a, "predict_with", None),
                overwrite=getattr(a, "overwrite", False))


def _report(summary: dict) -> None:
    acc, speed = summary.get("valid_acc"), summary.get("examples_per_sec")
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}, " if acc is not None else "")
          + (f"{speed:.1f} examples/s, " if speed is not None else "")
          + f"{summary['timings']['total_s']:.1f} s")
    if summary.get("test_acc") is not None:
        print(f"  test accuracy {summary['test_acc']:.4f} (the archive's labelled test split)")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")
    from ..train.diagnostics import CAUSES
    warnings = summary.get("warnings", [])
    for w in warnings:  # already said in full during training: the causes once here
        print("warning: " + w.replace(" " + CAUSES + ".", ""))
    if warnings:
        print(f"  {CAUSES}.")
    print(_last_line(summary))


def _run_or_ensemble(competition: str, data_dir: str, a: argparse.Namespace) -> dict:
    """One run, or with --ensemble/--folds several combined (d2lkaggle.compete.ensembles)."""
    from ..compete.ensembles import run_ensemble, run_folds
    from ..compete.run import run_competition
    from ..train.tta import check_tta
    kw = dict(_run_kwargs(a), tta=check_tta(getattr(a, "tta", None)))
    ens, folds = getattr(a, "ensemble", None), getattr(a, "folds", None)
    launched = _distributed_run(a, ens is not None or folds is not None)
    if launched is not None:
        return launched
    if getattr(a, "distributed", False):
        kw["distributed"] = True
    if ens is not None and folds is not None:
        raise ValueError("--ensemble and --folds are two ways to train several models: choose one")
    if getattr(a, "bagging", False) and ens is None:
        raise ValueError("--bagging needs --ensemble K (the number of bootstrap members)")
    if (getattr(a, "members_vary", "seed") != "seed" or getattr(a, "members_values", None)) \
            and ens is None:
        raise ValueError("--members-vary/--members-values need --ensemble K")
    if ens is not None:
        return run_ensemble(competition, data_dir, members=ens, bagging=a.bagging,
                            vary=a.members_vary, values=a.members_values, **kw)
    if folds is not None:
        return run_folds(competition, data_dir, folds=folds, **kw)
    return run_competition(competition, data_dir, **kw)


def _report_ensemble(summary: dict) -> None:
    print(f"\n{summary['competition']} {summary['kind']} of {len(summary['members'])} "
          f"({summary['backend']}): {summary['timings']['total_s']:.1f} s")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")


def _last_line(summary: dict) -> str:
    """The line a user reads: best and last valid accuracy, the submission's model, the folder."""
    folder = os.path.dirname(summary["files"]["summary"])
    parts = [f"{summary['competition']} · {summary['backend']}"]
    if summary.get("valid_acc") is not None:
        best_epoch = summary.get("best_epoch")
        parts.append(f"valid acc best {summary['best_valid_acc']:.4f}"
                     + (f" (epoch {best_epoch})" if best_epoch else "")
                     + f", last {summary['valid_acc']:.4f}")
    model = summary.get("submission_model") or summary.get("predict_with", "")
    parts.append(f"submission.csv from {model}")
    parts.append(f"files in {folder}")
    return " · ".join(parts)


def cmd_run(a: argparse.Namespace) -> int:
    with _cli_words():
        _check_archives(a)
        s = _run_or_ensemble(a.competition, a.data_dir, a)
    if "returncode" in s or s.get("is_main") is False:   # the launcher's or another rank's
        return int(s.get("returncode", 0))
    (_report_ensemble if "members" in s else _report)(s)
    return 0


def cmd_ensemble(a: argparse.Namespace) -> int:
    from ..compete.ensembles import ensemble_runs
    _report_ensemble(ensemble_runs(a.runs, a.out, vote=a.vote, weights=a.weights,
                                   geometric=a.geometric, data_dir=a.data_dir))
    return 0


@contextlib.contextmanager
def _cli_words():
    """Re-raise errors that tell a Python caller what to pass in the command line's words."""
    from ..models.weights import WeightsUnavailableError
    try:
        yield
    except WeightsUnavailableError as e:
        raise RuntimeError(e.for_cli()) from e


def cmd_demo(a: argparse.Namespace) -> int:
    from ..data.demo import make_demo
    root = os.path.abspath(a.dir)
    data_dir = os.path.join(root, "data")
    if not os.path.exists(os.path.join(data_dir, "trainLabels.csv")):
        if _wait_for_main_rank(os.path.join(data_dir, "trainLabels.csv")):
            pass   # under a launcher rank 0 builds it (make_demo renames it into place)
        else:
            print(f"building the demo competition in {data_dir}")
            make_demo(data_dir, seed=0)
    if a.out is None:
        a.out = os.path.join(root, f"run-{a.backend}")
    if not a.resume:
        a.overwrite = True   # the demo's own run folder: a second `d2lkaggle demo` replaces it
    with _cli_words():
        s = _run_or_ensemble("demo", data_dir, a)
    if "returncode" in s or s.get("is_main") is False:   # the launcher's or another rank's
        return int(s.get("returncode", 0))
    (_report_ensemble if "members" in s else _report)(s)
    return 0


def cmd_lr_find(a: argparse.Namespace) -> int:
    from ..train.lrfind import find_lr
    with _cli_words():
        res, png = find_lr(a.competition, a.data_dir, backend=a.backend, out=a.out,
                           batch_size=a.batch_size, wd=a.wd, image_size=a.image_size,
                           weights=a.weights, start_lr=a.start_lr, end_lr=a.end_lr,
                           num_iter=a.num_iter, seed=a.seed, num_workers=a.workers,
                           amp=False if a.no_amp else "auto", progress=not a.quiet, log=print)
    print(f"wrote {png} and {os.path.splitext(png)[0]}.csv")
    print(f"suggested lr {res.suggestion:.3g} ({res.rule}): "
          f"d2lkaggle run {a.competition} --data-dir {a.data_dir} --lr {res.suggestion:.3g}")
    return 0


def _competition_arg(runnable: bool):
    """argparse type: a competition of the table (aliases allowed); with ``runnable``, one
    with a training recipe, so ``run`` fails upfront, in one line, for the others."""
    def check(name: str) -> str:
        from ..specs.competitions import get_competition
        try:
            comp = get_competition(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if runnable and comp.recipe is None:
            raise argparse.ArgumentTypeError(
                f"{comp.name} has no training recipe yet ({comp.notes}); runnable: "
                + ", ".join(_competition_names(runnable=True)))
        return comp.name
    return check


def _competition_names(runnable: bool = False) -> list[str]:
    from ..specs.competitions import COMPETITIONS
    return [n for n, c in COMPETITIONS.items() if c.recipe is not None or not runnable]


def _competition_help() -> str:
    from ..specs.competitions import ALIASES, COMPETITIONS
    parts = []
    for n, c in COMPETITIONS.items():
        parts.append(n if c.recipe is not None else f"{n} (not runnable yet: {c.notes})")
    return ("competition: " + ", ".join(parts) + "; aliases: "
            + ", ".join(f"{k}={v}" for k, v in ALIASES.items())).replace("%", "%%")


def _set_help(p: argparse.ArgumentParser, option: str, text: str) -> None:
    for action in p._actions:
        if option in action.option_strings:
            action.help = text


def cmd_download(a: argparse.Namespace) -> int:
    from ..data.hub import download, download_extract
    kw = dict(deadline=a.deadline, stall_timeout=a.stall_timeout)
    max_size = None if a.max_extract_gb is None else int(a.max_extract_gb * 1e9)
    path = (download_extract(a.name, a.folder, max_size=max_size, **kw) if a.extract
            else download(a.name, a.folder, **kw))
    print(path)
    return 0


def cmd_make_demo(a: argparse.Namespace) -> int:
    from ..data.demo import make_demo
    t = time.perf_counter()
    out = make_demo(a.out, n_train=a.n_train, n_test=a.n_test, size=a.size, seed=a.seed,
                    layout=a.layout, hard=a.hard)
    print(f"wrote a {a.layout} demo competition to {out} in {time.perf_counter() - t:.1f} s")
    return 0


def cmd_reorg(a: argparse.Namespace) -> int:
    from ..data.labels import read_csv_labels
    from ..data.reorg import reorg_test, reorg_train_valid
    labels_file = a.labels or next((os.path.join(a.data_dir, f) for f in ("trainLabels.csv", "labels.csv")
                                    if os.path.exists(os.path.join(a.data_dir, f))), None)
    if labels_file is None:
        raise FileNotFoundError(f"no trainLabels.csv or labels.csv in {a.data_dir}; "
                                f"pass --labels FILE")
    t = time.perf_counter()
    labels = read_csv_labels(labels_file)
    n_valid = reorg_train_valid(a.data_dir, labels, a.valid_ratio, seed=a.seed, mode=a.mode)
    n_test = reorg_test(a.data_dir, mode=a.mode) if os.path.isdir(os.path.join(a.data_dir, "test")) else 0
    dt = time.perf_counter() - t
    classes = len(set(labels.values()))
    print(json.dumps({"train_valid": len(labels), "classes": classes, "valid_per_class": n_valid,
                      "valid": n_valid * classes, "train": len(labels) - n_valid * classes,
                      "test": n_test, "mode": a.mode, "seconds": round(dt, 2)}))
    return 0


def cmd_weights_convert(a: argparse.Namespace) -> int:
    from ..models.weights import convert, load_neutral
    out = convert(a.src, a.dst)
    print(f"wrote {len(load_neutral(out))} arrays to {out}")
    return 0


def cmd_parity(a: argparse.Namespace) -> int:
    from ..models.parity import format_table, run_parity
    optimizers = a.optimizer or None
    if optimizers or a.mixing:   # float32 and float64 runs of the optimizers (cyclic lr per step)
        report = run_parity(a.model, a.steps, a.backends or None, tasks=("train", "train64"),
                            optimizers=optimizers or ["sgd"], mixing=a.mixing)
    else:
        report = run_parity(a.model, a.steps, a.backends or None)
    print(format_table(report))
    return 0


def cmd_recipes(a: argparse.Namespace) -> int:
    from ..specs.writeups import format_writeups
    print(format_writeups(a.names or None))
    return 0


def cmd_extract(a: argparse.Namespace) -> int:
    from ..data.hub import extract
    t = time.perf_counter()
    dest = extract(a.archive, a.dest)
    print(f"extracted {a.archive} into {dest} in {time.perf_counter() - t:.1f} s")
    return 0


def cmd_kaggle_download(a: argparse.Namespace) -> int:
    from ..compete.kaggle import download_competition
    path = download_competition(a.competition, a.path, unpack=not a.no_extract, force=a.force)
    print(path)
    return 0


def cmd_kaggle_submit(a: argparse.Namespace) -> int:
    from ..compete.kaggle import submit
    submit(a.run_dir, a.message, competition=a.competition, sample=a.sample)
    return 0


def _add_kaggle_parsers(sub) -> None:
    """``d2lkaggle extract`` and ``d2lkaggle kaggle download|submit``."""
    e = sub.add_parser("extract", help="unpack a .zip/.7z/.tar* archive safely (once)")
    e.add_argument("archive", help="e.g. ../data/cifar-10/train.7z")
    e.add_argument("dest", nargs="?", help="destination folder (default: the archive's folder)")
    e.set_defaults(func=cmd_extract)

    k = sub.add_parser("kaggle", help="download a competition from Kaggle or submit a run "
                                      "(needs: pip install \"d2lkaggle[kaggle]\" and an API token)")
    ksub = k.add_subparsers(dest="kaggle_command", required=True)
    kd = ksub.add_parser("download", help="download and unpack a competition's files")
    kd.add_argument("competition", help="cifar-10 or dog-breed-identification (or cifar10, dog-breed)")
    kd.add_argument("--path", help="destination folder (default: $D2LKAGGLE_DATA/<competition>, "
                                   "i.e. ~/.cache/d2lkaggle/<competition>)")
    kd.add_argument("--no-extract", action="store_true", help="keep the archives packed (default: unpack)")
    kd.add_argument("--force", action="store_true", help="download again even if the files exist (default: keep them)")
    kd.set_defaults(func=cmd_kaggle_download)
    ks = ksub.add_parser("submit", help="check RUN_DIR/submission.csv against the sample file, then upload it")
    ks.add_argument("run_dir", help="a run folder (with submission.csv and summary.json) or a CSV file")
    ks.add_argument("-m", "--message", required=True, help="the submission's description on Kaggle")
    ks.add_argument("--competition", help="default: the one in RUN_DIR/summary.json")
    ks.add_argument("--sample", help="sample submission to check against (default: the one in the "
                                     "run's data folder)")
    ks.set_defaults(func=cmd_kaggle_submit)


def build_parser() -> argparse.ArgumentParser:
    """The ``d2lkaggle`` argument parser."""
    from .. import __version__
    p = argparse.ArgumentParser(prog="d2lkaggle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the built-in demo competition and run it end to end")
    _add_train_args(d)
    d.add_argument("--dir", default=os.path.join(os.environ.get("D2LKAGGLE_DATA") or
                                                 os.path.join(os.path.expanduser("~"), ".cache", "d2lkaggle"), "demo"),
                   help="where the demo data (DIR/data) and run (DIR/run-BACKEND) go "
                        "(default: %(default)s, from $D2LKAGGLE_DATA when set)")
    _set_help(d, "--out", "run folder (default: DIR/run-BACKEND, see --dir)")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="train, validate, retrain and write submission.csv")
    r.add_argument("competition", type=_competition_arg(runnable=True), help=_competition_help())
    r.add_argument("--data-dir", required=True,
                   help="folder with train/, test/ and the labels CSV, or a CIFAR python archive "
                        "(cifar-10-python.tar.gz / cifar-100-python.tar.gz, or a folder holding it)")
    _add_train_args(r)
    _add_archive_args(r)
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("ensemble", help="combine finished runs (any backend or model) into one "
                                        "submission")
    e.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders with test_probs.npy")
    e.add_argument("--out", required=True, help="folder for the ensemble's submission and files")
    e.add_argument("--vote", choices=("soft", "hard"), default="soft",
                   help="soft: mean of probabilities; hard: majority of argmaxes, ties broken by "
                        "the mean probability (default: soft)")
    e.add_argument("--weights", help="w1,w2,... (one per run) or auto: fitted on the runs' "
                                     "common validation images (default: equal)")
    e.add_argument("--geometric", action="store_true",
                   help="soft vote with the geometric mean of probabilities (default: arithmetic)")
    e.add_argument("--data-dir", help="competition folder with the sample submission (default: "
                                      "the first run's, from its summary.json)")
    e.set_defaults(func=cmd_ensemble)

    dl = sub.add_parser("download", help="download a DATA_HUB entry or URL (SHA-1 checked)")
    dl.add_argument("name", help="a DATA_HUB name (e.g. cifar10_tiny, dog_tiny) or an http(s) URL")
    dl.add_argument("--folder", help="where to keep the file (default: $D2LKAGGLE_DATA or "
                                     "~/.cache/d2lkaggle)")
    dl.add_argument("--extract", action="store_true",
                    help="also extract the archive beside it (default: download only)")
    dl.set_defaults(func=cmd_download)
    _add_download_limits(dl)

    m = sub.add_parser("make-demo", help="write a synthetic competition in Kaggle layout")
    m.add_argument("out", help="folder to write (train/, test/, labels and sample submission)")
    m.add_argument("--layout", choices=("cifar10", "dog"), default="cifar10",
                   help="CIFAR-10's PNGs + trainLabels.csv or Dog Breed's JPEGs + labels.csv "
                        "(default: %(default)s)")
    m.add_argument("--n-train", type=int, default=1000, help="labelled images (default: %(default)s)")
    m.add_argument("--n-test", type=int, default=200, help="test images (default: %(default)s)")
    m.add_argument("--size", type=int, default=32, help="image side in pixels (default: %(default)s)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    m.add_argument("--hard", action="store_true",
                   help="the harder demo of docs/recipes.md: random colours, noise, clutter (default: off)")
    m.set_defaults(func=cmd_make_demo)

    g = sub.add_parser("reorg", help="the book's train_valid_test folder layout")
    g.add_argument("data_dir", help="competition folder with train/, test/ and the labels CSV")
    g.add_argument("--labels", help="labels CSV (default: DATA_DIR/trainLabels.csv or labels.csv)")
    g.add_argument("--valid-ratio", type=float, default=0.1,
                   help="fraction of each class moved to valid/ (default: %(default)s)")
    g.add_argument("--mode", choices=("link", "copy", "symlink"), default="link",
                   help="hard links (no extra space), copies or symlinks (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    g.set_defaults(func=cmd_reorg)

    w = sub.add_parser("weights", help="neutral weight files shared by all backends")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wc = wsub.add_parser("convert", help="convert a torchvision .pth state_dict to .safetensors/.npz")
    wc.add_argument("src", help="torchvision .pth state_dict (or a neutral file)")
    wc.add_argument("dst", help="output .safetensors or .npz")
    wc.set_defaults(func=cmd_weights_convert)

    rc = sub.add_parser("recipes", help="list the named recipes (--recipe NAME) with all their values")
    rc.add_argument("names", nargs="*", help="recipes to show (default: all)")
    rc.set_defaults(func=cmd_recipes)

    pa = sub.add_parser("parity", help="compare the installed backends on one neutral checkpoint")
    from ..models.parity import MODELS as PARITY_MODELS
    pa.add_argument("--model", choices=list(PARITY_MODELS), default="resnet18",
                    help="default: resnet18")
    pa.add_argument("--steps", type=int, default=10, help="training steps (default: %(default)s)")
    pa.add_argument("--backends", nargs="*", help="default: every installed one")
    pa.add_argument("--optimizer", action="append", choices=("sgd", "nesterov", "adam", "adamw"),
                    help="train with this optimizer and a per-step CyclicLR instead of the "
                         "chapters' SGD (repeatable; default: the chapters' SGD run)")
    pa.add_argument("--mixing", action="store_true",
                    help="train on MixUp'd float32 pixels with soft targets (default: off, int labels)")
    pa.set_defaults(func=cmd_parity)

    lf = sub.add_parser("lr-find", help="the lr finder: loss against an exponentially growing "
                                        "learning rate, lr_find.png and a suggested --lr")
    lf.add_argument("competition", type=_competition_arg(runnable=True), help=_competition_help())
    lf.add_argument("--data-dir", required=True, help="folder with train/, test/ and the labels CSV")
    lf.add_argument("--out", help="folder for lr_find.png and lr_find.csv "
                                  "(default: runs/COMPETITION-BACKEND)")
    lf.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    lf.add_argument("--batch-size", type=int, help=_recipe_help("images per batch", "batch_size"))
    lf.add_argument("--wd", type=float, help=_recipe_help("weight decay", "wd"))
    lf.add_argument("--image-size", type=int,
                    help=_recipe_help("side of the square images fed to the net", "image_size"))
    lf.add_argument("--weights", help=_recipe_help("fine-tune backbone ('imagenet', a file or "
                                                   "'none')", "weights"))
    lf.add_argument("--start-lr", type=float, default=1e-7, help="first rate (default: %(default)g)")
    lf.add_argument("--end-lr", type=float, default=10.0, help="last rate (default: %(default)g)")
    lf.add_argument("--num-iter", type=int, default=100,
                    help="batches, one rate each (default: %(default)s)")
    lf.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    lf.add_argument("--workers", type=int,
                    help="threads decoding and augmenting images (default: min(4, CPU count))")
    lf.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    lf.add_argument("--no-amp", action="store_true",
                    help="float32 (default: bf16 autocast where the backend measured it faster)")
    lf.set_defaults(func=cmd_lr_find)

    _add_kaggle_parsers(sub)
    return p


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its subcommands the one-line error format (usage stays in
    ``--help``) and the ``--debug`` flag; done here so that build_parser stays as it is."""
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks instead of one-line errors (also: "
                             "D2LKAGGLE_DEBUG=1); may be given anywhere on the line")
    todo = [parser]
    while todo:
        p = todo.pop()

        def error(message: str, p=p):
            p.exit(2, f"d2lkaggle: error: {p.prog}: {message} (see {p.prog} --help)\n")
        p.error = error
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return parser


def _add_download_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deadline", type=float,
                   help="give up a download after this many seconds (default: no limit)")
    p.add_argument("--stall-timeout", type=float,
                   help="give up when no byte arrives for this many seconds (default: 60)")
    p.add_argument("--max-extract-gb", type=float,
                   help="largest total size an archive may unpack to, in GB (default: 20x "
                        "the archive, at least 0.27 GB: refuses zip bombs)")


#: errors a user's input, files or machine can cause: one line, exit 2
USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError, ArithmeticError, MemoryError)


def error_line(e: BaseException) -> str:
    """One line for an exception: its message, with the file an OSError names."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        msg = f"{e.strerror}: {where}"
    elif isinstance(e, MemoryError):
        msg = f"out of memory ({e or 'no details'}); use smaller images or batches"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())  # one line, whatever the message held


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``d2lkaggle`` command.

    Every error a user can cause prints one line, ``d2lkaggle: error: ...``, on stderr and
    exits 2 (Ctrl-C: 130); ``--debug`` or ``D2LKAGGLE_DEBUG=1`` shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("D2LKAGGLE_DEBUG", "") not in ("", "0")
    args = _one_line_errors(build_parser()).parse_args([a for a in argv if a != "--debug"])
    args.argv = argv   # (``--distributed`` starts the launcher with the same arguments)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("d2lkaggle: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        line = error_line(e)
        if not isinstance(e, USER_ERRORS):  # a bug of ours: still one line, and how to see more
            line = f"{type(e).__name__}: {line} (internal error; rerun with --debug for the traceback)"
        print(f"d2lkaggle: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
