"""The CIFAR-10 chapter's PyTorch tab (see the package docstring for the attribution)."""
from __future__ import annotations

import os
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F


# --- d2l 1.0.3 library functions the chapter calls (d2l/torch.py) -------------------------
class Residual(nn.Module):
    """d2l.Residual: the ResNet block with lazy layers."""

    def __init__(self, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def resnet18(num_classes, in_channels=1):
    """d2l.resnet18: 3×3 stem, no max-pool."""
    def resnet_block(in_channels, out_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(Residual(out_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(Residual(out_channels))
        return nn.Sequential(*blk)

    net = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1),
                        nn.BatchNorm2d(64), nn.ReLU())
    net.add_module("resnet_block1", resnet_block(64, 64, 2, first_block=True))
    net.add_module("resnet_block2", resnet_block(64, 128, 2))
    net.add_module("resnet_block3", resnet_block(128, 256, 2))
    net.add_module("resnet_block4", resnet_block(256, 512, 2))
    net.add_module("global_avg_pool", nn.AdaptiveAvgPool2d((1, 1)))
    net.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(512, num_classes)))
    return net


class Accumulator:
    """d2l.Accumulator: ``float(b)`` of every argument — a host sync per batch."""

    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def __getitem__(self, idx):
        return self.data[idx]


def accuracy(y_hat, y):
    """d2l.accuracy: number of correct predictions (a float, read back)."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def train_batch_ch13(net, X, y, loss, trainer, devices):
    """d2l.train_batch_ch13."""
    X = X.to(devices[0])
    y = y.to(devices[0])
    net.train()
    trainer.zero_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    train_loss_sum = l.sum()
    train_acc_sum = accuracy(pred, y)
    return train_loss_sum, train_acc_sum


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """d2l.evaluate_accuracy_gpu."""
    net.eval()
    if not device:
        device = next(iter(net.parameters())).device
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


# --- the chapter ---------------------------------------------------------------------------
transform_train = torchvision.transforms.Compose([
    torchvision.transforms.Resize(40),
    torchvision.transforms.RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
    torchvision.transforms.RandomHorizontalFlip(),
    torchvision.transforms.ToTensor(),
    torchvision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])

transform_test = torchvision.transforms.Compose([
    torchvision.transforms.ToTensor(),
    torchvision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])


def loaders(data_dir, batch_size):
    """The chapter's ImageFolder datasets over ``train_valid_test`` and its DataLoaders."""
    train_ds = torchvision.datasets.ImageFolder(
        os.path.join(data_dir, "train_valid_test", "train"), transform=transform_train)
    train_iter = torch.utils.data.DataLoader(train_ds, batch_size, shuffle=True, drop_last=True)
    valid_iter = None
    valid = os.path.join(data_dir, "train_valid_test", "valid")
    if os.path.isdir(valid):
        valid_ds = torchvision.datasets.ImageFolder(valid, transform=transform_test)
        valid_iter = torch.utils.data.DataLoader(valid_ds, batch_size, shuffle=False,
                                                 drop_last=True)
    return train_iter, valid_iter


def get_net():
    num_classes = 10
    net = resnet18(num_classes, 3)
    return net


loss = nn.CrossEntropyLoss(reduction="none")


def train(net, train_iter, valid_iter, num_epochs, lr, wd, devices, lr_period, lr_decay,
          max_batches=None, warmup=0):
    """The chapter's ``train`` (Animator not drawn). With ``max_batches`` it stops after that
    many batches of the first epoch and returns examples/s over the batches after ``warmup``,
    wall time from the first post-warm-up batch fetch (data loading included)."""
    net(next(iter(train_iter))[0][:2])   # materialise the lazy layers before SGD sees them
    trainer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer, lr_period, lr_decay)
    net = nn.DataParallel(net, device_ids=devices).to(devices[0])
    out = {}
    for epoch in range(num_epochs):
        net.train()
        metric = Accumulator(3)
        t0, n0 = None, 0
        for i, (features, labels) in enumerate(train_iter):
            if i == warmup:
                t0, n0 = time.perf_counter(), metric[2]
            l, acc = train_batch_ch13(net, features, labels, loss, trainer, devices)
            metric.add(l, acc, labels.shape[0])
            if max_batches is not None and i + 1 >= max_batches:
                break
        if max_batches is not None:
            return {"examples_per_sec": (metric[2] - n0) / (time.perf_counter() - t0)}
        if valid_iter is not None:
            out["valid_acc"] = evaluate_accuracy_gpu(net, valid_iter)
        scheduler.step()
    out.update(train_loss=metric[0] / metric[2], train_acc=metric[1] / metric[2])
    return out


def train_speed(data_dir, batch_size, steps, warmup):
    """Examples/s of the chapter's training loop, end to end, on ``data_dir``'s tree."""
    torch.manual_seed(0)
    devices = [torch.device("cpu")]
    train_iter, _ = loaders(data_dir, batch_size)
    r = train(get_net(), train_iter, None, 1, 2e-4, 5e-4, devices, 4, 0.9,
              max_batches=warmup + steps, warmup=warmup)
    r["threads"] = torch.get_num_threads()
    return r


def accuracy_run(data_dir, batch_size, epochs, lr, wd=5e-4):
    """Valid accuracy after ``epochs`` of the chapter's recipe (StepLR 4 / 0.9)."""
    torch.manual_seed(0)
    train_iter, valid_iter = loaders(data_dir, batch_size)
    t = time.perf_counter()
    r = train(get_net(), train_iter, valid_iter, epochs, lr, wd, [torch.device("cpu")], 4, 0.9)
    r["seconds"] = time.perf_counter() - t
    return r


def pipeline_speed(data_dir, batch_size, n_batches):
    """Augmented batches/s of the chapter's DataLoader alone (no model)."""
    from benchmarks.worker import batches_per_sec  # the same clock as ours
    train_iter, _ = loaders(data_dir, batch_size)
    return {"batches_per_sec": batches_per_sec(train_iter, n_batches)}


def time_to_accuracy(data_dir, target, max_seconds, epochs=20, batch_size=32, lr=2e-4,
                     wd=5e-4, lr_period=4, lr_decay=0.9):
    """Wall seconds until the chapter's ``train`` first validates at ``target`` accuracy.

    The chapter's recipe as its torch tab sets it (SGD momentum 0.9 on the SUMMED loss, lr
    2e-4, wd 5e-4, StepLR(4, 0.9), 20 epochs; batch 32, the chapter's choice for its
    1,000-image demo), its loop epoch by epoch: train, ``evaluate_accuracy_gpu`` on valid,
    ``scheduler.step()``. The clock starts before the loaders are made and stops at the
    first epoch whose validation reaches ``target``, or after the first epoch that ends past
    ``max_seconds`` (then ``seconds`` is None: not reached)."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    devices = [torch.device("cpu")]
    train_iter, valid_iter = loaders(data_dir, batch_size)
    net = get_net()
    net(next(iter(train_iter))[0][:2])   # materialise the lazy layers before SGD sees them
    trainer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer, lr_period, lr_decay)
    net = nn.DataParallel(net, device_ids=devices).to(devices[0])
    curve = []
    for epoch in range(epochs):
        net.train()
        for features, labels in train_iter:
            train_batch_ch13(net, features, labels, loss, trainer, devices)
        acc = evaluate_accuracy_gpu(net, valid_iter)
        scheduler.step()
        curve.append((round(time.perf_counter() - t0, 1), round(acc, 3)))
        if acc >= target or curve[-1][0] > max_seconds:
            break
    hit = next((t for t, a in curve if a >= target), None)
    return {"seconds": hit, "curve": curve, "epochs": len(curve),
            "best_acc": max(a for _, a in curve), "wall": time.perf_counter() - t0}
