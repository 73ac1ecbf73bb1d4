"""Loading a competition: labels, the train/valid split and the four loaders of a chapter.

The chapters' first steps: read the labels file, split train/valid (in memory, the book's rule),
check every image, and build the loaders (training, validation, training on all labels, test).
A CIFAR python archive is a data source too (:mod:`d2lkaggle.data.cifar`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..data.cifar import CifarArrays, find_cifar_archive, read_cifar_archive
from ..data.images import check_images, list_images, load_image_array, read_images
from ..data.labels import class_names, read_csv_labels
from ..data.loader import ArraySource, FileSource, ImageLoader
from ..data.splits import check_split, data_fingerprint, split_train_valid
from ..data.transforms import PRESETS, preset_transforms
from ..parallel.distributed import shard
from ..specs.competitions import Competition
from ..specs.recipe import Recipe
from .preflight import check_settings


@dataclass
class CompetitionData:
    """The four loaders of a chapter plus what the submission needs."""

    train_iter: ImageLoader
    valid_iter: ImageLoader | None
    train_valid_iter: ImageLoader
    test_iter: ImageLoader
    classes: list[str]
    test_ids: list[str]
    test_labels: np.ndarray | None = None  # known for the CIFAR python archives' test split
    valid_ids: list[str] | None = None  # the rows of valid_iter, in order (ensembles)
    fingerprint: dict[str, str] | None = None   # labels, split, image list (checkpoints record it)
    notes: list[str] | None = None      # what loading changed or left out, said before training

def _images_by_id(folder: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    out: dict[str, str] = {}
    for p in list_images(folder):
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in out:  # 3.png and 3.jpg: which one is image 3?
            raise ValueError(f"{folder}: two files with the id {stem!r}: "
                             f"{os.path.basename(out[stem])!r} and {os.path.basename(p)!r}; "
                             f"keep one")
        out[stem] = p
    return out

def _check_ids(labels: dict[str, str], images: dict[str, str], labels_path: str, folder: str) -> None:
    no_image = sorted(set(labels) - set(images))
    no_label = sorted(set(images) - set(labels))
    for what, ids, where in (("ids without an image", no_image, folder),
                             ("images without a label", no_label, labels_path)):
        if ids:
            raise ValueError(f"{len(ids)} {what} (checked against {where}): "
                             + ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""))

def test_ids(comp: Competition, data_dir: str, notes: list[str] | None = None) -> list[str]:
    """Test ids in submission order: the sample file's order when present, else natural order.

    A sample file that repeats an id is an error naming the file and the lines; test images the
    sample does not list get no prediction, which ``notes`` (when given) says."""
    from ..data.stream import scan_ids  # {id: extension}: no 300,000 full paths held
    sample = os.path.join(data_dir, comp.sample_file)
    images = scan_ids(os.path.join(data_dir, comp.test_dir), ordered=not os.path.exists(sample))
    if os.path.exists(sample):
        import pandas as pd
        # keep_default_na=False: the ids "NA", "null", "nan" are ids, not missing values
        ids = pd.read_csv(sample, dtype=str, usecols=[0], keep_default_na=False,
                          na_filter=False).iloc[:, 0].str.strip().tolist()
        first: dict[str, int] = {}
        for line, i in enumerate(ids, start=2):
            if i in first:
                raise ValueError(f"{sample}, line {line}: duplicate id {i!r} (first on line "
                                 f"{first[i]}); a submission has one row per test image")
            first[i] = line
        missing = [i for i in ids if i not in images]
        if missing:
            raise ValueError(f"{len(missing)} ids of {sample} have no image in "
                             f"{os.path.join(data_dir, comp.test_dir)}: {', '.join(missing[:10])}")
        unlisted = [i + images[i] for i in images if i not in first]
        if unlisted and notes is not None:
            notes.append(f"note: {len(unlisted)} images of {os.path.join(data_dir, comp.test_dir)} "
                         f"are not in {comp.sample_file} and get no prediction: "
                         + ", ".join(sorted(unlisted)[:10]) + (" ..." if len(unlisted) > 10 else ""))
        return ids
    return list(images)

def load_data(comp: Competition, data_dir: str, *, batch_size: int, valid_ratio: float,
              image_size: int | None = None, seed: int = 0,
              num_workers: int | None = None, augment: Any = None,
              label_kind: str | None = None, split: Any = None) -> CompetitionData:
    """Read labels, split train/valid (in memory, the book's rule) and build the loaders.

    ``augment`` is a preset name (``book`` — the default —, ``crop-flip``,
    ``crop-flip-rotate``, ``none``; see :func:`d2lkaggle.data.transforms.preset_transforms`) or your
    own ``(train_transform, test_transform)`` pair of ``t(image, rng) -> image`` callables.
    ``data_dir`` is the Kaggle folder layout or a CIFAR python archive (``.tar.gz``, its
    extracted folder, or a folder holding it; see :mod:`d2lkaggle.data.cifar`).
    ``split=(train_ids, valid_ids)`` replaces the book's split (k-fold, bagging).
    """
    check_settings(SimpleNamespace(valid_ratio=valid_ratio, batch_size=batch_size), image_size)
    archive = find_cifar_archive(data_dir)
    if archive is not None:
        arrays = read_cifar_archive(archive, label_kind or "fine")
        return load_array_data(comp, arrays, batch_size=batch_size, valid_ratio=valid_ratio,
                               image_size=image_size, seed=seed, num_workers=num_workers,
                               augment=augment, split=split)
    if label_kind not in (None, "fine"):
        raise ValueError(f"--label-kind {label_kind} needs a CIFAR-100 python archive "
                         f"(cifar-100-python.tar.gz); {data_dir} is a folder layout with one label "
                         "per image")
    size = int(image_size or comp.image_size)
    labels_path = os.path.join(data_dir, comp.labels_file)
    notes: list[str] = []
    labels = read_csv_labels(labels_path, notes=notes)
    check_settings(SimpleNamespace(valid_ratio=valid_ratio, batch_size=batch_size), image_size)
    train_folder = os.path.join(data_dir, comp.train_dir)
    images = _images_by_id(train_folder)
    _check_ids(labels, images, labels_path, train_folder)
    classes = class_names(labels)
    index = {c: i for i, c in enumerate(classes)}
    ids = sorted(labels)
    y = np.array([index[labels[i]] for i in ids], dtype=np.int64)
    pos = {i: k for k, i in enumerate(ids)}
    tr_ids, va_ids = split_train_valid(labels, valid_ratio, seed) if valid_ratio > 0 else (ids, [])
    if split is not None:  # (train_ids, valid_ids) of k-fold or bagging; train ids may repeat
        tr_ids, va_ids = check_split(split, labels)
    t_ids = test_ids(comp, data_dir, notes)
    test_images = None if comp.fixed_size else _images_by_id(os.path.join(data_dir, comp.test_dir))
    if comp.fixed_size:
        # CIFAR-sized images: decode each PNG once into one cached array.
        train_array = load_image_array([images[i] for i in ids])
        # The test set streams (Kaggle's is 300,000 PNGs, 6x the training set): every file is
        # decoded once now, in chunks, to name a bad one before training; prediction decodes
        # it again batch by batch, so memory does not grow with the test set.
        from ..data.stream import FolderSource, check_test_images, scan_ids
        test_dir = os.path.join(data_dir, comp.test_dir)
        test_source = FolderSource(test_dir, t_ids, scan_ids(test_dir, ordered=False))
        check_test_images(test_source, train_array.shape[1:], num_workers)
        make = lambda sel: ArraySource(train_array, [pos[i] for i in sel])  # noqa: E731
    else:
        # Every file is checked now, not when an epoch (or the prediction after training)
        # first decodes it; test images are decoded once in full for the same reason.
        check_images([images[i] for i in ids], num_workers=num_workers)
        check_images([test_images[i] for i in t_ids], num_workers=num_workers)
        _decode_all([test_images[i] for i in t_ids], num_workers)
        make = lambda sel: FileSource([images[i] for i in sel])  # noqa: E731
        test_source = FileSource([test_images[i] for i in t_ids])
    train_tf, test_tf = augment_transforms(comp, size, augment)
    common = dict(batch_size=batch_size, mean=comp.mean, std=comp.std, num_workers=num_workers)
    sel_y = lambda sel: y[[pos[i] for i in sel]]  # noqa: E731
    # Like the book: shuffle and drop the last partial batch when training; keep all when testing.
    train_iter = ImageLoader(make(tr_ids), sel_y(tr_ids), transform=train_tf, shuffle=True,
                             drop_last=len(tr_ids) >= batch_size, seed=seed, **common)
    valid_iter = (ImageLoader(make(va_ids), sel_y(va_ids), transform=test_tf, **common)
                  if va_ids else None)
    train_valid_iter = ImageLoader(make(ids), y, transform=train_tf, shuffle=True,
                                   drop_last=len(ids) >= batch_size, seed=seed + 1, **common)
    test_iter = ImageLoader(test_source, None, transform=test_tf, **common)
    names = [os.path.relpath(images[i], train_folder) for i in ids]
    return CompetitionData(train_iter, valid_iter, train_valid_iter, test_iter, classes, t_ids,
                           valid_ids=list(va_ids),
                           fingerprint=data_fingerprint(labels, tr_ids, va_ids, names, t_ids),
                           notes=notes)

def augment_transforms(comp: Competition, size: int, augment: Any = None) -> tuple[Any, Any]:
    """(train, test) transforms for ``augment``: None/preset name, or a user's pair."""
    if augment is None or isinstance(augment, str):
        return preset_transforms(augment or "book", size, book=comp.augment)
    if (isinstance(augment, (tuple, list)) and len(augment) == 2
            and all(t is None or callable(t) for t in augment)):
        return augment[0], augment[1]
    raise ValueError(f"augment must be a preset name ({', '.join(PRESETS)}) or a "
                     f"(train_transform, test_transform) pair, got {augment!r}")

def load_array_data(comp: Competition, arrays: CifarArrays, *, batch_size: int,
                    valid_ratio: float, image_size: int | None = None, seed: int = 0,
                    num_workers: int | None = None, augment: Any = None,
                    split: Any = None) -> CompetitionData:
    """The four loaders from a CIFAR archive held in memory (:func:`d2lkaggle.data.cifar.read_cifar_archive`).

    The same steps as :func:`load_data`: the book's per-class train/valid split of the training
    images (ids ``1..N``), test ids ``1..M`` in archive order (the Kaggle CIFAR-10 submission
    format) — and the test labels, which the archives publish, for a test accuracy.
    """
    if comp.name not in ("cifar10", "cifar100"):
        raise ValueError(f"{arrays.source} is a CIFAR python archive; run it as competition "
                         f"{arrays.kind!r}, not {comp.name!r}")
    if comp.name != arrays.kind:
        raise ValueError(f"{arrays.source} holds {arrays.kind.upper().replace('CIFAR', 'CIFAR-')}"
                         f"; run it as competition {arrays.kind!r}, not {comp.name!r}")
    size = int(image_size or comp.image_size)
    n = len(arrays.train_x)
    if n == 0 or len(arrays.test_x) == 0:
        raise ValueError(f"{arrays.source}: no training or no test images")
    ids = [str(i + 1) for i in range(n)]
    labels = {i: arrays.classes[c] for i, c in zip(ids, arrays.train_y)}
    if split is not None:  # k-fold or bagging
        tr_ids, va_ids = check_split(split, labels)
    else:
        tr_ids, va_ids = split_train_valid(labels, valid_ratio, seed) if valid_ratio > 0 else (ids, [])
    tr, va = [int(i) - 1 for i in tr_ids], [int(i) - 1 for i in va_ids]
    train_tf, test_tf = augment_transforms(comp, size, augment)
    common = dict(batch_size=batch_size, mean=comp.mean, std=comp.std, num_workers=num_workers)
    y = arrays.train_y
    train_iter = ImageLoader(ArraySource(arrays.train_x, tr), y[tr], transform=train_tf,
                             shuffle=True, drop_last=len(tr) >= batch_size, seed=seed, **common)
    valid_iter = (ImageLoader(ArraySource(arrays.train_x, va), y[va], transform=test_tf, **common)
                  if va else None)
    train_valid_iter = ImageLoader(ArraySource(arrays.train_x), y, transform=train_tf, shuffle=True,
                                   drop_last=n >= batch_size, seed=seed + 1, **common)
    # Labels stay off the test loader: prediction treats it as the unlabelled Kaggle test set.
    test_iter = ImageLoader(ArraySource(arrays.test_x), None, transform=test_tf, **common)
    import hashlib
    pixels = hashlib.sha1(np.ascontiguousarray(arrays.train_x).data).hexdigest()[:16]
    t_ids = [str(i + 1) for i in range(len(arrays.test_x))]
    return CompetitionData(train_iter, valid_iter, train_valid_iter, test_iter, list(arrays.classes),
                           t_ids, test_labels=arrays.test_y, valid_ids=list(va_ids),
                           fingerprint=data_fingerprint(labels, tr_ids, va_ids, None, t_ids, pixels))

def normalized(comp: Competition, recipe: Recipe) -> Competition:
    """``comp`` with ImageNet's mean/std when the recipe asks for them (pretrained backbones),
    or the speed-run record's CIFAR-10 statistics (``normalize="airbench"``)."""
    from ..data.transforms import AIRBENCH_MEAN, AIRBENCH_STD, IMAGENET_MEAN, IMAGENET_STD
    stats = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "airbench": (AIRBENCH_MEAN, AIRBENCH_STD)}
    if recipe.normalize not in stats:
        return comp
    mean, std = stats[recipe.normalize]
    return replace(comp, mean=tuple(mean), std=tuple(std))

def training_set_size(comp: Competition, data_dir: str, valid_ratio: float,
                       split: Any = None) -> int | None:
    """Images the training phase will see, counted from the labels file before any decoding
    (``None`` when only loading can tell: an archive, or a labels file that is missing)."""
    if split is not None:
        return len(split[0])
    if find_cifar_archive(data_dir) is not None:
        return None
    try:
        with open(os.path.join(data_dir, comp.labels_file), "rb") as f:
            n = max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return None    # load_data names the missing file
    return n - int(n * valid_ratio)

def loading_line(comp: Competition, data_dir: str) -> str:
    """The run's first line, said before anything is read: what is loaded from where and how
    many images (counted from the labels file and the test folder's listing, no decoding), so
    a run of 300,000 test images shows life before the minutes its loading takes."""
    archive = find_cifar_archive(data_dir)
    if archive is not None:
        return f"loading {comp.name} from the CIFAR python archive {archive}"
    labels = os.path.join(data_dir, comp.labels_file)
    try:
        with open(labels, "rb") as f:
            n_train = max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        n_train = None    # load_data names the missing file
    test_dir = os.path.join(data_dir, comp.test_dir)
    try:
        with os.scandir(test_dir) as it:
            n_test = sum(1 for e in it if not e.name.startswith("."))
    except OSError:
        n_test = None
    how = ("the training images decoded into memory (cached next to the data for the next "
           "run), every test image checked" if comp.fixed_size
           else "every image decoded once to check it")
    count = lambda n: "?" if n is None else str(n)  # noqa: E731
    return (f"loading {comp.name} from {data_dir}: {count(n_train)} labelled images "
            f"({comp.labels_file}, {comp.train_dir}/) and {count(n_test)} test images "
            f"({comp.test_dir}/); {how}")

def _decode_all(paths: list[str], num_workers: int | None, chunk: int = 256) -> None:
    """Decode every file once (and drop the pixels): a damaged image fails before training."""
    for i in range(0, len(paths), chunk):
        read_images(paths[i:i + chunk], num_workers)


def shard_data(data: CompetitionData, env) -> CompetitionData:
    """The training and validation loaders sharded over the ranks (the test loader stays
    whole: rank 0 predicts every test image)."""
    if not env.enabled:
        return data
    return replace(data, train_iter=shard(data.train_iter, env),
                   valid_iter=shard(data.valid_iter, env) if data.valid_iter is not None else None,
                   train_valid_iter=shard(data.train_valid_iter, env))
