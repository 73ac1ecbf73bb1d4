"""The parity runner's core parts (no framework): cases, the core Mixup/cyclic inputs, the
one-process-per-backend job lists."""
import json
import os

import numpy as np
import pytest

from d2lkaggle.models import parity
from d2lkaggle.data.mixing import batch_rng, mixup
from d2lkaggle.train.schedules import cyclic


def test_parity_case_checks_and_normalises():
    c = parity.parity_case("efficientnet_v2_s", 1)   # forward-only: no training tasks
    assert c["tasks"] == ["forward", "data"] and c["optimizers"] is None
    c = parity.parity_case("resnet18-tiny", 3, mixing=True)   # the optimizers' runs train only
    assert c["tasks"] == ["train", "train64"] and c["optimizers"] == ["sgd"] and c["mixing"]
    assert parity.parity_case("resnet18", 2, tasks=("forward",), optimizers=["adam"])["tasks"] == ["train64"]
    for kw, msg in ((dict(model="vgg"), "unknown model 'vgg'"), (dict(steps=0), "steps must be >= 1"),
                    (dict(tasks=("fwd",)), "unknown parity task 'fwd'"),
                    (dict(optimizers=["rmsprop"]), "unknown optimizer 'rmsprop'")):
        with pytest.raises(ValueError, match=msg):
            parity.parity_case(**kw)


def test_parity_inputs_are_the_cores_mixup_and_cyclic_schedule():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 4, 6, 6, 3), dtype=np.uint8)
    y = rng.integers(0, 5, (3, 4))
    xm, ym = parity.mix_batches(x, y, 5)
    for b in range(3):   # exactly what the loop's Mixup hands a Step for batch b
        ex, ey = mixup(parity.MIX_ALPHA, num_classes=5)(x[b], y[b], batch_rng(parity.MIX_SEED, 0, b))
        assert np.array_equal(xm[b], ex) and np.array_equal(ym[b], ey)
    lam, cut = mixup(parity.MIX_ALPHA).params(batch_rng(parity.MIX_SEED, 0, 0))
    assert not cut and 0 < lam < 1   # MixUp, and the partner of example i is example N-1-i
    xf = x[0].astype(np.float32)
    assert xm.dtype == np.float32 and np.allclose(xm[0], lam * xf + (1 - lam) * xf[::-1], atol=1e-4)
    sched = cyclic(0.005, 0.02, steps_per_epoch=10, step_size_up=2, mode="triangular2")
    assert parity.cyclic_lrs(0.01, 10) == [sched(b / 10) for b in range(10)]


def test_run_cases_spawns_one_process_per_backend(tmp_path, monkeypatch):
    # the job lists, not the frameworks: every case's tasks go to each backend's ONE process,
    # the inputs ("prepare", calibrated once per model) to the reference backend's only
    spawned = []
    monkeypatch.setattr(parity, "is_installed", lambda b: True)

    def fake_spawn(backend, jobs, workdir, timeout):
        spawned.append((backend, jobs))
        raise RuntimeError("stop here")
    monkeypatch.setattr(parity, "_spawn_jobs", fake_spawn)
    cases = {"a": dict(model="resnet18-tiny", steps=2, tasks=("forward", "train64")),
             "b": dict(model="efficientnet_v2_s", steps=1, tasks=("forward", "train"))}
    with pytest.raises(RuntimeError, match="stop here"):
        parity.run_cases(cases, backends=["torch", "mxnet"], workdir=str(tmp_path))
    (backend, jobs), = spawned
    assert backend == "torch"
    assert [(j["task"], j["model"], os.path.basename(j["dir"])) for j in jobs] == [
        ("prepare", "resnet18-tiny", "a"), ("prepare", "efficientnet_v2_s", "b"),
        ("forward", "resnet18-tiny", "a"), ("train64", "resnet18-tiny", "a"),
        ("forward", "efficientnet_v2_s", "b")]
    json.dumps(jobs)   # what the worker process reads
    monkeypatch.setattr(parity, "is_installed", lambda b: b == "torch")
    with pytest.raises(RuntimeError, match="two installed backends"):
        parity.run_cases(cases, workdir=str(tmp_path))


def test_table_header_says_what_ran():
    from d2lkaggle.models.parity import format_table
    row = {"pair": "torch vs mxnet", "forward_abs": 1e-6}
    fwd = {"model": "efficientnet_v2_m", "steps": 1, "rows": [row], "tasks": ["forward"]}
    assert "forward pass only" in format_table(fwd) and "SGD" not in format_table(fwd)
    trained = {**fwd, "model": "resnet18", "steps": 10, "tasks": ["forward", "train", "train64"]}
    assert "10 SGD steps" in format_table(trained)
