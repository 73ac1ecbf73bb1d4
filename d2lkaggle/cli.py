"""Command line: ``d2lkaggle demo | run | download | make-demo | reorg``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", help="torch, mxnet or paddle (default: torch)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--wd", type=float)
    p.add_argument("--lr-period", type=int)
    p.add_argument("--lr-decay", type=float)
    p.add_argument("--valid-ratio", type=float)
    p.add_argument("--image-size", type=int)
    p.add_argument("--weights", help="fine-tune backbone: 'imagenet' or a .pth/.safetensors/.npz file")
    p.add_argument("--out", help="run folder (default: runs/COMPETITION-BACKEND)")
    p.add_argument("--no-retrain", action="store_true",
                   help="predict with the validated model instead of retraining on all labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=("force",),
                   help="continue from the run folder's checkpoints; refused when they were "
                        "trained with another configuration, unless '--resume force' "
                        "(default: off)")
    p.add_argument("--workers", type=int, help="threads decoding and augmenting images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16 autocast where the backend measured it faster)")


def _run_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                wd=a.wd, lr_period=a.lr_period, lr_decay=a.lr_decay, valid_ratio=a.valid_ratio,
                image_size=a.image_size, weights=a.weights, retrain=not a.no_retrain, seed=a.seed,
                resume=a.resume, progress=not a.quiet, num_workers=a.workers,
                amp=False if a.no_amp else "auto")


def _report(summary: dict) -> None:
    acc, speed = summary.get("valid_acc"), summary.get("examples_per_sec")
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}, " if acc is not None else "")
          + (f"{speed:.1f} examples/s, " if speed is not None else "")
          + f"{summary['timings']['total_s']:.1f} s")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")


def cmd_run(a: argparse.Namespace) -> int:
    from .pipeline import run_competition
    _report(run_competition(a.competition, a.data_dir, **_run_kwargs(a)))
    return 0


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
    _report(run_competition("demo", data_dir, **_run_kwargs(a)))
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from .hub import download, download_extract
    kw = dict(deadline=a.deadline, stall_timeout=a.stall_timeout)
    max_size = None if a.max_extract_gb is None else int(a.max_extract_gb * 1e9)
    path = (download_extract(a.name, a.folder, max_size=max_size, **kw) if a.extract
            else download(a.name, a.folder, **kw))
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
    p = argparse.ArgumentParser(prog="d2lkaggle", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the built-in demo competition and run it end to end")
    _add_train_args(d)
    d.add_argument("--dir", default=os.path.join(os.environ.get("D2LKAGGLE_DATA") or
                                                 os.path.join(os.path.expanduser("~"), ".cache", "d2lkaggle"), "demo"),
                   help="where the demo data and run go")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="train, validate, retrain and write submission.csv")
    r.add_argument("competition", help="cifar10, dog-breed or demo")
    r.add_argument("--data-dir", required=True, help="folder with train/, test/ and the labels CSV")
    _add_train_args(r)
    r.set_defaults(func=cmd_run)

    dl = sub.add_parser("download", help="download a DATA_HUB entry or URL (SHA-1 checked)")
    dl.add_argument("name")
    dl.add_argument("--folder")
    dl.add_argument("--extract", action="store_true")
    dl.set_defaults(func=cmd_download)
    _add_download_limits(dl)

    m = sub.add_parser("make-demo", help="write a synthetic competition in Kaggle layout")
    m.add_argument("out")
    m.add_argument("--layout", choices=("cifar10", "dog"), default="cifar10")
    m.add_argument("--n-train", type=int, default=1000)
    m.add_argument("--n-test", type=int, default=200)
    m.add_argument("--size", type=int, default=32)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_make_demo)

    g = sub.add_parser("reorg", help="the book's train_valid_test folder layout")
    g.add_argument("data_dir")
    g.add_argument("--labels")
    g.add_argument("--valid-ratio", type=float, default=0.1)
    g.add_argument("--mode", choices=("link", "copy", "symlink"), default="link")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_reorg)

    w = sub.add_parser("weights", help="neutral weight files shared by all backends")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wc = wsub.add_parser("convert", help="convert a torchvision .pth state_dict to .safetensors/.npz")
    wc.add_argument("src")
    wc.add_argument("dst")
    wc.set_defaults(func=cmd_weights_convert)

    pa = sub.add_parser("parity", help="compare the installed backends on one neutral checkpoint")
    pa.add_argument("--model", choices=("resnet18", "resnet34", "finetune"), default="resnet18")
    pa.add_argument("--steps", type=int, default=10)
    pa.add_argument("--backends", nargs="*", help="default: every installed one")
    pa.set_defaults(func=cmd_parity)
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
