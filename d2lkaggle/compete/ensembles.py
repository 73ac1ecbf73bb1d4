"""Ensembles, bagging and k-fold cross-validation: how competitions are won, in every backend.

Every run folder keeps its predictions (:func:`save_run_predictions`):

* ``test_probs.npy`` — float32, one row per test image in the submission's id order;
* ``classes.json`` — the column order (a JSON list of class names);
* ``test_ids.json`` — the test ids of the rows (a JSON list);
* ``valid_probs.npy`` + ``valid_ids.json`` (``{"ids": [...], "labels": [...]}``, labels as class
  names) — when the run validated: the validated model's probabilities on its validation set.

These files hold nothing framework-specific, so runs of different backends and models vote
together (:func:`ensemble_runs`, ``d2lkaggle ensemble``). :func:`run_ensemble` trains K members
(``--ensemble K [--bagging]``), :func:`run_folds` a model per stratified fold (``--folds K``);
both write the same files at the top of their run folder, so an ensemble or a k-fold run can
itself be a member of a later ensemble. For a k-fold run ``valid_probs.npy`` holds the
out-of-fold predictions of ALL labelled images: two k-fold runs with the same seed (the same
folds) can have their weights fitted on every labelled image.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..utils.files import atomic_open, atomic_write_text

__all__ = ["RUN_FILES", "save_run_predictions", "RunPredictions", "load_run", "accuracy",
           "log_loss", "soft_vote", "hard_vote", "fit_weights", "parse_weights", "check_split",
           "bootstrap_split", "stratified_folds", "ensemble_runs", "run_ensemble", "run_folds",
           "VOTES", "MEMBER_VARIATIONS"]

#: what each run folder keeps for ensembles
RUN_FILES = ("test_probs.npy", "classes.json", "test_ids.json", "valid_probs.npy", "valid_ids.json")
VOTES = ("soft", "hard")
#: what may differ between the members of ``--ensemble K``
MEMBER_VARIATIONS = ("seed", "augment", "model")
#: Kaggle's clipping for the multi-class log-loss
EPS = 1e-15
_BAG_TAG = 0xBA6


# --------------------------------------------------------------------------- run files

def _save_npy(path: str, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def save_run_predictions(out: str, data: Any, test_probs: np.ndarray,
                         valid_probs: np.ndarray | None = None, *, tta: Any = None,
                         split: Any = None,
                         files: dict[str, str] | None = None) -> dict[str, Any]:
    """Write a run's predictions (the files ensembles combine), each atomically.

    ``data`` carries ``classes``, ``test_ids`` and, with ``valid_probs``, ``valid_ids`` and
    ``valid_iter.labels``. Returns the summary entries (``tta``, TTA valid metrics, the
    fingerprint of a given ``split``) and adds the paths to ``files``.
    """
    from ..train.tta import check_tta
    test_probs = np.asarray(test_probs, dtype=np.float32)
    if test_probs.shape != (len(data.test_ids), len(data.classes)):
        raise ValueError(f"test probabilities have shape {test_probs.shape}, expected "
                         f"({len(data.test_ids)}, {len(data.classes)})")
    paths = {"test_probs": os.path.join(out, "test_probs.npy"),
             "classes": os.path.join(out, "classes.json"),
             "test_ids": os.path.join(out, "test_ids.json")}
    _save_npy(paths["test_probs"], test_probs)
    atomic_write_text(paths["classes"], json.dumps(list(data.classes)) + "\n")
    atomic_write_text(paths["test_ids"], json.dumps(list(data.test_ids)) + "\n")
    extra: dict[str, Any] = {"tta": check_tta(tta)}
    if split is not None:
        extra["split"] = split_digest(split)
    if valid_probs is not None:
        y = np.asarray(data.valid_iter.labels, dtype=np.int64)
        vp = np.asarray(valid_probs, dtype=np.float32)
        if vp.shape != (len(data.valid_ids), len(data.classes)) or len(y) != len(vp):
            raise ValueError(f"valid probabilities have shape {vp.shape}, expected "
                             f"({len(data.valid_ids)}, {len(data.classes)})")
        paths["valid_probs"] = os.path.join(out, "valid_probs.npy")
        paths["valid_ids"] = os.path.join(out, "valid_ids.json")
        _save_npy(paths["valid_probs"], vp)
        atomic_write_text(paths["valid_ids"], json.dumps(
            {"ids": list(data.valid_ids), "labels": [data.classes[k] for k in y]}) + "\n")
        if extra["tta"] is not None:
            extra["tta_valid_acc"] = accuracy(vp, y)
            extra["tta_valid_loss"] = log_loss(vp, y)
    if files is not None:
        files.update(paths)
    return extra


@dataclass
class RunPredictions:
    """The predictions of one finished run folder."""

    path: str
    classes: list[str]
    test_ids: list[str]
    test_probs: np.ndarray
    valid_ids: list[str]
    valid_labels: list[str]
    valid_probs: np.ndarray | None
    summary: dict[str, Any]


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from e


def load_run(path: str) -> RunPredictions:
    """Read a finished run folder's predictions, checked for shape and consistency."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run folder not found: {path}")
    probs_path = os.path.join(path, "test_probs.npy")
    if not os.path.exists(probs_path):
        raise FileNotFoundError(
            f"{path} has no test_probs.npy (a run of an older d2lkaggle, or unfinished); "
            f"write it by running the same command again with --out {path} --resume "
            "(finished checkpoints are only re-used to predict)")
    summary_path = os.path.join(path, "summary.json")
    if not os.path.exists(summary_path):
        raise ValueError(f"{path} has no summary.json: the run did not finish; finish it with "
                         "--resume")
    summary = _read_json(summary_path, "run summary")
    classes = _read_json(os.path.join(path, "classes.json"), "class list")
    ids_path = os.path.join(path, "test_ids.json")
    if not os.path.exists(ids_path):
        raise FileNotFoundError(f"{path} has test_probs.npy but no test_ids.json; re-run it "
                                "with --resume")
    test_ids = [str(i) for i in _read_json(ids_path, "test id list")]
    try:
        probs = np.load(probs_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {probs_path}: {e}") from e
    if probs.shape != (len(test_ids), len(classes)):
        raise ValueError(f"{probs_path} has shape {probs.shape} but the run lists "
                         f"{len(test_ids)} test ids and {len(classes)} classes")
    v_ids: list[str] = []
    v_labels: list[str] = []
    v_probs = None
    vp_path = os.path.join(path, "valid_probs.npy")
    if os.path.exists(vp_path):
        meta = _read_json(os.path.join(path, "valid_ids.json"), "validation id list")
        v_ids, v_labels = [str(i) for i in meta["ids"]], [str(c) for c in meta["labels"]]
        v_probs = np.load(vp_path, allow_pickle=False)
        if v_probs.shape != (len(v_ids), len(classes)) or len(v_labels) != len(v_ids):
            raise ValueError(f"{vp_path} has shape {v_probs.shape} but valid_ids.json lists "
                             f"{len(v_ids)} ids and {len(v_labels)} labels")
        unknown = sorted(set(v_labels) - set(classes))
        if unknown:
            raise ValueError(f"{path}: validation labels {unknown[:5]} are not in classes.json")
    return RunPredictions(path, [str(c) for c in classes], test_ids, probs.astype(np.float64),
                          v_ids, v_labels, None if v_probs is None else v_probs.astype(np.float64),
                          summary)


# --------------------------------------------------------------------------- metrics and votes

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
    p = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def _weights(weights: Sequence[float] | None, k: int) -> np.ndarray:
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
    w = _weights(weights, len(p))
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
    w = _weights(weights, len(p))
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
    return _weights(vals, k)


# --------------------------------------------------------------------------- splits

def split_digest(split: tuple[Sequence[str], Sequence[str]] | None) -> str | None:
    """A short fingerprint of a given ``(train_ids, valid_ids)`` (repeats count) for the run
    configuration: a resumed member must train on the same images."""
    if split is None:
        return None
    import hashlib
    text = json.dumps([[str(i) for i in split[0]], [str(i) for i in split[1]]])
    return f"{len(split[0])}/{len(split[1])}:" + hashlib.sha1(text.encode()).hexdigest()[:16]


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


# --------------------------------------------------------------------------- combining runs

def _align(runs: Sequence[RunPredictions]) -> None:
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


def _common_valid(runs: Sequence[RunPredictions]) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
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


def _combine(probs: Sequence[np.ndarray], vote: str, w: np.ndarray, geometric: bool):
    if vote == "hard":
        labels, shares = hard_vote(probs, w)
        return labels, shares
    p = soft_vote(probs, w, geometric)
    return p.argmax(axis=1), p


def _competition(runs: Sequence[RunPredictions]):
    from ..specs.competitions import get_competition
    return get_competition(runs[0].summary["competition"])


def _write_outputs(out: str, comp, data_dir: str | None, classes: list[str], test_ids: list[str],
                   test_probs: np.ndarray, test_labels: np.ndarray,
                   valid: tuple[list[str], np.ndarray, np.ndarray] | None,
                   summary: dict[str, Any]) -> dict[str, Any]:
    """Write an ensemble's run files into ``out``: everything is written and validated in a
    temporary folder first, then moved in (summary.json last), so a failure leaves ``out`` as
    it was."""
    from .submission import validate_submission, write_label_submission, write_proba_submission
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ensemble-tmp-", dir=out)
    try:
        sample = os.path.join(data_dir, comp.sample_file) if data_dir else None
        sample = sample if sample and os.path.exists(sample) else None
        sub = os.path.join(tmp, "submission.csv")
        if comp.submission == "label":
            write_label_submission(test_ids, [classes[k] for k in test_labels], sub, sample=sample,
                                   id_column=comp.id_column, label_column=comp.label_column)
        else:
            write_proba_submission(test_ids, test_probs, classes, sub, sample=sample,
                                   id_column=comp.id_column)
        if sample:
            validate_submission(sub, sample, kind=comp.submission)

        class _Data:  # what save_run_predictions reads
            pass
        d = _Data()
        d.classes, d.test_ids = classes, test_ids
        vprobs = None
        if valid is not None and len(valid[0]):
            d.valid_ids, vprobs = valid[0], valid[2]
            d.valid_iter = _Data()
            d.valid_iter.labels = valid[1]
        files: dict[str, str] = {}
        save_run_predictions(tmp, d, test_probs, vprobs, files=files)
        names = ["submission.csv"] + [os.path.basename(p) for p in files.values()]
        final = {"submission": os.path.join(out, "submission.csv"),
                 **{k: os.path.join(out, os.path.basename(p)) for k, p in files.items()},
                 "summary": os.path.join(out, "summary.json")}
        summary = dict(summary, files=final, sample_checked=sample)
        text = json.dumps(summary, indent=2) + "\n"
        # a stale valid_probs.npy of an earlier ensemble must not outlive this one
        stale = [f for f in ("valid_probs.npy", "valid_ids.json") if f not in names]
        if os.path.exists(final["summary"]):
            os.unlink(final["summary"])
        for f in stale:
            if os.path.exists(os.path.join(out, f)):
                os.unlink(os.path.join(out, f))
        for f in names:
            os.replace(os.path.join(tmp, f), os.path.join(out, f))
        atomic_write_text(final["summary"], text)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_out(out: str, members: Sequence[str], kind: str) -> str:
    out = os.path.abspath(out)
    real = os.path.realpath(out)
    for m in members:
        if os.path.realpath(m) == real:
            raise ValueError(f"--out {out} is one of the runs being combined; choose another folder")
    s = os.path.join(out, "summary.json")
    if os.path.exists(s):
        try:
            prev = _read_json(s, "summary")
        except ValueError:
            prev = {}
        if prev.get("kind") not in ("ensemble", "bagging", "folds") and \
                os.path.isdir(os.path.join(out, "checkpoints")):
            raise ValueError(f"--out {out} holds a training run (summary.json, checkpoints/); "
                             f"write the {kind} to another folder")
    return out


def _member_metrics(runs, ids, y, rows) -> list[dict[str, Any]]:
    out = []
    for r, p in zip(runs, rows or [None] * len(runs)):
        recipe = r.summary.get("recipe") or {}
        m = {"run": r.path, "backend": r.summary.get("backend"), "model": recipe.get("model"),
             "augment": recipe.get("augment"), "num_valid": len(r.valid_ids)}
        if p is not None and len(ids):
            m.update(valid_acc=accuracy(p, y), valid_loss=log_loss(p, y))
        out.append(m)
    return out


def ensemble_runs(run_dirs: Sequence[str], out: str, *, vote: str = "soft",
                  weights: str | Sequence[float] | None = None, geometric: bool = False,
                  data_dir: str | None = None,
                  log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Combine finished runs (any backend, any model) into one submission in ``out``.

    ``vote="soft"``: the (weighted) mean of probabilities (``geometric=True``: geometric mean);
    ``"hard"``: majority of argmaxes, ties broken by the mean probability. ``weights``: ``None``
    (equal), one per run, or ``"auto"`` (fitted on the runs' common validation images by
    minimising the log-loss). The submission is checked against the competition's sample file
    (from ``data_dir`` or the first run's summary). Returns the summary written to
    ``out/summary.json``.
    """
    t0 = time.perf_counter()
    if vote not in VOTES:
        raise ValueError(f"--vote must be one of {VOTES}, got {vote!r}")
    if geometric and vote != "soft":
        raise ValueError("--geometric is a soft vote: it cannot be combined with --vote hard")
    if len(run_dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 runs, got {len(run_dirs)}: "
                         + " ".join(run_dirs))
    out = _check_out(out, run_dirs, "ensemble")
    runs = [load_run(d) for d in run_dirs]
    _align(runs)
    comp = _competition(runs)
    if vote == "hard" and comp.submission != "label":
        raise ValueError(f"{comp.name} is scored on probabilities; a hard vote gives labels only: "
                         "use --vote soft")
    data_dir = data_dir or runs[0].summary.get("data_dir")
    if data_dir and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data folder {data_dir} (from {runs[0].path}/summary.json) is "
                                "gone; pass --data-dir to check the submission against its "
                                "sample file")
    ids, y, rows = _common_valid(runs)
    w = parse_weights(weights, len(runs))
    fitted = isinstance(w, str)
    if fitted:
        if not len(ids):
            raise ValueError("--weights auto needs validation predictions that all runs share; "
                             + ("run(s) " + ", ".join(r.path for r in runs if r.valid_probs is None)
                                + " did not validate" if any(r.valid_probs is None for r in runs)
                                else "these runs validated on different images (folds or bagging "
                                     "members? then combine runs made with the same seed)")
                             + "; give --weights w1,w2,... instead")
        w = fit_weights(rows, y, geometric)
    w = _weights(w, len(runs))
    labels, probs = _combine([r.test_probs for r in runs], vote, w, geometric)
    valid = None
    summary: dict[str, Any] = {
        "kind": "ensemble", "competition": comp.name, "backend": "+".join(
            sorted({str(r.summary.get("backend")) for r in runs})),
        "data_dir": data_dir, "vote": vote, "geometric": geometric,
        "weights": [float(x) for x in w], "weights_fitted": fitted,
        "members": _member_metrics(runs, ids, y, rows), "num_classes": len(runs[0].classes),
        "num_test": len(runs[0].test_ids), "num_common_valid": len(ids),
        "valid_acc": None, "valid_loss": None}
    if len(ids):
        v_labels, v_probs = _combine(rows, vote, w, geometric)
        summary["valid_acc"] = float((v_labels == y).mean())
        # a hard vote's shares are not probabilities (zeros): no log-loss for it
        summary["valid_loss"] = log_loss(v_probs, y) if vote == "soft" else None
        valid = (ids, y, v_probs)
    summary["timings"] = {"total_s": round(time.perf_counter() - t0, 2)}
    summary = _write_outputs(out, comp, data_dir, runs[0].classes, runs[0].test_ids, probs,
                             labels, valid, summary)
    if log:
        log(format_members(summary))
    return summary


def format_members(summary: dict[str, Any]) -> str:
    """The members' and the ensemble's validation figures as a small text table."""
    def f(x):
        return "     -" if x is None else f"{x:.4f}"
    n = summary.get("num_common_valid")
    lines = [f"{'run':50s} {'weight':>7s} {'acc':>7s} {'logloss':>8s}"
             + (f"   (on the {n} validation images all runs share)" if n else "")]
    for m, w in zip(summary["members"], summary.get("weights") or [None] * len(summary["members"])):
        lines.append(f"{m['run'][-50:]:50s} {f(w):>7s} {f(m.get('valid_acc')):>7s} "
                     f"{f(m.get('valid_loss')):>8s}")
    how = {"ensemble": f"{summary.get('vote', 'soft')} vote"
           + (", geometric" if summary.get("geometric") else ""),
           "bagging": "bagging, soft vote", "folds": "k-fold, mean"}.get(summary["kind"], "")
    lines.append(f"{'ensemble (' + how + ')':50s} {'':>7s} "
                 f"{f(summary.get('valid_acc')):>7s} {f(summary.get('valid_loss')):>8s}")
    sizes = [m.get("num_valid") or 0 for m in summary["members"]]
    if summary["kind"] == "ensemble" and n is not None and sizes and n < min(sizes):
        lines.append(f"note: the runs share only {n} of their {min(sizes)}+ validation images "
                     "(made with different --seed or --valid-ratio?); the figures above use "
                     "those only")
    for k in ("oob_acc", "oof_acc"):
        if summary.get(k) is not None:
            what = "out-of-bag" if k == "oob_acc" else "out-of-fold"
            lines.append(f"{what} over {summary.get(k[:3] + '_images')} labelled images: acc "
                         f"{summary[k]:.4f}, log-loss {summary[k[:3] + '_loss']:.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- training members

def _labels(comp, data_dir: str) -> dict[str, str]:
    from ..data.labels import read_csv_labels
    return read_csv_labels(os.path.join(data_dir, comp.labels_file))


def _finished(folder: str) -> bool:
    return all(os.path.exists(os.path.join(folder, f))
               for f in ("summary.json", "test_probs.npy", "test_ids.json"))


def _plan(out: str, plan: dict[str, Any], resume: bool) -> None:
    """Record what the members are; ``--resume`` refuses a folder planned differently."""
    path = os.path.join(out, "ensemble.json")
    if resume and os.path.exists(path):
        old = _read_json(path, "ensemble plan")
        diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if diff:
            k = diff[0]
            raise ValueError(f"--resume: {path} was started with {k}={old.get(k)!r}, now "
                             f"{k}={plan.get(k)!r}; use the same settings or another --out")
    os.makedirs(out, exist_ok=True)
    atomic_write_text(path, json.dumps(plan, indent=2, sort_keys=True) + "\n")


def _train_members(run_one: Callable[..., dict], comp, data_dir: str, out: str, sub: str,
                   splits: list, seeds: list[int], *, resume: bool, retrain: bool,
                   log, run_kw: dict[str, Any],
                   variants: list[dict[str, Any]] | None = None) -> list[str]:
    folders = []
    variants = variants or [{} for _ in splits]
    for k, (split, seed, variant) in enumerate(zip(splits, seeds, variants)):
        folder = os.path.join(out, sub, str(k))
        folders.append(folder)
        if resume and _finished(folder):
            if log:
                log(f"{sub} {k + 1}/{len(splits)}: finished earlier in {folder}")
            continue
        if log:
            what = ", ".join([f"seed {seed}"] + [f"{a} {b}" for a, b in variant.items()])
            log(f"--- {sub[:-1] if sub.endswith('s') else sub} {k + 1}/{len(splits)} ({what}) "
                f"→ {folder}")
        run_one(comp, data_dir, out=folder, seed=seed, split=split, resume=resume,
                retrain=retrain, log=log, **run_kw, **variant)
    return folders


def _check_count(k: Any, flag: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"{flag} must be an integer >= 2 (an ensemble needs two members), "
                         f"got {k!r}")
    return int(k)


def _run_kw_plan(run_kw: dict[str, Any]) -> dict[str, Any]:
    skip = {"progress", "num_workers", "log"}
    return {k: v for k, v in sorted(run_kw.items()) if k not in skip and v is not None}


def _parse_values(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    vals = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    if not vals or any(not v for v in vals):
        raise ValueError(f"--members-values must be names separated by commas, got {values!r}")
    return vals


def member_variants(vary: str, k: int, comp: Any, values: str | Sequence[str] | None = None,
                    run_one: Callable | None = None) -> list[dict[str, Any]]:
    """What each of ``k`` members overrides besides its seed: nothing (``vary="seed"``), an
    augmentation preset (``"augment"``) or a model (``"model"``), cycling through ``values``
    (default: every augmentation preset but ``none``; the chapter's model plus the write-up's
    ``cnn_elu`` for fixed-size competitions). Errors clearly when this version lacks them."""
    import inspect
    vals = _parse_values(values)
    if vary == "seed":
        if vals:
            raise ValueError("--members-values needs --members-vary augment or model")
        return [{} for _ in range(k)]
    key = "augment" if vary == "augment" else "model"
    try:
        if key == "augment":
            from ..data.transforms import PRESETS as names  # type: ignore[attr-defined]
            default = [p for p in names if p != "none"]
        else:
            from ..models.table import MODEL_NAMES as names  # type: ignore[attr-defined]
            default = ([comp.recipe.model, "cnn_elu"] if comp.fixed_size and "cnn_elu" in names
                       else None)
    except ImportError:
        names = default = None
    params = inspect.signature(run_one).parameters.values() if run_one else []
    takes = any(p.name == key or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if names is None or (run_one is not None and not takes):
        raise ValueError(f"--members-vary {vary} is not available in this version of d2lkaggle "
                         f"(it has no {'augmentation presets' if key == 'augment' else 'model table'}"
                         "); use --members-vary seed")
    vals = vals or default
    if not vals:
        raise ValueError(f"--members-vary model: give the models with --members-values "
                         f"(from {', '.join(names)})")
    bad = [v for v in vals if v not in names]
    if bad:
        raise ValueError(f"--members-values: unknown {key} {bad[0]!r}; choose from "
                         f"{', '.join(names)}")
    return [{key: vals[m % len(vals)]} for m in range(k)]


def run_ensemble(competition: Any, data_dir: str, *, members: int, bagging: bool = False,
                 vary: str = "seed", values: str | Sequence[str] | None = None,
                 out: str | None = None, seed: int = 0,
                 resume: bool = False, retrain: bool = True,
                 log: Callable[[str], Any] | None = print, **run_kw: Any) -> dict[str, Any]:
    """``--ensemble K``: train K members under ``out/members/k/`` and combine them (soft vote).

    Members differ by seed (``seed + k``); without ``bagging`` they share the book's
    train/valid split (so the ensemble's valid accuracy is measured on every validation image)
    and retrain on all labels as usual. With ``bagging`` member ``k`` trains on a bootstrap
    sample of all labelled images and validates on its out-of-bag images (no retrain); the
    summary adds the ensemble's out-of-bag accuracy (each image scored by the members that
    did not see it). ``resume=True`` skips finished members and continues the first
    unfinished one from its checkpoints. Other keywords go to
    :func:`d2lkaggle.compete.run.run_competition`.
    """
    from ..specs.competitions import get_competition
    from .run import run_competition
    from ..utils.registry import canonical_name
    from ..data.reorg import split_train_valid
    t0 = time.perf_counter()
    k = _check_count(members, "--ensemble")
    if vary not in MEMBER_VARIATIONS:
        raise ValueError(f"--members-vary must be one of {MEMBER_VARIATIONS}, got {vary!r}")
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    variants = member_variants(vary, k, comp, values, run_competition)
    backend = canonical_name(run_kw.pop("backend", "torch"))
    out = os.path.abspath(out or os.path.join(
        "runs", f"{comp.name}-{backend}-{'bagging' if bagging else 'ensemble'}{k}"))
    labels = _labels(comp, data_dir)
    if bagging:
        splits = [bootstrap_split(sorted(labels), seed + m) for m in range(k)]
    else:
        ratio = run_kw.get("valid_ratio")
        ratio = comp.recipe.valid_ratio if ratio is None else ratio
        # one split for all members: their validation rows are the same images
        splits = [split_train_valid(labels, ratio, seed) if ratio > 0 else None] * k
    _plan(out, {"kind": "bagging" if bagging else "ensemble", "members": k, "vary": vary,
                "variants": variants,
                "seed": seed, "backend": backend, "competition": comp.name,
                "retrain": retrain and not bagging, **_run_kw_plan(run_kw)}, resume)
    folders = _train_members(run_competition, comp, data_dir, out, "members", splits,
                             [seed + m for m in range(k)], resume=resume,
                             retrain=retrain and not bagging, log=log,
                             run_kw=dict(run_kw, backend=backend), variants=variants)
    runs = [load_run(f) for f in folders]
    _align(runs)
    ids, y, rows = _common_valid(runs)
    w = _weights(None, k)
    labels_t, probs = _combine([r.test_probs for r in runs], "soft", w, False)
    summary = _group_summary("bagging" if bagging else "ensemble", comp, data_dir, runs, w)
    summary.update(members_vary=vary, num_common_valid=len(ids), members=_member_metrics(
        runs, ids, y, rows))
    valid = None
    if len(ids):
        vp = soft_vote(rows, w)
        summary.update(valid_acc=accuracy(vp, y), valid_loss=log_loss(vp, y))
        valid = (ids, y, vp)
    if bagging:
        oob = _pooled_valid(runs)
        summary.update(oob_acc=accuracy(oob[2], oob[1]), oob_loss=log_loss(oob[2], oob[1]),
                       oob_images=len(oob[0]), num_labelled=len(labels))
        valid = oob  # what a later ensemble fits weights on
    return _finish(out, comp, data_dir, runs, probs, labels_t, valid, summary, t0, log)


def run_folds(competition: Any, data_dir: str, *, folds: int, out: str | None = None,
              seed: int = 0, resume: bool = False,
              log: Callable[[str], Any] | None = print, **run_kw: Any) -> dict[str, Any]:
    """``--folds K``: stratified K-fold, one model per fold under ``out/folds/k/``.

    Fold ``k`` validates on the k-th part of :func:`stratified_folds` and trains on the rest
    (no retrain). The summary holds the out-of-fold accuracy and log-loss over ALL labelled
    images (``oof_acc``, ``oof_loss``); ``valid_probs.npy`` the out-of-fold probabilities;
    the submission the folds' averaged test probabilities. ``resume`` as in
    :func:`run_ensemble`.
    """
    from ..specs.competitions import get_competition
    from .run import run_competition
    from ..utils.registry import canonical_name
    t0 = time.perf_counter()
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"--folds must be an integer >= 2 (K-fold needs two folds), got {folds!r}")
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    run_kw.pop("retrain", None)
    backend = canonical_name(run_kw.pop("backend", "torch"))
    out = os.path.abspath(out or os.path.join("runs", f"{comp.name}-{backend}-folds{folds}"))
    labels = _labels(comp, data_dir)
    parts = stratified_folds(labels, int(folds), seed)
    all_ids = sorted(labels)
    splits = []
    for part in parts:
        held = set(part)
        splits.append(([i for i in all_ids if i not in held], part))
    _plan(out, {"kind": "folds", "folds": int(folds), "seed": seed, "backend": backend,
                "competition": comp.name, **_run_kw_plan(run_kw)}, resume)
    folders = _train_members(run_competition, comp, data_dir, out, "folds", splits,
                             [seed + m for m in range(folds)], resume=resume, retrain=False,
                             log=log, run_kw=dict(run_kw, backend=backend))
    runs = [load_run(f) for f in folders]
    _align(runs)
    w = _weights(None, len(runs))
    labels_t, probs = _combine([r.test_probs for r in runs], "soft", w, False)
    oof = _pooled_valid(runs)
    if len(oof[0]) != len(labels):
        raise RuntimeError(f"out-of-fold predictions cover {len(oof[0])} of {len(labels)} "
                           "labelled images")
    summary = _group_summary("folds", comp, data_dir, runs, w)
    summary.update(
        folds=int(folds), members=[dict(m, valid_acc=r.summary.get("valid_acc"),
                                        valid_loss=r.summary.get("valid_loss"))
                                   for m, r in zip(_member_metrics(runs, [], None, None), runs)],
        oof_acc=accuracy(oof[2], oof[1]), oof_loss=log_loss(oof[2], oof[1]),
        oof_images=len(oof[0]), num_labelled=len(labels))
    summary["valid_acc"], summary["valid_loss"] = summary["oof_acc"], summary["oof_loss"]
    return _finish(out, comp, data_dir, runs, probs, labels_t, oof, summary, t0, log)


def _finish(out, comp, data_dir, runs, probs, labels_t, valid, summary, t0, log) -> dict[str, Any]:
    """Write a trained group's combined files (see :func:`_write_outputs`) and report."""
    summary["timings"] = _timings(runs, t0)
    summary = _write_outputs(out, comp, data_dir, runs[0].classes, runs[0].test_ids, probs,
                             labels_t, valid, summary)
    if log:
        log(format_members(summary))
    return summary


def _pooled_valid(runs: Sequence[RunPredictions]) -> tuple[list[str], np.ndarray, np.ndarray]:
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


def _group_summary(kind: str, comp, data_dir: str, runs, w) -> dict[str, Any]:
    rates = [r.summary.get("examples_per_sec") for r in runs]
    rates = [x for x in rates if x is not None]
    return {"kind": kind, "competition": comp.name,
            "backend": "+".join(sorted({str(r.summary.get("backend")) for r in runs})),
            "data_dir": os.path.abspath(data_dir), "vote": "soft", "geometric": False,
            "weights": [float(x) for x in w], "weights_fitted": False,
            "num_classes": len(runs[0].classes), "num_test": len(runs[0].test_ids),
            "tta": runs[0].summary.get("tta"), "recipe": runs[0].summary.get("recipe"),
            "seed": runs[0].summary.get("seed"), "valid_acc": None, "valid_loss": None,
            "examples_per_sec": float(np.mean(rates)) if rates else None}


def _timings(runs, t0: float) -> dict[str, float]:
    members = [float((r.summary.get("timings") or {}).get("total_s") or 0.0) for r in runs]
    return {"members_s": round(sum(members), 2), "total_s": round(time.perf_counter() - t0, 2)}
