"""Cross-framework parity: the same neutral weights and batches in each backend's own process.

Tolerances and why they are what they are: docs/parity.md. Every comparison below is one
case of the session's single parity run (tests/conftest.py: one process per backend for all).
"""
import pytest

from d2lkaggle.utils.registry import is_installed

INSTALLED = [b for b in ("torch", "mxnet", "paddle") if is_installed(b)]
pytestmark = pytest.mark.skipif(len(INSTALLED) < 2, reason=f"parity needs two installed backends, found {INSTALLED}")

PARITY_CASES = {
    "resnet18": dict(model="resnet18", steps=10),
    "resnet34": dict(model="resnet34", steps=1, tasks=("forward",)),
    "finetune": dict(model="finetune", steps=10, tasks=("forward", "train")),
    "cnn_elu": dict(model="cnn_elu", steps=6, tasks=("forward", "train64")),
    "efficientnet_v2_s": dict(model="efficientnet_v2_s", steps=1, tasks=("forward",)),
    "airbench94": dict(model="airbench94", steps=8),
}


@pytest.fixture
def resnet18_report(parity_reports):
    return parity_reports["resnet18"]


def test_all_installed_backends_compared(resnet18_report):
    assert resnet18_report["backends"] == INSTALLED
    assert len(resnet18_report["rows"]) == len(INSTALLED) * (len(INSTALLED) - 1) // 2


def test_resnet18_forward(resnet18_report):
    for row in resnet18_report["rows"]:
        assert row["forward_abs"] <= 1e-4, row


def test_one_training_step(resnet18_report):
    # one SGD step in float32: every parameter and BatchNorm statistic agrees (running_var
    # mapped exactly from the biased to torch's unbiased convention)
    for row in resnet18_report["rows"]:
        assert row["step1_params_rel"] <= 1e-3, row
        assert row["step1_bn_rel"] <= 1e-5, row


def test_ten_training_steps_with_a_lr_change_in_float64(resnet18_report):
    # the same ten steps in float64: momentum form, loss scale, weight decay, BatchNorm
    # momentum and variance, lr change — every convention — agree to float32 output rounding
    for row in resnet18_report["rows"]:
        for m in ("f64_step1_params_rel", "f64_final_params_rel", "f64_final_momentum_rel",
                  "f64_final_bn_rel"):
            assert row[m] <= 1e-5, (m, row)
        assert row["f64_loss_abs"] <= 1e-6, row


def test_ten_float32_steps_differ_only_as_much_as_float32_itself(resnet18_report):
    # float32 training of this net drifts from float64 by ~1e-2 in ten steps in ANY framework
    # (docs/parity.md); two frameworks must be no further apart than that drift
    drift = {r["pair"].split()[0]: r for r in resnet18_report["rounding"]}
    assert set(drift) == set(INSTALLED)
    for row in resnet18_report["rows"]:
        a, b = row["pair"].split(" vs ")
        for m in ("final_params_l2_rel", "final_bn_rel", "loss_abs"):
            envelope = max(drift[a][m], drift[b][m])
            assert row[m] <= 3 * envelope, (m, row[m], envelope)
        assert row["final_params_l2_rel"] <= 2e-2, row


def test_data_pipeline_is_byte_identical(resnet18_report):
    for row in resnet18_report["rows"]:
        assert row["batches_identical"], row
        assert row["to_tensor_abs"] <= 1e-6, row


def test_resnet34_forward(parity_reports):
    report = parity_reports["resnet34"]
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, row


def test_finetune_forward_and_ten_float32_steps(parity_reports):
    # the Dog chapter's setting: frozen backbone (no BatchNorm backward), only the head trains;
    # here float32 itself stays within 1e-3 after ten steps with an lr change
    report = parity_reports["finetune"]
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, row
        assert row["final_params_rel"] <= 1e-3 and row["final_momentum_rel"] <= 1e-3, row
        assert row["final_bn_rel"] == 0.0, row   # frozen statistics never move
        assert row["loss_rel"] <= 1e-4, row   # (the head's loss spikes to ~430 at step 4)


def test_cnn_elu_forward_and_float64_steps(parity_reports):
    # the MixUp write-up's ELU CNN (dropout off: its masks are each framework's own random
    # numbers) at 64 px; six float64 steps with an lr change after five
    report = parity_reports["cnn_elu"]
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, row
        assert row["f64_step1_params_rel"] <= 1e-6, row
        # this net (He init, 16384-wide FC, lr 0.01) amplifies even float64 rounding ~10x per
        # step (docs/models.md): the conventions agree, the tail is chaos
        assert row["f64_final_params_l2_rel"] <= 1e-6 and row["f64_final_params_rel"] <= 1e-5, row
        assert row["f64_final_bn_rel"] <= 1e-5 and row["f64_loss_abs"] <= 1e-5, row


def test_efficientnet_v2_s_saved_by_torch_forward(parity_reports):
    # one neutral checkpoint of torchvision's EfficientNetV2-S loads into every backend
    report = parity_reports["efficientnet_v2_s"]
    assert len(report["rows"]) == len(INSTALLED) * (len(INSTALLED) - 1) // 2
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, row


def test_airbench94_forward_and_its_optimizer_in_float64(parity_reports):
    """The record's net (GELU, BatchNorm eps 1e-12, max-pools, the scaled head) and its
    optimizer (Nesterov 0.85, BatchNorm biases at 64 × lr and wd / 64, the whitening bias
    frozen after step 5): forward ≤ 1e-4 in float32, eight steps in float64 ≤ 1e-5."""
    report = parity_reports["airbench94"]
    assert report["backends"] == INSTALLED
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, row
        assert row["step1_bn_rel"] <= 1e-4, row
        for m in ("f64_step1_params_rel", "f64_final_params_rel", "f64_final_momentum_rel",
                  "f64_final_bn_rel"):
            assert row[m] <= 1e-5, (m, row)
