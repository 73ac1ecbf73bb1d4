"""Weight files of every format read without their framework, without running their code,
and without trusting what they declare.

Every reader here returns numpy arrays and refuses, in one line, a file that holds anything
else (:class:`UnsafeWeightsError`, naming the file, the format it was read as, why, and what
to do); nothing a file holds is ever executed, and no framework is imported:

* PyTorch ``.pth``/``.pt``: :func:`read_torch_zip` (below);
* MXNet ``.params`` (``mx.nd.save``, ``Block.save_parameters``): :func:`read_mxnet_params`
  parses MXNet's NDArray binary format with numpy (it is not a pickle at all);
* Paddle ``.pdparams`` (``paddle.save(state_dict)``): a pickle of name -> numpy array, read
  by :func:`read_paddle_params` with an unpickler that knows numpy's array and dtype
  constructors and nothing else;
* ``.npz`` (:func:`read_npz`) and ``.safetensors`` (:func:`read_safetensors`).

A PyTorch ``.pth``/``.pt`` file (``torch.save`` since torch 1.6) is a zip archive: a pickle
(``<prefix>/data.pkl``) that describes the tensors, and one raw buffer per storage
(``<prefix>/data/<key>``). Plain ``pickle.load`` of such a file would run any callable the file
names. :func:`read_torch_zip` reads the pickle with an unpickler that knows only what a state
dict is made of — ``collections.OrderedDict``, torch's tensor and parameter rebuild functions
and the storage types — and builds numpy arrays from the buffers itself; any other name in
the file is refused (:class:`UnsafeWeightsError`), so nothing the file holds is executed.

What a file declares is checked before anything of that size exists:

* a pickle's opcode stream first (:func:`d2lkaggle.models.pickles.check_stream`: memo
  indices, nesting);
* every tensor view inside its storage (offset and strides >= 0, the last element within the
  storage), every storage the exact size of its zip member, read once however many tensors
  view it; every array's bytes the product of its shape and a plain numeric dtype (bool,
  integers, floats: no objects, strings, records), every pickled ndarray built from bytes
  of exactly that size;
* every allocation against the file's :class:`~d2lkaggle.models.limits.ReadBudget` (8x the
  file + 64 MiB by default; ``D2LKAGGLE_MAX_WEIGHTS_GB`` raises it), and zip members read at
  most to their declared size (:func:`~d2lkaggle.models.limits.read_member`).
"""
from __future__ import annotations

import ast
import collections
import io
import math
import os
import pickle
import zipfile
from typing import Any, Callable

import numpy as np

from .limits import RAISE_LIMIT, ReadBudget, read_member
from .pickles import check_stream

__all__ = ["UnsafeWeightsError", "refused", "read_torch_zip", "read_mxnet_params",
           "read_paddle_params", "read_npz", "read_safetensors", "plain_dtype",
           "TORCH_SUFFIXES", "MXNET_SUFFIXES", "PADDLE_SUFFIXES", "MAX_NDIM"]

TORCH_SUFFIXES = (".pth", ".pt")
MXNET_SUFFIXES = (".params",)
PADDLE_SUFFIXES = (".pdparams",)
#: more dimensions than any weight has (numpy's own limit is 32)
MAX_NDIM = 32

#: what to do with a refused file, in every message
RESAVE = ("re-save the weights alone as .safetensors (safetensors.numpy.save_file, or "
          "`d2lkaggle weights convert` of a file it reads)")
DAMAGED = "download or save it again"

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


def _refuser(path: str, fmt: str) -> Callable[..., UnsafeWeightsError]:
    """``refuse(why, todo=...)`` for one file and format (the budget's and the checks' voice)."""
    return lambda why, todo=DAMAGED: refused(path, fmt, why, todo)


def plain_dtype(dt: Any) -> bool:
    """True for a dtype a weight may have: bool, integers or floats of a standard size (no
    objects, strings, records, sub-arrays, dates or complex numbers)."""
    return (isinstance(dt, np.dtype) and dt.kind in "biuf" and dt.fields is None
            and dt.subdtype is None and dt.itemsize in (1, 2, 4, 8))


def _shape(value: Any, what: str, refuse: Callable[..., UnsafeWeightsError]) -> tuple[int, ...]:
    """``value`` as a shape (a tuple or list of ints >= 0, at most MAX_NDIM of them)."""
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise refuse(f"{what} has the shape {_short(value)}, not up to {MAX_NDIM} sizes >= 0")
    return tuple(value)


def _short(value: Any, n: int = 60) -> str:
    """A few characters of any value a file gave, for a message (never its whole repr: an
    integer of 10,000 digits or a nested tuple says what it is instead)."""
    def atom(v: Any) -> str | None:
        if isinstance(v, bool) or v is None or isinstance(v, float):
            return repr(v)
        if isinstance(v, int):
            return repr(v) if v.bit_length() <= 64 else f"an integer of {v.bit_length()} bits"
        if isinstance(v, (str, bytes)):
            return repr(v[:n]) + ("..." if len(v) > n else "")
        return None

    text = atom(value)
    if text is None and isinstance(value, (tuple, list)) and len(value) <= 8:
        text = "(" + ", ".join(atom(v) or f"a {type(v).__name__}" for v in value) + ")"
    if text is None:
        text = f"a {type(value).__name__}"
    return text if len(text) <= n + 5 else text[:n] + "..."


def _guarded(path: str, fmt: str, read: Callable[[], Any]) -> Any:
    """``read()``, with anything a malformed file makes the parsing libraries raise (zip,
    pickle, numpy, JSON errors, a recursion or memory limit) as one refusal naming the file."""
    try:
        return read()
    except UnsafeWeightsError:
        raise
    except MemoryError as e:
        why = f"it needs more memory than this machine has ({e or 'no details'})"
        raise refused(path, fmt, why, "if the file is what you expect, convert it on a "
                      "machine with more memory; otherwise download or save it again") from e
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise refused(path, fmt, f"damaged ({type(e).__name__}: {e})", DAMAGED) from e
    except Exception as e:   # noqa: BLE001 - a foreign file: whatever breaks, one line
        raise refused(path, fmt, f"damaged ({type(e).__name__}: {_short(str(e), 120)})",
                      DAMAGED) from e


# ----------------------------------------------------------------------------- PyTorch .pth

_TORCH_FORMAT = "a PyTorch state dict (.pth)"


class _Storage:
    """A storage type named by the pickle: only its dtype is used."""

    def __init__(self, name: str):
        self.dtype = _STORAGES[name]
        self.itemsize = 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _StorageRef:
    """One storage of the file: its member, dtype and length; its bytes are read on the first
    tensor that views it (and only once)."""

    def __init__(self, kind: _Storage, key: str, numel: int, info: zipfile.ZipInfo):
        self.kind, self.key, self.numel, self.info = kind, key, numel, info
        self.array: np.ndarray | None = None


class _TorchUnpickler(pickle.Unpickler):
    """Knows a state dict's names and nothing else."""

    def __init__(self, f: io.BytesIO, archive: zipfile.ZipFile, prefix: str, path: str,
                 big_endian: bool, budget: ReadBudget):
        super().__init__(f)
        self.archive, self.prefix, self.path, self.big_endian = archive, prefix, path, big_endian
        self.budget, self.refuse = budget, _refuser(path, _TORCH_FORMAT)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self.rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        raise refused(self.path, _TORCH_FORMAT,
                      f"the file names {module}.{name}, which a state dict of tensors does not "
                      "hold (nothing from it was run)",
                      "re-save the weights alone, e.g. torch.save(model.state_dict(), PATH), "
                      "or as .safetensors")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and not isinstance(pid[4], bool) and pid[4] >= 0):
            raise self.refuse(f"an unknown storage record {_short(pid)}")
        kind, key, numel = pid[1], pid[2], pid[4]
        known = self.storages.get(key)
        if known is not None:
            if known.kind.dtype != kind.dtype or known.numel != numel:
                raise self.refuse(f"storage {key!r} is declared twice, with other types or sizes")
            return known
        member = f"{self.prefix}/data/{key}"
        try:
            info = self.archive.getinfo(member)
        except KeyError:
            raise self.refuse(f"storage {_short(key)} has no member {_short(member)} in the "
                              "zip file") from None
        if info.file_size != numel * kind.itemsize:
            raise self.refuse(f"storage {key!r} declares {numel} elements of {kind.itemsize} "
                              f"bytes, its member holds {info.file_size} bytes")
        self.storages[key] = ref = _StorageRef(kind, key, numel, info)
        return ref

    def storage_array(self, ref: _StorageRef) -> np.ndarray:
        """The storage's elements (read once; bfloat16 widened to float32)."""
        if ref.array is None:
            raw = read_member(self.archive, ref.info, self.budget, f"storage {ref.key!r}")
            if ref.kind.dtype == "bfloat16":
                self.budget.take(4 * ref.numel, f"storage {ref.key!r} widened to float32")
                bits = np.frombuffer(raw, dtype=">u2" if self.big_endian else "<u2")
                ref.array = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                dt = np.dtype(ref.kind.dtype)
                ref.array = np.frombuffer(raw, dtype=dt.newbyteorder(">" if self.big_endian
                                                                     else "<"))
                if not ref.array.dtype.isnative:   # a file from a big-endian machine
                    self.budget.take(len(raw), f"storage {ref.key!r} in this byte order")
                    ref.array = ref.array.astype(dt)
        return ref.array

    def rebuild_tensor(self, storage: Any, offset: Any = None, size: Any = None,
                       stride: Any = None, *_: Any) -> np.ndarray:
        # torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
        # backward_hooks[, metadata]): a strided view into the storage, checked to lie inside it
        if not isinstance(storage, _StorageRef):
            raise self.refuse(f"a tensor whose storage is {_short(storage)}")
        what = f"a tensor of storage {storage.key!r}"
        size = _shape(size, what, self.refuse)
        if not isinstance(stride, (tuple, list)) or len(stride) != len(size) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in stride):
            raise self.refuse(f"{what} of shape {size} has the strides {_short(stride)}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 \
                or any(s < 0 for s in stride):
            raise self.refuse(f"{what} starts at offset {_short(offset)} with strides "
                              f"{tuple(stride)}: a view reaches only forward from offset >= 0")
        count = math.prod(size)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if count else offset
        if (count and last >= storage.numel) or offset > storage.numel:
            raise self.refuse(f"{what} of shape {size}, offset {offset} and strides "
                              f"{tuple(stride)} reaches element {last} of a storage of "
                              f"{storage.numel}: it would read memory outside the file's data")
        out_itemsize = 4 if storage.kind.dtype == "bfloat16" else storage.kind.itemsize
        self.budget.take(count * out_itemsize, f"{what} of shape {size}")
        if not count:
            dt = np.float32 if storage.kind.dtype == "bfloat16" else storage.kind.dtype
            return np.zeros(size, dtype=dt)
        flat = self.storage_array(storage)
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                               strides=tuple(s * item for s in stride))
        return np.array(view)


def _rebuild_parameter(data: Any, *_: Any) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError(f"a parameter of {type(data).__name__}, not a tensor")
    return data


def read_torch_zip(path: str, max_bytes: int | None = None) -> Any:
    """The object a ``torch.save`` zip file holds, with every tensor as a numpy array (see the
    module docstring); :class:`UnsafeWeightsError` for anything but a state dict's parts, or
    for a file that declares more than it holds. ``max_bytes``: the memory limit
    (:func:`~d2lkaggle.models.limits.weights_limit`)."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise refused(path, _TORCH_FORMAT,
                      "not a PyTorch zip file (torch.save since torch 1.6); an older or pickled "
                      "file is not read, as loading it would run code from it",
                      "Re-save it with a current torch (torch.save(model.state_dict(), PATH)) "
                      "or as .safetensors")
    budget = ReadBudget(path, _refuser(path, _TORCH_FORMAT), max_bytes)
    return _guarded(path, _TORCH_FORMAT, lambda: _read_torch(path, budget))


def _read_torch(path: str, budget: ReadBudget) -> Any:
    refuse = budget.refuse
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise refused(path, _TORCH_FORMAT, "a zip file without PyTorch's data.pkl",
                          "expected a file written by torch.save")
        prefix = pkl[0].rsplit("/", 1)[0]
        big = False
        if f"{prefix}/byteorder" in archive.namelist():
            info = archive.getinfo(f"{prefix}/byteorder")
            if info.file_size > 16:
                raise refuse(f"its byteorder record is {info.file_size} bytes")
            big = bytes(read_member(archive, info, budget, "the byteorder record")).strip() == b"big"
        data = bytes(read_member(archive, archive.getinfo(pkl[0]), budget, "the pickle"))
        check_stream(data, refuse)
        return _TorchUnpickler(io.BytesIO(data), archive, prefix, path, big, budget).load()


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
                          DAMAGED)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, fmt: str) -> int:
        return int(np.frombuffer(self.take(np.dtype(fmt).itemsize), dtype=fmt)[0])


def _mx_array(r: _Reader, budget: ReadBudget, index: int) -> np.ndarray | None:
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
    if ndim > MAX_NDIM:
        raise refused(r.path, _MX_FORMAT, f"array {index} has {ndim} dimensions (damaged?)",
                      DAMAGED)
    shape = tuple(int(d) for d in np.frombuffer(r.take(8 * ndim), dtype="<i8"))
    r.take(8)                                         # the device it was saved from
    flag = r.int("<i4")
    if flag not in _MX_DTYPES or any(d < 0 for d in shape):
        raise refused(r.path, _MX_FORMAT, f"array {index} has the type flag {flag} and the "
                      f"shape {shape}", DAMAGED)
    count = math.prod(shape)   # a Python int: a product past int64 is not wrapped
    itemsize = 2 if _MX_DTYPES[flag] == "bfloat16" else np.dtype(_MX_DTYPES[flag]).itemsize
    if count * itemsize > len(r.data) - r.pos:
        raise refused(r.path, _MX_FORMAT, f"array {index} declares the shape {shape} "
                      f"({count * itemsize} bytes) but {len(r.data) - r.pos} bytes remain in "
                      "the file", DAMAGED)
    bf16 = _MX_DTYPES[flag] == "bfloat16"
    budget.take(count * (4 if bf16 else itemsize), f"array {index} of shape {shape}")
    if bf16:
        bits = np.frombuffer(r.take(2 * count), dtype="<u2")
        return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    dt = np.dtype(_MX_DTYPES[flag]).newbyteorder("<")
    return np.frombuffer(r.take(dt.itemsize * count), dtype=dt).astype(dt.newbyteorder("=")).reshape(shape)


def read_mxnet_params(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``{name: array}`` of an MXNet NDArray file (``mx.nd.save`` of a dict or list,
    ``Block.save_parameters``, a symbol export's ``arg:``/``aux:`` file), parsed with numpy:
    the format holds arrays and names only, and anything else (or a name given twice) is
    refused."""
    path = os.fspath(path)
    budget = ReadBudget(path, _refuser(path, _MX_FORMAT), max_bytes)
    return _guarded(path, _MX_FORMAT, lambda: _read_mxnet(path, budget))


def _read_mxnet(path: str, budget: ReadBudget) -> dict[str, np.ndarray]:
    budget.take(budget.file_size, "the file")
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data, path)
    if len(data) < 24 or r.int("<u8") != _MX_LIST_MAGIC:
        what = "a pickle" if data[:1] == b"\x80" else "not an MXNet NDArray file"
        raise refused(path, _MX_FORMAT, f"{what} (no MXNet list header)")
    r.take(8)                                         # reserved
    n = r.int("<u8")
    if n > len(data):
        raise refused(path, _MX_FORMAT, f"{n} arrays announced in {len(data)} bytes", DAMAGED)
    arrays = [_mx_array(r, budget, i) for i in range(n)]
    names = [str(i) for i in range(n)]
    if r.pos < len(data):
        k = r.int("<u8")
        if k not in (0, n):
            raise refused(path, _MX_FORMAT, f"{n} arrays but {k} names", DAMAGED)
        if k:
            names = [r.take(r.int("<u8")).decode("utf-8", "replace") for _ in range(k)]
    if r.pos != len(data):
        raise refused(path, _MX_FORMAT, f"{len(data) - r.pos} bytes after the last record",
                      DAMAGED)
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise refused(path, _MX_FORMAT, f"the name {_short(twice[0])} is given to "
                      f"{names.count(twice[0])} arrays (which one is meant?)",
                      "save each parameter under one name")
    return {name: a for name, a in zip(names, arrays) if a is not None}


# ----------------------------------------------------------------------------- Paddle .pdparams

_PADDLE_FORMAT = "a Paddle .pdparams file (paddle.save of a state dict)"


class _DTypeSpec:
    """``numpy.dtype(code, align, copy)`` as the pickle calls it, with the byte order its
    BUILD sets; resolved (and checked to be plain numeric) only when an array uses it."""

    def __init__(self, code: Any = None, *_: Any):
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize,
        # alignment, flags[, metadata]); a plain numeric dtype has no sub-array, names, fields
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            raise pickle.UnpicklingError(f"the dtype state {_short(state)} (records, "
                                         "sub-arrays and objects are not weights)")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        code = self.code.decode("latin1") if isinstance(self.code, bytes) else self.code
        try:
            dt = np.dtype(code) if isinstance(code, str) else None
        except TypeError:
            dt = None
        if dt is None or not plain_dtype(dt):
            raise pickle.UnpicklingError(f"an array of dtype {_short(self.code)} (only bool, "
                                         "integer and float arrays are weights)")
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


class _PendingArray:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``: nothing is allocated
    until its BUILD brings the dtype and bytes, and then only for exactly those bytes."""

    def __init__(self, reader: "_NumpyUnpickler"):
        self.reader, self.array = reader, None

    def __setstate__(self, state: Any) -> None:
        # ndarray's state: (version, shape, dtype, is_fortran, rawdata)
        if isinstance(state, tuple) and len(state) == 4:
            state = (1, *state)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError(f"an ndarray state {_short(state)}")
        _, shape, dtype, fortran, raw = state
        self.array = self.reader.array(raw, dtype, shape, "F" if fortran else "C")


class _NumpyUnpickler(pickle.Unpickler):
    """Knows numpy's array, dtype and scalar constructors and ``OrderedDict``; any other name
    in the file is refused before anything is called, and every array is checked against its
    bytes and the budget before it is made."""

    def __init__(self, f: Any, path: str, budget: ReadBudget):
        super().__init__(f)
        self.path, self.budget = path, budget
        self.safe = {("collections", "OrderedDict"): collections.OrderedDict,
                     ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _DTypeSpec,
                     ("_codecs", "encode"): _latin1, ("__builtin__", "bytes"): _no_bytes,
                     ("builtins", "bytes"): _no_bytes}
        for core in ("numpy.core", "numpy._core"):
            self.safe.update({(f"{core}.multiarray", "_reconstruct"): self.reconstruct,
                              (f"{core}.multiarray", "scalar"): self.scalar,
                              (f"{core}.numeric", "_frombuffer"): self.frombuffer})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.safe:
            return self.safe[(module, name)]
        raise refused(self.path, _PADDLE_FORMAT,
                      f"the file names {module}.{name}, which a state dict of numpy arrays does "
                      "not hold (nothing from it was run)",
                      "re-save the weights alone, e.g. paddle.save(model.state_dict(), PATH), "
                      "or as .safetensors")

    def persistent_load(self, pid: Any) -> Any:
        raise refused(self.path, _PADDLE_FORMAT, "a persistent reference (not Paddle's format)")

    def array(self, raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        """An array from exactly ``prod(shape) * itemsize`` bytes, counted in the budget."""
        if not isinstance(dtype, _DTypeSpec):
            raise pickle.UnpicklingError(f"an array whose dtype is {_short(dtype)}, not a "
                                         "numpy dtype")
        dt = dtype.resolve()
        shape = _shape(shape, "an array", _refuser(self.path, _PADDLE_FORMAT))
        if not isinstance(raw, (bytes, bytearray)) or order not in ("C", "F"):
            raise pickle.UnpicklingError(f"an array whose data is {_short(raw)} (it has no "
                                         "buffer of its own)")
        need = math.prod(shape) * dt.itemsize
        if len(raw) != need:
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dt} needs "
                                         f"{need} bytes, the file gives {len(raw)}")
        self.budget.take(need, f"an array of shape {shape}")
        if not need:
            return np.zeros(shape, dt.newbyteorder("="))
        a = np.frombuffer(raw, dtype=dt).reshape(shape, order=order)
        return a.astype(dt.newbyteorder("="), order="C")   # a copy: native and writable

    def reconstruct(self, cls: Any, *_: Any) -> _PendingArray:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError(f"an array of class {cls!r}")
        return _PendingArray(self)

    def frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        # (pickle protocol 5's form of an array)
        return self.array(buf, dtype, shape, order)

    def scalar(self, dtype: Any, raw: Any = b"") -> Any:
        return self.array(raw, dtype, (), "C")[()]


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # (how pickle protocol 2 spells bytes: _codecs.encode(text, "latin1"))
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _no_bytes(*args: Any) -> bytes:
    # (how pickle protocol 2 spells b"": bytes(), e.g. the data of an empty array)
    if args:
        raise pickle.UnpicklingError("bytes(...) with arguments")
    return b""


def read_paddle_params(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``paddle.save(state_dict)`` file, read with
    :class:`_NumpyUnpickler` after its opcode stream was checked (the table of structured
    names Paddle adds is dropped)."""
    path = os.fspath(path)
    budget = ReadBudget(path, _refuser(path, _PADDLE_FORMAT), max_bytes)
    return _guarded(path, _PADDLE_FORMAT, lambda: _read_paddle(path, budget))


def _read_paddle(path: str, budget: ReadBudget) -> dict[str, np.ndarray]:
    budget.take(budget.file_size, "the file")
    with open(path, "rb") as f:
        data = f.read()
    if data[:1] != b"\x80":
        raise refused(path, _PADDLE_FORMAT, "not a pickle (paddle.save writes one)")
    check_stream(data, budget.refuse)
    try:
        obj = _NumpyUnpickler(io.BytesIO(data), path, budget).load()
    except pickle.UnpicklingError as e:   # what the checks above found: not weights
        raise refused(path, _PADDLE_FORMAT, str(e)) from e
    if not isinstance(obj, dict):
        raise refused(path, _PADDLE_FORMAT, f"it holds a {type(obj).__name__}, not a dict of arrays")
    out = {}
    for k, v in obj.items():
        if k == "StructuredToParameterName@@":
            continue
        if isinstance(v, _PendingArray):
            if v.array is None:
                raise refused(path, _PADDLE_FORMAT, f"entry {_short(k)} is an ndarray without "
                              "data (its state never came)")
            v = v.array
        if not isinstance(v, (np.ndarray, np.generic)) or not isinstance(k, str):
            raise refused(path, _PADDLE_FORMAT,
                          f"entry {_short(k)} is a {type(v).__name__}, not an array")
        out[k] = np.asarray(v)
    return out


# ----------------------------------------------------------------------------- .npz, .safetensors

_NPZ_FORMAT = "a numpy .npz file of arrays"
#: numpy >= 1.24 refuses longer .npy headers by default (literal_eval of an attacker's text)
_NPY_MAX_HEADER = 10000


def read_npz(path: str, max_bytes: int | None = None,
             skip: Callable[[str], bool] = lambda name: False) -> dict[str, np.ndarray]:
    """``{name: array}`` of an ``.npz`` file (``np.savez``, compressed or not), read without
    ``np.load``: each member's ``.npy`` header is parsed and checked (a plain numeric dtype,
    a shape whose bytes are exactly the member's) before its bytes are read, at most to its
    declared size and within the budget. Members for which ``skip(name)`` is true (a
    checkpoint's JSON metadata) are not read."""
    path = os.fspath(path)
    refuse = _refuser(path, _NPZ_FORMAT)
    budget = ReadBudget(path, refuse, max_bytes)
    if not zipfile.is_zipfile(path):
        raise refuse("not a zip file (np.savez writes one)")

    def read() -> dict[str, np.ndarray]:
        out = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if skip(name) or info.is_dir():
                    continue
                if not info.filename.endswith(".npy") or name in out:
                    raise refuse(f"member {_short(info.filename)} is not a .npy array"
                                 if name not in out else f"the array {name!r} is stored twice",
                                 RESAVE)
                out[name] = _npy(read_member(archive, info, budget, f"array {name!r}"),
                                 name, refuse)
        return out

    return _guarded(path, _NPZ_FORMAT, read)


def _npy(raw: bytearray, name: str, refuse: Callable[..., UnsafeWeightsError]) -> np.ndarray:
    """An array of one ``.npy`` member (format 1.0, 2.0 or 3.0), its header checked first."""
    if raw[:6] != b"\x93NUMPY" or len(raw) < 10 or raw[6] not in (1, 2, 3):
        raise refuse(f"array {name!r} is not a .npy array")
    wide = raw[6] >= 2
    start = 12 if wide else 10
    hlen = int.from_bytes(raw[8:start], "little")
    if hlen > _NPY_MAX_HEADER or start + hlen > len(raw):
        raise refuse(f"array {name!r} has a header of {hlen} bytes")
    header = ast.literal_eval(bytes(raw[start:start + hlen]).decode(
        "utf-8" if raw[6] == 3 else "latin1"))
    if not (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}
            and isinstance(header["descr"], str) and isinstance(header["fortran_order"], bool)):
        why = ("its dtype is a record" if isinstance(header, dict)
               and isinstance(header.get("descr"), list) else "its header is malformed")
        raise refuse(f"array {name!r}: {why}")
    dt = np.dtype(header["descr"])
    if not plain_dtype(dt):
        held = "pickled Python objects, which are not read (nothing from it was run)" \
            if dt.hasobject else f"dtype {dt}, not bool, integers or floats"
        raise refuse(f"array {name!r} holds {held}", RESAVE)
    shape = _shape(header["shape"], f"array {name!r}", refuse)
    need = math.prod(shape) * dt.itemsize
    if not need and len(raw) == start + hlen:
        return np.zeros(shape, dt.newbyteorder("="))
    if need != len(raw) - start - hlen:
        raise refuse(f"array {name!r} of shape {shape} and dtype {dt} needs {need} bytes, its "
                     f"member holds {len(raw) - start - hlen}")
    a = np.frombuffer(raw, dtype=dt, count=math.prod(shape), offset=start + hlen)
    a = a.reshape(shape, order="F" if header["fortran_order"] else "C")
    return a if dt.isnative else a.astype(dt.newbyteorder("="))


_SAFETENSORS_FORMAT = "a .safetensors file"
#: safetensors' dtype names -> bytes per element (the numeric ones)
_ST_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4,
             "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def read_safetensors(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``.safetensors`` file: the safetensors library parses and checks
    its header (offsets inside the file, sizes that match the shapes); each tensor's dtype and
    size is checked against the budget before it is read."""
    path = os.fspath(path)
    refuse = _refuser(path, _SAFETENSORS_FORMAT)
    budget = ReadBudget(path, refuse, max_bytes)

    def read() -> dict[str, np.ndarray]:
        from safetensors import safe_open
        out = {}
        with safe_open(path, framework="np") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                dtype, shape = sl.get_dtype(), tuple(sl.get_shape())
                if dtype not in _ST_SIZES or dtype == "BF16":
                    raise refuse(f"tensor {_short(k)} is {dtype}" + (
                        ", which numpy cannot hold" if dtype == "BF16" else
                        ", not bool, integers or floats"),
                                 "save it as float32 (or convert it with the framework first)")
                budget.take(math.prod(shape) * _ST_SIZES[dtype], f"tensor {_short(k)} of "
                            f"shape {shape}")
                out[k] = f.get_tensor(k)
        return out

    return _guarded(path, _SAFETENSORS_FORMAT, read)
