"""The chapters' own code against this library: d2l names, the book's argument order, and the
Dog chapter's training loop typed out by hand over ``bk.tensors`` (each backend in its own
process, tiny data)."""
import json

import numpy as np
import pytest

from conftest import backend_params, run_py, tiny_loaders

# Common to every backend: tiny learnable loaders as the book's `train_iter`/`valid_iter`.
PRELUDE = """
import json, math, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from conftest import tiny_loaders
import d2lkaggle
d2l = d2lkaggle.get_backend(sys.argv[1])      # in a script: from d2lkaggle import torch_impl as d2l
os.chdir(sys.argv[2])   # the Animators draw animator.png here (headless)
tr, va = tiny_loaders(n=64, size=16, classes=4, bs=16)
devices = d2l.try_all_gpus()
train_iter, valid_iter = d2l.tensors(tr, devices), d2l.tensors(va, devices)
X0, y0 = next(iter(valid_iter))   # (not train_iter: that would use up its epoch 0)
d2l.set_seed(0)
net = d2l.resnet18(4, 3, 8)
before = d2l.evaluate_loss(valid_iter, net, devices)   # the Dog chapter's argument order
"""

# The Dog chapter's PyTorch `train`, typed out (forward, loss, backward, step per batch),
# with the CIFAR chapter's model; loss summed as in the book, so lr is per example.
TORCH_LOOP = """
import torch
from torch import nn
loss = nn.CrossEntropyLoss(reduction="none")

def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay):
    net = nn.DataParallel(net, device_ids=devices).to(devices[0])
    trainer = torch.optim.SGD((param for param in net.parameters() if param.requires_grad),
                              lr=lr, momentum=0.9, weight_decay=wd)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer, lr_period, lr_decay)
    num_batches, timer = len(train_iter), d2l.Timer()
    animator = d2l.Animator(xlabel="epoch", xlim=[1, num_epochs], legend=["train loss", "valid loss"])
    for epoch in range(num_epochs):
        net.train()   # as the CIFAR chapter does: evaluate_loss left the net in inference mode
        metric = d2l.Accumulator(2)
        for i, (features, labels) in enumerate(train_iter):
            timer.start()
            features, labels = features.to(devices[0]), labels.to(devices[0])
            trainer.zero_grad()
            output = net(features)
            l = loss(output, labels).sum()
            l.backward()
            trainer.step()
            metric.add(l, labels.shape[0])
            timer.stop()
            animator.add(epoch + (i + 1) / num_batches, (metric[0] / metric[1], None))
        valid_loss = d2l.evaluate_loss(valid_iter, net, devices)
        animator.add(epoch + 1, (None, valid_loss))
        scheduler.step()
    return metric[0] / metric[1], valid_loss, timer.sum()

kind = (type(X0).__module__.split(".")[0], tuple(X0.shape), str(X0.dtype), str(y0.dtype))
train_loss, valid_loss, seconds = train(net, train_iter, valid_iter, 8, 0.05 / 16, 5e-4,
                                        devices, 2, 0.5)
# one more batch through the book's helper
make_trainer = lambda lr: torch.optim.SGD(net.parameters(), lr=lr)
l, acc = d2l.train_batch_ch13(net, X0, y0, loss, make_trainer(1e-4), devices)
"""

MXNET_LOOP = """
from mxnet import autograd, gluon
loss = gluon.loss.SoftmaxCrossEntropyLoss()

def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay):
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": lr, "momentum": 0.9, "wd": wd})
    num_batches, timer = len(train_iter), d2l.Timer()
    animator = d2l.Animator(xlabel="epoch", xlim=[1, num_epochs], legend=["train loss", "valid loss"])
    for epoch in range(num_epochs):
        metric = d2l.Accumulator(2)
        if epoch > 0 and epoch % lr_period == 0:
            trainer.set_learning_rate(trainer.learning_rate * lr_decay)
        for i, (features, labels) in enumerate(train_iter):
            timer.start()
            X_shards, y_shards = d2l.split_batch(features, labels, devices)
            with autograd.record():
                outputs = [net(X_shard) for X_shard in X_shards]
                ls = [loss(output, y_shard).sum() for output, y_shard in zip(outputs, y_shards)]
            for l in ls:
                l.backward()
            trainer.step(labels.shape[0])
            metric.add(sum([float(l.sum()) for l in ls]), labels.shape[0])
            timer.stop()
            animator.add(epoch + (i + 1) / num_batches, (metric[0] / metric[1], None))
        valid_loss = d2l.evaluate_loss(valid_iter, net, devices)
        animator.add(epoch + 1, (None, valid_loss))
    return metric[0] / metric[1], valid_loss, timer.sum()

kind = (type(X0).__module__.split(".")[0], tuple(X0.shape), str(X0.dtype), str(y0.dtype))
net.hybridize()
train_loss, valid_loss, seconds = train(net, train_iter, valid_iter, 8, 0.05, 5e-4, devices, 2, 0.5)
make_trainer = lambda lr: gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
l, acc = d2l.train_batch_ch13(net, X0, y0, loss, make_trainer(1e-4), devices)
"""

PADDLE_LOOP = """
import paddle
from paddle import nn
loss = nn.CrossEntropyLoss(reduction="none")

def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay):
    scheduler = paddle.optimizer.lr.StepDecay(lr, lr_period, lr_decay)
    trainer = paddle.optimizer.Momentum(learning_rate=scheduler,
                                        parameters=[p for p in net.parameters() if not p.stop_gradient],
                                        momentum=0.9, weight_decay=wd)
    num_batches, timer = len(train_iter), d2l.Timer()
    animator = d2l.Animator(xlabel="epoch", xlim=[1, num_epochs], legend=["train loss", "valid loss"])
    for epoch in range(num_epochs):
        net.train()   # as the CIFAR chapter does: evaluate_loss left the net in inference mode
        metric = d2l.Accumulator(2)
        for i, (features, labels) in enumerate(train_iter):
            timer.start()
            trainer.clear_grad()
            output = net(features)
            l = loss(output, labels).sum()
            l.backward()
            trainer.step()
            metric.add(l, labels.shape[0])
            timer.stop()
            animator.add(epoch + (i + 1) / num_batches, (metric[0] / metric[1], None))
        valid_loss = d2l.evaluate_loss(valid_iter, net, devices)
        animator.add(epoch + 1, (None, valid_loss))
        scheduler.step()
    return metric[0] / metric[1], valid_loss, timer.sum()

kind = (type(X0).__module__.split(".")[0], tuple(X0.shape), str(X0.dtype), str(y0.dtype))
train_loss, valid_loss, seconds = train(net, train_iter, valid_iter, 8, 0.05 / 16, 5e-4,
                                        devices, 2, 0.5)
make_trainer = lambda lr: paddle.optimizer.SGD(learning_rate=lr, parameters=net.parameters())
l, acc = d2l.train_batch_ch13(net, X0, y0, loss, make_trainer(1e-4), devices)
"""

REPORT = """
acc_valid = d2l.evaluate_accuracy_gpu(net, valid_iter)
# the library's own batches, raw (numpy uint8 N×H×W×3 carrying the loader's mean/std), given to
# the book's batch-level names, and its loader given to the evaluation names
xb, yb = next(iter(va))
xs, ys = d2l.split_batch(xb, yb, devices)
raw = [type(xb).__name__, type(xs[0]).__module__.split(".")[0], [int(v) for v in xs[0].shape],
       float(xs[0].mean())]
lib = [d2l.evaluate_accuracy_gpu(net, va), d2l.evaluate_accuracy_gpus(net, va, d2l.split_batch)]
errors = []
for bad in ([[0.0] * 3] * 2, xb.astype("float32").transpose(0, 3, 1, 2)):
    try:
        d2l.evaluate_accuracy_gpu(net, [(bad, yb)])
    except (TypeError, ValueError) as e:
        errors.append(str(e).splitlines()[0])
l2, acc2 = d2l.train_batch_ch13(net, xb, yb, loss, make_trainer(1e-6), devices)
print(json.dumps({"kind": kind, "before": before, "train_loss": float(train_loss),
                  "valid_loss": float(valid_loss), "valid_acc": acc_valid, "seconds": seconds,
                  "batches": len(train_iter), "mean": float(X0.mean()), "ch13": [float(l), float(acc)],
                  "raw": raw, "lib": lib, "errors": errors, "ch13_raw": [float(l2), float(acc2)],
                  "pngs": sorted(f for f in os.listdir(".") if f.endswith(".png"))}))
"""

LOOPS = {"torch": TORCH_LOOP, "mxnet": MXNET_LOOP, "paddle": PADDLE_LOOP}
FRAMEWORK_MODULE = {"torch": "torch", "mxnet": "mxnet", "paddle": "paddle"}


@pytest.mark.parametrize("backend", backend_params())
def test_chapter_training_loop_typed_out(backend, tmp_path):
    # one OpenMP thread: on this tiny net two threads only wait for each other, and on a
    # loaded 2-core machine that waiting made the loop ~50x slower (465 s vs 8.5 s measured)
    r = run_py(PRELUDE + LOOPS[backend] + REPORT, backend, str(tmp_path), timeout=600,
               env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    module, shape, dtype, ydtype = out["kind"]
    assert module == FRAMEWORK_MODULE[backend]
    assert shape == [16, 3, 16, 16] and "float32" in dtype and "int64" in ydtype
    # normalised with the loader's mean/std: pixels ~U(0,80)+150 band → mean far from 0..255 scale
    assert -3 < out["mean"] < 3
    assert out["batches"] == 4
    # the hand-written loop learned the bands, measured with the library's own evaluation
    assert out["valid_loss"] < 0.5 * out["before"], out
    assert out["valid_acc"] >= 0.9, out
    assert out["seconds"] > 0
    ch13_loss, ch13_correct = out["ch13"]
    assert 0 < ch13_loss < 16 * out["before"] and 0 <= ch13_correct <= 16
    # the library's raw batch: an ImageBatch, normalised by split_batch like tensors() does
    batch_type, module, shape, mean = out["raw"]
    assert batch_type == "ImageBatch" and module == FRAMEWORK_MODULE[backend]
    assert shape == [16, 3, 16, 16] and mean == pytest.approx(out["mean"], abs=1e-5)
    # the library's loader gives the same accuracy as its batches as tensors
    assert out["lib"] == [pytest.approx(out["valid_acc"])] * 2
    # anything else: one line naming what is accepted
    assert len(out["errors"]) == 2, out["errors"]
    assert all("d2lkaggle's N×H×W×3 numpy" in e for e in out["errors"]), out["errors"]
    assert "list" in out["errors"][0] and "(16, 3, 16, 16)" in out["errors"][1]
    raw_loss, raw_correct = out["ch13_raw"]
    assert 0 < raw_loss < 16 * out["before"] and 0 <= raw_correct <= 16
    # headless, the book's Animator drew its PNG where the script runs
    assert out["pngs"] == ["animator.png"]


def test_tensor_loader_is_reiterable_and_keeps_epochs():
    from d2lkaggle.common.book import TensorLoader, net_first
    tr, va = tiny_loaders(n=32, size=8, classes=4, bs=8)
    seen = []
    t = TensorLoader(tr, lambda x: x.astype(np.float32), lambda y: y)
    assert len(t) == 4 and t.batch_size == 8 and t.mean == tr.mean
    for _ in range(2):
        seen.append(np.concatenate([y for _, y in t]))
    # a new epoch per `for`: a different shuffle, the same examples
    assert sorted(seen[0]) == sorted(seen[1]) and list(seen[0]) != list(seen[1])
    net = object()
    assert net_first(net, va) == (net, va)
    assert net_first(va, net) == (net, va)
    assert net_first(t, net) == (net, tr)   # a tensor loader given back is unwrapped


def test_book_helpers(tmp_path):
    from d2lkaggle.common.book import Accumulator, Animator, Timer
    m = Accumulator(3)
    m.add(1, 2.5, np.float32(3))
    m.add(1, 0.5, 1)
    assert (m[0], m[1], m[2]) == (2.0, 3.0, 4.0)
    with pytest.raises(ValueError):
        m.add(1, 2)
    t = Timer()
    t.stop()
    t.start()
    t.stop()
    assert len(t.times) == 2 and t.sum() >= 0 and t.cumsum()[-1] == pytest.approx(t.sum())
    png = tmp_path / "anim.png"
    a = Animator(xlabel="epoch", legend=["train loss", "valid acc"], path=str(png))
    a.add(0.5, (1.0, None))
    a.add(1, (0.8, 0.6))
    assert a.X == [[0.5, 1.0], [1.0]] and a.Y == [[1.0, 0.8], [0.6]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_get_net_both_chapters(backend):
    code = """
import json, sys, d2lkaggle
d2l = d2lkaggle.get_backend(sys.argv[1])
dog = d2l.get_net(d2l.try_all_gpus(), weights=None)        # the Dog chapter's get_net(devices)
cifar = d2l.get_net(competition="cifar10")                  # the CIFAR-10 chapter's get_net()
import torch
x = torch.zeros(2, 3, 32, 32)
dog.eval(); cifar.eval()
print(json.dumps([list(dog(x).shape), list(cifar(x).shape),
                  sum(p.requires_grad for p in dog.parameters())]))
"""
    r = run_py(code, backend, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    dog, cifar, trainable = json.loads(r.stdout.strip().splitlines()[-1])
    assert dog == [2, 120] and cifar == [2, 10]
    assert trainable == 4   # only the head's two Linear layers (weight + bias) train


def test_batches_are_told_apart_by_type_never_by_values():
    from d2lkaggle.common.batches import (FRAMEWORK, LIBRARY, batch_norm, host_labels,
                                          input_kind, label_kind)

    class Tensor:   # a framework's tensor type, as a wing names it
        def __init__(self, shape, dtype="float32"):
            self.shape, self.dtype = shape, dtype

    # the library's numpy pixels, whatever their values (0..255, or all zeros)
    for x in (np.full((2, 8, 8, 3), 255, np.uint8), np.zeros((2, 8, 8, 3), np.float32)):
        assert input_kind(x, Tensor, "torch") == LIBRARY
    assert input_kind(Tensor((2, 3, 8, 8)), Tensor, "torch") == FRAMEWORK
    with pytest.raises(TypeError, match="N×C×H×W floats.*uint8"):
        input_kind(Tensor((2, 3, 8, 8), "uint8"), Tensor, "torch")   # not normalised
    with pytest.raises(ValueError, match=r"numpy batch must be .* got shape \(2, 3, 8, 8\)"):
        input_kind(np.zeros((2, 3, 8, 8), np.float32), Tensor, "torch")
    with pytest.raises(TypeError, match="cannot use a list as a batch: this takes d2lkaggle's"):
        input_kind([[1, 2]], Tensor, "torch")
    assert label_kind(Tensor((2,), "int64"), Tensor, "torch") == FRAMEWORK
    assert label_kind(np.arange(2), Tensor, "torch") == LIBRARY
    with pytest.raises(TypeError, match="as labels"):
        label_kind("cat", Tensor, "torch")
    assert host_labels(np.array([[3], [1]])).tolist() == [3, 1]           # an (N, 1) column
    assert host_labels(np.array([3.0, 1.0], np.float32)).dtype == np.int64  # MXNet's astype
    assert host_labels(np.eye(2, dtype=np.float32)).shape == (2, 2)         # soft targets stay
    # a loader's batch carries its normalisation; a bare array has none
    tr, _ = tiny_loaders(n=16, size=8, classes=4, bs=8)
    xb, _ = next(iter(tr))
    assert batch_norm(xb, "x") == (tr.mean, tr.std) == batch_norm(xb[:2], "x")
    with pytest.raises(TypeError, match="did not come from a d2lkaggle loader"):
        batch_norm(np.asarray(xb), "d2l.split_batch")


def test_net_first_by_type():
    from d2lkaggle.common.book import net_first

    class Net:
        pass

    net, loader = Net(), [(np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1))]   # a framework's loader
    assert net_first(loader, net, Net) == (net, loader)
    assert net_first(net, loader, Net) == (net, loader)
