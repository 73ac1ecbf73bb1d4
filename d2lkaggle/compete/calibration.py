"""Calibrated probabilities: one temperature fitted on the validation split (numpy only).

Dog Breed is scored by multi-class log loss, where a probability's calibration counts as
much as its ranking: a net that is right but too sure (or too timid) loses points on every
image. Temperature scaling (Guo et al., 2017) divides the logits by one number ``T`` fitted
on held-out images by minimising their log loss: ``T > 1`` softens, ``T < 1`` sharpens, and
the argmax never changes, so the accuracy stays what it was.

It needs no backend: ``softmax(z / T)`` is ``softmax(log p / T)``, because ``log p`` is ``z``
minus one number per row, which the softmax ignores. So the core fits it on the validation
probabilities a run already writes, for every backend alike, and applies it to the test
probabilities (:func:`apply_temperature`). The fit (:func:`fit_temperature`) is exact: the
log loss is convex in ``1/T``, so a safeguarded Newton search on its derivative finds the
one minimum (tests/compete/test_calibration.py compares it with a grid search).

Where it is used: ``d2lkaggle run`` (the validation phase's temperature is applied to the
test probabilities of the model that writes the submission — the retrained one too),
``d2lkaggle ensemble`` and ``--ensemble K`` (the combined probabilities, fitted on the
validation images the members share), docs/kaggle_dog.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .voting import log_loss, normalized_rows

__all__ = ["CALIBRATIONS", "Calibration", "check_calibrate", "default_calibration",
           "resolve_calibration", "fit_temperature", "apply_temperature", "calibrate",
           "cross_fitted_log_loss", "at_edge", "T_RANGE", "MIN_PER_CLASS"]

#: ``--calibrate`` choices
CALIBRATIONS = ("none", "temperature")
#: the temperatures a fit may return (a wider value means a degenerate validation set)
T_RANGE = (1e-2, 1e2)
#: floor of a probability before its logarithm: float32 softmax outputs that underflowed to 0
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration and what it did on the validation images it was fitted on."""

    method: str                               # "none" or "temperature"
    temperature: float = 1.0
    num_valid: int = 0
    log_loss_before: float | None = None      # validation log loss of the raw probabilities
    log_loss_after: float | None = None       # ... after calibration (fitted on these images)
    log_loss_cross_fitted: float | None = None  # ... each fifth scored with T of the others
    note: str = ""
    fitted: float | None = None               # the fit's T when it was not applied (method "none")
    warnings: tuple[str, ...] = ()            # what the run says and summary.json["warnings"] keeps

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` calibrated (unchanged for ``method="none"``)."""
        if self.method == "none":
            return np.asarray(probs)
        return apply_temperature(probs, self.temperature)

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else
                    list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    def line(self) -> str:
        """One line for the run's log."""
        if self.method == "none":
            if self.fitted is not None:
                return (f"calibration: none (a temperature of {self.fitted:.3g} was fitted on "
                        f"{self.num_valid} validation images and not applied: {self.note})")
            return "calibration: none" + (f" ({self.note})" if self.note else "")
        cross = (f", {self.log_loss_cross_fitted:.4f} cross-fitted"
                 if self.log_loss_cross_fitted is not None else "")
        return (f"calibration: temperature {self.temperature:.3f} fitted on {self.num_valid} "
                f"validation images: log loss {self.log_loss_before:.4f} -> "
                f"{self.log_loss_after:.4f}{cross}" + (f" ({self.note})" if self.note else ""))


def check_calibrate(calibrate: Any) -> str | None:
    """``calibrate`` normalised: ``None`` (the competition's default), ``"none"`` or
    ``"temperature"``; anything else is one clear error listing the choices."""
    if calibrate is None:
        return None
    if calibrate is False:
        return "none"
    if isinstance(calibrate, str) and calibrate.strip().lower() in CALIBRATIONS:
        return calibrate.strip().lower()
    raise ValueError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got {calibrate!r}")


def default_calibration(comp: Any) -> str:
    """``"temperature"`` for a competition scored by log loss (Dog Breed), else ``"none"``."""
    return "temperature" if getattr(comp, "metric", "accuracy") == "log_loss" else "none"


def resolve_calibration(calibrate: Any, comp: Any, has_valid: bool,
                        missing: str = "this run has none: give --valid-ratio > 0",
                        ) -> tuple[str, str]:
    """(method, note) a run will use: ``calibrate`` as given, or the competition's default.
    A temperature asked for without validation images to fit it on is refused (one line
    ending with ``missing``, what to do); the default becomes ``"none"``, with a note."""
    given = check_calibrate(calibrate)
    method = given or default_calibration(comp)
    if method == "temperature" and not has_valid:
        if given is not None:
            raise ValueError(f"--calibrate temperature fits on validation images, and {missing}, "
                             "or --calibrate none")
        return "none", "no validation images to fit a temperature on"
    return method, "" if given else "the competition's default"


def _log_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"expected an N×C array of probabilities (C >= 2), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and >= 0")
    return np.log(np.maximum(normalized_rows(p), _TINY))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` per row, float64: each row sums to 1 and keeps
    its argmax (the test-set step of temperature scaling)."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = _log_probs(probs) / t
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


def _nll_and_slope(logp: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Mean negative log likelihood of ``softmax(beta * logp)`` and its first and second
    derivatives in ``beta`` (``1/T``): ``mean(E_q[l] - l_y)`` and ``mean(Var_q[l])``."""
    z = beta * logp
    m = z.max(axis=1, keepdims=True)
    q = np.exp(z - m)
    s = q.sum(axis=1, keepdims=True)
    q /= s
    rows = np.arange(len(y))
    lse = (m + np.log(s))[:, 0]
    mean_l = (q * logp).sum(axis=1)
    var_l = (q * logp ** 2).sum(axis=1) - mean_l ** 2
    ly = logp[rows, y]
    return (float((lse - beta * ly).mean()), float((mean_l - ly).mean()),
            float(np.maximum(var_l, 0.0).mean()))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, *, tol: float = 1e-10,
                    max_iter: int = 200) -> float:
    """The temperature ``T`` in :data:`T_RANGE` minimising the log loss of
    ``apply_temperature(probs, T)`` on ``labels`` (the validation step of temperature scaling).

    The loss is convex in ``beta = 1/T`` (a log-sum-exp minus a linear term), so its slope is
    non-decreasing: Newton steps on the slope, kept inside a shrinking bracket and replaced by
    bisection when they would leave it, converge to the one minimum. Perfectly separated
    validation images (every slope negative) give the sharpest allowed ``T``.
    """
    y = np.asarray(labels, dtype=np.int64)
    logp = _log_probs(probs)
    if len(y) != len(logp) or len(y) == 0:
        raise ValueError(f"{len(y)} labels for {len(logp)} rows of probabilities")
    if y.min() < 0 or y.max() >= logp.shape[1]:
        raise ValueError(f"labels must be class indices in 0..{logp.shape[1] - 1}")
    lo, hi = 1.0 / T_RANGE[1], 1.0 / T_RANGE[0]
    if _nll_and_slope(logp, y, lo)[1] >= 0:
        return T_RANGE[1]
    if _nll_and_slope(logp, y, hi)[1] <= 0:
        return T_RANGE[0]
    beta = 1.0
    for _ in range(max_iter):
        _, g, h = _nll_and_slope(logp, y, beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        if abs(g) < tol or hi - lo < tol * max(1.0, beta):
            break
        step = beta - g / h if h > 0 else math.nan
        beta = step if lo < step < hi else math.sqrt(lo * hi)   # bisection in log space
    return 1.0 / beta


def cross_fitted_log_loss(probs: np.ndarray, labels: np.ndarray, folds: int = 5) -> float | None:
    """The validation log loss with every image scored by a temperature fitted on the other
    images (``folds`` interleaved parts): what the calibration is worth on images it did not
    see. ``None`` for fewer than ``2 * folds`` images."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) < 2 * folds:
        return None
    out = np.empty_like(p)
    part = np.arange(len(y)) % folds
    for k in range(folds):
        t = fit_temperature(p[part != k], y[part != k])
        out[part == k] = apply_temperature(p[part == k], t)
    return log_loss(out, y)


#: fewer validation images per class than this: the temperature is said to be uncertain
MIN_PER_CLASS = 2


def at_edge(t: float) -> bool:
    """A temperature at either end of :data:`T_RANGE` (the fit ran into the bound: perfectly
    separated validation images, or one class only)."""
    return t <= T_RANGE[0] * (1 + 1e-6) or t >= T_RANGE[1] / (1 + 1e-6)


def calibrate(probs: np.ndarray | None, labels: np.ndarray | None, method: str,
              note: str = "") -> Calibration:
    """Fit ``method`` on validation ``probs``/``labels`` and report what it does: the
    temperature and the validation log loss before, after and cross-fitted.

    A fitted temperature is applied only when it can be trusted: not at either end of
    :data:`T_RANGE` (there the validation images say nothing about the test images: a model
    right on all of them gets T = 0.01 and confident test mistakes), not when its
    cross-fitted loss (each fifth of the images scored with the T of the others) is no better
    than no calibration, and not when it would not lower the log loss as Kaggle scores it.
    Otherwise the result is ``method="none"`` with the fitted T and the reason. The edge, a
    fit on fewer than :data:`MIN_PER_CLASS` images per class and rows of zeros are
    ``warnings`` (the run says them and keeps them in ``summary.json["warnings"]``)."""
    method = check_calibrate(method) or "none"
    if method == "none" or probs is None or labels is None or not len(labels):
        return Calibration("none", note=note)
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    warnings = []
    zero = int((p.sum(axis=1) <= 0).sum()) if p.ndim == 2 else 0
    if zero:
        warnings.append(f"{zero} validation row(s) of probabilities were all zeros; read as "
                        "uniform")
    classes = p.shape[1] if p.ndim == 2 else 0
    if len(y) < MIN_PER_CLASS * classes:
        warnings.append(f"the temperature is fitted on {len(y)} validation images for {classes} "
                        f"classes (fewer than {MIN_PER_CLASS} per class): it may not hold on the "
                        "test images")
    before = log_loss(p, y)
    t = fit_temperature(p, y)
    after = log_loss(apply_temperature(p, t), y)
    cross = cross_fitted_log_loss(p, y)
    why = None
    if at_edge(t):
        cause = ("the model separates every validation image" if t < 1 else
                 "the validation images look like one class")
        why = (f"it is at the {'low' if t < 1 else 'high'} end of the range {T_RANGE[0]:g}-"
               f"{T_RANGE[1]:g} ({cause}), so they say nothing about the test images")
        warnings.append(f"temperature {t:.3g} {why}; no calibration is applied")
    elif cross is not None and not cross < before:
        why = (f"on images it was not fitted on it does not help (cross-fitted log loss "
               f"{cross:.4f}, uncalibrated {before:.4f})")
    elif not after <= before:   # only Kaggle's clipping can make the fitted T worse than 1
        why = f"it does not lower the log loss as Kaggle clips it ({before:.4f} -> {after:.4f})"
    common = dict(num_valid=int(len(y)), log_loss_before=float(before),
                  log_loss_cross_fitted=cross, warnings=tuple(warnings))
    if why is not None:
        return Calibration("none", 1.0, log_loss_after=float(before), fitted=float(t),
                           note=why if not note else f"{why}; {note}", **common)
    return Calibration("temperature", float(t), log_loss_after=float(after), note=note, **common)
