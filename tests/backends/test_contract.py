"""Every backend exports the same public names with the same signatures and files."""
import json
import os

import pytest

from conftest import ROOT, backend_params, run_py

DUMP = """
import inspect, json, sys, d2lkaggle
b = d2lkaggle.get_backend(sys.argv[1])
out = {}
for name in sorted(b.__all__):
    obj = getattr(b, name)
    if inspect.isfunction(obj):
        sig = inspect.signature(obj)
        out[name] = [(p.name, str(p.kind), repr(p.default) if p.default is not inspect._empty else None)
                     for p in sig.parameters.values()]
    else:
        out[name] = type(obj).__name__ if not inspect.isclass(obj) else "class"
print(json.dumps(out))
"""


def dump(backend):
    r = run_py(DUMP, backend)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference():
    from d2lkaggle.utils.registry import is_installed
    if not is_installed("torch"):
        pytest.skip("torch (the reference backend) is not installed")
    return dump("torch")


@pytest.mark.parametrize("backend", backend_params("mxnet", "paddle"))
def test_same_public_api_as_torch(backend, reference):
    api = dump(backend)
    assert sorted(api) == sorted(reference)
    for name, sig in reference.items():
        if name == "NAME":
            continue
        assert api[name] == sig, f"{backend}.{name}: {api[name]} != torch {sig}"


def test_same_file_names():
    files = {b: sorted(f for f in os.listdir(os.path.join(ROOT, "d2lkaggle", f"{b}_impl"))
                       if f.endswith(".py"))
             for b in ("torch", "mxnet", "paddle")}
    assert {"__init__.py", "book.py", "data.py", "models.py", "optim.py", "train.py",
            "weights.py"} <= set(files["torch"])
    assert files["mxnet"] == files["torch"] == files["paddle"]


@pytest.mark.parametrize("backend", backend_params())
def test_model_table_is_the_cores(backend):
    # every backend's list_models() is the core's one list, and each name builds through
    # create_model (checked without building: the builder each name maps to exists)
    from d2lkaggle.models.table import BUILDERS, MODEL_NAMES
    r = run_py("import json, sys, d2lkaggle; from d2lkaggle.models.table import BUILDERS\n"
               "b = d2lkaggle.get_backend(sys.argv[1]); m = sys.modules[b.__name__ + '.models']\n"
               "print(json.dumps([b.list_models(), [n for n, f in BUILDERS.items() "
               "if not callable(getattr(m, f, None))]]))", backend)
    assert r.returncode == 0, r.stderr[-2000:]
    names, missing = json.loads(r.stdout.strip().splitlines()[-1])
    assert names == list(MODEL_NAMES) and missing == []
    assert set(BUILDERS) == set(MODEL_NAMES)


FEATURES_DUMP = """
import inspect, json, sys, importlib
m = importlib.import_module(f"d2lkaggle.{sys.argv[1]}_impl.features")
print(json.dumps({n: [(p.name, str(p.kind), repr(p.default) if p.default is not inspect._empty
                       else None) for p in inspect.signature(getattr(m, n)).parameters.values()]
                  for n in ("backbone_state", "uses_amp", "backbone_features", "train_head")}))
"""


@pytest.mark.parametrize("backend", backend_params("mxnet", "paddle"))
def test_features_wing_has_torchs_signatures(backend):
    # what d2lkaggle.train.features (--cache-features) calls in every wing
    from d2lkaggle.utils.registry import is_installed
    if not is_installed("torch"):
        pytest.skip("torch (the reference backend) is not installed")
    ref, got = (json.loads(run_py(FEATURES_DUMP, b).stdout.strip().splitlines()[-1])
                for b in ("torch", backend))
    assert got == ref
