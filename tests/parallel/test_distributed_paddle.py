"""Data parallel with Paddle (issue 15): ``paddle.DataParallel`` under
``python -m paddle.distributed.launch`` (gloo on the CPU) gives one process's weights, and the
CLI runs under that launcher with one run folder written by rank 0."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import dist_equiv
from conftest import ROOT

HAS_PADDLE = importlib.util.find_spec("paddle") is not None
pytestmark = pytest.mark.skipif(not HAS_PADDLE, reason="paddle is not installed")

PADDLE_PART = r'''
import paddle
from paddle import nn
from d2lkaggle.paddle_impl.train import PaddleStep
from d2lkaggle.paddle_impl import distributed as PD

env = D.setup("paddle")        # the launcher's PADDLE_TRAINER_ID/... -> init_parallel_env (gloo)
assert env.launcher == "paddle", env
barrier = PD.barrier

def net(shifted):
    paddle.seed(0)             # no BatchNorm: DataParallel keeps BN statistics per rank
    n = nn.Sequential(nn.Conv2D(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(2),
                      nn.Flatten(), nn.Linear(24, 4))
    for p in n.parameters():
        p.set_value(p.numpy() + float(shifted))
    return n

def make_step(n, dist, tr):
    step = PaddleStep(n, lr=0.1, wd=1e-3, momentum=0.9, dtype="float64", amp=False,
                      mean=tr.mean, std=tr.std, dist=dist)
    assert (type(step.model).__name__ == "DataParallel") == (dist is not None)
    return step

# the parameters themselves, in float64 (state_dict exports float32)
weights = lambda s: {k: p.numpy() for k, p in s.net.named_parameters()}
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
    script.write_text(dist_equiv.script(PADDLE_PART))
    r = _launch([str(script), str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:] + _logs(tmp_path)
    # float64 parameters; measured 3.3e-16 (paddle's gloo all_reduce keeps float64)
    dist_equiv.check(tmp_path / "result.json")


def test_cli_under_paddle_launch_writes_one_run(tmp_path):
    from d2lkaggle.data.demo import make_demo
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
