"""``d2lkaggle weights | recipes | parity``: weight files, the named recipes, cross-framework parity."""
from __future__ import annotations

import argparse
import math

from ..models.limits import CAP, FACTOR, FLOOR, LIMIT_ENV
from ..models.parity import MODELS as PARITY_MODELS
from ..models.parity import OPTIMIZER_RUNS
from ..models.parity import format_table, run_parity
from ..models.weights import convert, load_neutral
from ..specs.competitions import RECIPE_NAMES, format_recipes


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``weights convert``, ``recipes`` and ``parity``."""
    w = sub.add_parser("weights", help="neutral weight files shared by all backends")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wc = wsub.add_parser("convert", help="convert a weight file (PyTorch .pth/.pt, MXNet .params, "
                                         "Paddle .pdparams, .npz, a run's checkpoint) to "
                                         ".safetensors/.npz, without running code from it")
    wc.add_argument("src", help="a .pth/.pt state_dict, an MXNet .params, a Paddle .pdparams, a "
                                ".safetensors/.npz file or a run's checkpoints/valid/best.npz")
    wc.add_argument("dst", help="output .safetensors or .npz")
    wc.add_argument("--max-weights-gb", type=float, metavar="GB",
                    help="memory the file may make the reader allocate, for a file you trust "
                         f"(default: ${LIMIT_ENV} when set, else {FACTOR}x the file + "
                         f"{FLOOR >> 20} MiB, at most {CAP >> 30} GiB: refuses files that "
                         "declare more than they hold)")
    wc.set_defaults(func=cmd_weights_convert)

    rc = sub.add_parser("recipes", help="list every name --recipe accepts (" + ", ".join(RECIPE_NAMES)
                        + ") with what it trains")
    rc.add_argument("names", nargs="*", help="recipes to show (default: all)")
    rc.set_defaults(func=cmd_recipes)

    pa = sub.add_parser("parity", help="compare the installed backends on one neutral checkpoint")
    pa.add_argument("--model", choices=list(PARITY_MODELS), default="resnet18",
                    help="default: resnet18")
    pa.add_argument("--steps", type=int, default=10, help="training steps (default: %(default)s)")
    pa.add_argument("--backends", nargs="*", help="default: every installed one")
    pa.add_argument("--optimizer", action="append", choices=list(OPTIMIZER_RUNS),
                    help="train with this optimizer and a per-step CyclicLR instead of the "
                         "chapters' SGD (repeatable; default: the chapters' SGD run)")
    pa.add_argument("--mixing", action="store_true",
                    help="train on MixUp'd float32 pixels with soft targets (default: off, int labels)")
    pa.set_defaults(func=cmd_parity)


def cmd_weights_convert(a: argparse.Namespace) -> int:
    gb = a.max_weights_gb
    if gb is not None and not (gb > 0 and math.isfinite(gb)):
        raise ValueError(f"--max-weights-gb must be a number of GB > 0, got {gb:g}")
    limit = None if gb is None else int(gb * 1e9)
    out = convert(a.src, a.dst, limit)
    print(f"wrote {len(load_neutral(out, limit))} arrays to {out}")
    return 0

def cmd_parity(a: argparse.Namespace) -> int:
    optimizers = a.optimizer or None
    if optimizers or a.mixing:   # float32 and float64 runs of the optimizers (cyclic lr per step)
        report = run_parity(a.model, a.steps, a.backends or None, tasks=("train", "train64"),
                            optimizers=optimizers or ["sgd"], mixing=a.mixing)
    else:
        report = run_parity(a.model, a.steps, a.backends or None)
    print(format_table(report))
    return 0

def cmd_recipes(a: argparse.Namespace) -> int:
    print(format_recipes(a.names or None))
    return 0
