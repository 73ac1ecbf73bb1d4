"""bf16 against float32: one training step of each backend, A/B interleaved in one process.

    python benchmarks/bf16_speed.py                         # mxnet, batch 128, 4 rounds
    python benchmarks/bf16_speed.py --backend torch --batch 32
    python benchmarks/bf16_speed.py --backend mxnet --variants np-ops,fp32,bf16 --rounds 6

Every variant is the library's own ``Step`` (``amp=False`` or ``amp=True``) on the book's
ResNet-18 (width 64, 32×32, SGD momentum, the same uint8 batches cycled), built once; the
rounds run the variants in turn, reversed every other round (ABBA), so load from elsewhere hits
all of them alike. Each line gives wall examples/s and the process's CPU seconds per step
(steadier than wall time on a shared machine); the last lines give the medians and each
variant's ratio to the first. ``np-ops`` (MXNet only) is the float32 step with the ResNets'
numpy-namespace ReLU, sum and mean this library used before (no oneDNN kernel: every one
reordered the blocked layout back to NCHW). Paddle has no bf16 variant: its dygraph CPU
kernels have no bf16 convolution and ``paddle.amp.auto_cast`` is a no-op on the CPU
(docs/speed.md).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

VARIANTS = {"fp32": dict(amp=False), "bf16": dict(amp=True), "np-ops": dict(amp=False)}


def _np_ops(on: bool, saved: dict = {}) -> None:   # noqa: B006 (the shipped ops, kept once)
    """Swap the MXNet ResNets' ops for the numpy-namespace ones of before (``on``) or back."""
    from d2lkaggle.mxnet_impl import models as M
    names = ("_relu", "_add", "_global_avg")
    if not saved:
        saved.update({n: getattr(M, n) for n in names})
    old = {"_relu": lambda F, x: F.npx.relu(x), "_add": lambda F, a, b: a + b,
           "_global_avg": lambda F, x: F.np.mean(x, axis=(2, 3))}
    for n in names:
        setattr(M, n, old[n] if on else saved[n])


def make_step(bk, variant: str, width: int, batch):
    """A step of ``variant``, its graph traced (ops are read when the graph is traced)."""
    bk.set_seed(0)
    if variant == "np-ops":
        _np_ops(True)
    try:
        step = bk.Step(bk.resnet18(10, 3, width), lr=0.01, wd=5e-4, momentum=0.9,
                       **VARIANTS[variant])
        step.train_batch(*batch)   # builds the graph, primitives and optimizer state
    finally:
        if variant == "np-ops":
            _np_ops(False)
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="mxnet", help="torch, mxnet or paddle (default: mxnet)")
    ap.add_argument("--batch", type=int, default=128, help="images per step (default: 128)")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 width (default: 64, the book's)")
    ap.add_argument("--variants", help="comma-separated: fp32, bf16, np-ops (MXNet) "
                                       "(default: fp32,bf16; paddle: fp32)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default: 4)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round (default: 3)")
    a = ap.parse_args(argv)
    import numpy as np
    from d2lkaggle.utils.registry import get_backend
    bk = get_backend(a.backend)
    variants = (a.variants.split(",") if a.variants
                else ["fp32"] if a.backend == "paddle" else ["fp32", "bf16"])
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (a.batch, 32, 32, 3), dtype=np.uint8),
                rng.integers(0, 10, a.batch)) for _ in range(4)]
    steps = {}
    for v in variants:
        steps[v] = make_step(bk, v, a.width, batches[0])
    print(f"{a.backend}, book ResNet-18 width {a.width}, batch {a.batch}, SUPPORTS_BF16="
          f"{bk.SUPPORTS_BF16}; bf16 in use: "
          + ", ".join(f"{v} {bool(getattr(s, 'amp', False))}" for v, s in steps.items()), flush=True)
    wall = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    k = 0
    for r in range(a.rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(a.steps):
                steps[v].train_batch(*batches[k % len(batches)])
                k += 1
            dt, dc = time.perf_counter() - t, time.process_time() - c
            wall[v].append(a.batch * a.steps / dt)
            cpu[v].append(dc / a.steps)
            print(f"round {r + 1}  {v:7s} {wall[v][-1]:7.1f} examples/s  {cpu[v][-1]:6.2f} cpu-s/step",
                  flush=True)
    base = variants[0]
    for v in variants:
        w, c = statistics.median(wall[v]), statistics.median(cpu[v])
        print(f"median  {v:7s} {w:7.1f} examples/s ({w / statistics.median(wall[base]):.2f}x {base})  "
              f"{c:6.2f} cpu-s/step ({statistics.median(cpu[base]) / c:.2f}x less cpu than {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
