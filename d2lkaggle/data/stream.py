"""Test sets at Kaggle's real size: checked before training, decoded batch by batch after.

CIFAR-10's Kaggle test set is 300,000 PNGs (six times the training set; 921 MB once decoded).
The training images are decoded once into one cached array (:func:`images.load_image_array`);
the test images are not: :func:`check_test_images` decodes every file once before the first
epoch (in chunks, dropping the pixels) so a damaged or odd-sized file is named before hours of
training, and prediction then decodes them again batch by batch through the loader
(:class:`data.FileSource`), so peak memory does not grow with the test set. What does grow is
what the submission itself holds: the ids and one row of class probabilities per image
(300,000 × 10 float32 = 12 MB).
"""
from __future__ import annotations

import os
from typing import Sequence

from .images import _natural_key, read_image, read_images

__all__ = ["check_test_images", "scan_ids", "FolderSource", "CHECK_CHUNK"]

#: images decoded per chunk by :func:`check_test_images` (the pixels are dropped after each)
CHECK_CHUNK = 1024


def scan_ids(folder: str, ordered: bool = True) -> dict[str, str]:
    """``{id: extension}`` of the image files of ``folder`` — in :func:`images.list_images`
    order (numeric ids first) unless ``ordered=False`` — without holding 300,000 full paths.
    Two files with one id (``3.png`` and ``3.jpg``) raise :class:`ValueError` naming both."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    out: dict[str, str] = {}
    exts: dict[str, str] = {}   # one string object per extension, not one per file
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file():
                continue
            stem, ext = os.path.splitext(e.name)
            if stem in out:
                a, b = sorted((stem + out[stem], e.name))
                raise ValueError(f"{folder}: two files with the id {stem!r}: {a!r} and "
                                 f"{b!r}; keep one")
            out[stem] = exts.setdefault(ext, ext)
    if ordered:
        out = {k: out[k] for k in sorted(out, key=lambda k: _natural_key(k + out[k]))}
    return out


class FolderSource:
    """Test images ``folder/<id><ext>`` decoded on demand, holding only the ids (which the
    submission holds anyway) and the extensions that differ from the common one."""

    def __init__(self, folder: str, ids: Sequence[str], exts: dict[str, str]):
        from collections import Counter
        self.folder, self.ids = os.fspath(folder), list(ids)
        common = Counter(exts[i] for i in self.ids).most_common(1)
        self.ext = common[0][0] if common else ""
        self.other = {i: exts[i] for i in self.ids if exts[i] != self.ext}

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, i: int) -> str:
        """Path of image ``i``."""
        ident = self.ids[i]
        return os.path.join(self.folder, ident + self.other.get(ident, self.ext))

    @property
    def paths(self) -> list[str]:
        """Every path, in order (built on demand)."""
        return [self.path(i) for i in range(len(self))]

    def __getitem__(self, i: int):
        return read_image(self.path(i))


def check_test_images(paths: "Sequence[str] | FolderSource", shape: tuple[int, ...] | None = None,
                      num_workers: int | None = None, chunk: int = CHECK_CHUNK) -> int:
    """Decode every test image once, keeping none (the chapters' "read the test set" step,
    as a check before training); returns how many were checked.

    With ``shape`` (the training images' ``H×W×3``), every image must have it: a test image of
    another size would otherwise fail only when its batch is stacked, after training.
    A bad file raises :class:`ValueError` naming it.
    """
    n = len(paths)
    for start in range(0, n, chunk):
        part = ([paths.path(i) for i in range(start, min(n, start + chunk))]
                if isinstance(paths, FolderSource) else list(paths[start:start + chunk]))
        for p, img in zip(part, read_images(part, num_workers)):
            if shape is not None and img.shape != tuple(shape):
                raise ValueError(f"test image {p} is {img.shape}, but the training images are "
                                 f"{tuple(shape)}; resize or remove it (a fixed-size "
                                 f"competition predicts on same-sized images)")
    return n
