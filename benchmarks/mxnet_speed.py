"""MXNet training speed: our backend's step against the chapter's Gluon training step.

Both train the book's ResNet-18 (width 64, 32×32 images, batch 32) on the CPU:
- "chapter": ``gluon.Trainer('sgd')`` + ``SoftmaxCrossEntropyLoss`` + ``trainer.step(batch_size)``
  on a hybridized net, the way the chapter's ``train_batch_ch13`` does it;
- "d2lkaggle": ``mxnet_impl.Step.train_batch`` (uint8 batch in, normalisation, mean loss,
  torch-form momentum update).
Each setting runs in a fresh process; thread variants set OMP_NUM_THREADS /
MXNET_CPU_WORKER_NTHREADS before mxnet is imported.

    python benchmarks/mxnet_speed.py [--steps 10]
"""
import argparse
import json
import os
import subprocess
import sys

CODE = r"""
import json, sys, time
import numpy as np
import mxnet as mx
from mxnet import autograd, gluon
from d2lkaggle import mxnet_impl as M
which, steps, batch = sys.argv[1], int(sys.argv[2]), 32
M.set_seed(0)
net = M.resnet18(10)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, batch)
if which == "chapter":
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.02, "momentum": 0.9, "wd": 5e-4})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    X = M.to_tensor(x, (0.5,) * 3, (0.25,) * 3)
    Y = mx.np.array(y.astype("float32"))
    def step():
        with autograd.record():
            l = loss(net(X), Y)
        l.backward()
        trainer.step(batch)
        return float(l.sum())
else:
    s = M.Step(net, lr=0.02, wd=5e-4, mean=(0.5,) * 3, std=(0.25,) * 3)
    step = lambda: s.train_batch(x, y)
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"examples_per_sec": batch * steps / (time.perf_counter() - t)}))
"""


def run(which, steps, env):
    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, "-c", CODE, which, str(steps)], capture_output=True,
                       text=True, env=e)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])["examples_per_sec"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    n = str(os.cpu_count() or 1)
    rows = [("chapter (Trainer, sgd)", "chapter", {}),
            ("d2lkaggle Step", "ours", {}),
            ("d2lkaggle Step, OMP_NUM_THREADS=1", "ours", {"OMP_NUM_THREADS": "1"}),
            (f"d2lkaggle Step, MXNET_CPU_WORKER_NTHREADS={n}", "ours", {"MXNET_CPU_WORKER_NTHREADS": n})]
    print("MXNet ResNet-18 (width 64), 32x32, batch 32, training examples/s")
    base = None
    for name, which, env in rows:
        v = run(which, a.steps, env)
        base = base or v
        print(f"  {name:44s} {v:7.1f}   ({v / base:.2f}x chapter)")


if __name__ == "__main__":
    main()
