"""The CLI explains itself: help with defaults everywhere, --version, competitions from the
table, --weights none, --overwrite, --predict-with and the last line of a run."""
import argparse
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import backend_params, run_cli, run_py
from d2lkaggle import __version__
from d2lkaggle.compete import report, runfolder
from d2lkaggle.compete import run as pipeline
from d2lkaggle.cli import build_parser, main
from d2lkaggle.cli.train import _last_line
from d2lkaggle.specs.competitions import COMPETITIONS, get_competition
from d2lkaggle.models.weights import WeightsUnavailableError


def subparsers(p, prefix="d2lkaggle"):
    yield prefix, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from subparsers(sp, f"{prefix} {name}")


def test_every_option_has_help_showing_its_default():
    for where, p in subparsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            name = "/".join(a.option_strings) or a.dest
            assert a.help, f"{where} {name} has no help text"
            if a.option_strings and not a.required:
                assert "default" in a.help, f"{where} {name}: help does not say the default"
            if a.default not in (None, False) and a.option_strings:
                shown = a.help % {"default": a.default} if "%(default)" in a.help else a.help
                assert str(a.default) in shown or format(a.default, "g") in shown, (where, name)


def test_run_help_shows_each_recipe_value(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")   # no wrapping inside "dog-breed"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    lrs = ", ".join(f"{n} {c.recipe.lr:g}" for n, c in COMPETITIONS.items() if c.recipe)
    assert f"(recipe default: {lrs})" in out
    epochs = ", ".join(f"{n} {c.recipe.epochs}" for n, c in COMPETITIONS.items() if c.recipe)
    assert f"epochs of each phase; a fraction cuts the last one short (the record's 9.9) " \
           f"(recipe default: {epochs})" in out
    assert "dog-breed imagenet" in out and "'none' (random initialisation" in out
    for name, comp in COMPETITIONS.items():   # listed from the table, with their state
        assert name in out
        assert (f"{name} (not runnable yet" in out) == (comp.recipe is None)
    retrains = ", ".join(f"{n} {'retrain' if c.recipe.retrain else 'last'}"
                         for n, c in COMPETITIONS.items() if c.recipe)
    assert "--predict-with" in out and "--overwrite" in out
    assert f"(default: retrain where the recipe retrains, else last: {retrains})" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"d2lkaggle {__version__}"


def test_competitions_without_recipe_or_unknown_fail_upfront(capsys, tmp_path, monkeypatch):
    from dataclasses import replace
    # a competition of the table without a recipe (cifar100 until it gets one)
    monkeypatch.setitem(COMPETITIONS, "cifar100", replace(COMPETITIONS["cifar100"], recipe=None,
                                                          notes="data layout only"))
    for name, words in (("cifar100", "cifar100 has no training recipe yet (data layout only)"),
                        ("mnist", "unknown competition 'mnist'")):
        with pytest.raises(SystemExit) as e:
            main(["run", name, "--data-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and "cifar10, dog-breed" in err
    args = build_parser().parse_args(["run", "dog", "--data-dir", "d"])
    assert args.competition == "dog-breed"


def test_demo_help_says_where_output_goes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "runs/COMPETITION" not in out
    assert "run folder (default: DIR/run-BACKEND, see --dir)" in out
    assert f"(default: {build_parser().parse_args(['demo']).dir}," in out


def test_weights_none_is_random_init():
    dog = get_competition("dog-breed")
    assert dog.recipe.weights == "imagenet"
    assert pipeline._recipe_for(dog, weights="none").weights is None
    assert pipeline._recipe_for(dog, weights="NONE").weights is None
    assert pipeline._recipe_for(dog, weights="w.pth").weights == "w.pth"
    assert build_parser().parse_args(["run", "dog-breed", "--data-dir", "d", "--weights", "none"]).weights == "none"


def test_offline_weights_message_speaks_the_callers_language():
    e = WeightsUnavailableError("no weights; pass {arg} to a file", "resnet34.safetensors")
    assert str(e) == "no weights; pass weights='resnet34.safetensors' to a file"
    assert e.for_cli() == "no weights; pass --weights resnet34.safetensors to a file"
    assert str(WeightsUnavailableError("pass {arg}")) == "pass weights=PATH"
    assert isinstance(e, RuntimeError)


@pytest.mark.parametrize("backend", backend_params("mxnet"))
def test_offline_weights_message_on_the_command_line(backend, dog_dir, tmp_path):
    r = run_cli("run", "dog-breed", "--data-dir", dog_dir, "--backend", backend, "--out",
                str(tmp_path / "o"), "--quiet", "--image-size", "32")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--weights resnet34.safetensors" in r.stderr and "weights='" not in r.stderr
    r = run_py("import sys, d2lkaggle; B = d2lkaggle.get_backend(sys.argv[1])\n"
               "try:\n    B.finetune_net(4, weights='imagenet')\nexcept RuntimeError as e:\n    print(e)",
               backend)
    assert "weights='resnet34.safetensors'" in r.stdout, r.stderr[-2000:]


def test_finished_run_is_not_overwritten_without_overwrite(demo_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--out", str(out), "--quiet")
    assert r.returncode != 0 and "holds a finished run" in r.stderr and "--overwrite" in r.stderr
    assert "--resume" in r.stderr and (out / "summary.json").read_text() == "{}"


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "valid").mkdir(parents=True)
    (out / "checkpoints" / "valid" / "last.npz").write_bytes(b"x")
    for f in ("summary.json", "submission.csv", "curves.png", "notes.txt"):
        (out / f).write_text("old")
    runfolder.check_run_folder(str(out), overwrite=False, resume=True)   # resume continues it
    assert (out / "summary.json").exists()
    with pytest.raises(ValueError, match="finished run"):
        runfolder.check_run_folder(str(out), overwrite=False, resume=False)
    # --overwrite builds the new run beside the old one, which stays whole until it has finished
    assert runfolder.check_run_folder(str(out), overwrite=True, resume=False) is True
    assert (out / "summary.json").read_text() == "old"
    stage = runfolder.stage_folder(str(out))
    assert os.path.dirname(stage) == str(tmp_path) and os.listdir(stage) == []
    (Path(stage) / "checkpoints" / "final").mkdir(parents=True)
    for f in ("summary.json", "submission.csv", "log.txt"):
        (Path(stage) / f).write_text("new")
    runfolder.install_run(stage, str(out))
    assert sorted(os.listdir(out)) == ["checkpoints", "log.txt", "notes.txt", "submission.csv",
                                       "summary.json"]   # curves.png was the old run's
    assert (out / "summary.json").read_text() == "new" and (out / "notes.txt").read_text() == "old"
    assert os.listdir(out / "checkpoints") == ["final"] and not os.path.exists(stage)


def test_predict_with_rules():
    assert pipeline._predict_with(None, True, True) == "retrain"
    assert pipeline._predict_with(None, False, True) == "last"          # --no-retrain
    assert pipeline._predict_with(None, False, False) == "retrain"      # nothing else to use
    assert pipeline._predict_with("best", True, True) == "best"
    with pytest.raises(ValueError, match="contradicts"):
        pipeline._predict_with("retrain", False, True)
    with pytest.raises(ValueError, match="needs a validation phase"):
        pipeline._predict_with("best", True, False)
    with pytest.raises(ValueError, match="one of retrain, best, last"):
        pipeline._predict_with("worst", True, True)


def test_last_line():
    s = {"competition": "demo", "backend": "torch", "valid_acc": 0.9, "best_valid_acc": 0.95,
         "best_epoch": 12, "submission_model": "the model retrained on train+valid (16 epochs)",
         "files": {"summary": "/r/run-torch/summary.json"}}
    assert _last_line(s) == ("demo · torch · valid acc best 0.9500 (epoch 12), last 0.9000 · "
                             "submission.csv from the model retrained on train+valid (16 epochs) · "
                             "files in /r/run-torch")


@pytest.mark.parametrize("backend", backend_params("paddle"))
def test_paddle_prints_no_known_warning(backend):
    code = ("import sys, numpy as np, d2lkaggle; sys.path.insert(0, 'tests');"
            "from conftest import tiny_loaders; B = d2lkaggle.get_backend('paddle');"
            "tr, va = tiny_loaders(n=32); net = B.resnet18(4, 3, 4);"
            "B.train(net, tr, va, 1, 0.05, 0.0, progress=False, log=None)")
    r = run_py(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "No ccache found" not in r.stderr and "always track global mean" not in r.stderr
    assert "UserWarning" not in r.stderr


def test_header_counts_like_reorg_and_warns_about_a_random_frozen_backbone():
    from types import SimpleNamespace
    data = SimpleNamespace(train_iter=SimpleNamespace(source=[0] * 900, num_examples=896),
                           valid_iter=SimpleNamespace(source=[0] * 100), classes=list("abcdefghij"),
                           test_ids=[0] * 200)
    head = report.header(get_competition("demo"), data, "torch", get_competition("demo").recipe)
    assert head == ("demo: 10 classes, 900 train (896 per epoch after drop_last) / 100 valid / "
                    "200 test images; backend torch")
    dog = get_competition("dog-breed")
    head = report.header(dog, data, "torch", pipeline._recipe_for(dog, weights="none"))
    assert head.splitlines()[1].startswith("warning: fine-tuning a frozen backbone with random weights")


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_lr_find_command(backend, demo_dir, tmp_path):
    r = run_cli("lr-find", "demo", "--data-dir", demo_dir, "--backend", backend, "--out",
                str(tmp_path), "--num-iter", "20", "--batch-size", "16", "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    from PIL import Image
    with Image.open(tmp_path / "lr_find.png") as im:
        assert im.size == (650, 400)
    rows = (tmp_path / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed" and 5 < len(rows) <= 21
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("suggested lr ") and f"d2lkaggle run demo --data-dir {demo_dir} --lr " in last


def test_report_repeats_warnings_with_the_causes_once(capsys):
    from d2lkaggle.cli.train import _report
    from d2lkaggle.train.diagnostics import CAUSES, not_learning
    from d2lkaggle.train.loop import History
    h = History()
    for e in (1, 2, 3):
        h.add(epoch=e, lr=0.1, train_loss=2.5, train_acc=0.1, valid_loss=2.5, valid_acc=0.1,
              seconds=1.0, examples_per_sec=10.0)
    out = report.run_outcome(h, h, "retrain", 10, get_competition("demo").recipe)
    assert [w.split(":")[0] for w in out["warnings"]] == ["train/valid split", "retrain"]
    assert out["warnings"][0].endswith(CAUSES + ".")
    assert not_learning(h, 10, final=True) in out["warnings"][0]
    s = dict(out, competition="demo", backend="torch", valid_acc=0.1, best_valid_acc=0.1,
             examples_per_sec=10.0, timings={"total_s": 3.0}, files={"summary": "/r/summary.json"})
    _report(s)
    text = capsys.readouterr().out
    assert text.count("Usual causes") == 1 and text.count("warning: ") == 2
    assert text.strip().splitlines()[-1].startswith("demo · torch · valid acc best 0.1000 (epoch 1)")


def test_picture_title_names_competition_backend_model_and_recipe():
    dog = get_competition("dog-breed")
    t = report.title(dog, "paddle", pipeline._recipe_for(dog, weights="none", lr=0.01))
    parts = t.split(" · ")
    assert parts[:3] == ["dog-breed", "paddle", "finetune (random backbone)"]
    assert "one-cycle to lr 0.01" in parts[3] and "AdamW wd 0.05" in parts[3]
    assert "TTA flip" in parts[3]
    from d2lkaggle.specs.competitions import BOOK_RECIPES
    book = report.title(dog, "paddle", BOOK_RECIPES["dog-breed"].with_overrides(lr=0.01))
    assert "lr 0.01 x0.9 every 2 epochs (StepLR)" in book and "SGD (momentum 0.9)" in book
    assert "TTA" not in book


def test_overall_progress_leaves_out_epochs_a_resumed_run_holds(tmp_path):
    from types import SimpleNamespace
    from d2lkaggle.utils.files import save_npz
    save_npz(str(tmp_path / "checkpoints" / "valid" / "last.npz"), {"model/w": np.zeros(2)},
             {"epoch": 2, "best": 0.5, "history": "{}"})        # epochs 1-3 done
    data = SimpleNamespace(train_iter=[0] * 5, valid_iter=[0], train_valid_iter=[0] * 6)
    fresh = pipeline._run_progress(True, 4, data, True)
    resumed = pipeline._run_progress(True, 4, data, True, str(tmp_path))
    try:
        assert fresh.total == 4 * 5 + 4 * 6 and resumed.total == 1 * 5 + 4 * 6
    finally:
        fresh.close()
        resumed.close()
    assert pipeline._run_progress(False, 4, data, True) is None
