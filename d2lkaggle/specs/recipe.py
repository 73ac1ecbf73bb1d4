"""A training recipe as data: every hyperparameter of one run (model, optimizer, schedule, tricks).

:class:`Recipe` holds values only; :mod:`d2lkaggle.specs.tricks` turns its tricks into training
objects, :mod:`d2lkaggle.specs.competitions` gives each competition its default and book recipes,
and :mod:`d2lkaggle.specs.writeups` the two write-ups' recipes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Default hyperparameters of a competition (losses are batch means in every backend)."""

    model: str                       # "resnet18" (the CIFAR-10 chapter) or "finetune" (Dog Breed)
    epochs: float                    # whole, or fractional (the record's 9.9: the last epoch cut)
    batch_size: int
    lr: float
    wd: float
    lr_period: int | None
    lr_decay: float
    valid_ratio: float = 0.1
    width: int = 64                  # first-stage channels of resnet18 / airbench94
    weights: str | None = None       # finetune backbone: None, "imagenet" or a path
    hidden: int = 256                # finetune head width
    # training tricks (docs/recipes.md): optimizer, per-batch schedule, mixing, augmentation
    optimizer: str = "sgd"           # sgd | nesterov | adam | adamw
    sched: str = "step"              # step | multistep | cyclic | onecycle | cosine | plateau
    warmup: float | None = None      # warm-up epochs (cosine: 0, onecycle: 30 % of the run)
    base_lr: float | None = None     # cyclic: lowest rate (default lr / 2)
    max_lr: float | None = None      # cyclic: peak (default 2 * lr); onecycle: peak (default lr)
    step_size: int | None = None     # cyclic: iterations per half cycle (default 2 epochs)
    cycle_mode: str | None = None    # cyclic: triangular (default) | triangular2 | exp_range
    milestones: tuple[int, ...] | None = None  # multistep epochs (default 1/2 and 3/4 of the run)
    mixup: float = 0.0               # MixUp Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0              # CutMix Beta(alpha, alpha); 0 = off
    mix_prob: float | None = None    # probability a batch is mixed (default 1)
    switch_prob: float = 0.5         # with both alphas: probability of CutMix for a mixed batch
    label_smoothing: float = 0.0     # epsilon of the soft targets
    augment: str = "book"            # book | crop-flip | crop-flip-rotate | none
    wd_exclude: str | None = None    # "bn_bias": no weight decay on biases and norm layers
    # the write-up recipes (d2lkaggle/specs/writeups.py)
    image_size: int | None = None    # training/test image size (None: the competition's)
    cycles: int | None = None        # cyclic: full triangles over the run (sets step_size)
    keep: str = "last"               # "best": predict with the best-validation epoch, no retrain
    # loaders' mean/std: the competition's, "imagenet" (pretrained weights) or "airbench" (the
    # record's: CIFAR-10's measured std 0.247/0.243/0.261 where the book's says 0.2023/...)
    normalize: str = "competition"
    # stochastic depth of the model-table models (d2lkaggle.models.table; None: the model's default)
    drop_path: float | None = None         # resnet18/resnet34 (default 0, off)
    stochastic_depth: float | None = None  # efficientnet_v2_s|m|l (default 0.2, torchvision's)
    # a training set too small for batch_size (fewer than recipes.MIN_STEPS_PER_EPOCH steps per
    # epoch) trains at this batch, lr scaled by the same factor (docs/recipes.md); None: never
    small_set_batch: int | None = None
    # docs/recipes.md, "learning from the first epoch": the speed-runs' first layer, the
    # stem conv initialised with the training images' patch-whitening filters
    # (d2lkaggle.models.whitening), and BatchNorm statistics that follow fast-moving weights
    whiten: bool = False
    bn_momentum: float | None = None  # torch's convention (0.1 = the book's); None: the model's
    # test-time augmentation the recipe predicts with (d2lkaggle.train.tta: flip, flip-crop, N);
    # --tta overrides it, --tta none turns it off. Prediction only: not part of run_config
    tta: str | None = None
    # the CIFAR-10 speed-run record (airbench94, docs/airbench.md): SGD momentum, the BatchNorm
    # biases' lr factor, weight averaging, epochs the whitened stem's bias trains, and whether
    # the submission comes from a retrain on all labels (the chapters) or the validated model
    momentum: float | None = None     # sgd / nesterov (None: 0.9)
    bn_bias_lr: float | None = None   # lr × this and wd ÷ this for BatchNorm biases (None: 1)
    average: str | None = None        # "lookahead" (d2lkaggle.train.averaging); None: off
    whiten_bias_epochs: int | None = None   # None: the whitened stem's bias always trains
    retrain: bool = True              # False: the validation phase's model writes the submission

    def with_overrides(self, **kw: Any) -> "Recipe":
        """A copy with every non-``None`` keyword replaced."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})
