"""``--ensemble K`` (bagging too) and ``--folds K``: train the members, then combine them.

Members are whole runs (:func:`d2lkaggle.compete.run.run_competition`) in ``out/members/k/`` or
``out/folds/k/``; the combined submission and predictions go to the top of ``out``
(:func:`d2lkaggle.compete.ensembles.write_outputs`). For a k-fold run ``valid_probs.npy`` holds
the out-of-fold predictions of ALL labelled images: two k-fold runs with the same seed (the same
folds) can have their weights fitted on every labelled image.
"""
from __future__ import annotations

import inspect
import json
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..data.labels import read_csv_labels
from ..data.splits import bootstrap_split, split_train_valid, stratified_folds
from ..specs.competitions import get_competition
from ..utils.files import atomic_write_text
from ..utils.registry import canonical_name
from .calibration import Calibration, resolve_calibration
from .ensembles import calibrate_vote, format_members, member_metrics, write_outputs
from .run import run_competition
from .runfolder import load_run, read_json
from .voting import (
    accuracy,
    align_runs,
    combine,
    common_valid,
    log_loss,
    pooled_valid,
    soft_vote,
    weight_vector,
)

__all__ = ["run_ensemble", "run_folds", "member_variants", "MEMBER_VARIATIONS"]

#: what may differ between the members of ``--ensemble K``
MEMBER_VARIATIONS = ("seed", "augment", "model")



def _labels(comp, data_dir: str) -> dict[str, str]:
    return read_csv_labels(os.path.join(data_dir, comp.labels_file))

def _finished(folder: str) -> bool:
    return all(os.path.exists(os.path.join(folder, f))
               for f in ("summary.json", "test_probs.npy", "test_ids.json"))

def _plan(out: str, plan: dict[str, Any], resume: bool) -> None:
    """Record what the members are; ``--resume`` refuses a folder planned differently."""
    path = os.path.join(out, "ensemble.json")
    if resume and os.path.exists(path):
        old = read_json(path, "ensemble plan")
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
    skip = {"progress", "verbose", "num_workers", "log", "estimate"}
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
    t0 = time.perf_counter()
    k = _check_count(members, "--ensemble")
    if vary not in MEMBER_VARIATIONS:
        raise ValueError(f"--members-vary must be one of {MEMBER_VARIATIONS}, got {vary!r}")
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    variants = member_variants(vary, k, comp, values, run_competition)
    if vary != "seed" and run_kw.get(vary) is not None:
        raise ValueError(f"--{vary} does not apply to --members-vary {vary}, where each member "
                         f"has its own (--members-values): drop --{vary}")
    if bagging:
        _check_own_split("--bagging", "validates each member on its out-of-bag images and "
                         "never retrains", retrain, run_kw)
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
    align_runs(runs)
    ids, y, rows = common_valid(runs)
    w = weight_vector(None, k)
    labels_t, probs = combine([r.test_probs for r in runs], "soft", w, False)
    summary = _group_summary("bagging" if bagging else "ensemble", comp, data_dir, runs, w)
    summary.update(members_vary=vary, num_common_valid=len(ids), members=member_metrics(
        runs, ids, y, rows))
    valid = None
    summary["calibration"] = _members_calibrated(run_kw.get("calibrate"), comp, "bagging"
                                                 if bagging else None)
    if len(ids):
        vp = soft_vote(rows, w)
        if not bagging:   # one split: the vote's validation rows combine what its test rows do
            method, note = resolve_calibration(run_kw.get("calibrate"), comp, True)
            cal, probs, vp = calibrate_vote(vp, y, probs, method, note)
            summary["calibration"] = cal.to_json()
            summary["warnings"] = [f"calibration: {w}" for w in cal.warnings]
        summary.update(valid_acc=accuracy(vp, y), valid_loss=log_loss(vp, y))
        valid = (ids, y, vp)
    if bagging:
        oob = pooled_valid(runs)
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
    t0 = time.perf_counter()
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"--folds must be an integer >= 2 (K-fold needs two folds), got {folds!r}")
    comp = get_competition(competition) if isinstance(competition, str) else competition
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no training recipe yet ({comp.notes})")
    _check_own_split("--folds", "validates each fold on its part and never retrains",
                     run_kw.pop("retrain", True), run_kw)
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
    align_runs(runs)
    w = weight_vector(None, len(runs))
    labels_t, probs = combine([r.test_probs for r in runs], "soft", w, False)
    oof = pooled_valid(runs)
    if len(oof[0]) != len(labels):
        raise RuntimeError(f"out-of-fold predictions cover {len(oof[0])} of {len(labels)} "
                           "labelled images")
    summary = _group_summary("folds", comp, data_dir, runs, w)
    summary["calibration"] = _members_calibrated(run_kw.get("calibrate"), comp, "folds")
    summary.update(
        folds=int(folds), members=[dict(m, valid_acc=r.summary.get("valid_acc"),
                                        valid_loss=r.summary.get("valid_loss"))
                                   for m, r in zip(member_metrics(runs, [], None, None), runs)],
        oof_acc=accuracy(oof[2], oof[1]), oof_loss=log_loss(oof[2], oof[1]),
        oof_images=len(oof[0]), num_labelled=len(labels))
    summary["valid_acc"], summary["valid_loss"] = summary["oof_acc"], summary["oof_loss"]
    return _finish(out, comp, data_dir, runs, probs, labels_t, oof, summary, t0, log)

def _check_own_split(flag: str, rule: str, retrain: Any, run_kw: dict[str, Any]) -> None:
    """Bagging and k-fold choose each member's validation images and never retrain:
    ``--valid-ratio`` and ``--no-retrain`` would be recorded without being used, so each is
    refused in one line."""
    if run_kw.get("valid_ratio") is not None:
        raise ValueError(f"--valid-ratio does not apply to {flag}, which {rule}: drop "
                         "--valid-ratio")
    if retrain is False:
        raise ValueError(f"--no-retrain does not apply to {flag}, which {rule}: drop "
                         "--no-retrain")

def _members_calibrated(calibrate: Any, comp, kind: str | None) -> dict[str, Any]:
    """The calibration entry of a group whose vote is not re-calibrated: bagging's
    out-of-bag and k-fold's out-of-fold rows are means over fewer members than the test
    rows (one fold model against all K), so a temperature fitted on them would not fit the
    test vote; each member is calibrated on its own validation images instead."""
    method, _ = resolve_calibration(calibrate, comp, True)
    why = (f"{kind}: each member calibrated on its own held-out images ({method}); the mean "
           "is not re-calibrated (its held-out rows average fewer members than its test rows)"
           if kind else "the members share no validation images")
    return Calibration("none", note=why).to_json()

def _finish(out, comp, data_dir, runs, probs, labels_t, valid, summary, t0, log) -> dict[str, Any]:
    """Write a trained group's combined files (see :func:`_write_outputs`) and report."""
    summary["timings"] = _timings(runs, t0)
    summary = write_outputs(out, comp, data_dir, runs[0].classes, runs[0].test_ids, probs,
                             labels_t, valid, summary)
    if log:
        log(format_members(summary))
    return summary

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
