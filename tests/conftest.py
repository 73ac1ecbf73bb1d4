"""Shared fixtures: tiny generated competitions and a framework-free training step."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from d2lkaggle.utils.registry import is_installed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: modules whose module- or session-scoped fixture is expensive (a trained model, a saved
#: network): their tests stay on one pytest-xdist worker, so the fixture is built once
ONE_WORKER_MODULES = {"test_backend_optim", "test_backends", "test_contract", "test_end_to_end",
                      "test_models", "test_mxnet_backend", "test_writeup_cli",
                      "test_weights_advice",
                      # several processes and ports each: one such test at a time
                      "test_distributed", "test_distributed_mxnet", "test_distributed_paddle"}


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one xdist worker")


def pytest_itemcollected(item):
    """Group tests for ``--dist loadgroup`` (setup.cfg runs the suite on every core): the
    parity run is one session fixture, a docs page runs once for all tests that read its
    output (tests/docs_runner.run_page_once), and ONE_WORKER_MODULES. (Marked here, as each
    test is collected: xdist reads the marks in its own collection_modifyitems.)"""
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if os.sep + "parity" + os.sep in str(item.path):
        group = "parity"
    elif module.startswith("test_docs") and "tmp_path_factory" in item.fixturenames:
        page = params.get("path") or params.get("name") or module[len("test_docs_"):] + ".md"
        group = "doc-" + os.path.basename(page)
    elif module in ONE_WORKER_MODULES:
        group = module
    else:
        return
    item.add_marker(pytest.mark.xdist_group(group))


def backend_params(*names: str):
    """pytest params for backends, skipped with the reason when a framework is missing."""
    names = names or ("torch", "mxnet", "paddle")
    return [pytest.param(n, marks=pytest.mark.skipif(
        not is_installed(n), reason=f"{n} is not installed (pip install \"d2lkaggle[{n}]\")"))
        for n in names]


def tiny_loaders(n: int = 64, size: int = 16, classes: int = 4, seed: int = 0, bs: int = 16):
    """A learnable set in memory: the class decides which vertical band of the image is bright."""
    from d2lkaggle.data.loader import ArraySource, ImageLoader
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, c * size // classes:(c + 1) * size // classes] += 150
    tr = ImageLoader(ArraySource(x), y, bs, shuffle=True, drop_last=True, seed=seed,
                     mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25))
    va = ImageLoader(ArraySource(x[:32]), y[:32], bs, mean=tr.mean, std=tr.std)
    return tr, va


def run_py(code: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run python code in a fresh interpreter (one framework per process)."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the ``d2lkaggle`` command in a fresh interpreter."""
    return run_py("import sys; from d2lkaggle.cli import main; sys.exit(main(sys.argv[1:]))",
                  *args, timeout=timeout)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> str:
    """A small CIFAR-10-layout competition (200 train / 30 test PNGs, 32×32)."""
    from d2lkaggle.data.demo import make_demo
    return make_demo(str(tmp_path_factory.mktemp("demo") / "cifar"), n_train=200, n_test=30, seed=1)


@pytest.fixture(scope="session")
def dog_dir(tmp_path_factory) -> str:
    """A small Dog-Breed-layout competition (variable-size JPEGs, hex ids, 4 breeds)."""
    from d2lkaggle.data.demo import make_demo
    return make_demo(str(tmp_path_factory.mktemp("dog") / "dog"), n_train=48, n_test=10, size=40,
                     seed=2, layout="dog", num_classes=4)


class NumpyStep:
    """Softmax regression in numpy implementing the loop's step interface (for core tests)."""

    def __init__(self, num_features: int, num_classes: int, seed: int = 0, momentum: float = 0.9):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(0, 0.01, (num_features, num_classes))
        self.b = np.zeros(num_classes)
        self.vw, self.vb = np.zeros_like(self.w), np.zeros_like(self.b)
        self.lr, self.momentum = 0.0, momentum
        self.lrs: list[float] = []

    def set_lr(self, lr):
        self.lr = lr
        self.lrs.append(lr)

    def _probs(self, x):
        z = x.reshape(len(x), -1).astype(np.float64) / 255.0 @ self.w + self.b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def train_batch(self, x, y):
        p = self._probs(x)
        n = len(y)
        loss = -np.log(p[np.arange(n), y] + 1e-12)
        g = p.copy()
        g[np.arange(n), y] -= 1
        g /= n
        feats = x.reshape(n, -1).astype(np.float64) / 255.0
        self.vw = self.momentum * self.vw + feats.T @ g
        self.vb = self.momentum * self.vb + g.sum(0)
        self.w -= self.lr * self.vw
        self.b -= self.lr * self.vb
        return float(loss.sum()), int((p.argmax(1) == y).sum()), n

    def eval_batch(self, x, y):
        p = self._probs(x)
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).sum()), int((p.argmax(1) == y).sum()), len(y)

    def predict_batch(self, x):
        return self._probs(x)

    def state_dict(self):
        return {"model/w": self.w.copy(), "model/b": self.b.copy(),
                "optim/w/momentum": self.vw.copy(), "optim/b/momentum": self.vb.copy()}

    def load_state_dict(self, s):
        self.w, self.b = s["model/w"].copy(), s["model/b"].copy()
        self.vw, self.vb = s["optim/w/momentum"].copy(), s["optim/b/momentum"].copy()


@pytest.fixture
def blobs():
    """A learnable 4-class set of 8×8 images: the class sets which quadrant is bright."""
    rng = np.random.default_rng(0)
    n = 160
    y = np.arange(n) % 4
    x = rng.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * 4:(r + 1) * 4, q * 4:(q + 1) * 4] += 150
    return x, y.astype(np.int64)


@pytest.fixture(scope="session")
def parity_reports(request, tmp_path_factory) -> dict[str, dict]:
    """One parity run per session (tests/parity): each test module there names its comparisons
    in a module-level ``PARITY_CASES = {name: run_parity keywords}``; all cases of the selected
    modules run together, ONE process per backend (a framework import costs seconds; a process
    per case and task was most of that folder's time). Maps each name to its report; names are
    unique across modules."""
    from d2lkaggle.models.parity import run_cases
    installed = [b for b in ("torch", "mxnet", "paddle") if is_installed(b)]
    if len(installed) < 2:
        pytest.skip(f"parity needs two installed backends, found {installed}")
    cases: dict[str, dict] = {}
    for module in {item.module for item in request.session.items if getattr(item, "module", None)}:
        for name, case in getattr(module, "PARITY_CASES", {}).items():
            if cases.setdefault(name, case) != case:
                raise ValueError(f"parity case {name!r} is defined twice with different settings")
    return run_cases(cases, workdir=str(tmp_path_factory.mktemp("parity")))
