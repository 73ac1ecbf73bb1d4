"""The CIFAR-10 / CIFAR-100 *python* archives as a data source beside the Kaggle folder layout.

``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` (the files torchvision and the CIFAR-10 write-up's
notebook download from https://www.cs.toronto.edu/~kriz/) hold pickled dicts, not PNGs:

* CIFAR-10 — ``cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` (50,000 training images),
  ``test_batch`` (10,000) and ``batches.meta`` (``label_names``); each batch has ``data``
  (N×3072 uint8: the red, green and blue 32×32 planes one after the other) and ``labels``.
* CIFAR-100 — ``cifar-100-python/train``, ``test`` and ``meta`` (``fine_label_names``,
  ``coarse_label_names``); each split has ``data``, ``fine_labels`` and ``coarse_labels``.

:func:`read_cifar_archive` reads the members straight out of the ``.tar.gz`` (nothing is
extracted to disk, no PNG is written) into the N×32×32×3 uint8 arrays the loaders use. An
already extracted folder (``cifar-10-batches-py/``, torchvision's download folder) works too.

Unlike the write-ups, which ``pickle.load`` whatever the file holds, the pickles are read
with an unpickler that only builds plain containers and numpy arrays: a doctored archive
cannot run code. A member that is missing or does not hold the expected arrays raises
:class:`ValueError` naming the archive and the member.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["CifarArrays", "read_cifar_archive", "find_cifar_archive", "is_cifar_archive",
           "archive_kind", "to_kaggle_layout", "write_cifar_archive", "make_demo_archive",
           "ARCHIVE_NAMES", "LABEL_KINDS"]

#: archive file name -> (kind, folder inside the archive)
ARCHIVE_NAMES = {"cifar-10-python.tar.gz": ("cifar10", "cifar-10-batches-py"),
                 "cifar-100-python.tar.gz": ("cifar100", "cifar-100-python")}
#: which labels of CIFAR-100 to learn: its 100 fine classes or its 20 coarse superclasses
LABEL_KINDS = ("fine", "coarse")

_MEMBERS = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}


@dataclass
class CifarArrays:
    """One CIFAR archive in memory: images as N×32×32×3 uint8, labels as int64 class indices.

    ``classes[k]`` names class ``k``; classes are in sorted order, the order
    :func:`d2lkaggle.data.labels.class_names` gives the Kaggle layout's labels (for CIFAR-10/100
    this is also the archives' own order), so a model trained on either source is the same.
    """

    kind: str                  # "cifar10" or "cifar100"
    label_kind: str            # "fine" or "coarse" (CIFAR-10 has only "fine")
    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "CifarArrays":
        """The first ``n_train`` training and ``n_test`` test images (the batches are shuffled
        already, so a prefix keeps every class); ``None`` keeps all."""
        tr, te = slice(None, n_train), slice(None, n_test)
        return CifarArrays(self.kind, self.label_kind, self.classes, self.train_x[tr],
                           self.train_y[tr], self.test_x[te], self.test_y[te], self.source)


# --------------------------------------------------------------------------- safe pickles

def _numpy_global(module: str, name: str) -> Any:
    # Pickles written by numpy 1.x name numpy.core, those of numpy 2 name numpy._core; load
    # either from whichever the installed numpy has (numpy 2's numpy.core warns on access).
    import importlib
    for mod in (module, module.replace("numpy.core", "numpy._core", 1),
                module.replace("numpy._core", "numpy.core", 1)):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot find {module}.{name}")


_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _SafeUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays — never any other object."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _numpy_global(module, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores Python 3 bytes
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR pickle holds "
                                     "only lists and numpy arrays)")


def _unpickle(blob: bytes) -> dict[str, Any]:
    # The archives were written by Python 2's cPickle: 'bytes' keeps their str fields as bytes
    # (the keys come out as b"data"); keys are decoded here so either spelling is accepted.
    obj = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------- reading

def is_cifar_archive(path: str | os.PathLike) -> bool:
    """True when ``path`` is a CIFAR python archive (by name) or an extracted archive folder."""
    path = os.fspath(path)
    base = os.path.basename(os.path.normpath(path))
    if os.path.isfile(path):
        return base in ARCHIVE_NAMES
    return os.path.isdir(path) and any(base == folder for _, folder in ARCHIVE_NAMES.values())


def find_cifar_archive(data_dir: str | os.PathLike) -> str | None:
    """The CIFAR python archive ``data_dir`` names or holds, else ``None``.

    ``data_dir`` may be the ``.tar.gz`` itself, its extracted folder (``cifar-10-batches-py``,
    ``cifar-100-python``) or a folder holding either (torchvision's download folder). A folder
    with a Kaggle layout (``trainLabels.csv``) is never taken for an archive.
    """
    data_dir = os.fspath(data_dir)
    if is_cifar_archive(data_dir):
        return data_dir
    if not os.path.isdir(data_dir) or os.path.exists(os.path.join(data_dir, "trainLabels.csv")):
        return None
    found = [os.path.join(data_dir, n) for n in (*ARCHIVE_NAMES,
                                                 *(f for _, f in ARCHIVE_NAMES.values()))
             if is_cifar_archive(os.path.join(data_dir, n))]
    kinds = {archive_kind(p) for p in found}
    if len(kinds) > 1:
        raise ValueError(f"{data_dir} holds both the CIFAR-10 and the CIFAR-100 archive; "
                         "pass the one you mean as --data-dir")
    return found[0] if found else None


def archive_kind(path: str | os.PathLike) -> str:
    """``"cifar10"`` or ``"cifar100"`` from the archive's (or extracted folder's) name."""
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    for name, (kind, folder) in ARCHIVE_NAMES.items():
        if base in (name, folder):
            return kind
    raise ValueError(f"{path} is not a CIFAR python archive (expected one of "
                     f"{', '.join(ARCHIVE_NAMES)} or its extracted folder)")


def _read_members(path: str, wanted: set[str]) -> dict[str, tuple[str, bytes]]:
    """``{basename: (member name, bytes)}`` for the wanted members, in one pass over the file."""
    found: dict[str, tuple[str, bytes]] = {}
    if os.path.isdir(path):
        for name in wanted:
            f = os.path.join(path, name)
            if os.path.isfile(f):
                with open(f, "rb") as fh:
                    found[name] = (f, fh.read())
        return found
    try:
        # Streaming mode ("r|gz") decompresses once from start to end: the members are read
        # as they pass, the 170 MB archive is never unpacked to disk.
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                base = m.name.rstrip("/").rsplit("/", 1)[-1]
                if m.isfile() and base in wanted and base not in found:
                    f = tf.extractfile(m)
                    found[base] = (m.name, f.read() if f else b"")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable .tar.gz archive ({type(e).__name__}: {e}); "
                         "download it again") from e
    return found


def _load(path: str, members: dict[str, tuple[str, bytes]], base: str, kind: str,
          check: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    if base not in members:
        folder = ARCHIVE_NAMES[next(n for n, v in ARCHIVE_NAMES.items() if v[0] == kind)][1]
        raise ValueError(f"{path}: member {folder}/{base} is missing; the archive is incomplete "
                         "(download it again)")
    name, blob = members[base]
    try:
        d = _unpickle(blob)
        check(d)
    except Exception as e:  # pickle raises many types on bad bytes (EOFError, KeyError ...)
        raise ValueError(f"{path}: member {name} is not a valid CIFAR pickle "
                         f"({type(e).__name__}: {e})") from e
    return d


def _images(d: dict[str, Any]) -> np.ndarray:
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"'data' is {data.dtype} {data.shape}, expected uint8 N×3072")
    # Each row is three 32×32 planes (R, G, B); the loaders want H×W×3.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _split(path: str, members, bases: list[str], kind: str, key: str,
           num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    def check(d: dict[str, Any]) -> None:
        x = _images(d)
        if key not in d:
            raise KeyError(f"no '{key}' entry (has {', '.join(sorted(d))})")
        y = np.asarray(d[key])
        if y.shape != (len(x),):
            raise ValueError(f"{len(y)} '{key}' for {len(x)} images")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"'{key}' outside 0..{num_classes - 1}: {y.min()}..{y.max()}")
    xs, ys = [], []
    for b in bases:
        d = _load(path, members, b, kind, check)
        xs.append(_images(d))
        ys.append(np.asarray(d[key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def read_cifar_archive(path: str | os.PathLike, label_kind: str = "fine") -> CifarArrays:
    """Read a CIFAR python archive (``.tar.gz`` or its extracted folder) into memory.

    The data step of the CIFAR-10 write-up's notebook (``torchvision.datasets.CIFAR10``) without torchvision:
    train and test images as N×32×32×3 uint8, labels as int64. ``label_kind`` chooses
    CIFAR-100's ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses) labels; CIFAR-10
    has only fine labels. Raises :class:`ValueError` naming the member for a missing or
    corrupt member and :class:`FileNotFoundError` for a missing archive.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"CIFAR archive not found: {path}")
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {label_kind!r}; choose from {', '.join(LABEL_KINDS)}")
    kind = archive_kind(path)
    if kind == "cifar10" and label_kind == "coarse":
        raise ValueError(f"{path}: CIFAR-10 has no coarse labels; --label-kind coarse is "
                         "for the CIFAR-100 archive")
    spec = _MEMBERS[kind]
    members = _read_members(path, {*spec["train"], *spec["test"], spec["meta"]})
    names_key = "label_names" if kind == "cifar10" else f"{label_kind}_label_names"

    def check_meta(d: dict[str, Any]) -> None:
        if names_key not in d:
            raise KeyError(f"no '{names_key}' entry (has {', '.join(sorted(d))})")
        names = [_text(n) for n in d[names_key]]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"'{names_key}' must be unique non-empty names, got {names[:5]}")
    meta = _load(path, members, spec["meta"], kind, check_meta)
    names = [_text(n) for n in meta[names_key]]
    key = "labels" if kind == "cifar10" else f"{label_kind}_labels"
    train_x, train_y = _split(path, members, spec["train"], kind, key, len(names))
    test_x, test_y = _split(path, members, spec["test"], kind, key, len(names))
    # Index k must name the k-th sorted class, as in the Kaggle layout (a no-op for the real
    # archives, whose names are already sorted).
    classes = sorted(names)
    remap = np.array([classes.index(n) for n in names], dtype=np.int64)
    return CifarArrays(kind, label_kind, classes, train_x, remap[train_y], test_x, remap[test_y],
                       os.path.abspath(path))


def to_kaggle_layout(arrays: CifarArrays, out_dir: str) -> str:
    """Write ``arrays`` in the Kaggle CIFAR-10 layout (``train/<id>.png``, ``test/<id>.png``,
    ``trainLabels.csv``, ``sampleSubmission.csv``; ids 1..N) and return ``out_dir``.

    For users who want the chapter's folder route (``d2lkaggle reorg``) from an archive; the
    pipeline itself reads archives directly and never needs this.
    """
    import csv
    import shutil
    import tempfile

    from PIL import Image
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ValueError(f"{out_dir} exists and is not empty; choose a new folder")
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".cifar-kaggle-", dir=os.path.dirname(out_dir))
    try:
        for split, x in (("train", arrays.train_x), ("test", arrays.test_x)):
            os.makedirs(os.path.join(tmp, split))
            for i, img in enumerate(x, 1):
                Image.fromarray(img).save(os.path.join(tmp, split, f"{i}.png"))
        for fname, rows in (("trainLabels.csv", ((i, arrays.classes[c])
                                                 for i, c in enumerate(arrays.train_y, 1))),
                            ("sampleSubmission.csv", ((i, arrays.classes[0])
                                                      for i in range(1, len(arrays.test_x) + 1)))):
            with open(os.path.join(tmp, fname), "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["id", "label"])
                w.writerows(rows)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------- writing

class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), as the real archives hold them:
    ``encoding="bytes"`` then reads ``b"data"`` keys and ``encoding="latin1"`` reads ``"data"``,
    exactly as with the files from the CIFAR site."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _py2_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _pickle_split(x: np.ndarray, labels: dict[str, np.ndarray], batch_label: str) -> bytes:
    # The archives' own layout: planar rows, labels as lists of ints.
    d: dict[str, Any] = {"batch_label": batch_label,
                         "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1)),
                         "filenames": [f"{k:05d}.png" for k in range(len(x))]}
    d.update({k: [int(v) for v in y] for k, y in labels.items()})
    return _py2_dumps(d)


def write_cifar_archive(folder: str, kind: str, train_x: np.ndarray, test_x: np.ndarray,
                        labels: dict[str, tuple[list[str], np.ndarray, np.ndarray]]) -> str:
    """Pack images and labels as ``folder/cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``
    in the real archives' format (what :func:`read_cifar_archive` and torchvision read).

    ``labels`` maps a label kind (``"fine"``; ``"coarse"`` too for CIFAR-100) to
    ``(names, train_labels, test_labels)``. Written to a temporary name and renamed.
    """
    import tarfile as _tar

    from ..utils.files import atomic_open
    if kind not in _MEMBERS:
        raise ValueError(f"unknown CIFAR kind {kind!r}; choose 'cifar10' or 'cifar100'")
    need = {"fine"} if kind == "cifar10" else {"fine", "coarse"}
    if set(labels) != need:
        raise ValueError(f"{kind} needs labels {sorted(need)}, got {sorted(labels)}")
    name = next(n for n, v in ARCHIVE_NAMES.items() if v[0] == kind)
    top = ARCHIVE_NAMES[name][1]
    members: dict[str, bytes] = {}
    if kind == "cifar10":
        names, ytr, yte = labels["fine"]
        for i, part in enumerate(np.array_split(np.arange(len(train_x)), 5), 1):
            members[f"data_batch_{i}"] = _pickle_split(train_x[part], {"labels": ytr[part]},
                                                       f"training batch {i} of 5")
        members["test_batch"] = _pickle_split(test_x, {"labels": yte}, "testing batch 1 of 1")
        members["batches.meta"] = _py2_dumps({"label_names": list(names),
                                              "num_cases_per_batch": 10000, "num_vis": 3072})
    else:
        for split, x, k in (("train", train_x, 1), ("test", test_x, 2)):
            members[split] = _pickle_split(x, {f"{lk}_labels": labels[lk][k] for lk in ("fine", "coarse")},
                                           split)
        members["meta"] = _py2_dumps({f"{lk}_label_names": list(labels[lk][0])
                                      for lk in ("fine", "coarse")})
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with atomic_open(path) as f, _tar.open(fileobj=f, mode="w:gz") as tf:
        for member, blob in members.items():
            info = _tar.TarInfo(f"{top}/{member}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return path


def make_demo_archive(folder: str, kind: str = "cifar10", n_train: int = 2000, n_test: int = 500,
                      seed: int = 0) -> str:
    """A learnable synthetic CIFAR archive in the real format, for trying things offline.

    ``"cifar10"``: the demo competition's ten shapes (:mod:`d2lkaggle.data.demo`) as classes.
    ``"cifar100"``: twenty fine classes — each shape drawn once large and once as a 2×2 tile
    of small copies — whose coarse label is the shape (ten superclasses).
    """
    from PIL import Image

    from .demo import SHAPES, _draw
    rng = np.random.default_rng(seed)
    fine_n = len(SHAPES) * (2 if kind == "cifar100" else 1)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % fine_n)
        x = np.empty((n, 32, 32, 3), np.uint8)
        for i, c in enumerate(y):
            shape, tiled = SHAPES[c % len(SHAPES)], c >= len(SHAPES)
            img = _draw(shape, 32, 32, rng)
            if tiled:
                img = np.tile(np.asarray(img.resize((16, 16), Image.BILINEAR)), (2, 2, 1))
            x[i] = np.asarray(img)
        return x, y.astype(np.int64)
    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    if kind == "cifar10":
        return write_cifar_archive(folder, kind, xtr, xte, {"fine": (list(SHAPES), ytr, yte)})
    fine = [f"{s}" for s in SHAPES] + [f"{s}_tiles" for s in SHAPES]
    order = sorted(range(fine_n), key=lambda k: fine[k])  # archives list names sorted
    rank = np.argsort(order)
    fine_sorted = [fine[k] for k in order]
    shape_of = np.arange(fine_n) % len(SHAPES)
    return write_cifar_archive(folder, kind, xtr, xte, {
        "fine": (fine_sorted, rank[ytr], rank[yte]),
        "coarse": (list(SHAPES), shape_of[ytr], shape_of[yte])})
