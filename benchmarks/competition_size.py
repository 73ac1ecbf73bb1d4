"""Competition size, end to end: the Kaggle CIFAR-10 layout at its real size (50,000 labelled
training PNGs and 300,000 test PNGs), generated once into the benchmark cache (never
committed), and per backend and recipe what ``d2lkaggle run cifar10`` costs from start to
``submission.csv``.

    python benchmarks/competition_size.py                        # parts of every run, projected
    python benchmarks/competition_size.py --full torch:default   # + that run, start to submission.csv
    python benchmarks/competition_size.py --precision float32    # the float32 path (no bf16)
    python benchmarks/competition_size.py --isa avx2             # oneDNN/MKL limited to AVX2
    python benchmarks/competition_size.py --quick                # a tiny layout: the machinery only

The set: ``make_demo(hard=True)`` (ten classes of shapes, noisy, rotated, low contrast) in
the competition's files — ``train/1.png`` … ``train/50000.png``, ``trainLabels.csv``,
``test/1.png`` … ``test/300000.png``, ``sampleSubmission.csv``. Timings do not depend on
what the pictures show; accuracies on it are the synthetic set's, not CIFAR-10's.

Per backend and recipe one fresh process measures (``--job``):

* loading: labels, split, the 50,000 PNGs decoded into the cached array (warm: the cache is
  built with the set), every test PNG decoded once to check it (what ``run`` does first);
* one epoch of the recipe's training over all 50,000 labelled images (its optimizer, batch,
  augmentation, mixing, averaging; the first batches' set-up included), or its first
  ``--max-batches`` batches for a slow one (then the epoch is *projected*, and said so);
* the prediction of the first 10,000 test images with the recipe's TTA (decoding included),
  projected to 300,000;
* FLOPs per training image (forward + backward) and per predicted view, counted once with
  ``torch.utils.flop_counter.FlopCounterMode`` on the torch model (the architecture is the
  same in every backend).

The run's wall time is then projected from those parts and the recipe's own counts (phases,
epochs, validation passes, test images), and where ``--full`` asks, measured. A matrix
multiplication (2048², float32, and bf16 where the CPU has it natively) is timed at the start
and the end of the benchmark, so "GFLOP/s" and "share of the matmul peak" come from the same
run. Every figure is one measurement of this machine as it was: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: the recipes compared: the new default, the previous default (ResNet-18, AdamW one-cycle) and
#: the chapter's exact values
RECIPES = ("default", "resnet18", "book")
BACKENDS = ("torch", "mxnet", "paddle")
FULL = dict(n_train=50_000, n_test=300_000, predict_n=10_000)
QUICK = dict(n_train=1_200, n_test=600, predict_n=300)
#: environment that limits oneDNN, MKL and ATen to AVX2: a stand-in for a CPU without AVX-512
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def layout(quick: bool) -> str:
    """The competition-size layout in the benchmark cache (built once: ``.complete`` marks it),
    with the training PNGs' decoded-array cache made as a first run would make it."""
    from benchmarks.run import cache_dir
    size = QUICK if quick else FULL
    path = os.path.join(cache_dir(), f"cifar10-layout-{size['n_train']}-{size['n_test']}")
    marker = os.path.join(path, ".complete")
    if os.path.exists(marker):
        return path
    from d2lkaggle.data.demo import make_demo
    from d2lkaggle.data.images import list_images, load_image_array
    t = time.perf_counter()
    log(f"generating {path}: {size['n_train']} + {size['n_test']} PNGs (once)")
    make_demo(path, n_train=size["n_train"], n_test=size["n_test"], seed=0, hard=True)
    t1 = time.perf_counter()
    load_image_array(list_images(os.path.join(path, "train")))   # the first run's decode
    t2 = time.perf_counter()
    with open(marker, "w") as f:
        json.dump({"generate_s": t1 - t, "first_decode_s": t2 - t1, **size}, f)
    log(f"  generated in {t1 - t:.0f} s, training PNGs decoded in {t2 - t1:.0f} s")
    return path


# --------------------------------------------------------------------------- jobs (in a subprocess)

def job_peak(seconds: float = 3.0) -> dict:
    """torch's 2048×2048 matmul, float32 and (where native) bf16: GFLOP/s, the best of 5 runs
    of ``seconds`` each (the peak a kernel of this machine reaches now)."""
    import torch
    out = {"threads": torch.get_num_threads(),
           "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not out["bf16_native"]:
            continue
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        best = 0.0
        for _ in range(5):
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds / 5:
                a @ b
                n += 1
            best = max(best, 2 * 2048 ** 3 * n / (time.perf_counter() - t) / 1e9)
        out[f"matmul_{name}_gflops"] = best
    return out


def _recipe(name: str):
    from d2lkaggle.specs.competitions import get_competition, recipe_for
    return recipe_for(get_competition("cifar10"), name)


def flops(recipe_name: str) -> dict:
    """FLOPs of the recipe's torch model per training image (forward + backward) and per
    predicted view (forward), from ``FlopCounterMode`` at batch 4."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from d2lkaggle.models.build import build_net
    from d2lkaggle.utils.registry import get_backend
    r = _recipe(recipe_name)
    net = build_net(get_backend("torch"), r, 10, 32)
    x = torch.randn(4, 3, 32, 32)
    net.train()
    with FlopCounterMode(display=False) as fc:
        net(x).sum().backward()
    train = fc.get_total_flops() / 4
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return {"train_gflop": train / 1e9, "forward_gflop": fc.get_total_flops() / 4 / 1e9}


class _First:
    """The first ``n`` images of a source (the 10,000 test images predicted)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(int(n), len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.source[i]


def job_parts(backend: str, recipe: str, data_dir: str, amp, max_batches: int | None,
              predict_n: int) -> dict:
    """Load, one training epoch over every labelled image (or its first ``max_batches``),
    and the prediction of ``predict_n`` test images, each timed, with the recipe as ``run``
    builds it."""
    from d2lkaggle.compete.load import load_data, normalized
    from d2lkaggle.compete.run import recipe_net, tricks_for
    from d2lkaggle.data.loader import ImageLoader
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.specs.tricks import fit_batch_to_set
    from d2lkaggle.utils.registry import get_backend
    from d2lkaggle.compete.load import training_set_size
    comp = get_competition("cifar10")
    r = _recipe(recipe)
    comp = normalized(comp, r)
    # the batch the run trains at (a small set's rule decided on the validation phase's size)
    r, _ = fit_batch_to_set(r, training_set_size(comp, data_dir, r.valid_ratio))
    t = time.perf_counter()
    bk = get_backend(backend)
    import_s = time.perf_counter() - t
    t = time.perf_counter()
    data = load_data(comp, data_dir, batch_size=r.batch_size, valid_ratio=r.valid_ratio, seed=0,
                     augment=r.augment)
    load_s = time.perf_counter() - t
    n_all = data.train_valid_iter.labels.size
    t = time.perf_counter()
    net = recipe_net(bk, r, len(data.classes), 32, data.train_valid_iter, seed=0)
    init_s = time.perf_counter() - t
    it = data.train_valid_iter
    nb = len(it)
    epochs = 1.0 if not max_batches or max_batches >= nb else max_batches / nb
    extra, _ = tricks_for(r, it, len(data.classes))
    t = time.perf_counter()
    hist = bk.train(net, it, None, epochs, r.lr, r.wd, amp=amp, progress=False, log=None,
                    **extra)
    wall = time.perf_counter() - t
    row = hist.last
    examples = row["examples_per_sec"] * row["seconds"]
    epoch_s = row["seconds"] * (n_all / examples)
    test = data.test_iter
    sub = ImageLoader(_First(test.source, predict_n), None, test.batch_size,
                      transform=test.transform, mean=test.mean, std=test.std)
    t = time.perf_counter()
    bk.predict(net, sub, amp=amp, tta=r.tta)
    predict_s = time.perf_counter() - t
    from d2lkaggle.train.tta import num_views
    out = {"backend": backend, "recipe": recipe, "model": r.model, "batch": r.batch_size,
           "epochs": r.epochs, "valid_ratio": r.valid_ratio, "retrain": r.retrain,
           "tta": r.tta, "views": num_views(r.tta), "import_s": import_s, "load_s": load_s,
           "init_s": init_s, "n_train": n_all, "n_test": len(data.test_ids),
           "batches": nb, "measured_batches": int(round(examples / r.batch_size)),
           "epoch_s": epoch_s, "epoch_projected": epochs < 1, "train_wall_s": wall,
           "examples_per_sec": examples / row["seconds"], "predict_n": len(sub.source),
           "predict_s": predict_s, "precision": getattr(hist, "devices", "")}
    if backend == "torch":
        out.update(flops(recipe))
    return out


# --------------------------------------------------------------------------- driver

def run_job(job: dict, env_extra: dict | None = None, timeout: float = 6 * 3600) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--job", json.dumps(job)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"{job}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][7:])


def project(p: dict) -> dict:
    """The run's seconds from its measured parts: load, per phase its epochs over its images
    plus a validation pass per epoch and one prediction of the validation images, then the
    test set. Images are scaled by count (one epoch over n images ≈ epoch_s · n / n_train)."""
    n_all, per_image = p["n_train"], p["epoch_s"] / p["n_train"]
    per_view = p["predict_s"] / p["predict_n"] / max(1, p["views"])
    n_valid = int(n_all * p["valid_ratio"])
    n_fit = n_all - n_valid
    epochs = p["epochs"]
    s = p["load_s"] + p["import_s"]
    phases = []
    if n_valid:
        phases.append(("valid", n_fit))
    if not n_valid or p["retrain"]:
        phases.append(("final", n_all))
    for name, n in phases:
        s += p["init_s"] + epochs * n * per_image
        if name == "valid":   # each epoch's validation, then the validation predictions (TTA)
            s += math.ceil(epochs) * n_valid * per_view + n_valid * per_view * p["views"]
    s += p["n_test"] * per_view * p["views"]
    return {"phases": [n for n, _ in phases], "projected_s": s,
            "predict_all_s": p["n_test"] * per_view * p["views"]}


def full_run(backend: str, recipe: str, data_dir: str, amp, env_extra: dict | None) -> dict:
    """``d2lkaggle run cifar10`` start to submission.csv, wall time (its own summary's parts)."""
    out = tempfile.mkdtemp(prefix="d2lk-full-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "d2lkaggle.cli", "run", "cifar10", "--data-dir", data_dir,
           "--backend", backend, "--out", os.path.join(out, "run"), "--recipe", recipe]
    cmd += [] if amp == "auto" else ["--no-amp"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-2000:]}")
    with open(os.path.join(out, "run", "summary.json")) as f:
        s = json.load(f)
    return {"wall_s": wall, "timings": s["timings"], "valid_acc": s.get("valid_acc"),
            "devices": s.get("devices"), "command": " ".join(cmd[1:]), "folder": out}


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def table(parts: list[dict], peak: dict, fulls: dict) -> str:
    """The markdown tables of docs/speed.md: per backend and recipe."""
    base = {(p["backend"]): p["epoch_s"] for p in parts if p["recipe"] == "resnet18"}
    flop = {p["recipe"]: p for p in parts if "train_gflop" in p}
    lines = ["| backend | recipe (model) | precision | one 50,000-image epoch | examples/s | "
             "vs resnet18 | GFLOP/s (share of matmul peak) | 300,000 predictions | "
             "start to submission.csv |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in parts:
        pr = project(p)
        f = flop.get(p["recipe"])
        bf16 = "bf16" in str(p["precision"])
        pk = peak.get("matmul_bf16_gflops" if bf16 else "matmul_float32_gflops")
        gf = f["train_gflop"] * p["examples_per_sec"] if f else None
        share = f"{gf:.0f} ({gf / pk:.0%})" if gf and pk else "–"
        ratio = base.get(p["backend"], 0) / p["epoch_s"] if base.get(p["backend"]) else None
        epoch = _clock(p["epoch_s"]) + (" (projected from its first "
                                         f"{p['measured_batches']} batches)" if p["epoch_projected"] else "")
        whole = fulls.get(f"{p['backend']}:{p['recipe']}")
        total = (f"**{_clock(whole['wall_s'])} measured**" if whole else
                 f"{_clock(pr['projected_s'])} projected")
        views = f" (TTA {p['tta']}, {p['views']} views)" if p["tta"] else ""
        lines.append(f"| {p['backend']} | {p['recipe']} ({p['model']}) | {p['precision']} | {epoch} | "
                     f"{p['examples_per_sec']:.0f} | {f'{ratio:.1f}×' if ratio else '–'} | {share} | "
                     f"{_clock(pr['predict_all_s'])}{views} (from {p['predict_n']}) | {total} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="a tiny layout: checks the machinery")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--precision", choices=("auto", "float32"), default="auto",
                    help="auto: bf16 where the CPU has it natively (the default); float32: --no-amp")
    ap.add_argument("--isa", choices=tuple(ISA_ENV), help="limit oneDNN/MKL/ATen to this ISA")
    ap.add_argument("--max-batches", default="",
                    help="RECIPE:N,... measure only the first N batches of that recipe's epoch "
                         "and project it (slow recipes)")
    ap.add_argument("--full", default="", help="BACKEND:RECIPE,... runs measured start to end")
    ap.add_argument("--race", type=float, metavar="ACC",
                    help="also time each recipe (torch) from start to its first validation at "
                         "ACC on the layout (loading included; capped at 4x the first's time)")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args(argv)
    if a.job:
        job = json.loads(a.job)
        kind = job.pop("kind")
        res = job_peak() if kind == "peak" else job_parts(**job)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    size = QUICK if a.quick else FULL
    env_extra = ISA_ENV.get(a.isa or "", {})
    amp = "auto" if a.precision == "auto" else False
    data = layout(a.quick)
    caps = {k: int(v) for k, v in (x.split(":") for x in a.max_batches.split(",") if x)}
    t0 = time.perf_counter()
    peaks = [run_job({"kind": "peak"}, env_extra)]
    parts = []
    for backend in a.backends.split(","):
        for recipe in a.recipes.split(","):
            log(f"{backend} {recipe} ...")
            p = run_job({"kind": "parts", "backend": backend, "recipe": recipe, "data_dir": data,
                         "amp": amp, "max_batches": 2 if a.quick else caps.get(recipe),
                         "predict_n": size["predict_n"]}, env_extra)
            log(f"  epoch {p['epoch_s']:.0f} s ({p['examples_per_sec']:.1f} ex/s, "
                f"{p['precision']}), {p['predict_n']} predictions {p['predict_s']:.0f} s, "
                f"load {p['load_s']:.0f} s; run projected {_clock(project(p)['projected_s'])}")
            parts.append(p)
    fulls = {}
    for spec in (x for x in a.full.split(",") if x):
        backend, recipe = spec.split(":")
        log(f"full run {backend} {recipe} ...")
        fulls[spec] = full_run(backend, recipe, data, amp, env_extra)
        log(f"  {_clock(fulls[spec]['wall_s'])}: {fulls[spec]['timings']}")
    races = []
    if a.race:
        from benchmarks.run import run_job as bench_job
        os.environ.update(env_extra)
        cap = None
        for recipe in a.recipes.split(","):
            log(f"race to {a.race} {recipe} ...")
            r = bench_job(dict(job="ours_time_to_accuracy", backend="torch", data_dir=data,
                               target=a.race, amp=amp, recipe=recipe, max_seconds=cap,
                               epochs=2 if a.quick else None), timeout=8 * 3600)
            races.append({"recipe": recipe, "cap_s": cap, **r})
            if cap is None and r["seconds"] is not None:
                cap = 4 * r["seconds"]
            log(f"  {r['seconds']} s, curve {r['curve']}")
    peaks.append(run_job({"kind": "peak"}, env_extra))
    peak = {k: max(p.get(k, 0) for p in peaks) for k in peaks[0] if k.startswith("matmul")}
    from benchmarks.run import machine, start_probe
    m = machine(start_probe())
    text = table(parts, peak, fulls)
    print(f"CPU {m['cpu']}, flags {' '.join(m['flags'])}, {m['cores']} cores, native bf16 "
          f"{m['bf16_native']}; precision {a.precision}" + (f", ISA limited to {a.isa}" if a.isa else "")
          + "; matmul peak " + ", ".join(f"{k[7:-7]} {v:.0f} GFLOP/s" for k, v in peak.items())
          + f"; benchmark {time.perf_counter() - t0:.0f} s")
    print(text)
    for r in races:
        print(f"time to valid acc {a.race}: {r['recipe']} ({r.get('model')}, {r.get('precision')}) "
              + (f"{r['seconds']:.0f} s" if r["seconds"] is not None else
                 f"not reached in {r['wall']:.0f} s (best {r['best_acc']})")
              + f", curve {r['curve']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "peak": peak, "parts": parts, "projections":
                       [project(p) for p in parts], "full": fulls, "races": races,
                       "precision": a.precision,
                       "isa": a.isa, "layout": data}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
