"""Parity of the optimizers (issue 11): ten float64 steps of each optimizer with a cyclic
learning rate per step and MixUp'd soft targets, every backend in its own process.

One report (a case of the session's parity run, tests/conftest.py: one process per backend trains
all four optimizers) serves the tests; tolerance 1e-5 relative per tensor (docs/parity.md:
the conventions agree to ~1e-7).
"""
import pytest

from d2lkaggle.models.parity import OPTIMIZER_RUNS, cyclic_lrs
from d2lkaggle.utils.registry import is_installed

INSTALLED = [b for b in ("torch", "mxnet", "paddle") if is_installed(b)]
pytestmark = pytest.mark.skipif(len(INSTALLED) < 2, reason=f"parity needs two installed backends, found {INSTALLED}")
OPTIMIZERS = ["sgd", "nesterov", "adam", "adamw"]
PARITY_CASES = {"optimizers": dict(model="resnet18-tiny", steps=10, tasks=("train64",),
                                   optimizers=OPTIMIZERS, mixing=True)}


@pytest.fixture
def report(parity_reports):
    return parity_reports["optimizers"]


def test_every_pair_and_optimizer_compared(report):
    pairs = len(INSTALLED) * (len(INSTALLED) - 1) // 2
    assert len(report["rows"]) == pairs * len(OPTIMIZERS)
    assert sorted({r["optimizer"] for r in report["rows"]}) == sorted(OPTIMIZERS)
    # the rate really cycles (triangular2: lr/2 → 2·lr → lr/2, then half the amplitude)
    lrs = cyclic_lrs(1.0, 10)
    assert lrs[:5] == pytest.approx([0.5, 1.25, 2.0, 1.25, 0.5]) and max(lrs[4:9]) == pytest.approx(1.25)


def _check(report, optimizer):
    rows = [r for r in report["rows"] if r["optimizer"] == optimizer]
    assert rows
    for row in rows:
        for m in ("f64_step1_params_rel", "f64_final_params_rel", "f64_final_momentum_rel",
                  "f64_final_bn_rel"):
            assert row[m] <= 1e-5, (optimizer, m, row)
        # the soft-target loss: −Σ y·log_softmax(z), batch mean, the same in every backend
        assert row["f64_loss_abs"] <= 1e-6, row


def test_sgd_with_soft_targets_and_cyclic_lr(report):
    _check(report, "sgd")


def test_nesterov(report):
    _check(report, "nesterov")


def test_adam(report):
    _check(report, "adam")


def test_adamw(report):
    _check(report, "adamw")
    assert OPTIMIZER_RUNS["adamw"]["wd_exclude"] == "bn_bias"   # the grouping is compared too
