"""PaddlePaddle CPU training speed: what each lever gives on the book's ResNet-18.

The book's ResNet-18 (width 64), 32×32 inputs, batch 32, Momentum SGD + weight decay, one
fresh process per row (thread counts, MKL and oneDNN switches must be made before the first
kernel runs). Each row runs a few warm-up steps (``paddle.jit.to_static`` compiles on the
first), then times ``--steps`` steps; ``--repeat`` runs every row that many times
(interleaved) and keeps the best, since other processes on a shared machine add noise.
"cpu s/step" is the process CPU time per step: less sensitive to other load than wall time.

Levers (each row adds one to the row above, unless it says otherwise):

* threads: Paddle pins OpenMP/MKL to 1 thread at import when ``OMP_NUM_THREADS`` is unset.
* ``MKL_DEBUG_CPU_TYPE=5``: Paddle's MKL (mklml) takes a slow generic code path on AMD CPUs;
  this makes it use its AVX2 kernels (ignored on Intel, where MKL already picks the best).
* ``FLAGS_use_onednn``: only reaches dygraph through nothing — eager ops run Paddle's native
  CPU kernels — but static programs (``paddle.jit.to_static``) run oneDNN kernels with it.
* NHWC ``data_format``, ``paddle.jit.to_static`` (with and without oneDNN), bf16 autocast.
* "d2lkaggle Step": the backend as shipped (its defaults), and with ``D2LKAGGLE_PADDLE_FAST=0``.

    python benchmarks/paddle_speed.py [--steps 10] [--warmup 3] [--repeat 1] [--batch 32]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = r"""
import json, os, sys, time
import numpy as np
opt = json.loads(sys.argv[1])
batch, steps, warmup = opt["batch"], opt["steps"], opt["warmup"]
rng = np.random.default_rng(0)
xb = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
yb = rng.integers(0, 10, batch).astype(np.int64)
if opt.get("shipped"):
    from d2lkaggle import paddle_impl as P
    import paddle
    P.set_seed(0)
    s = P.Step(P.resnet18(10), lr=0.02, wd=5e-4, mean=(0.5,) * 3, std=(0.25,) * 3)
    def step():
        loss_sum, _, n = s.train_batch(xb, yb)
        return loss_sum / n
else:
    import paddle
    from paddle import nn
    from paddle.nn import functional as F
    if opt.get("threads"):
        paddle.base.core.set_num_threads(int(opt["threads"]))
    fmt = "NHWC" if opt.get("nhwc") else "NCHW"

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
            self.fc = nn.Linear(prev, 10)
        def forward(self, x):
            x = self.blocks(F.relu(self.bn1(self.conv1(x))))
            x = paddle.mean(x, axis=[1, 2] if fmt == "NHWC" else [2, 3])
            if opt.get("bf16"):
                x = x.astype("float32")
            # paddle.assign: a oneDNN static program whose output comes straight from a
            # Linear fails in Paddle 3.3 (see d2lkaggle/paddle_impl/train.py)
            return paddle.assign(self.fc(x)) if opt.get("static") else self.fc(x)

    paddle.seed(0)
    net = Net()
    model = net
    if opt.get("bf16"):
        class Amp(nn.Layer):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner
            def forward(self, x):
                with paddle.amp.auto_cast(dtype="bfloat16", level="O1"):
                    return self.inner(x)
        model = Amp(net)
    if opt.get("static"):
        model = paddle.jit.to_static(model, full_graph=True)
    sgd = paddle.optimizer.Momentum(0.02, 0.9, parameters=net.parameters(), weight_decay=5e-4)
    mean, std = np.float32(0.5), np.float32(0.25)
    def step():
        x = (xb.astype(np.float32) / 255 - mean) / std
        x = paddle.to_tensor(np.ascontiguousarray(x if fmt == "NHWC" else x.transpose(0, 3, 1, 2)))
        y = paddle.to_tensor(yb)
        out = model(x)
        loss = F.cross_entropy(out.astype("float32"), y)
        loss.backward()
        sgd.step()
        sgd.clear_grad()
        return float(loss)
for _ in range(warmup):
    step()
t, c = time.perf_counter(), time.process_time()
for _ in range(steps):
    loss = step()
wall, cpu = time.perf_counter() - t, time.process_time() - c
print("RESULT " + json.dumps({"examples_per_sec": batch * steps / wall, "cpu_per_step": cpu / steps,
                              "loss": float(loss)}))
"""

#: environment variables the rows control; removed from the parent's environment first
CONTROLLED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "FLAGS_use_onednn",
              "FLAGS_use_mkldnn", "D2LKAGGLE_PADDLE_FAST")


def rows(n: int) -> list[tuple[str, dict, dict]]:
    """(label, options for the child, environment) of every measured setting."""
    amd = {"MKL_DEBUG_CPU_TYPE": "5"}
    dnn = {"FLAGS_use_onednn": "1"}
    return [
        ("Paddle defaults (1 thread)", {}, {}),
        (f"{n} threads (set_num_threads)", {"threads": n}, {}),
        (f"{n} threads (OMP_NUM_THREADS={n})", {}, {"OMP_NUM_THREADS": str(n)}),
        ("  + MKL_DEBUG_CPU_TYPE=5", {"threads": n}, amd),
        ("  + FLAGS_use_onednn=1 (dygraph)", {"threads": n}, {**amd, **dnn}),
        ("  + NHWC (dygraph)", {"threads": n, "nhwc": True}, amd),
        ("  + bf16 autocast (dygraph)", {"threads": n, "bf16": True}, amd),
        ("  + to_static, no oneDNN", {"threads": n, "static": True}, amd),
        ("  + to_static + oneDNN", {"threads": n, "static": True}, {**amd, **dnn}),
        ("  + to_static + oneDNN + NHWC", {"threads": n, "static": True, "nhwc": True},
         {**amd, **dnn}),
        ("  + to_static + oneDNN + bf16", {"threads": n, "static": True, "bf16": True},
         {**amd, **dnn}),
        ("to_static + oneDNN, 1 thread", {"static": True}, {**amd, **dnn}),
        ("d2lkaggle Step, levers off (FAST=0)", {"shipped": True}, {"D2LKAGGLE_PADDLE_FAST": "0"}),
        ("d2lkaggle Step as shipped", {"shipped": True}, {}),
    ]


def run(opt: dict, env: dict, timeout: int) -> dict | str:
    e = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env)
    # a file, not ``python -c``: paddle.jit.to_static reads the source of what it converts
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "paddle_speed_child.py")
        with open(script, "w") as f:
            f.write(CODE)
        try:
            r = subprocess.run([sys.executable, script, json.dumps(opt)], capture_output=True,
                               text=True, env=e, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout} s"
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    err = [l for l in r.stderr.strip().splitlines() if l.strip()]
    return "failed: " + (err[-1][:90] if err else f"exit {r.returncode}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated row numbers (1-based)")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--json", default="", help="also write the results to this file")
    a = p.parse_args(argv)
    n = os.cpu_count() or 1
    table = rows(n)
    pick = [int(i) - 1 for i in a.only.split(",") if i] or list(range(len(table)))
    best: dict[int, dict | str] = {}
    for _ in range(a.repeat):
        for i in pick:
            label, opt, env = table[i]
            r = run({**opt, "batch": a.batch, "steps": a.steps, "warmup": a.warmup}, env, a.timeout)
            old = best.get(i)
            if isinstance(r, dict) and (not isinstance(old, dict)
                                        or r["examples_per_sec"] > old["examples_per_sec"]):
                best[i] = r
            elif old is None:
                best[i] = r
            print(f"  ({label}: {r if isinstance(r, str) else round(r['examples_per_sec'], 1)})",
                  file=sys.stderr, flush=True)
    print(f"Paddle, the book's ResNet-18 (width 64), 32x32, batch {a.batch}: training "
          f"(best of {a.repeat}, {a.steps} steps after {a.warmup} warm-up)")
    print(f"{'#':>2}  {'setting':40s} {'examples/s':>10s} {'cpu s/step':>10s} {'loss':>7s}")
    for i in pick:
        r = best[i]
        if isinstance(r, str):
            print(f"{i + 1:2d}  {table[i][0]:40s} {r}")
        else:
            print(f"{i + 1:2d}  {table[i][0]:40s} {r['examples_per_sec']:10.1f} "
                  f"{r['cpu_per_step']:10.2f} {r['loss']:7.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({table[i][0]: best[i] for i in pick}, f, indent=1)


if __name__ == "__main__":
    main()
