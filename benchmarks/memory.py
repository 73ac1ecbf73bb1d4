"""Peak memory of caching CIFAR-10's 50,000 training PNGs as one uint8 array (150 MB).

In a fresh process per case, ``images.load_image_array`` decodes the PNGs (from the benchmark
cache of benchmarks/predict_scale.py) and writes its ``.npy`` cache ("build"), then a second
process reads the cache back ("reuse"). Peak RSS comes from ``resource.getrusage`` and
includes the interpreter with numpy and Pillow (measured too, as "baseline").

    python benchmarks/memory.py            # 50,000 images
    python benchmarks/memory.py --quick    # 5,000 images
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

N_FULL, N_QUICK = 50_000, 5_000


def child(folder: str, n: int, cache: str) -> dict:
    """One measured process: load_image_array over ``1.png .. n.png`` of ``folder``."""
    import resource
    import time

    from d2lkaggle.data.images import load_image_array
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    paths = [os.path.join(folder, f"{i}.png") for i in range(1, n + 1)]
    t0 = time.perf_counter()
    arr = load_image_array(paths, cache_dir=cache)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "array_mb": arr.nbytes / 2**20, "baseline_mb": base, "peak_mb": peak,
            "seconds": seconds}


def _run(folder: str, n: int, cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", folder, str(n),
                        cache], capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"memory child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rows(quick: bool) -> list[dict]:
    """The "Memory" rows for benchmarks/run.py."""
    from benchmarks.predict_scale import FULL, SMALL, test_pngs
    n = N_QUICK if quick else N_FULL
    folder = test_pngs(SMALL if n <= SMALL else FULL)
    print(f"[memory] caching {n:,} PNGs of {folder}", flush=True)
    out = []
    with tempfile.TemporaryDirectory(prefix="d2lk-memory-") as cache:
        for case in ("build", "reuse"):
            r = _run(folder, n, cache)
            limit = 1.5 * r["array_mb"]
            print(f"[memory] {case}: peak {r['peak_mb']:.0f} MB for a {r['array_mb']:.0f} MB "
                  f"array ({r['seconds']:.1f} s)", flush=True)
            out.append({
                "row": f"memory: cache {n:,} CIFAR images ({case} the .npy)",
                "ours": round(r["peak_mb"], 1), "textbook": None, "unit": "MB peak RSS",
                "goal": f"≤ 1.5× the array ({limit:.0f} MB)", "met": r["peak_mb"] <= limit,
                "note": f"array {r['array_mb']:.0f} MB, interpreter + numpy + Pillow "
                        f"{r['baseline_mb']:.0f} MB, {r['seconds']:.1f} s"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5,000 images (default: 50,000)")
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "CACHE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.child[2])))
        return 0
    for r in rows(a.quick):
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
