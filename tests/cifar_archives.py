"""Tiny CIFAR python archives in the real format (Python 2 style protocol-2 pickles, bytes keys,
N×3072 planar uint8 rows) for the tests: a handful of images instead of 60,000."""
from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
FINE = [f"fine_{i:02d}" for i in range(100)]
COARSE = [f"coarse_{i:02d}" for i in range(20)]


def learnable(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N×32×32×3 uint8 images whose class (n % classes) sets which horizontal band is bright."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    x = rng.integers(0, 70, (n, 32, 32, 3)).astype(np.uint8)
    rows = max(1, 32 // classes)
    for i, c in enumerate(y):
        x[i, (c * rows) % 32:(c * rows) % 32 + rows] += 160
    return x, y


def planar(x: np.ndarray) -> np.ndarray:
    """H×W×3 images → the archive's rows of R, G and B planes."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def _add(tf: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tf.addfile(info, io.BytesIO(blob))


class Py2Pickler(pickle._Pickler):
    """Python 2's cPickle as the CIFAR site used it: every str/bytes is a py2 ``str``
    (SHORT_BINSTRING / BINSTRING), including the raw buffer inside each numpy array."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        head = (pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256
                else pickle.BINSTRING + struct.pack("<i", len(raw)))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[str] = save_py2
    dispatch[bytes] = save_py2


def _dump(d: dict) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(d)
    return buf.getvalue()


def write_cifar10(folder, n_train=50, n_test=20, seed=0, classes=10, skip=(), corrupt=(),
                  extra=None) -> str:
    """``folder/cifar-10-python.tar.gz`` with five train batches, test_batch and batches.meta.

    ``skip`` leaves members out, ``corrupt`` replaces their bytes with garbage.
    Returns the path; ``extra`` (a dict) receives the arrays written.
    """
    xtr, ytr = learnable(n_train, classes, seed)
    xte, yte = learnable(n_test, classes, seed + 1)
    path = os.path.join(folder, "cifar-10-python.tar.gz")
    parts = np.array_split(np.arange(n_train), 5)
    with tarfile.open(path, "w:gz") as tf:
        members = {f"data_batch_{i + 1}": _dump({
            "batch_label": "training batch", "labels": [int(v) for v in ytr[p]],
            "data": planar(xtr[p]), "filenames": ["x.png"] * len(p)}) for i, p in enumerate(parts)}
        members["test_batch"] = _dump({"batch_label": "testing batch",
                                       "labels": [int(v) for v in yte], "data": planar(xte),
                                       "filenames": ["x.png"] * n_test})
        members["batches.meta"] = _dump({"label_names": list(CIFAR10_NAMES),
                                         "num_cases_per_batch": 10000, "num_vis": 3072})
        _add(tf, "cifar-10-batches-py/readme.html", b"<html></html>")
        for name, blob in members.items():
            if name in skip:
                continue
            _add(tf, f"cifar-10-batches-py/{name}", b"\x80\x02garbage" if name in corrupt else blob)
    if extra is not None:
        extra.update(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte)
    return path


def write_cifar100(folder, n_train=60, n_test=20, seed=0, classes=6, skip=(), corrupt=(),
                   extra=None) -> str:
    """``folder/cifar-100-python.tar.gz`` (train, test, meta); fine label k has coarse k // 5."""
    xtr, ytr = learnable(n_train, classes, seed)
    xte, yte = learnable(n_test, classes, seed + 1)
    path = os.path.join(folder, "cifar-100-python.tar.gz")
    with tarfile.open(path, "w:gz") as tf:
        members = {}
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            members[split] = _dump({"filenames": ["x.png"] * len(x), "batch_label": split,
                                    "fine_labels": [int(v) for v in y],
                                    "coarse_labels": [int(v) // 5 for v in y], "data": planar(x)})
        members["meta"] = _dump({"fine_label_names": list(FINE),
                                 "coarse_label_names": list(COARSE)})
        for name, blob in members.items():
            if name in skip:
                continue
            _add(tf, f"cifar-100-python/{name}", b"\x80\x02garbage" if name in corrupt else blob)
    if extra is not None:
        extra.update(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte)
    return path
