"""Unpacking archives safely: zip, the tar flavours and 7z (the full competitions ship ``.7z``).

Refuses archives whose members would land outside the destination (:class:`UnsafeArchiveError`)
or whose declared size is a zip bomb's, unpacks each archive only once (a marker file listing
what it wrote), and never deletes or overwrites a path the extraction did not create. Two
extractions of one archive take turns (a lock file).
"""
from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from typing import NamedTuple

import py7zr
import py7zr.exceptions
import py7zr.io

from ..utils.files import atomic_open, file_lock, sha1

#: longest suffixes first so that ``a.tar.gz`` is not taken for a ``.gz``
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar",
                    ".zip", ".7z")


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder."""


class CorruptArchiveError(RuntimeError):
    """An archive is truncated or otherwise unreadable."""


class _Member(NamedTuple):
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str = ""
    size: int = 0  # declared uncompressed size in bytes


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
        return [_Member(i.filename, "dir" if i.is_dir() else "file", size=i.file_size)
                for i in zf.infolist()]


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
            members.append(_Member(m.name, kind, m.linkname, m.size if m.isreg() else 0))
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
            members.append(_Member(f.filename, kind, size=int(f.uncompressed or 0)))
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


def _walk(root: str) -> list[tuple[str, bool]]:
    """``(relative path, is a real folder)`` of everything under ``root``, parents first."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        real_dirs = []
        for d in sorted(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                out.append((rel + d, False))  # a link to a folder is a file-like entry
            else:
                real_dirs.append(d)
                out.append((rel + d, True))
        dirnames[:] = real_dirs
        out.extend((rel + f, False) for f in sorted(filenames))
    return out


def _collisions(tmp: str, dest: str, ours: set[str]) -> list[str]:
    """Paths of ``dest`` that moving ``tmp`` in would overwrite or delete and that an earlier
    extraction of the same archive did not create (``ours``: its manifest)."""
    bad, new_dirs = [], []
    for rel, is_dir in _walk(tmp):
        if any(rel.startswith(d) for d in new_dirs):
            continue  # inside a folder that does not exist yet in dest: moved as a whole
        dst = os.path.join(dest, *rel.split("/"))
        if not os.path.lexists(dst):
            if is_dir:
                new_dirs.append(rel + "/")
            continue
        dst_dir = os.path.isdir(dst) and not os.path.islink(dst)
        if is_dir and dst_dir:
            continue  # folders merge; their contents are checked one by one
        if dst_dir or rel not in ours:
            bad.append(dst)
    return bad


def _move_into(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``, merging folders (collisions were refused beforehand)."""
    if os.path.isdir(src) and not os.path.islink(src) and os.path.isdir(dst) \
            and not os.path.islink(dst):
        for entry in os.listdir(src):
            _move_into(os.path.join(src, entry), os.path.join(dst, entry))
        os.rmdir(src)
        return
    if os.path.lexists(dst):  # a file an earlier extraction of this archive wrote
        os.remove(dst)
    os.replace(src, dst)


#: the default limit of :func:`extract` is this many times the archive's size ...
MAX_EXTRACT_RATIO = 20
#: ... but never less than this many bytes (small archives of text compress well)
MIN_EXTRACT_LIMIT = 256 << 20


def extract_limit(archive: str) -> int:
    """Default largest total declared size (bytes) :func:`extract` unpacks from ``archive``."""
    return max(MAX_EXTRACT_RATIO * os.path.getsize(archive), MIN_EXTRACT_LIMIT)


def _tmp_prefix(archive: str) -> str:
    return f".{os.path.basename(archive)}."


def _remove_stale_tmp(archive: str, dest: str) -> None:
    """Delete temporary folders of extractions of ``archive`` that died (called under the
    lock, so no live extraction owns one)."""
    prefix = _tmp_prefix(archive)
    for entry in os.listdir(dest):
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            shutil.rmtree(os.path.join(dest, entry), ignore_errors=True)


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


def _record_intact(record: dict | None, digest: str, dest: str) -> bool:
    """The marker matches the archive and what it created at the top level still exists."""
    if record is None or record.get("sha1") != digest:
        return False
    tops = record.get("entries")
    if tops is None:  # a marker of an earlier version: only the top folder is known
        tops = [record["top_folder"]] if record.get("top_folder") else []
    return all(os.path.lexists(os.path.join(dest, t)) for t in tops)


def extract_once(archive: str, dest: str | None, max_size: int | None = None) -> tuple[str, dict]:
    """Extract once; return dest and the marker record (which names the top folder)."""
    archive = os.path.abspath(archive)
    suffix = _archive_suffix(archive)
    dest = os.path.abspath(dest or os.path.dirname(archive))
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise NotADirectoryError(f"cannot extract {archive} into {dest}: it is a file")
    marker = _marker_path(archive, dest)
    digest = sha1(archive)
    record = _read_marker(marker)
    if _record_intact(record, digest, dest):  # read-only check: no lock needed
        return dest, record
    members = _checked_members(archive, suffix, max_size)  # refused before writing anything
    os.makedirs(dest, exist_ok=True)
    lock = file_lock(os.path.join(dest, f".{os.path.basename(archive)}.lock"),
                     f"is extracting {os.path.basename(archive)}")
    try:
        record = _read_marker(marker)  # another process may have finished while we waited
        if _record_intact(record, digest, dest):
            return dest, record
        _remove_stale_tmp(archive, dest)
        return dest, _extract_locked(archive, suffix, dest, marker, digest, record, members)
    finally:
        lock.release()


def _checked_members(archive: str, suffix: str, max_size: int | None) -> list[_Member]:
    """The archive's members, after the safety and size checks."""
    listing = {".zip": _list_zip, ".7z": _list_7z}.get(suffix, _list_tar)
    try:
        members = listing(archive)
    except Exception as e:
        if _is_format_error(e):
            raise CorruptArchiveError(f"cannot read {archive}: truncated or corrupt "
                                      f"archive ({type(e).__name__}: {e})") from e
        raise
    _check_members(archive, members)
    limit = extract_limit(archive) if max_size is None else int(max_size)
    declared = sum(m.size for m in members)
    if declared > limit:
        raise UnsafeArchiveError(
            f"refusing to extract {archive}: its {len(members)} members declare "
            f"{declared / 1e6:.1f} MB, more than the limit of {limit / 1e6:.1f} MB "
            f"({MAX_EXTRACT_RATIO}x the archive, at least {MIN_EXTRACT_LIMIT >> 20} MiB); "
            f"pass max_size= (CLI: --max-extract-gb) if you trust it")
    reserved = {f".{os.path.basename(archive)}.extracted", f".{os.path.basename(archive)}.lock"}
    for m in members:
        if _split(m.name) and _split(m.name)[0] in reserved:
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {m.name!r} "
                                     f"would replace the extraction's own bookkeeping file")
    return members


def _extract_locked(archive: str, suffix: str, dest: str, marker: str, digest: str,
                    old: dict | None, members: list[_Member]) -> dict:

    ours = set((old or {}).get("files") or [])
    # Unpacking next to the final place (same file system, so moves are renames) and moving
    # in only once everything is out means a failure never leaves a half-written tree.
    tmp = tempfile.mkdtemp(prefix=_tmp_prefix(archive), suffix=".tmp", dir=dest)
    try:
        try:
            _extract_all(archive, suffix, tmp)
        except Exception as e:
            if _is_format_error(e):
                raise CorruptArchiveError(f"cannot extract {archive}: truncated or corrupt "
                                          f"archive ({type(e).__name__}: {e})") from e
            raise
        entries = sorted(os.listdir(tmp))
        files = [rel for rel, is_dir in _walk(tmp) if not is_dir]
        bad = _collisions(tmp, dest, ours)
        if bad:
            raise FileExistsError(
                f"refusing to extract {archive}: it would overwrite {len(bad)} path(s) that "
                f"it did not create, e.g. {bad[0]}" + (f", {bad[1]}" if len(bad) > 1 else "")
                + "; move them away or extract into another folder")
        for entry in entries:
            _move_into(os.path.join(tmp, entry), os.path.join(dest, entry))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # What the previous extraction wrote and this archive no longer has: not left stale.
    for rel in sorted(ours - set(files)):
        p = os.path.join(dest, *rel.split("/"))
        if os.path.islink(p) or os.path.isfile(p):
            with contextlib.suppress(OSError):
                os.remove(p)

    record = {"archive": os.path.basename(archive), "sha1": digest,
              "top_folder": _top_folder(members), "entries": entries, "files": files}
    with atomic_open(marker, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return record


def extract(archive: str, dest: str | None = None, *, max_size: int | None = None) -> str:
    """Unpack ``archive`` into ``dest`` (default: the archive's folder) and return ``dest``.

    The unpacking half of the book's ``d2l.download_extract``; also used for the full
    competition's ``train.7z``/``test.7z``. Supports .zip, .tar, .tar.gz/.tgz,
    .tar.bz2/.tbz2, .tar.xz/.txz and .7z. Runs once per archive content: the marker file
    ``dest/.<archive name>.extracted`` holds the archive's SHA-1 and makes later calls
    no-ops (unless what it created at the top level was deleted: then it runs again).

    Never deletes or overwrites what it did not create: the marker lists the files written,
    and an archive that would replace any other existing path raises
    :class:`FileExistsError` naming it, before anything is moved. Raises
    :class:`UnsafeArchiveError` (before writing anything) for members that would escape
    ``dest`` and for archives whose declared size exceeds ``max_size`` bytes (default
    :func:`extract_limit`: 20x the archive, at least 256 MiB — a zip bomb),
    :class:`CorruptArchiveError` for unreadable archives. Concurrent extractions of one
    archive take turns (a lock file); temporary folders of dead ones are removed.
    """
    return extract_once(archive, dest, max_size)[0]
