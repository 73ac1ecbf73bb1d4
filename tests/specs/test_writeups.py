"""The write-ups as recipes: their values, schedules and mixing as data; the example scripts run."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, backend_params, run_cli, run_py
from d2lkaggle.data.mixing import Mixup
from d2lkaggle.specs.writeups import WRITEUPS, format_writeups, get_writeup


def test_004_values():
    w = get_writeup("writeup-cifar10-mixup")
    assert (w.model, w.optimizer, w.lr, w.wd, w.batch_size) == ("cnn_elu", "adam", 2e-3, 1e-3, 32)
    assert (w.sched, w.cycle_mode, w.augment, w.keep, w.image_size) == (
        "cyclic", "triangular2", "crop-flip", "best", 32)
    m = w.mixing()
    assert isinstance(m, Mixup) and (m.mixup_alpha, m.cutmix_alpha, m.prob) == (0.4, 0.0, 1.0)


def test_004_cyclic_triangular2_between_half_and_twice_lr():
    w = get_writeup("writeup-cifar10-mixup").with_overrides(epochs=20)
    spe = 50
    s = w.schedule(spe)
    up = w.step_size(spe)                    # ten full triangles over 20 epochs: 1 epoch up
    assert up == 50
    at = lambda it: s(it / spe)  # noqa: E731
    assert at(0) == pytest.approx(1e-3)                   # base = lr / 2
    assert at(up) == pytest.approx(4e-3)                  # peak = 2 · lr
    assert at(2 * up) == pytest.approx(1e-3)
    assert at(3 * up) == pytest.approx(1e-3 + 3e-3 / 2)   # triangular2: the amplitude halves
    assert at(5 * up) == pytest.approx(1e-3 + 3e-3 / 4)
    rates = [at(i) for i in range(20 * spe)]
    assert min(rates) >= 1e-3 - 1e-12 and max(rates) <= 4e-3 + 1e-12


def test_003_values_and_schedule():
    w = get_writeup("writeup-cifar100-effnetv2")
    assert (w.model, w.optimizer, w.lr, w.wd, w.batch_size, w.epochs) == (
        "efficientnet_v2_s", "adamw", 4e-4, 1e-3, 128, 25)
    assert (w.augment, w.image_size, w.interpolation, w.weights, w.normalize) == (
        "crop-flip-rotate", 224, "bilinear", "imagenet", "imagenet")
    s = w.schedule(391)
    assert s(0) == pytest.approx(4e-4) and s(9.99) == pytest.approx(4e-4)
    assert s(10) == pytest.approx(4e-4 * 0.9) and s(24.5) == pytest.approx(4e-4 * 0.81)
    m = w.mixing()
    assert (m.mixup_alpha, m.cutmix_alpha, m.prob) == (0.0, 1.0, 0.5)
    # CutMix on about half the batches, never MixUp: pixels stay whole images' pixels
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = np.arange(8) % 4
    mixed = [not np.array_equal(m(x, y, np.random.default_rng(b), 4)[0], x) for b in range(200)]
    assert 0.4 < np.mean(mixed) < 0.6
    assert w.model_kwargs() == {"weights": "imagenet", "stochastic_depth": 0.2}


def test_overrides_and_errors():
    w = get_writeup("writeup-cifar10-mixup").with_overrides(lr=1e-3, epochs=None)
    assert w.lr == 1e-3 and w.epochs == 200 and w.schedule(10)(0) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="unknown recipe setting"):
        w.with_overrides(learning_rate=1)
    with pytest.raises(ValueError, match="choose from writeup-cifar10-mixup, writeup-cifar100-effnetv2"):
        get_writeup("writeup-nope")


def test_recipes_command_lists_every_value():
    r = run_cli("recipes")
    assert r.returncode == 0, r.stderr
    for name, w in WRITEUPS.items():
        assert name in r.stdout
    assert "triangular2" in r.stdout and "efficientnet_v2_s" in r.stdout and "0.0004" in r.stdout
    text = format_writeups(["writeup-cifar100-effnetv2"])
    assert "lr_period         10" in text and "cycle_mode" not in text
    r = run_cli("recipes", "nope")
    assert r.returncode != 0 and "unknown recipe 'nope'" in r.stderr


def run_example(name, tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, D2LKAGGLE_DATA=str(tmp_path / "cache"),
               TORCH_HOME=str(tmp_path / "torch"))
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_writeup_cifar10_example_runs_on_an_archive(backend, tmp_path):
    from cifar_archives import CIFAR10_NAMES, write_cifar10
    write_cifar10(str(tmp_path), n_train=120, n_test=20)
    r = run_example("writeup_cifar10_mixup.py", tmp_path, "--backend", backend, "--data-dir",
                    str(tmp_path), "--epochs", "2", "--batch-size", "16")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "test accuracy" in r.stdout and "# training examples: 120" in r.stdout
    run = tmp_path / "runs" / "writeup-cifar10-mixup"
    rows = list(csv.reader(open(run / "submission.csv")))
    assert rows[0] == ["id", "label"] and [x[0] for x in rows[1:]] == [str(i) for i in range(1, 21)]
    assert {x[1] for x in rows[1:]} <= set(CIFAR10_NAMES)
    assert (run / "checkpoints" / "best.npz").exists()


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_writeup_cifar100_example_runs_offline_from_scratch(backend, tmp_path):
    r = run_example("writeup_cifar100_effnetv2.py", tmp_path, "--backend", backend, "--demo",
                    "--n-train", "40", "--n-test", "8", "--epochs", "1", "--batch-size", "8",
                    "--image-size", "32", "--weights", "none")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = list(csv.reader(open(tmp_path / "runs" / "writeup-cifar100-effnetv2" / "submission.csv")))
    assert len(rows) == 9 and "test accuracy" in r.stdout and "# classes: 20" in r.stdout


def test_writeup_cifar100_example_offline_imagenet_weights_is_one_clear_error(tmp_path):
    pytest.importorskip("torch")
    r = run_example("writeup_cifar100_effnetv2.py", tmp_path, "--demo", "--n-train", "20",
                    "--n-test", "4", "--epochs", "1", "--image-size", "32")
    assert r.returncode != 0
    assert "efficientnet_v2_s" in r.stderr.lower() or "weights" in r.stderr.lower()


def test_named_recipes_are_recipes_and_flags_override_them():
    from conftest import tiny_loaders
    from d2lkaggle.specs.competitions import RECIPE_NAMES, get_competition, recipe_for
    from d2lkaggle.compete.run import tricks_for
    assert {"writeup-cifar10-mixup", "writeup-cifar100-effnetv2"} <= set(RECIPE_NAMES)
    r = recipe_for(get_competition("demo"), "writeup-cifar10-mixup")
    assert (r.model, r.optimizer, r.sched, r.cycle_mode, r.mixup, r.augment, r.keep) == (
        "cnn_elu", "adam", "cyclic", "triangular2", 0.4, "crop-flip", "best")
    # --lr next to --recipe moves the cyclic band with it (lr/2 .. 2·lr)
    r = r.with_overrides(lr=1e-3, epochs=4)
    tr, _ = tiny_loaders(n=64, bs=16)               # 4 batches per epoch
    kw, summary = tricks_for(r, tr, 4)
    s = summary["schedule"]
    assert (s["base_lr"], s["max_lr"], s["mode"]) == (5e-4, 2e-3, "triangular2")
    assert s["step_size_up"] == round(4 * 4 / (2 * 10)) == 1
    assert kw["optimizer"] == "adam" and kw["mixing"].mixup_alpha == 0.4
    r = recipe_for(get_competition("cifar100"), "writeup-cifar100-effnetv2")
    assert (r.model, r.optimizer, r.lr, r.wd, r.sched, r.lr_period, r.lr_decay) == (
        "efficientnet_v2_s", "adamw", 4e-4, 1e-3, "step", 10, 0.9)
    assert (r.cutmix, r.mix_prob, r.mixup, r.augment, r.image_size, r.weights, r.keep) == (
        1.0, 0.5, 0.0, "crop-flip-rotate", 224, "imagenet", "last")
    assert r.normalize == "imagenet"
    kw, summary = tricks_for(r, tr, 100)
    assert summary["mixing"]["cutmix_alpha"] == 1.0 and kw["optimizer"] == "adamw"


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_run_with_the_004_recipe_keeps_the_best_epoch(backend, demo_dir, tmp_path):
    import json
    out = tmp_path / "run"
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                "--recipe", "writeup-cifar10-mixup", "--epochs", "3", "--batch-size", "16",
                "--lr", "0.004", "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    assert s["recipe"]["model"] == "cnn_elu" and s["recipe"]["lr"] == 0.004   # the flag wins
    assert s["tricks"]["schedule"]["mode"] == "triangular2"
    assert s["tricks"]["mixing"]["mixup_alpha"] == 0.4
    # keep=best: no retrain; the submission comes from the best-validation epoch
    assert (out / "checkpoints" / "valid" / "best.npz").exists()
    assert not (out / "checkpoints" / "final").exists()
    hist = list(csv.reader(open(out / "history.csv")))
    assert {h[0] for h in hist[1:]} == {"valid"}
    rows = list(csv.reader(open(out / "submission.csv")))
    assert len(rows) == 31
    # the submitted labels are the best checkpoint's predictions
    code = (
        "import sys, numpy as np, d2lkaggle; from d2lkaggle.specs.competitions import get_competition;"
        "from d2lkaggle.compete.run import load_data; from d2lkaggle.specs.writeups import restore_checkpoint;"
        "bk = d2lkaggle.get_backend(sys.argv[1]);"
        "d = load_data(get_competition('demo'), sys.argv[2], batch_size=16, valid_ratio=0.1);"
        "net = restore_checkpoint(bk, bk.create_model('cnn_elu', 10), sys.argv[3]);"
        "print(','.join(d.classes[k] for k in bk.predict(net, d.test_iter).argmax(1)))")
    p = run_py(code, backend, demo_dir, str(out / "checkpoints" / "valid" / "best.npz"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().split(",") == [row[1] for row in rows[1:]]
