"""Time the book's folder reorganisation on a CIFAR-10-sized competition.

Generates ``--n-train`` (default 50,000) + ``--n-test`` (default 10,000) 32×32 PNGs and a
``trainLabels.csv`` (10 balanced classes), then times ``reorg_train_valid`` (valid_ratio 0.1)
and ``reorg_test``, first on a fresh folder and again on the already-reorganised one (a
re-run replaces the old tree).

    python benchmarks/reorg_speed.py                      # full size, temporary folder
    python benchmarks/reorg_speed.py --n-train 5000 --n-test 1000 --keep /tmp/cifar-bench
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2lkaggle.data.labels import read_csv_labels  # noqa: E402
from d2lkaggle.data.reorg import reorg_test, reorg_train_valid  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def make_competition(root: str, n_train: int, n_test: int, seed: int = 0) -> None:
    """CIFAR-10 layout: train/<id>.png, test/<id>.png, trainLabels.csv (ids from 1)."""
    rng = np.random.default_rng(seed)
    # A pool of distinct encoded PNGs written many times: the files are real 32×32 PNGs and
    # generating 60,000 of them takes seconds rather than a minute.
    pool = []
    for _ in range(min(512, max(n_train, n_test, 1))):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        pool.append(buf.getvalue())
    for part, n in (("train", n_train), ("test", n_test)):
        folder = os.path.join(root, part)
        os.makedirs(folder, exist_ok=True)
        for i in range(1, n + 1):
            with open(os.path.join(folder, f"{i}.png"), "wb") as f:
                f.write(pool[i % len(pool)])
    with open(os.path.join(root, "trainLabels.csv"), "w", newline="") as f:
        f.write("id,label\n")
        f.writelines(f"{i},{CLASSES[i % len(CLASSES)]}\n" for i in range(1, n_train + 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=50_000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--valid-ratio", type=float, default=0.1)
    ap.add_argument("--mode", default="link", choices=("link", "symlink", "copy"))
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary "
                                                  "folder, deleted afterwards)")
    a = ap.parse_args(argv)

    root = a.keep or tempfile.mkdtemp(prefix="d2lkaggle-reorg-bench-")
    try:
        t = time.perf_counter()
        make_competition(root, a.n_train, a.n_test)
        print(f"generated {a.n_train} train + {a.n_test} test PNGs in "
              f"{time.perf_counter() - t:.1f} s ({root})")
        labels = read_csv_labels(os.path.join(root, "trainLabels.csv"))
        for run in ("fresh", "re-run"):
            t0 = time.perf_counter()
            n_valid = reorg_train_valid(root, labels, a.valid_ratio, seed=0, mode=a.mode)
            t1 = time.perf_counter()
            n_test = reorg_test(root, mode=a.mode)
            t2 = time.perf_counter()
            print(f"{run:6s} mode={a.mode}: reorg_train_valid {t1 - t0:.2f} s "
                  f"({n_valid} valid per class), reorg_test {t2 - t1:.2f} s ({n_test} files), "
                  f"total {t2 - t0:.2f} s")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
