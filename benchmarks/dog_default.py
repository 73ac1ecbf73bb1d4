"""The Dog Breed default against today's and the hand-tuned command: validation log loss,
before and after calibration, per backend and seed (the tables of docs/kaggle_dog.md).

Every run is the command a user types (``d2lkaggle run dog-breed ...`` in a fresh process)
with ``--no-retrain`` added: the retrain on all labels never touches the validation figures,
and leaving it out halves the time. The figures come from each run's ``summary.json``.

    # the two sets (1,400 labelled JPEGs, 10 classes, 80-400 px) and the stand-in weights
    d2lkaggle make-demo /tmp/i25/dog --layout dog --n-train 1400 --n-test 100 --size 80 --max-size 400
    d2lkaggle make-demo /tmp/i25/dogsmall --layout dog --n-train 1400 --n-test 100 --size 80 --max-size 400 --small-subjects
    python benchmarks/dog_weights.py /tmp/i25/r34.safetensors
    # one row: a name, then the flags after --weights/--image-size/--epochs/--seed
    python benchmarks/dog_default.py --data /tmp/i25/dog --weights /tmp/i25/r34.safetensors \\
        --backends torch,mxnet,paddle --seeds 0,1,2 --image-size 64 --epochs 5 \\
        --row default --row "book=--recipe book" --row "hand=--recipe book --lr 0.05 --batch-size 32"

Results are appended to ``--results`` (JSON lines, default /tmp/i25/dog_results.jsonl), one
line per run: valid accuracy, the loop's last valid loss, the log loss before and after
calibration (and cross-fitted: each fifth of the validation images scored with a temperature
fitted on the other four), the temperature, and the same log losses on the 100 test images
(the demo's test labels are not in its folder, as on Kaggle; :func:`demo_test_labels` draws
them again from ``make_demo``'s seed). Accuracy and loss figures hold under load; the
seconds do not. ``--table`` prints the means and every seed of a results file:

    python benchmarks/dog_default.py --table /tmp/i25/dog_results.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def demo_test_labels(data_dir: str, seed: int = 0) -> dict[str, int]:
    """The test labels of a Dog-layout ``make_demo(data_dir, seed=seed)`` set: its generator's
    first draws are the training classes, then the test classes, then the ids."""
    import numpy as np
    from d2lkaggle.data.labels import read_csv_labels
    labels = read_csv_labels(os.path.join(data_dir, "labels.csv"))
    n_train, n_test = len(labels), len(os.listdir(os.path.join(data_dir, "test")))
    breeds = sorted(set(labels.values()))
    c = len(breeds)
    rng = np.random.default_rng(seed)
    train_cls = rng.permutation(np.arange(n_train) % c)
    test_cls = rng.integers(0, c, n_test)
    ids = sorted({bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex()
                  for _ in range(4 * (n_train + n_test))})
    rng.shuffle(ids)
    from d2lkaggle.data.demo import BREEDS
    if any(labels[i] != BREEDS[k] for i, k in zip(ids[:n_train], train_cls)):
        raise ValueError(f"{data_dir} is not make_demo(layout='dog', seed={seed})")
    return {i: breeds.index(BREEDS[k]) for i, k in zip(ids[n_train:n_train + n_test], test_cls)}


def test_figures(out: str, data_dir: str) -> dict:
    """Accuracy and log loss on the demo's test images, as written (calibrated) and without
    the temperature (``apply_temperature(p, 1/T)`` undoes it)."""
    import numpy as np
    from d2lkaggle.compete.calibration import apply_temperature
    from d2lkaggle.compete.voting import accuracy, log_loss
    truth = demo_test_labels(data_dir)
    with open(os.path.join(out, "test_ids.json")) as f:
        y = np.array([truth[i] for i in json.load(f)])
    with open(os.path.join(out, "summary.json")) as f:
        t = (json.load(f).get("calibration") or {}).get("temperature") or 1.0
    p = np.load(os.path.join(out, "test_probs.npy"))
    return {"test_acc": accuracy(p, y), "test_log_loss": log_loss(apply_temperature(p, 1 / t), y),
            "test_calibrated": log_loss(p, y)}


def run_one(data: str, weights: str, backend: str, seed: int, size: int, epochs: int,
            flags: list[str], out: str) -> dict:
    """One ``d2lkaggle run`` in a fresh process; its summary's figures."""
    cmd = [sys.executable, "-m", "d2lkaggle.cli", "run", "dog-breed", "--data-dir", data,
           "--weights", weights, "--image-size", str(size), "--epochs", str(epochs),
           "--seed", str(seed), "--backend", backend, "--out", out, "--overwrite",
           "--no-retrain", "--quiet", *flags]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    cal = s.get("calibration") or {}
    return {"backend": backend, "seed": seed, "image_size": size, "epochs": epochs,
            "flags": " ".join(flags), "data": data, "valid_acc": s["valid_acc"],
            "train_acc": s["train_acc"], "loop_valid_loss": s["valid_loss"],
            "log_loss": cal.get("log_loss_before"), "calibrated": cal.get("log_loss_after"),
            "cross_fitted": cal.get("log_loss_cross_fitted"),
            "temperature": cal.get("temperature"), "tta": s.get("tta"),
            "batch_size": s["recipe"]["batch_size"], "lr": s["recipe"]["lr"],
            "seconds": round(time.perf_counter() - t0, 1), "out": out,
            **test_figures(out, data),
            "command": "d2lkaggle " + " ".join(shlex.quote(c) for c in cmd[3:])}


def table(path: str) -> None:
    """Means and seeds per (set, size, epochs, row, backend) of a results file."""
    import numpy as np
    groups: dict[tuple, list[dict]] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "test_log_loss" not in r:   # a line written before the test figures
                try:
                    r.update(test_figures(r.get("out") or os.path.join(
                        "/tmp/i25/runs", f"{os.path.basename(r['data'])}-{r['row']}-"
                        f"{r['backend']}-{r['image_size']}-{r['epochs']}-s{r['seed']}"), r["data"]))
                except FileNotFoundError:   # its run folder is gone: no test figures
                    r.update(test_acc=float("nan"), test_log_loss=float("nan"),
                             test_calibrated=float("nan"))
            key = (os.path.basename(r["data"]), r["image_size"], r["epochs"], r["row"], r["backend"])
            groups.setdefault(key, []).append(r)
    cols = ("valid_acc", "log_loss", "calibrated", "cross_fitted", "temperature", "test_acc",
            "test_log_loss", "test_calibrated")
    print("| set | px | epochs | row | backend | " + " | ".join(cols) + " | seeds |")
    print("|" + "---|" * (len(cols) + 6))
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        cells = [f"{np.mean([r[c] for r in rs]):.3f} (" + " / ".join(f"{r[c]:.3f}" for r in rs) + ")"
                 for c in cols]
        print("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells)
              + f" | {','.join(str(r['seed']) for r in rs)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", metavar="RESULTS", help="print the table of a results file and stop")
    ap.add_argument("--data")
    ap.add_argument("--weights")
    ap.add_argument("--backends", default="torch")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--row", action="append", default=[],
                    help="NAME or NAME=FLAGS (default: the default, no flags)")
    ap.add_argument("--results", default="/tmp/i25/dog_results.jsonl")
    ap.add_argument("--runs", default="/tmp/i25/runs", help="where the run folders go")
    a = ap.parse_args(argv)
    if a.table:
        table(a.table)
        return 0
    if not a.data or not a.weights:
        ap.error("--data and --weights are needed to run (or --table RESULTS)")
    rows = [r.split("=", 1) if "=" in r else (r, "") for r in (a.row or ["default"])]
    for name, flags in rows:
        for backend in a.backends.split(","):
            for seed in (int(s) for s in a.seeds.split(",")):
                out = os.path.join(a.runs, f"{os.path.basename(a.data)}-{name}-{backend}-"
                                           f"{a.image_size}-{a.epochs}-s{seed}")
                res = dict(run_one(a.data, a.weights, backend, seed, a.image_size, a.epochs,
                                   shlex.split(flags), out), row=name)
                with open(a.results, "a") as f:
                    f.write(json.dumps(res) + "\n")
                print(f"{name:12s} {backend:6s} seed {seed}: acc {res['valid_acc']:.3f} "
                      f"(train {res['train_acc']:.3f}), log loss {res['log_loss']:.4f} -> "
                      f"{res['calibrated'] if res['calibrated'] is None else round(res['calibrated'], 4)} "
                      f"(cross-fitted {res['cross_fitted']}, T {res['temperature']}), "
                      f"{res['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
