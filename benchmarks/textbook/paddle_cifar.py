"""The Kaggle chapters' Paddle tab applied to CIFAR-10 (see the package docstring).

The Chinese edition's Paddle tab: ``paddlevision.datasets.DatasetFolder`` with the chapter's
transforms, ``paddle.io.DataLoader(shuffle=True, drop_last=True)``, ``paddle.DataParallel``,
``Momentum`` with ``StepDecay``, ``d2l.train_batch_ch13`` (Paddle form) and ``Accumulator``;
the network is d2l's ResNet-18 (the same layers as the torch tab's, Paddle's eager layers).
Paddle's own thread default is kept, as the chapter does.
"""
from __future__ import annotations

import os
import time

import paddle
import paddle.vision as paddlevision
from paddle import nn
from paddle.nn import functional as F


class Residual(nn.Layer):
    """d2l (Paddle) Residual."""

    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2D(input_channels, num_channels, kernel_size=3, padding=1,
                               stride=strides)
        self.conv2 = nn.Conv2D(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2D(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2D(num_channels, momentum=0.9)
        self.bn2 = nn.BatchNorm2D(num_channels, momentum=0.9)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def resnet18(num_classes, in_channels=1):
    """d2l (Paddle) resnet18."""
    def resnet_block(in_channels, out_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(Residual(in_channels, out_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(Residual(out_channels, out_channels))
        return nn.Sequential(*blk)

    net = nn.Sequential(nn.Conv2D(in_channels, 64, kernel_size=3, stride=1, padding=1),
                        nn.BatchNorm2D(64, momentum=0.9), nn.ReLU())
    net.add_sublayer("resnet_block1", resnet_block(64, 64, 2, first_block=True))
    net.add_sublayer("resnet_block2", resnet_block(64, 128, 2))
    net.add_sublayer("resnet_block3", resnet_block(128, 256, 2))
    net.add_sublayer("resnet_block4", resnet_block(256, 512, 2))
    net.add_sublayer("global_avg_pool", nn.AdaptiveAvgPool2D((1, 1)))
    net.add_sublayer("fc", nn.Sequential(nn.Flatten(), nn.Linear(512, num_classes)))
    return net


class Accumulator:
    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def __getitem__(self, idx):
        return self.data[idx]


def accuracy(y_hat, y):
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    if len(y_hat.shape) < len(y.shape):
        y_hat = y_hat.reshape(y.shape)
    cmp = y_hat.astype(y.dtype) == y
    return float(cmp.astype(y.dtype).sum())


def train_batch_ch13(net, X, y, loss, trainer, devices):
    """d2l (Paddle) train_batch_ch13."""
    net.train()
    trainer.clear_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    train_loss_sum = l.sum()
    train_acc_sum = accuracy(pred, y)
    return train_loss_sum, train_acc_sum


transform_train = paddlevision.transforms.Compose([
    paddlevision.transforms.Resize(40),
    paddlevision.transforms.RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
    paddlevision.transforms.RandomHorizontalFlip(),
    paddlevision.transforms.ToTensor(),
    paddlevision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])

loss = nn.CrossEntropyLoss(reduction="none")


def train_speed(data_dir, batch_size, steps, warmup):
    """Examples/s of the chapter's loop, end to end (its DataLoader included)."""
    paddle.seed(0)
    train_ds = paddlevision.datasets.DatasetFolder(
        os.path.join(data_dir, 'train_valid_test', 'train'), transform=transform_train)
    train_iter = paddle.io.DataLoader(train_ds, batch_size=batch_size, shuffle=True,
                                      drop_last=True)
    net = paddle.DataParallel(resnet18(10, 3))
    scheduler = paddle.optimizer.lr.StepDecay(0.02, 4, 0.9)
    trainer = paddle.optimizer.Momentum(learning_rate=scheduler, parameters=net.parameters(),
                                        momentum=0.9, weight_decay=5e-4)
    metric = Accumulator(3)
    t0 = n0 = None
    for i, (features, labels) in enumerate(train_iter):
        if i == warmup:
            t0, n0 = time.perf_counter(), metric[2]
        l, acc = train_batch_ch13(net, features, labels, loss, trainer, None)
        metric.add(l, acc, labels.shape[0])
        if i + 1 >= warmup + steps:
            break
    return {"examples_per_sec": (metric[2] - n0) / (time.perf_counter() - t0),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # Paddle sets 1 at import


transform_test = paddlevision.transforms.Compose([
    paddlevision.transforms.ToTensor(),
    paddlevision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])


def evaluate_accuracy_gpu(net, data_iter):
    """d2l (Paddle) evaluate_accuracy_gpu."""
    net.eval()
    metric = Accumulator(2)
    with paddle.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def time_to_accuracy(data_dir, target, max_seconds, epochs=20, batch_size=32, lr=2e-4,
                     wd=5e-4, lr_period=4, lr_decay=0.9):
    """Wall seconds until the chapter's ``train`` first validates at ``target`` accuracy.

    The chapter's recipe as its torch tab gives it, which the Paddle tab's
    ``train_batch_ch13`` shares (the SUMMED loss, Momentum 0.9, lr 2e-4, wd 5e-4,
    StepDecay(4, 0.9), 20 epochs; batch 32 as for its demo), epoch by epoch: train,
    ``evaluate_accuracy_gpu`` on valid, ``scheduler.step()``. The clock starts before the
    datasets are made and stops at the first epoch at ``target``, or after the first epoch
    that ends past ``max_seconds`` (``seconds`` None: not reached)."""
    t0 = time.perf_counter()
    paddle.seed(0)
    train_ds, valid_ds = [paddlevision.datasets.DatasetFolder(
        os.path.join(data_dir, 'train_valid_test', folder), transform=tf)
        for folder, tf in (('train', transform_train), ('valid', transform_test))]
    train_iter = paddle.io.DataLoader(train_ds, batch_size=batch_size, shuffle=True,
                                      drop_last=True)
    valid_iter = paddle.io.DataLoader(valid_ds, batch_size=batch_size, shuffle=False,
                                      drop_last=True)
    net = paddle.DataParallel(resnet18(10, 3))
    scheduler = paddle.optimizer.lr.StepDecay(lr, lr_period, lr_decay)
    trainer = paddle.optimizer.Momentum(learning_rate=scheduler, parameters=net.parameters(),
                                        momentum=0.9, weight_decay=wd)
    curve = []
    for epoch in range(epochs):
        net.train()
        for features, labels in train_iter:
            train_batch_ch13(net, features, labels, loss, trainer, None)
        acc = evaluate_accuracy_gpu(net, valid_iter)
        scheduler.step()
        curve.append((round(time.perf_counter() - t0, 1), round(acc, 3)))
        if acc >= target or curve[-1][0] > max_seconds:
            break
    hit = next((t for t, a in curve if a >= target), None)
    return {"seconds": hit, "curve": curve, "epochs": len(curve),
            "best_acc": max(a for _, a in curve), "wall": time.perf_counter() - t0}
