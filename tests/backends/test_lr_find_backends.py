"""lr_find in every backend (each in its own subprocess): same call, weights restored, a sane
suggestion on a tiny learnable set, lr_find.png written."""
import json

import pytest

from conftest import backend_params, run_py

SCRIPT = r"""
import json, os, sys
import numpy as np
import d2lkaggle
B = d2lkaggle.get_backend(sys.argv[1])
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from conftest import tiny_loaders

B.set_seed(0)
net = B.resnet18(4, 3, 4)
tr, _ = tiny_loaders(n=64, size=16)
before = B.get_state(net)
png = os.path.join(sys.argv[2], "lr_find.png")
res = B.lr_find(net, tr, 1e-5, 10.0, 30, amp=False, plot=png, progress=False)
after = B.get_state(net)
print(json.dumps({"suggestion": res.suggestion, "rule": res.rule, "n": len(res.lrs),
                  "stopped": res.stopped, "first": res.lrs[0], "losses_finite":
                  bool(np.all(np.isfinite(res.losses))),
                  "restored": max(float(np.abs(before[k] - after[k]).max()) for k in before),
                  "png": os.path.getsize(png)}))
"""


@pytest.mark.parametrize("backend", backend_params())
def test_lr_find(backend, tmp_path):
    r = run_py(SCRIPT, backend, str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["restored"] == 0.0                       # weights and BN statistics put back
    assert 5 < out["n"] <= 30 and out["first"] == pytest.approx(1e-5) and out["losses_finite"]
    # SGD on this set trains well at 0.01-0.5; anything in 1e-4..5 is a usable starting point
    assert 1e-4 <= out["suggestion"] <= 5, out
    assert out["png"] > 10_000
