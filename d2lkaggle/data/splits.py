"""Which labelled images train and which validate: the book's split, k-fold folds, bootstrap bags.

Every split is a seeded choice of ids, the same on every machine whatever order the files were
created or listed in. The book's rule (:func:`split_train_valid`): every class gives the same
number of validation images, ``max(1, floor(n_min * valid_ratio))`` where ``n_min`` is the size
of the rarest class. k-fold cross-validation (:func:`stratified_folds`) and bagging
(:func:`bootstrap_split`) give ``(train_ids, valid_ids)`` pairs that a run takes as ``split=``;
:func:`split_digest` fingerprints one for checkpoints and summaries.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["n_valid_per_label", "split_train_valid", "split_digest", "check_split",
           "bootstrap_split", "stratified_folds"]

_BAG_TAG = 0xBA6


def _check_ratio(valid_ratio: float) -> float:
    try:
        r = float(valid_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"valid_ratio must be a number in [0, 1), got {valid_ratio!r}") from None
    if not (0.0 <= r < 1.0):  # also rejects NaN
        raise ValueError(f"valid_ratio must be in [0, 1), got {valid_ratio!r}")
    return r

def n_valid_per_label(labels: Mapping[str, str], valid_ratio: float) -> int:
    """The book's number of validation images per class: ``max(1, floor(n_min * valid_ratio))``.

    ``n_min`` is the number of images of the rarest class. As in the book the result is at
    least 1, even for ``valid_ratio=0``.
    """
    r = _check_ratio(valid_ratio)
    if not labels:
        raise ValueError("no labels: cannot split an empty label table")
    n_min = min(Counter(labels.values()).values())
    return max(1, math.floor(n_min * r))

def split_train_valid(labels: Mapping[str, str], valid_ratio: float,
                      seed: int = 0) -> tuple[list[str], list[str]]:
    """Split the ids of ``labels`` into ``(train_ids, valid_ids)``, both sorted.

    Every class puts :func:`n_valid_per_label` ids into validation. The choice is made with
    ``numpy.random.default_rng(seed)``: classes are taken in sorted order and, for each, a
    permutation of the class's *sorted* ids picks the first ``n_valid`` of them. It depends
    only on ``labels``, ``valid_ratio`` and ``seed`` — not on dict order or file order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    n_valid = n_valid_per_label(labels, valid_ratio)
    by_class: dict[str, list[str]] = {}
    for key, label in labels.items():
        by_class.setdefault(label, []).append(key)
    rng = np.random.default_rng(int(seed))
    valid: list[str] = []
    for label in sorted(by_class):
        ids = sorted(by_class[label])
        pick = rng.permutation(len(ids))[:n_valid]
        valid.extend(ids[k] for k in pick)
    valid_set = set(valid)
    train = sorted(k for k in labels if k not in valid_set)
    return train, sorted(valid)


def split_digest(split: tuple[Sequence[str], Sequence[str]] | None) -> str | None:
    """A short fingerprint of a given ``(train_ids, valid_ids)`` (repeats count) for the run
    configuration: a resumed member must train on the same images."""
    if split is None:
        return None
    text = json.dumps([[str(i) for i in split[0]], [str(i) for i in split[1]]])
    return f"{len(split[0])}/{len(split[1])}:" + hashlib.sha1(text.encode()).hexdigest()[:16]

def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()[:16]


def data_fingerprint(labels: Mapping[str, str], train_ids: Sequence[str],
                     valid_ids: Sequence[str], images: Sequence[str] | None = None,
                     test_ids: Sequence[str] | None = None, pixels: str | None = None) -> dict[str, str]:
    """What a checkpoint was trained on, as short digests (``count:sha1``): the labels (every
    ``id,label``), the train/valid split, and the image list (the training images' file names
    — or a digest of an archive's ``pixels`` — and the test ids). Stored with every checkpoint
    and in ``summary.json``; reloading a checkpoint of other data is refused."""
    pairs = sorted((str(k), str(v)) for k, v in labels.items())
    split = [[str(i) for i in train_ids], [str(i) for i in valid_ids]]
    image_list = [sorted(str(i) for i in images or ()), [str(i) for i in test_ids or ()], pixels]
    return {"data_labels": f"{len(pairs)}:{_digest(pairs)}",
            "data_split": f"{len(split[0])}/{len(split[1])}:{_digest(split)}",
            "data_images": f"{len(image_list[0]) or len(pairs)}/{len(image_list[1])}:"
                           f"{_digest(image_list)}"}


def check_split(split: tuple[Sequence[str], Sequence[str]],
                labels: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """A given ``(train_ids, valid_ids)`` checked against the label table."""
    train, valid = [str(i) for i in split[0]], [str(i) for i in split[1]]
    unknown = sorted({i for i in train + valid if i not in labels})
    if unknown:
        raise ValueError(f"{len(unknown)} split ids have no label: {', '.join(unknown[:10])}")
    if not train:
        raise ValueError("the split has no training image")
    overlap = sorted(set(train) & set(valid))
    if overlap:
        raise ValueError(f"{len(overlap)} ids are both in training and validation: "
                         + ", ".join(overlap[:10]))
    return train, valid

def bootstrap_split(ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Bagging: ``len(ids)`` ids drawn with replacement (sorted, repeats kept) and the
    out-of-bag ids never drawn (sorted), from ``default_rng([seed, tag])``."""
    ids = sorted(str(i) for i in ids)
    if len(ids) < 2:
        raise ValueError(f"bagging needs at least 2 labelled images, got {len(ids)}")
    draw = np.sort(np.random.default_rng([int(seed), _BAG_TAG]).integers(0, len(ids), len(ids)))
    seen = set(draw.tolist())
    bag = [ids[k] for k in draw]
    oob = [ids[k] for k in range(len(ids)) if k not in seen]
    return bag, oob

def stratified_folds(labels: Mapping[str, str], k: int, seed: int = 0) -> list[list[str]]:
    """K validation folds, each holding every class: the book's per-class rule per fold.

    As in :func:`d2lkaggle.data.reorg.split_train_valid`, classes are taken in sorted order and a
    ``default_rng(seed)`` permutation of each class's sorted ids deals them round-robin into the
    folds (each class's start rotates so the folds' sizes differ by at most one). Every
    labelled image validates exactly once; every fold has ``floor`` or ``ceil`` of
    ``n_class / k`` images of each class, so ``k`` may not exceed the rarest class's count.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"--folds must be an integer >= 2 (K-fold needs two folds), got {k!r}")
    if not labels:
        raise ValueError("no labels: cannot make folds of an empty label table")
    by_class: dict[str, list[str]] = {}
    for key, label in labels.items():
        by_class.setdefault(label, []).append(key)
    rare = min(by_class, key=lambda c: (len(by_class[c]), c))
    if k > len(by_class[rare]):
        raise ValueError(f"--folds {k} is larger than the rarest class ({rare!r} has "
                         f"{len(by_class[rare])} images): every fold must validate on every "
                         f"class; use --folds {len(by_class[rare])} or fewer")
    rng = np.random.default_rng(int(seed))
    folds: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for label in sorted(by_class):
        ids = sorted(by_class[label])
        for j, pick in enumerate(rng.permutation(len(ids))):
            folds[(start + j) % k].append(ids[pick])
        start = (start + len(ids)) % k
    return [sorted(f) for f in folds]
