"""The Dog Breed default (docs/kaggle_dog.md): what a run plans from three flags, what
``--recipe book`` keeps, the scaled augmentation and the demo sets it was measured on."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from d2lkaggle.compete.run import plan_run, run_config
from d2lkaggle.data.demo import make_demo
from d2lkaggle.data.transforms import dog_train, dog_train_scaled, preset_transforms
from d2lkaggle.specs.competitions import BOOK_RECIPES, get_competition


def _plan(dog_dir, tmp_path, **kw):
    return plan_run("dog-breed", dog_dir, out=str(tmp_path / "run"), weights="none",
                    log=None, **kw)


def test_three_flags_plan_cached_features_tta_and_calibration(dog_dir, tmp_path):
    plan = _plan(dog_dir, tmp_path, image_size=32, epochs=3)
    r = plan.recipe
    assert (r.optimizer, r.sched, r.lr, r.augment) == ("adamw", "onecycle", 1e-3, "none")
    # 43 training images: the small-set rule trains at batch 32 and keeps AdamW's rate
    assert r.batch_size == 32 and "batch 32" in plan.batch_note
    assert plan.cache_features and plan.tta == "flip" and plan.calibrate == "temperature"
    # the recipe's TTA is how it predicts, not what it trains: --resume does not compare it
    assert "tta" not in run_config(plan.comp, r, backend="torch")
    # each can be turned off; an augmented run cannot cache (and is not asked to)
    off = _plan(dog_dir, tmp_path, tta=False, calibrate="none", cache_features=False)
    assert off.tta is None and off.calibrate == "none" and not off.cache_features
    assert not _plan(dog_dir, tmp_path, augment="scaled").cache_features
    assert _plan(dog_dir, tmp_path, tta="none").tta is None
    with pytest.raises(ValueError, match="unknown TTA"):
        _plan(dog_dir, tmp_path, tta="sideways")


def test_book_recipe_is_the_chapters(dog_dir, tmp_path):
    book = BOOK_RECIPES["dog-breed"]
    assert (book.optimizer, book.sched, book.lr, book.wd, book.batch_size, book.augment,
            book.tta, book.small_set_batch) == ("sgd", "step", 5e-3, 1e-4, 128, "book", None, None)
    plan = _plan(dog_dir, tmp_path, recipe="book")
    assert plan.recipe.batch_size == 128 and plan.tta is None and not plan.cache_features
    assert plan.calibrate == "temperature"   # the competition's scoring, not the recipe's
    assert get_competition("dog-breed").metric == "log_loss"


def test_scaled_augmentation_is_the_chapters_at_224_and_milder_below():
    assert repr(dog_train_scaled(224)) == repr(dog_train(224))
    crops = {s: dog_train_scaled(s).transforms[0].scale[0] for s in (32, 64, 96, 224, 448)}
    jitter = {s: dog_train_scaled(s).transforms[2].brightness for s in (64, 96, 224)}
    assert crops == {32: 0.56, 64: 0.28, 96: 0.187, 224: 0.08, 448: 0.08}
    assert jitter == {64: 0.114, 96: 0.171, 224: 0.4}
    train, test = preset_transforms("scaled", 64, book="dog")
    assert repr(train) == repr(dog_train_scaled(64))
    img = np.full((90, 120, 3), 128, np.uint8)
    assert train(img, np.random.default_rng(0)).shape == (64, 64, 3)
    # CIFAR's recipe is already in proportion to its size: scaled is the book's there
    assert repr(preset_transforms("scaled", 32)[0]) == repr(preset_transforms("book", 32)[0])


def _subject_area(path):
    """Fraction of the image whose colour differs strongly from the background's mean."""
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    return float((np.abs(x - np.median(border, 0)).sum(-1) > 120).mean())


def test_demo_sizes_and_small_subjects(tmp_path):
    kw = dict(n_train=12, n_test=2, size=40, max_size=90, seed=1, layout="dog", num_classes=4)
    big = make_demo(str(tmp_path / "big"), **kw)
    small = make_demo(str(tmp_path / "small"), small_subjects=True, **kw)
    sides = [s for d in (big, small) for f in os.listdir(os.path.join(d, "train"))
             for s in Image.open(os.path.join(d, "train", f)).size]
    assert min(sides) >= 40 and max(sides) <= 90
    files = sorted(os.listdir(os.path.join(big, "train")))
    a = np.mean([_subject_area(os.path.join(big, "train", f)) for f in files])
    b = np.mean([_subject_area(os.path.join(small, "train", f)) for f in files])
    assert b < 0.65 * a, (a, b)   # (the gradient backgrounds count in both)
    with pytest.raises(ValueError, match="max_size"):
        make_demo(str(tmp_path / "x"), size=40, max_size=30, layout="dog")
