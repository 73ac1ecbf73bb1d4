"""Getting the data: the book's ``DATA_HUB``, ``download`` and ``download_extract``.

Step 1 of both Kaggle chapters ("Obtaining and Organizing the Dataset"): fetch the tiny
sample archives (``cifar10_tiny``, ``dog_tiny``) from the d2l mirror, check their SHA-1 and
unpack them. Compared with the book's helpers, these ones also

* stream into ``<file>.part`` and only move the file into place once its SHA-1 matches,
  so an interrupted or corrupted download is never mistaken for a good one;
* raise :class:`DownloadError` with an "offline" hint instead of a bare ``requests`` error;
* unpack ``.7z`` (the full competitions ship ``train.7z``/``test.7z``) and the tar flavours;
* refuse archives whose members would land outside the destination
  (:class:`UnsafeArchiveError`) and unpack each archive only once (a marker file).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
import zlib
from typing import NamedTuple
from urllib.parse import unquote, urlparse

import py7zr
import py7zr.exceptions
import py7zr.io
import requests
from tqdm import tqdm

DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"

#: dataset name -> (url, sha1), as in the book
DATA_HUB: dict[str, tuple[str, str]] = {
    "cifar10_tiny": (DATA_URL + "kaggle_cifar10_tiny.zip",
                     "2068874e4b9a9f0fb07ebe0ad2b29754449ccacd"),
    "dog_tiny": (DATA_URL + "kaggle_dog_tiny.zip",
                 "0cb91d09b814ecdc07b50f31f8dcad3e81d6a86d"),
    # The CIFAR python archives (d2lkaggle.cifar reads them without unpacking) with the MD5
    # sums their authors publish on https://www.cs.toronto.edu/~kriz/cifar.html.
    "cifar10_python": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "md5:c58f30108f718f92721af3b95e74349a"),
    "cifar100_python": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "md5:eb9058c3a382ffc7106e4002c42a8d85"),
}

#: requests timeout: (connect, read between two chunks) in seconds
TIMEOUT = (10, 60)
_CHUNK = 1 << 20

#: longest suffixes first so that ``a.tar.gz`` is not taken for a ``.gz``
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar",
                    ".zip", ".7z")


class DownloadError(RuntimeError):
    """A file could not be downloaded (network, HTTP status or SHA-1 mismatch)."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder."""


class CorruptArchiveError(RuntimeError):
    """An archive is truncated or otherwise unreadable."""


def default_data_dir() -> str:
    """Where downloads go by default: ``$D2LKAGGLE_DATA`` or ``~/.cache/d2lkaggle``.

    Plays the role of the book's ``../data`` cache folder.
    """
    env = os.environ.get("D2LKAGGLE_DATA")
    return os.path.expanduser(env) if env else os.path.join(
        os.path.expanduser("~"), ".cache", "d2lkaggle")


def sha1(path: str) -> str:
    """SHA-1 hex digest of a file, read in chunks (the book's cache check in ``download``)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- download

def _resolve_source(name_or_url: str, sha1_hash: str | None) -> tuple[str, str | None]:
    if name_or_url in DATA_HUB:
        url, known = DATA_HUB[name_or_url]
        return url, sha1_hash or known
    if "://" in name_or_url:
        return name_or_url, sha1_hash
    raise ValueError(f"unknown dataset {name_or_url!r}: not a URL and not in DATA_HUB "
                     f"({', '.join(sorted(DATA_HUB))})")


def download(name_or_url: str, folder: str | None = None,
             sha1_hash: str | None = None) -> str:
    """Download a ``DATA_HUB`` entry or a URL into ``folder`` and return the local file path.

    The book's ``d2l.download`` (step 1 of both Kaggle chapters). An existing file is reused
    when its SHA-1 matches (or when no hash is known); a file with the wrong hash is fetched
    again. Raises :class:`DownloadError` on any failure, leaving no file at the final path.
    """
    url, expected = _resolve_source(name_or_url, sha1_hash)
    fname = unquote(os.path.basename(urlparse(url).path))
    if not fname:
        raise ValueError(f"cannot derive a file name from URL {url!r}")
    folder = os.path.abspath(folder or default_data_dir())
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, fname)

    if os.path.exists(path):
        if expected is None or sha1(path) == expected.lower():
            return path
        # Removed up front so that a failed re-download cannot leave the bad copy behind,
        # where a later call without a hash would trust it.
        print(f"{path} does not match its SHA-1; downloading it again", file=sys.stderr)
        os.remove(path)

    part = path + ".part"
    offline_hint = f"place {fname} at {path} to use it offline"
    print(f"Downloading {fname} from {url}...", file=sys.stderr)
    try:
        actual = _stream(url, part, fname, offline_hint)
        if expected is not None and actual != expected.lower():
            raise DownloadError(f"SHA-1 mismatch for {url}: expected {expected.lower()}, "
                                f"got {actual}")
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    return path


def _stream(url: str, part: str, fname: str, offline_hint: str) -> str:
    """Write ``url`` to ``part``; return the SHA-1 of what was written."""
    digest = hashlib.sha1()
    written = 0
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as r:
            if r.status_code != 200:
                raise DownloadError(f"downloading {url} failed: HTTP {r.status_code} "
                                    f"{r.reason}; {offline_hint}")
            total = int(r.headers.get("Content-Length") or 0) or None
            with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=fname,
                                             disable=None) as bar:
                for chunk in r.iter_content(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            # Without a known hash, the length is the only check against a cut connection;
            # it only holds when the body was not content-encoded on the way.
            if (total is not None and "Content-Encoding" not in r.headers
                    and written != total):
                raise DownloadError(f"downloading {url} stopped after {written} of {total} "
                                    f"bytes; {offline_hint}")
    except requests.RequestException as e:
        raise DownloadError(f"could not download {url} ({type(e).__name__}: {e}); "
                            f"{offline_hint}") from e
    return digest.hexdigest()


# --------------------------------------------------------------------------- extract

class _Member(NamedTuple):
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str = ""


def _archive_suffix(archive: str) -> str:
    lower = archive.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    raise ValueError(f"unsupported archive type: {archive} "
                     f"(supported: {', '.join(ARCHIVE_SUFFIXES)})")


def _is_absolute(name: str) -> bool:
    # Windows forms too: an archive built there can carry 'C:\...' or '\\server\...'.
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _split(name: str) -> list[str]:
    return [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]


def _resolve(start: tuple[str, ...], target: str, links: dict[tuple[str, ...], str],
             hops: int = 0) -> tuple[str, ...] | None:
    """Follow ``target`` from folder ``start`` inside the archive; None if it leaves the root.

    Links of the same archive met on the way are followed, because a lexically harmless
    target such as ``d/..`` escapes once ``d`` is itself a link to ``.``.
    """
    if hops > 40 or _is_absolute(target):  # a link loop is refused, not followed forever
        return None
    path = list(start)
    for part in _split(target):
        if part == "..":
            if not path:
                return None
            path.pop()
            continue
        path.append(part)
        if tuple(path) in links:
            resolved = _resolve(tuple(path[:-1]), links[tuple(path)], links, hops + 1)
            if resolved is None:
                return None
            path = list(resolved)
    return tuple(path)


def _check_members(archive: str, members: list[_Member]) -> None:
    """Raise UnsafeArchiveError unless every member stays inside the destination."""
    def unsafe(m: _Member, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"refusing to extract {archive}: member {m.name!r} {why}")

    links: dict[tuple[str, ...], str] = {}
    for m in members:
        if _is_absolute(m.name):
            raise unsafe(m, "has an absolute path")
        if ".." in _split(m.name):
            raise unsafe(m, "contains a '..' component")
        if m.kind == "special":
            raise unsafe(m, "is a device, fifo or other special file")
        if m.kind == "symlink":
            links[tuple(_split(m.name))] = m.link
    for m in members:
        parts = tuple(_split(m.name))
        if m.kind == "symlink" and _resolve(parts[:-1], m.link, links) is None:
            raise unsafe(m, f"is a symlink to {m.link!r}, outside the destination")
        # tar hard-link targets are archive paths, relative to the archive root.
        if m.kind == "hardlink" and _resolve((), m.link, links) is None:
            raise unsafe(m, f"is a hard link to {m.link!r}, outside the destination")


def _list_zip(archive: str) -> list[_Member]:
    with zipfile.ZipFile(archive) as zf:
        # zipfile writes symlink entries as plain files holding the target text, so zip
        # members are only ever files or folders here.
        return [_Member(i.filename, "dir" if i.is_dir() else "file") for i in zf.infolist()]


def _list_tar(archive: str) -> list[_Member]:
    members = []
    with tarfile.open(archive, "r:*") as tf:
        for m in tf.getmembers():
            if m.isdir():
                kind = "dir"
            elif m.isreg():
                kind = "file"
            elif m.issym():
                kind = "symlink"
            elif m.islnk():
                kind = "hardlink"
            else:
                kind = "special"
            members.append(_Member(m.name, kind, m.linkname))
    return members


def _list_7z(archive: str) -> list[_Member]:
    special = {0o010000, 0o020000, 0o060000, 0o140000}  # fifo, chr, blk, socket
    members, symlinks = [], []
    with py7zr.SevenZipFile(archive, "r") as sz:
        for f in sz.files:
            if f.is_directory:
                kind = "dir"
            elif f.is_junction or f.is_socket or f.st_fmt in special:
                kind = "special"
            elif f.is_symlink:
                kind = "symlink"
                symlinks.append(f.filename)
            else:
                kind = "file"
            members.append(_Member(f.filename, kind))
    if not symlinks:
        return members
    # py7zr keeps a symlink's target in the member's data: read those into memory.
    factory = py7zr.io.BytesIOFactory(limit=1 << 16)
    with py7zr.SevenZipFile(archive, "r") as sz:
        sz.extract(targets=symlinks, factory=factory)
    targets = {}
    for key, product in factory.products.items():
        product.seek(0)
        targets[tuple(_split(key))] = product.read().decode("utf-8")
    return [m._replace(link=targets.get(tuple(_split(m.name)), ""))
            if m.kind == "symlink" else m for m in members]


def _extract_all(archive: str, suffix: str, dest: str) -> None:
    if suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    elif suffix == ".7z":
        with py7zr.SevenZipFile(archive, "r") as sz:
            sz.extractall(dest)
    else:
        with tarfile.open(archive, "r:*") as tf:
            # The 'data' filter re-checks links against the real file system while
            # writing: a second line of defence behind _check_members.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:
                tf.extractall(dest)


def _is_format_error(e: BaseException) -> bool:
    """True for the errors a truncated or corrupt archive raises.

    Library-raised OSErrors (gzip's BadGzipFile, bz2's "Invalid data stream") carry no
    errno, unlike real I/O failures such as a full disk, which must surface unchanged.
    """
    if isinstance(e, OSError):
        return e.errno is None
    return isinstance(e, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
                          lzma.LZMAError, py7zr.exceptions.ArchiveError, UnicodeDecodeError))


def _move_into(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``, merging folders and replacing whatever else is there."""
    if os.path.isdir(src) and not os.path.islink(src) and os.path.isdir(dst) \
            and not os.path.islink(dst):
        for entry in os.listdir(src):
            _move_into(os.path.join(src, entry), os.path.join(dst, entry))
        os.rmdir(src)
        return
    if os.path.isdir(dst) and not os.path.islink(dst):
        shutil.rmtree(dst)
    elif os.path.lexists(dst):
        os.remove(dst)
    os.replace(src, dst)


def _marker_path(archive: str, dest: str) -> str:
    return os.path.join(dest, f".{os.path.basename(archive)}.extracted")


def _read_marker(marker: str) -> dict | None:
    try:
        with open(marker, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _top_folder(members: list[_Member]) -> str | None:
    """The archive's single top-level folder, if it has one (macOS ``__MACOSX`` ignored)."""
    tops, nested = set(), False
    for m in members:
        parts = _split(m.name)
        if not parts or parts[0] == "__MACOSX":
            continue
        tops.add(parts[0])
        nested = nested or len(parts) > 1 or m.kind == "dir"
    return tops.pop() if len(tops) == 1 and nested else None


def _extract(archive: str, dest: str | None) -> tuple[str, dict]:
    """Extract once; return dest and the marker record (which names the top folder)."""
    archive = os.path.abspath(archive)
    suffix = _archive_suffix(archive)
    dest = os.path.abspath(dest or os.path.dirname(archive))
    marker = _marker_path(archive, dest)
    digest = sha1(archive)
    record = _read_marker(marker)
    if record is not None and record.get("sha1") == digest:
        return dest, record

    listing = {".zip": _list_zip, ".7z": _list_7z}.get(suffix, _list_tar)
    try:
        members = listing(archive)
    except Exception as e:
        if _is_format_error(e):
            raise CorruptArchiveError(f"cannot read {archive}: truncated or corrupt "
                                      f"archive ({type(e).__name__}: {e})") from e
        raise
    _check_members(archive, members)

    os.makedirs(dest, exist_ok=True)
    # Unpacking next to the final place (same file system, so moves are renames) and moving
    # in only once everything is out means a failure never leaves a half-written tree.
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(archive)}.", suffix=".tmp", dir=dest)
    try:
        try:
            _extract_all(archive, suffix, tmp)
        except Exception as e:
            if _is_format_error(e):
                raise CorruptArchiveError(f"cannot extract {archive}: truncated or corrupt "
                                          f"archive ({type(e).__name__}: {e})") from e
            raise
        for entry in os.listdir(tmp):
            _move_into(os.path.join(tmp, entry), os.path.join(dest, entry))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    record = {"archive": os.path.basename(archive), "sha1": digest,
              "top_folder": _top_folder(members)}
    with open(marker + ".part", "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(marker + ".part", marker)
    return dest, record


def extract(archive: str, dest: str | None = None) -> str:
    """Unpack ``archive`` into ``dest`` (default: the archive's folder) and return ``dest``.

    The unpacking half of the book's ``d2l.download_extract``; also used for the full
    competition's ``train.7z``/``test.7z``. Supports .zip, .tar, .tar.gz/.tgz,
    .tar.bz2/.tbz2, .tar.xz/.txz and .7z. Runs once per archive content: the marker file
    ``dest/.<archive name>.extracted`` holds the archive's SHA-1 and makes later calls
    no-ops. Raises :class:`UnsafeArchiveError` (before writing anything) for members that
    would escape ``dest`` and :class:`CorruptArchiveError` for unreadable archives.
    """
    return _extract(archive, dest)[0]


def download_extract(name_or_url: str, folder: str | None = None) -> str:
    """Download and unpack a dataset next to its archive; return the data folder.

    The book's ``d2l.download_extract`` (step 1 of both Kaggle chapters), e.g.
    ``download_extract('cifar10_tiny')`` -> ``<data dir>/kaggle_cifar10_tiny``. Unlike the
    book, ``folder`` is the download folder (as in :func:`download`), not a sub-folder to
    return. When the archive holds a single top-level folder its path is returned,
    otherwise the folder the archive was unpacked into.
    """
    archive = download(name_or_url, folder)
    dest, record = _extract(archive, None)
    top = record.get("top_folder")
    return os.path.join(dest, top) if top else dest
