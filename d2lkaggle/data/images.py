"""Decode image files to ``H×W×3`` uint8 RGB arrays, with an on-disk cache for fixed-size sets.

* :func:`read_image` — one file; grey, grey+alpha, palette, RGBA, CMYK and 16-bit images come
  out as RGB uint8 (alpha is dropped, like the book's ``ImageFolder`` loader does).
* :func:`read_images` — many files decoded by a thread pool (Pillow releases the GIL while
  decoding), order preserved.
* :func:`load_image_array` — a set of same-sized images (CIFAR-10's 32×32 PNGs) as one
  ``N×H×W×3`` array, cached as ``.npy`` so 50,000 PNGs are decoded once, not every run.
* :func:`list_images` — the image files of a folder in the order users expect.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..utils.files import atomic_open, file_stamp
from .reorg import _list_files

__all__ = ["read_image", "read_images", "load_image_array", "list_images", "image_size",
           "check_images", "CACHE_DIR_NAME", "MAX_IMAGE_PIXELS"]

#: name of the cache folder :func:`load_image_array` creates next to the data
CACHE_DIR_NAME = ".d2lkaggle_cache"
_CACHE_VERSION = 2
# images decoded per read_images call when building a cache: their separate arrays and
# futures are what the build holds beyond the cache array (benchmarks/memory.py)
_CHUNK = 1024

#: largest image (width × height) read_image decodes: Pillow's own "decompression bomb"
#: threshold; a larger file raises ValueError naming it before any pixel is allocated
MAX_IMAGE_PIXELS = 89_478_485


def _check_pixels(name: str, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"image {name} is {w}x{h} pixels ({w * h / 1e6:.1f} MP), more than "
                         f"the limit of {MAX_IMAGE_PIXELS / 1e6:.1f} MP "
                         f"(d2lkaggle.data.images.MAX_IMAGE_PIXELS); shrink or remove it")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (no pixels decoded).

    Raises :class:`ValueError` naming the file when it is not an image or larger than
    :data:`MAX_IMAGE_PIXELS`.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as im:
                size = im.size
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as e:
        raise ValueError(f"image {name} is too large to decode: {e}") from e
    except Exception as e:
        raise ValueError(f"cannot read image {name}: {e}") from e
    _check_pixels(name, size)
    return size


def check_images(paths: Sequence[str | os.PathLike], same_size: bool = False,
                 num_workers: int | None = None) -> tuple[int, int] | None:
    """Check from their headers that every file is an image within :data:`MAX_IMAGE_PIXELS`;
    with ``same_size``, that all have the size most of them have (returned, as (w, h)).

    Every input of a run is checked this way before the first epoch; a problem raises
    :class:`ValueError` naming the file.
    """
    paths = [os.fspath(p) for p in paths]
    workers = _default_workers() if num_workers is None else max(1, int(num_workers))
    if workers <= 1 or len(paths) < 64:
        sizes = [image_size(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            sizes = list(ex.map(image_size, paths, chunksize=64))
    if not same_size or not sizes:
        return None
    from collections import Counter
    (common, count), = Counter(sizes).most_common(1)
    for p, s in zip(paths, sizes):
        if s != common:
            raise ValueError(f"images differ in size: {p} is {(s[1], s[0], 3)}, but {count} "
                             f"of {len(paths)} images are {(common[1], common[0], 3)}; "
                             f"same-sized images are needed here (decode them one by one "
                             f"with read_image instead)")
    return common


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or 32-bit) grey: Pillow's convert() would clip at 255; scale to 8 bits.
        a = np.asarray(im)
        if mode != "F" and a.max(initial=0) > 255:
            a = np.clip(a, 0, 65535) >> 8
        a = np.clip(a, 0, 255)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # avoids Pillow's "palette with transparency" warning
    return im.convert("RGB")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file to an ``H×W×3`` uint8 RGB array (a fresh, writable array).

    Raises :class:`ValueError` naming the file when it is not a decodable image (corrupt,
    truncated, not an image, unreadable); a missing file raises :class:`FileNotFoundError`.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as im:
                _check_pixels(name, im.size)  # before the pixels are allocated
                arr = np.array(_to_rgb(im), dtype=np.uint8)
    except (FileNotFoundError, MemoryError):
        raise
    except ValueError as e:
        if str(e).startswith(f"image {name} is "):
            raise
        raise ValueError(f"cannot read image {name}: {e}") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, struct.error ...
        raise ValueError(f"cannot read image {name}: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3:  # defensive: never hand out another layout
        raise ValueError(f"cannot read image {name}: decoded to shape {arr.shape}")
    return arr


def _default_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


def read_images(paths: Iterable[str | os.PathLike],
                num_workers: int | None = None) -> list[np.ndarray]:
    """Decode many files with :func:`read_image` in a thread pool; results keep ``paths``' order.

    ``num_workers`` defaults to ``min(32, cpu_count + 4)``; ``0`` or ``1`` decodes in the
    calling thread. The first failing file's error is raised.
    """
    paths = list(paths)
    workers = _default_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
    if workers <= 1 or len(paths) <= 1:
        return [read_image(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as ex:
        return list(ex.map(read_image, paths, chunksize=1))


# --------------------------------------------------------------------------- cache

def _cache_key(paths: Sequence[str], base: str) -> str:
    # SHA-256 of json.dumps([_CACHE_VERSION, [[rel, size, mtime_ns, ctime_ns, inode], ...]])
    # (compact separators; utils.files.file_stamp), hashed entry by entry: no list of 50,000
    # entries is held.
    h = hashlib.sha256(f"[{_CACHE_VERSION},[".encode())
    for k, p in enumerate(paths):
        stamp = file_stamp(p)
        try:
            rel = os.path.relpath(os.path.abspath(p), base)
        except ValueError:  # another drive on Windows
            rel = os.path.abspath(p)
        entry = json.dumps([rel.replace(os.sep, "/"), *stamp], separators=(",", ":"))
        h.update(((",") if k else "").encode() + entry.encode())
    h.update(b"]]")
    return h.hexdigest()


def _try_load(path: str, n: int) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):  # a damaged cache file is rebuilt
        return None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != n or arr.shape[3] != 3:
        return None
    return arr


def _save(path: str, arr: np.ndarray) -> None:
    with atomic_open(path) as f:
        np.save(f, arr, allow_pickle=False)


def load_image_array(paths: Sequence[str | os.PathLike],
                     cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """All ``paths`` decoded into one ``N×H×W×3`` uint8 array, cached on disk as ``.npy``.

    Meant for sets whose images all have one size (CIFAR-10); a file of another size raises
    :class:`ValueError` naming it and both shapes.

    The cache lives in ``cache_dir``, by default ``<data>/.d2lkaggle_cache`` where ``<data>``
    is the parent of the first file's folder (``data_dir/train/1.png`` →
    ``data_dir/.d2lkaggle_cache``). The cache file's name is a hash of the list of (path
    relative to ``<data>``, size, modification and change times in ns, inode): the same file
    list reuses it, any added, removed, reordered, resized, touched or replaced file (also a
    copy with preserved times) builds a new one. The file is written
    to a temporary name and renamed, so a crash never leaves a truncated cache. Old cache
    files are not deleted (delete the folder to reclaim the space). When the cache cannot be
    written (read-only data) a warning is issued and the array is returned anyway.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("load_image_array: no image paths given")
    base = os.path.dirname(os.path.dirname(os.path.abspath(paths[0])))
    folder = os.fspath(cache_dir) if cache_dir is not None else os.path.join(base, CACHE_DIR_NAME)
    key = _cache_key(paths, base)
    cache = os.path.join(folder, f"images-{len(paths)}-{key[:24]}.npy")
    arr = _try_load(cache, len(paths))
    if arr is not None:
        return arr
    out: np.ndarray | None = None
    first = None
    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        images = read_images(chunk)  # read_image refuses a file above MAX_IMAGE_PIXELS
        if out is None:
            # The shape most of the first chunk has, not the first file's: one odd file (a
            # large photo) is named below instead of sizing an array that cannot be allocated.
            from collections import Counter
            common = Counter(im.shape for im in images).most_common(1)[0][0]
            first = (next(p for p, im in zip(chunk, images) if im.shape == common), common)
            out = np.empty((len(paths),) + common, dtype=np.uint8)
        for k, img in enumerate(images):
            if img.shape != out.shape[1:]:
                raise ValueError(
                    f"images differ in size: {chunk[k]} is {img.shape}, but {first[0]} is "
                    f"{first[1]}; load_image_array needs same-sized images (decode them one "
                    f"by one with read_image instead)")
            out[start + k] = img
    try:
        _save(cache, out)
    except OSError as e:
        warnings.warn(f"could not write the image cache {cache}: {e}", RuntimeWarning, stacklevel=2)
    return out


# --------------------------------------------------------------------------- listing

_DIGITS = re.compile(r"\d+")


def _natural_key(name: str) -> tuple:
    stem = os.path.splitext(name)[0]
    if _DIGITS.fullmatch(stem):
        return (0, int(stem), name)
    return (1, 0, name)


def list_images(folder: str | os.PathLike) -> list[str]:
    """Paths of the files in ``folder``, hidden files (``.DS_Store``) and sub-folders skipped.

    Order: files whose stem is a number come first, in numeric order (``2.png`` before
    ``10.png``, the order of CIFAR-10's Kaggle ids), then the others in plain string order
    (Dog Breed's hex ids, the order of its sample submission).
    """
    folder = os.fspath(folder)
    files = _list_files(folder)
    files.sort(key=lambda f: _natural_key(f[0]))
    return [path for _, path in files]
