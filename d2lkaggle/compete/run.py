"""A whole competition as the chapters run it: files → split → train/validate → retrain → submit.

Each step is a small named function, so the CLI, the example scripts and the tests call the
same code. No framework is imported here; the backend arrives through the registry.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from ..data.transforms import PRESETS, preset_transforms
from ..utils.files import atomic_write_text
from ..data.cifar import CifarArrays, find_cifar_archive, read_cifar_archive
from ..specs.writeups import cycle_step_size
from .ensembles import split_digest
from ..specs.competitions import Competition, Recipe, get_competition
from ..specs.competitions import recipe_for
from ..specs.tricks import check_recipe, fit_batch_to_set, make_mixing, make_schedule, train_kwargs
from ..specs.tricks import describe as describe_tricks
from ..data.loader import ArraySource, FileSource, ImageLoader
from ..data.images import check_images, list_images, load_image_array, read_images
from ..data.labels import class_names, read_csv_labels
from ..train.loop import History
from ..utils.registry import canonical_name, get_backend
from ..data.reorg import split_train_valid
from .preflight import check_resume, check_settings, prepare_out
from .submission import validate_submission, write_label_submission, write_proba_submission


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


def test_ids(comp: Competition, data_dir: str) -> list[str]:
    """Test ids in submission order: the sample file's order when present, else natural order."""
    from ..data.stream import scan_ids   # {id: extension}: no 300,000 full paths held
    sample = os.path.join(data_dir, comp.sample_file)
    images = scan_ids(os.path.join(data_dir, comp.test_dir), ordered=not os.path.exists(sample))
    if os.path.exists(sample):
        import pandas as pd
        # keep_default_na=False: the ids "NA", "null", "nan" are ids, not missing values
        ids = pd.read_csv(sample, dtype=str, usecols=[0], keep_default_na=False,
                          na_filter=False).iloc[:, 0].str.strip().tolist()
        missing = [i for i in ids if i not in images]
        if missing:
            raise ValueError(f"{len(missing)} ids of {sample} have no image in "
                             f"{os.path.join(data_dir, comp.test_dir)}: {', '.join(missing[:10])}")
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
    labels = read_csv_labels(labels_path)
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
        from .ensembles import check_split
        tr_ids, va_ids = check_split(split, labels)
    t_ids = test_ids(comp, data_dir)
    test_images = None if comp.fixed_size else _images_by_id(os.path.join(data_dir, comp.test_dir))
    if comp.fixed_size:
        # CIFAR-sized images: decode each PNG once into one cached array.
        train_array = load_image_array([images[i] for i in ids])
        # The test set streams (Kaggle's is 300,000 PNGs, 6x the training set): every file is
        # decoded once now, in chunks, to name a bad one before training; prediction decodes
        # it again batch by batch, so memory does not grow with the test set (issue 15).
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
    return CompetitionData(train_iter, valid_iter, train_valid_iter, test_iter, classes, t_ids,
                           valid_ids=list(va_ids))


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
        from .ensembles import check_split
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
    return CompetitionData(train_iter, valid_iter, train_valid_iter, test_iter, list(arrays.classes),
                           [str(i + 1) for i in range(len(arrays.test_x))],
                           test_labels=arrays.test_y, valid_ids=list(va_ids))


def check_keep(recipe: Recipe) -> None:
    """``keep`` is ``"last"`` (the chapters: retrain, predict with the last epoch) or ``"best"``."""
    if recipe.keep not in ("last", "best"):
        raise ValueError(f"recipe keep={recipe.keep!r}; choose 'last' or 'best'")
    if recipe.normalize not in ("competition", "imagenet"):
        raise ValueError(f"recipe normalize={recipe.normalize!r}; choose 'competition' or 'imagenet'")


def normalized(comp: Competition, recipe: Recipe) -> Competition:
    """``comp`` with ImageNet's mean/std when the recipe asks for them (pretrained backbones)."""
    if recipe.normalize != "imagenet":
        return comp
    from dataclasses import replace
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
    return replace(comp, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD))


def labelled_test_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of predicted probabilities against known test labels."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
    return {"test_acc": float((probs.argmax(axis=1) == labels).mean()),
            "test_loss": float(-np.log(p).mean())}


def build_net(backend, recipe: Recipe, num_classes: int, image_size: int | None = None):
    """The recipe's model in ``backend``, by its model-table name (``backend.create_model``):
    the book's ResNet-18, the ResNet-34 fine-tune net, cnn_elu, EfficientNetV2 ..."""
    from ..models.table import recipe_kwargs
    return backend.create_model(recipe.model, num_classes, **recipe_kwargs(recipe, image_size))


def write_submission(comp: Competition, data_dir: str, probs: np.ndarray, data: CompetitionData,
                     path: str) -> str:
    """Write (and validate against the sample file, when present) the competition's submission."""
    sample = os.path.join(data_dir, comp.sample_file)
    sample = sample if os.path.exists(sample) else None
    if comp.submission == "label":
        labels = [data.classes[k] for k in probs.argmax(axis=1)]
        write_label_submission(data.test_ids, labels, path, sample=sample,
                               id_column=comp.id_column, label_column=comp.label_column)
    else:
        write_proba_submission(data.test_ids, probs, data.classes, path, sample=sample,
                               id_column=comp.id_column)
    if sample:
        validate_submission(path, sample, kind=comp.submission)
    return path


def _training_set_size(comp: Competition, data_dir: str, valid_ratio: float,
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


def run_competition(competition: str | Competition, data_dir: str, *, backend: str = "torch",
                    out: str | None = None, epochs: int | None = None,
                    batch_size: int | None = None, lr: float | None = None,
                    wd: float | None = None, lr_period: int | None = None,
                    lr_decay: float | None = None, valid_ratio: float | None = None,
                    image_size: int | None = None, weights: str | None = None,
                    retrain: bool = True, seed: int = 0, resume: bool = False,
                    progress: bool = True, num_workers: int | None = None, amp: Any = "auto",
                    log: Callable[[str], Any] | None = print,
                    label_kind: str | None = None, model: str | None = None,
                    recipe: str | Recipe = "default", tta: Any = None,
                    split: tuple[Any, Any] | None = None, predict_with: str | None = None,
                    overwrite: bool = False, distributed: Any = None,
                    **tricks: Any) -> dict[str, Any]:
    """Run a whole chapter and write ``out/{submission.csv, history.csv, curves.png,
    confusion.png, mistakes.png, summary.json, checkpoints/}``; returns the summary.

    ``predict_with``: ``"retrain"`` (the chapters: a fresh model on all labels; the default),
    ``"best"`` (the validation phase's best epoch) or ``"last"`` (its last epoch; what
    ``retrain=False`` means). A finished run in ``out`` is kept unless ``overwrite`` (or
    ``resume``) is given.

    Settings, inputs (labels, every image, the sample file's ids and columns) and the
    resume configuration are checked before the first epoch. ``resume``: False, True
    (refuses a checkpoint trained with another :func:`run_config`) or ``"force"``.

    ``recipe`` is ``"default"`` (ours), ``"book"`` (the chapter's exact values) or a
    :class:`Recipe`; ``tricks`` override its training tricks by field name (``optimizer``,
    ``sched``, ``warmup``, ``base_lr``, ``max_lr``, ``step_size``, ``cycle_mode``,
    ``milestones``, ``mixup``, ``cutmix``, ``mix_prob``, ``switch_prob``, ``label_smoothing``,
    ``augment``, ``wd_exclude``; see docs/recipes.md). ``augment`` may also be a
    ``(train_transform, test_transform)`` pair.

    ``distributed`` (data parallel, docs/scale.md): ``None`` follows the launcher (torchrun
    ...), ``True`` requires one, ``False`` ignores it, or a
    :class:`d2lkaggle.parallel.distributed.DistEnv`. Every rank trains its shard of each global
    batch; rank 0 alone predicts and writes the run folder while the others wait for it.
    """
    # Ensembles (d2lkaggle.compete.ensembles): the run also keeps test_probs.npy, classes.json,
    # test_ids.json, valid_probs.npy, valid_ids.json; ``tta`` averages test-time augmented
    # views; ``split=(train_ids, valid_ids)`` replaces the book's split (k-fold, bagging).
    comp = get_competition(competition) if isinstance(competition, str) else competition
    base = recipe if isinstance(recipe, Recipe) else recipe_for(comp, recipe)
    aug_pair = tricks.pop("augment") if not isinstance(tricks.get("augment", ""), str) else None
    # cache_features=True (--cache-features): the frozen backbone runs once per image
    # (d2lkaggle.train.features); it trains the same head, so it is not part of run_config
    cache_features = bool(tricks.pop("cache_features", False))
    unknown = sorted(set(tricks) - set(Recipe.__dataclass_fields__))
    if unknown:
        raise TypeError(f"run_competition() got unknown keyword(s) {', '.join(unknown)}")
    recipe = base.with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, wd=wd,
                                 lr_period=lr_period, lr_decay=lr_decay,
                                 valid_ratio=valid_ratio, weights=weights, **tricks)
    if model is not None:   # --model: a model-table name instead of the recipe's
        from ..models.table import check_model_name
        recipe = recipe.with_overrides(model=check_model_name(model))
    check_recipe(recipe)  # every trick checked before anything is written
    check_keep(recipe)
    if image_size is None:   # a write-up recipe's size (003: 224 px); 0 stays an error
        image_size = recipe.image_size
    comp = normalized(comp, recipe)                # 003: ImageNet statistics for its weights
    check_settings(recipe, image_size)
    recipe = _random_init(recipe)
    recipe, batch_note = fit_batch_to_set(
        recipe, _training_set_size(comp, data_dir, recipe.valid_ratio, split),
        batch_given=batch_size is not None, lr_given=lr is not None)
    if predict_with is None and recipe.keep == "best" and recipe.valid_ratio > 0:
        predict_with = "best"   # a write-up that keeps its best-validation epoch (004)
    predict_with = _predict_with(predict_with, retrain, recipe.valid_ratio > 0)
    retrain = predict_with == "retrain"
    name = canonical_name(backend)
    dist = _dist_env(distributed, recipe.batch_size)  # (batch size checked: nothing written yet)
    out = os.path.abspath(out or os.path.join("runs", f"{comp.name}-{name}"))
    if dist.is_main or not overwrite:   # (rank 0 alone removes a finished run's files)
        _check_run_folder(out, overwrite=overwrite, resume=resume)
    out = prepare_out(out) if dist.is_main else out
    if not dist.is_main:  # the main rank prints and shows progress
        log, progress = None, False
    _dist_start(name, dist)
    say = log or (lambda *_: None)
    t_start = time.perf_counter()
    data = load_data(comp, data_dir, batch_size=recipe.batch_size, valid_ratio=recipe.valid_ratio,
                     image_size=image_size, seed=seed, num_workers=num_workers,
                     augment=aug_pair or recipe.augment, label_kind=label_kind,
                     split=split)
    data = _shard_data(data, dist)
    t_data = time.perf_counter() - t_start
    say(_header(comp, data, name, recipe))
    if batch_note:
        say(batch_note)
    if dist.enabled:
        say(f"data parallel: {dist.world_size} processes ({dist.launcher}), each trains "
            f"{recipe.batch_size // dist.world_size} of every batch of {recipe.batch_size}")
    preflight_submission(comp, data_dir, data)
    config = run_config(comp, recipe, backend=name, image_size=image_size, seed=seed, amp=amp,
                        num_classes=len(data.classes),
                        num_labelled=data.train_valid_iter.labels.size,
                        **({"split": split_digest(split)} if split is not None else {}),
                        **({"world_size": dist.world_size} if dist.enabled else {}))
    resume = {phase: check_resume(os.path.join(out, "checkpoints", phase), config, resume, log)
              for phase in ("valid", "final")}
    bk = get_backend(name)
    train_fn = bk.train
    if cache_features:
        from functools import partial
        from ..train.features import check_cacheable, train_with_cached_features
        check_cacheable(recipe, data.train_iter.transform)   # before the first epoch
        train_fn = partial(train_with_cached_features, bk, backend=name)
    run_bar = _run_progress(progress, recipe.epochs, data, retrain, out if resume else None)
    train_kw = dict(lr_period=recipe.lr_period, lr_decay=recipe.lr_decay, progress=progress, log=log,
                    amp=amp, config=config)
    if run_bar is not None:
        train_kw.update(progress=run_bar, log=run_bar.wrap(log))
    tricks_kw = lambda it: tricks_for(recipe, it, len(data.classes), say)  # noqa: E731
    tricks_summary = None
    histories: list[tuple[str, History]] = []
    valid_hist = None
    timings = {"data_s": t_data}
    if data.valid_iter is not None:
        bk.set_seed(seed)
        net = build_net(bk, recipe, len(data.classes), image_size or comp.image_size)
        t0 = time.perf_counter()
        extra, tricks_summary = tricks_kw(data.train_iter)
        if run_bar is not None:
            run_bar.set_phase("train/valid")
        valid_hist = train_fn(net, data.train_iter, data.valid_iter, recipe.epochs, recipe.lr,
                              recipe.wd, None, checkpoint_dir=os.path.join(out, "checkpoints", "valid"),
                              resume=resume["valid"], plot=os.path.join(out, "curves.png"), **train_kw, **extra)
        timings["train_s"] = time.perf_counter() - t0
        histories.append(("valid", valid_hist))
        if predict_with == "best":
            _load_best(bk, net, os.path.join(out, "checkpoints", "valid", "best.npz"))
        valid_probs = valid_predictions(bk, net, data, amp, tta=tta) if dist.is_main else None
        pictures = (_valid_pictures(out, data, valid_probs, _title(comp, name, recipe))
                    if dist.is_main else {})
    final_hist = None
    if retrain or data.valid_iter is None:
        # The chapters' last step: a fresh model trained on all labelled data.
        bk.set_seed(seed)
        net = build_net(bk, recipe, len(data.classes), image_size or comp.image_size)
        t0 = time.perf_counter()
        extra, final_tricks = tricks_kw(data.train_valid_iter)
        tricks_summary = tricks_summary or final_tricks
        if run_bar is not None:
            run_bar.set_phase("retrain")
        final_hist = train_fn(net, data.train_valid_iter, None, recipe.epochs, recipe.lr, recipe.wd,
                              None, checkpoint_dir=os.path.join(out, "checkpoints", "final"),
                              resume=resume["final"], plot=None if valid_hist else os.path.join(out, "curves.png"),
                              **train_kw, **extra)
        timings["retrain_s"] = time.perf_counter() - t0
        histories.append(("train_valid", final_hist))
    if run_bar is not None:
        run_bar.close()
    if not dist.is_main:   # rank 0 predicts everything and writes; the others wait for it
        return _dist_done(name, dist, out)
    t0 = time.perf_counter()
    probs = bk.predict(net, data.test_iter, amp=amp, tta=tta)
    sub = write_submission(comp, data_dir, probs, data, os.path.join(out, "submission.csv"))
    timings["predict_s"] = time.perf_counter() - t0
    _write_history(out, histories)
    plot_run(histories, os.path.join(out, "curves.png"), _title(comp, name, recipe))
    timings["total_s"] = time.perf_counter() - t_start
    main = valid_hist if valid_hist is not None else final_hist
    summary = {
        "competition": comp.name, "backend": name, "data_dir": os.path.abspath(data_dir),
        "recipe": asdict(recipe), "tricks": tricks_summary, "amp": amp, "image_size": int(image_size or comp.image_size), "seed": seed,
        "num_classes": len(data.classes), "num_test": len(data.test_ids), "config": config,
        "valid_acc": _f(valid_hist.last["valid_acc"]) if valid_hist else None,
        "valid_loss": _f(valid_hist.last["valid_loss"]) if valid_hist else None,
        "best_valid_acc": _f(valid_hist.best_valid_acc) if valid_hist else None,
        "train_acc": _f(main.last["train_acc"]) if len(main) else None,
        "examples_per_sec": _f(main.examples_per_sec) if len(main) else None,
        "devices": main.devices, "timings": {k: round(v, 2) for k, v in timings.items()},
        "files": {"submission": sub, "history": os.path.join(out, "history.csv"),
                  "curves": os.path.join(out, "curves.png"),
                  "checkpoints": os.path.join(out, "checkpoints"),
                  "summary": os.path.join(out, "summary.json")},
    }
    if data.test_labels is not None:
        # The CIFAR archives label their test split: report what Kaggle would have scored.
        summary.update(labelled_test_metrics(probs, data.test_labels), label_kind=label_kind or "fine")
        say(f"test accuracy {summary['test_acc']:.4f} on {len(data.test_ids)} labelled test images")
    from .ensembles import save_run_predictions  # test_probs.npy & co. (written before the summary)
    summary.update(save_run_predictions(out, data, probs,
                                        valid_probs if valid_hist is not None else None,
                                        tta=tta, split=split, files=summary["files"]))
    summary.update(_run_outcome(valid_hist, final_hist, predict_with, len(data.classes), recipe))
    summary["files"].update(pictures if valid_hist is not None else {})
    summary["world_size"] = dist.world_size
    atomic_write_text(summary["files"]["summary"], json.dumps(summary, indent=2) + "\n")
    return _dist_done(name, dist, out, summary)


def tricks_for(recipe: Recipe, train_iter, num_classes: int,
               log: Callable[[str], Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(extra ``train`` keywords, summary) of the recipe's tricks for one training phase.

    Built per phase: a schedule depends on the loader's batches per epoch, and a plateau
    schedule carries state that a second run must not inherit.
    """
    recipe = cycle_step_size(recipe, len(train_iter))  # write-up 004: cycles per run
    sched = make_schedule(recipe, recipe.epochs, len(train_iter), log)
    mix = make_mixing(recipe, num_classes)
    return train_kwargs(recipe, sched, mix), describe_tricks(recipe, sched, mix)


def _f(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _write_history(out: str, histories: list[tuple[str, History]]) -> None:
    from ..train.loop import HISTORY_COLUMNS
    lines = ["phase," + ",".join(HISTORY_COLUMNS)]
    for phase, h in histories:
        for r in h.rows:
            lines.append(phase + "," + ",".join(
                "" if isinstance(r[k], float) and math.isnan(r[k]) else repr(r[k]) if isinstance(r[k], float)
                else str(r[k]) for k in HISTORY_COLUMNS))
    atomic_write_text(os.path.join(out, "history.csv"), "\n".join(lines) + "\n")
    from ..train.plotting import plot_history
    if histories and not os.path.exists(os.path.join(out, "curves.png")):
        plot_history(histories[-1][1], os.path.join(out, "curves.png"))


def run_config(comp: Competition, recipe: Recipe, *, backend: str, image_size: int | None = None,
               seed: int = 0, amp: Any = "auto", **extra: Any) -> dict[str, Any]:
    """Every setting that shapes training, as one flat JSON-ready dict.

    Stored in each checkpoint's metadata and in ``summary.json["config"]``; ``--resume``
    refuses a checkpoint whose configuration differs (see :func:`preflight.check_resume`).
    Every field of the :class:`Recipe` joins automatically; a new run setting that is not a
    Recipe field is passed as a keyword (``run_config(..., augment="crop-flip")``). Settings
    that do not change what is trained (workers, progress bars, ``retrain``, folders) stay
    out. ``run_competition`` checks ``resume`` (False, True or ``"force"``) against it
    before the first epoch, together with the settings and every input.
    """
    config = {"competition": comp.name, "backend": canonical_name(backend),
              "augment": comp.augment, **asdict(recipe),  # a Recipe's own augment wins
              "image_size": int(image_size or comp.image_size), "seed": int(seed), "amp": amp,
              **extra}
    config.pop("small_set_batch", None)  # a rule, applied already: batch_size and lr record it
    return json.loads(json.dumps(config, default=str))


def preflight_submission(comp: Competition, data_dir: str, data: CompetitionData) -> None:
    """Write and validate a placeholder submission (uniform probabilities) in a temporary
    folder: a sample file whose ids or columns do not fit fails now, before training."""
    import tempfile
    probs = np.full((len(data.test_ids), len(data.classes)), 1.0 / len(data.classes))
    with tempfile.TemporaryDirectory(prefix="d2lkaggle-preflight-") as tmp:
        write_submission(comp, data_dir, probs, data, os.path.join(tmp, "submission.csv"))


def _decode_all(paths: list[str], num_workers: int | None, chunk: int = 256) -> None:
    """Decode every file once (and drop the pixels): a damaged image fails before training."""
    for i in range(0, len(paths), chunk):
        read_images(paths[i:i + chunk], num_workers)


# ---- run folder, predictions and pictures (issue 16) ------------------------------------

#: files a finished run leaves; ``overwrite=True`` removes exactly these (and checkpoints/)
RUN_FILES = ("summary.json", "submission.csv", "history.csv", "curves.png", "confusion.png",
             "mistakes.png", "test_probs.npy", "classes.json", "test_ids.json", "valid_probs.npy",
             "valid_ids.json")
PREDICT_WITH = ("retrain", "best", "last")


def _random_init(recipe: Recipe) -> Recipe:
    """``weights="none"`` (CLI ``--weights none``) means a random backbone, like ``weights=None``."""
    if isinstance(recipe.weights, str) and recipe.weights.strip().lower() in ("none", "random"):
        return replace(recipe, weights=None)
    return recipe


def _recipe_for(comp: Competition, **overrides: Any) -> Recipe:
    """The competition's recipe with the non-``None`` ``overrides`` (a clear error without one)."""
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    return _random_init(comp.recipe.with_overrides(**overrides))


def _predict_with(predict_with: str | None, retrain: bool, has_valid: bool) -> str:
    """Which model writes submission.csv: ``retrain`` (default), ``best`` or ``last``."""
    if predict_with is None:
        return "retrain" if retrain or not has_valid else "last"
    if predict_with not in PREDICT_WITH:
        raise ValueError(f"predict_with must be one of {', '.join(PREDICT_WITH)}, got {predict_with!r}")
    if predict_with == "retrain" and not retrain:
        raise ValueError("predict_with='retrain' contradicts retrain=False (--no-retrain); "
                         "choose --predict-with best or last")
    if predict_with != "retrain" and not has_valid:
        raise ValueError(f"predict_with={predict_with!r} needs a validation phase; "
                         "set valid_ratio > 0 (--valid-ratio) or predict with 'retrain'")
    return predict_with


def _check_run_folder(out: str, *, overwrite: bool, resume: bool) -> None:
    """Refuse to write over a finished run (its summary.json exists) unless asked to.

    ``resume`` continues it; ``overwrite`` first removes the previous run's own files (never
    anything else in the folder), so nothing stale is trusted later.
    """
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(summary) or resume:
        return
    if not overwrite:
        raise ValueError(f"{out} holds a finished run ({summary}); pass --overwrite "
                              "(overwrite=True) to replace it, --resume to continue it, or "
                              "--out to write elsewhere")
    import shutil
    for f in RUN_FILES:
        with_path = os.path.join(out, f)
        if os.path.exists(with_path):
            os.unlink(with_path)
    for phase in ("valid", "final"):
        shutil.rmtree(os.path.join(out, "checkpoints", phase), ignore_errors=True)


def _header(comp: Competition, data: CompetitionData, backend: str, recipe: Recipe | None = None) -> str:
    """The first line of a run: class and image counts as reorg counts them (plus a warning
    line when the recipe fine-tunes a frozen backbone that has no pretrained weights)."""
    tr = data.train_iter
    n_train, per_epoch = len(tr.source), tr.num_examples
    train = f"{n_train} train" + (f" ({per_epoch} per epoch after drop_last)"
                                  if per_epoch != n_train else "")
    n_valid = len(data.valid_iter.source) if data.valid_iter else 0
    head = (f"{comp.name}: {len(data.classes)} classes, {train} / {n_valid} valid / "
            f"{len(data.test_ids)} test images; backend {backend}")
    if recipe is not None and recipe.model == "finetune" and recipe.weights is None:
        head += ("\nwarning: fine-tuning a frozen backbone with random weights (weights none): only "
                 "the head trains, on random features; expect accuracy near chance")
    return head


def _run_progress(progress: Any, epochs: int, data: CompetitionData, retrain: bool,
                  resume_from: str | None = None):
    """One overall progress line over every phase's batches (``None`` when progress is off);
    with ``resume_from`` (the run folder) the epochs its checkpoints already hold are left out."""
    if progress is not True:
        return None
    from ..utils.progress import RunProgress
    phases = [("valid", len(data.train_iter))] if data.valid_iter is not None else []
    if retrain or data.valid_iter is None:
        phases.append(("final", len(data.train_valid_iter)))
    done = {ph: _epochs_done(os.path.join(resume_from, "checkpoints", ph, "last.npz"))
            if resume_from else 0 for ph, _ in phases}
    return RunProgress(RunProgress.plan(*((max(0, epochs - done[ph]), n) for ph, n in phases)))


def _epochs_done(last_npz: str) -> int:
    """Epochs a ``last.npz`` checkpoint holds (0 when there is none); reads only its metadata."""
    from ..utils.files import _META_KEY
    if not os.path.exists(last_npz):
        return 0
    try:
        with np.load(last_npz, allow_pickle=False) as z:   # lazy: the arrays are not read
            return int(json.loads(str(z[_META_KEY])).get("epoch", -1)) + 1
    except (OSError, ValueError, KeyError):
        return 0


def _title(comp: Competition, backend: str, recipe: Recipe) -> str:
    """``competition · backend · model · recipe`` for the pictures."""
    sched = (f"lr {recipe.lr:g} x{recipe.lr_decay:g} every {recipe.lr_period} epochs"
             if recipe.lr_period else f"lr {recipe.lr:g}")
    extra = [f"{k} {getattr(recipe, k)}" for k in ("optimizer", "schedule", "mixing")
             if getattr(recipe, k, None)]
    if recipe.model == "finetune":
        extra.append(f"backbone weights {os.path.basename(str(recipe.weights)) if recipe.weights else 'random'}")
    return " · ".join([comp.name, backend, recipe.model,
                       ", ".join([f"{recipe.epochs} epochs", f"batch {recipe.batch_size}", sched,
                                  f"wd {recipe.wd:g}"] + extra)])


def _load_best(bk, net, path: str) -> None:
    """Put the validation phase's best epoch (``best.npz``) into ``net``."""
    from ..utils.files import load_npz
    state, _ = load_npz(path)
    bk.set_state(net, {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")},
                 source=f"checkpoint {path}")


def valid_predictions(bk, net, data: CompetitionData, amp: Any = "auto", tta: Any = None) -> np.ndarray:
    """Class probabilities of ``net`` on the validation images, in ``data.valid_iter`` order."""
    from ..parallel.distributed import unsharded   # every image, also when training was data parallel
    return bk.predict(net, unsharded(data.valid_iter), amp=amp, tta=tta)


def _valid_pictures(out: str, data: CompetitionData, probs: np.ndarray, title: str) -> dict[str, str]:
    """``confusion.png`` and ``mistakes.png`` of the validation set."""
    from ..train.plotting import plot_confusion, plot_mistakes
    y = data.valid_iter.labels
    files = {"confusion": os.path.join(out, "confusion.png"),
             "mistakes": os.path.join(out, "mistakes.png")}
    plot_confusion(y, probs, data.classes, files["confusion"], title)
    plot_mistakes(data.valid_iter.source, y, probs, data.classes, files["mistakes"], title=title)
    return files


def _run_outcome(valid_hist: History | None, final_hist: History | None, predict_with: str,
                 num_classes: int, recipe: Recipe) -> dict[str, Any]:
    """Summary keys saying which model wrote the submission and how validation went."""
    from ..train.diagnostics import not_learning
    if valid_hist is None:  # no validation images after all: the retrained model it is
        predict_with = "retrain"
    out: dict[str, Any] = {"predict_with": predict_with}
    if valid_hist is not None and len(valid_hist):
        accs = valid_hist.column("valid_acc")
        best = max(range(len(accs)), key=lambda i: -math.inf if math.isnan(accs[i]) else accs[i])
        out["best_epoch"] = int(valid_hist.rows[best]["epoch"])
    model = {"retrain": f"the model retrained on train+valid ({recipe.epochs} epochs)",
             "best": f"the validation phase's best epoch ({out.get('best_epoch')})",
             "last": "the validation phase's last epoch"}[predict_with]
    out["submission_model"] = model
    warnings = [f"{phase}: {w}" for phase, w in
                (("train/valid split", not_learning(valid_hist, num_classes) if valid_hist else None),
                 ("retrain", not_learning(final_hist, num_classes) if final_hist else None)) if w]
    out["warnings"] = warnings
    return out


def plot_run(histories: list[tuple[str, History]], path: str, title: str) -> str:
    """``curves.png`` of every phase of the run."""
    from ..train.plotting import plot_run as _plot
    if histories:
        _plot(histories, path, title)
    return path


# ---- data parallel (issue 15; d2lkaggle.parallel.distributed) -------------------------------------

def _dist_env(distributed: Any, batch_size: int):
    """The run's :class:`~d2lkaggle.parallel.distributed.DistEnv`, its global batch size checked."""
    from ..parallel import distributed as D
    if isinstance(distributed, D.DistEnv):
        env = distributed
    elif distributed is False:
        env = D.DistEnv()
    else:
        env = D.detect()
        if distributed is True and env.launcher is None:   # (a launcher of 1 process is fine)
            raise ValueError("distributed=True but no launcher started this process (no "
                             "RANK/WORLD_SIZE in the environment); start it with torchrun "
                             "--nproc_per_node N -m d2lkaggle.cli run ... (docs/scale.md)")
    D.check_batch_size(int(batch_size), env)
    return env


def _dist_start(backend: str, env) -> None:
    """Join the backend's process group; rank 0 has created the run folder when it returns."""
    from ..parallel import distributed as D
    D.setup(backend, env)
    D.barrier(backend, env)


def _shard_data(data: CompetitionData, env) -> CompetitionData:
    """The training and validation loaders sharded over the ranks (the test loader stays
    whole: rank 0 predicts every test image)."""
    if not env.enabled:
        return data
    from ..parallel.distributed import shard
    return replace(data, train_iter=shard(data.train_iter, env),
                   valid_iter=shard(data.valid_iter, env) if data.valid_iter is not None else None,
                   train_valid_iter=shard(data.train_valid_iter, env))


def _dist_done(backend: str, env, out: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every rank waits until rank 0 has written the run; the others return a short summary
    (``is_main`` False) that the CLI does not print."""
    from ..parallel import distributed as D
    D.barrier(backend, env)
    if summary is not None:
        return summary
    return {"is_main": False, "rank": env.rank, "world_size": env.world_size,
            "files": {"summary": os.path.join(out, "summary.json")}}
