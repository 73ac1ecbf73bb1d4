"""MXNet training speed: d2lkaggle's MXNet backend against the chapter's own Gluon code.

Both train the book's ResNet-18 (width 64, 32×32 images, batch 32, SGD lr 0.02, momentum 0.9,
wd 5e-4) on the CPU and report training examples/s:

- "chapter": the CIFAR-10 chapter's MXNet tab re-typed minimally (numpy semantics): its
  ``Residual``/``resnet18`` (deferred shapes, ``init.Xavier()``), ``net.hybridize()``,
  ``gluon.Trainer('sgd')``, ``SoftmaxCrossEntropyLoss`` and ``train_batch_ch13``'s step
  (``split_and_load``, ``trainer.step(batch_size)``, loss and accuracy read back). Its input
  is an already normalised float32 NCHW batch, as the chapter's DataLoader delivers it.
- "d2lkaggle": ``mxnet_impl.Step.train_batch`` as ``train`` calls it: a uint8 NHWC batch
  from the core loader in, normalisation, mean loss, torch-form momentum update, loss and
  accuracy read back.

Every measurement runs in a fresh process (thread settings must be in the environment
before mxnet is imported); the settings are interleaved round by round and the median of
the rounds is reported, so other load on the machine hits all of them alike. Each row also
shows the CPU time the process used per second of wall time and how many threads did the
work. Run on an otherwise idle machine for absolute numbers.

    python benchmarks/mxnet_speed.py [--steps 10] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = r"""
import json, os, sys, time
import numpy as np
which, steps, batch = sys.argv[1], int(sys.argv[2]), 32
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, batch)
mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

if which == "chapter":
    import mxnet as mx
    from mxnet import autograd, gluon, init, npx
    from mxnet.gluon import nn
    npx.set_np()

    class Residual(nn.HybridBlock):
        def __init__(self, num_channels, use_1x1conv=False, strides=1, **kwargs):
            super().__init__(**kwargs)
            self.conv1 = nn.Conv2D(num_channels, kernel_size=3, padding=1, strides=strides)
            self.conv2 = nn.Conv2D(num_channels, kernel_size=3, padding=1)
            self.conv3 = (nn.Conv2D(num_channels, kernel_size=1, strides=strides)
                          if use_1x1conv else None)
            self.bn1, self.bn2 = nn.BatchNorm(), nn.BatchNorm()

        def hybrid_forward(self, F, X):
            Y = F.npx.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            return F.npx.relu(Y + X)

    def resnet18(num_classes):
        net = nn.HybridSequential()
        net.add(nn.Conv2D(64, kernel_size=3, strides=1, padding=1), nn.BatchNorm(),
                nn.Activation('relu'))
        def resnet_block(num_channels, num_residuals, first_block=False):
            blk = nn.HybridSequential()
            for i in range(num_residuals):
                if i == 0 and not first_block:
                    blk.add(Residual(num_channels, use_1x1conv=True, strides=2))
                else:
                    blk.add(Residual(num_channels))
            return blk
        net.add(resnet_block(64, 2, first_block=True), resnet_block(128, 2),
                resnet_block(256, 2), resnet_block(512, 2))
        net.add(nn.GlobalAvgPool2D(), nn.Dense(num_classes))
        return net

    devices = [mx.cpu()]  # d2l.try_all_gpus() is [] without a GPU
    net = resnet18(10)
    net.initialize(ctx=devices, init=init.Xavier())
    net.hybridize()
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.02, 'momentum': 0.9, 'wd': 5e-4})
    xf = ((x / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    features = mx.np.array(xf.astype(np.float32))
    labels = mx.np.array(y.astype(np.float32))

    def step():  # d2l.train_batch_ch13 with d2l.split_batch
        X_shards = gluon.utils.split_and_load(features, devices)
        y_shards = gluon.utils.split_and_load(labels, devices)
        with autograd.record():
            pred_shards = [net(X_shard) for X_shard in X_shards]
            ls = [loss(p, t) for p, t in zip(pred_shards, y_shards)]
        for l in ls:
            l.backward()
        trainer.step(labels.shape[0], ignore_stale_grad=True)
        train_loss_sum = sum([float(l.sum()) for l in ls])
        train_acc_sum = sum(float((p.argmax(axis=1).astype(t.dtype) == t).sum())
                            for p, t in zip(pred_shards, y_shards))
        return train_loss_sum, train_acc_sum
else:
    sys.path.insert(0, os.environ["D2LK_ROOT"])
    from d2lkaggle import mxnet_impl as M
    M.set_seed(0)
    s = M.Step(M.resnet18(10), lr=0.02, wd=5e-4, momentum=0.9, mean=mean, std=std)
    step = lambda: s.train_batch(x, y)

for _ in range(3):
    step()
t, c = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
wall = time.perf_counter() - t
cpu = time.process_time() - c
tick, busy = os.sysconf("SC_CLK_TCK"), []
for tid in os.listdir("/proc/self/task"):
    f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    busy.append((int(f[11]) + int(f[12])) / tick)
top = max(busy)
print(json.dumps({"examples_per_sec": batch * steps / wall, "cpu_per_wall": cpu / wall,
                  "busy_threads": sum(b > 0.3 * top for b in busy)}))
"""


def run(which, steps, env):
    e = dict(os.environ, D2LK_ROOT=ROOT)
    for k, v in env.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    r = subprocess.run([sys.executable, "-c", CODE, which, str(steps)], capture_output=True,
                       text=True, env=e, cwd=ROOT)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"{which} {env}: exit code {r.returncode}\n{r.stderr[-2000:]}")
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per process (after 3 warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is shown")
    a = p.parse_args()
    n = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    unset = {"OMP_NUM_THREADS": None, "MXNET_OMP_MAX_THREADS": None}
    rows = [
        ("chapter, MXNet's default threads", "chapter", unset),
        (f"chapter, OMP_NUM_THREADS={n}", "chapter", {**unset, "OMP_NUM_THREADS": n}),
        ("d2lkaggle Step, as shipped", "ours", unset),
        ("d2lkaggle Step, OMP_NUM_THREADS=1", "ours", {**unset, "OMP_NUM_THREADS": "1"}),
    ]
    print(f"MXNet ResNet-18 (width 64), 32x32, batch 32, training examples/s; {n} CPUs; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    results = {name: [] for name, _, _ in rows}
    for r in range(a.rounds):
        for name, which, env in rows:
            results[name].append(run(which, a.steps, env))
    base = statistics.median(x["examples_per_sec"] for x in results[rows[0][0]])
    for name, _, _ in rows:
        rs = results[name]
        v = statistics.median(x["examples_per_sec"] for x in rs)
        spread = ", ".join(f"{x['examples_per_sec']:.1f}" for x in rs)
        print(f"  {name:38s} {v:7.1f}  ({v / base:.2f}x chapter)  cpu/wall "
              f"{statistics.median(x['cpu_per_wall'] for x in rs):.2f}, busy threads "
              f"{max(x['busy_threads'] for x in rs)}   [rounds: {spread}]")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
