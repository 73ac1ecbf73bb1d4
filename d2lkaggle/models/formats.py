"""Frameworks' own weight files read without their framework and without running their code.

A PyTorch ``.pth``/``.pt`` file (``torch.save`` since torch 1.6) is a zip archive: a pickle
(``<prefix>/data.pkl``) that describes the tensors, and one raw buffer per storage
(``<prefix>/data/<key>``). Plain ``pickle.load`` of such a file would run any callable the file
names. :func:`read_torch_zip` reads the pickle with an unpickler that knows only what a state
dict is made of — ``collections.OrderedDict``, torch's tensor and parameter rebuild functions
and the storage types — and builds numpy arrays from the buffers itself; any other name in
the file is refused (:class:`UnsafeWeightsError`), so nothing the file holds is executed.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

__all__ = ["UnsafeWeightsError", "read_torch_zip", "TORCH_SUFFIXES"]

TORCH_SUFFIXES = (".pth", ".pt")

#: torch storage type -> numpy dtype (bfloat16 is read as its 16 bits and widened)
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeWeightsError(ValueError):
    """A weight file that holds more than arrays (or is not the format its name says)."""


class _Storage:
    """A storage type named by the pickle: only its dtype is used."""

    def __init__(self, name: str):
        self.dtype = _STORAGES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple,
                    *_: Any) -> np.ndarray:
    # torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    # backward_hooks[, metadata]): a strided view into the storage's flat buffer
    if not size:
        return np.array(storage[offset])
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Knows a state dict's names and nothing else."""

    def __init__(self, f: io.BytesIO, archive: zipfile.ZipFile, prefix: str, path: str,
                 big_endian: bool):
        super().__init__(f)
        self.archive, self.prefix, self.path, self.big_endian = archive, prefix, path, big_endian

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        raise UnsafeWeightsError(
            f"{self.path}: the file names {module}.{name}, which a PyTorch state dict does not "
            "hold; it was refused without running it (expected: tensors by name). Re-save the "
            "weights alone, e.g. torch.save(model.state_dict(), PATH), or as .safetensors")

    def persistent_load(self, pid: Any) -> np.ndarray:
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise UnsafeWeightsError(f"{self.path}: an unknown storage record {pid!r:.80}")
        dtype, key, numel = pid[1].dtype, str(pid[2]), int(pid[4])
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype=">u2" if self.big_endian else "<u2", count=numel)
            return (bits.astype(np.uint32) << 16).view(np.float32)
        dt = np.dtype(dtype).newbyteorder(">" if self.big_endian else "<")
        return np.frombuffer(raw, dtype=dt, count=numel).astype(np.dtype(dtype))


def read_torch_zip(path: str) -> Any:
    """The object a ``torch.save`` zip file holds, with every tensor as a numpy array (see the
    module docstring); :class:`UnsafeWeightsError` for anything but a state dict's parts."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise UnsafeWeightsError(
            f"{path}: not a PyTorch zip file (torch.save since torch 1.6); an older or pickled "
            "file is not read, as loading it would run code from it. Re-save it with a current "
            "torch (torch.save(model.state_dict(), PATH)) or as .safetensors")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UnsafeWeightsError(f"{path}: a zip file without PyTorch's data.pkl; expected "
                                     "a file written by torch.save")
        prefix = pkl[0].rsplit("/", 1)[0]
        order = f"{prefix}/byteorder"
        big = order in archive.namelist() and archive.read(order).strip() == b"big"
        f = io.BytesIO(archive.read(pkl[0]))
        try:
            return _TorchUnpickler(f, archive, prefix, path, big).load()
        except UnsafeWeightsError:
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise UnsafeWeightsError(f"{path}: a damaged PyTorch file ({type(e).__name__}: "
                                     f"{e}); download or save it again") from e
