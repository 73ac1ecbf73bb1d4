"""The write-ups end to end through the CLI in every backend, and the stochastic-depth knobs
(``--drop-path`` / ``--stochastic-depth``) from the command line to ``create_model``."""
import csv
import json
import shutil

import pytest

from conftest import backend_params, run_cli, run_py
from d2lkaggle.cli import main
from d2lkaggle.specs.competitions import get_competition, recipe_for
from d2lkaggle.specs.recipe import Recipe
from d2lkaggle.compete.run import run_config


# ----------------------------------------------------------------------------- core and CLI checks

def test_recipe_fields_reach_run_config_and_create_model_kwargs():
    from d2lkaggle.models.build import recipe_kwargs
    comp = get_competition("demo")
    r = recipe_for(comp, "resnet18").with_overrides(drop_path=0.1)   # drop path: ResNet's
    assert run_config(comp, r, backend="torch")["drop_path"] == 0.1      # --resume sees it
    assert run_config(comp, comp.recipe, backend="torch")["stochastic_depth"] is None
    assert recipe_kwargs(r)["drop_path"] == 0.1
    e = r.with_overrides(model="efficientnet_v2_s", drop_path=None)
    e = Recipe(**{**e.__dict__, "drop_path": None, "stochastic_depth": 0.0})
    assert recipe_kwargs(e)["stochastic_depth"] == 0.0                   # 0 is a value, not "unset"
    w = recipe_for(get_competition("cifar100"), "writeup-cifar100-effnetv2")
    assert (w.stochastic_depth, w.drop_path) == (0.2, None)               # seeds/003: torchvision's 0.2
    assert recipe_kwargs(w)["stochastic_depth"] == 0.2


@pytest.mark.parametrize("args, words", [
    (["--drop-path", "1.5"], ["--drop-path", "[0, 1)", "'1.5'"]),
    (["--stochastic-depth", "nan"], ["--stochastic-depth", "[0, 1)"]),
    (["--drop-path", "-0.1"], ["--drop-path", "'-0.1'"]),
    (["--model", "cnn_elu", "--drop-path", "0.1"], ["model 'cnn_elu' has no drop path",
                                                    "resnet18, resnet34"]),
    (["--stochastic-depth", "0.1"], ["model 'airbench94' has no stochastic depth", "efficientnet_v2_s"]),
    (["--model", "resnet18", "--stochastic-depth", "0.1"], ["model 'resnet18' has no stochastic depth",
                                                           "--drop-path"]),
    (["--model", "efficientnet_v2_m", "--drop-path", "0.1"], ["'efficientnet_v2_m'",
                                                              "--stochastic-depth"]),
    (["--recipe", "writeup-cifar10-mixup", "--stochastic-depth", "0.1"], ["'cnn_elu'"]),
])
def test_bad_rates_are_one_line_exit_2(args, words, tmp_path, capsys):
    # checked before any file is read or written (the data folder does not even exist)
    out = tmp_path / "run"
    try:
        rc = main(["run", "demo", "--data-dir", str(tmp_path / "nothing"), "--out", str(out), *args])
    except SystemExit as e:   # argparse's own check of the value
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("d2lkaggle: error:"), err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_help_shows_both_flags_with_defaults():
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(buf.getvalue().split())
    assert "--drop-path RATE" in text and "(default: 0, off)" in text
    assert "--stochastic-depth RATE" in text and "default: 0.2, torchvision's" in text


RATES = r"""
import json, sys, d2lkaggle
from d2lkaggle.cli import build_parser
from d2lkaggle.cli.args import run_kwargs as _run_kwargs
from d2lkaggle.specs.competitions import get_competition, recipe_for
from d2lkaggle.compete.run import _random_init
from d2lkaggle.models.build import build_net
backend = sys.argv[1]
bk = d2lkaggle.get_backend(backend)
def modules(net):
    if backend == "torch":
        return list(net.modules())
    if backend == "paddle":
        return net.sublayers(include_self=True)
    out, todo = [], [net]
    while todo:
        b = todo.pop()
        out.append(b)
        todo.extend(b._children.values())
    return out
for argv in json.loads(sys.argv[2]):   # one command line each: what its net's blocks drop
    a = build_parser().parse_args(["run", argv[0], "--data-dir", "x", *argv[1:]])
    kw = _run_kwargs(a)
    recipe = _random_init(recipe_for(get_competition(argv[0]), kw["recipe"]).with_overrides(
        **{k: kw.get(k) for k in ("model", "drop_path", "stochastic_depth", "weights")}))
    ps = [m.p for m in modules(build_net(bk, recipe, 10, 32)) if type(m).__name__ == "StochasticDepth"]
    print(len(ps), max(ps, default=0.0))
"""


@pytest.mark.parametrize("backend", backend_params())
def test_flags_reach_create_model_in_every_backend(backend):
    runs = [["demo", "--recipe", "resnet18", "--drop-path", "0.4"], ["demo", "--recipe", "resnet18"],
            ["cifar100", "--recipe", "writeup-cifar100-effnetv2", "--stochastic-depth", "0.3",
             "--weights", "none"],
            ["cifar100", "--recipe", "writeup-cifar100-effnetv2", "--weights", "none"]]
    r = run_py(RATES, backend, json.dumps(runs))
    assert r.returncode == 0, r.stderr[-3000:]
    got = [(int(n), float(p)) for n, p in (line.split() for line in r.stdout.split("\n") if line)]
    # resnet18 (8 blocks): block i drops with 0.4·i/8 → the last one 0.35; none by default
    assert got[0][0] >= 7 and got[0][1] == pytest.approx(0.4 * 7 / 8)
    assert got[1][1] == 0.0
    # EfficientNetV2-S (40 blocks): the last one 0.3·39/40; the write-up recipe's own 0.2
    assert got[2][1] == pytest.approx(0.3 * 39 / 40) and got[3][1] == pytest.approx(0.2 * 39 / 40)


# ----------------------------------------------------------------------------- the write-ups end to end

@pytest.fixture(scope="module")
def effnet_files(tmp_path_factory):
    """A torchvision-format EfficientNetV2-S ``.pth`` (1000 ImageNet classes, random init: no
    download here) and the same weights as a neutral ``.safetensors`` (``weights convert``)."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("effnet")
    pth, neutral = str(d / "effnet_s_random.pth"), str(d / "effnet_s_random.safetensors")
    r = run_py("import sys, torch, torchvision; torch.manual_seed(0);"
               "torch.save(torchvision.models.efficientnet_v2_s().state_dict(), sys.argv[1])", pth)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("weights", "convert", pth, neutral)
    assert r.returncode == 0, r.stderr[-3000:]
    yield {"pth": pth, "safetensors": neutral}
    shutil.rmtree(d, ignore_errors=True)


def _submission(path, n_test, classes):
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["id", "label"]
    assert [x[0] for x in rows[1:]] == [str(i) for i in range(1, n_test + 1)]
    assert {x[1] for x in rows[1:]} <= set(classes)


@pytest.mark.parametrize("backend", backend_params())
def test_003_recipe_through_the_cli(backend, effnet_files, tmp_path):
    from cifar_archives import FINE, write_cifar100
    write_cifar100(str(tmp_path), n_train=60, n_test=10)
    # torch reads the .pth; MXNet and Paddle the neutral file (torch never enters their process)
    weights = effnet_files["pth" if backend == "torch" else "safetensors"]
    out = tmp_path / "run"
    r = run_cli("run", "cifar100", "--data-dir", str(tmp_path / "cifar-100-python.tar.gz"),
                "--backend", backend, "--recipe", "writeup-cifar100-effnetv2", "--weights", weights,
                "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--predict-with", "last",
                "--out", str(out), "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    said = r.stdout + r.stderr            # 1000 ImageNet classes → 100: said once per model built
    assert "the head is replaced" in said and "(1000, 1280)" in said, said[-3000:]
    s = json.load(open(out / "summary.json"))
    rec = s["recipe"]
    assert (rec["model"], rec["optimizer"], rec["lr"], rec["wd"], rec["sched"]) == (
        "efficientnet_v2_s", "adamw", 4e-4, 1e-3, "step")
    assert (rec["cutmix"], rec["mix_prob"], rec["augment"], rec["normalize"]) == (
        1.0, 0.5, "crop-flip-rotate", "imagenet")
    assert rec["stochastic_depth"] == 0.2 and s["config"]["stochastic_depth"] == 0.2
    assert rec["weights"] == weights and rec["epochs"] == 1 and s["image_size"] == 32
    assert s["num_classes"] == 100 and 0.0 <= s["test_acc"] <= 1.0
    _submission(out / "submission.csv", 10, FINE)


@pytest.mark.parametrize("backend", backend_params("mxnet", "paddle"))
def test_004_recipe_through_the_cli(backend, tmp_path):
    # (torch: tests/specs/test_writeups.py runs this recipe through the CLI on the demo folder)
    from cifar_archives import CIFAR10_NAMES, write_cifar10
    write_cifar10(str(tmp_path), n_train=120, n_test=12)
    out = tmp_path / "run"
    r = run_cli("run", "cifar10", "--data-dir", str(tmp_path / "cifar-10-python.tar.gz"),
                "--backend", backend, "--recipe", "writeup-cifar10-mixup", "--epochs", "1",
                "--batch-size", "16", "--out", str(out), "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    rec = s["recipe"]
    assert (rec["model"], rec["optimizer"], rec["lr"], rec["wd"], rec["sched"], rec["cycle_mode"]) == (
        "cnn_elu", "adam", 2e-3, 1e-3, "cyclic", "triangular2")
    assert (rec["mixup"], rec["augment"], rec["keep"], rec["drop_path"]) == (0.4, "crop-flip", "best", None)
    assert s["predict_with"] == "best" and s["tricks"]["mixing"]["mixup_alpha"] == 0.4
    assert (out / "checkpoints" / "valid" / "best.npz").exists()
    assert 0.0 <= s["test_acc"] <= 1.0
    _submission(out / "submission.csv", 12, CIFAR10_NAMES)
