"""How much memory a foreign weight file may make this process allocate, checked before it does.

A weight file describes its arrays (shapes, dtypes, strides, sizes of zip members) before it
holds them, and every description can lie: a 659-byte file can declare a 1.2 GB tensor. The
readers of :mod:`d2lkaggle.models.formats` therefore check each allocation against a
:class:`ReadBudget` *before* making it:

* by default a file may make its reader allocate :data:`FACTOR` times its own size plus
  :data:`FLOOR` (a state dict's arrays are its bytes, read once and copied once; bfloat16
  widened to float32 and tied weights stay well inside), and never more than :data:`CAP` in all;
* a user who trusts a larger or highly compressed file allows more, in GB (and compressed
  members are then not held to :data:`MAX_RATIO`):
  ``D2LKAGGLE_MAX_WEIGHTS_GB=N`` (every reader: ``run --weights``, ``finetune_net(weights=)``,
  ``weights convert``), ``d2lkaggle weights convert --max-weights-gb N`` or
  ``read_weights(path, max_bytes=...)``; that number then replaces the default rule.

Zip members (``.pth``/``.pt`` storages, ``.npz`` arrays) are read by :func:`read_member`: at
most their declared size, in chunks, after the declared size was taken from the budget and a
compressed member's ratio checked (:data:`MAX_RATIO`).
"""
from __future__ import annotations

import os
import zipfile
from typing import Callable

__all__ = ["ReadBudget", "weights_limit", "read_member", "FACTOR", "FLOOR", "CAP", "MAX_RATIO",
           "LIMIT_ENV", "RAISE_LIMIT"]

#: the default budget: FACTOR x the file's size + FLOOR bytes, at most CAP bytes
FACTOR, FLOOR, CAP = 8, 64 << 20, 4 << 30
#: a compressed zip member may inflate at most this many times (weights compress ~1.1x;
#: members under FLOOR bytes are not held to it: a zero-filled bias compresses 1000x)
MAX_RATIO = 100
#: the environment variable that raises the limit (GB)
LIMIT_ENV = "D2LKAGGLE_MAX_WEIGHTS_GB"
#: what a refusal for size tells the user to do
RAISE_LIMIT = (f"if you trust the file, allow more memory with {LIMIT_ENV}=GB (or `d2lkaggle "
               "weights convert --max-weights-gb GB`)")
_CHUNK = 1 << 20


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def weights_limit(max_bytes: int | None = None) -> int | None:
    """The user's limit in bytes: ``max_bytes`` when given, else :data:`LIMIT_ENV` (GB), else
    ``None`` (the default rule); a value that is not a positive number is one clear error."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not max_bytes > 0:
            raise ValueError(f"the weight-file memory limit must be > 0 bytes, got {max_bytes!r}")
        return int(max_bytes)
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        gb = float(text)
    except ValueError:
        gb = float("nan")
    if not gb > 0 or gb == float("inf"):
        raise ValueError(f"{LIMIT_ENV}={text!r}: expected a number of GB > 0, e.g. 8")
    return int(gb * 1e9)


class ReadBudget:
    """The bytes one read of ``path`` may allocate; :meth:`take` before every allocation."""

    def __init__(self, path: str, refuse: Callable[..., Exception], max_bytes: int | None = None):
        self.path, self.refuse = path, refuse
        self.file_size = os.path.getsize(path)
        limit = weights_limit(max_bytes)
        self.given = limit is not None
        self.allowed = limit if limit is not None else min(FACTOR * self.file_size + FLOOR, CAP)
        self.used = 0

    def rule(self) -> str:
        if self.given:
            return f"the {_size(self.allowed)} allowed"
        return (f"the {_size(self.allowed)} allowed for a file of {_size(self.file_size)} "
                f"({FACTOR}x its size + {FLOOR >> 20} MiB, at most {CAP >> 30} GiB)")

    def take(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` for ``what`` (e.g. ``tensor 'fc.weight' of shape (3, 4)``), or
        refuse the file before anything of that size exists."""
        if nbytes < 0:
            raise self.refuse(f"{what} has a negative size", "download or save it again")
        if self.used + nbytes > self.allowed:
            total = f", {_size(self.used + nbytes)} in all" if self.used else ""
            raise self.refuse(f"{what} needs {_size(nbytes)}{total}, over {self.rule()}",
                              RAISE_LIMIT)
        self.used += nbytes


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: ReadBudget,
                what: str) -> bytearray:
    """A zip member's bytes: its declared size taken from ``budget`` first (a compressed one
    checked against :data:`MAX_RATIO` unless the user set the limit), then read in chunks, at
    most that size (the buffer grows with what arrives, not with what was declared); a member
    that holds fewer bytes (or fails its CRC) is refused as damaged."""
    size = info.file_size
    ratio = size / max(info.compress_size, 1)
    if info.compress_type != zipfile.ZIP_STORED and size > FLOOR and ratio > MAX_RATIO \
            and not budget.given:
        raise budget.refuse(f"{what} ({info.filename}) inflates {ratio:.0f} times, from "
                            f"{_size(info.compress_size)} to {_size(size)} (a zip bomb? "
                            "weights compress about 1.1 times)", RAISE_LIMIT)
    budget.take(size, f"{what} ({info.filename})")
    buf = bytearray()
    with archive.open(info) as f:
        while len(buf) < size:
            chunk = f.read(min(_CHUNK, size - len(buf)))
            if not chunk:
                break
            buf += chunk
    if len(buf) != size:
        raise budget.refuse(f"{what} ({info.filename}) holds {len(buf)} of its {size} declared "
                            "bytes", "download or save it again")
    return buf
