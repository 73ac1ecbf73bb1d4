"""Both chapters end to end through the CLI, one backend per subprocess."""
import csv
import json
import os
import shutil

import numpy as np

import pytest

from conftest import backend_params, run_cli, run_py
from d2lkaggle.compete.voting import log_loss

FAST = ["--epochs", "2", "--batch-size", "32", "--quiet", "--workers", "2"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="session")
def tiny_resnet34(tmp_path_factory):
    """A random ResNet-34 checkpoint in torchvision's names, as .safetensors (and .pth with torch)."""
    folder = tmp_path_factory.mktemp("weights")
    code = ("import sys, numpy as np, torch, torchvision; from d2lkaggle.models import weights as w;"
            "torch.manual_seed(0); m = torchvision.models.resnet34();"
            "torch.save(m.state_dict(), sys.argv[1] + '/r34.pth');"
            "w.convert(sys.argv[1] + '/r34.pth', sys.argv[1] + '/r34.safetensors')")
    r = run_py(code, str(folder))
    if r.returncode != 0:
        pytest.skip(f"torch is needed to create the test checkpoint: {r.stderr[-300:]}")
    return str(folder)


@pytest.mark.parametrize("backend", backend_params())
def test_cifar10_layout_run(backend, demo_dir, tmp_path):
    out = tmp_path / "run"
    # (--predict-with retrain: both phases of the chapter; the default predicts with the
    # validated model)
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                *FAST, "--lr", "0.05", "--predict-with", "retrain")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = read_rows(out / "submission.csv")
    sample = read_rows(os.path.join(demo_dir, "sampleSubmission.csv"))
    assert rows[0] == ["id", "label"] and [r[0] for r in rows] == [r[0] for r in sample]
    labels = {r[1] for r in read_rows(os.path.join(demo_dir, "trainLabels.csv"))[1:]}
    assert all(r[1] in labels for r in rows[1:])
    hist = read_rows(out / "history.csv")
    assert hist[0][:3] == ["phase", "epoch", "lr"] and len(hist) == 1 + 2 + 2
    assert {h[0] for h in hist[1:]} == {"valid", "train_valid"}
    s = json.load(open(out / "summary.json"))
    assert s["backend"] == backend and 0 <= s["valid_acc"] <= 1 and s["examples_per_sec"] > 0
    assert os.path.getsize(out / "curves.png") > 1000
    assert os.path.exists(out / "checkpoints" / "valid" / "last.npz")
    assert os.path.exists(out / "checkpoints" / "final" / "last.npz")
    # pictures of the validation set, and a last line that answers the obvious questions
    from PIL import Image
    for name in ("confusion.png", "mistakes.png"):
        with Image.open(out / name) as im:
            assert min(im.size) > 300, (name, im.size)
        assert s["files"][name[:-4]] == str(out / name)
    assert s["predict_with"] == "retrain" and s["best_epoch"] in (1, 2)
    lines = r.stdout.strip().splitlines()
    # what is loaded first (before the decoding), then what loading found
    assert lines[0].startswith(f"loading demo from {demo_dir}: 200 labelled images")
    assert "180 train (160 per epoch after drop_last) / 20 valid / 30 test images" in lines[1]
    assert lines[-1].startswith(f"demo · {backend} · valid acc best ")
    assert f"submission.csv from the model retrained on train+valid (2 epochs) · files in {out}" in lines[-1]
    assert "No ccache found" not in r.stderr and "UserWarning" not in r.stderr


@pytest.mark.parametrize("backend", backend_params())
def test_dog_layout_run_with_checkpoint(backend, dog_dir, tiny_resnet34, tmp_path):
    out = tmp_path / "run"
    weights = os.path.join(tiny_resnet34, "r34.pth" if backend == "torch" else "r34.safetensors")
    r = run_cli("run", "dog-breed", "--data-dir", dog_dir, "--backend", backend, "--out", str(out),
                "--image-size", "32", "--weights", weights, "--no-retrain", *FAST, "--batch-size", "8")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = read_rows(out / "submission.csv")
    sample = read_rows(os.path.join(dog_dir, "sample_submission.csv"))
    assert rows[0] == sample[0]
    assert [r[0] for r in rows[1:]] == [r[0] for r in sample[1:]]
    for row in rows[1:]:
        p = list(map(float, row[1:]))
        assert all(0 <= v <= 1 for v in p) and abs(sum(p) - 1) < 1e-6
    s = json.load(open(out / "summary.json"))
    assert s["recipe"]["model"] == "finetune" and s["valid_loss"] > 0
    # the Dog default: cached backbone features, TTA flip, calibrated probabilities
    assert s["cache_features"] and s["tta"] == "flip" and "computed once" in r.stdout
    assert (s["config"]["tta"], s["config"]["calibrate"]) == ("flip", s["calibration"]["method"])
    cal = s["calibration"]
    assert cal["log_loss_after"] <= cal["log_loss_before"]
    # a temperature is fitted; it is applied unless it cannot be trusted (at the edge of its
    # range on so few images, or no better cross-fitted), which the run then says
    assert cal["method"] == "temperature" or (cal["fitted"] is not None and cal["note"])
    assert [w for w in s["warnings"] if w.startswith("calibration: ")] == \
        [f"calibration: {w}" for w in cal["warnings"]]
    classes = json.load(open(out / "classes.json"))
    y = [classes.index(c) for c in json.load(open(out / "valid_ids.json"))["labels"]]
    # valid_probs.npy holds the calibrated probabilities, as submission.csv does
    assert log_loss(np.load(out / "valid_probs.npy"), y) == pytest.approx(cal["log_loss_after"],
                                                                         abs=1e-5)


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_predict_with_best_skips_the_retrain(backend, demo_dir, tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                *FAST, "--predict-with", "best")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    assert s["predict_with"] == "best" and "best epoch" in s["submission_model"]
    assert not os.path.exists(out / "checkpoints" / "final")
    assert {h[0] for h in read_rows(out / "history.csv")[1:]} == {"valid"}
    assert "submission.csv from the validation phase's best epoch" in r.stdout.strip().splitlines()[-1]


def test_run_bad_data_dir_is_a_clear_error(tmp_path):
    r = run_cli("run", "demo", "--data-dir", str(tmp_path / "nope"), "--epochs", "1")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_run_unknown_backend_lists_choices(demo_dir, tmp_path):
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", "jax", "--out", str(tmp_path))
    assert r.returncode == 2 and "torch" in r.stderr and "paddle" in r.stderr


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_resume_whole_run(backend, demo_dir, tmp_path):
    out = tmp_path / "run"
    args = ["run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out), *FAST,
            "--calibrate", "temperature", "--predict-with", "retrain"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    first = open(out / "submission.csv").read()
    cal = json.load(open(out / "summary.json"))["calibration"]
    assert cal["method"] == "temperature" and cal["num_valid"] == 20
    config = json.load(open(out / "summary.json"))["config"]
    assert (config["tta"], config["calibrate"]) == ("none", "temperature")   # what ran
    assert cal["log_loss_after"] <= cal["log_loss_before"]
    assert json.load(open(out / "calibration.json"))["temperature"] == cal["temperature"]
    assert f"calibrated with temperature {cal['temperature']:.3f}" in r.stdout
    test_probs = np.load(out / "test_probs.npy")
    # interrupted during the retrain on all labels: its checkpoints and the summary are gone
    shutil.rmtree(out / "checkpoints" / "final")
    os.unlink(out / "summary.json")
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nothing to train" in r.stdout   # the validation phase, restored
    assert open(out / "submission.csv").read() == first
    # the retrained model's test probabilities take the validation phase's temperature again
    assert json.load(open(out / "summary.json"))["calibration"] == cal
    np.testing.assert_allclose(np.load(out / "test_probs.npy"), test_probs, atol=1e-5)
