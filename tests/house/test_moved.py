"""The flat core's old import paths keep working for one release, with a warning naming the new
path; every room's export table resolves."""
import importlib
import subprocess
import sys

import pytest

from conftest import ROOT
from d2lkaggle._moved import MOVED


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_resolves_to_its_new_home(old):
    homes = [importlib.import_module(m) for m in MOVED[old]]
    with pytest.warns(FutureWarning, match=MOVED[old][0].replace(".", r"\.")):
        sys.modules.pop(old, None)
        mod = importlib.import_module(old)
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert any(getattr(h, name, None) is obj for h in homes), (old, name)


def test_the_documented_old_imports_still_work():
    r = _fresh("from d2lkaggle.pipeline import run_competition, load_data, write_submission\n"
               "from d2lkaggle.ensemble import soft_vote, stratified_folds, ensemble_runs\n"
               "from d2lkaggle.competitions import get_competition, Recipe\n"
               "from d2lkaggle.datasets import make_demo\n"
               "import d2lkaggle.hub as hub; print(hub.default_data_dir.__module__, hub.extract.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["d2lkaggle.data.hub", "d2lkaggle.data.archives"]
    assert "d2lkaggle.pipeline moved in d2lkaggle 0.2: import from d2lkaggle.compete.run" in r.stderr
    assert "<string>:1: FutureWarning" in r.stderr   # the warning points at the user's line


def test_an_old_module_runs_as_a_script():
    r = _fresh("import runpy, sys; sys.argv = ['x', '--help']; "
               "runpy.run_module('d2lkaggle.pslaunch', run_name='__main__')")
    assert r.returncode == 0, r.stderr
    assert "usage: python -m d2lkaggle.parallel.pslaunch" in r.stdout
    assert "d2lkaggle.pslaunch moved" in r.stderr


def test_a_missing_name_is_an_attribute_error():
    with pytest.warns(FutureWarning):
        sys.modules.pop("d2lkaggle.tta", None)
        mod = importlib.import_module("d2lkaggle.tta")
    with pytest.raises(AttributeError, match="d2lkaggle.train.tta"):
        mod.no_such_name


@pytest.mark.parametrize("room", ["utils", "parallel", "data", "train", "models", "specs",
                                  "common", "compete"])
def test_each_room_exports_what_its_table_says(room):
    pkg = importlib.import_module("d2lkaggle." + room)
    for name, module in pkg.EXPORTS.items():
        obj = getattr(pkg, name)
        # a name that lives in a room below is named by its full path (compete's COMPETITIONS)
        path = module if module.startswith("d2lkaggle.") else f"d2lkaggle.{room}.{module}"
        assert getattr(importlib.import_module(path), name) is obj
    with pytest.raises(AttributeError):
        getattr(pkg, "no_such_name")


def test_the_old_loader_and_model_names_on_their_packages():
    from d2lkaggle.data import ArraySource, FileSource, ImageLoader  # the old d2lkaggle.data
    from d2lkaggle.models import IMAGENET_WEIGHTS, MODEL_NAMES         # the old d2lkaggle.models
    assert ImageLoader.__module__ == "d2lkaggle.data.loader" and ArraySource and FileSource
    assert "resnet18" in MODEL_NAMES and IMAGENET_WEIGHTS
