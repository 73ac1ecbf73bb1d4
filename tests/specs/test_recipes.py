"""Training recipes through run_competition and the CLI: flags, recording, bad input."""
import csv
import json
import os

import pytest

from conftest import backend_params, run_cli
from d2lkaggle.train import schedules as S
from d2lkaggle.cli import build_parser, main
from d2lkaggle.specs.competitions import BOOK_RECIPES, get_competition, recipe_for
from d2lkaggle.data.mixing import Mixup
from d2lkaggle.specs.tricks import check_recipe, make_mixing, make_schedule, train_kwargs

FAST = ["--epochs", "2", "--batch-size", "32", "--quiet", "--workers", "2", "--no-retrain"]
TRICKS = ["--optimizer", "adamw", "--lr", "2e-3", "--wd", "1e-2", "--sched", "cyclic",
          "--cycle-mode", "triangular2", "--step-size", "3", "--mixup", "0.4", "--cutmix", "1.0",
          "--mix-prob", "0.8", "--switch-prob", "0.5", "--label-smoothing", "0.1",
          "--augment", "crop-flip-rotate", "--no-wd-bn-bias"]


def test_every_flag_parses_into_the_run_keywords():
    from d2lkaggle.cli.args import run_kwargs as _run_kwargs
    a = build_parser().parse_args(["run", "demo", "--data-dir", "d", *TRICKS, "--warmup", "1",
                                   "--base-lr", "1e-3", "--max-lr", "1e-2", "--milestones", "2,3",
                                   "--recipe", "book"])
    kw = _run_kwargs(a)
    assert kw["recipe"] == "book" and kw["optimizer"] == "adamw" and kw["sched"] == "cyclic"
    assert kw["milestones"] == (2, 3) and kw["wd_exclude"] == "bn_bias" and kw["mixup"] == 0.4
    assert (kw["warmup"], kw["base_lr"], kw["max_lr"], kw["step_size"]) == (1.0, 1e-3, 1e-2, 3)
    assert "mixup" not in _run_kwargs(build_parser().parse_args(["run", "demo", "--data-dir", "d"]))


def test_help_shows_each_default(capsys):
    import re
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    section = capsys.readouterr().out.split("training recipe", 1)[1]
    entries = {e.split()[0]: " ".join(e.split()) for e in re.split(r"\n  (?=--)", section)[1:]}
    for flag in ("--optimizer", "--sched", "--warmup", "--base-lr", "--max-lr", "--step-size",
                 "--cycle-mode", "--milestones", "--mixup", "--cutmix", "--mix-prob",
                 "--switch-prob", "--label-smoothing", "--augment", "--no-wd-bn-bias", "--recipe"):
        assert "(default: " in entries[flag], (flag, entries.get(flag))


def test_book_recipe_is_the_chapters():
    book = recipe_for(get_competition("cifar10"), "book")
    assert (book.lr, book.batch_size, book.lr_period, book.lr_decay, book.epochs) == (0.02, 128, 4, 0.9, 20)
    assert (book.optimizer, book.sched, book.augment, book.mixup) == ("sgd", "step", "book", 0.0)
    assert recipe_for(get_competition("dog-breed"), "book") == BOOK_RECIPES["dog-breed"]
    # cifar100: ours by default (ResNet-18, one-cycle), the CIFAR-10 chapter's values with
    # --recipe book, the speed-run net as an option
    assert recipe_for(get_competition("cifar100")).sched == "onecycle"
    assert recipe_for(get_competition("cifar100"), "book") == BOOK_RECIPES["cifar10"]


def test_recipe_objects_per_phase():
    r = BOOK_RECIPES["demo"].with_overrides(sched="cyclic", mixup=0.4, label_smoothing=0.1,
                                            optimizer="nesterov")
    said = []
    s = make_schedule(r, r.epochs, 10, said.append)
    assert isinstance(s, S.Cyclic) and (s.base_lr, s.max_lr, s.step_size_up) == (0.025, 0.1, 20)
    assert "max lr 0.1" in said[0]  # the default from --lr is printed
    m = make_mixing(r, 10)
    assert isinstance(m, Mixup) and m.mixup_alpha == 0.4 and m.num_classes == 10
    kw = train_kwargs(r, s, m)
    assert kw["schedule"] is s and kw["mixing"] is m and kw["optimizer"] == "sgd" and kw["nesterov"]
    assert train_kwargs(BOOK_RECIPES["demo"], make_schedule(BOOK_RECIPES["demo"], 16, 10), None) == {}
    oc = make_schedule(r.with_overrides(sched="onecycle", warmup=4), 16, 10)
    assert oc.pct_start == 0.25 and oc.max_lr == 0.05
    ms = make_schedule(r.with_overrides(sched="multistep"), 16, 10)
    assert ms.milestones == [8, 12] and ms.gamma == 0.5


@pytest.mark.parametrize("flags, match", [
    (["--mixup", "-1"], "--mixup must be in"),
    (["--cutmix", "0", "--mix-prob", "1"], "--mix-prob applies to --mixup or --cutmix > 0, not "
                                          "to --mixup 0 and --cutmix 0"),
    # flags the run would not use: refused, never recorded as if they ran
    (["--lr-period", "2"], "--lr-period applies to --sched step .* or plateau, not to --sched "
                           "triangle"),
    (["--lr-decay", "0.5"], "--lr-decay applies to --sched step .*, not to --sched triangle"),
    (["--mixup", "0.4", "--switch-prob", "0.3"], "--switch-prob applies to --mixup and --cutmix "
                                                 "both > 0"),
    (["--switch-prob", "0.3"], "--switch-prob applies to"),
    (["--max-lr", "0.1"], "--max-lr applies to --sched cyclic or onecycle, not to --sched "
                          "triangle"),
    (["--sched", "onecycle", "--max-lr", "0.1", "--lr", "0.01"],
     "--lr applies to every schedule but one-cycle with --max-lr"),
    (["--sched", "plateau", "--lr-decay", "2"], "a plateau lowers the lr"),
    (["--label-kind", "coarse"], "--label-kind coarse applies to a CIFAR-100 python archive"),
    (["--cache-features"], "--cache-features needs the frozen-backbone model"),
    (["--label-smoothing", "1.5"], r"--label-smoothing must be in \[0, 1\)"),
    (["--mixup", "0.4", "--mix-prob", "2"], "--mix-prob must be in"),
    (["--lr", "-0.1"], "--lr must be in"),
    (["--sched", "cosine", "--warmup", "30", "--epochs", "5"], "warmup"),
    (["--warmup", "2", "--sched", "step"], "--warmup applies to --sched cosine or onecycle"),
    (["--sched", "cyclic", "--base-lr", "1", "--max-lr", "0.1"], "above the max lr"),
    (["--sched", "multistep", "--lr-decay", "0.5", "--milestones", "0,40"],
     "--milestones must be epochs"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(flags, match, demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "demo", "--data-dir", demo_dir, "--out", str(out), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert pytest.importorskip("re").search(match, err), err
    assert not out.exists()


def test_unknown_optimizer_lists_the_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "demo", "--data-dir", "d", "--optimizer", "rmsprop"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "rmsprop" in err and "adamw" in err and "nesterov" in err
    from d2lkaggle.specs.competitions import BOOK_RECIPES as B
    with pytest.raises(ValueError, match="sgd, nesterov, adam, adamw"):
        check_recipe(B["demo"].with_overrides(optimizer="rmsprop"))


@pytest.mark.parametrize("backend", backend_params())
def test_every_trick_in_a_tiny_run(backend, demo_dir, tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--out", str(out),
                *FAST, *TRICKS)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    rec, tr = s["recipe"], s["tricks"]
    assert (rec["optimizer"], rec["sched"], rec["cycle_mode"], rec["mixup"], rec["cutmix"]) == (
        "adamw", "cyclic", "triangular2", 0.4, 1.0)
    assert rec["wd_exclude"] == "bn_bias" and rec["augment"] == "crop-flip-rotate"
    assert tr["schedule"]["name"] == "cyclic" and tr["schedule"]["step_size_up"] == 3
    assert tr["mixing"]["label_smoothing"] == 0.1 and tr["mixing"]["num_classes"] == 10
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 <= float(r["train_acc"]) <= 1 for r in rows)
    # 180 train images / 32 = 5 batches: cyclic(1e-3, 4e-3, up 3, down 3), triangular2
    f = S.cyclic(1e-3, 4e-3, 5, 3, None, "triangular2")
    assert [float(r["lr"]) for r in rows] == pytest.approx([f(0), f(1)])
    assert [float(r["lr_last"]) for r in rows] == pytest.approx([f(0.8), f(1.8)])
    assert os.path.exists(out / "submission.csv")


def test_a_small_training_set_trains_at_the_small_set_batch_with_its_rate_rule(tmp_path):
    from d2lkaggle.data.demo import make_demo
    from d2lkaggle.compete.load import training_set_size
    from d2lkaggle.compete.run import run_config
    from d2lkaggle.specs.tricks import MIN_STEPS_PER_EPOCH, fit_batch_to_set
    r18 = recipe_for(get_competition("cifar10"), "resnet18")
    assert (r18.optimizer, r18.batch_size, r18.lr, r18.wd, r18.small_set_batch) == \
        ("adamw", 128, 2e-3, 0.05, 32)
    small, note = fit_batch_to_set(r18, 1350)
    # AdamW's step is normalised per parameter: the batch shrinks, its lr stays
    assert (small.batch_size, small.lr) == (32, 2e-3) and "10 steps per epoch" in note
    assert "adamw's step does not grow with the batch" in note
    # SGD (the default: the speed-run record's Nesterov SGD at batch 1,024): lr × sqrt(b/B)
    c10 = recipe_for(get_competition("cifar10"))
    assert (c10.optimizer, c10.batch_size, c10.lr, c10.small_set_batch) == \
        ("nesterov", 1024, pytest.approx(1.5), 64)
    sgd, note = fit_batch_to_set(c10, 1350)
    assert (sgd.batch_size, sgd.lr) == (64, pytest.approx(0.375)) and "sqrt(64/1024)" in note
    # the full set, the user's own batch or lr, and the book's recipe are left alone
    assert fit_batch_to_set(r18, 45000) == (r18, None)
    assert fit_batch_to_set(c10, 45000) == (c10, None)
    assert fit_batch_to_set(r18, 128 * MIN_STEPS_PER_EPOCH) == (r18, None)
    assert fit_batch_to_set(c10, 1350, batch_given=True) == (c10, None)
    given_lr, _ = fit_batch_to_set(c10, 1350, lr_given=True)
    assert (given_lr.batch_size, given_lr.lr) == (64, pytest.approx(1.5))
    book = recipe_for(get_competition("cifar10"), "book")
    assert fit_batch_to_set(book, 1350) == (book, None)
    # the demo (1,000 images, 900 to train) is such a set: no step at 1,024 -> batch 64
    demo, note = fit_batch_to_set(recipe_for(get_competition("demo")), 900)
    assert (demo.batch_size, demo.lr) == (64, pytest.approx(0.375)) and "0 steps per epoch" in note
    # counted from the labels file (valid split taken off), before any image is decoded
    d = make_demo(str(tmp_path / "c"), n_train=50, n_test=5)
    assert training_set_size(get_competition("cifar10"), d, 0.1) == 45
    assert training_set_size(get_competition("cifar10"), d, 0.1, split=([1, 2], [3])) == 2
    assert training_set_size(get_competition("cifar10"), str(tmp_path / "missing"), 0.1) is None
    # the rule is not a setting of its own: the effective batch and lr are what is recorded
    assert "small_set_batch" not in run_config(get_competition("cifar10"), small, backend="torch")
