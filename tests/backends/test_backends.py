"""The same behaviour checks for every backend, each backend in its own subprocess.

One script exercises the public API (models, canonical weights, frozen fine-tuning, softmax
over classes, resume equivalence, CPU fallback, weight-file errors) and prints JSON; the
tests compare its results with expectations and with the torch backend's.
"""
import json

import pytest

from conftest import backend_params, run_py

SCRIPT = r"""
import json, os, sys, tempfile
import numpy as np
import d2lkaggle
B = d2lkaggle.get_backend(sys.argv[1])
tmp = sys.argv[2]
out = {}

sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from conftest import tiny_loaders as loaders  # the same learnable set as the in-process tests

x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
out["shapes"] = [list(B.forward(B.resnet18(10, 3, 8), x).shape), list(B.forward(B.resnet34(), x).shape),
                 list(B.forward(B.finetune_net(120), x).shape)]
out["devices"] = [str(d) for d in B.try_all_gpus()]
out["names18"] = {k: list(v.shape) for k, v in B.get_state(B.resnet18(10, 3, 8)).items()}
out["names_ft"] = {k: list(v.shape) for k, v in B.get_state(B.finetune_net(7)).items()}

# frozen fine-tuning: only the head moves, backbone parameters and BN statistics stay put
B.set_seed(0)
ft = B.finetune_net(4)
before = B.get_state(ft)
tr, va = loaders(size=32)
B.train(ft, tr, va, 2, 0.05, 1e-4, progress=False, log=None)
after = B.get_state(ft)
out["changed"] = sorted(k for k in before if not np.array_equal(before[k], after[k]))

# probabilities: softmax over the classes (batch 16 != 4 classes)
p = B.predict(ft, va)
out["proba_shape"], out["proba_rowsum_err"] = list(p.shape), float(np.abs(p.sum(1) - 1).max())
out["acc_consistent"] = abs(B.evaluate_accuracy(ft, va) - float((p.argmax(1) == va.labels).mean())) < 1e-9

# resume: 3 epochs straight == 2 epochs, "killed", then resumed to 3
def run(epochs, ckpt, resume=False):
    B.set_seed(0)
    net = B.resnet18(4, 3, 8)
    tr, va = loaders()
    h = B.train(net, tr, va, epochs, 0.05, 5e-4, None, 2, 0.5, progress=False, log=None,
                checkpoint_dir=ckpt, resume=resume, amp=False)
    return net, h
full, hf = run(3, os.path.join(tmp, "full"))
run(2, os.path.join(tmp, "cut"))
res, hr = run(3, os.path.join(tmp, "cut"), resume=True)
a, b = B.get_state(full), B.get_state(res)
out["resume_max_diff"] = max(float(np.abs(a[k] - b[k]).max()) for k in a)
out["resume_lrs"] = hr.column("lr")
out["learned"] = hf.column("train_loss")[-1] < hf.column("train_loss")[0]

# neutral weight files: round trip, and a clear error on a shape mismatch
net = B.resnet18(10, 3, 8)
B.save_weights(net, os.path.join(tmp, "w.safetensors"))
other = B.load_weights(B.resnet18(10, 3, 8), os.path.join(tmp, "w.safetensors"))
out["roundtrip_diff"] = float(np.abs(B.forward(net, x) - B.forward(other, x)).max())
try:
    B.load_weights(B.resnet18(5, 3, 8), os.path.join(tmp, "w.safetensors"))
    out["mismatch_error"] = None
except ValueError as e:
    out["mismatch_error"] = str(e)

# a NaN loss stops training with epoch and batch
try:
    B.train(B.resnet18(4, 3, 8), *loaders(), 1, 1e12, 0.0, progress=False, log=None, amp=False)
    out["nan_error"] = None
except FloatingPointError as e:
    out["nan_error"] = str(e)
# float64 steps (the parity reference): float64 inputs in the core's bits, the same loss in
# float32 and float64 to float32 precision, and a bad dtype named
xb = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
t64 = B.to_tensor(xb, (0.4,) * 3, (0.25,) * 3, dtype="float64")
t64 = np.asarray(t64.asnumpy() if hasattr(t64, "asnumpy") else t64.numpy())
out["to_tensor64"] = [str(t64.dtype), list(t64.shape),
                      float(np.abs(t64 - ((xb / 255.0 - 0.4) / 0.25).transpose(0, 3, 1, 2)).max())]
losses = {}
for dt in ("float32", "float64"):
    B.set_seed(0)
    net = B.resnet18(4, 3, 8)
    st = B.Step(net, lr=0.05, wd=5e-4, amp=False, dtype=dt)
    losses[dt] = [st.train_batch(xb, np.arange(4))[0] for _ in range(2)]
out["loss32_64"] = losses
# a loss far above 64 is reported as it is (Paddle's own cross_entropy clamps at 64)
net = B.resnet18(4, 3, 8)
state = B.get_state(net)
state["fc.weight"] = state["fc.weight"] * 3e3
B.set_state(net, state)
from d2lkaggle.data.transforms import normalize_nchw
z = B.forward(net, normalize_nchw(xb, (0, 0, 0), (1, 1, 1))).astype(np.float64)
yb = np.argmin(z, axis=1)
m = z.max(1)
ref = float((m + np.log(np.exp(z - m[:, None]).sum(1)) - z[np.arange(4), yb]).sum())
out["big_loss"] = [B.Step(net, amp=False).eval_batch(xb, yb)[0], ref]
try:
    B.Step(B.resnet18(4, 3, 8), dtype="float16")
    out["dtype_error"] = None
except ValueError as e:
    out["dtype_error"] = str(e)

# offline ImageNet weights: torch goes through torchvision's cache (tested in test_torch_backend);
# the others explain how to make the neutral file
if sys.argv[1] != "torch":
    try:
        B.finetune_net(3, weights="imagenet")
        out["imagenet_error"] = None
    except RuntimeError as e:
        out["imagenet_error"] = str(e)
print("RESULT " + json.dumps(out))
"""


def results(backend, tmp_path):
    r = run_py(SCRIPT, backend, str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def torch_ref(tmp_path_factory):
    from d2lkaggle.utils.registry import is_installed
    if not is_installed("torch"):
        pytest.skip("torch (the reference backend) is not installed")
    return results("torch", tmp_path_factory.mktemp("torch"))


@pytest.mark.parametrize("backend", backend_params())
def test_backend_behaviour(backend, tmp_path, torch_ref):
    r = torch_ref if backend == "torch" else results(backend, tmp_path)
    assert r["shapes"] == [[2, 10], [2, 1000], [2, 120]]
    assert r["devices"] and all(d for d in r["devices"])
    # one checkpoint serves all backends: identical canonical names and shapes
    assert r["names18"] == torch_ref["names18"] and len(r["names18"]) == 110
    assert r["names_ft"] == torch_ref["names_ft"]
    assert "layer2.0.downsample.1.running_var" in r["names_ft"] and "fc.weight" not in r["names_ft"]
    assert r["names_ft"]["head.2.weight"] == [7, 256]
    assert r["changed"] == ["head.0.bias", "head.0.weight", "head.2.bias", "head.2.weight"]
    assert r["proba_shape"] == [32, 4] and r["proba_rowsum_err"] < 1e-5 and r["acc_consistent"]
    assert r["resume_max_diff"] <= 1e-6 and r["resume_lrs"] == [0.05, 0.05, 0.025]
    assert r["learned"]
    assert r["roundtrip_diff"] == 0.0
    assert "fc.weight" in r["mismatch_error"] and "(5, 64)" in r["mismatch_error"]
    assert "epoch 1, batch" in r["nan_error"]
    dt, shape, err = r["to_tensor64"]
    assert dt == "float64" and shape == [4, 3, 16, 16] and err <= 1e-12
    l32, l64 = r["loss32_64"]["float32"], r["loss32_64"]["float64"]
    assert max(abs(a - b) / abs(b) for a, b in zip(l32, l64)) <= 1e-4, r["loss32_64"]
    assert l64[1] != l64[0]   # the float64 step trained
    got, ref = r["big_loss"]
    assert ref > 4 * 64 and abs(got - ref) <= 1e-4 * ref, r["big_loss"]
    assert "'float16'" in r["dtype_error"] and "float64" in r["dtype_error"]
    if backend != "torch":
        assert "d2lkaggle weights convert resnet34-b627a593.pth" in r["imagenet_error"]
