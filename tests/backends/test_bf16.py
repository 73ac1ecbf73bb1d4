"""bf16 where the CPU has it: each backend's bf16 training learns as its float32 training does.

One fresh process per backend (one framework per process) trains the same seeded net on the
same tiny learnable set twice, ``amp=True`` (bf16) and ``amp=False`` (float32), and reports
what each run says it computed in. Where the backend's capability flag
``SUPPORTS_BF16`` is False (Paddle's dygraph has no CPU bf16 path), ``amp=True`` must train in
float32 and say so — decided on the flag, never on the backend's name. The demo
itself, 3 seeds per backend in both precisions, is measured in docs/speed.md.
"""
import json

import pytest

from conftest import backend_params, run_py

SCRIPT = r"""
import json, os, sys
import numpy as np
import d2lkaggle
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from conftest import tiny_loaders
B = d2lkaggle.get_backend(sys.argv[1])
out = {"supports": bool(B.SUPPORTS_BF16)}
# without bf16 (the flag says so), amp=True must still train, in float32, and say so
for amp in ((True, False) if out["supports"] else (True,)):
    B.set_seed(0)
    net = B.resnet18(4, 3, 8)
    tr, va = tiny_loaders(n=96, size=16)
    h = B.train(net, tr, va, 4, 2e-3, 0.05, optimizer="adamw", amp=amp, progress=False,
                log=None)
    out[str(amp)] = {"acc": h.column("valid_acc"), "loss": h.column("train_loss"),
                     "devices": h.devices, "state": float(np.abs(B.get_state(net)["fc.weight"]).sum())}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("backend", backend_params())
def test_bf16_learns_like_float32(backend):
    r = run_py(SCRIPT, backend, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:])
    if not res["supports"]:   # asked for bf16 without it: float32, said as such, and it learns
        run = res["True"]
        assert run["devices"].endswith(", float32"), res
        assert run["acc"][-1] >= 0.9 and run["loss"][-1] < 0.5 * run["loss"][0], res
        return
    bf16, fp32 = res["True"], res["False"]
    # what ran is what the run says (summary.json's devices: "cpu, bf16")
    assert bf16["devices"].endswith(", bf16") and fp32["devices"].endswith(", float32"), res
    assert bf16["state"] != fp32["state"], res          # two different computations ...
    assert fp32["acc"][-1] >= 0.9, res                   # ... the set is learnt ...
    assert abs(bf16["acc"][-1] - fp32["acc"][-1]) <= 0.01, res   # ... bf16 within one point
    assert bf16["loss"][-1] < 0.5 * bf16["loss"][0], res
