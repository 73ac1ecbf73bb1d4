"""Test-time augmentation (TTA), once for every framework.

The loader's test batches pass through :func:`tta_batches`, which yields for each batch the
augmented *views* of the same images, in the same row order; a backend's step predicts each
view and :func:`predict_tta` averages the class probabilities. Row order and count never
change: every view is a per-image transform of the batch it came from.

Kinds (``tta=``):

* ``"flip"`` — the image and its left-right mirror (2 views).
* ``"flip-crop"`` — the image and the four corner crops (7/8 of each side, scaled back to the
  full size), each also mirrored (10 views; the "ten-crop" of the ImageNet papers).
* ``"flip-shift"`` — the speed-run record's TTA (airbench94's ``tta_level=2``): the image, its
  mirror, and the image shifted one pixel down-right and up-left (reflect padding), each also
  mirrored; the *logits* are averaged with weights 1/4, 1/4 and 1/8 × 4 (the plain pair
  counts as much as the four shifted views together), then turned into probabilities.
* ``N`` (an integer >= 1) — the plain image plus ``N - 1`` random views: a mirror with
  probability 1/2 and a shift of up to 1/8 of the side (reflect padding, like the CIFAR
  training crop), drawn from ``numpy.random.default_rng([loader.seed, batch, view, tag])``, so
  every backend sees the same bytes.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

__all__ = ["TTA_KINDS", "LOGIT_KINDS", "check_tta", "num_views", "tta_batches", "predict_tta", "TTAStep"]

#: named TTA kinds (an integer N is also accepted)
TTA_KINDS = ("flip", "flip-crop", "flip-shift")
#: kinds that average the net's logits (weighted) rather than its probabilities
LOGIT_KINDS = {"flip-shift": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}
_TAG = 0x7A7A  # separates the TTA random stream from the loader's augmentation stream
_CROP = 7 / 8


def check_tta(tta: Any) -> str | int | None:
    """``tta`` normalised: ``None`` (off), ``"flip"``, ``"flip-crop"`` or an int N >= 1."""
    if tta is None or tta is False:
        return None
    if isinstance(tta, str):
        t = tta.strip().lower()
        if t in ("", "none", "off", "0"):
            return None
        if t in TTA_KINDS:
            return t
        if t.isdigit():
            tta = int(t)
        else:
            raise ValueError(f"unknown TTA {tta!r}; choose 'flip', 'flip-crop', 'flip-shift' or "
                             "a number of views N >= 1")
    if isinstance(tta, bool) or not isinstance(tta, (int, np.integer)) or tta < 1:
        raise ValueError(f"TTA must be 'flip', 'flip-crop', 'flip-shift' or a number of views "
                         f"N >= 1, got {tta!r}")
    return None if int(tta) == 1 else int(tta)


def num_views(tta: Any) -> int:
    """How many predictions each image gets under ``tta``."""
    t = check_tta(tta)
    if t in LOGIT_KINDS:
        return len(LOGIT_KINDS[t])
    return 1 if t is None else 2 if t == "flip" else 10 if t == "flip-crop" else int(t)


def _flip(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, ::-1])


def _resize_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """N×h'×w'×C → N×h×w×C, bilinear with half-pixel centres (Pillow's rule when enlarging)."""
    n, sh, sw = x.shape[:3]

    def axis(src: int, dst: int):
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (y0, y1, fy), (x0, x1, fx) = axis(sh, h), axis(sw, w)
    xf = x.astype(np.float32)
    top = xf[:, y0] * (1 - fy)[None, :, None, None] + xf[:, y1] * fy[None, :, None, None]
    out = top[:, :, x0] * (1 - fx)[None, None, :, None] + top[:, :, x1] * fx[None, None, :, None]
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def _corner(x: np.ndarray, corner: int) -> np.ndarray:
    h, w = x.shape[1:3]
    ch, cw = max(1, round(h * _CROP)), max(1, round(w * _CROP))
    top = 0 if corner in (0, 1) else h - ch
    left = 0 if corner in (0, 2) else w - cw
    return _resize_bilinear(x[:, top:top + ch, left:left + cw], h, w)


def _random_view(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[1:3]
    ph, pw = max(1, h // 8), max(1, w // 8)
    out = np.empty_like(x)
    for i in range(len(x)):
        img = x[i][:, ::-1] if rng.random() < 0.5 else x[i]
        dy, dx = int(rng.integers(0, 2 * ph + 1)), int(rng.integers(0, 2 * pw + 1))
        padded = np.pad(img, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
        out[i] = padded[dy:dy + h, dx:dx + w]
    return out


def _views(x: np.ndarray, tta: str | int, seed: int, b: int) -> Iterator[np.ndarray]:
    yield x
    if tta == "flip":
        yield _flip(x)
    elif tta == "flip-shift":   # airbench: reflect-pad 1, crops at (0, 0) and (2, 2)
        yield _flip(x)
        h, w = x.shape[1:3]
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        for top in (0, 2):
            v = np.ascontiguousarray(padded[:, top:top + h, top:top + w])
            yield v
            yield _flip(v)
    elif tta == "flip-crop":
        yield _flip(x)
        for c in range(4):
            v = _corner(x, c)
            yield v
            yield _flip(v)
    else:
        for v in range(1, int(tta)):
            yield _random_view(x, np.random.default_rng([seed, b, v, _TAG]))


def tta_batches(data: Iterable, tta: Any) -> Iterator[tuple[Iterator[np.ndarray], np.ndarray]]:
    """Yield ``(views, y)`` per batch of ``data``: an iterator over the batch's augmented views
    (the plain batch first), each with the batch's rows in the batch's order."""
    t = check_tta(tta)
    seed = int(getattr(data, "seed", 0))
    for b, (x, y) in enumerate(data):
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"TTA needs N×H×W×C image batches, got shape {x.shape}")
        yield (iter([x]) if t is None else _views(x, t, seed, b)), y


def _mean_over_views(predict_batch: Callable[[np.ndarray], np.ndarray],
                     views: Iterable[np.ndarray]) -> np.ndarray:
    total, k = None, 0
    for v in views:
        p = np.asarray(predict_batch(v), dtype=np.float64)
        if p.ndim != 2 or len(p) != len(v):
            raise ValueError(f"predict_batch returned shape {p.shape} for a batch of {len(v)}")
        total, k = (p if total is None else total + p), k + 1
    return total / k


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _weighted_logits(step: Any, views: Iterable[np.ndarray], weights: tuple[float, ...]) -> np.ndarray:
    """softmax(Σ wᵢ·logitsᵢ) over the views; a step without ``predict_logits`` gives its
    log-probabilities instead (the same softmax: they differ from the logits by a per-row
    constant)."""
    logits = getattr(step, "predict_logits", None)
    total = None
    for v, wt in zip(views, weights):
        z = (np.asarray(logits(v), np.float64) if logits is not None else
             np.log(np.maximum(np.asarray(step.predict_batch(v), np.float64), 1e-300)))
        if z.ndim != 2 or len(z) != len(v):
            raise ValueError(f"the step returned shape {z.shape} for a batch of {len(v)}")
        total = wt * z if total is None else total + wt * z
    return _softmax(total)


class TTAStep:
    """A step whose ``predict_batch`` averages ``step``'s probabilities over the TTA views of
    each batch; batches must come in the loader's order (the ``b``-th call is batch ``b``, which
    seeds the random views). What ``loop.predict(step, data, tta=...)`` uses."""

    def __init__(self, step: Any, tta: Any, seed: int = 0):
        self.step, self.tta, self.seed, self.batch = step, check_tta(tta), int(seed), 0

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):   # (np.asarray would copy a GPU tensor, or fail)
            raise TypeError(f"TTA flips and crops d2lkaggle's numpy batches; got a "
                            f"{type(x).__module__}.{type(x).__name__} from a framework's own "
                            f"loader, whose transforms are its own: predict without tta")
        if x.ndim != 4:
            raise ValueError(f"TTA needs N×H×W×C image batches, got shape {x.shape}")
        views = [x] if self.tta is None else _views(x, self.tta, self.seed, self.batch)
        self.batch += 1
        if self.tta in LOGIT_KINDS:
            return _weighted_logits(self.step, views, LOGIT_KINDS[self.tta])
        return _mean_over_views(self.step.predict_batch, views)


def predict_tta(predict_batch: Callable[[np.ndarray], np.ndarray], data: Iterable,
                tta: Any) -> np.ndarray:
    """Class probabilities for every example of ``data``, averaged over the TTA views
    (the chapters' ``predict`` step with test-time augmentation)."""
    t = check_tta(tta)
    if t in LOGIT_KINDS:
        from types import SimpleNamespace
        step = SimpleNamespace(predict_batch=predict_batch)
        out = [_weighted_logits(step, views, LOGIT_KINDS[t]) for views, _ in tta_batches(data, t)]
    else:
        out = [_mean_over_views(predict_batch, views) for views, _ in tta_batches(data, t)]
    if not out:
        raise ValueError("prediction data is empty")
    return np.concatenate(out)
