"""PaddlePaddle CPU training speed: what each lever gives on the book's ResNet-18.

ResNet-18 (width 64, 32×32, batch 32), one fresh process per setting (thread settings must be
made before paddle is imported). Levers: threads (Paddle sets OMP_NUM_THREADS=1 at import when
it is unset; the backend raises it to the core count), oneDNN flag, NHWC layout,
``paddle.jit.to_static``, bf16 autocast. The "d2lkaggle Step" row is the backend as shipped.

    python benchmarks/paddle_speed.py [--steps 6]
"""
import argparse
import json
import os
import subprocess
import sys

CODE = r"""
import json, os, sys, time
import numpy as np
lever, steps, batch = sys.argv[1], int(sys.argv[2]), 32
if lever == "shipped":
    from d2lkaggle import paddle_impl as P   # sets the thread count as the backend does
import paddle
from paddle import nn
from paddle.nn import functional as F
if lever == "default":
    paddle.base.core.set_num_threads(1)   # what Paddle does by itself when OMP_NUM_THREADS is unset
fmt = "NHWC" if lever == "nhwc" else "NCHW"

class Res(nn.Layer):   # the book's residual block, with a data_format switch
    def __init__(self, i, c, shortcut=False, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2D(i, c, 3, stride, 1, data_format=fmt)
        self.bn1 = nn.BatchNorm2D(c, data_format=fmt)
        self.conv2 = nn.Conv2D(c, c, 3, 1, 1, data_format=fmt)
        self.bn2 = nn.BatchNorm2D(c, data_format=fmt)
        self.conv3 = nn.Conv2D(i, c, 1, stride, data_format=fmt) if shortcut else None
    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.conv3(x) if self.conv3 is not None else x))

class Net(nn.Layer):
    def __init__(self, w=64):
        super().__init__()
        self.conv1 = nn.Conv2D(3, w, 3, 1, 1, data_format=fmt)
        self.bn1 = nn.BatchNorm2D(w, data_format=fmt)
        blocks, prev = [], w
        for i, c in enumerate([w, 2 * w, 4 * w, 8 * w]):
            blocks += [Res(prev, c, i > 0, 1 if i == 0 else 2), Res(c, c)]
            prev = c
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2D(1, data_format=fmt)
        self.fc = nn.Linear(prev, 10)
    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(paddle.flatten(self.pool(x), 1))

rng = np.random.default_rng(0)
if lever == "shipped":
    s = P.Step(P.resnet18(10), lr=0.02, wd=5e-4, mean=(0.5,) * 3, std=(0.25,) * 3)
    xb = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    yb = rng.integers(0, 10, batch)
    step = lambda: s.train_batch(xb, yb)
else:
    net = Net()
    if lever == "to_static":
        net = paddle.jit.to_static(net, full_graph=True)
    opt = paddle.optimizer.Momentum(0.02, 0.9, parameters=net.parameters(), weight_decay=5e-4)
    shape = (batch, 32, 32, 3) if fmt == "NHWC" else (batch, 3, 32, 32)
    x = paddle.to_tensor(rng.random(shape).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 10, batch).astype("int64"))
    def step():
        if lever == "bf16":
            with paddle.amp.auto_cast(dtype="bfloat16", level="O1"):
                out = net(x)
            loss = F.cross_entropy(out.astype("float32"), y)
        else:
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
for _ in range(2):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"examples_per_sec": batch * steps / (time.perf_counter() - t)}))
"""

def run(lever, steps, env):
    e = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", CODE, lever, str(steps)], capture_output=True,
                       text=True, env=e)
    if r.returncode:
        return f"failed: {r.stderr.strip().splitlines()[-1][:80]}"
    return json.loads(r.stdout.strip().splitlines()[-1])["examples_per_sec"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    n = str(os.cpu_count() or 1)
    rows = [("Paddle defaults (1 OpenMP thread)", "default", {}),
            (f"OMP_NUM_THREADS={n}", "threads", {"OMP_NUM_THREADS": n}),
            (f"OMP_NUM_THREADS={n} + FLAGS_use_mkldnn=1", "threads", {"OMP_NUM_THREADS": n, "FLAGS_use_mkldnn": "1"}),
            (f"OMP_NUM_THREADS={n} + NHWC", "nhwc", {"OMP_NUM_THREADS": n}),
            (f"OMP_NUM_THREADS={n} + jit.to_static", "to_static", {"OMP_NUM_THREADS": n}),
            (f"OMP_NUM_THREADS={n} + bf16 autocast", "bf16", {"OMP_NUM_THREADS": n}),
            ("d2lkaggle Step as shipped", "shipped", {})]
    print("Paddle ResNet-18 (width 64), 32x32, batch 32, training examples/s")
    for name, lever, env in rows:
        v = run(lever, a.steps, env)
        print(f"  {name:44s} {v:7.1f}" if isinstance(v, float) else f"  {name:44s} {v}")


if __name__ == "__main__":
    main()
