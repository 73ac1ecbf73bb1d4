"""Every flag of `d2lkaggle run` is used or refused, in every schedule, mixing and model the
recipes allow: never accepted, recorded in summary.json and ignored.

The walk is driven by the tables, so a flag, recipe, schedule or model added later is walked
the moment it exists: the flags are the `run` parser's actions, the contexts every recipe
(``RECIPE_NAMES``) with every schedule (``SCHEDULES``) and mixing, every model
(``MODEL_NAMES``), and each way of training several models. In each context a flag is given
two or more values (from its type or choices). A flag is *used* when values the run accepts
lead to different runs, *refused* when the run stops with one line; a flag whose accepted
values lead to the same run is the failure this test exists for. "The run" is what the
command would build, computed without training: the run plan (every field of ``RunPlan``),
the learning rate at each step of the recipe's schedule, the mixing of a stream of batches,
the optimizer's keywords, the model's builder keywords, and the recipe fields the run reads
as they are (:data:`DIRECT`); for several models, each member's run and the split it
validates on; for ``--distributed``, the launcher's command.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os

import numpy as np
import pytest

from d2lkaggle.cli import USER_ERRORS, _one_line_errors, build_parser, error_line
from d2lkaggle.cli import train as cli_train
from d2lkaggle.compete import members
from d2lkaggle.compete.run import RunPlan, plan_run
from d2lkaggle.data.splits import split_digest
from d2lkaggle.models.build import recipe_kwargs, weights_file
from d2lkaggle.models.table import MODEL_NAMES
from d2lkaggle.models.whitening import FIRST_CONV
from d2lkaggle.specs.competitions import RECIPE_NAMES, get_competition, model_recipe
from d2lkaggle.specs.tricks import make_mixing, make_schedule, train_kwargs
from d2lkaggle.specs.writeups import cycle_step_size
from d2lkaggle.train.schedules import SCHEDULES

#: recipe fields a run reads as they are (the others reach it only through the schedule, the
#: mixing, the optimizer's keywords or the model's builder: :func:`recipe_effect`)
DIRECT = ("epochs", "batch_size", "wd", "valid_ratio", "augment", "normalize", "keep", "tta",
          "weights")
#: RunPlan fields that are not settings of the run (messages, handles, the recipe itself)
NOT_SETTINGS = {"recipe", "comp", "dist", "log", "lock", "runlog", "final_out", "batch_note",
                "calibrate_note", "split"}
MIXES = {"no mixing": [], "mixup": ["--mixup", "0.4"], "cutmix": ["--cutmix", "1.0"],
         "both": ["--mixup", "0.4", "--cutmix", "1.0"]}
#: the ways of training several models (and of training one on several processes)
RUN_KINDS = [["--ensemble", "2"], ["--ensemble", "2", "--bagging"], ["--folds", "2"],
             ["--ensemble", "2", "--members-vary", "augment"], ["--distributed"]]
#: every run of the walk: short, so schedules are evaluated quickly (flags set it again)
SHORT = ["--epochs", "16"]
#: values tried for a flag of free text (a new one fails below until it has a row here)
FREE_TEXT = {"out": ["OUT/a", "OUT/b"], "weights": ["none", "imagenet"], "model": list(MODEL_NAMES),
             "backend": ["torch", "mxnet"],
             "members_values": ["book,crop-flip", "none,shift-flip", "resnet18,cnn_elu"]}
#: values tried for a flag of a type (int, float, or the parser's own converters)
TYPED = ["2", "3", "4", "0.3", "0.6", "0.05", "0.001", "0.0005", "1,2", "flip", "none"]
#: values accepted per flag and context that are compared (the first ones, in the order of
#: TYPED or of the flag's choices; the choices of --sched and --model are contexts too)
ENOUGH = 3
#: flags whose work depends on the files in --data-dir, not on the recipe: walked where it
#: holds what they act on
DATA_FLAGS = {"--extract": "archives", "--label-kind": "cifar100"}


class Ran(Exception):
    """What the command would run, caught before anything trains."""


def _plain(v):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = dataclasses.asdict(v)
    if isinstance(v, dict):
        return tuple(sorted((k, _plain(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, float):
        return round(v, 12)
    return v if isinstance(v, (str, int, bool, type(None))) else repr(v)


def recipe_effect(r, size: int, split) -> tuple:
    """What the run builds from its recipe: the rate at every step of the schedule (a
    plateau observes a flat loss for 40 epochs), 64 batches' mixing, the optimizer's keywords,
    the model's builder keywords and whitened stem, and the fields read as they are."""
    spe = 10
    sched = make_schedule(cycle_step_size(r, spe), r.epochs, spe)
    if hasattr(sched, "observe"):
        lrs = []
        for e in range(40):
            lrs.append(sched(e))
            sched.observe(1.0)
    else:
        lrs = [sched(e + b / spe) for e in range(math.ceil(r.epochs)) for b in range(0, spe, 2)]
    lrs = np.round(np.asarray(lrs, dtype=np.float64), 12).tobytes()
    mix = make_mixing(r, 10)
    rng = np.random.default_rng(0)
    mixing = None if mix is None else ([mix.params(rng) for _ in range(64)], mix.label_smoothing)
    opt = {k: v for k, v in train_kwargs(r, sched, mix).items() if k not in ("schedule", "mixing")}
    model = (r.model, recipe_kwargs(r, size),
             bool(r.whiten and r.model in FIRST_CONV and weights_file(r.weights) is None))
    direct = {f: getattr(r, f) for f in DIRECT if not (f == "valid_ratio" and split is not None)}
    return _plain({"lrs": lrs, "mixing": mixing, "optimizer": opt, "model": model, **direct})


def plan_effect(plan: RunPlan) -> tuple:
    settings = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)
                if f.name not in NOT_SETTINGS}
    settings.update(competition=(plan.comp.name, tuple(plan.comp.mean), tuple(plan.comp.std)),
                    split=split_digest(plan.split) if plan.split is not None else None,
                    world_size=plan.dist.world_size, size=plan.size)
    return _plain(settings) + recipe_effect(plan.recipe, plan.size, plan.split)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """``outcome(argv, data)``: ("ran", what) or ("refused", line) of ``d2lkaggle run demo
    --data-dir DATA *argv``, with training replaced by what it would train."""
    from d2lkaggle.data.demo import make_demo
    root = tmp_path_factory.mktemp("walk")
    folders = make_demo(str(root / "data"), n_train=200, n_test=4, size=16, seed=0)
    archives = root / "archives"          # the same competition, its images still zipped
    archives.mkdir()
    import shutil
    import zipfile
    shutil.copy(os.path.join(folders, "trainLabels.csv"), archives)
    shutil.copy(os.path.join(folders, "sampleSubmission.csv"), archives)
    for sub in ("train", "test"):
        with zipfile.ZipFile(archives / f"{sub}.zip", "w") as z:
            for f in os.listdir(os.path.join(folders, sub)):
                z.write(os.path.join(folders, sub, f), f"{sub}/{f}")
    from d2lkaggle.data.cifar import make_demo_archive
    cifar100 = make_demo_archive(str(root / "cifar100"), "cifar100", n_train=200, n_test=10)
    data = {"folders": folders, "archives": str(archives), "cifar100": cifar100}
    parser = _one_line_errors(build_parser())
    mp = pytest.MonkeyPatch()

    def run_competition(competition, data_dir, **kw):
        raise Ran(("run", plan_effect(plan_run(competition, data_dir, **kw))))

    def train_members(run_one, comp, data_dir, out, sub, splits, seeds, *, resume, retrain,
                      log, run_kw, variants=None):
        variants = variants or [{} for _ in splits]
        runs = []
        for k, (split, seed, variant) in enumerate(zip(splits, seeds, variants)):
            runs.append(plan_effect(plan_run(
                comp, data_dir, out=os.path.join(out, sub, str(k)), seed=seed, split=split,
                resume=resume, retrain=retrain, log=None, **run_kw, **variant)))
        raise Ran((sub, tuple(runs)))

    def launch_command(backend, nproc, argv):
        return ["LAUNCH", backend, str(nproc), *argv]

    def launch(cmd, *a, **kw):
        raise Ran(("launch", *cmd[1:]))

    def extract(data_dir, *a, **kw):
        raise Ran(("extract", data_dir))

    mp.setattr(cli_train, "run_competition", run_competition)
    mp.setattr(members, "_train_members", train_members)
    mp.setattr(cli_train.subprocess, "run", launch)
    mp.setattr(cli_train.D, "launch_command", launch_command)
    mp.setattr(cli_train.D, "default_nproc", lambda backend: 2)   # (asks no framework)
    mp.setattr(cli_train, "extract_archives", extract)
    # ImageNet weights as if they were in torch's cache: whether they can be found is this
    # machine's state (refused before anything, tests/compete/test_long_runs.py), not a flag's
    import d2lkaggle.compete.run as compete_run
    mp.setattr(compete_run, "check_imagenet_weights", lambda *a, **k: None)
    mp.setattr("builtins.print", lambda *a, **k: None)   # (the launcher's "starting: ...")
    # as on a terminal, where the default shows bars: --quiet, --verbose and the default are
    # three levels (off a terminal the default is --verbose's level already)
    mp.setattr("d2lkaggle.utils.progress.interactive", lambda *a: True)

    def outcome(argv, where="folders"):
        argv = [a.replace("OUT/", str(root / "out") + os.sep) for a in argv]
        try:
            a = parser.parse_args(["run", "demo", "--data-dir", data[where], *argv])
            a.argv = list(argv)
            cli_train.cmd_run(a)
        except Ran as r:
            what = r.args[0]
            if what[0] == "launch":   # each rank runs the same command under the launcher
                _, backend, nproc, *rank_argv = what
                skip = {"--distributed", "--nproc-per-node"}
                rank_argv = [x for i, x in enumerate(rank_argv) if x not in skip
                             and (i == 0 or rank_argv[i - 1] != "--nproc-per-node")]
                rank = outcome(rank_argv, where)
                return rank if rank[0] == "refused" else ("ran", ("launch", backend, nproc,
                                                                  rank[1]))
            return ("ran", what)
        except SystemExit as e:       # argparse: one line by _one_line_errors
            return ("refused", f"exit {e.code}")
        except USER_ERRORS as e:
            line = error_line(e)
            assert "\n" not in line and "internal error" not in line
            return ("refused", line)
        raise AssertionError(f"run {argv}: neither ran nor refused")

    yield outcome
    mp.undo()


def run_flags() -> list[argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices["run"]._actions
            if a.option_strings and a.dest not in ("help", "data_dir")]


def flag_values(action: argparse.Action) -> list[list[str]]:
    """The argument lists that give ``action`` different values (for a switch: absent and
    present)."""
    opt = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [[s] for s in action.option_strings]
    if action.nargs == 0:
        return [[], [opt]]
    if action.choices:
        return ([[opt]] if action.nargs == "?" else []) + [[opt, str(c)] for c in action.choices]
    if action.dest in FREE_TEXT:
        return [[opt, v] for v in FREE_TEXT[action.dest]]
    assert action.type is not None, f"{opt}: free text without values in FREE_TEXT"
    seen, out = [], []
    for text in TYPED:
        try:
            v = action.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        if v not in seen:
            seen.append(v)
            out.append([opt, text])
    assert len(out) >= 2, f"{opt}: fewer than two values of its type among {TYPED}"
    return out


def contexts(recipe: str) -> list[list[str]]:
    """The recipe with every schedule and mixing (its own model) and with every model (its
    own schedule and mixing); the default recipe also trained several ways."""
    out = [SHORT + ["--recipe", recipe, "--sched", s, *m] for s in SCHEDULES
           for m in MIXES.values()]
    out += [SHORT + ["--recipe", recipe, "--model", m] for m in MODEL_NAMES]
    return out + ([SHORT + kind for kind in RUN_KINDS] if recipe == "default" else [])


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_every_run_flag_is_used_or_refused_in_every_context(walk, recipe):
    flags = run_flags()
    ignored, used_somewhere, live = [], set(), 0
    where_ctxs = [("folders", contexts(recipe))]
    if recipe == "default":   # (the data-dependent flags, once)
        where_ctxs += [("archives", [SHORT]), ("cifar100", [SHORT])]
    for where, ctxs in where_ctxs:
        for ctx in ctxs:
            if walk(ctx, where)[0] != "ran" and where == "folders":
                continue   # a combination the recipes do not allow
            live += where == "folders"
            for action in flags:
                opt = action.option_strings[0]
                if DATA_FLAGS.get(opt, "folders") != where or \
                        (action.nargs == 0 and opt in ctx):
                    continue
                ran, refused = {}, False
                for argv in flag_values(action):
                    kind, what = walk(ctx + argv, where)
                    if kind == "ran":
                        ran[" ".join(argv) or f"(no {opt})"] = what
                    refused |= kind == "refused"
                    if len(ran) == ENOUGH:
                        break
                if action.nargs == 0 and refused and len(ran) == 1:
                    used_somewhere.add(opt)   # a switch that lets a refused run go ahead
                if len(ran) < 2:
                    continue   # refused (or only one value accepted: nothing to compare)
                by_effect: dict = {}
                for given, what in ran.items():
                    by_effect.setdefault(what, []).append(given)
                if opt == "--recipe" and "--model" in ctx:
                    # --recipe default --model M is the competition's own recipe for M (as
                    # --recipe M, where that names it): one run under two names, not an unused flag
                    model = ctx[ctx.index("--model") + 1]
                    own = model_recipe(get_competition("demo"), model)
                    by_effect = {k: [g for g in v if not (own is not None and g.endswith(
                        "--recipe default") and own.model in RECIPE_NAMES)] or v[:1]
                                 for k, v in by_effect.items()}
                same = [g for g in by_effect.values() if len(g) > 1]
                if same:
                    ignored.append(f"{' '.join(ctx)}: {' / '.join(same[0])} run the same")
                else:
                    used_somewhere.add(opt)
    assert live >= len(SCHEDULES) * 2, f"only {live} contexts of --recipe {recipe} ran"
    with open(os.environ.get("FLAGS_WALK_LOG", os.devnull), "a") as f:
        f.write("".join(line + "\n" for line in ignored))
    assert not ignored, f"{len(ignored)} flags accepted and not used:\n" + "\n".join(ignored[:25])
    if recipe == "default":
        never = sorted({a.option_strings[0] for a in flags} - used_somewhere)
        assert not never, f"flags never seen to change a run: {never}"


def test_the_issues_examples_are_refused_in_one_line(walk):
    assert walk(["--lr-period", "2"])[1].startswith("--lr-period applies to --sched step")
    assert walk(["--lr-decay", "0.5"])[1].startswith("--lr-decay applies to --sched step")
    assert walk(["--switch-prob", "0.3"])[1].startswith("--switch-prob applies to --mixup and")
    assert walk(["--sched", "step", "--lr-period", "2"])[0] == "ran"
    assert walk(["--mixup", "0.4", "--cutmix", "1", "--switch-prob", "0.3"])[0] == "ran"
    assert walk(["--nproc-per-node", "2"])[1].startswith("--nproc-per-node applies to "
                                                         "--distributed")
    assert walk(["--folds", "2", "--valid-ratio", "0.2"])[1].startswith(
        "--valid-ratio does not apply to --folds")
    assert walk(["--ensemble", "2", "--bagging", "--no-retrain"])[1].startswith(
        "--no-retrain does not apply to --bagging")
