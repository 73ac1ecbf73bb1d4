"""The book's folder layout for ``ImageFolder``-style readers.

::

    data_dir/train_valid_test/train/<label>/<file>        training part of the split
    data_dir/train_valid_test/valid/<label>/<file>        validation part
    data_dir/train_valid_test/train_valid/<label>/<file>  all labelled images
    data_dir/train_valid_test/test/unknown/<file>         the test images

The split follows the chapters (:func:`d2lkaggle.data.splits.split_train_valid`): every class
gives the same number of validation images, a seeded choice that is the same on every machine.

Files are hard-linked by default (no extra disk space, ~50,000 files per second), falling
back to copies when the file system refuses links (another device, FAT/exFAT). Each run
builds the folders under a hidden temporary folder next to them and then swaps them in: a
re-run leaves exactly the new split (no stale files from an earlier one), and an interrupted
run never leaves a half-filled folder under the final names.

Nothing of the user's is ever deleted: ``data_dir/.train_valid_test.manifest.json`` lists
every file and folder reorg placed; a re-run replaces a folder only when the manifest says
reorg wrote it and it holds nothing else (a file the user added there, a folder reorg did not
write → :class:`FileExistsError` naming it, before anything changes). Two reorgs of one
folder at once take turns (the lock file ``data_dir/.train_valid_test.lock``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Mapping

from .splits import n_valid_per_label, split_train_valid

__all__ = ["reorg_train_valid", "reorg_test", "MODES", "TRAIN_VALID_TEST"]

#: ways of placing a file into the layout
MODES = ("link", "symlink", "copy")
TRAIN_VALID_TEST = "train_valid_test"
_TMP_PREFIX = ".reorg-tmp-"
_OLD_PREFIX = ".reorg-old-"
_OWNED = ".reorg-owned"  # a file inside every temporary folder reorg makes








# --------------------------------------------------------------------------- file listing

def _list_files(folder: str) -> list[tuple[str, str]]:
    """``(name, path)`` of the visible regular files of ``folder`` (names starting with a dot,
    such as ``.DS_Store``, and sub-folders are skipped), sorted by name."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file():
                continue
            out.append((e.name, e.path))
    out.sort()
    return out


def _stem_map(folder: str) -> dict[str, str]:
    """``{stem: file name}`` of the visible files of ``folder``; two files with one stem fail."""
    stems: dict[str, str] = {}
    for name, _ in _list_files(folder):
        dot = name.rfind(".")  # os.path.splitext's stem for names not starting with a dot
        stem = name[:dot] if dot > 0 else name
        if stem in stems:
            raise ValueError(f"{folder}: two files with the id {stem!r}: {stems[stem]!r} and {name!r}")
        stems[stem] = name
    return stems


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _check_label_name(label: str) -> None:
    bad = (not label or label in (".", "..") or "/" in label or "\0" in label
           or (os.sep != "/" and os.sep in label) or (os.altsep and os.altsep in label))
    if bad:
        raise ValueError(f"label {label!r} cannot be used as a folder name")


# --------------------------------------------------------------------------- placing files

def _placer(mode: str) -> Callable[[str, str], None]:
    if mode == "copy":
        return shutil.copy2
    if mode == "symlink":
        return os.symlink  # callers pass absolute sources
    if mode == "link":
        state = {"link": True}

        def place(src: str, dst: str) -> None:
            if state["link"]:
                try:
                    os.link(src, dst)
                    return
                except FileNotFoundError:
                    raise
                except OSError:
                    # Cross-device, a file system without hard links, too many links:
                    # copy this file and all the following ones.
                    state["link"] = False
            shutil.copy2(src, dst)
        return place
    raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")


#: threads placing files: a link is a system call that releases the GIL, and two of them at
#: once took 0.55 s instead of 0.80 s for 100,000 links here (four: 0.70 s)
PLACE_THREADS = 2


def _place_all(place: Callable[[str, str], None], pairs: list[tuple[str, str]]) -> None:
    """``place(src, dst)`` for every pair: the first alone (a link refused there switches
    ``place`` to copies before the threads start), the rest split over PLACE_THREADS."""
    if not pairs:
        return
    place(*pairs[0])
    rest = pairs[1:]
    k = PLACE_THREADS
    if k < 2 or len(rest) < 1000:
        for src, dst in rest:
            place(src, dst)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(part: list[tuple[str, str]]) -> None:
        for src, dst in part:
            place(src, dst)
    with ThreadPoolExecutor(k) as ex:
        for f in [ex.submit(run, rest[i::k]) for i in range(k)]:
            f.result()  # the first error (a vanished source file) is raised here


def _manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, f".{TRAIN_VALID_TEST}.manifest.json")


def _read_manifest(data_dir: str) -> dict[str, list[str]]:
    """``{part: [relative entries, folders ending in '/']}`` of what earlier reorgs placed."""
    path = _manifest_path(data_dir)
    try:
        with open(path, encoding="utf-8") as f:
            parts = json.load(f)["parts"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the reorg manifest {path} ({e}); delete it and the "
                         f"{TRAIN_VALID_TEST} folders reorg made, then re-run") from e
    return {k: list(v) for k, v in parts.items()}


def _write_manifest(data_dir: str, parts: dict[str, list[str]]) -> None:
    from ..utils.files import atomic_write_text
    atomic_write_text(_manifest_path(data_dir), json.dumps({"version": 1, "parts": parts}) + "\n")


def _entries(folder: str) -> list[str]:
    """Every file and folder under ``folder``, relative, folders ending in ``/`` (symlinks,
    also to folders, as files: never followed), sorted."""
    return sorted(_scan(folder)[0])


def _check_replaceable(root: str, names: tuple[str, ...], manifest: dict[str, list[str]]) -> None:
    """Refuse to replace a folder reorg did not write, or one holding files it did not place."""
    for name in names:
        target = os.path.join(root, name)
        if not os.path.lexists(target):
            continue
        if name not in manifest or not os.path.isdir(target) or os.path.islink(target):
            raise FileExistsError(
                f"{target} exists but reorg did not write it (it is not in "
                f"{_manifest_path(os.path.dirname(root))}); move it away or delete it "
                f"yourself, then re-run reorg")
        foreign = sorted(set(_entries(target)) - set(manifest[name]))
        if foreign:
            raise FileExistsError(
                f"{target} holds {len(foreign)} file(s) reorg did not put there: "
                f"{_listing(foreign, 5)}; move them out of {target} (reorg replaces that "
                f"folder), then re-run reorg")


def _clean_leftovers(root: str) -> None:
    """Remove temporary folders an interrupted earlier reorg left in ``root`` (called under
    the lock; only folders carrying reorg's own mark, never a user's ``.tmp-*``)."""
    with os.scandir(root) as it:
        stale = [e.path for e in it if e.name.startswith((_TMP_PREFIX, _OLD_PREFIX))
                 and e.is_dir(follow_symlinks=False) and os.path.exists(os.path.join(e.path, _OWNED))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def _own_tmpdir(prefix: str, root: str) -> str:
    tmp = tempfile.mkdtemp(prefix=prefix, dir=root)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    open(os.path.join(tmp, _OWNED), "wb").close()
    return tmp


def _umask() -> int:
    from ..utils.files import current_umask
    return current_umask()


def _scan(folder: str, rel: str = "", entries: list | None = None,
          inodes: dict | None = None) -> tuple[list[str], dict[str, int]]:
    """:func:`_entries` of ``folder`` (same strings) plus the inode of every file, in one
    ``scandir`` pass (readdir gives the inode: no stat per file)."""
    entries = [] if entries is None else entries
    inodes = {} if inodes is None else inodes
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir():
                if e.is_symlink():
                    entries.append(rel + e.name)
                else:
                    entries.append(rel + e.name + "/")
                    _scan(e.path, rel + e.name + "/", entries, inodes)
            else:
                entries.append(rel + e.name)
                inodes[rel + e.name] = e.inode()
    return entries, inodes


def _up_to_date(root: str, names: tuple[str, ...], manifest: dict[str, list[str]],
                plan: list[tuple[str | None, str]], sources: tuple[str, ...]) -> bool:
    """True when ``root/<name>`` already holds exactly the hard links ``plan`` would make.

    ``plan`` lists (source path, destination relative to ``root``, ``/``-separated; one
    ending in ``/`` is a folder). The tree must list exactly the planned files and folders
    (also per the manifest), and every destination must be the same file (inode) as its
    source: a replaced source image, a changed label or split, an added or missing file all
    mean a rebuild. ``sources`` are the folders the source paths are in.
    """
    expected: dict[str, set[str]] = {n: set() for n in names}
    for src, rel in plan:
        name, rest = rel.split("/", 1)
        expected[name].add(rest)
        if src is None:  # a folder: its parents too (files' folders are in the plan)
            parts = rest.rstrip("/").split("/")
            expected[name].update("/".join(parts[:k]) + "/" for k in range(1, len(parts)))
    inodes: dict[str, int] = {}
    for name in names:
        target = os.path.join(root, name)
        if (name not in manifest or set(manifest[name]) != expected[name]
                or not os.path.isdir(target) or os.path.islink(target)):
            return False
        entries, ino = _scan(target)
        if set(entries) != expected[name]:
            return False
        inodes.update((name + "/" + k, v) for k, v in ino.items())
    src_inodes: dict[str, int] = {}
    for folder in sources:
        with os.scandir(folder) as it:
            src_inodes.update((e.path, e.inode()) for e in it)
    return all(rel.endswith("/") or src_inodes.get(src) == inodes.get(rel) for src, rel in plan)


def _build_and_swap(data_dir: str, names: tuple[str, ...],
                    build: Callable[[str], None],
                    plan: Callable[[], list[tuple[str | None, str]]] | None = None,
                    sources: tuple[str, ...] = ()) -> None:
    """Run ``build(tmp)`` to fill ``tmp/<name>`` for each name, then swap them in.

    Old folders are first all moved aside, then the new ones moved in (renames within one
    folder), so a crash leaves either the old tree, the new tree, or a tree with folders
    missing — never a half-filled folder under its final name. Holds the reorg lock, refuses
    to replace what reorg did not write, and keeps the manifest a superset of what reorg
    placed at every moment. With ``plan`` (hard-link mode; called only when the manifest
    lists every folder, so a first run never builds it) a tree that already holds exactly
    those links is left as it is (a re-run over an unchanged competition).
    """
    from ..utils.files import file_lock
    root = os.path.join(data_dir, TRAIN_VALID_TEST)
    if os.path.lexists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is a file; reorg needs it to be a folder")
    os.makedirs(root, exist_ok=True)
    lock = file_lock(os.path.join(data_dir, f".{TRAIN_VALID_TEST}.lock"),
                     f"reorganizes {data_dir}")
    try:
        manifest = _read_manifest(data_dir)
        _check_replaceable(root, names, manifest)
        if (plan is not None and all(n in manifest for n in names)
                and _up_to_date(root, names, manifest, plan(), sources)):
            return
        _clean_leftovers(root)
        tmp = _own_tmpdir(_TMP_PREFIX, root)
        old = None
        try:
            build(tmp)
            new = {name: _entries(os.path.join(tmp, name)) for name in names}
            # Before the swap the manifest lists both trees, after it only the new one (one
            # write when the old tree's entries are all in the new one, as on a first run).
            grown = {n: set(manifest.get(n, ())) - set(new[n]) for n in names}
            _write_manifest(data_dir, {**manifest, **{n: sorted(grown[n].union(new[n])) if grown[n]
                                                      else new[n] for n in names}})
            old = _own_tmpdir(_OLD_PREFIX, root)
            for name in names:
                target = os.path.join(root, name)
                if os.path.lexists(target):
                    os.rename(target, os.path.join(old, name))
            for name in names:
                os.rename(os.path.join(tmp, name), os.path.join(root, name))
            if any(grown.values()):
                _write_manifest(data_dir, {**manifest, **new})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()


# --------------------------------------------------------------------------- public API

def reorg_train_valid(data_dir: str | os.PathLike, labels: Mapping[str, str], valid_ratio: float,
                      *, seed: int = 0, mode: str = "link") -> int:
    """Place the images of ``data_dir/train`` into ``train``, ``valid`` and ``train_valid``.

    ``labels`` maps file stems (``"1"`` for ``1.png``) to labels, as :func:`read_csv_labels`
    returns. Every image must have a label and every label an image, else :class:`ValueError`
    lists (up to 10 of) the mismatches. ``mode`` is ``"link"`` (hard links, copies when links
    are impossible), ``"symlink"`` (absolute targets) or ``"copy"``.

    Returns the number of validation images per class, like the book.
    """
    data_dir = os.fspath(data_dir)
    place = _placer(mode)
    n_valid = n_valid_per_label(labels, valid_ratio)  # validates before touching the disk
    src_dir = os.path.abspath(os.path.join(data_dir, "train"))
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"training image folder not found: {src_dir}")
    stems = _stem_map(src_dir)
    no_label = sorted(set(stems) - set(labels))
    no_image = sorted(set(labels) - set(stems))
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(f"{len(no_label)} images in {src_dir} have no label: {_listing(no_label)}")
        if no_image:
            parts.append(f"{len(no_image)} labelled ids have no image in {src_dir}: "
                         f"{_listing(no_image)}")
        raise ValueError("; ".join(parts))
    classes = sorted(set(labels.values()))
    for label in classes:
        _check_label_name(label)
    _, valid_ids = split_train_valid(labels, valid_ratio, seed)
    valid_set = set(valid_ids)

    def build(tmp: str) -> None:
        tv_dirs, tr_dirs, va_dirs = {}, {}, {}
        for label in classes:
            for dirs, part in ((tv_dirs, "train_valid"), (tr_dirs, "train"), (va_dirs, "valid")):
                d = os.path.join(tmp, part, label)
                os.makedirs(d)
                dirs[label] = d + os.sep
        dirs = {"train_valid": tv_dirs, "train": tr_dirs, "valid": va_dirs}
        _place_all(place, [(src, dirs[part][label] + name) for src, part, label, name in links()])

    def links():  # (source, part, label, file name) of every file build() places
        prefix = os.path.join(src_dir, "")
        for stem, name in stems.items():
            label = labels[stem]
            yield prefix + name, "train_valid", label, name
            yield prefix + name, "valid" if stem in valid_set else "train", label, name

    def plan() -> list[tuple[str | None, str]]:  # what build() links, for the re-run check
        folders: list[tuple[str | None, str]] = [
            (None, f"{part}/{label}/") for part in ("train", "valid", "train_valid")
            for label in classes]
        return folders + [(src, f"{part}/{label}/{name}") for src, part, label, name in links()]

    _build_and_swap(data_dir, ("train", "valid", "train_valid"), build,
                    plan if mode == "link" else None, (src_dir,))
    return n_valid


def reorg_test(data_dir: str | os.PathLike, *, mode: str = "link") -> int:
    """Place the images of ``data_dir/test`` into ``train_valid_test/test/unknown``.

    Hidden files are skipped; the folder is rebuilt and swapped in like in
    :func:`reorg_train_valid`. Returns the number of test images.
    """
    data_dir = os.fspath(data_dir)
    place = _placer(mode)
    src_dir = os.path.abspath(os.path.join(data_dir, "test"))
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"test image folder not found: {src_dir}")
    files = _list_files(src_dir)

    def build(tmp: str) -> None:
        dst = os.path.join(tmp, "test", "unknown")
        os.makedirs(dst)
        dst += os.sep
        _place_all(place, [(path, dst + name) for name, path in files])

    def plan() -> list[tuple[str | None, str]]:
        return [(None, "test/unknown/")] + [(path, f"test/unknown/{name}") for name, path in files]

    _build_and_swap(data_dir, ("test",), build, plan if mode == "link" else None, (src_dir,))
    return len(files)
