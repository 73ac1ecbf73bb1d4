"""A run does what it says: lines (not progress frames) off a terminal, kept in log.txt; a run
folder belongs to one run; checkpoints are reloaded only for the data they were made with; a
killed --overwrite leaves the old run whole; "not learning" only when it is true, and always
when it is."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from d2lkaggle.data.demo import make_demo
from d2lkaggle.utils.registry import is_installed

pytestmark = pytest.mark.skipif(not is_installed("torch"), reason="torch is not installed")


def start_cli(*args: str) -> subprocess.Popen:
    """``d2lkaggle ARGS`` in a background process, stdout and stderr to pipes (not a terminal)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "d2lkaggle.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file of a run folder and its bytes (not the lock's record of who holds it)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f == ".d2lkaggle-run.json":
                continue
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def test_writeup_run_redirected_is_lines_owns_its_folder_and_warns_of_nothing(tmp_path):
    data = make_demo(str(tmp_path / "data"), n_train=120, n_test=6, size=16, seed=4)
    out = str(tmp_path / "run")
    first = start_cli("run", "demo", "--data-dir", data, "--out", out, "--recipe",
                      "writeup-cifar10-mixup", "--epochs", "30", "--image-size", "16",
                      "--workers", "1")
    wait_for(os.path.join(out, ".d2lkaggle-run.json"), first)
    second = run_cli("run", "demo", "--data-dir", data, "--out", out, "--epochs", "1",
                     "--image-size", "16", "--seed", "7", "--recipe", "resnet18")
    stdout, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stdout[-2000:] + stderr[-3000:]
    # the second run into the same folder: one line naming the running one, nothing written
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"{out} is in use by another run (process {first.pid}" in second.stderr
    assert "writeup-cifar10-mixup" in second.stderr
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["seed"] == 0 and s["recipe"]["model"] == "cnn_elu" and s["predict_with"] == "best"
    # one line per epoch and one per phase, no progress frames anywhere
    assert "\r" not in stdout and "\r" not in stderr
    epochs = [l for l in stdout.splitlines() if l.startswith("train/valid epoch ")]
    assert [l.split()[2] for l in epochs] == [f"{e}/30" for e in range(1, 31)]
    assert all(" lr " in l and " ex/s " in l and " elapsed " in l and "valid acc" in l
               for l in epochs)
    assert len([l for l in stdout.splitlines() if l.startswith("train/valid: ")]) == 1
    log = open(os.path.join(out, "log.txt")).read().splitlines()
    # log.txt: the lines stdout had before the report, then how the run ended
    assert log[:-1] == stdout.splitlines()[:len(log) - 1] and log[-1].startswith("finished in ")
    assert epochs == [l for l in log if l in epochs]
    # the write-up's cyclic schedule starts slowly by design: no false alarm, now or at the end
    assert "not learning" not in stdout + stderr and "warning" not in stdout + stderr
    assert s["warnings"] == [] and s["best_valid_acc"] > 0.3


def test_checkpoints_belong_to_their_data_and_a_killed_overwrite_keeps_the_old_run(tmp_path):
    data = make_demo(str(tmp_path / "data"), n_train=40, n_test=4, size=16, seed=3)
    out = str(tmp_path / "run")
    base = ["run", "demo", "--data-dir", data, "--out", out, "--model", "cnn_elu",
            "--image-size", "16", "--batch-size", "16", "--no-retrain", "--workers", "1",
            "--lr", "1e-12", "--sched", "step"]   # (--lr 0 is refused: a rate must be > 0)
    r = run_cli(*base, "--epochs", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    # a run that cannot learn still says so: once after 3 epochs, and in the summary
    early = [l for l in r.stdout.splitlines() if l.startswith("warning: training is not learning")]
    assert len(early) == 1 and "after 3 epochs" in early[0], r.stdout
    s = json.load(open(os.path.join(out, "summary.json")))
    assert len(s["warnings"]) == 1 and "ended near chance after 3 epochs" in s["warnings"][0]
    assert "warning: train/valid split: training ended near chance" in r.stdout
    old = snapshot(out)
    assert json.load(open(os.path.join(out, "summary.json")))["data"]["data_labels"].startswith("40:")

    # a killed --overwrite: the new run was built beside the old one, which stays whole
    new = start_cli(*base, "--epochs", "300", "--overwrite")
    stage = os.path.join(str(tmp_path), f".run.overwrite-{new.pid}")
    wait_for(os.path.join(stage, "checkpoints", "valid", "last.npz"), new)
    new.send_signal(signal.SIGKILL)
    new.wait()
    assert snapshot(out) == old

    # the labels changed: --resume refuses the checkpoint (and takes over the dead run's lock)
    labels = os.path.join(data, "trainLabels.csv")
    rows = open(labels).read().splitlines()
    rows[1], rows[2] = rows[1].split(",")[0] + "," + rows[2].split(",")[1], \
        rows[2].split(",")[0] + "," + rows[1].split(",")[1]
    open(labels, "w").write("\n".join(rows) + "\n")
    r = run_cli(*base, "--epochs", "3", "--resume")
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "was trained on other data (the labels changed since): data_labels: " in err[0]
    assert "--resume force" in err[0]
    assert f"was locked by process {new.pid}" in r.stdout and "no longer running" in r.stdout
    assert {k: v for k, v in snapshot(out).items() if k != "log.txt"} == \
        {k: v for k, v in old.items() if k != "log.txt"}   # (log.txt: the refusal's lines)
    # the killed --overwrite's unfinished run was removed, and that start said so
    assert "unfinished run of an interrupted --overwrite" in r.stdout
    assert not os.path.exists(stage)

    # --resume force continues it anyway: said once (stderr and log.txt, not stdout too), kept
    # in summary.json's warnings, and summary.json's data is what the model was trained on
    trained_on = s["data"]
    r = run_cli(*base, "--epochs", "3", "--resume", "force")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("WARNING: --resume force") == 1 and "WARNING" not in r.stdout
    # (the report's recap of summary.json's warnings at the end lists it, like every warning)
    assert [l for l in r.stdout.splitlines() if "--resume force" in l][0].startswith(
        "warning: --resume force: continuing") and r.stdout.count("--resume force") == 1
    s = json.load(open(os.path.join(out, "summary.json")))
    assert [w for w in s["warnings"] if w.startswith("--resume force: continuing")]
    assert open(os.path.join(out, "log.txt")).read().count("WARNING: --resume force") == 1
    assert s["data"]["data_labels"] == trained_on["data_labels"]
    assert s["data"]["this_run"]["data_labels"] != trained_on["data_labels"]
    assert "--resume force" in s["data"]["note"]
