"""Getting the data: the book's ``DATA_HUB``, ``download`` and ``download_extract``.

Step 1 of both Kaggle chapters ("Obtaining and Organizing the Dataset"): fetch the tiny
sample archives (``cifar10_tiny``, ``dog_tiny``) from the d2l mirror, check their SHA-1 and
unpack them (:mod:`d2lkaggle.data.archives`). Compared with the book's helpers, these ones also

* stream into a temporary file unique to the process, under a lock file, and only move the
  file into place once the hash of what is on disk matches (SHA-1, or ``md5:``/``sha256:``),
  so an interrupted, corrupted or concurrent download is never mistaken for a good one;
* save the raw bytes whatever ``Content-Encoding`` the server claims, and give up on a
  stalled (``stall_timeout``) or too slow (``deadline``) server;
* raise :class:`DownloadError` with an "offline" hint instead of a bare ``requests`` error.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import time
from typing import IO
from urllib.parse import unquote, urlparse

import requests
import urllib3
from tqdm import tqdm

from ..utils.files import current_umask, file_hash, file_lock, sha1  # noqa: F401  (sha1: the book's name)
from .archives import (ARCHIVE_SUFFIXES, CorruptArchiveError, UnsafeArchiveError,  # noqa: F401
                       extract, extract_limit, extract_once)

DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"

#: dataset name -> (url, hash), as in the book; the hash is SHA-1 hex or "md5:<hex>"/"sha256:<hex>"
DATA_HUB: dict[str, tuple[str, str]] = {
    "cifar10_tiny": (DATA_URL + "kaggle_cifar10_tiny.zip",
                     "2068874e4b9a9f0fb07ebe0ad2b29754449ccacd"),
    "dog_tiny": (DATA_URL + "kaggle_dog_tiny.zip",
                 "0cb91d09b814ecdc07b50f31f8dcad3e81d6a86d"),
    # The CIFAR python archives (d2lkaggle.data.cifar reads them without unpacking) with the MD5
    # sums their authors publish on https://www.cs.toronto.edu/~kriz/cifar.html.
    "cifar10_python": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "md5:c58f30108f718f92721af3b95e74349a"),
    "cifar100_python": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "md5:eb9058c3a382ffc7106e4002c42a8d85"),
}

#: requests timeout: (connect, read between two chunks) in seconds
TIMEOUT = (10, 60)
_CHUNK = 1 << 20

class DownloadError(RuntimeError):
    """A file could not be downloaded (network, HTTP status or SHA-1 mismatch)."""


def default_data_dir() -> str:
    """Where downloads go by default: ``$D2LKAGGLE_DATA`` or ``~/.cache/d2lkaggle``.

    Plays the role of the book's ``../data`` cache folder.
    """
    env = os.environ.get("D2LKAGGLE_DATA")
    return os.path.expanduser(env) if env else os.path.join(
        os.path.expanduser("~"), ".cache", "d2lkaggle")


# --------------------------------------------------------------------------- download

def _resolve_source(name_or_url: str, sha1_hash: str | None) -> tuple[str, str | None]:
    if name_or_url in DATA_HUB:
        url, known = DATA_HUB[name_or_url]
        return url, sha1_hash or known
    if "://" in name_or_url:
        return name_or_url, sha1_hash
    raise ValueError(f"unknown dataset {name_or_url!r}: not a URL and not in DATA_HUB "
                     f"({', '.join(sorted(DATA_HUB))})")


#: hash algorithms a DATA_HUB entry may name, with their hex digest lengths
HASHES = {"sha1": 40, "md5": 32, "sha256": 64}


def parse_hash(spec: str | None) -> tuple[str, str] | None:
    """``(algorithm, hex digest)`` of a DATA_HUB hash: plain SHA-1 hex (the book's form),
    ``"md5:<hex>"`` or ``"sha256:<hex>"``; ``None`` when no hash is known."""
    if spec is None or spec == "":
        return None
    algo, sep, hexd = spec.strip().partition(":")
    if not sep:
        algo, hexd = "sha1", algo
    algo, hexd = algo.lower(), hexd.lower()
    if algo not in HASHES or len(hexd) != HASHES[algo] or not re.fullmatch(r"[0-9a-f]+", hexd):
        raise ValueError(f"bad hash {spec!r}: expected {HASHES['sha1']} hex digits (SHA-1) or "
                         f"'md5:<{HASHES['md5']} hex>' / 'sha256:<{HASHES['sha256']} hex>'")
    return algo, hexd


def _remove_stale_parts(folder: str, fname: str) -> None:
    """Delete temporary files of downloads of ``fname`` that died (called under the lock:
    only the lock holder writes one, so every other one is stale)."""
    for entry in os.listdir(folder):
        if entry == fname + ".part" or (entry.startswith(f".{fname}.") and entry.endswith(".part")):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))


def download(name_or_url: str, folder: str | None = None,
             sha1_hash: str | None = None, *, deadline: float | None = None,
             stall_timeout: float | None = None) -> str:
    """Download a ``DATA_HUB`` entry or a URL into ``folder`` and return the local file path.

    The book's ``d2l.download`` (step 1 of both Kaggle chapters). An existing file is reused
    when its hash matches (or when no hash is known); a file with the wrong hash is fetched
    again. ``sha1_hash`` is SHA-1 hex or ``"md5:<hex>"`` / ``"sha256:<hex>"``.

    Safe with several processes at once: the download holds a lock file
    (``.<file>.lock``), streams into a temporary file unique to the process, hashes that
    file as it is on disk and only then renames it into place; a second process waits
    for the lock and then finds the verified file. The raw bytes are saved even when the
    server sends them with ``Content-Encoding: gzip``. ``stall_timeout`` (seconds without
    a byte, default ``TIMEOUT[1]``) and ``deadline`` (seconds for the whole download,
    default none) bound a slow server. Raises :class:`DownloadError` on any failure,
    leaving no file at the final path.
    """
    url, expected = _resolve_source(name_or_url, sha1_hash)
    want = parse_hash(expected)
    fname = unquote(os.path.basename(urlparse(url).path))
    if not fname:
        raise ValueError(f"cannot derive a file name from URL {url!r}")
    folder = os.path.abspath(folder or default_data_dir())
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"download folder {folder} is a file, not a folder")
    path = os.path.join(folder, fname)

    def verified() -> bool:
        return os.path.isfile(path) and (want is None or file_hash(path, want[0]) == want[1])

    if verified():  # no lock needed to read: the file only ever appears by a rename
        return path
    os.makedirs(folder, exist_ok=True)
    lock = file_lock(os.path.join(folder, f".{fname}.lock"), f"is downloading {fname}")
    try:
        _remove_stale_parts(folder, fname)
        if os.path.exists(path):
            if verified():  # another process finished it while we waited
                return path
            # Removed up front so that a failed re-download cannot leave the bad copy behind,
            # where a later call without a hash would trust it.
            print(f"{path} does not match its {want[0].upper()}; downloading it again",
                  file=sys.stderr)
            os.remove(path)
        offline_hint = f"place {fname} at {path} to use it offline"
        print(f"Downloading {fname} from {url}...", file=sys.stderr)
        fd, part = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                _stream(url, f, fname, offline_hint, deadline,
                        TIMEOUT[1] if stall_timeout is None else stall_timeout)
                f.flush()
                os.fsync(f.fileno())
            if want is not None:
                # The hash of the bytes on disk, not of the stream: what is renamed is checked.
                actual = file_hash(part, want[0])
                if actual != want[1]:
                    raise DownloadError(f"{want[0].upper()} mismatch for {url}: expected "
                                        f"{want[1]}, got {actual}")
            os.chmod(part, 0o666 & ~current_umask())  # mkstemp makes 0600; honour the umask
            os.replace(part, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(part)
            raise
    finally:
        lock.release()
    return path


def _stream(url: str, f: IO[bytes], fname: str, offline_hint: str,
            deadline: float | None, stall: float) -> None:
    """Write the raw body of ``url`` to ``f`` (no content decoding), within the time limits."""
    end = None if deadline is None else time.monotonic() + deadline
    written = 0
    try:
        # identity: ask for the file itself; read raw: never let requests un-gzip it.
        with requests.get(url, stream=True, timeout=(TIMEOUT[0], stall),
                          headers={"Accept-Encoding": "identity"}) as r:
            if r.status_code != 200:
                raise DownloadError(f"downloading {url} failed: HTTP {r.status_code} "
                                    f"{r.reason}; {offline_hint}")
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=fname,
                      disable=None) as bar:
                while True:
                    if end is not None and time.monotonic() > end:
                        raise DownloadError(f"downloading {url} exceeded the deadline of "
                                            f"{deadline:g} s after {written} bytes; "
                                            f"{offline_hint}")
                    # read1 returns what has arrived, so a trickle still reaches the check.
                    chunk = r.raw.read1(_CHUNK, decode_content=False)
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            if total is not None and written != total:
                raise DownloadError(f"downloading {url} stopped after {written} of {total} "
                                    f"bytes; {offline_hint}")
    except (requests.RequestException, urllib3.exceptions.HTTPError, socket.timeout,
            ConnectionError) as e:
        why = (f"no data for {stall:g} s (stall timeout)"
               if isinstance(e, (urllib3.exceptions.ReadTimeoutError, socket.timeout,
                                 requests.ReadTimeout)) else f"{type(e).__name__}: {e}")
        raise DownloadError(f"could not download {url} ({why}); {offline_hint}") from e


def download_extract(name_or_url: str, folder: str | None = None, *,
                     max_size: int | None = None, **download_kw) -> str:
    """Download and unpack a dataset next to its archive; return the data folder.

    The book's ``d2l.download_extract`` (step 1 of both Kaggle chapters), e.g.
    ``download_extract('cifar10_tiny')`` -> ``<data dir>/kaggle_cifar10_tiny``. Unlike the
    book, ``folder`` is the download folder (as in :func:`download`), not a sub-folder to
    return. When the archive holds a single top-level folder its path is returned,
    otherwise the folder the archive was unpacked into. ``max_size`` goes to :func:`extract`,
    other keywords (``deadline``, ``stall_timeout``) to :func:`download`.
    """
    archive = download(name_or_url, folder, **download_kw)
    dest, record = extract_once(archive, None, max_size)
    top = record.get("top_folder")
    return os.path.join(dest, top) if top else dest
