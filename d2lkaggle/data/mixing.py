"""MixUp, CutMix and label smoothing on a training batch, in numpy (timm's ``Mixup``).

A :class:`Mixup` is called by the loop on each training batch with that batch's own
generator ``numpy.random.default_rng([loader.seed, epoch, b, MIX_TAG])``, so every backend
receives the same bytes (and a resumed run the same batches). It returns the pixels and
N×C float32 soft targets (rows sum to 1):

* MixUp (Zhang et al. 2018): ``x = λ·x + (1−λ)·x[::-1]`` in float32 (no uint8 rounding),
  ``λ ~ Beta(α, α)`` once per batch; the partner of example ``i`` is example ``N−1−i`` of
  the (already shuffled) batch, as in timm.
* CutMix (Yun et al. 2019): a box of area ``(1−λ)·H·W`` from the partner is pasted (pixels
  stay uint8); the box is clipped at the border and ``λ`` is corrected to the pasted area.
* Label smoothing: targets ``(1−ε)·onehot + ε/C``, applied before mixing (timm's rule).

With ``prob < 1`` a batch is mixed with that probability; with both alphas > 0 a mixed
batch uses CutMix with probability ``switch_prob``, else MixUp.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the fourth word of a batch's mixing generator seed ([seed, epoch, batch, MIX_TAG])
MIX_TAG = 0x4D1C


def one_hot(y: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """Integer labels → N×C float32 targets, ``1−ε+ε/C`` on the label and ``ε/C`` elsewhere."""
    y = np.asarray(y, dtype=np.int64)
    if y.ndim != 1:
        raise ValueError(f"expected integer labels of shape (N,), got shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1} to mix them, got "
                         f"{int(y.min())}..{int(y.max())} (unlabelled test images are never mixed)")
    off = smoothing / num_classes
    out = np.full((len(y), num_classes), off, dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0 - smoothing + off
    return out


def cutmix_box(lam: float, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm's ``rand_bbox``: a box of side ``sqrt(1−λ)`` × image, centre uniform, clipped.

    Returns ``(top, bottom, left, right)``; the area may be smaller than ``(1−λ)·H·W`` where
    the box leaves the image, which is why :class:`Mixup` corrects λ afterwards.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = min(max(cy - cut_h // 2, 0), h), min(max(cy + cut_h // 2, 0), h)
    left, right = min(max(cx - cut_w // 2, 0), w), min(max(cx + cut_w // 2, 0), w)
    return top, bottom, left, right


class Mixup:
    """timm's ``Mixup`` (batch mode) on numpy N×H×W×3 batches: MixUp / CutMix / smoothing.

    ``mixing(x, y, rng, num_classes=None) -> (x, soft_y)``. ``num_classes`` given here is
    used when the call does not give one.
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0,
                 num_classes: int | None = None, correct_lam: bool = True):
        for name, v in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {v!r}")
        for name, v in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {v!r}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.correct_lam = bool(correct_lam)

    @property
    def mixes(self) -> bool:
        """Whether any batch can be mixed (False: label smoothing only)."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def params(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(λ, use_cutmix) of one batch, drawn as timm draws them; λ = 1 means not mixed."""
        if not self.mixes or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                 num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        c = num_classes or self.num_classes
        if c is None:
            raise ValueError("Mixup needs num_classes (give it to Mixup(...) or the call)")
        if x.ndim != 4 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            raise ValueError(f"expected an N×H×W×C batch, got shape {x.shape}")
        lam, use_cutmix = self.params(rng)   # (label smoothing alone: any batch, e.g. features)
        if lam < 1.0:
            if use_cutmix:
                top, bottom, left, right = cutmix_box(lam, x.shape[1], x.shape[2], rng)
                patch = x[::-1, top:bottom, left:right].copy()  # the partner's box, not aliased
                x = x.copy()
                x[:, top:bottom, left:right] = patch
                if self.correct_lam:
                    lam = 1.0 - (bottom - top) * (right - left) / float(x.shape[1] * x.shape[2])
            else:
                xf = np.asarray(x, dtype=np.float32)
                x = xf * np.float32(lam)
                x += xf[::-1] * np.float32(1.0 - lam)
        y = np.asarray(y)
        t = y.astype(np.float32) if y.ndim == 2 else one_hot(y, c, self.label_smoothing)
        if lam < 1.0:
            t = t * np.float32(lam) + t[::-1] * np.float32(1.0 - lam)
        return x, t

    def describe(self) -> dict[str, Any]:
        """The settings (what summary.json records)."""
        return {"mixup_alpha": self.mixup_alpha, "cutmix_alpha": self.cutmix_alpha,
                "prob": self.prob, "switch_prob": self.switch_prob,
                "label_smoothing": self.label_smoothing, "num_classes": self.num_classes}

    def __repr__(self) -> str:
        return "Mixup(" + ", ".join(f"{k}={v!r}" for k, v in self.describe().items()) + ")"


def mixup(alpha: float, **kw: Any) -> Mixup:
    """MixUp alone with ``Beta(alpha, alpha)`` (the CIFAR-10 MixUp write-up uses ``alpha=0.4``)."""
    return Mixup(mixup_alpha=alpha, cutmix_alpha=0.0, **kw)


def cutmix(alpha: float = 1.0, **kw: Any) -> Mixup:
    """CutMix alone with ``Beta(alpha, alpha)`` (the CIFAR-100 write-up: ``alpha=1, prob=0.5``)."""
    return Mixup(mixup_alpha=0.0, cutmix_alpha=alpha, **kw)


def label_smoothing(eps: float, num_classes: int | None = None) -> Mixup:
    """Label smoothing alone: soft targets, no pixels changed."""
    return Mixup(mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=eps, num_classes=num_classes)


def batch_rng(seed: int, epoch: int, b: int) -> np.random.Generator:
    """The generator that mixes batch ``b`` of ``epoch`` of a loader seeded ``seed``."""
    return np.random.default_rng([int(seed), int(epoch), int(b), MIX_TAG])
