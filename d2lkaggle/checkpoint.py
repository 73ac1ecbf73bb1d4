"""Atomic files: checkpoints as ``.npz`` (arrays + JSON metadata) and text files.

Everything is written to a temporary file in the destination folder and renamed, so a run
killed mid-write never leaves a file that a later run would trust.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

_META_KEY = "__meta__"


def _tmp_beside(path: str, suffix: str) -> tuple[int, str]:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = _tmp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npz(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> str:
    """Save named arrays plus JSON ``meta`` to ``path`` (.npz) atomically."""
    if _META_KEY in arrays:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    fd, tmp = _tmp_beside(path, ".npz")
    os.close(fd)
    try:
        payload = {k: np.asarray(v) for k, v in arrays.items()}
        payload[_META_KEY] = np.array(json.dumps(meta or {}))
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load ``(arrays, meta)`` written by :func:`save_npz`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != _META_KEY}
            meta = json.loads(str(z[_META_KEY])) if _META_KEY in z.files else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    return arrays, meta
