"""A whole competition as the chapters run it: files → split → train/validate → retrain → submit.

Each step is a small named function, so the CLI, the example scripts and the tests call the
same code. No framework is imported here; the backend arrives through the registry.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .augment import get_transforms
from .checkpoint import atomic_write_text
from .competitions import Competition, Recipe, get_competition
from .data import ArraySource, FileSource, ImageLoader
from .images import check_images, list_images, load_image_array, read_images
from .labels import class_names, read_csv_labels
from .loop import History
from .registry import canonical_name, get_backend
from .reorg import split_train_valid
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
    images = _images_by_id(os.path.join(data_dir, comp.test_dir))
    sample = os.path.join(data_dir, comp.sample_file)
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
              num_workers: int | None = None) -> CompetitionData:
    """Read labels, split train/valid (in memory, the book's rule) and build the loaders."""
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
    t_ids = test_ids(comp, data_dir)
    test_images = _images_by_id(os.path.join(data_dir, comp.test_dir))
    if comp.fixed_size:
        # CIFAR-sized images: decode each PNG once into one cached array.
        train_array = load_image_array([images[i] for i in ids])
        test_array = load_image_array([test_images[i] for i in t_ids])
        make = lambda sel: ArraySource(train_array, [pos[i] for i in sel])  # noqa: E731
        test_source = ArraySource(test_array)
    else:
        # Every file is checked now, not when an epoch (or the prediction after training)
        # first decodes it; test images are decoded once in full for the same reason.
        check_images([images[i] for i in ids], num_workers=num_workers)
        check_images([test_images[i] for i in t_ids], num_workers=num_workers)
        _decode_all([test_images[i] for i in t_ids], num_workers)
        make = lambda sel: FileSource([images[i] for i in sel])  # noqa: E731
        test_source = FileSource([test_images[i] for i in t_ids])
    train_tf, test_tf = get_transforms(comp.augment, size)
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
    return CompetitionData(train_iter, valid_iter, train_valid_iter, test_iter, classes, t_ids)


def build_net(backend, recipe: Recipe, num_classes: int):
    """The recipe's model in ``backend``: the book's ResNet-18 or the ResNet-34 fine-tune net."""
    if recipe.model == "resnet18":
        return backend.resnet18(num_classes, 3, recipe.width)
    if recipe.model == "finetune":
        return backend.finetune_net(num_classes, weights=recipe.weights, hidden=recipe.hidden)
    raise ValueError(f"unknown model {recipe.model!r}; choose 'resnet18' or 'finetune'")


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


def run_competition(competition: str | Competition, data_dir: str, *, backend: str = "torch",
                    out: str | None = None, epochs: int | None = None,
                    batch_size: int | None = None, lr: float | None = None,
                    wd: float | None = None, lr_period: int | None = None,
                    lr_decay: float | None = None, valid_ratio: float | None = None,
                    image_size: int | None = None, weights: str | None = None,
                    retrain: bool = True, seed: int = 0, resume: bool = False,
                    progress: bool = True, num_workers: int | None = None, amp: Any = "auto",
                    log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Run a whole chapter and write ``out/{submission.csv, history.csv, curves.png,
    summary.json, checkpoints/}``; returns the summary."""
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    recipe = comp.recipe.with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, wd=wd,
                                        lr_period=lr_period, lr_decay=lr_decay,
                                        valid_ratio=valid_ratio, weights=weights)
    check_settings(recipe, image_size)
    name = canonical_name(backend)
    out = prepare_out(out or os.path.join("runs", f"{comp.name}-{name}"))
    say = log or (lambda *_: None)
    t_start = time.perf_counter()
    data = load_data(comp, data_dir, batch_size=recipe.batch_size, valid_ratio=recipe.valid_ratio,
                     image_size=image_size, seed=seed, num_workers=num_workers)
    t_data = time.perf_counter() - t_start
    say(f"{comp.name}: {len(data.classes)} classes, {data.train_iter.num_examples} train / "
        f"{len(data.valid_iter.source) if data.valid_iter else 0} valid / "
        f"{len(data.test_ids)} test images; backend {name}")
    preflight_submission(comp, data_dir, data)
    config = run_config(comp, recipe, backend=name, image_size=image_size, seed=seed, amp=amp,
                        num_classes=len(data.classes),
                        num_labelled=data.train_valid_iter.labels.size)
    resume = {phase: check_resume(os.path.join(out, "checkpoints", phase), config, resume, log)
              for phase in ("valid", "final")}
    bk = get_backend(name)
    train_kw = dict(lr_period=recipe.lr_period, lr_decay=recipe.lr_decay, progress=progress, log=log,
                    amp=amp, config=config)
    histories: list[tuple[str, History]] = []
    valid_hist = None
    timings = {"data_s": t_data}
    if data.valid_iter is not None:
        bk.set_seed(seed)
        net = build_net(bk, recipe, len(data.classes))
        t0 = time.perf_counter()
        valid_hist = bk.train(net, data.train_iter, data.valid_iter, recipe.epochs, recipe.lr,
                              recipe.wd, None, checkpoint_dir=os.path.join(out, "checkpoints", "valid"),
                              resume=resume["valid"], plot=os.path.join(out, "curves.png"), **train_kw)
        timings["train_s"] = time.perf_counter() - t0
        histories.append(("valid", valid_hist))
    final_hist = None
    if retrain or data.valid_iter is None:
        # The chapters' last step: a fresh model trained on all labelled data.
        bk.set_seed(seed)
        net = build_net(bk, recipe, len(data.classes))
        t0 = time.perf_counter()
        final_hist = bk.train(net, data.train_valid_iter, None, recipe.epochs, recipe.lr, recipe.wd,
                              None, checkpoint_dir=os.path.join(out, "checkpoints", "final"),
                              resume=resume["final"], plot=None if valid_hist else os.path.join(out, "curves.png"),
                              **train_kw)
        timings["retrain_s"] = time.perf_counter() - t0
        histories.append(("train_valid", final_hist))
    t0 = time.perf_counter()
    probs = bk.predict(net, data.test_iter, amp=amp)
    sub = write_submission(comp, data_dir, probs, data, os.path.join(out, "submission.csv"))
    timings["predict_s"] = time.perf_counter() - t0
    _write_history(out, histories)
    timings["total_s"] = time.perf_counter() - t_start
    main = valid_hist if valid_hist is not None else final_hist
    summary = {
        "competition": comp.name, "backend": name, "data_dir": os.path.abspath(data_dir),
        "recipe": asdict(recipe), "amp": amp, "image_size": int(image_size or comp.image_size), "seed": seed,
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
    atomic_write_text(summary["files"]["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


def _f(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _write_history(out: str, histories: list[tuple[str, History]]) -> None:
    from .loop import HISTORY_COLUMNS
    lines = ["phase," + ",".join(HISTORY_COLUMNS)]
    for phase, h in histories:
        for r in h.rows:
            lines.append(phase + "," + ",".join(
                "" if isinstance(r[k], float) and math.isnan(r[k]) else repr(r[k]) if isinstance(r[k], float)
                else str(r[k]) for k in HISTORY_COLUMNS))
    atomic_write_text(os.path.join(out, "history.csv"), "\n".join(lines) + "\n")
    from .plotting import plot_history
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
    config = {"competition": comp.name, "backend": canonical_name(backend), **asdict(recipe),
              "image_size": int(image_size or comp.image_size), "seed": int(seed), "amp": amp,
              **extra}
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
