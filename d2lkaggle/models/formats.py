"""Frameworks' own weight files read without their framework and without running their code.

Every reader here returns numpy arrays and refuses, in one line, a file that holds anything
else (:class:`UnsafeWeightsError`, naming the file, the format it was read as, why, and what
to do); nothing a file holds is ever executed, and no framework is imported:

* PyTorch ``.pth``/``.pt``: :func:`read_torch_zip` (below);
* MXNet ``.params`` (``mx.nd.save``, ``Block.save_parameters``): :func:`read_mxnet_params`
  parses MXNet's NDArray binary format with numpy (it is not a pickle at all);
* Paddle ``.pdparams`` (``paddle.save(state_dict)``): a pickle of name -> numpy array, read
  by :func:`read_paddle_params` with an unpickler that knows numpy's array and dtype
  constructors and nothing else.

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

__all__ = ["UnsafeWeightsError", "refused", "read_torch_zip", "read_mxnet_params",
           "read_paddle_params", "TORCH_SUFFIXES", "MXNET_SUFFIXES", "PADDLE_SUFFIXES"]

TORCH_SUFFIXES = (".pth", ".pt")
MXNET_SUFFIXES = (".params",)
PADDLE_SUFFIXES = (".pdparams",)

#: what to do with a refused file, in every message
RESAVE = ("re-save the weights alone as .safetensors (safetensors.numpy.save_file, or "
          "`d2lkaggle weights convert` of a file it reads)")

#: torch storage type -> numpy dtype (bfloat16 is read as its 16 bits and widened)
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeWeightsError(ValueError):
    """A weight file that holds more than arrays (or is not the format its name says)."""


def refused(path: str, fmt: str, why: str, todo: str = RESAVE) -> UnsafeWeightsError:
    """The one-line error for a weight file: the file, the format it was read as, why it was
    refused, what to do."""
    return UnsafeWeightsError(f"{path}: refused as {fmt}: {why}; {todo}")


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
        raise refused(self.path, "a PyTorch state dict (.pth)",
                      f"the file names {module}.{name}, which a state dict of tensors does not "
                      "hold (nothing from it was run)",
                      "re-save the weights alone, e.g. torch.save(model.state_dict(), PATH), "
                      "or as .safetensors")

    def persistent_load(self, pid: Any) -> np.ndarray:
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise refused(self.path, "a PyTorch state dict (.pth)",
                          f"an unknown storage record {pid!r:.80}")
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
        raise refused(path, "a PyTorch state dict (.pth)",
                      "not a PyTorch zip file (torch.save since torch 1.6); an older or pickled "
                      "file is not read, as loading it would run code from it",
                      "Re-save it with a current torch (torch.save(model.state_dict(), PATH)) "
                      "or as .safetensors")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise refused(path, "a PyTorch state dict (.pth)",
                          "a zip file without PyTorch's data.pkl",
                          "expected a file written by torch.save")
        prefix = pkl[0].rsplit("/", 1)[0]
        order = f"{prefix}/byteorder"
        big = order in archive.namelist() and archive.read(order).strip() == b"big"
        f = io.BytesIO(archive.read(pkl[0]))
        try:
            return _TorchUnpickler(f, archive, prefix, path, big).load()
        except UnsafeWeightsError:
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise refused(path, "a PyTorch state dict (.pth)",
                          f"damaged ({type(e).__name__}: {e})",
                          "download or save it again") from e


# ----------------------------------------------------------------------------- MXNet .params

#: ``mx.nd.save`` list magic, and the per-array magics of MXNet 1.x (V1: no storage type,
#: V2: dense/sparse storage type, V3: numpy shape semantics, ``npx.set_np()``)
_MX_LIST_MAGIC = 0x112
_MX_V1, _MX_V2, _MX_V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
#: MXNet's type flags (mshadow) -> numpy dtype; 12 is bfloat16
_MX_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32,
              5: np.int8, 6: np.int64, 7: np.bool_, 8: np.int16, 9: np.uint16, 10: np.uint32,
              11: np.uint64, 12: "bfloat16"}
_MX_FORMAT = "an MXNet .params file (mx.nd.save / save_parameters)"


class _Reader:
    """Little-endian fields from a bytes buffer; running past the end is a damaged file."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise refused(self.path, _MX_FORMAT, f"truncated or damaged at byte {self.pos}",
                          "download or save it again")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, fmt: str) -> int:
        return int(np.frombuffer(self.take(np.dtype(fmt).itemsize), dtype=fmt)[0])


def _mx_array(r: _Reader) -> np.ndarray | None:
    magic = r.int("<u4")
    if magic not in (_MX_V1, _MX_V2, _MX_V3):
        raise refused(r.path, _MX_FORMAT, f"an array record with the unknown magic {magic:#x} "
                      "(a format before MXNet 1.0, or not an MXNet file)")
    if magic != _MX_V1 and r.int("<i4") != 0:
        raise refused(r.path, _MX_FORMAT, "a sparse array; only dense arrays are read",
                      "save dense arrays (arr.tostype('default'))")
    ndim = r.int("<i4")
    if ndim < 0 or (ndim == 0 and magic != _MX_V3):
        return None                                   # an empty (unknown-shape) array
    if ndim > 32:
        raise refused(r.path, _MX_FORMAT, f"an array of {ndim} dimensions (damaged?)",
                      "download or save it again")
    shape = tuple(int(d) for d in np.frombuffer(r.take(8 * ndim), dtype="<i8"))
    r.take(8)                                         # the device it was saved from
    flag = r.int("<i4")
    if flag not in _MX_DTYPES or any(d < 0 for d in shape):
        raise refused(r.path, _MX_FORMAT, f"an array of type flag {flag} and shape {shape}",
                      "download or save it again")
    count = int(np.prod(shape, dtype=np.int64))
    if _MX_DTYPES[flag] == "bfloat16":
        bits = np.frombuffer(r.take(2 * count), dtype="<u2")
        return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    dt = np.dtype(_MX_DTYPES[flag]).newbyteorder("<")
    return np.frombuffer(r.take(dt.itemsize * count), dtype=dt).astype(dt.newbyteorder("=")).reshape(shape)


def read_mxnet_params(path: str) -> dict[str, np.ndarray]:
    """``{name: array}`` of an MXNet NDArray file (``mx.nd.save`` of a dict or list,
    ``Block.save_parameters``, a symbol export's ``arg:``/``aux:`` file), parsed with numpy:
    the format holds arrays and names only, and anything else is refused."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data, path)
    if len(data) < 24 or r.int("<u8") != _MX_LIST_MAGIC:
        what = "a pickle" if data[:1] == b"\x80" else "not an MXNet NDArray file"
        raise refused(path, _MX_FORMAT, f"{what} (no MXNet list header)")
    r.take(8)                                         # reserved
    n = r.int("<u8")
    if n > len(data):
        raise refused(path, _MX_FORMAT, f"{n} arrays announced in {len(data)} bytes",
                      "download or save it again")
    arrays = [_mx_array(r) for _ in range(n)]
    names = [str(i) for i in range(n)]
    if r.pos < len(data):
        k = r.int("<u8")
        if k not in (0, n):
            raise refused(path, _MX_FORMAT, f"{n} arrays but {k} names",
                          "download or save it again")
        if k:
            names = [r.take(r.int("<u8")).decode("utf-8", "replace") for _ in range(k)]
    if r.pos != len(data):
        raise refused(path, _MX_FORMAT, f"{len(data) - r.pos} bytes after the last record",
                      "download or save it again")
    return {name: a for name, a in zip(names, arrays) if a is not None}


# ----------------------------------------------------------------------------- Paddle .pdparams

_PADDLE_FORMAT = "a Paddle .pdparams file (paddle.save of a state dict)"


def _dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"an array of Python objects (dtype {dt})")
    return dt


def _reconstruct(cls: Any, *args: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"an array of class {cls!r}")
    return np.ndarray.__new__(np.ndarray, *args)


def _scalar(dtype: np.dtype, raw: bytes = b"") -> Any:
    return np.frombuffer(raw, dtype=_dtype(dtype), count=1)[0]


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # (how pickle protocol 2 spells bytes: _codecs.encode(text, "latin1"))
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buf: bytes, dtype: np.dtype, shape: tuple, order: str) -> np.ndarray:
    # (pickle protocol 5's form of an array)
    a = np.frombuffer(buf, dtype=_dtype(dtype)).reshape(shape, order=order)
    return np.array(a)


class _NumpyUnpickler(pickle.Unpickler):
    """Knows numpy's array, dtype and scalar constructors and ``OrderedDict``; any other name
    in the file is refused before anything is called."""

    SAFE = {("collections", "OrderedDict"): collections.OrderedDict,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy.core.multiarray", "scalar"): _scalar,
            ("numpy._core.multiarray", "scalar"): _scalar,
            ("_codecs", "encode"): _latin1,
            ("numpy.core.numeric", "_frombuffer"): _frombuffer,
            ("numpy._core.numeric", "_frombuffer"): _frombuffer}

    def __init__(self, f: Any, path: str):
        super().__init__(f)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        raise refused(self.path, _PADDLE_FORMAT,
                      f"the file names {module}.{name}, which a state dict of numpy arrays does "
                      "not hold (nothing from it was run)",
                      "re-save the weights alone, e.g. paddle.save(model.state_dict(), PATH), "
                      "or as .safetensors")

    def persistent_load(self, pid: Any) -> Any:
        raise refused(self.path, _PADDLE_FORMAT, "a persistent reference (not Paddle's format)")


def read_paddle_params(path: str) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``paddle.save(state_dict)`` file, read with
    :class:`_NumpyUnpickler` (the table of structured names Paddle adds is dropped)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:1] != b"\x80":
        raise refused(path, _PADDLE_FORMAT, "not a pickle (paddle.save writes one)")
    try:
        obj = _NumpyUnpickler(io.BytesIO(data), path).load()
    except UnsafeWeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError) as e:
        raise refused(path, _PADDLE_FORMAT, f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise refused(path, _PADDLE_FORMAT, f"it holds a {type(obj).__name__}, not a dict of arrays")
    out = {}
    for k, v in obj.items():
        if k == "StructuredToParameterName@@":
            continue
        if not isinstance(v, (np.ndarray, np.generic)) or not isinstance(k, str):
            raise refused(path, _PADDLE_FORMAT, f"entry {k!r} is a {type(v).__name__}, not an array")
        out[k] = np.asarray(v)
    return out
