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

from typing import Sequence

from .images import read_images

__all__ = ["check_test_images", "CHECK_CHUNK"]

#: images decoded per chunk by :func:`check_test_images` (the pixels are dropped after each)
CHECK_CHUNK = 1024


def check_test_images(paths: Sequence[str], shape: tuple[int, ...] | None = None,
                      num_workers: int | None = None, chunk: int = CHECK_CHUNK) -> int:
    """Decode every test image once, keeping none (the chapters' "read the test set" step,
    as a check before training); returns how many were checked.

    With ``shape`` (the training images' ``H×W×3``), every image must have it: a test image of
    another size would otherwise fail only when its batch is stacked, after training.
    A bad file raises :class:`ValueError` naming it.
    """
    paths = list(paths)
    for start in range(0, len(paths), chunk):
        part = paths[start:start + chunk]
        for p, img in zip(part, read_images(part, num_workers)):
            if shape is not None and img.shape != tuple(shape):
                raise ValueError(f"test image {p} is {img.shape}, but the training images are "
                                 f"{tuple(shape)}; resize or remove it (a fixed-size "
                                 f"competition predicts on same-sized images)")
    return len(paths)
