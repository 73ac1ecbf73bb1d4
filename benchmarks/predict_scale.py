"""Prediction at Kaggle's real CIFAR-10 test size: 300,000 32×32 PNGs, streamed.

Generates the PNGs once into the benchmark cache (``$D2LKAGGLE_BENCH_CACHE``, default
``~/.cache/d2lkaggle-bench``), builds two CIFAR-10 layouts sharing them by hard links (30,000
and 300,000 test images; 200 training images), and in a fresh process per size runs the
library's own steps: ``load_data`` (which decodes every test PNG once as a check), prediction
through the loader (``loop.predict``), ``submission.csv`` checked against the sample file and
``test_probs.npy``. It reports the peak RSS of each process (``resource.getrusage``) and the
time per 1,000 test images. The classifier is a numpy linear model on channel means, so the
row measures the pipeline around the network (decode, batches, files), not a network's speed.

    python benchmarks/predict_scale.py            # 30k vs 300k
    python benchmarks/predict_scale.py --quick    # 3k vs 30k
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
FULL, SMALL, N_TRAIN = 300_000, 30_000, 200


def cache_dir() -> str:
    """The benchmark's cache folder (``$D2LKAGGLE_BENCH_CACHE`` or ``~/.cache/d2lkaggle-bench``)."""
    return os.environ.get("D2LKAGGLE_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "d2lkaggle-bench")


def _png_pool(n: int = 512, seed: int = 0) -> list[bytes]:
    """Distinct encoded 32×32 PNGs of CIFAR-like size (~3 KB); files reuse them."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        # smooth colour fields plus noise: PNG sizes and decode times like CIFAR photos
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((32, 32), Image.BILINEAR), dtype=np.int16)
        img = np.clip(img + rng.integers(-24, 25, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        pool.append(buf.getvalue())
    return pool


def test_pngs(n: int, log=print) -> str:
    """A folder of ``n`` test PNGs ``1.png .. n.png`` (made once; a marker says it is whole)."""
    folder = os.path.join(cache_dir(), f"cifar-test-{n}")
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    os.makedirs(folder, exist_ok=True)
    pool = _png_pool()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        with open(os.path.join(folder, f"{i}.png"), "wb") as f:
            f.write(pool[i % len(pool)])
        if i % 50_000 == 0:
            log(f"  generated {i:,} / {n:,} test PNGs ({time.perf_counter() - t0:.0f} s)")
    with open(marker, "w") as f:
        f.write(f"{n}\n")
    return folder


def layout(n_test: int, log=print) -> str:
    """A CIFAR-10 Kaggle layout with ``n_test`` test images (hard links into the PNG cache)."""
    root = os.path.join(cache_dir(), f"cifar-layout-{n_test}")
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    src = test_pngs(max(n_test, SMALL) if n_test <= SMALL else n_test, log)
    pool = _png_pool(seed=1)
    for part in ("train", "test"):
        os.makedirs(os.path.join(root, part), exist_ok=True)
    for i in range(1, N_TRAIN + 1):
        with open(os.path.join(root, "train", f"{i}.png"), "wb") as f:
            f.write(pool[i % len(pool)])
    for i in range(1, n_test + 1):
        dst = os.path.join(root, "test", f"{i}.png")
        if not os.path.exists(dst):
            try:
                os.link(os.path.join(src, f"{i}.png"), dst)
            except OSError:  # another file system: a copy
                import shutil
                shutil.copyfile(os.path.join(src, f"{i}.png"), dst)
    with open(os.path.join(root, "trainLabels.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{i},{CLASSES[i % 10]}\n" for i in range(1, N_TRAIN + 1)))
    with open(os.path.join(root, "sampleSubmission.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{i},cat\n" for i in range(1, n_test + 1)))
    with open(marker, "w") as f:
        f.write(f"{n_test}\n")
    return root


class LinearStep:
    """A numpy classifier on channel means (the benchmark's stand-in for a network)."""

    def __init__(self, num_classes: int = 10, seed: int = 0):
        self.w = np.random.default_rng(seed).normal(0, 0.05, (3, num_classes))

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        z = x.reshape(len(x), -1, 3).mean(axis=1) @ self.w
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def child(data_dir: str, out: str) -> dict:
    """One measured process: load_data (check), predict, submission.csv, test_probs.npy."""
    import resource

    from d2lkaggle.train import loop
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.compete.runfolder import save_run_predictions
    from d2lkaggle.compete.load import load_data
    from d2lkaggle.compete.submission import write_submission
    comp = get_competition("cifar10")
    t0 = time.perf_counter()
    data = load_data(comp, data_dir, batch_size=256, valid_ratio=0.0, num_workers=2)
    t_check = time.perf_counter() - t0
    t1 = time.perf_counter()
    probs = loop.predict(LinearStep(len(data.classes)), data.test_iter)
    t_pred = time.perf_counter() - t1
    os.makedirs(out, exist_ok=True)
    write_submission(comp, data_dir, probs, data, os.path.join(out, "submission.csv"))
    save_run_predictions(out, data, probs)
    t_total = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    n = len(data.test_ids)
    return {"n": n, "check_s": t_check, "predict_s": t_pred, "predict_write_s": t_total,
            "peak_rss_mb": rss, "ms_per_1000": 1e6 * t_total / n,
            "check_ms_per_1000": 1e6 * t_check / n}


def measure(n_test: int, log=print) -> dict:
    """Run :func:`child` for ``n_test`` test images in a fresh process."""
    import tempfile
    root = layout(n_test, log)
    with tempfile.TemporaryDirectory(prefix="d2lk-predscale-") as out:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", root, out],
                           capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"predict_scale child failed for {n_test}: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def rows(quick: bool) -> list[dict]:
    """The "Prediction at the real test size" rows for benchmarks/run.py."""
    small, big = (3_000, SMALL) if quick else (SMALL, FULL)
    print(f"[predict_scale] test sets of {small:,} and {big:,} PNGs in {cache_dir()}", flush=True)
    a = measure(small)
    print(f"[predict_scale] {small:,}: peak RSS {a['peak_rss_mb']:.0f} MB", flush=True)
    b = measure(big)
    print(f"[predict_scale] {big:,}: peak RSS {b['peak_rss_mb']:.0f} MB", flush=True)
    growth = b["peak_rss_mb"] - a["peak_rss_mb"]
    decoded_mb = big * 32 * 32 * 3 / 1e6
    # "does not grow with the test set": the decoded images (what holding them costs) are
    # never held; what remains per image is its id, label and probability row, as Python
    # strings and numpy rows (the submission needs them), bounded here at 1/5 of the images.
    goal_mb = 0.2 * decoded_mb
    return [
        {"row": f"prediction {big:,} PNGs: peak RSS {small:,} → {big:,}",
         "ours": round(b["peak_rss_mb"], 1), "textbook": None, "unit": "MB",
         "goal": f"growth ≤ {goal_mb:.0f} MB (20% of the {decoded_mb:.0f} MB decoded set)",
         "met": growth <= goal_mb,
         "note": f"{a['peak_rss_mb']:.0f} MB at {small:,}, {b['peak_rss_mb']:.0f} MB at {big:,} "
                 f"(+{growth:.0f} MB, {growth * 1e6 / (big - small):.0f} B per test image: ids, "
                 f"labels, probabilities; decoded, an image is 3,072 B); numpy linear classifier"},
        {"row": f"prediction {big:,} PNGs: decode + predict + submission.csv",
         "ours": round(b["ms_per_1000"], 1), "textbook": None, "unit": "ms / 1,000 images",
         "goal": "report", "met": None,
         "note": f"{b['predict_write_s']:.1f} s in all; the check before training decodes "
                 f"them once more: {b['check_ms_per_1000']:.0f} ms / 1,000 "
                 f"({b['check_s']:.1f} s); model time excluded"},
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3,000 vs 30,000 test images "
                    "(default: 30,000 vs 300,000)")
    ap.add_argument("--child", nargs=2, metavar=("DATA_DIR", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    for r in rows(a.quick):
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
