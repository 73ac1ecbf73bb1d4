"""Issue 13's "done when" figures in one command: the demo competition trained with the
write-ups' models in every installed backend — valid accuracy and training examples/s.

    python benchmarks/model_demo.py [--quick] [--backends torch mxnet paddle] [--json FILE]

Runs (each in a fresh process, one framework per process; ``run_competition`` as ``d2lkaggle
run demo`` runs it, predicting with the validated model, no retrain):

* ``cnn_elu``             — the demo's default recipe (SGD one-cycle; its 900 images train at
                            batch 32, peak 0.1) with the model replaced by 004's ELU CNN;
* ``cnn_elu + 004``       — ``--recipe writeup-cifar10-mixup`` (Adam 2e-3, CyclicLR triangular2,
                            MixUp 0.4, crop + flip, best epoch kept);
* ``resnet18 drop_path``  — the demo's default (the book's ResNet-18, width 16) with
                            ``--drop-path 0.1``;
* ``effnetv2_s scratch``  — ``--recipe writeup-cifar100-effnetv2 --weights none --image-size 32
                            --batch-size 32`` (003's AdamW / StepLR / CutMix, random
                            initialisation, 32 px; batch 32 so 900 images give 28 steps per epoch).

Full (default, all three backends): demo of 1,000 training images (900 train / 100 valid, the
demo's 10 % split), 200 test images; 10 epochs for cnn_elu and ResNet-18, 6 for
EfficientNetV2-S. Measured on 2 idle cores (AMD EPYC, fp32): 32.5 min, half of it Paddle's
EfficientNetV2-S (docs/models.md has the table). ``--quick``: 200 training images (180 / 20), 1
epoch each (proves the command; the accuracies mean nothing). The table has one accuracy row
and one examples/s row per run; ``rows(quick)`` returns them for ``python -m benchmarks``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("torch", "mxnet", "paddle")

#: (label, keyword arguments of run_competition, epochs full, epochs quick)
RUNS: tuple[tuple[str, dict, int, int], ...] = (
    ("cnn_elu (demo default recipe)", {"model": "cnn_elu"}, 10, 1),
    ("cnn_elu + 004 recipe", {"recipe": "writeup-cifar10-mixup"}, 10, 1),
    ("resnet18 width 16, drop_path 0.1", {"drop_path": 0.1}, 10, 1),
    # batch 32, not 003's 128: 7 steps per epoch would leave a from-scratch net at chance
    ("efficientnet_v2_s from scratch, 32 px (003 recipe, batch 32)",
     {"recipe": "writeup-cifar100-effnetv2", "weights": "none", "image_size": 32,
      "batch_size": 32}, 6, 1),
)
FULL = {"n_train": 1000, "n_test": 200}
QUICK = {"n_train": 200, "n_test": 20}

CODE = r"""
import json, sys
from d2lkaggle.compete.run import run_competition
backend, data_dir, out, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
s = run_competition("demo", data_dir, backend=backend, out=out, retrain=False, progress=False,
                    log=None, overwrite=True, **kw)
print(json.dumps({k: s.get(k) for k in ("valid_acc", "best_valid_acc", "examples_per_sec",
                                        "predict_with", "timings")}))
"""


def _installed(names) -> list[str]:
    from d2lkaggle.utils.registry import is_installed
    return [b for b in names if is_installed(b)]


def run_one(backend: str, data_dir: str, out: str, kw: dict, timeout: int = 1800) -> dict:
    """One run in a fresh interpreter; its summary's figures (or ``{"error": ...}``)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", CODE, backend, data_dir, out, json.dumps(kw)],
                           capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if r.returncode:
        tail = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return {"error": tail[:200], "wall_s": wall}
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_s": wall}


def rows(quick: bool = False, backends=BACKENDS, log=None) -> list[dict]:
    """The figures as benchmark rows (keys row, ours, textbook, unit, goal, met, note): per
    backend and run, the valid accuracy and the training examples/s. No textbook figure or
    goal exists for these models (the issue asks for the figures), so those keys are None."""
    from d2lkaggle.data.demo import make_demo
    size = QUICK if quick else FULL
    # every run keeps checkpoints (~100 MB each): the folder goes when the rows are made
    with tempfile.TemporaryDirectory(prefix="d2lkaggle-model-demo-") as work:
        data = make_demo(os.path.join(work, "demo"), seed=0, **size)
        out: list[dict] = []
        for backend in _installed(backends):
            for label, kw, epochs_full, epochs_quick in RUNS:
                epochs = epochs_quick if quick else epochs_full
                res = run_one(backend, data, os.path.join(work, f"{backend}-{len(out)}"),
                              {**kw, "epochs": epochs})
                note = (f"demo {size['n_train']} images (90 % train), {epochs} epoch(s), "
                        f"{res['wall_s']:.0f} s wall")
                if "error" in res:
                    note += "; error: " + res["error"]
                else:
                    note += (f"; best valid acc {res['best_valid_acc']:.3f}, submission from "
                             f"{res['predict_with']}")
                for unit, key in (("valid accuracy", "valid_acc"), ("examples/s", "examples_per_sec")):
                    out.append({"row": f"{backend} · {label}", "ours": res.get(key), "textbook": None,
                                "unit": unit, "goal": None, "met": None, "note": note})
                if log:
                    log(format_table(out[-2:], header=False))
    return out


def format_table(table: list[dict], header: bool = True) -> str:
    """Markdown rows: run, unit, ours, note."""
    lines = ["| run | measure | ours | note |", "|---|---|---|---|"] if header else []
    for r in table:
        v = r["ours"]
        cell = "—" if v is None else f"{v:.3f}" if r["unit"] == "valid accuracy" else f"{v:.1f}"
        lines.append(f"| {r['row']} | {r['unit']} | {cell} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="200 demo images, 1 epoch per run (default: 1000 images, 10 / 6 epochs)")
    p.add_argument("--backends", nargs="*", default=list(BACKENDS),
                   help="backends to run (default: every installed one of torch mxnet paddle)")
    p.add_argument("--json", help="also write the rows to this JSON file (default: no file)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    print(format_table([]), flush=True)
    table = rows(a.quick, a.backends, log=lambda s: print(s, flush=True))
    print(f"\n{len(table) // 2} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
