"""Batches of uint8 images for every backend: the chapters' DataLoader, without a framework.

A :class:`ImageLoader` yields ``(x, y)`` with ``x`` an N×H×W×3 uint8 array (already
augmented; an :class:`ImageBatch`, which carries the loader's mean/std) and ``y`` int64
labels (``-1`` for unlabelled test images). Randomness comes from
``numpy.random.default_rng([seed, epoch, batch])``: the batches of epoch ``e`` are the same
bytes whichever backend consumes them, in whatever order the worker threads finish, and a
resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .images import read_image

if TYPE_CHECKING:
    from ..parallel.distributed import DistEnv

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class ImageBatch(np.ndarray):
    """A loader's N×H×W×3 pixel batch: a numpy array that also carries ``norm``, the
    ``(mean, std)`` it is to be normalised with, so the book's batch-level helpers
    (``d2l.train_batch_ch13``, ``d2l.split_batch``) can normalise it as the loader's own
    consumers do. Arrays computed from it (slices, MixUp's mix) keep ``norm``."""

    norm: tuple[tuple[float, ...], tuple[float, ...]] | None

    def __array_finalize__(self, obj) -> None:
        self.norm = getattr(obj, "norm", None)


def image_batch(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> ImageBatch:
    """``x`` (no copy) as an :class:`ImageBatch` to be normalised with ``mean``/``std``."""
    out = np.asarray(x).view(ImageBatch)
    out.norm = (tuple(mean), tuple(std))
    return out


class ArraySource:
    """Images already decoded into one N×H×W×3 uint8 array (CIFAR-sized sets)."""

    def __init__(self, array: np.ndarray, index: Sequence[int] | None = None):
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected an N×H×W×3 uint8 array, got {array.dtype} {array.shape}")
        self.array = array
        self.index = np.arange(len(array)) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.index[i]]


class FileSource:
    """Image files decoded on demand (variable-size JPEGs such as Dog Breed)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])


def source_images(loader: "ImageLoader", limit: int = 1024, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` of the loader's images as they are stored (N×H×W×3 uint8, a seeded
    sample in source order, no augmentation): what a data-dependent initialisation reads
    (:func:`d2lkaggle.models.whitening.whiten_first_conv`). Images of different sizes raise a
    ``ValueError``."""
    src, n = loader.source, len(loader.source)
    idx = np.arange(n) if n <= limit else np.sort(
        np.random.default_rng([seed, 0x1A6E]).choice(n, limit, replace=False))
    if isinstance(src, ArraySource):
        return src.array[src.index[idx]]
    images = [src[int(i)] for i in idx]
    if len({im.shape for im in images}) != 1:
        raise ValueError("the training images differ in size; a whitened first layer needs "
                         "images of one size (--no-whiten)")
    return np.stack(images)


class ImageLoader:
    """Seeded, prefetching batch iterator over an image source (the book's DataLoader).

    ``mean``/``std`` travel with the loader so that a backend can normalise the uint8
    batches it receives; ``set_epoch`` selects the shuffle and augmentation stream.
    """

    def __init__(self, source, labels: Sequence[int] | None, batch_size: int, *,
                 transform: Transform | None = None, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 num_workers: int | None = None, prefetch: int = 4, dist: "DistEnv | None" = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        n = len(source)
        self.labels = (np.full(n, -1, dtype=np.int64) if labels is None
                       else np.asarray(labels, dtype=np.int64))
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} images")
        self.batch_size, self.transform = int(batch_size), transform
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, int(seed)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)
        self.prefetch = max(1, int(prefetch))
        self.epoch = 0
        # data parallel (d2lkaggle.parallel.distributed): batch_size stays the global batch, this
        # process yields its shard of each one; the augmentation stream also takes the rank
        self.dist = dist if dist is not None and dist.enabled else None
        if self.dist is not None:
            from ..parallel.distributed import check_batch_size
            check_batch_size(self.batch_size, self.dist)

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        """Examples per epoch (after ``drop_last``)."""
        return len(self) * self.batch_size if self.drop_last else len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentations the next iteration draws."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Example order of ``epoch`` (a seeded permutation when shuffling)."""
        n = len(self.source)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(n)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]
        if self.dist is not None:
            from ..parallel.distributed import shard_batch
            batches = [shard_batch(idx, self.dist) for idx in batches]
        return batches

    def make_batch(self, epoch: int, b: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode and augment one batch; its randomness depends only on (seed, epoch, b)."""
        x, y = self._pixels(epoch, b, idx)
        return image_batch(x, self.mean, self.std), y

    def _pixels(self, epoch: int, b: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, b] + ([self.dist.rank] if self.dist else []))
        if len(idx) == 0:  # a rank's share of a short last evaluation batch (loop.evaluate skips it)
            return np.zeros((0, 1, 1, 3), np.uint8), self.labels[idx]
        if hasattr(self.transform, "epoch_batch"):   # e.g. the record's alternating mirror
            x = (self.source.array[self.source.index[idx]] if isinstance(self.source, ArraySource)
                 else np.stack([self.source[int(i)] for i in idx]))
            return self.transform.epoch_batch(x, rng, idx, epoch, self.seed), self.labels[idx]
        if isinstance(self.source, ArraySource) and hasattr(self.transform, "batch"):
            # same-sized decoded images: the transform runs over the whole batch at once
            x = self.transform.batch(self.source.array[self.source.index[idx]], rng)
            return np.ascontiguousarray(x), self.labels[idx]
        images = []
        for i in idx:
            img = self.source[int(i)]
            if self.transform is not None:
                img = self.transform(img, rng)
            images.append(img)
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"images of a batch differ in shape {sorted(shapes)}; "
                             "give the loader a transform that resizes to one size")
        return np.ascontiguousarray(np.stack(images)), self.labels[idx]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = self.epoch
        self.epoch += 1  # plain ``for`` loops over epochs still get fresh augmentations
        batches = self.batch_indices(epoch)
        if self.num_workers <= 1:
            for b, idx in enumerate(batches):
                yield self.make_batch(epoch, b, idx)
            return
        # PIL and numpy release the GIL, so threads overlap decoding with the training step.
        with ThreadPoolExecutor(self.num_workers) as pool:
            pending = []
            for b, idx in enumerate(batches):
                pending.append(pool.submit(self.make_batch, epoch, b, idx))
                if len(pending) > self.prefetch:
                    yield pending.pop(0).result()
            for fut in pending:
                yield fut.result()
