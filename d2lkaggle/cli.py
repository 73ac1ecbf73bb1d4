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


def _recipe_values(field: str) -> str:
    """``cifar10 0.02, dog-breed 0.005, demo 0.05``: a recipe field of every competition
    that has a recipe, read from the competitions table (for help texts)."""
    from .competitions import COMPETITIONS
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
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's checkpoints (default: start afresh)")
    p.add_argument("--workers", type=int,
                   help="threads decoding and augmenting images (default: min(4, CPU count))")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16 autocast where the backend measured it faster)")
    _add_output_args(p)


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


def _run_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                wd=a.wd, lr_period=a.lr_period, lr_decay=a.lr_decay, valid_ratio=a.valid_ratio,
                image_size=a.image_size, weights=a.weights, retrain=not a.no_retrain, seed=a.seed,
                resume=a.resume, progress=not a.quiet, num_workers=a.workers,
                amp=False if a.no_amp else "auto", **_output_kwargs(a))


def _output_kwargs(a: argparse.Namespace) -> dict:
    return dict(predict_with=getattr(a, "predict_with", None),
                overwrite=getattr(a, "overwrite", False))


def _report(summary: dict) -> None:
    acc = summary.get("valid_acc")
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}, " if acc is not None else "")
          + f"{summary['examples_per_sec']:.1f} examples/s, {summary['timings']['total_s']:.1f} s")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")
    from .diagnostics import CAUSES
    warnings = summary.get("warnings", [])
    for w in warnings:  # already said in full during training: the causes once here
        print("warning: " + w.replace(" " + CAUSES + ".", ""))
    if warnings:
        print(f"  {CAUSES}.")
    print(_last_line(summary))


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
    from .pipeline import run_competition
    with _cli_words():
        _report(run_competition(a.competition, a.data_dir, **_run_kwargs(a)))
    return 0


@contextlib.contextmanager
def _cli_words():
    """Re-raise errors that tell a Python caller what to pass in the command line's words."""
    from .weights import WeightsUnavailableError
    try:
        yield
    except WeightsUnavailableError as e:
        raise RuntimeError(e.for_cli()) from e


def cmd_demo(a: argparse.Namespace) -> int:
    from .datasets import make_demo
    from .pipeline import run_competition
    root = os.path.abspath(a.dir)
    data_dir = os.path.join(root, "data")
    if not os.path.exists(os.path.join(data_dir, "trainLabels.csv")):
        print(f"building the demo competition in {data_dir}")
        make_demo(data_dir, seed=0)
    if a.out is None:
        a.out = os.path.join(root, f"run-{a.backend}")
    with _cli_words():
        _report(run_competition("demo", data_dir, **_run_kwargs(a)))
    return 0


def cmd_lr_find(a: argparse.Namespace) -> int:
    from .lrfind import find_lr
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
        from .competitions import get_competition
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
    from .competitions import COMPETITIONS
    return [n for n, c in COMPETITIONS.items() if c.recipe is not None or not runnable]


def _competition_help() -> str:
    from .competitions import ALIASES, COMPETITIONS
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
    from .hub import download, download_extract
    path = download_extract(a.name, a.folder) if a.extract else download(a.name, a.folder)
    print(path)
    return 0


def cmd_make_demo(a: argparse.Namespace) -> int:
    from .datasets import make_demo
    t = time.perf_counter()
    out = make_demo(a.out, n_train=a.n_train, n_test=a.n_test, size=a.size, seed=a.seed,
                    layout=a.layout)
    print(f"wrote a {a.layout} demo competition to {out} in {time.perf_counter() - t:.1f} s")
    return 0


def cmd_reorg(a: argparse.Namespace) -> int:
    from .labels import read_csv_labels
    from .reorg import reorg_test, reorg_train_valid
    labels_file = a.labels or next((os.path.join(a.data_dir, f) for f in ("trainLabels.csv", "labels.csv")
                                    if os.path.exists(os.path.join(a.data_dir, f))), None)
    if labels_file is None:
        print(f"error: no trainLabels.csv or labels.csv in {a.data_dir}; pass --labels FILE",
              file=sys.stderr)
        return 2
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
    from .weights import convert, load_neutral
    out = convert(a.src, a.dst)
    print(f"wrote {len(load_neutral(out))} arrays to {out}")
    return 0


def cmd_parity(a: argparse.Namespace) -> int:
    from .parity import format_table, run_parity
    print(format_table(run_parity(a.model, a.steps, a.backends or None)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``d2lkaggle`` argument parser."""
    from . import __version__
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
    r.add_argument("--data-dir", required=True, help="folder with train/, test/ and the labels CSV")
    _add_train_args(r)
    r.set_defaults(func=cmd_run)

    dl = sub.add_parser("download", help="download a DATA_HUB entry or URL (SHA-1 checked)")
    dl.add_argument("name", help="a DATA_HUB name (e.g. cifar10_tiny, dog_tiny) or an http(s) URL")
    dl.add_argument("--folder", help="where to keep the file (default: $D2LKAGGLE_DATA or "
                                     "~/.cache/d2lkaggle)")
    dl.add_argument("--extract", action="store_true",
                    help="also extract the archive beside it (default: download only)")
    dl.set_defaults(func=cmd_download)

    m = sub.add_parser("make-demo", help="write a synthetic competition in Kaggle layout")
    m.add_argument("out", help="folder to write (train/, test/, labels and sample submission)")
    m.add_argument("--layout", choices=("cifar10", "dog"), default="cifar10",
                   help="CIFAR-10's PNGs + trainLabels.csv or Dog Breed's JPEGs + labels.csv "
                        "(default: %(default)s)")
    m.add_argument("--n-train", type=int, default=1000, help="labelled images (default: %(default)s)")
    m.add_argument("--n-test", type=int, default=200, help="test images (default: %(default)s)")
    m.add_argument("--size", type=int, default=32, help="image side in pixels (default: %(default)s)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
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

    pa = sub.add_parser("parity", help="compare the installed backends on one neutral checkpoint")
    pa.add_argument("--model", choices=("resnet18", "resnet34", "finetune"), default="resnet18",
                    help="model to compare (default: %(default)s)")
    pa.add_argument("--steps", type=int, default=10, help="training steps (default: %(default)s)")
    pa.add_argument("--backends", nargs="*", help="backends to compare (default: every installed one)")
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
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``d2lkaggle`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        if os.environ.get("D2LKAGGLE_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
