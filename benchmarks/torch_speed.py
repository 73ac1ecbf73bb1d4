"""PyTorch training speed on this machine: the book's ResNet-18, 32×32 images.

Measures examples/s of TorchStep.train_batch for fp32 NCHW, fp32 channels_last and bf16
autocast + channels_last, and (with --accuracy) the demo's valid accuracy with and without
bf16, each in a fresh process so thread settings and caches do not leak between settings.

    python benchmarks/torch_speed.py [--batch 32] [--width 64] [--steps 12] [--accuracy]
"""
import argparse
import json
import subprocess
import sys

CODE = r"""
import json, sys, time, numpy as np, torch
from d2lkaggle import torch_impl as T
batch, width, steps, amp, cl = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1"
T.set_seed(0)
net = T.resnet18(10, 3, width)
step = T.Step(net, lr=0.01, wd=5e-4, amp=amp, mean=(0.5,) * 3, std=(0.25,) * 3)
step.channels_last = cl
if not cl:
    step.net = step.model = net.to(memory_format=torch.contiguous_format)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, batch)
for _ in range(3):
    step.train_batch(x, y)
t = time.perf_counter()
for _ in range(steps):
    step.train_batch(x, y)
print(json.dumps({"examples_per_sec": batch * steps / (time.perf_counter() - t),
                  "threads": torch.get_num_threads()}))
"""

ACC = r"""
import json, sys, tempfile
from d2lkaggle.data.demo import make_demo
from d2lkaggle.compete.run import run_competition
import d2lkaggle.torch_impl.train as tt
import torch
tt.autocast_dtype = (lambda *a, **k: torch.bfloat16 if sys.argv[1] == "1" else None)
with tempfile.TemporaryDirectory() as tmp:
    d = make_demo(tmp + "/demo")
    s = run_competition("demo", d, out=tmp + "/run", retrain=False, progress=False, log=None)
print(json.dumps({"valid_acc": s["valid_acc"], "examples_per_sec": s["examples_per_sec"]}))
"""


def run(code, *args):
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--accuracy", action="store_true")
    a = p.parse_args()
    print(f"ResNet-18 width {a.width}, batch {a.batch}, 32x32, train step examples/s")
    for name, amp, cl in (("fp32 NCHW", 0, 0), ("fp32 channels_last", 0, 1),
                          ("bf16 autocast + channels_last", 1, 1)):
        r = run(CODE, a.batch, a.width, a.steps, amp, cl)
        print(f"  {name:32s} {r['examples_per_sec']:7.1f}  (threads {r['threads']})")
    if a.accuracy:
        for amp in (0, 1):
            r = run(ACC, amp)
            print(f"  demo recipe, bf16={amp}: valid acc {r['valid_acc']:.3f}, "
                  f"{r['examples_per_sec']:.0f} examples/s")


if __name__ == "__main__":
    main()
