"""PyTorch backend: models, frozen fine-tuning, weights, NaN detection, resume."""
import os

import numpy as np
import pytest
from conftest import tiny_loaders

torch = pytest.importorskip("torch", reason="torch is not installed (pip install \"d2lkaggle[torch]\")")

from d2lkaggle.models import weights as neutral  # noqa: E402
from d2lkaggle import torch_impl as T  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    # another backend imported earlier in this process (mxnet) may have dropped torch to 1 thread
    torch.set_num_threads(os.cpu_count() or 1)


def test_model_shapes():
    x = torch.randn(2, 3, 32, 32)
    assert T.resnet18(10)(x).shape == (2, 10)
    assert T.resnet18(7, width=8)(x).shape == (2, 7)
    assert T.resnet34(1000)(x).shape == (2, 1000)
    assert T.finetune_net(120)(x).shape == (2, 120)
    names = T.get_state(T.resnet18(10, width=8))
    assert "layer2.0.conv3.weight" in names and "layer1.0.conv3.weight" not in names
    assert "bn1.running_var" in names and not any(k.endswith("num_batches_tracked") for k in names)


def test_try_all_gpus_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert T.try_all_gpus() == [torch.device("cpu")]
    assert T.try_gpu(3) == torch.device("cpu")


def test_frozen_backbone_unchanged_and_head_trains(tmp_path):
    src = T.resnet34()
    pth = tmp_path / "resnet34.pth"
    torch.save(src.state_dict(), pth)
    net = T.finetune_net(4, weights=str(pth))
    before = T.get_state(net)
    np.testing.assert_array_equal(before["layer3.1.bn2.running_var"],
                                  src.state_dict()["layer3.1.bn2.running_var"].numpy())
    tr, va = tiny_loaders(size=32)
    T.train(net, tr, va, 2, 0.05, 1e-4, progress=False, log=None)
    after = T.get_state(net)
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed and all(k.startswith("head.") for k in changed)
    assert {"head.0.weight", "head.2.weight"} <= set(changed)
    step = T.Step(net, lr=0.1)
    assert {id(p) for g in step.optimizer.opt.param_groups for p in g["params"]} == \
        {id(p) for p in net.head.parameters()}
    net.train()
    assert not net.layer1.training and not net.bn1.training and net.head.training


def test_imagenet_offline_error_names_file_and_folder(monkeypatch, tmp_path):
    import torchvision
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.models.ResNet34_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        offline, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as e:
        T.finetune_net(10, weights="imagenet")
    assert "resnet34-b627a593.pth" in str(e.value)
    assert os.path.join(str(tmp_path), "checkpoints") in str(e.value)


def test_neutral_weights_round_trip_and_mismatch(tmp_path):
    net = T.resnet18(10, width=8)
    for suffix in (".safetensors", ".npz"):
        path = str(tmp_path / f"w{suffix}")
        T.save_weights(net, path)
        other = T.resnet18(10, width=8)
        T.load_weights(other, path)
        x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
        np.testing.assert_array_equal(T.forward(net, x), T.forward(other, x))
    with pytest.raises(ValueError) as e:
        T.load_weights(T.resnet18(5, width=8), str(tmp_path / "w.npz"))
    assert "fc.weight" in str(e.value) and "(5, 64)" in str(e.value)
    with pytest.raises(ValueError, match=r"shape of conv1.weight: model \(16, 3, 3, 3\), file \(8, 3, 3, 3\)"):
        T.load_weights(T.resnet18(10, width=16), str(tmp_path / "w.npz"))
    state = neutral.load_neutral(str(tmp_path / "w.npz"))
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    neutral.save_neutral(str(tmp_path / "cut.safetensors"), state)
    with pytest.raises(ValueError) as e:
        T.load_weights(T.resnet18(10, width=8), str(tmp_path / "cut.safetensors"))
    assert "missing layer4.1.bn2.running_var" in str(e.value) and "unexpected extra.weight" in str(e.value)


def test_nan_loss_stops_with_epoch_and_batch():
    tr, va = tiny_loaders()
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch \d+"):
        T.train(T.resnet18(4, width=8), tr, va, 2, 1e12, 0.0, progress=False, log=None, amp=False)


def test_resume_ends_with_uninterrupted_weights(tmp_path):
    def run(epochs, ckpt, resume=False):
        T.set_seed(0)
        net = T.resnet18(4, width=8)
        tr, va = tiny_loaders()
        h = T.train(net, tr, va, epochs, 0.05, 5e-4, None, 2, 0.5, progress=False, log=None,
                    checkpoint_dir=str(ckpt), resume=resume, amp=False)
        return net, h
    full, hf = run(3, tmp_path / "full")
    run(2, tmp_path / "cut")
    resumed, hr = run(3, tmp_path / "cut", resume=True)
    a, b = T.get_state(full), T.get_state(resumed)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    assert hr.column("lr") == [0.05, 0.05, 0.025] == hf.column("lr")


def test_predict_probabilities_and_evaluate():
    tr, va = tiny_loaders()
    net = T.resnet18(4, width=8)
    T.train(net, tr, va, 3, 0.05, 5e-4, progress=False, log=None)
    p = T.predict(net, va)
    assert p.shape == (32, 4)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    acc = T.evaluate_accuracy(net, va)
    assert acc == pytest.approx((p.argmax(1) == va.labels).mean())
    assert T.evaluate_loss(net, va) > 0


def test_train_batch_loss_is_a_batch_mean():
    tr, _ = tiny_loaders()
    x, y = next(iter(tr))
    T.set_seed(0)
    net = T.resnet18(4, width=8)
    step = T.Step(net, lr=0.0, amp=False, mean=tr.mean, std=tr.std)
    ls, _, n = step.train_batch(x, y)
    with torch.no_grad():
        net.train()
        ref = torch.nn.functional.cross_entropy(net(T.to_tensor(x, tr.mean, tr.std)), T.to_labels(y))
    # lr 0: weights unchanged, BN stats moved once more; the mean loss matches to float precision
    assert ls / n == pytest.approx(float(ref), rel=1e-3)
