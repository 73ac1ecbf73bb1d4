"""Ensembles' math: votes, weights, metrics and the alignment of runs' predictions (numpy only).

Works on arrays and on :class:`~d2lkaggle.compete.runfolder.RunPredictions` (read by
attribute): it never reads or writes a file and never trains. The orchestration that trains
members lives in :mod:`d2lkaggle.compete.members`; combining finished run folders in
:mod:`d2lkaggle.compete.ensembles`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["VOTES", "EPS", "accuracy", "log_loss", "soft_vote", "hard_vote", "fit_weights",
           "parse_weights", "align_runs", "common_valid", "pooled_valid", "combine"]

VOTES = ("soft", "hard")

#: Kaggle's clipping for the multi-class log-loss
EPS = 1e-15



def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose largest probability is the label."""
    y = np.asarray(y, dtype=np.int64)
    return float((np.asarray(probs).argmax(axis=1) == y).mean()) if len(y) else math.nan

def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = EPS) -> float:
    """Kaggle's multi-class log-loss: rows renormalised, probabilities clipped to [eps, 1-eps]."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not len(y):
        return math.nan
    p = np.clip(normalized_rows(p), eps, 1 - eps)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def normalized_rows(p: np.ndarray) -> np.ndarray:
    """Each row of probabilities divided by its sum; a row of zeros (every probability
    underflowed) is uniform, as Kaggle's clipping makes it, never 0/0."""
    s = p.sum(axis=1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / p.shape[1])

def weight_vector(weights: Sequence[float] | None, k: int) -> np.ndarray:
    if weights is None:
        return np.full(k, 1.0 / k)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"{len(w)} weights for {k} members")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(w)}")
    return w / w.sum()

def _stack(probs: Sequence[np.ndarray]) -> np.ndarray:
    arr = [np.asarray(p, dtype=np.float64) for p in probs]
    if not arr:
        raise ValueError("no member predictions to combine")
    shapes = {a.shape for a in arr}
    if len(shapes) != 1 or arr[0].ndim != 2:
        raise ValueError(f"member predictions differ in shape: {sorted(shapes)}")
    return np.stack(arr)

def soft_vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None,
              geometric: bool = False) -> np.ndarray:
    """Soft voting: the (weighted) mean of the members' probabilities; ``geometric=True``
    takes the weighted geometric mean, renormalised per row."""
    p = _stack(probs)
    w = weight_vector(weights, len(p))
    if not geometric:
        return np.tensordot(w, p, axes=1)
    z = np.tensordot(w, np.log(np.clip(p, EPS, 1.0)), axes=1)
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)

def hard_vote(probs: Sequence[np.ndarray],
              weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hard voting: each member votes (with its weight) for its most probable class; a tie
    goes to the tied class with the largest mean probability. Returns ``(labels, shares)``,
    ``shares[i, c]`` the weight of the votes for class ``c`` (rows sum to 1)."""
    p = _stack(probs)
    w = weight_vector(weights, len(p))
    shares = np.zeros(p.shape[1:])
    rows = np.arange(p.shape[1])
    for wk, pk in zip(w, p):
        shares[rows, pk.argmax(axis=1)] += wk
    mean = np.tensordot(w, p, axes=1)
    top = np.isclose(shares, shares.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    labels = np.where(top, mean, -np.inf).argmax(axis=1)
    return labels, shares

def _objective(p: np.ndarray, y: np.ndarray, w: np.ndarray, geometric: bool):
    rows = np.arange(len(y))
    if not geometric:
        q = np.maximum(np.tensordot(w, p[:, rows, y], axes=1), EPS)
        return float(-np.log(q).mean()), -(p[:, rows, y] / q).mean(axis=1)
    logp = np.log(np.clip(p, EPS, 1.0))
    z = np.tensordot(w, logp, axes=1)
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    loss = float(-np.log(np.maximum(q[rows, y], EPS)).mean())
    grad = -(logp[:, rows, y] - (logp * q[None]).sum(axis=2)).mean(axis=1)
    return loss, grad

def fit_weights(probs: Sequence[np.ndarray], y: np.ndarray, geometric: bool = False,
                iters: int = 2000, tol: float = 1e-12) -> np.ndarray:
    """Ensemble weights on the simplex minimising the validation log-loss of the soft vote.

    Exponentiated gradient with a backtracking step: the weights stay >= 0 and sum to 1; the
    arithmetic-mean loss is convex in the weights, so this finds its minimum.
    """
    p = _stack(probs)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("no validation predictions to fit weights on")
    if len(y) != p.shape[1]:
        raise ValueError(f"{len(y)} labels for {p.shape[1]} rows of predictions")
    k = len(p)
    w = np.full(k, 1.0 / k)
    loss, grad = _objective(p, y, w, geometric)
    eta = 1.0
    for _ in range(iters):
        while True:
            cand = w * np.exp(-eta * (grad - grad.min()))
            cand /= cand.sum()
            c_loss, c_grad = _objective(p, y, cand, geometric)
            if c_loss <= loss or eta < 1e-12:
                break
            eta /= 2
        done = loss - c_loss < tol
        if c_loss <= loss:
            w, loss, grad = cand, c_loss, c_grad
        eta = min(eta * 2, 1e3)
        if done:
            break
    return w

def parse_weights(text: str | Sequence[float] | None, k: int) -> np.ndarray | str | None:
    """``--weights``: ``None`` (equal), ``"auto"`` or ``"w1,w2,..."`` (one per run, >= 0)."""
    if text is None:
        return None
    if isinstance(text, str):
        if text.strip().lower() == "auto":
            return "auto"
        try:
            vals = [float(t) for t in text.split(",")]
        except ValueError:
            raise ValueError(f"--weights must be 'auto' or numbers separated by commas, got "
                             f"{text!r}") from None
    else:
        vals = [float(t) for t in text]
    if len(vals) != k:
        raise ValueError(f"--weights gives {len(vals)} weights for {k} runs")
    return weight_vector(vals, k)

def align_runs(runs: Sequence[Any]) -> None:
    """Bring every run to the first run's class and test-id order; error naming the run."""
    ref = runs[0]
    seen: dict[str, str] = {}
    for r in runs:
        key = os.path.realpath(r.path)
        if key in seen:
            raise ValueError(f"run {r.path} is given twice")
        seen[key] = r.path
    comp = ref.summary.get("competition")
    for r in runs[1:]:
        if r.summary.get("competition") != comp:
            raise ValueError(f"run {r.path} is for competition {r.summary.get('competition')!r}, "
                             f"run {ref.path} for {comp!r}")
        if set(r.classes) != set(ref.classes) or len(r.classes) != len(ref.classes):
            missing = sorted(set(ref.classes) - set(r.classes))
            extra = sorted(set(r.classes) - set(ref.classes))
            raise ValueError(f"run {r.path} has other classes than {ref.path}: missing "
                             f"{missing[:5]}, extra {extra[:5]}")
        if set(r.test_ids) != set(ref.test_ids) or len(r.test_ids) != len(ref.test_ids):
            missing = sorted(set(ref.test_ids) - set(r.test_ids))
            extra = sorted(set(r.test_ids) - set(ref.test_ids))
            raise ValueError(f"run {r.path} predicts other test ids than {ref.path}: "
                             f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra "
                             f"(e.g. {extra[:3]})")
        cols = [r.classes.index(c) for c in ref.classes]
        pos = {i: n for n, i in enumerate(r.test_ids)}
        r.test_probs = r.test_probs[[pos[i] for i in ref.test_ids]][:, cols]
        r.test_ids, r.classes = list(ref.test_ids), list(ref.classes)
        if r.valid_probs is not None:
            r.valid_probs = r.valid_probs[:, cols]

def common_valid(runs: Sequence[Any]) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Ids every run validated on (first run's order), their labels and each run's rows."""
    if any(r.valid_probs is None for r in runs):
        return [], np.zeros(0, dtype=np.int64), []
    common = set(runs[0].valid_ids)
    for r in runs[1:]:
        common &= set(r.valid_ids)
    ids = [i for i in runs[0].valid_ids if i in common]
    index = {c: k for k, c in enumerate(runs[0].classes)}
    ref_labels = dict(zip(runs[0].valid_ids, runs[0].valid_labels))
    rows = []
    for r in runs:
        pos = {i: n for n, i in enumerate(r.valid_ids)}
        lab = dict(zip(r.valid_ids, r.valid_labels))
        bad = [i for i in ids if lab[i] != ref_labels[i]]
        if bad:
            raise ValueError(f"run {r.path} labels validation image {bad[0]!r} as "
                             f"{lab[bad[0]]!r}, run {runs[0].path} as {ref_labels[bad[0]]!r}: "
                             "were they trained on the same data?")
        rows.append(r.valid_probs[[pos[i] for i in ids]] if ids else
                    np.zeros((0, len(r.classes))))
    y = np.array([index[ref_labels[i]] for i in ids], dtype=np.int64)
    return ids, y, rows

def pooled_valid(runs: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each validation image's mean probability over the runs that validated on it (out-of-bag
    or out-of-fold predictions), in sorted id order."""
    index = {c: k for k, c in enumerate(runs[0].classes)}
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    label: dict[str, str] = {}
    for r in runs:
        if r.valid_probs is None:
            continue
        for i, c, p in zip(r.valid_ids, r.valid_labels, r.valid_probs):
            total[i] = total.get(i, 0) + p
            count[i] = count.get(i, 0) + 1
            label[i] = c
    ids = sorted(total)
    probs = np.array([total[i] / count[i] for i in ids]).reshape(len(ids), len(index))
    return ids, np.array([index[label[i]] for i in ids], dtype=np.int64), probs

def combine(probs: Sequence[np.ndarray], vote: str, w: np.ndarray, geometric: bool):
    if vote == "hard":
        labels, shares = hard_vote(probs, w)
        return labels, shares
    p = soft_vote(probs, w, geometric)
    return p.argmax(axis=1), p
