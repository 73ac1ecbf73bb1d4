"""Data parallel (issue 15): the core's env/sharding, the loop's all-reduce, torch DDP under
torchrun giving one process's weights, and the torch backend's GPU-path choices."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, NumpyStep, tiny_loaders
from d2lkaggle.parallel import distributed as D
from d2lkaggle.data.loader import ArraySource, ImageLoader

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


# ---- core: environment, shards, loader -----------------------------------------------------

def test_detect_reads_each_launcher():
    assert D.detect({}) == D.DistEnv()
    assert not D.detect({}).enabled and D.detect({}).is_main
    t = D.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert t == D.DistEnv(3, 4, 1, "torchrun") and t.enabled and not t.is_main
    p = D.detect({"PADDLE_TRAINER_ID": "1", "PADDLE_TRAINERS_NUM": "2", "PADDLE_LOCAL_RANK": "1"})
    assert p == D.DistEnv(1, 2, 1, "paddle")
    m = D.detect({"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "2"})
    assert (m.world_size, m.launcher, m.rank) == (2, "mxnet", 0)
    assert D.detect({"DMLC_ROLE": "server", "DMLC_NUM_WORKER": "2"}) == D.DistEnv()


@pytest.mark.parametrize("environ, words", [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 of world size 2"),
])
def test_detect_rejects_a_broken_environment(environ, words):
    with pytest.raises(ValueError, match=words):
        D.detect(environ)


@pytest.mark.parametrize("n, world", [(8, 2), (12, 3), (5, 2), (1, 4), (0, 2)])
def test_shards_are_disjoint_and_cover_the_batch(n, world):
    idx = np.random.default_rng(0).permutation(100)[:n]
    parts = [D.shard_batch(idx, D.DistEnv(r, world)) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), idx)       # in order, nothing twice or lost
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    if n % world == 0:
        assert {len(p) for p in parts} == {n // world}
    assert np.array_equal(D.shard_batch(idx, D.DistEnv()), idx)


def test_batch_size_must_divide_over_the_ranks():
    assert D.check_batch_size(32, D.DistEnv(0, 4)) == 8
    assert D.check_batch_size(30, D.DistEnv()) == 30
    with pytest.raises(ValueError, match=r"--batch-size 30 .* 4 processes; choose a multiple of 4 "
                                         r"such as 28 or 32"):
        D.check_batch_size(30, D.DistEnv(1, 4))
    x = np.zeros((40, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="--batch-size 6"):
        ImageLoader(ArraySource(x), np.zeros(40), 6, dist=D.DistEnv(0, 4))


def _loader(dist=None, shuffle=True, n=40, bs=8, transform=None):
    x = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return ImageLoader(ArraySource(x), np.arange(n), bs, shuffle=shuffle, drop_last=shuffle,
                       seed=5, num_workers=1, dist=dist, transform=transform)


@pytest.mark.parametrize("world", [2, 4])
def test_loader_ranks_split_every_global_batch(world):
    whole = [y for _, y in _loader()]
    ranks = [[y for _, y in _loader(D.DistEnv(r, world))] for r in range(world)]
    assert all(len(r) == len(whole) for r in ranks)            # the same number of steps
    for b, batch in enumerate(whole):
        parts = [r[b] for r in ranks]
        assert np.array_equal(np.concatenate(parts), batch)    # disjoint, together the batch
        assert {len(p) for p in parts} == {len(batch) // world}
    # across the epoch: each example exactly once over all ranks
    seen = np.concatenate([np.concatenate(r) for r in ranks])
    assert sorted(seen) == sorted(np.concatenate(whole))
    assert len(set(seen.tolist())) == len(seen)
    # the pixels travel with their labels
    x, y = next(iter(_loader(D.DistEnv(1, world))))
    assert np.array_equal(x[:, 0, 0, 0], y)


def test_augmentation_stream_differs_per_rank_and_the_tail_batch_is_split():
    noise = lambda im, rng: (im + rng.integers(0, 200, im.shape)).astype(np.uint8)  # noqa: E731
    a = next(iter(_loader(D.DistEnv(0, 2), shuffle=False, transform=noise)))[0]
    b = next(iter(_loader(D.DistEnv(1, 2), shuffle=False, transform=noise)))[0]
    one = next(iter(_loader(None, shuffle=False, transform=noise)))[0]
    assert not np.array_equal(a, one[:4]) or not np.array_equal(b, one[4:])
    # evaluation: 9 images in batches of 8 over 2 ranks -> the last batch is 1 + 0
    ys = [[y for _, y in _loader(D.DistEnv(r, 2), shuffle=False, n=9)] for r in range(2)]
    assert [len(y) for y in ys[0]] == [4, 1] and [len(y) for y in ys[1]] == [4, 0]
    assert D.unsharded(_loader(D.DistEnv(1, 2))).dist is None


class FakeRanks(NumpyStep):
    """A NumpyStep that believes it is rank 0 of 2 whose twin saw the same numbers."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.dist, self.reduced, self.waits = D.DistEnv(0, 2), 0, 0

    def all_reduce_sum(self, values):
        self.reduced += 1
        return 2 * np.asarray(values, dtype=np.float64)

    def barrier(self):
        self.waits += 1


def test_fit_reduces_metrics_through_the_step(tmp_path):
    from d2lkaggle.train import loop
    tr, va = tiny_loaders(n=32, size=4, bs=8)
    step = FakeRanks(4 * 4 * 3, 4)
    hist = loop.fit(step, tr, va, 2, lambda t: 0.05, progress=False, log=None,
                    checkpoint_dir=str(tmp_path / "ck"))
    assert step.reduced == 4 and step.waits == 1        # train+valid per epoch, one final wait
    ref = NumpyStep(4 * 4 * 3, 4)
    ref_hist = loop.fit(ref, tr, va, 2, lambda t: 0.05, progress=False, log=None)
    # doubled sums over doubled counts: the same means; examples/s counts both ranks
    for k in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
        assert hist.column(k) == pytest.approx(ref_hist.column(k), rel=1e-12)
    assert os.path.exists(tmp_path / "ck" / "last.npz")   # rank 0 writes


def test_other_ranks_write_no_checkpoint(tmp_path):
    from d2lkaggle.train import loop
    tr, va = tiny_loaders(n=32, size=4, bs=8)
    step = FakeRanks(4 * 4 * 3, 4)
    step.dist = D.DistEnv(1, 2)
    lines = []
    loop.fit(step, tr, va, 1, lambda t: 0.05, progress=False, log=lines.append,
             checkpoint_dir=str(tmp_path / "ck"), plot=str(tmp_path / "c.png"))
    assert os.listdir(tmp_path) == [] and lines == []      # rank 1 neither writes nor prints


def test_run_refuses_an_indivisible_batch_before_writing(tmp_path, monkeypatch):
    from d2lkaggle.compete.run import run_competition
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="--batch-size 30 .* 4 processes"):
        run_competition("demo", str(tmp_path / "nodata"), out=str(tmp_path / "run"),
                        batch_size=30)
    assert not os.path.exists(tmp_path / "run")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="no launcher started this process"):
        run_competition("demo", str(tmp_path / "nodata"), distributed=True,
                        out=str(tmp_path / "run2"))
    assert not os.path.exists(tmp_path / "run2")
    monkeypatch.setenv("RANK", "0")            # torchrun --nproc_per_node 1: a launcher, fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(FileNotFoundError, match="nodata"):
        run_competition("demo", str(tmp_path / "nodata"), distributed=True,
                        out=str(tmp_path / "run3"))


# ---- torch: DDP under torchrun gives the one-process weights -------------------------------

EQUIV = r'''
import json, os, sys
import numpy as np, torch
from torch import nn
from d2lkaggle.parallel import distributed as D
from d2lkaggle.train import loop
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.torch_impl.train import TorchStep
from d2lkaggle.torch_impl import distributed as TD

out = sys.argv[1]
env = D.setup("torch")                      # torchrun's RANK/WORLD_SIZE -> gloo process group
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
    torch.manual_seed(0)                     # no BatchNorm: DDP keeps BN statistics per rank
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(24, 4))

def train(dist, shards=None):
    tr, va = loaders(shards or dist)
    step = TorchStep(net(), lr=0.1, wd=1e-3, momentum=0.9, dtype="float64", amp=False,
                     mean=tr.mean, std=tr.std, dist=dist)
    h = loop.fit(step, tr, va, 3, lambda t: 0.1 * (1 - t / 4), progress=False, log=None,
                 checkpoint_dir=os.path.join(out, "ck" if dist else "ck1"))
    return step, h

step, h = train(env)
assert type(step.model).__name__ == "DistributedDataParallel", type(step.model)
if env.is_main:
    ref, h1 = train(None)                   # one process, the same global batches
    alone, _ = train(None, shards=env)       # rank 0's shards without DDP's gradient average
    weights = lambda s: {k: v for k, v in s.state_dict().items() if k.startswith("model/")}
    dist_to = lambda a, b: max(float(np.abs(a[k] - b[k]).max()) for k in b)
    w, w1 = weights(step), weights(ref)
    json.dump({"diff": dist_to(w, w1), "unsynced": dist_to(weights(alone), w1),
               "moved": max(float(np.abs(w1["model/" + k] - p.detach().numpy()).max())
                            for k, p in net().state_dict().items()),
               "world": env.world_size,
               "dtype": str(next(step.net.parameters()).dtype),
               "hist": [h.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "hist1": [h1.column(c) for c in ("train_loss", "train_acc", "valid_loss", "valid_acc")],
               "files": sorted(os.listdir(os.path.join(out, "ck")))},
              open(os.path.join(out, "result.json"), "w"))
TD.barrier()
'''


def _torchrun(args, tmp_path, timeout=120, **env):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", D2LKAGGLE_DATA=str(tmp_path / "data"),
             TORCH_HOME=str(tmp_path / "torch"), **env)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=str(tmp_path))


@needs_torch
def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / "equiv.py"
    script.write_text(EQUIV)
    r = _torchrun([str(script), str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["world"] == 2 and res["dtype"] == "torch.float64"
    assert res["moved"] > 1e-3 and res["unsynced"] > 1e-3   # training moved the weights, and
    # one rank's shards alone lead elsewhere (DDP's gradient average is what makes them agree)
    assert res["diff"] <= 1e-5, res                 # ... the same way in 2 processes as in 1
    print(f"max |w_2proc - w_1proc| = {res['diff']:.3g}")
    # every rank's metrics are the global ones: the one-process history
    # (evaluation logits are float32 in TorchStep, so summation order shows at ~1e-8)
    np.testing.assert_allclose(res["hist"], res["hist1"], rtol=1e-6, atol=1e-9)
    assert res["files"] == ["best.npz", "last.npz"]


def _cli(args, tmp_path, timeout=180):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", D2LKAGGLE_DATA=str(tmp_path / "data"),
             TORCH_HOME=str(tmp_path / "torch"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):   # outside any launcher
        e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "d2lkaggle.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=str(tmp_path))


@needs_torch
def test_cli_distributed_starts_torchrun_and_writes_one_run(tmp_path):
    # `d2lkaggle run ... --distributed` outside a launcher runs
    # `torchrun --standalone --nproc_per_node=2 -m d2lkaggle.cli run ... --distributed`
    from d2lkaggle.data.demo import make_demo
    data = make_demo(str(tmp_path / "comp"), n_train=40, n_test=10, size=16, seed=1)
    out = tmp_path / "run"
    r = _cli(["run", "demo", "--data-dir", data, "--out", str(out), "--distributed",
              "--nproc-per-node", "2", "--epochs", "1", "--batch-size", "10", "--image-size",
              "16", "--model", "cnn_elu", "--quiet", "--no-amp", "--valid-ratio", "0.25",
              "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m d2lkaggle.cli" in r.stdout
    assert r.stdout.count("submission.csv from") == 1      # one rank reports
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name not in ("comp", "data")]
    assert runs == [out]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["config"]["world_size"] == 2
    import pandas as pd
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert len(sub) == 10 and set(sub.columns) == {"id", "label"}


@needs_torch
def test_cli_distributed_indivisible_batch_is_one_line(tmp_path):
    r = _cli(["run", "demo", "--data-dir", str(tmp_path), "--distributed", "--nproc-per-node",
              "4", "--batch-size", "30"], tmp_path, timeout=60)
    assert r.returncode == 2 and "starting" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--batch-size 30 (the global batch) does not divide over 4 " \
        "processes; choose a multiple of 4 such as 28 or 32" in lines[0], r.stderr


# ---- torch: what a GPU would run, checked without one --------------------------------------

@needs_torch
def test_gpu_path_choices():
    r = subprocess.run([sys.executable, "-c", GPU_CHOICES], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


GPU_CHOICES = r'''
import torch
from torch import nn
from d2lkaggle.parallel.distributed import DistEnv
from importlib import import_module
T = import_module("d2lkaggle.torch_impl.train")   # (the package's ``train`` is the function)
TD2 = import_module("d2lkaggle.torch_impl.data")
TD = import_module("d2lkaggle.torch_impl.distributed")
bf16, fp16 = torch.bfloat16, torch.float16
a = T.autocast_dtype
# CUDA: bf16 where the GPU has it (Ampere+), fp16 (scaled) before; never for float64 or amp off
assert a("cuda", "auto", cuda_bf16=True) is bf16 and a("cuda", "auto", cuda_bf16=False) is fp16
assert a("cuda", True, cuda_bf16=False) is fp16 and a("cuda", False, cuda_bf16=True) is None
assert a("cuda", "auto", cuda_bf16=True, float_dtype="float64") is None
assert T.needs_grad_scaler(fp16) and not T.needs_grad_scaler(bf16) and not T.needs_grad_scaler(None)
# CPU: bf16 only where native unless forced
assert a("cpu", "auto", cpu_bf16=True) is bf16 and a("cpu", "auto", cpu_bf16=False) is None
assert a("cpu", True, cpu_bf16=False) is bf16 and a("cpu", False, cpu_bf16=True) is None
# copies: pinned + asynchronous to a GPU, plain on the CPU
assert TD2.copy_settings("cuda") == (True, True) and TD2.copy_settings("cpu") == (False, False)
# several devices: DDP under a launcher, never nn.DataParallel
assert T.parallel_mode(1, 2) == "ddp" and T.parallel_mode(4, 1) == "first"
assert T.parallel_mode(1, 1) == "single"
assert TD.process_group_backend("cuda") == "nccl" and TD.process_group_backend("cpu") == "gloo"
assert str(TD.rank_device(DistEnv(1, 2, 1), cuda_count=2)) == "cuda:1"
assert str(TD.rank_device(DistEnv(1, 2, 1), cuda_count=0)) == "cpu"
try:
    TD.rank_device(DistEnv(2, 3, 2), cuda_count=2); raise SystemExit("no error")
except ValueError as e:
    assert "--nproc_per_node 2" in str(e)
# the step uses these choices: this CPU's flag decides, a list of devices is not DataParallel
import warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    s = T.TorchStep(nn.Linear(3, 2), devices=[torch.device("cpu"), torch.device("cpu")])
assert not isinstance(s.model, nn.DataParallel) and s.devices == [torch.device("cpu")]
assert any("torchrun --nproc_per_node 2" in str(x.message) for x in w)
assert s.amp_dtype == (bf16 if T.SUPPORTS_BF16 else None) and s.scaler is None
assert T.TorchStep(nn.Linear(3, 2), amp=False).amp_dtype is None
assert "DataParallel(" not in open(T.__file__).read().replace("DistributedDataParallel(", "")
# the fp16 path (a pre-Ampere GPU) through this CPU's fp16 autocast: the scaled loss is
# unscaled before the update, so one step moves the weights as float32 does (not 1024x more)
import numpy as np
def one_step(fp16):
    torch.manual_seed(0)
    st = T.TorchStep(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), lr=0.1, amp=False)
    if fp16:
        st.amp_dtype, st.amp = fp16, True
        st.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    w0 = st.net[1].weight.detach().clone()
    x = np.random.default_rng(0).integers(0, 255, (4, 2, 2, 3)).astype(np.uint8)
    st.train_batch(x, np.array([0, 1, 2, 0]))
    return st.net[1].weight.detach() - w0
d32, d16 = one_step(None), one_step(fp16)
assert d32.abs().max() > 1e-3 and (d16 - d32).abs().max() < 1e-2 * d32.abs().max(), (d16, d32)
print("ok")
'''
