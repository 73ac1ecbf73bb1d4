"""Getting the data: the book's ``DATA_HUB``, ``download`` and ``download_extract``.

Step 1 of both Kaggle chapters ("Obtaining and Organizing the Dataset"): fetch the tiny
sample archives (``cifar10_tiny``, ``dog_tiny``) from the d2l mirror, check their SHA-1 and
unpack them (:mod:`d2lkaggle.data.archives`). Compared with the book's helpers, these ones also

* stream into a temporary file unique to the process, under a lock file, and only move the
  file into place once the hash of what is on disk matches (SHA-1, or ``md5:``/``sha256:``),
  so an interrupted, corrupted or concurrent download is never mistaken for a good one;
* save the raw bytes whatever ``Content-Encoding`` the server claims, and give up on a
  stalled (``stall_timeout``) or too slow (``deadline``) server;
* raise :class:`DownloadError` with an "offline" hint instead of a bare ``requests`` error;
* never delete a file found in the cache that fails its hash: it is moved aside
  (``NAME.sha1-mismatch``) with one line saying so, before anything is downloaded;
* take local data for a ``DATA_HUB`` name, offline: ``download_extract(name, local=PATH)`` or
  the environment variable ``D2LKAGGLE_LOCAL_<NAME>`` (e.g. ``D2LKAGGLE_LOCAL_CIFAR10_TINY``),
  PATH an extracted folder or an archive. The user chose that data, so its hash is reported,
  not enforced; its layout (:data:`LAYOUTS`) is checked instead.
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

#: what an entry's data must hold (folders end with "/"), checked instead of the hash when the
#: data is the user's own (``local=``): the files the chapters read
LAYOUTS: dict[str, tuple[str, ...]] = {
    "cifar10_tiny": ("train/", "test/", "trainLabels.csv"),
    "dog_tiny": ("train/", "test/", "labels.csv"),
    "cifar10_python": ("data_batch_1", "test_batch", "batches.meta"),
    "cifar100_python": ("train", "test", "meta"),
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


def url_file_name(url: str) -> str:
    """The name a download of ``url`` is saved under (and its lock and temporary files): the
    last segment of the URL's path *after* percent-decoding, so ``/f/%2e%2e%2f%2e%2e%2fx.bin``
    is ``x.bin`` and never ``../../x.bin`` (``\\`` separates segments too). A last segment
    that is empty, ``.`` or ``..``, or holds control characters, is refused."""
    name = re.split(r"[/\\]", unquote(urlparse(url).path))[-1]
    if name in ("", ".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"cannot derive a file name from URL {url!r} (its last path segment, "
                         f"decoded, is {name!r}); download it yourself into the folder, or "
                         "use a URL that ends with the file's name")
    return name


def _move_aside(path: str, algo: str) -> str:
    """Rename a cached file that failed its hash to ``<stem>.<algo>-mismatch<suffix>``
    (``kaggle_cifar10_tiny.sha1-mismatch.zip``; ``-1``, ``-2`` ... when that exists): the
    user may have placed it there, so it is never deleted, and it keeps its archive suffix
    so that ``download_extract(name, local=...)`` can still unpack it."""
    name = os.path.basename(path)
    suffix = next((x for x in ARCHIVE_SUFFIXES if name.lower().endswith(x)),
                  os.path.splitext(name)[1])
    stem = os.path.join(os.path.dirname(path), name[:len(name) - len(suffix)])
    aside, k = f"{stem}.{algo}-mismatch{suffix}", 0
    while os.path.lexists(aside):
        k += 1
        aside = f"{stem}.{algo}-mismatch-{k}{suffix}"
    os.replace(path, aside)
    return aside


def _remove_stale_parts(folder: str, fname: str) -> None:
    """Delete temporary files of downloads of ``fname`` that died (called under the lock:
    only the lock holder writes one, so every other one is stale)."""
    for entry in os.listdir(folder):
        if entry == fname + ".part" or (entry.startswith(f".{fname}.") and entry.endswith(".part")):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))


def download(name_or_url: str, folder: str | None = None,
             sha1_hash: str | None = None, *, deadline: float | None = None,
             stall_timeout: float | None = None, local: str | os.PathLike | None = None) -> str:
    """Download a ``DATA_HUB`` entry or a URL into ``folder`` and return the local file path.

    The book's ``d2l.download`` (step 1 of both Kaggle chapters). An existing file is reused
    when its hash matches (or when no hash is known). A file there with the wrong hash (an
    interrupted copy, or one the user placed: a re-packed archive, another release) is moved
    aside to ``<stem>.sha1-mismatch<suffix>``, never deleted, with one line giving both hashes, and
    the file is fetched again. ``sha1_hash`` is SHA-1 hex or ``"md5:<hex>"`` / ``"sha256:<hex>"``.

    ``local`` (or the environment variable :func:`local_env_var` of a ``DATA_HUB`` name): the
    user's own copy, a file or a folder, returned as it is after one line reporting its hash
    against the entry's (not enforced; :func:`download_extract` checks its layout).

    Safe with several processes at once: the download holds a lock file
    (``.<file>.lock``), streams into a temporary file unique to the process, hashes that
    file as it is on disk and only then renames it into place; a second process waits
    for the lock and then finds the verified file. The raw bytes are saved even when the
    server sends them with ``Content-Encoding: gzip``. ``stall_timeout`` (seconds without
    a byte, default ``TIMEOUT[1]``) and ``deadline`` (seconds for the whole download,
    default none) bound a slow server. Raises :class:`DownloadError` on any failure,
    leaving no file at the final path.
    """
    chosen = local_source(name_or_url, local)
    if chosen is not None:
        return _use_local(name_or_url, *chosen, sha1_hash)
    url, expected = _resolve_source(name_or_url, sha1_hash)
    want = parse_hash(expected)
    fname = url_file_name(url)
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
        offline_hint = f"place {fname} at {path} to use it offline"
        if _local_hint(name_or_url):
            offline_hint += (f", or use your own copy of {name_or_url} (a folder or an "
                             f"archive; its layout is checked, not its hash): "
                             f"{_local_hint(name_or_url)}")
        if os.path.exists(path):
            if verified():  # another process finished it while we waited
                return path
            # Moved away first: a failed download then cannot leave the bad copy where a later
            # call without a hash would trust it, and a file the user placed is not lost.
            actual = "a folder" if os.path.isdir(path) else file_hash(path, want[0])
            aside = _move_aside(path, want[0])
            keep = (f"; to use it as it is: {_local_hint(name_or_url, aside)}"
                    if _local_hint(name_or_url) else "")
            print(f"{path} does not match its {want[0].upper()} (expected {want[1]}, got "
                  f"{actual}): moved to {aside}, downloading {fname} again{keep}",
                  file=sys.stderr)
            offline_hint += f" (the earlier file is kept as {aside})"
        print(f"Downloading {fname} from {url}...", file=sys.stderr)
        _fetch(url, path, want, offline_hint, deadline,
               TIMEOUT[1] if stall_timeout is None else stall_timeout)
    finally:
        lock.release()
    return path


def _fetch(url: str, path: str, want: tuple[str, str] | None, offline_hint: str,
           deadline: float | None, stall: float) -> None:
    """Stream ``url`` into a temporary file beside ``path``, check the hash of the bytes on
    disk, and only then rename it to ``path`` (nothing is left behind on failure)."""
    folder, fname = os.path.split(path)
    fd, part = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _stream(url, f, fname, offline_hint, deadline, stall)
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


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why ``url`` cannot be downloaded from here (no network, refused, an HTTP error), or
    ``None`` when a HEAD request reaches it: asked before a long run that will need the file,
    so that it fails at the start rather than after its data was loaded."""
    try:
        r = requests.head(url, timeout=(timeout, timeout), allow_redirects=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        why = f"{type(e).__name__}"
        return why + (": no answer" if isinstance(e, requests.Timeout) else "")
    return None if r.status_code < 400 else f"HTTP {r.status_code} {r.reason}"


def download_extract(name_or_url: str, folder: str | None = None, *,
                     max_size: int | None = None, local: str | os.PathLike | None = None,
                     **download_kw) -> str:
    """Download and unpack a dataset next to its archive; return the data folder.

    The book's ``d2l.download_extract`` (step 1 of both Kaggle chapters), e.g.
    ``download_extract('cifar10_tiny')`` -> ``<data dir>/kaggle_cifar10_tiny``. Unlike the
    book, ``folder`` is the download folder (as in :func:`download`), not a sub-folder to
    return. When the archive holds a single top-level folder its path is returned,
    otherwise the folder the archive was unpacked into. ``max_size`` goes to :func:`extract`,
    other keywords (``deadline``, ``stall_timeout``) to :func:`download`.

    Offline, with the user's own data: ``local=PATH`` or the environment variable
    ``D2LKAGGLE_LOCAL_<NAME>`` (:func:`local_env_var`; the chapters' own
    ``download_extract('cifar10_tiny')`` line then runs unchanged). PATH is an extracted
    folder (returned as it is, or its one sub-folder holding the data) or an archive
    (unpacked into ``folder``, the download folder); either way the entry's layout
    (:data:`LAYOUTS`) is checked, and an archive's hash is reported, not enforced.
    """
    chosen = local_source(name_or_url, local)
    archive = download(name_or_url, folder, local=local, **download_kw)
    if chosen is not None and os.path.isdir(archive):
        return check_layout(name_or_url, archive, chosen[1])
    dest = None
    if chosen is not None:   # the user's archive: unpacked into the download folder, not beside it
        dest = os.path.abspath(folder or default_data_dir())
    dest, record = extract_once(archive, dest, max_size)
    top = record.get("top_folder")
    out = os.path.join(dest, top) if top else dest
    return check_layout(name_or_url, out, chosen[1]) if chosen is not None else out


# --------------------------------------------------------------------------- local data

def local_env_var(name: str) -> str:
    """The environment variable that points a ``DATA_HUB`` name at local data (step 1 of both
    chapters, offline): ``D2LKAGGLE_LOCAL_`` + the name in capitals, other characters as
    ``_`` (``cifar10_tiny`` -> ``D2LKAGGLE_LOCAL_CIFAR10_TINY``)."""
    return "D2LKAGGLE_LOCAL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def local_source(name_or_url: str, local: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """Step 1 offline: ``(absolute path, where it was named)`` of the user's own data for
    ``name_or_url``: ``local`` when given, else the name's environment variable, else
    ``None``. A path that does not exist raises :class:`FileNotFoundError` saying which
    setting named it."""
    if local is not None:
        path, origin = os.fspath(local), "given as local="
    elif "://" not in name_or_url and os.environ.get(local_env_var(name_or_url)):
        path, origin = os.environ[local_env_var(name_or_url)], "from " + local_env_var(name_or_url)
    else:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name_or_url}: {path} ({origin}) does not exist; give an "
                                f"extracted folder or an archive of {name_or_url}")
    return path, origin


def _local_hint(name_or_url: str, path: str | None = None) -> str:
    """The two documented ways to use one's own copy of a DATA_HUB entry (empty for a URL):
    ``D2LKAGGLE_LOCAL_<NAME>=PATH`` or ``download_extract(name, local=PATH)``."""
    if "://" in name_or_url:
        return ""
    shown = "PATH" if path is None else path
    arg = "PATH" if path is None else repr(path)
    return (f"{local_env_var(name_or_url)}={shown} or "
            f"download_extract({name_or_url!r}, local={arg})")


def _use_local(name_or_url: str, path: str, origin: str, sha1_hash: str | None) -> str:
    """The user's own file or folder: one line saying it is used, with its hash against the
    entry's for a file (reported, never enforced: the user chose it)."""
    known = sha1_hash or DATA_HUB.get(name_or_url, (None, None))[1]
    want = parse_hash(known)
    if os.path.isdir(path):
        note = "a folder: its layout is checked, there is no hash"
    else:
        algo = want[0] if want else "sha1"
        actual = file_hash(path, algo)
        if want is None:
            note = f"{algo.upper()} {actual}"
        elif actual == want[1]:
            note = f"{algo.upper()} {actual}, as in DATA_HUB"
        else:
            note = (f"{algo.upper()} {actual}, DATA_HUB has {want[1]}: not enforced for data "
                    f"you chose, its layout is checked")
    print(f"{name_or_url}: using {path} ({origin}; {note})", file=sys.stderr)
    return path


def check_layout(name_or_url: str, path: str, origin: str = "given as local=") -> str:
    """Step 1 with the user's own data: the folder of ``path`` that holds ``name_or_url``'s
    :data:`LAYOUTS` (``path`` itself, or its only sub-folder, as an archive's top folder);
    :class:`ValueError` naming what is missing otherwise. Names without a known layout only
    need a non-empty folder."""
    need = LAYOUTS.get(name_or_url)

    def missing(folder: str) -> list[str]:
        if need is None:
            return [] if os.listdir(folder) else ["any file"]
        return [n for n in need if not (os.path.isdir(os.path.join(folder, n.rstrip("/")))
                                         if n.endswith("/")
                                         else os.path.isfile(os.path.join(folder, n)))]

    if not missing(path):
        return path
    subs = [e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith((".", "__"))]
    if len(subs) == 1 and not missing(subs[0]):
        return subs[0]
    raise ValueError(f"{path} ({origin}) does not hold {name_or_url}: no "
                     f"{', '.join(missing(path))} in it; give the folder that holds "
                     f"{', '.join(need or ('its files',))}, or its archive")
