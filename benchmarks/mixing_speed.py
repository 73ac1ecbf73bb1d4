"""What MixUp / CutMix / label smoothing cost per training batch (issue 11: must be < 5 %).

Times ``Mixup(...)(x, y, rng)`` on loader-sized batches and, in the same process, one torch
``train_batch`` of the model the batch feeds, interleaved so that load from other processes
hits both alike. Prints the mixing time as a fraction of the training step.

    python benchmarks/mixing_speed.py [--width 64] [--batch 128] [--size 32] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    from d2lkaggle.data.mixing import Mixup, batch_rng
    from d2lkaggle.torch_impl import resnet18
    from d2lkaggle.torch_impl.train import TorchStep
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (a.batch, a.size, a.size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, a.batch)
    mixers = {"mixup 0.4": Mixup(0.4, num_classes=10),
              "cutmix 1.0": Mixup(0.0, 1.0, num_classes=10),
              "label smoothing 0.1": Mixup(0.0, 0.0, label_smoothing=0.1, num_classes=10)}
    step = TorchStep(resnet18(10, 3, a.width), lr=0.01, wd=5e-4, mean=(0.5,) * 3, std=(0.25,) * 3)
    step.train_batch(x, y)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in ("train step", *mixers)}
    for r in range(a.rounds):
        t = time.perf_counter()
        step.train_batch(x, mixers["mixup 0.4"](x, y, batch_rng(0, r, 0))[1])
        times["train step"].append(time.perf_counter() - t)
        for name, m in mixers.items():
            t = time.perf_counter()
            for b in range(20):
                m(x, y, batch_rng(0, r, b))
            times[name].append((time.perf_counter() - t) / 20)
    step_s = statistics.median(times["train step"])
    print(f"batch {a.batch}x{a.size}x{a.size}x3, ResNet-18 width {a.width}: train step "
          f"{step_s * 1e3:.1f} ms (median of {a.rounds})")
    for name in mixers:
        s = statistics.median(times[name])
        print(f"  {name:20s} {s * 1e3:7.3f} ms per batch = {100 * s / step_s:5.2f} % of a step")


if __name__ == "__main__":
    main()
