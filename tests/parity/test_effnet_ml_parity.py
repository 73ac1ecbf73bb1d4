"""EfficientNetV2-M (and, by command, -L): a torch-saved neutral file loads into MXNet and
Paddle and the eval-mode logits agree — each backend in its own process (d2lkaggle.models.parity;
-M is a case of the session's one parity run, tests/conftest.py).

-L is the same code with 2.2× the parameters (118 M; ~50 s here, more than this file may
add to the suite): it runs as ``d2lkaggle parity --model efficientnet_v2_l`` (docs/models.md
gives the figures).
"""
import os

import pytest

from d2lkaggle.models.parity import MODELS
from d2lkaggle.utils.registry import is_installed

INSTALLED = [b for b in ("torch", "mxnet", "paddle") if is_installed(b)]
pytestmark = pytest.mark.skipif("torch" not in INSTALLED or len(INSTALLED) < 2,
                                reason=f"needs torch (the saving side) and another backend, found {INSTALLED}")
PARITY_CASES = {"efficientnet_v2_m": dict(model="efficientnet_v2_m", steps=1, tasks=("forward",))}


def _check(report, model):
    assert report["backends"] == INSTALLED
    assert len(report["rows"]) == len(INSTALLED) * (len(INSTALLED) - 1) // 2
    for row in report["rows"]:
        assert row["forward_abs"] <= 1e-4, (model, row)


def test_efficientnet_v2_m_saved_by_torch_forward(parity_reports):
    # the shared file is the torch net's own state (torchvision's names), written as neutral
    # safetensors; mxnet and paddle map every tensor of it or fail listing the mismatches
    report = parity_reports["efficientnet_v2_m"]
    _check(report, "efficientnet_v2_m")
    from safetensors.numpy import load_file
    state = load_file(os.path.join(report["workdir"], "weights.safetensors"))
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) > 50e6
    assert "features.7.4.block.3.0.weight" in state          # the seventh stage's last MBConv
    assert MODELS["efficientnet_v2_m"]["size"] <= 32          # small px keeps it in seconds


def test_efficientnet_v2_l_is_one_command():
    # -L (118 M parameters, ~50 s for the three processes) is measured by command, not here
    from conftest import run_cli
    r = run_cli("parity", "--help")
    assert r.returncode == 0 and "efficientnet_v2_l" in r.stdout, r.stderr
    assert MODELS["efficientnet_v2_l"]["forward_only"]
