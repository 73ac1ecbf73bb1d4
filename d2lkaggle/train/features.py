"""``--cache-features``: the Dog Breed chapter's frozen backbone, run once per image.

The chapter fine-tunes only a small head on a frozen ResNet-34; every epoch it still pushes
every image through the 21 M frozen parameters, to get the same 512 numbers each time —
when the training images are not randomly augmented. With ``cache_features=True``
(``--cache-features``) the core computes each image's backbone features once, stores them,
and trains the head on them; the same optimizer, schedule, batches (same shuffle seed, same
``drop_last``) and checkpoints (the whole net's state: the head's trained weights plus the
unchanged backbone), so the head ends where training on the images would have ended, up to
float rounding. Prediction on the test set uses the whole net on the images, as always.

What the core decides here (no framework code):

* **When it is allowed** — :func:`check_cacheable`: a frozen-backbone ``finetune`` model, no
  MixUp/CutMix (label smoothing only changes the targets: allowed), and a *deterministic*
  training transform (``augment="none"``: resize and centre crop). :func:`cacheable` says
  whether a recipe is such a run: then ``d2lkaggle run`` caches without being asked. Random crops, flips or colour jitter make each epoch's features different,
  so cached ones would be wrong; the run then stops with one line saying to add
  ``--augment none`` (it never silently switches the augmentation off: that would change
  the recipe the user asked for).
* **Where features live and when they are trusted** — :func:`cached_features`: in the
  image cache folder next to the data (``<data>/.d2lkaggle_cache/``, like
  :func:`images.load_image_array`), one ``features-<backend>-<key>.npz`` per backbone: the
  key is a SHA-256 of the backbone's weights (every array's bytes), the transform, the
  normalisation, the backend and the autocast setting; inside, each row is keyed by its
  image's absolute path, size, modification and change times and inode, as the image array
  cache keys its files (:func:`~d2lkaggle.utils.files.file_stamp`). A row is used only for
  exactly that image; a touched, rewritten (even with its old size and mtime put back) or
  replaced image, other weights or another transform compute new features, and a damaged
  file is recomputed. The file is written to a temporary name and
  renamed; a read-only data folder keeps the features in memory (with a warning).

The backends provide the two framework parts, in ``<backend>_impl/features.py``:
``backbone_features(net, x, mean, std, amp)`` (the frozen backbone's pooled features of one
uint8 batch) and ``train_head(net, train_feats, valid_feats, ...)`` (the chapters' ``train``
on feature batches, updating ``net``'s head in place).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data.loader import ImageLoader
from ..utils.files import file_stamp
from ..utils.registry import backend_module

__all__ = ["check_cacheable", "cacheable", "deterministic", "backbone_digest", "feature_key",
           "cached_features", "FeatureLoader", "train_with_cached_features", "uncached_images",
           "time_cached_features",
           "FEATURES_VERSION"]

#: bumped when the way features are computed or keyed changes (old cache files are then not
#: used; 2: rows keyed by ctime and inode too)
FEATURES_VERSION = 2
#: images per batch when computing features
FEATURE_BATCH = 32


def deterministic(transform: Any) -> bool:
    """True when ``transform`` draws no randomness: ``None``, Resize, CenterCrop, or a Compose
    of those (what ``augment="none"`` and the test transforms are)."""
    from ..data.transforms import CenterCrop, Compose, Resize
    if transform is None:
        return True
    if isinstance(transform, Compose):
        return all(deterministic(t) for t in transform.transforms)
    return isinstance(transform, (Resize, CenterCrop))


def cacheable(recipe: Any) -> bool:
    """True when ``recipe`` trains only a head on a frozen ResNet-34 from unaugmented images
    (``augment="none"``, no MixUp/CutMix): cached features then train the same head, so a run
    uses them by default (docs/kaggle_dog.md)."""
    return (getattr(recipe, "model", None) == "finetune"
            and (getattr(recipe, "arch", "resnet34") or "resnet34") == "resnet34"
            and getattr(recipe, "freeze", True) is not False
            and getattr(recipe, "augment", None) == "none"
            and not getattr(recipe, "mixup", 0) and not getattr(recipe, "cutmix", 0))


def check_cacheable(recipe: Any, train_transform: Any, mixing: Any = None) -> None:
    """Refuse ``cache_features`` (ValueError, one line) when cached features would be wrong."""
    model = getattr(recipe, "model", None)
    if model != "finetune":
        raise ValueError(f"--cache-features needs the frozen-backbone model 'finetune' (the Dog "
                         f"Breed chapter's); this run trains {model!r}, whose every layer learns")
    arch = getattr(recipe, "arch", "resnet34") or "resnet34"
    if arch != "resnet34" or getattr(recipe, "freeze", True) is False:
        raise ValueError("--cache-features needs the chapter's frozen ResNet-34 backbone "
                         f"(arch resnet34, frozen); this run has arch {arch!r}"
                         + (", unfrozen" if getattr(recipe, "freeze", True) is False else ""))
    mixes = getattr(mixing, "mixup_alpha", 0) or getattr(mixing, "cutmix_alpha", 0)
    if mixes or getattr(recipe, "mixup", 0) or getattr(recipe, "cutmix", 0):   # (smoothing: fine)
        raise ValueError("--cache-features cannot be combined with MixUp/CutMix: mixed images "
                         "have other features than their parts; drop --mixup/--cutmix")
    if not deterministic(train_transform):
        raise ValueError(f"--cache-features needs unaugmented training images: the training "
                         f"transform {train_transform!r} is random, so every epoch's features "
                         f"differ; add --augment none (resize + centre crop)")


def frozen_head_net(net: Any, module_type: type) -> Any:
    """``net`` when it is a frozen-backbone net with a ``head`` of ``module_type`` (the
    chapter's fine-tune net), else :class:`ValueError`; each backend passes its module class."""
    if not (getattr(net, "frozen", False) and isinstance(getattr(net, "head", None), module_type)):
        raise ValueError("cached features need a frozen-backbone net with a 'head' "
                         "(finetune_net(..., freeze=True))")
    return net


def backbone_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The backbone's entries of a net's state (everything outside ``head.``): the cache key."""
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def backbone_digest(state: dict[str, np.ndarray]) -> str:
    """SHA-256 over the backbone's arrays (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.ascontiguousarray(state[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _identity(path: str) -> str:
    # keyed like the image array cache (data.images): size, mtime, ctime and inode
    return "|".join([os.path.abspath(path), *map(str, file_stamp(path))])


def feature_key(weights_digest: str, transform: Any, **settings: Any) -> dict[str, Any]:
    """What every image's features depend on besides the image itself, as a JSON-ready dict:
    the backbone's weights, the transform and ``settings`` (backend, precision, normalisation).
    Its hash names the cache file; each row in it is keyed by its image's path, size,
    modification and change times and inode."""
    return json.loads(json.dumps({"version": FEATURES_VERSION, "weights": weights_digest,
                                  "transform": repr(transform), **settings},
                                 sort_keys=True, default=str))


def _cache_folder(paths: Sequence[str]) -> str:
    from ..data.images import CACHE_DIR_NAME
    base = os.path.dirname(os.path.dirname(os.path.abspath(paths[0])))
    return os.path.join(base, CACHE_DIR_NAME)


def _load_bank(path: str, key: dict[str, Any]) -> tuple[np.ndarray, list[str]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            rows, ids = z["rows"], [str(i) for i in z["ids"]]
    except (OSError, ValueError, EOFError, KeyError):   # missing or damaged: recomputed
        return None
    if (rows.dtype != np.float32 or rows.ndim != 2 or len(rows) != len(ids)
            or not np.isfinite(rows).all()):
        return None
    return rows, ids


def _bank_path(paths: Sequence[str], key: dict[str, Any], backend: str,
               cache_dir: str | None = None) -> str:
    """The cache file of ``key`` for images ``paths`` (one file per backbone and transform)."""
    folder = cache_dir or _cache_folder(paths)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return os.path.join(folder, f"features-{backend}-{digest}.npz")


def cached_features(paths: Sequence[str], compute: Callable[[np.ndarray], np.ndarray],
                    transform: Any, key: dict[str, Any], backend: str,
                    cache_dir: str | None = None, num_workers: int | None = None,
                    log: Callable[[str], Any] | None = None,
                    record: dict[str, Any] | None = None) -> np.ndarray:
    """The features (float32, one row per path, in order) of the images ``paths`` seen through
    ``transform``. Rows whose image (path, size, mtime, ctime, inode) is in the cache file of
    ``key`` are read; the others are computed with ``compute(uint8 batch)`` over batches of
    :data:`FEATURE_BATCH` images and added to the file (written atomically), so the train,
    validation and retrain phases compute each image once. ``record`` (a dict) adds up the
    seconds (``features_s``) and the images computed and read (``features_computed``,
    ``features_cached``)."""
    from ..data.loader import FileSource
    from ..utils.files import atomic_open
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("cache_features: no images")
    t0 = time.perf_counter()
    bank_path = _bank_path(paths, key, backend, cache_dir)
    folder = os.path.dirname(bank_path)
    ids = [_identity(p) for p in paths]
    bank = _load_bank(bank_path, key)
    rows, known = bank if bank is not None else (None, [])
    where = {ident: k for k, ident in enumerate(known)}
    todo = [k for k, ident in enumerate(ids) if ident not in where]
    if record is not None:
        record["features_cached"] = record.get("features_cached", 0) + len(paths) - len(todo)
        record["features_computed"] = record.get("features_computed", 0) + len(todo)
    if not todo:
        if log:
            log(f"backbone features of {len(paths)} images from {bank_path}")
        _add_seconds(record, t0)
        return rows[[where[i] for i in ids]]
    loader = ImageLoader(FileSource([paths[k] for k in todo]), None, FEATURE_BATCH,
                         transform=transform, num_workers=num_workers)
    new: list[np.ndarray] = [np.asarray(compute(x), dtype=np.float32).reshape(len(x), -1)
                             for x, _ in loader]
    fresh = np.concatenate(new)
    seconds = time.perf_counter() - t0
    if not np.isfinite(fresh).all():
        raise FloatingPointError("the backbone gave non-finite features; check its weights")
    if rows is not None and rows.shape[1] != fresh.shape[1]:
        rows, known, where = None, [], {}
    all_rows = fresh if rows is None else np.concatenate([rows, fresh])
    fresh_ids = [ids[k] for k in todo]
    for j, ident in enumerate(fresh_ids):
        where[ident] = len(known) + j
    all_ids = known + fresh_ids
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_open(bank_path, "wb") as fh:
            np.savez(fh, rows=all_rows, ids=np.array(all_ids, dtype=str),
                     key=np.array(json.dumps(key, sort_keys=True)))
        if log:
            # the backbone's time apart from the head's: the epochs' examples/s are the head's
            log(f"backbone features of {len(todo)} images computed once in {seconds:.1f} s "
                f"({len(todo) / max(seconds, 1e-9):.1f} images/s; {len(paths) - len(todo)} from "
                f"the cache), cached in {bank_path}")
    except OSError as e:
        warnings.warn(f"could not write the feature cache {bank_path}: {e}", RuntimeWarning,
                      stacklevel=2)
    _add_seconds(record, t0)
    return all_rows[[where[i] for i in ids]]


def _add_seconds(record: dict[str, Any] | None, t0: float) -> None:
    if record is not None:
        record["features_s"] = record.get("features_s", 0.0) + time.perf_counter() - t0


class FeatureLoader(ImageLoader):
    """Batches of cached features in exactly the batches an image loader would give: same
    shuffle seed, batch size, ``drop_last`` and epoch stream (``like(loader, features)``)."""

    def __init__(self, features: np.ndarray, labels: Sequence[int] | None, batch_size: int,
                 **kwargs: Any):
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        super().__init__(_Rows(len(self.features)), labels, batch_size, **kwargs)

    @classmethod
    def like(cls, loader: ImageLoader, features: np.ndarray) -> "FeatureLoader":
        """Features ``features`` (one row per example of ``loader.source``) batched like ``loader``."""
        fl = cls(features, loader.labels, loader.batch_size, shuffle=loader.shuffle,
                 drop_last=loader.drop_last, seed=loader.seed, mean=loader.mean, std=loader.std)
        fl.epoch = loader.epoch
        return fl

    def make_batch(self, epoch: int, b: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features[idx], self.labels[idx]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = self.epoch
        self.epoch += 1
        for b, idx in enumerate(self.batch_indices(epoch)):   # fancy indexing: no threads
            yield self.make_batch(epoch, b, idx)


class _Rows:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _paths_of(loader: Any) -> list[str]:
    paths = getattr(getattr(loader, "source", None), "paths", None)
    if paths is None:
        raise ValueError("--cache-features needs image files (a Kaggle folder layout such as "
                         "Dog Breed's); this loader holds decoded arrays")
    return list(paths)


def _backbone(bk: Any, net: Any, amp: Any, backend: str | None) -> tuple[Any, str, str, bool]:
    """(the wing's features module, backend name, digest of the backbone's weights, autocast)."""
    feats_mod = backend_module(bk, "features")
    name = backend or getattr(bk, "NAME", "backend")
    return feats_mod, name, backbone_digest(feats_mod.backbone_state(net)), feats_mod.uses_amp(net, amp)


def _loader_key(loader: ImageLoader, digest: str, name: str, amp_on: bool) -> dict[str, Any]:
    if not deterministic(loader.transform):
        raise ValueError(f"--cache-features: the transform {loader.transform!r} is random")
    return feature_key(digest, loader.transform, backend=name, amp=amp_on,
                       mean=list(loader.mean), std=list(loader.std))


def uncached_images(bk: Any, net: Any, loaders: Sequence[Any], *, backend: str | None = None,
                    amp: Any = "auto", cache_dir: str | None = None) -> int:
    """How many distinct images of ``loaders`` (``None`` entries skipped) have no cached
    features for ``net``'s backbone: what :func:`train_with_cached_features` will compute
    before the first epoch (the estimate of a run counts them)."""
    _, name, digest, amp_on = _backbone(bk, net, amp, backend)
    todo: set[tuple[str, str]] = set()
    for loader in loaders:
        if loader is None:
            continue
        paths = _paths_of(loader)
        key = _loader_key(loader, digest, name, amp_on)
        bank_path = _bank_path(paths, key, name, cache_dir)
        bank = _load_bank(bank_path, key)
        known = set(bank[1]) if bank is not None else set()
        todo |= {(bank_path, i) for i in map(_identity, paths) if i not in known}
    return len(todo)


def train_with_cached_features(bk: Any, net: Any, train_iter: ImageLoader,
                               valid_iter: ImageLoader | None, num_epochs: int, lr: float,
                               wd: float, devices: Any = None, *, amp: Any = "auto",
                               backend: str | None = None, cache_dir: str | None = None,
                               log: Callable[[str], Any] | None = print,
                               record: dict[str, Any] | None = None,
                               **train_kwargs: Any) -> Any:
    """``bk.train(net, train_iter, valid_iter, ...)`` for a frozen-backbone net, with each
    image's backbone features computed once (or read from the cache) and the head trained on
    them (the Dog Breed chapter's training step, ``--cache-features``); returns the history.
    ``net``'s head is trained in place, so it predicts on images afterwards as usual.
    ``record`` (a dict) receives the features' seconds and counts (see :func:`cached_features`):
    the history's examples/s are the head's alone."""
    check_cacheable(_NetRecipe(net), train_iter.transform, train_kwargs.get("mixing"))
    feats_mod, name, digest, amp_on = _backbone(bk, net, amp, backend)
    compute = lambda x: feats_mod.backbone_features(net, x, train_iter.mean,  # noqa: E731
                                                    train_iter.std, amp=amp_on)

    def features_of(loader: ImageLoader) -> np.ndarray:
        key = _loader_key(loader, digest, name, amp_on)
        return cached_features(_paths_of(loader), compute, loader.transform, key, name,
                               cache_dir, num_workers=loader.num_workers, log=log,
                               record=record)

    train_f = FeatureLoader.like(train_iter, features_of(train_iter))
    valid_f = FeatureLoader.like(valid_iter, features_of(valid_iter)) if valid_iter is not None else None
    return feats_mod.train_head(net, train_f, valid_f, num_epochs, lr, wd, devices, amp=amp_on,
                                log=log, **train_kwargs)


def time_cached_features(bk: Any, net: Any, loader: ImageLoader, lr: float, wd: float, *,
                         backend: str | None = None, amp: Any = "auto", timed: int = 3,
                         warmup: int = 2, make_tricks: Callable[[Any], dict[str, Any]] | None = None,
                         **train_kwargs: Any) -> tuple[float, float, float, int]:
    """What a cached-features run costs, timed on ``net`` (a throwaway: its head is trained):
    ``(seconds per image of the backbone's features, decoding included; seconds per head
    batch; seconds of an epoch's end; the head's batch size)``. The head trains through the
    wing's ``train_head`` on random features shaped as the backbone's, batched as
    ``loader`` batches; ``make_tricks(feature_loader)`` gives its schedule and optimizer
    keywords, as the run builds them."""
    from ..data.loader import FileSource
    from .estimate import FirstBatches, time_training
    feats_mod = backend_module(bk, "features")
    amp_on = feats_mod.uses_amp(net, amp)
    feature_batches = min(timed, 2)   # a backbone of 21 M parameters: a few images say enough
    paths = _paths_of(loader)[:(1 + feature_batches) * FEATURE_BATCH]
    images = ImageLoader(FileSource(paths), None, FEATURE_BATCH, transform=loader.transform,
                         num_workers=loader.num_workers)
    t0, n, dim = 0.0, 0, 0
    for b, (x, _) in enumerate(FirstBatches(images, 1 + feature_batches)):
        dim = np.asarray(feats_mod.backbone_features(net, x, loader.mean, loader.std,
                                                     amp=amp_on)).reshape(len(x), -1).shape[1]
        if b == 0:   # the first batch builds kernels: untimed
            t0 = time.perf_counter()
        else:
            n += len(x)
    feature_s = (time.perf_counter() - t0) / max(1, n)
    rows = min(len(loader.source), (warmup + timed) * loader.batch_size)
    feats = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    head = FeatureLoader(feats, loader.labels[:rows], loader.batch_size, shuffle=loader.shuffle,
                         drop_last=loader.drop_last and rows >= loader.batch_size,
                         seed=loader.seed, mean=loader.mean, std=loader.std)
    extra = make_tricks(head) if make_tricks is not None else {}
    train_kwargs.pop("amp", None)
    batch_s, end_s = time_training(
        lambda *a, **kw: feats_mod.train_head(*a, amp=amp_on, **kw), net, head, timed=timed,
        warmup=warmup, lr=lr, wd=wd, **{**train_kwargs, **extra})
    return feature_s, batch_s, end_s, head.batch_size


class _NetRecipe:
    """What :func:`check_cacheable` asks of a recipe, read off a built net."""

    def __init__(self, net: Any):
        frozen = bool(getattr(net, "frozen", False))
        self.model = "finetune" if frozen and hasattr(net, "head") else type(net).__name__
        self.arch, self.freeze = "resnet34", frozen
