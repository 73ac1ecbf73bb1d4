"""Atomic files: checkpoints as ``.npz`` (arrays + JSON metadata) and text files.

Everything is written to a temporary file in the destination folder and renamed, so a run
killed mid-write never leaves a file that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager, suppress
from typing import IO, Any, Iterator

import numpy as np

META_KEY = "__meta__"


def current_umask() -> int:
    """The process's umask (read without changing it for longer than two calls)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_lock(path: str, what: str):
    """Take an inter-process lock on ``path`` (a hidden lock file that stays; the OS releases
    the lock when its holder exits, even by ``kill -9``) and return it; call ``release()``.

    A second process says on stderr what it is waiting for, then waits.
    """
    import sys

    from filelock import FileLock, Timeout
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process that {what} (lock {path})", file=sys.stderr)
        lock.acquire()
    return lock


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; the file gets the mode a plain open() would give it (set
        # after the block: a writer may have replaced the temporary file with its own)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kw: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; see :func:`atomic_path`."""
    with atomic_path(path, os.path.splitext(os.fspath(path))[1] or ".tmp") as tmp:
        with open(tmp, mode, **open_kw) as f:
            yield f


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def save_npz(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> str:
    """Save named arrays plus JSON ``meta`` to ``path`` (.npz) atomically."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(meta or {}))
    with atomic_open(path) as f:
        np.savez(f, **payload)
    return path


def load_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load ``(arrays, meta)`` written by :func:`save_npz`.

    A missing file raises :class:`FileNotFoundError`; an empty, truncated or damaged one
    (zip CRC errors included) :class:`ValueError` naming the file and what to do.
    """
    import zipfile
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != META_KEY}
            meta = json.loads(str(z[META_KEY])) if META_KEY in z.files else {}
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot read checkpoint {path}: damaged or truncated "
                         f"({type(e).__name__}: {e}); delete it (or drop --resume) to start "
                         f"over") from e
    return arrays, meta


def file_stamp(path: str) -> tuple[int, int, int, int]:
    """``(size, mtime_ns, ctime_ns, inode)``: what says a file is the one a cache saw, without
    reading it. Like git's index, ctime and the inode are in it: pixels rewritten with the
    mtime set back, or a copy with preserved times (``cp -p``, ``rsync -t``,
    ``shutil.copy2``), keep size and mtime but cannot keep those."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_hash(path: str, algo: str = "sha1") -> str:
    """Hex digest of a file with ``algo`` (``sha1``, ``md5`` or ``sha256``), read in chunks."""
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha1(path: str) -> str:
    """SHA-1 hex digest of a file, read in chunks (the book's cache check in ``download``)."""
    return file_hash(path, "sha1")
