"""MXNet backend: models, canonical weights, frozen fine-tuning, torch-form SGD, resume.

Runs in the pytest process (mxnet imported here only); the cross-backend comparisons with
torch run in subprocesses in test_backends.py / test_contract.py / tests/parity.
"""
import os

import numpy as np
import pytest
from conftest import tiny_loaders

mx = pytest.importorskip("mxnet", reason="mxnet is not installed (pip install \"d2lkaggle[mxnet]\")")

from d2lkaggle import mxnet_impl as M  # noqa: E402
from d2lkaggle.utils.files import load_npz  # noqa: E402
from d2lkaggle.models.weights import save_neutral  # noqa: E402

BN = ("weight", "bias", "running_mean", "running_var")


# ---- canonical names, derived from the architecture rules (torch's state_dict layout) ----

def _conv(name, cout, cin, k, bias):
    d = {f"{name}.weight": (cout, cin, k, k)}
    if bias:
        d[f"{name}.bias"] = (cout,)
    return d


def _bn(name, c):
    return {f"{name}.{s}": (c,) for s in BN}


def book_resnet18_names(num_classes, in_channels=3, width=64):
    """The book's ResNet-18: biased convs, ``conv3`` 1×1 shortcut in layer2-4's first block."""
    d = {**_conv("conv1", width, in_channels, 3, True), **_bn("bn1", width)}
    prev = width
    for i in range(4):
        c = width * 2 ** i
        for j in range(2):
            p, cin = f"layer{i + 1}.{j}", (prev if j == 0 else c)
            d.update(_conv(f"{p}.conv1", c, cin, 3, True))
            d.update(_bn(f"{p}.bn1", c))
            d.update(_conv(f"{p}.conv2", c, c, 3, True))
            d.update(_bn(f"{p}.bn2", c))
            if j == 0 and i > 0:
                d.update(_conv(f"{p}.conv3", c, prev, 1, True))
        prev = c
    d.update({"fc.weight": (num_classes, prev), "fc.bias": (num_classes,)})
    return d


def torchvision_resnet34_names(num_classes=1000):
    """torchvision's resnet34 state_dict (no num_batches_tracked); ``None``: no ``fc``."""
    d = {**_conv("conv1", 64, 3, 7, False), **_bn("bn1", 64)}
    prev = 64
    for i, (c, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for j in range(n):
            p, cin = f"layer{i + 1}.{j}", (prev if j == 0 else c)
            d.update(_conv(f"{p}.conv1", c, cin, 3, False))
            d.update(_bn(f"{p}.bn1", c))
            d.update(_conv(f"{p}.conv2", c, c, 3, False))
            d.update(_bn(f"{p}.bn2", c))
            if j == 0 and i > 0:
                d.update(_conv(f"{p}.downsample.0", c, prev, 1, False))
                d.update(_bn(f"{p}.downsample.1", c))
        prev = c
    if num_classes:
        d.update({"fc.weight": (num_classes, 512), "fc.bias": (num_classes,)})
    return d


def finetune_names(num_classes, hidden=256):
    d = torchvision_resnet34_names(None)
    d.update({"head.0.weight": (hidden, 512), "head.0.bias": (hidden,),
              "head.2.weight": (num_classes, hidden), "head.2.bias": (num_classes,)})
    return d


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


# ---- data ----

@pytest.fixture(scope="module")
def x32():
    return np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)


# ---- tests ----

def test_public_names():
    from d2lkaggle.common.cpu import native_bf16   # bf16 on oneDNN where the CPU has it
    assert M.NAME == "mxnet" and M.SUPPORTS_BF16 is native_bf16()
    for name in M.__all__:
        assert hasattr(M, name), name


def test_model_output_shapes(x32):
    assert M.forward(M.resnet18(10), x32).shape == (2, 10)
    assert M.forward(M.resnet18(7, width=8), x32).shape == (2, 7)
    assert M.forward(M.resnet18(3, in_channels=1, width=4), x32[:, :1]).shape == (2, 3)
    assert M.forward(M.resnet34(), x32).shape == (2, 1000)
    out = M.forward(M.finetune_net(120), x32)
    assert out.shape == (2, 120) and out.dtype == np.float32


def test_canonical_names_and_shapes():
    # every parameter AND running statistic, named and shaped as torch's state_dict
    assert shapes(M.get_state(M.resnet18(10, 3, 8))) == book_resnet18_names(10, 3, 8)
    assert len(book_resnet18_names(10)) == 110
    assert shapes(M.get_state(M.resnet18(5, 1, 4))) == book_resnet18_names(5, 1, 4)
    assert shapes(M.get_state(M.resnet34())) == torchvision_resnet34_names(1000)
    assert shapes(M.get_state(M.resnet34(10))) == torchvision_resnet34_names(10)
    assert shapes(M.get_state(M.finetune_net(7, hidden=32))) == finetune_names(7, 32)
    state = M.get_state(M.resnet18(10, 3, 8))
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    np.testing.assert_array_equal(state["bn1.running_var"], 1.0)
    np.testing.assert_array_equal(state["layer2.0.bn1.weight"], 1.0)


def test_parameters_exist_right_after_construction():
    # no deferred shapes: BatchNorm updates its statistics on the very first training pass
    net = M.resnet18(4, 3, 8)
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    step = M.Step(net, lr=0.0, mean=(0.5,) * 3, std=(0.25,) * 3)
    step.train_batch(x, np.arange(8) % 4)
    s = M.get_state(net)
    assert np.abs(s["bn1.running_mean"]).max() > 0
    assert not np.allclose(s["layer4.1.bn2.running_var"], 1.0)


def test_to_tensor_and_labels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    t = M.to_tensor(x, mean, std)
    ref = ((x / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    assert t.shape == (3, 3, 5, 4) and t.dtype == np.float32
    np.testing.assert_allclose(t.asnumpy(), ref, atol=1e-5)
    assert M.to_labels(np.array([1, 0, 2])).dtype == np.int64


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip(tmp_path, suffix, x32):
    net = M.resnet18(10, 3, 8)
    state = M.get_state(net)
    rng = np.random.default_rng(1)
    # distinctive BN statistics, so the round trip covers them too
    M.set_state(net, {k: (rng.random(v.shape, dtype=np.float32) + 0.5 if k.endswith("running_var")
                          else v) for k, v in state.items()})
    path = str(tmp_path / ("w" + suffix))
    assert M.save_weights(net, path) == path
    other = M.load_weights(M.resnet18(10, 3, 8), path)
    a, b = M.get_state(net), M.get_state(other)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(M.forward(net, x32), M.forward(other, x32))


def test_save_pth_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        M.save_weights(M.resnet18(3, 3, 4), str(tmp_path / "w.pth"))


def test_wrong_shape_lists_the_mismatch(tmp_path):
    path = str(tmp_path / "w.safetensors")
    M.save_weights(M.resnet18(10, 3, 8), path)
    with pytest.raises(ValueError) as e:
        M.load_weights(M.resnet18(5, 3, 8), path)
    msg = str(e.value)
    assert "fc.weight" in msg and "(5, 64)" in msg and "(10, 64)" in msg and path in msg
    state = M.get_state(M.resnet18(10, 3, 8))
    del state["fc.bias"]
    state["fc2.weight"] = np.zeros((2, 2), np.float32)
    save_neutral(path, state)
    with pytest.raises(ValueError) as e:  # missing and unexpected names are listed
        M.load_weights(M.resnet18(10, 3, 8), path)
    assert "missing fc.bias (10,)" in str(e.value) and "unexpected fc2.weight (2, 2)" in str(e.value)


def test_imagenet_explains_the_conversion():
    with pytest.raises(RuntimeError) as e:
        M.finetune_net(3, weights="imagenet")
    assert "d2lkaggle weights convert resnet34-b627a593.pth resnet34.safetensors" in str(e.value)


def test_frozen_backbone_and_bn_statistics_unchanged_head_trains(tmp_path):
    src = M.resnet34()
    rng = np.random.default_rng(0)
    s = M.get_state(src)
    M.set_state(src, {k: (rng.random(v.shape, dtype=np.float32) + 0.5 if k.endswith("running_var")
                          else rng.normal(0, 0.1, v.shape).astype(np.float32)
                          if k.endswith("running_mean") else v) for k, v in s.items()})
    path = str(tmp_path / "resnet34.npz")
    M.save_weights(src, path)  # with its fc: finetune_net drops the classifier
    net = M.finetune_net(4, weights=path)
    before = M.get_state(net)
    np.testing.assert_array_equal(before["layer3.1.bn2.running_var"],
                                  M.get_state(src)["layer3.1.bn2.running_var"])
    step = M.Step(net, lr=0.1)
    assert sorted(step.params) == ["head.0.bias", "head.0.weight", "head.2.bias", "head.2.weight"]
    tr, va = tiny_loaders(n=32, size=32)
    M.train(net, tr, va, 2, 0.05, 1e-4, progress=False, log=None)
    after = M.get_state(net)
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed == ["head.0.bias", "head.0.weight", "head.2.bias", "head.2.weight"]


def test_unfrozen_finetune_trains_the_backbone():
    net = M.finetune_net(4, hidden=16, freeze=False)
    before = M.get_state(net)
    step = M.Step(net, lr=0.05)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    step.train_batch(x, np.arange(4))
    after = M.get_state(net)
    assert not np.array_equal(before["conv1.weight"], after["conv1.weight"])
    assert not np.array_equal(before["bn1.running_mean"], after["bn1.running_mean"])


def test_predict_rows_sum_to_one_and_match_accuracy():
    net = M.resnet18(4, 3, 8)
    _, va = tiny_loaders()
    va.batch_size = 10  # 32 examples: batches of 10, 10, 10, 2 (batch != classes)
    p = M.predict(net, va)
    assert p.shape == (32, 4)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    acc = M.evaluate_accuracy(net, va)
    assert acc == pytest.approx(float((p.argmax(1) == va.labels).mean()))
    loss = M.evaluate_loss(net, va)
    assert loss == pytest.approx(float(-np.log(p[np.arange(32), va.labels]).mean()), rel=1e-4)


def test_try_all_gpus_never_empty(monkeypatch):
    devices = M.try_all_gpus()
    assert devices and all(isinstance(d, mx.Context) for d in devices)
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)
    assert M.try_all_gpus() == [mx.cpu()]
    assert M.try_gpu(3) == mx.cpu()


def test_update_is_torch_form_and_state_is_torch_momentum():
    # v = m·v + (g + wd·w); w -= lr·v, with the lr changed between the steps (StepLR):
    # MXNet's own sgd would keep the old lr inside v
    net = M.resnet18(3, 3, 4)
    step = M.Step(net, lr=0.1, wd=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    w = {k: v.astype(np.float64) for k, v in M.get_state(net).items() if k in step.params}
    v = {k: np.zeros_like(a) for k, a in w.items()}
    for lr in (0.1, 0.02):
        step.set_lr(lr)
        for name, p in step.params.items():
            g = rng.normal(size=p.shape).astype(np.float32)
            p.grad()[:] = mx.np.array(g)
            v[name] = 0.9 * v[name] + g + 0.01 * w[name]
            w[name] = w[name] - lr * v[name]
        step.optimizer.step()
    state, got = step.state_dict(), M.get_state(net)
    assert sorted(k for k in state if k.startswith("optim/")) == \
        sorted(f"optim/{k}/momentum" for k in step.params)
    for name in step.params:
        np.testing.assert_allclose(got[name], w[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state[f"optim/{name}/momentum"], v[name], rtol=1e-5, atol=1e-6)


def test_loss_is_the_batch_mean():
    # the batch twice over has the same mean loss and BatchNorm statistics: with a MEAN loss
    # one step moves the weights exactly as far; a summed loss would move them twice as far
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    y = np.arange(8) % 4
    M.set_seed(0)
    init = M.get_state(M.resnet18(4, 3, 8))
    out = []
    for xb, yb in ((x, y), (np.concatenate([x, x]), np.concatenate([y, y]))):
        net = M.resnet18(4, 3, 8)
        M.set_state(net, init)
        loss_sum, _, n = M.Step(net, lr=0.1, wd=1e-3, amp=False).train_batch(xb, yb)
        out.append((M.get_state(net), loss_sum / n))
    (a, la), (b, lb) = out
    assert la == pytest.approx(lb, rel=1e-5)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_several_contexts_split_the_batch():
    # two CPU contexts stand in for two GPUs: inference equals one device; training keeps the
    # copies of every parameter identical
    net = M.resnet18(4, 3, 8)
    _, va = tiny_loaders()
    one = M.predict(net, va, devices=[mx.cpu()])
    two = M.predict(net, va, devices=[mx.cpu(0), mx.cpu(1)])
    np.testing.assert_allclose(one, two, atol=1e-6)
    step = M.Step(net, lr=0.05, devices=[mx.cpu(0), mx.cpu(1)], mean=va.mean, std=va.std)
    x, y = next(iter(va))
    loss_sum, correct, n = step.train_batch(x, y)
    assert n == 16 and np.isfinite(loss_sum)
    p = step.params["layer1.0.conv1.weight"]
    np.testing.assert_array_equal(p.data(mx.cpu(0)).asnumpy(), p.data(mx.cpu(1)).asnumpy())


def test_training_learns_and_resume_is_exact(tmp_path):
    # 3 epochs straight == 2 epochs, "killed", then resumed to 3 (the lr halves at epoch 3)
    def run(epochs, ckpt, resume=False):
        M.set_seed(0)
        net = M.resnet18(4, 3, 8)
        tr, va = tiny_loaders()
        h = M.train(net, tr, va, epochs, 0.05, 5e-4, None, 2, 0.5, progress=False, log=None,
                    checkpoint_dir=ckpt, resume=resume)
        return net, h
    full, hf = run(3, str(tmp_path / "full"))
    assert len(hf) == 3 and hf.column("lr") == [0.05, 0.05, 0.025]
    assert hf.column("train_loss")[-1] < hf.column("train_loss")[0]
    run(2, str(tmp_path / "cut"))
    arrays, meta = load_npz(str(tmp_path / "cut" / "last.npz"))
    assert meta["epoch"] == 1 and "optim/layer2.0.conv3.weight/momentum" in arrays
    res, hr = run(3, str(tmp_path / "cut"), resume=True)
    assert hr.column("lr") == [0.05, 0.05, 0.025]
    a, b = M.get_state(full), M.get_state(res)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6
    assert os.path.exists(tmp_path / "cut" / "best.npz")


def test_forward_is_inference_mode(x32):
    net = M.resnet18(4, 3, 8)
    before = M.get_state(net)
    a, b = M.forward(net, x32), M.forward(net, x32)
    np.testing.assert_array_equal(a, b)
    after = M.get_state(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)
