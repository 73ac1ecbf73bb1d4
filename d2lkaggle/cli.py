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
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    p.add_argument("--workers", type=int, help="threads decoding and augmenting images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bf16 autocast where the backend measured it faster)")


def _add_archive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extract", action="store_true",
                   help="first unpack archives found in --data-dir (train.7z, test.7z, *.zip); "
                        "default: stop and name the command that does it")


def _check_archives(a: argparse.Namespace) -> None:
    """Unpacked archives in --data-dir: extract them with --extract, else say how (one line)."""
    data_dir = getattr(a, "data_dir", None)
    if not data_dir:
        return
    from .competitions import get_competition
    from .kaggle import archive_hint, extract_archives
    comp = get_competition(a.competition)
    if archive_hint(comp, data_dir) is None:
        return
    if getattr(a, "extract", False):
        extract_archives(data_dir)
        return
    raise FileNotFoundError(archive_hint(comp, data_dir))


def _run_kwargs(a: argparse.Namespace) -> dict:
    return dict(backend=a.backend, out=a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                wd=a.wd, lr_period=a.lr_period, lr_decay=a.lr_decay, valid_ratio=a.valid_ratio,
                image_size=a.image_size, weights=a.weights, retrain=not a.no_retrain, seed=a.seed,
                resume=a.resume, progress=not a.quiet, num_workers=a.workers,
                amp=False if a.no_amp else "auto")


def _report(summary: dict) -> None:
    acc = summary.get("valid_acc")
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}, " if acc is not None else "")
          + f"{summary['examples_per_sec']:.1f} examples/s, {summary['timings']['total_s']:.1f} s")
    for k, v in summary["files"].items():
        print(f"  {k:12s} {v}")


def cmd_run(a: argparse.Namespace) -> int:
    from .pipeline import run_competition
    _check_archives(a)
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


def cmd_extract(a: argparse.Namespace) -> int:
    from .hub import extract
    t = time.perf_counter()
    dest = extract(a.archive, a.dest)
    print(f"extracted {a.archive} into {dest} in {time.perf_counter() - t:.1f} s")
    return 0


def cmd_kaggle_download(a: argparse.Namespace) -> int:
    from .kaggle import download_competition
    path = download_competition(a.competition, a.path, unpack=not a.no_extract, force=a.force)
    print(path)
    return 0


def cmd_kaggle_submit(a: argparse.Namespace) -> int:
    from .kaggle import submit
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
    kd.add_argument("--force", action="store_true", help="download again even if the files exist")
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
    _add_archive_args(r)
    r.set_defaults(func=cmd_run)

    dl = sub.add_parser("download", help="download a DATA_HUB entry or URL (SHA-1 checked)")
    dl.add_argument("name")
    dl.add_argument("--folder")
    dl.add_argument("--extract", action="store_true")
    dl.set_defaults(func=cmd_download)

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
    _add_kaggle_parsers(sub)
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
