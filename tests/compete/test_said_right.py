"""What a run says is generated from what it does: titles and help from the recipe that ran,
`d2lkaggle recipes` lists every --recipe name with public sources, --tta bare is flip, the
"not learning" diagnosis judges what it knows, data problems are said in one line, and no
internal path reaches anything a user reads."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT
from d2lkaggle.cli import main
from d2lkaggle.compete import report
from d2lkaggle.compete.run import plan_run
from d2lkaggle.data.demo import make_demo
from d2lkaggle.specs.competitions import COMPETITIONS, RECIPE_NAMES, get_competition, recipe_for
from d2lkaggle.train import diagnostics, schedules
from d2lkaggle.train.loop import History

#: a CIFAR-10 write-up run on the hard demo (torch, 30 epochs): slow by design at first
HARD_WRITEUP_START = [(2.9029, 0.110, 0.180), (2.7002, 0.136, 0.120), (2.5069, 0.148, 0.110)]


def history(rows) -> History:
    h = History()
    for e, (loss, acc, vacc) in enumerate(rows, start=1):
        h.add(epoch=e, lr=0.001, train_loss=loss, train_acc=acc, valid_loss=2.0, valid_acc=vacc,
              seconds=1.0, examples_per_sec=10.0)
    return h


def test_titles_name_what_each_recipe_trains():
    want = {  # (competition, recipe) -> words the title must hold
        ("cifar10", "default"): ["airbench94 · 9.9 epochs", "batch 1024 (64 on a small set)",
                                 "SGD (Nesterov momentum 0.85) wd 0.00133043",
                                 "BatchNorm biases at lr x64",
                                 "triangle lr 0.3 -> 1.5 at 23% of the run -> 0.105",
                                 "label smoothing 0.2", "augment shift-altflip",
                                 "whitened first layer (its bias trained 3 epochs)",
                                 "weights averaged (lookahead)"],
        ("cifar10", "resnet18"): ["resnet18", "batch 128", "AdamW wd 0.05",
                                  "one-cycle to lr 0.002 (30% warm-up"],
        ("cifar10", "book"): ["SGD (momentum 0.9) wd 0.0005", "lr 0.02 x0.9 every 4 epochs (StepLR)"],
        ("demo", "default"): ["airbench94 (width 32) · 3 epochs", "whitened first layer"],
        ("demo", "resnet18"): ["resnet18 (width 16)", "AdamW wd 0.05", "one-cycle to lr 0.002"],
        ("dog-breed", "default"): ["finetune from ImageNet weights", "AdamW wd 0.05",
                                   "one-cycle to lr 0.001", "augment none", "TTA flip"],
        ("dog-breed", "book"): ["finetune from ImageNet weights", "lr 0.005 x0.9 every 2 epochs"],
        ("cifar10", "writeup-cifar10-mixup"): ["cnn_elu", "Adam wd 0.001", "batch 32",
                                               "cyclic triangular2 lr 0.001-0.004, 10 cycles",
                                               "MixUp 0.4", "augment crop-flip"],
        ("cifar100", "writeup-cifar100-effnetv2"): ["efficientnet_v2_s from ImageNet weights",
                                                    "AdamW wd 0.001", "lr 0.0004 x0.9 every 10",
                                                    "CutMix 1 on 50% of batches"],
    }
    for (comp, name), words in want.items():
        text = report.title(get_competition(comp), "torch", recipe_for(get_competition(comp), name))
        for w in words:
            assert w in text, (comp, name, w, text)
        if "one-cycle" in text or "cyclic" in text:
            assert "every" not in text   # never the StepLR the run does not use
    assert {n for n in RECIPE_NAMES} >= {"default", "book", "writeup-cifar10-mixup",
                                         "writeup-cifar100-effnetv2"}


def test_title_follows_the_small_set_rule_and_the_overrides(tmp_path):
    data = make_demo(str(tmp_path / "d"), n_train=40, n_test=2, size=16, seed=1)
    plan = plan_run("demo", data, out=str(tmp_path / "o"), sched="cosine", mixup=0.2,
                    recipe="resnet18")
    text = report.title(plan.comp, plan.backend, plan.recipe)
    assert "batch 32" in text and "cosine from lr 0.002" in text and "MixUp 0.2" in text
    data = make_demo(str(tmp_path / "d32"), n_train=40, n_test=2, seed=1)
    plan = plan_run("demo", data, out=str(tmp_path / "o"))   # the record's: lr x sqrt(64/1024)
    text = report.title(plan.comp, plan.backend, plan.recipe)
    assert "batch 64" in text and f"lr {1.5 * 0.25 * 0.2:g} -> {1.5 * 0.25:g}" in text
    assert not os.path.exists(tmp_path / "o")   # planning writes nothing


def test_recipes_lists_every_name_with_public_sources(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    heads = [l.split()[0] for l in out.splitlines() if l and not l.startswith(" ")]
    assert heads == list(RECIPE_NAMES)
    assert "its author reports 78.58% test accuracy" in out
    assert "its authors report a mean accuracy of 0.8667 over 5 runs" in out
    for comp in ("cifar10", "dog-breed", "demo"):
        assert f"    {comp}" in out
    assert main(["recipes", "book"]) == 0
    assert "lr 0.02 x0.9 every 4 epochs" in capsys.readouterr().out


# not given: the recipe's (None); none: off (False), also where the recipe has one (Dog Breed)
@pytest.mark.parametrize("argv, tta", [([], None), (["--tta"], "flip"), (["--tta", "none"], False),
                                       (["--tta", "flip-crop"], "flip-crop"), (["--tta", "4"], 4)])
def test_tta_bare_is_flip(argv, tta):
    from d2lkaggle.cli import build_parser
    a = build_parser().parse_args(["run", "demo", "--data-dir", "x", *argv])
    assert a.tta == tta


def test_help_shows_tta_choices_and_no_sgd_only_lr(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--tta [{flip,flip-crop,flip-shift,N,none}]" in out and "what --tta alone means" in out
    assert "(SGD, batch-mean loss)" not in out and "the peak of one-cycle" in out
    assert "unused by cifar10's triangle" in out   # --lr-period: only where the schedule uses it
    assert "Keras' verbose=0" in out and "Keras' verbose=2" in out


def test_not_learning_waits_for_the_start_up_and_judges_the_end():
    slow = history(HARD_WRITEUP_START)
    assert diagnostics.not_learning(slow, 10) is None          # at chance, but the loss falls
    flat = history([(2.31, 0.1, 0.1), (2.31, 0.1, 0.1), (2.30, 0.1, 0.1)])
    assert "not learning after 3 epochs" in diagnostics.not_learning(flat, 10)
    # a cyclic schedule's first cycle and a one-cycle warm-up are waited for
    cyc = schedules.cyclic(1e-3, 4e-3, 10, 25, mode="triangular2")
    assert schedules.startup_epochs(cyc) == 5.0
    assert diagnostics.LearningMonitor(None, 30, startup=5.0).at == 5
    assert schedules.startup_epochs(schedules.onecycle(0.1, 30, 10)) == pytest.approx(9.0)
    # the end of the run: ended far from chance -> nothing; near chance -> the right cause
    recipe = get_competition("demo").recipe
    learned = history(HARD_WRITEUP_START + [(1.2, 0.6, 0.7)])
    assert report.run_outcome(learned, None, "best", 10, recipe)["warnings"] == []
    short = history([(2.9, 0.1, 0.1), (2.6, 0.11, 0.1), (2.4, 0.12, 0.11)])
    (w,) = report.run_outcome(short, None, "best", 10, recipe)["warnings"]
    assert "ended near chance" in w and "still falling" in w and "train longer (--epochs)" in w
    assert "frozen backbone" not in w
    frozen = report.run_outcome(flat, None, "best", 10, recipe.with_overrides(model="finetune"))
    assert "a frozen backbone with random weights" in frozen["warnings"][0]


def test_data_problems_are_one_line_before_anything_is_written(tmp_path, capsys):
    data = make_demo(str(tmp_path / "cifar"), n_train=20, n_test=3, size=8, seed=2)
    cases = [
        (["run", "demo", "--data-dir", str(tmp_path / "missing")], "--data-dir "),
        (["run", "dog-breed", "--data-dir", data], "looks like a cifar10"),
        (["run", "demo", "--data-dir", data, "--out", os.path.join(data, "train", "run")],
         "inside the data's train/ folder"),
        (["run", "demo", "--data-dir", data, "--out", os.path.join(data, "test")],
         "inside the data's test/ folder"),
    ]
    for argv, words in cases:
        assert main(argv + ["--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (argv, err)
    assert sorted(os.listdir(os.path.join(data, "train"))) == sorted(
        f for f in os.listdir(os.path.join(data, "train")) if f.endswith(".png"))


def test_sample_and_label_surprises_are_said(tmp_path):
    from d2lkaggle.compete.load import load_data
    data = make_demo(str(tmp_path / "d"), n_train=20, n_test=4, size=8, seed=2)
    comp = get_competition("demo")
    sample = os.path.join(data, "sampleSubmission.csv")
    rows = open(sample).read().splitlines()
    open(sample, "w").write("\n".join(rows[:-1]) + "\n")          # one test image left out
    labels = os.path.join(data, "trainLabels.csv")
    lines = open(labels).read().splitlines()
    lines[1] += " "                                                 # a trailing space
    open(labels, "w").write("\n".join(lines) + "\n")
    d = load_data(comp, data, batch_size=4, valid_ratio=0.0)
    said = " ".join(d.notes)
    assert "1 images of" in said and "are not in sampleSubmission.csv and get no prediction" in said
    assert "1 labels have spaces around them" in said and "line 2" in said
    open(sample, "w").write("\n".join(rows[:-1] + [rows[1]]) + "\n")  # an id twice
    with pytest.raises(ValueError, match=re.escape(sample) + r", line \d+: duplicate id"):
        load_data(comp, data, batch_size=4, valid_ratio=0.0)


def test_image_cache_sees_a_copy_with_preserved_times(tmp_path):
    from d2lkaggle.data.images import _cache_key
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"0123456789")
    b.write_bytes(b"9876543210")
    st = os.stat(a)
    key = _cache_key([str(a)], str(tmp_path))
    shutil.copy2(b, a)                        # other bytes, same size ...
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))   # ... and the old modification time
    assert os.stat(a).st_size == st.st_size and os.stat(a).st_mtime_ns == st.st_mtime_ns
    assert _cache_key([str(a)], str(tmp_path)) != key


INTERNAL = re.compile(r"seeds/|\bissues? \d+\b|(?<![\w.,])00\d(?![\w.,%])|\bitem \d+\b")


def test_no_internal_paths_where_a_user_reads():
    hits = []
    for top in ("d2lkaggle", "docs", "examples", "README.md"):
        path = os.path.join(ROOT, top)
        files = [path] if os.path.isfile(path) else [
            os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs if f.endswith((".py", ".md"))]
        for f in files:
            for n, line in enumerate(open(f, encoding="utf-8"), start=1):
                if INTERNAL.search(line):
                    hits.append(f"{os.path.relpath(f, ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_no_code_runs_from_a_users_file():
    # weight files, CIFAR pickles, caches: read with numpy, restricted unpicklers or safetensors
    unsafe = re.compile(r"pickle\.loads?\(|torch\.load\(|paddle\.load\(|nd\.load\(|npx\.load\(|"
                        r"load_parameters\(|allow_pickle=True")
    hits = []
    for r, _, fs in os.walk(os.path.join(ROOT, "d2lkaggle")):
        for f in fs:
            if f.endswith(".py"):
                for n, line in enumerate(open(os.path.join(r, f), encoding="utf-8"), start=1):
                    if unsafe.search(line) and "``" not in line:
                        hits.append(f"{f}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_pictures_keep_their_titles_whole_and_legends_true(tmp_path):
    from d2lkaggle.train import plotting
    long = report.title(get_competition("cifar100"), "torch",
                        recipe_for(get_competition("cifar100"), "writeup-cifar100-effnetv2"))
    probs = np.eye(3)[[0, 1, 2]]
    fig = plotting.plot_mistakes(np.zeros((3, 8, 8, 3), np.uint8), np.arange(3), probs,
                                 ["a", "b", "c"], str(tmp_path / "m.png"), title=long)
    assert fig.get_figwidth() >= 6          # not a blank 2-inch strip
    text = fig._suptitle.get_text()
    assert text.replace("\n", " ").startswith(long) and "no mistakes on 3 validation images" in text
    fits = lambda text, fig: all(len(l) * 0.55 * 9 / 72 <= fig.get_figwidth()  # noqa: E731
                                 for l in text.splitlines())   # wrapped, never cut off
    assert fits(text, fig)
    fig = plotting.plot_confusion(np.arange(3), probs[[1, 1, 2]], ["a", "b", "c"],
                                  str(tmp_path / "c.png"), long)
    title = fig.axes[0].get_title()
    assert " ".join(title.split()).startswith(" ".join(long.split()))
    assert fits(title, fig) and len(title.splitlines()) >= 4
    h = History()
    for e in (1, 2):
        h.add(epoch=e, lr=0.1, lr_last=0.05, train_loss=1.0 / e, train_acc=0.5, valid_loss=1.2 / e,
              valid_acc=0.4, seconds=1.0, examples_per_sec=1.0)
    fig = plotting.plot_run([("valid", h), ("train_valid", h)], str(tmp_path / "r.png"), long)
    for ax in fig.axes[:2]:    # each legend entry drawn as its line: style and marker
        legend = ax.get_legend()
        assert legend.handlelength >= 3
        for line, handle in zip(ax.lines, legend.legend_handles):
            assert (handle.get_linestyle(), handle.get_marker()) == (line.get_linestyle(),
                                                                     line.get_marker())
        assert {l.get_marker() for l in ax.lines} == {".", "s"}   # train dots, valid squares
