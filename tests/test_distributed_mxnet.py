"""Data parallel with MXNet (issue 15): the ``dist_sync`` kvstore (ps-lite scheduler + server +
two workers started by ``python -m d2lkaggle.pslaunch``) gives one process's weights, the CLI
runs under it with one run folder written by rank 0, and the launcher's pieces."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from d2lkaggle import distributed as D
from d2lkaggle import pslaunch

HAS_MXNET = importlib.util.find_spec("mxnet") is not None
needs_mxnet = pytest.mark.skipif(not HAS_MXNET, reason="mxnet is not installed")

EQUIV = r'''
import json, os, sys
import numpy as np
from d2lkaggle import distributed as D, loop
from d2lkaggle.data import ArraySource, ImageLoader
from d2lkaggle.mxnet_impl.train import MXNetStep
from d2lkaggle.mxnet_impl import distributed as MD
import mxnet as mx
from mxnet import init
from mxnet.gluon import nn

out = sys.argv[1]
env = D.setup("mxnet")          # DMLC_ROLE=worker, DMLC_WORKER_ID -> the dist_sync kvstore
assert env.launcher == "mxnet" and env.world_size == 2, env
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (48, 8, 8, 3)).astype(np.uint8)
y = np.arange(48) % 4

def loaders(dist):
    tr = ImageLoader(ArraySource(x[:40]), y[:40], 8, shuffle=True, drop_last=True, seed=3,
                     mean=(0.5,) * 3, std=(0.25,) * 3, num_workers=1, dist=dist)
    va = ImageLoader(ArraySource(x[40:]), y[40:], 6, mean=tr.mean, std=tr.std, num_workers=1,
                     dist=dist)                 # 8 = 6 + 2: the ranks split a short batch
    return tr, va

def net(shift=0.0):
    mx.random.seed(0)                        # no BatchNorm: its statistics stay per worker
    n = nn.HybridSequential()
    n.add(nn.Conv2D(6, 3, padding=1, in_channels=3, activation="relu"), nn.AvgPool2D(4),
          nn.Flatten(), nn.Dense(4, in_units=24))
    n.initialize(init.Xavier(), ctx=mx.cpu())
    for p in n.collect_params().values():
        p.set_data(p.data() + shift)
    return n

def train(dist, shards=None, start=None):
    tr, va = loaders(shards or dist)
    step = MXNetStep(start or net(), lr=0.1, wd=1e-3, momentum=0.9, dtype="float64",
                     amp=False, mean=tr.mean, std=tr.std, dist=dist)
    h = loop.fit(step, tr, va, 3, lambda t: 0.1 * (1 - t / 4), progress=False, log=None,
                 checkpoint_dir=os.path.join(out, "ck" if dist else "ck1"))
    return step, h

# a different start on rank 1: the step must begin from rank 0's weights
step, h = train(env, start=net(1.0 if env.rank else 0.0))
assert step.sync is not None
if env.is_main:
    ref, h1 = train(None)                   # one process, the same global batches
    alone, _ = train(None, shards=env)       # rank 0's shards without the gradient average
    # the parameters themselves, in float64 (state_dict exports float32)
    weights = lambda s: {k: p.data().asnumpy() for k, p in s.params.items()}
    dist_to = lambda a, b: max(float(np.abs(a[k] - b[k]).max()) for k in b)
    w, w1 = weights(step), weights(ref)
    w0 = weights(MXNetStep(net(), dtype="float64"))
    json.dump({"diff": dist_to(w, w1), "unsynced": dist_to(weights(alone), w1),
               "moved": dist_to(w1, w0), "world": env.world_size,
               "dtype": str(next(iter(w.values())).dtype),
               "hist": [h.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "hist1": [h1.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "files": sorted(os.listdir(os.path.join(out, "ck")))},
              open(os.path.join(out, "result.json"), "w"))
MD.barrier()
'''


def _pslaunch(args, tmp_path, timeout=150):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", D2LKAGGLE_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "d2lkaggle.pslaunch", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, timeout=timeout, env=e,
                          cwd=str(tmp_path))


def test_node_environments_describe_one_job():
    kw = dict(num_workers=2, num_servers=1, host="127.0.0.1", port=9999, base={"DMLC_WORKER_ID": "7"})
    sched, server = pslaunch.node_env("scheduler", **kw), pslaunch.node_env("server", **kw)
    workers = [pslaunch.node_env("worker", worker_id=i, **kw) for i in range(2)]
    assert sched["DMLC_ROLE"] == "scheduler" and "DMLC_WORKER_ID" not in sched
    assert server["DMLC_ROLE"] == "server" and "DMLC_WORKER_ID" not in server
    for e in (sched, server, *workers):
        assert (e["DMLC_PS_ROOT_URI"], e["DMLC_PS_ROOT_PORT"], e["DMLC_NUM_WORKER"],
                e["DMLC_NUM_SERVER"]) == ("127.0.0.1", "9999", "2", "1")
    # the core reads each worker's rank from what the launcher set
    assert [D.detect(w) for w in workers] == [D.DistEnv(0, 2, 0, "mxnet"), D.DistEnv(1, 2, 1, "mxnet")]
    assert D.detect(server) == D.DistEnv()      # a server is no training rank
    with pytest.raises(ValueError, match="role"):
        pslaunch.node_env("boss", **kw)
    assert pslaunch.commands(["-x"], module=False)[1:] == ["-x"]
    assert D.launch_command("mxnet", 2, ["run", "demo"])[1:] == [
        "-m", "d2lkaggle.pslaunch", "--nproc_per_node=2", "-m", "d2lkaggle.cli", "run", "demo"]


@needs_mxnet
def test_a_failing_worker_stops_the_job(tmp_path):
    # worker 1 fails before any kvstore exists; worker 0 would wait forever (here: sleeps),
    # and the scheduler/server nodes too: the launcher stops them all and returns its code
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\nif os.environ['DMLC_WORKER_ID'] == '1':\n"
                      "    sys.exit(3)\ntime.sleep(600)\n")
    r = _pslaunch([str(script)], tmp_path, timeout=90)
    assert r.returncode == 3, r.stderr[-2000:]


@needs_mxnet
def test_kvstore_two_workers_match_one_process(tmp_path):
    script = tmp_path / "equiv.py"
    script.write_text(EQUIV)
    r = _pslaunch([str(script), str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["world"] == 2 and res["dtype"] == "float64"
    assert res["moved"] > 1e-3 and res["unsynced"] > 1e-3   # training moved the weights, and
    # one worker's shards alone lead elsewhere (the kvstore's gradient mean makes them agree)
    # ... the same way in 2 processes as in 1 (the dist kvstore carries float64 at float32
    # precision, measured: ~2e-8 here, not the bit-equality paddle's gloo gives)
    assert res["diff"] <= 1e-5, res
    print(f"max |w_2proc - w_1proc| = {res['diff']:.3g}")
    np.testing.assert_allclose(res["hist"], res["hist1"], rtol=1e-6, atol=1e-9)
    assert res["files"] == ["best.npz", "last.npz"]


@needs_mxnet
def test_cli_under_pslaunch_writes_one_run(tmp_path):
    from d2lkaggle.datasets import make_demo
    data = make_demo(str(tmp_path / "comp"), n_train=40, n_test=10, size=16, seed=1)
    out = tmp_path / "run"
    r = _pslaunch(["-m", "d2lkaggle.cli", "run", "demo", "--backend", "mxnet", "--data-dir", data,
                   "--out", str(out), "--epochs", "1", "--batch-size", "10", "--image-size", "16",
                   "--model", "cnn_elu", "--quiet", "--no-amp", "--valid-ratio", "0.25",
                   "--workers", "1"], tmp_path, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("submission.csv from") == 1      # one rank reports
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name not in ("comp", "data")]
    assert runs == [out]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["config"]["world_size"] == 2
    import pandas as pd
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert len(sub) == 10 and set(sub.columns) == {"id", "label"}
