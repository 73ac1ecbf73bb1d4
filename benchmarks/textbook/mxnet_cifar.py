"""The CIFAR-10 chapter's MXNet tab (see the package docstring for the attribution)."""
from __future__ import annotations

import os
import time

import mxnet as mx
from mxnet import autograd, gluon, init, npx
from mxnet.gluon import nn

npx.set_np()


# --- the chapter's own network (MXNet tab) -------------------------------------------------
class Residual(nn.HybridBlock):
    def __init__(self, num_channels, use_1x1conv=False, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = nn.Conv2D(num_channels, kernel_size=3, padding=1, strides=strides)
        self.conv2 = nn.Conv2D(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2D(num_channels, kernel_size=1, strides=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm()
        self.bn2 = nn.BatchNorm()

    def hybrid_forward(self, F, X):
        Y = F.npx.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        return F.npx.relu(Y + X)


def resnet18(num_classes):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(64, kernel_size=3, strides=1, padding=1), nn.BatchNorm(),
            nn.Activation('relu'))

    def resnet_block(num_channels, num_residuals, first_block=False):
        blk = nn.HybridSequential()
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.add(Residual(num_channels, use_1x1conv=True, strides=2))
            else:
                blk.add(Residual(num_channels))
        return blk

    net.add(resnet_block(64, 2, first_block=True), resnet_block(128, 2),
            resnet_block(256, 2), resnet_block(512, 2))
    net.add(nn.GlobalAvgPool2D(), nn.Dense(num_classes))
    return net


def get_net(devices):
    num_classes = 10
    net = resnet18(num_classes)
    net.initialize(ctx=devices, init=init.Xavier())
    return net


loss = gluon.loss.SoftmaxCrossEntropyLoss()


# --- d2l 1.0.3 library functions the chapter calls (d2l/mxnet.py) --------------------------
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
    cmp = y_hat.astype(y.dtype) == y
    return float(cmp.astype(y.dtype).sum())


def split_batch(X, y, devices):
    assert X.shape[0] == y.shape[0]
    return (gluon.utils.split_and_load(X, devices), gluon.utils.split_and_load(y, devices))


def train_batch_ch13(net, features, labels, loss, trainer, devices, split_f=split_batch):
    X_shards, y_shards = split_f(features, labels, devices)
    with autograd.record():
        pred_shards = [net(X_shard) for X_shard in X_shards]
        ls = [loss(pred_shard, y_shard) for pred_shard, y_shard in zip(pred_shards, y_shards)]
    for l in ls:
        l.backward()
    trainer.step(labels.shape[0], ignore_stale_grad=True)
    train_loss_sum = sum([float(l.sum()) for l in ls])
    train_acc_sum = sum(accuracy(pred_shard, y_shard)
                        for pred_shard, y_shard in zip(pred_shards, y_shards))
    return train_loss_sum, train_acc_sum


# --- the chapter's data ----------------------------------------------------------------------
transform_train = gluon.data.vision.transforms.Compose([
    gluon.data.vision.transforms.Resize(40),
    gluon.data.vision.transforms.RandomResizedCrop(32, scale=(0.64, 1.0), ratio=(1.0, 1.0)),
    gluon.data.vision.transforms.RandomFlipLeftRight(),
    gluon.data.vision.transforms.ToTensor(),
    gluon.data.vision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])


def train_speed(data_dir, batch_size, steps, warmup):
    """Examples/s of the chapter's ``train`` loop, end to end (its DataLoader included)."""
    mx.random.seed(0)
    train_ds = gluon.data.vision.ImageFolderDataset(
        os.path.join(data_dir, 'train_valid_test', 'train'))
    train_iter = gluon.data.DataLoader(train_ds.transform_first(transform_train), batch_size,
                                       shuffle=True, last_batch='discard')
    devices = [mx.cpu()]            # d2l.try_all_gpus() is [] without a GPU
    net = get_net(devices)
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.02, 'momentum': 0.9, 'wd': 5e-4})
    metric = Accumulator(3)
    t0 = n0 = None
    for i, (features, labels) in enumerate(train_iter):
        if i == warmup:
            t0, n0 = time.perf_counter(), metric[2]
        l, acc = train_batch_ch13(net, features, labels.astype('float32'), loss, trainer,
                                  devices, split_batch)
        metric.add(l, acc, labels.shape[0])
        if i + 1 >= warmup + steps:
            break
    return {"examples_per_sec": (metric[2] - n0) / (time.perf_counter() - t0)}


def evaluate_accuracy_gpus(net, data_iter, split_f=split_batch):
    """d2l.evaluate_accuracy_gpus (the chapter's validation each epoch)."""
    devices = list(net.collect_params().values())[0].list_ctx()
    metric = Accumulator(2)
    for features, labels in data_iter:
        X_shards, y_shards = split_f(features, labels, devices)
        pred_shards = [net(X_shard) for X_shard in X_shards]
        metric.add(sum(float(accuracy(pred_shard, y_shard)) for
                       pred_shard, y_shard in zip(pred_shards, y_shards)), labels.size)
    return metric[0] / metric[1]


transform_test = gluon.data.vision.transforms.Compose([
    gluon.data.vision.transforms.ToTensor(),
    gluon.data.vision.transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])


def time_to_accuracy(data_dir, target, max_seconds, epochs=20, batch_size=32, lr=0.02,
                     wd=5e-4, lr_period=4, lr_decay=0.9):
    """Wall seconds until the chapter's ``train`` first validates at ``target`` accuracy.

    The MXNet tab's recipe (Trainer 'sgd' momentum 0.9, lr 0.02, wd 5e-4, ``trainer.step
    (batch_size)``, lr × 0.9 every 4 epochs, 20 epochs; batch 32 as for its demo), epoch by
    epoch: train, ``evaluate_accuracy_gpus`` on valid, then the lr decay. The clock starts
    before the datasets are made and stops at the first epoch at ``target``, or after the
    first epoch that ends past ``max_seconds`` (``seconds`` None: not reached)."""
    t0 = time.perf_counter()
    mx.random.seed(0)
    train_ds, valid_ds = [gluon.data.vision.ImageFolderDataset(
        os.path.join(data_dir, 'train_valid_test', folder)) for folder in ('train', 'valid')]
    train_iter = gluon.data.DataLoader(train_ds.transform_first(transform_train), batch_size,
                                       shuffle=True, last_batch='discard')
    valid_iter = gluon.data.DataLoader(valid_ds.transform_first(transform_test), batch_size,
                                       shuffle=False, last_batch='discard')
    devices = [mx.cpu()]
    net = get_net(devices)
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': lr, 'momentum': 0.9, 'wd': wd})
    curve = []
    for epoch in range(epochs):
        for features, labels in train_iter:
            train_batch_ch13(net, features, labels.astype('float32'), loss, trainer, devices,
                             split_batch)
        acc = evaluate_accuracy_gpus(net, valid_iter, split_batch)
        if epoch > 0 and epoch % lr_period == 0:
            trainer.set_learning_rate(trainer.learning_rate * lr_decay)
        curve.append((round(time.perf_counter() - t0, 1), round(acc, 3)))
        if acc >= target or curve[-1][0] > max_seconds:
            break
    hit = next((t for t, a in curve if a >= target), None)
    return {"seconds": hit, "curve": curve, "epochs": len(curve),
            "best_acc": max(a for _, a in curve), "wall": time.perf_counter() - t0}
