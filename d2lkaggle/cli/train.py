"""``d2lkaggle demo | run | ensemble | lr-find``: the subcommands that train (or combine what trained)."""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

from ..compete.ensembles import ensemble_runs
from ..compete.kaggle import archive_hint, extract_archives
from ..compete.lrfind import find_lr
from ..compete.members import run_ensemble, run_folds
from ..compete.report import summary_line, tta_text
from ..compete.run import run_competition
from ..data.demo import make_demo
from ..models.weights import WeightsUnavailableError
from ..parallel import distributed as D
from ..specs.competitions import get_competition, recipe_for
from ..train.diagnostics import CAUSES
from ..train.tta import check_tta
from .args import (add_archive_args, add_calibration_args, add_train_args, competition_arg,
                   competition_help, recipe_help, run_kwargs, set_help)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``demo``, ``run``, ``ensemble`` and ``lr-find``."""
    d = sub.add_parser("demo", help="build the built-in demo competition and run it end to end")
    add_train_args(d)
    d.add_argument("--dir", default=os.path.join(os.environ.get("D2LKAGGLE_DATA") or
                                                 os.path.join(os.path.expanduser("~"), ".cache", "d2lkaggle"), "demo"),
                   help="where the demo data (DIR/data) and run (DIR/run-BACKEND) go "
                        "(default: %(default)s, from $D2LKAGGLE_DATA when set)")
    set_help(d, "--out", "run folder (default: DIR/run-BACKEND, see --dir)")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="train and validate, retrain on all labels where the recipe "
                                   "does, and write submission.csv")
    r.add_argument("competition", type=competition_arg(runnable=True), help=competition_help())
    r.add_argument("--data-dir", required=True,
                   help="folder with train/, test/ and the labels CSV, or a CIFAR python archive "
                        "(cifar-10-python.tar.gz / cifar-100-python.tar.gz, or a folder holding it)")
    add_train_args(r)
    add_archive_args(r)
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
    add_calibration_args(e)
    e.set_defaults(func=cmd_ensemble)

    lf = sub.add_parser("lr-find", help="the lr finder: loss against an exponentially growing "
                                        "learning rate, lr_find.png and a suggested --lr")
    lf.add_argument("competition", type=competition_arg(runnable=True), help=competition_help())
    lf.add_argument("--data-dir", required=True, help="folder with train/, test/ and the labels CSV")
    lf.add_argument("--out", help="folder for lr_find.png and lr_find.csv "
                                  "(default: runs/COMPETITION-BACKEND)")
    lf.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    lf.add_argument("--batch-size", type=int, help=recipe_help("images per batch", "batch_size"))
    lf.add_argument("--wd", type=float, help=recipe_help("weight decay", "wd"))
    lf.add_argument("--image-size", type=int,
                    help=recipe_help("side of the square images fed to the net", "image_size"))
    lf.add_argument("--weights", help=recipe_help("fine-tune backbone ('imagenet', a file or "
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


def _distributed_run(a: argparse.Namespace, several_models: bool) -> dict | None:
    """Start this command under the backend's launcher (``--distributed`` outside one);
    ``None`` when this process is to train itself."""
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
    print("starting: " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
    return {"returncode": subprocess.run(cmd).returncode}

def _planned_batch_size(a: argparse.Namespace) -> int | None:
    """The global batch the run will use (None when only the run itself can tell)."""
    if a.batch_size is not None:
        return a.batch_size
    try:
        name = getattr(a, "competition", None) or "demo"
        return recipe_for(get_competition(name), getattr(a, "recipe", "default")).batch_size
    except Exception:   # noqa: BLE001 - the ranks check it again and say why
        return None

def _wait_for_main_rank(path: str, timeout: float = 600.0) -> bool:
    """Under a launcher, ranks > 0 wait for rank 0 to create ``path``; False for rank 0."""
    env = D.detect()
    if not env.enabled or env.is_main:
        return False
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {env.rank}: {path} did not appear within {timeout:.0f} s")
        time.sleep(0.2)
    return True

def _check_archives(a: argparse.Namespace) -> None:
    """Unpacked archives in --data-dir: extract them with --extract, else say how (one line)."""
    data_dir = getattr(a, "data_dir", None)
    if not data_dir:
        return
    comp = get_competition(a.competition)
    if archive_hint(comp, data_dir) is None:
        return
    if getattr(a, "extract", False):
        extract_archives(data_dir)
        return
    raise FileNotFoundError(archive_hint(comp, data_dir))

def _report(summary: dict) -> None:
    acc, speed = summary.get("valid_acc"), summary.get("examples_per_sec")
    feats = summary.get("features")
    if feats and speed is not None:   # the head's speed, and the backbone's apart
        n, rate = feats["images_computed"], feats.get("images_per_sec")
        speed_text = ((f"backbone features of {n} images in {feats['seconds']:.1f} s"
                       + (f" ({rate:.1f} images/s)" if rate else "") if n else
                       "backbone features from the cache")
                      + f", head training {speed:.1f} examples/s on them, ")
    else:
        speed_text = f"{speed:.1f} examples/s, " if speed is not None else ""
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}{tta_text(summary)}, " if acc is not None else "")
          + speed_text + f"{summary['timings']['total_s']:.1f} s")
    if summary.get("test_acc") is not None:
        print(f"  test accuracy {summary['test_acc']:.4f} (the archive's labelled test split)")
    cal = summary.get("calibration") or {}
    if cal.get("method") == "temperature":
        print(f"  calibrated with temperature {cal['temperature']:.3f}: valid log loss "
              f"{cal['log_loss_before']:.4f} -> {cal['log_loss_after']:.4f}")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")
    warnings = summary.get("warnings", [])   # how the run ended (diagnostics, final=True)
    for w in warnings:  # the usual causes once, after every warning that names them
        print("warning: " + w.replace(" " + CAUSES + ".", ""))
    if any(CAUSES in w for w in warnings):
        print(f"  {CAUSES}.")
    print(_last_line(summary))

def _run_or_ensemble(competition: str, data_dir: str, a: argparse.Namespace) -> dict:
    """One run, or with --ensemble/--folds several combined (d2lkaggle.compete.ensembles)."""
    tta = getattr(a, "tta", None)   # not given: the recipe's; "none": off
    kw = dict(run_kwargs(a), tta=None if tta is None else (check_tta(tta) or False))
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
    if getattr(a, "nproc_per_node", None) is not None and not getattr(a, "distributed", False):
        raise ValueError("--nproc-per-node applies to --distributed (the processes it starts): "
                         "add --distributed or drop --nproc-per-node")
    if (getattr(a, "members_vary", "seed") != "seed" or getattr(a, "members_values", None)) \
            and ens is None:
        raise ValueError("--members-vary/--members-values need --ensemble K")
    kw["estimate"] = True   # every run, each member too, says how long it will take
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
    for w in summary.get("warnings", []):
        print("warning: " + w)

def _last_line(summary: dict) -> str:
    """The line a user reads last (the same ends the run's log.txt)."""
    return summary_line(summary)

def cmd_run(a: argparse.Namespace) -> int:
    with _cli_words():
        _check_archives(a)
        s = _run_or_ensemble(a.competition, a.data_dir, a)
    if "returncode" in s or s.get("is_main") is False:   # the launcher's or another rank's
        return int(s.get("returncode", 0))
    (_report_ensemble if "members" in s else _report)(s)
    return 0

def cmd_ensemble(a: argparse.Namespace) -> int:
    _report_ensemble(ensemble_runs(a.runs, a.out, vote=a.vote, weights=a.weights,
                                   geometric=a.geometric, data_dir=a.data_dir,
                                   calibrate=a.calibrate))
    return 0

@contextlib.contextmanager
def _cli_words():
    """Re-raise errors that tell a Python caller what to pass in the command line's words."""
    try:
        yield
    except WeightsUnavailableError as e:
        raise RuntimeError(e.for_cli()) from e

def cmd_demo(a: argparse.Namespace) -> int:
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
