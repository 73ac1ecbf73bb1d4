"""Time to accuracy: wall seconds until the validation accuracy first reaches 0.90 on the
hard demo — the library's default recipe against the textbook's chapter code with its own
recipe, per backend.

    python benchmarks/time_to_accuracy.py [--quick] [--backends torch mxnet paddle]
    python -m benchmarks --only time_to_accuracy          # the same rows in the one table

The data: ``make_demo(DIR, hard=True)`` (1,000 labelled 32 px images, the size of the
chapter's own demo set; 10 % validate) and, for the textbook, the chapter's
``train_valid_test`` tree of the same files. Each side runs in a fresh process and its clock
starts before its data is loaded:

* ours — ``d2lkaggle run cifar10 --data-dir DIR --no-retrain`` (the default recipe, its
  epochs), stopped at the first epoch whose validation reaches the target;
* the textbook — the chapter's ``train`` loop with its own recipe (torch and Paddle: SGD on
  the summed loss, lr 2e-4, wd 5e-4; MXNet: lr 0.02 on the mean; StepLR(4, 0.9), 20 epochs,
  batch 32 as the chapter sets it for its 1,000-image demo), validated every epoch, stopped
  at the target, after 20 epochs, or after the first epoch that ends past
  ``CAP_FACTOR`` × ours' time: reaching the goal (≥ 5× faster) is decided either way and a
  slow framework does not run for an hour. A textbook side that stopped short of the target
  gives a lower bound (``> N×``).

Ours runs first (its time sets the textbook's cap); one run each, as the accuracy row: the
times are wall seconds of this machine, with whatever else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

BACKENDS = ("torch", "mxnet", "paddle")
#: ours' precision: "auto" (bf16 where the CPU has it natively) or False (--precision float32)
AMP = ["auto"]
#: environment that limits oneDNN, MKL and ATen to AVX2 (--isa avx2): a stand-in for a CPU
#: without AVX-512, for both sides
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
TARGET = 0.90
GOAL = 5.0          # ours at least 5× faster
CAP_FACTOR = 6.0    # the textbook stops after this many times ours' seconds
#: the chapter's own recipe per framework tab (batch 32: the chapter's setting for its demo)
BOOK = {"torch": dict(lr=2e-4, wd=5e-4), "mxnet": dict(lr=0.02, wd=5e-4),
        "paddle": dict(lr=2e-4, wd=5e-4)}
FULL = dict(n_train=1000, target=TARGET, book_epochs=20, ours_epochs=None)
#: --quick: proves the machinery (small set: 40 images validate, one batch of the chapter's 32;
#: easy target; torch only); its figures mean nothing
QUICK = dict(n_train=400, target=0.3, book_epochs=2, ours_epochs=2)


def hard_demo_set(n_train: int) -> str:
    """The hard demo of ``n_train`` images in the benchmark cache, with the book's tree."""
    from benchmarks.run import cache_dir
    from d2lkaggle.data.demo import make_demo
    from d2lkaggle.data.labels import read_csv_labels
    from d2lkaggle.data.reorg import reorg_train_valid
    path = os.path.join(cache_dir(), f"hard-demo-{n_train}")
    if not os.path.exists(os.path.join(path, ".complete")):
        make_demo(path, n_train=n_train, n_test=20, seed=0, hard=True)
        reorg_train_valid(path, read_csv_labels(os.path.join(path, "trainLabels.csv")), 0.1,
                          seed=0, mode="link")
        open(os.path.join(path, ".complete"), "w").close()
    return path


def _curve(r: dict) -> str:
    return " ".join(f"{a:.2f}@{t:.0f}s" for t, a in r["curve"])


def measure(backend: str, quick: bool = False, log=None) -> dict:
    """One row: ours, then the textbook (capped at CAP_FACTOR × ours), in fresh processes."""
    from benchmarks.run import run_job
    size = QUICK if quick else FULL
    data = hard_demo_set(size["n_train"])
    ours = run_job(dict(job="ours_time_to_accuracy", backend=backend, data_dir=data,
                        target=size["target"], epochs=size["ours_epochs"], amp=AMP[0]),
                   timeout=7200)
    if log:
        log(f"  time-to-{size['target']:.2f}-{backend} ours: {ours['seconds']} s ({_curve(ours)})")
    ours_s = ours["seconds"] if ours["seconds"] is not None else ours["wall"]
    cap = CAP_FACTOR * ours_s
    book = run_job(dict(job="book", module=f"{backend}_cifar", fn="time_to_accuracy",
                        data_dir=data, target=size["target"], max_seconds=cap,
                        epochs=size["book_epochs"], batch_size=32, **BOOK[backend]),
                   timeout=max(900, int(3 * cap) + 600))
    if log:
        log(f"  time-to-{size['target']:.2f}-{backend} textbook: {book['seconds']} s ({_curve(book)})")
    reached_o, reached_b = ours["seconds"] is not None, book["seconds"] is not None
    book_s = book["seconds"] if reached_b else book["wall"]
    ratio = book_s / ours_s if reached_o and ours_s > 0 else float("nan")
    bound = "" if reached_b else "> "
    note = (f"hard demo {size['n_train']} images (10 % valid), target {size['target']:.2f}; ours: "
            f"default recipe ({ours.get('model')}, {ours.get('precision')}), "
            f"{ours['planned']} planned epochs at batch {ours['batch']}, "
            + (f"reached at epoch {ours['epochs']}" if reached_o else
               f"not reached (best {ours['best_acc']:.2f})")
            + f" [{_curve(ours)}]; textbook: lr {BOOK[backend]['lr']:g}, batch 32, StepLR(4, 0.9), "
            + (f"reached at epoch {book['epochs']}" if reached_b else
               f"not reached in {book['epochs']} epochs / {book['wall']:.0f} s (best "
               f"{book['best_acc']:.2f}; stopped at {CAP_FACTOR:g}× ours or "
               f"{size['book_epochs']} epochs)")
            + f" [{_curve(book)}]")
    return {"row": f"time-to-{size['target']:.2f}-{backend}",
            "what": f"wall s until valid acc ≥ {size['target']:.2f}, hard demo, {backend}",
            "ours": ours["seconds"], "textbook": book_s if reached_b else None, "unit": "s",
            "ratio": ratio, "ratio_s": f"{bound}{ratio:.1f}× faster" if reached_o else "–",
            "goal": f"≥ {GOAL:g}× faster", "met": bool(reached_o and ratio >= GOAL),
            "note": note}


def rows(quick: bool = False, backends=BACKENDS, log=None) -> list[dict]:
    """The rows for ``python -m benchmarks`` (``--quick``: torch only, tiny)."""
    from d2lkaggle.utils.registry import is_installed
    chosen = ("torch",) if quick else backends
    out = []
    for b in chosen:
        if not is_installed(b):
            continue
        try:
            out.append(measure(b, quick, log))
        except Exception as e:  # noqa: BLE001 (one backend failing must not sink the others)
            out.append({"row": f"time-to-accuracy-{b}", "ours": None, "textbook": None,
                        "unit": "s", "ratio": float("nan"), "ratio_s": "–", "goal": "",
                        "met": False, "note": f"failed: {type(e).__name__}: {e}"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny set, torch only (default: off)")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS),
                    help="backends to measure (default: torch mxnet paddle)")
    ap.add_argument("--json", help="also write the rows as JSON to this file (default: no)")
    ap.add_argument("--precision", choices=("auto", "float32"), default="auto",
                    help="ours: bf16 where the CPU has it natively (auto), or float32 (the path "
                         "of a CPU without native bf16) (default: auto)")
    ap.add_argument("--isa", choices=tuple(ISA_ENV),
                    help="limit oneDNN/MKL/ATen to this instruction set on both sides (a stand-in "
                         "for a CPU without AVX-512) (default: the machine's)")
    a = ap.parse_args(argv)
    AMP[0] = "auto" if a.precision == "auto" else False
    os.environ.update(ISA_ENV.get(a.isa or "", {}))
    res = rows(a.quick, a.backends, log=lambda m: print(m, file=sys.stderr, flush=True))
    for r in res:
        print(f"| {r['row']} | {r['ours']} | {r['textbook']} | {r['ratio_s']} | {r['goal']} | "
              f"{'met' if r['met'] else '**missed**'} | {r['note']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
