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
    _add_recipe_args(p)


def _milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole epochs separated by commas, e.g. 10,15; got {text!r}")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """Training tricks of issue 11 (docs/recipes.md); unset flags keep the recipe's value."""
    from .augment import PRESETS
    from .competitions import RECIPE_NAMES
    from .recipes import OPTIMIZERS
    from .schedules import CYCLE_MODES, SCHEDULES
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
                amp=False if a.no_amp else "auto", **_recipe_kwargs(a))


def _report(summary: dict) -> None:
    acc = summary.get("valid_acc")
    print(f"\n{summary['competition']} with {summary['backend']}: "
          + (f"valid accuracy {acc:.4f}, " if acc is not None else "")
          + f"{summary['examples_per_sec']:.1f} examples/s, {summary['timings']['total_s']:.1f} s")
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
    path = download_extract(a.name, a.folder) if a.extract else download(a.name, a.folder)
    print(path)
    return 0


def cmd_make_demo(a: argparse.Namespace) -> int:
    from .datasets import make_demo
    t = time.perf_counter()
    out = make_demo(a.out, n_train=a.n_train, n_test=a.n_test, size=a.size, seed=a.seed,
                    layout=a.layout, hard=a.hard)
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
    optimizers = a.optimizer or None
    if optimizers or a.mixing:   # float32 and float64 runs of the optimizers (cyclic lr per step)
        report = run_parity(a.model, a.steps, a.backends or None, tasks=("train", "train64"),
                            optimizers=optimizers or ["sgd"], mixing=a.mixing)
    else:
        report = run_parity(a.model, a.steps, a.backends or None)
    print(format_table(report))
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

    m = sub.add_parser("make-demo", help="write a synthetic competition in Kaggle layout")
    m.add_argument("out")
    m.add_argument("--layout", choices=("cifar10", "dog"), default="cifar10")
    m.add_argument("--n-train", type=int, default=1000)
    m.add_argument("--n-test", type=int, default=200)
    m.add_argument("--size", type=int, default=32)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--hard", action="store_true",
                   help="the harder demo of docs/recipes.md: random colours, noise, clutter (default: off)")
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
    pa.add_argument("--model", choices=("resnet18", "resnet18-tiny", "resnet34", "finetune"),
                    default="resnet18", help="default: resnet18")
    pa.add_argument("--steps", type=int, default=10)
    pa.add_argument("--backends", nargs="*", help="default: every installed one")
    pa.add_argument("--optimizer", action="append", choices=("sgd", "nesterov", "adam", "adamw"),
                    help="train with this optimizer and a per-step CyclicLR instead of the "
                         "chapters' SGD (repeatable; default: the chapters' SGD run)")
    pa.add_argument("--mixing", action="store_true",
                    help="train on MixUp'd float32 pixels with soft targets (default: off, int labels)")
    pa.set_defaults(func=cmd_parity)
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
