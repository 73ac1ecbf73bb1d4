import json

import pytest

import d2lkaggle
from d2lkaggle.utils import registry

from conftest import run_py


def test_import_loads_no_framework():
    r = run_py("import sys, json, d2lkaggle; d2lkaggle.backends();"
               "print(json.dumps([m for m in ('torch', 'mxnet', 'paddle') if m in sys.modules]))")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError) as e:
        d2lkaggle.get_backend("tensorflow")
    msg = str(e.value)
    assert "tensorflow" in msg and "torch" in msg and "mxnet" in msg and "paddle" in msg


@pytest.mark.parametrize("alias,name", [("pytorch", "torch"), ("mx", "mxnet"),
                                        ("paddlepaddle", "paddle"), ("Torch", "torch")])
def test_aliases(alias, name):
    assert registry.canonical_name(alias) == name


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(registry, "_cache", {})
    assert registry.backends() == []
    with pytest.raises(registry.BackendNotInstalled) as e:
        registry.get_backend("mx")
    assert 'pip install "d2lkaggle[mxnet]"' in str(e.value)


def test_backends_lists_installed_without_importing():
    r = run_py("import sys, json, d2lkaggle; b = d2lkaggle.backends();"
               "print(json.dumps([b, [m for m in ('torch','mxnet','paddle') if m in sys.modules]]))")
    assert r.returncode == 0, r.stderr
    listed, imported = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(listed) <= {"torch", "mxnet", "paddle"} and imported == []
    assert listed == [n for n in ("torch", "mxnet", "paddle") if registry.is_installed(n)]


def test_get_backend_imports_lazily_and_caches():
    if not registry.is_installed("torch"):
        pytest.skip("torch is not installed")
    r = run_py("import sys, d2lkaggle; a = d2lkaggle.get_backend('pytorch');"
               "b = d2lkaggle.get_backend('torch'); print(a is b, a.__name__, 'mxnet' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-3:] == ["True", "d2lkaggle.torch_impl", "False"]
