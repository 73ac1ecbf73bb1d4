"""The d2lkaggle command's small subcommands."""
import json
import os

import pytest

from conftest import run_cli, run_py
from d2lkaggle.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "run", "download", "make-demo", "reorg", "weights"):
        assert cmd in out


def test_run_options_match_the_issue():
    args = build_parser().parse_args(
        ["run", "cifar10", "--data-dir", "d", "--backend", "mxnet", "--epochs", "3", "--batch-size", "8",
         "--lr", "0.1", "--wd", "1e-4", "--lr-period", "2", "--lr-decay", "0.5", "--valid-ratio", "0.2",
         "--image-size", "64", "--weights", "w.pth", "--out", "o", "--no-retrain", "--seed", "3",
         "--resume"])
    assert (args.backend, args.epochs, args.lr_period, args.no_retrain, args.resume, args.seed) == (
        "mxnet", 3, 2, True, True, 3)


def test_make_demo_then_reorg(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["make-demo", str(out), "--n-train", "50", "--n-test", "7"]) == 0
    assert main(["reorg", str(out), "--valid-ratio", "0.2", "--mode", "copy"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["train_valid"] == 50 and report["classes"] == 10 and report["valid"] == 10
    assert report["test"] == 7 and report["seconds"] >= 0
    tvt = out / "train_valid_test"
    assert sum(len(files) for _, _, files in os.walk(tvt / "valid")) == 10
    assert len(os.listdir(tvt / "test" / "unknown")) == 7


def test_reorg_without_labels_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    assert main(["reorg", str(tmp_path)]) == 2
    assert "trainLabels.csv" in capsys.readouterr().err


def test_weights_convert(tmp_path):
    r = run_py("import sys, torch, torchvision; torch.manual_seed(0);"
               "torch.save(torchvision.models.resnet34().state_dict(), sys.argv[1])",
               str(tmp_path / "r34.pth"))
    if r.returncode != 0:
        pytest.skip("torch is needed to write a .pth file")
    r = run_cli("weights", "convert", str(tmp_path / "r34.pth"), str(tmp_path / "r34.safetensors"))
    assert r.returncode == 0, r.stderr
    from d2lkaggle.models.weights import load_neutral
    state = load_neutral(str(tmp_path / "r34.safetensors"))
    assert state["fc.weight"].shape == (1000, 512) and "layer4.2.bn2.running_var" in state
    assert not any(k.endswith("num_batches_tracked") for k in state)
