"""Data parallel with Paddle (issue 15): ``paddle.DataParallel`` under
``python -m paddle.distributed.launch`` (gloo on the CPU) gives one process's weights, and the
CLI runs under that launcher with one run folder written by rank 0."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

HAS_PADDLE = importlib.util.find_spec("paddle") is not None
pytestmark = pytest.mark.skipif(not HAS_PADDLE, reason="paddle is not installed")

EQUIV = r'''
import json, os, sys
import numpy as np, paddle
from paddle import nn
from d2lkaggle import distributed as D, loop
from d2lkaggle.data import ArraySource, ImageLoader
from d2lkaggle.paddle_impl.train import PaddleStep
from d2lkaggle.paddle_impl import distributed as PD

out = sys.argv[1]
env = D.setup("paddle")        # the launcher's PADDLE_TRAINER_ID/... -> init_parallel_env (gloo)
assert env.launcher == "paddle" and env.world_size == 2, env
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (48, 8, 8, 3)).astype(np.uint8)
y = np.arange(48) % 4

def loaders(dist):
    tr = ImageLoader(ArraySource(x[:40]), y[:40], 8, shuffle=True, drop_last=True, seed=3,
                     mean=(0.5,) * 3, std=(0.25,) * 3, num_workers=1, dist=dist)
    va = ImageLoader(ArraySource(x[40:]), y[40:], 6, mean=tr.mean, std=tr.std, num_workers=1,
                     dist=dist)                 # 8 = 6 + 2: the ranks split a short batch
    return tr, va

def net():
    paddle.seed(0)                           # no BatchNorm: DataParallel keeps BN statistics per rank
    return nn.Sequential(nn.Conv2D(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(2),
                         nn.Flatten(), nn.Linear(24, 4))

def train(dist, shards=None, seed_net=None):
    tr, va = loaders(shards or dist)
    step = PaddleStep(seed_net or net(), lr=0.1, wd=1e-3, momentum=0.9, dtype="float64",
                      amp=False, mean=tr.mean, std=tr.std, dist=dist)
    h = loop.fit(step, tr, va, 3, lambda t: 0.1 * (1 - t / 4), progress=False, log=None,
                 checkpoint_dir=os.path.join(out, "ck" if dist else "ck1"))
    return step, h

start = net()
if env.rank == 1:                            # a different start on rank 1: DataParallel
    for p in start.parameters():             # must broadcast rank 0's weights
        p.set_value(p.numpy() + 1.0)
step, h = train(env, seed_net=start)
assert type(step.model).__name__ == "DataParallel", type(step.model)
if env.is_main:
    ref, h1 = train(None)                   # one process, the same global batches
    alone, _ = train(None, shards=env)       # rank 0's shards without the gradient average
    # the parameters themselves, in float64 (state_dict exports float32)
    weights = lambda s: {k: p.numpy() for k, p in s.net.named_parameters()}
    dist_to = lambda a, b: max(float(np.abs(a[k] - b[k]).max()) for k in b)
    w, w1 = weights(step), weights(ref)
    w0 = weights(PaddleStep(net(), dtype="float64"))
    json.dump({"diff": dist_to(w, w1), "unsynced": dist_to(weights(alone), w1),
               "moved": dist_to(w1, w0), "world": env.world_size,
               "dtype": str(next(iter(w.values())).dtype),
               "hist": [h.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "hist1": [h1.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "files": sorted(os.listdir(os.path.join(out, "ck")))},
              open(os.path.join(out, "result.json"), "w"))
PD.barrier()
'''


def _launch(args, tmp_path, timeout=150):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", D2LKAGGLE_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                           "2", "--log_dir", str(tmp_path / "log"), *args],
                          capture_output=True, text=True, timeout=timeout, env=e,
                          cwd=str(tmp_path))


def _logs(tmp_path) -> str:
    d = tmp_path / "log"
    return "".join(f"== {f}\n" + (d / f).read_text()[-2000:] for f in sorted(os.listdir(d))
                   if f.startswith("workerlog")) if d.is_dir() else ""


def test_data_parallel_two_processes_match_one(tmp_path):
    script = tmp_path / "equiv.py"
    script.write_text(EQUIV)
    r = _launch([str(script), str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:] + _logs(tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["world"] == 2 and "float64" in res["dtype"]
    assert res["moved"] > 1e-3 and res["unsynced"] > 1e-3   # training moved the weights, and
    # one rank's shards alone lead elsewhere (the gradient average is what makes them agree)
    assert res["diff"] <= 1e-5, res                 # ... the same way in 2 processes as in 1
    print(f"max |w_2proc - w_1proc| = {res['diff']:.3g}")
    # every rank's metrics are the global ones: the one-process history
    np.testing.assert_allclose(res["hist"], res["hist1"], rtol=1e-6, atol=1e-9)
    assert res["files"] == ["best.npz", "last.npz"]


def test_cli_under_paddle_launch_writes_one_run(tmp_path):
    from d2lkaggle.datasets import make_demo
    data = make_demo(str(tmp_path / "comp"), n_train=40, n_test=10, size=16, seed=1)
    out = tmp_path / "run"
    # the launcher runs a non-.py entry point as a command: the interpreter, then -m
    r = _launch([sys.executable, "-m", "d2lkaggle.cli", "run", "demo", "--backend", "paddle",
                 "--data-dir", data, "--out", str(out), "--epochs", "1", "--batch-size", "10",
                 "--image-size", "16", "--model", "cnn_elu", "--quiet", "--no-amp",
                 "--valid-ratio", "0.25", "--workers", "1"], tmp_path, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + _logs(tmp_path)
    logs = _logs(tmp_path)
    assert logs.count("submission.csv from") == 1, logs     # one rank reports
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name not in ("comp", "data", "log")]
    assert runs == [out]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["config"]["world_size"] == 2
    import pandas as pd
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert len(sub) == 10 and set(sub.columns) == {"id", "label"}
