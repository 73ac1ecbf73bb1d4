"""``d2lkaggle ensemble``: finished run folders (any backend, any model) combined into one submission.

Every run folder keeps its predictions (:mod:`d2lkaggle.compete.runfolder`), so runs of
different backends and models vote together. The votes and the weights are
:mod:`d2lkaggle.compete.voting`; training the members of ``--ensemble K`` / ``--folds K`` is
:mod:`d2lkaggle.compete.members`. Both write the same files at the top of their run folder
(:func:`write_outputs`), so an ensemble or a k-fold run can itself be a member of a later one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..specs.competitions import get_competition
from ..utils.files import atomic_write_text
from .calibration import Calibration, calibrate, resolve_calibration
from .runfolder import RunPredictions, load_run, read_json, save_run_predictions
from .submission import (
    validate_submission,
    write_label_submission,
    write_proba_submission,
)
from .voting import (
    VOTES,
    accuracy,
    align_runs,
    combine,
    common_valid,
    fit_weights,
    log_loss,
    parse_weights,
    weight_vector,
)

__all__ = ["ensemble_runs", "format_members", "write_outputs"]


def _competition(runs: Sequence[RunPredictions]):
    return get_competition(runs[0].summary["competition"])

def write_outputs(out: str, comp, data_dir: str | None, classes: list[str], test_ids: list[str],
                   test_probs: np.ndarray, test_labels: np.ndarray,
                   valid: tuple[list[str], np.ndarray, np.ndarray] | None,
                   summary: dict[str, Any]) -> dict[str, Any]:
    """Write an ensemble's run files into ``out``: everything is written and validated in a
    temporary folder first, then moved in (summary.json last), so a failure leaves ``out`` as
    it was."""
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
        if summary.get("calibration"):
            files["calibration"] = os.path.join(tmp, "calibration.json")
            atomic_write_text(files["calibration"],
                              json.dumps(summary["calibration"], indent=2) + "\n")
        names = ["submission.csv"] + [os.path.basename(p) for p in files.values()]
        final = {"submission": os.path.join(out, "submission.csv"),
                 **{k: os.path.join(out, os.path.basename(p)) for k, p in files.items()},
                 "summary": os.path.join(out, "summary.json")}
        summary = dict(summary, files=final, sample_checked=sample)
        text = json.dumps(summary, indent=2) + "\n"
        # a stale valid_probs.npy of an earlier ensemble must not outlive this one
        stale = [f for f in ("valid_probs.npy", "valid_ids.json", "calibration.json")
                 if f not in names]
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
            prev = read_json(s, "summary")
        except ValueError:
            prev = {}
        if prev.get("kind") not in ("ensemble", "bagging", "folds") and \
                os.path.isdir(os.path.join(out, "checkpoints")):
            raise ValueError(f"--out {out} holds a training run (summary.json, checkpoints/); "
                             f"write the {kind} to another folder")
    return out

def member_metrics(runs, ids, y, rows) -> list[dict[str, Any]]:
    out = []
    for r, p in zip(runs, rows or [None] * len(runs)):
        recipe = r.summary.get("recipe") or {}
        m = {"run": r.path, "backend": r.summary.get("backend"), "model": recipe.get("model"),
             "augment": recipe.get("augment"), "num_valid": len(r.valid_ids)}
        if p is not None and len(ids):
            m.update(valid_acc=accuracy(p, y), valid_loss=log_loss(p, y))
        out.append(m)
    return out

def _check_vote(run_dirs: Sequence[str], vote: str, geometric: bool,
                calibrate: str | None) -> None:
    """The settings of :func:`ensemble_runs`, refused before any run folder is read."""
    if vote not in VOTES:
        raise ValueError(f"--vote must be one of {VOTES}, got {vote!r}")
    if geometric and vote != "soft":
        raise ValueError("--geometric is a soft vote: it cannot be combined with --vote hard")
    if len(run_dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 runs, got {len(run_dirs)}: "
                         + " ".join(run_dirs))
    if vote == "hard" and calibrate == "temperature":
        raise ValueError("--calibrate temperature rescales probabilities; a hard vote has none: "
                         "use --vote soft or --calibrate none")


def ensemble_runs(run_dirs: Sequence[str], out: str, *, vote: str = "soft",
                  weights: str | Sequence[float] | None = None, geometric: bool = False,
                  data_dir: str | None = None, calibrate: str | None = None,
                  log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Combine finished runs (any backend, any model) into one submission in ``out``.

    ``vote="soft"``: the (weighted) mean of probabilities (``geometric=True``: geometric mean);
    ``"hard"``: majority of argmaxes, ties broken by the mean probability. ``weights``: ``None``
    (equal), one per run, or ``"auto"`` (fitted on the runs' common validation images by
    minimising the log-loss). The submission is checked against the competition's sample file
    (from ``data_dir`` or the first run's summary). ``calibrate`` (``None``: the
    competition's default, temperature for Dog Breed) fits one temperature on the combined
    probabilities of the common validation images and applies it to the combined test
    probabilities (:func:`calibrate_vote`). Returns the summary written to
    ``out/summary.json``.
    """
    t0 = time.perf_counter()
    _check_vote(run_dirs, vote, geometric, calibrate)
    out = _check_out(out, run_dirs, "ensemble")
    runs = [load_run(d) for d in run_dirs]
    align_runs(runs)
    comp = _competition(runs)
    if vote == "hard" and comp.submission != "label":
        raise ValueError(f"{comp.name} is scored on probabilities; a hard vote gives labels only: "
                         "use --vote soft")
    data_dir = data_dir or runs[0].summary.get("data_dir")
    if data_dir and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data folder {data_dir} (from {runs[0].path}/summary.json) is "
                                "gone; pass --data-dir to check the submission against its "
                                "sample file")
    ids, y, rows = common_valid(runs)
    method, note = resolve_calibration(
        calibrate, comp, bool(len(ids)) and vote == "soft",
        "these runs share no validation images (runs without validation, or folds/bagging "
        "members) to fit it on")
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
    w = weight_vector(w, len(runs))
    labels, probs = combine([r.test_probs for r in runs], vote, w, geometric)
    valid = None
    summary: dict[str, Any] = {
        "kind": "ensemble", "competition": comp.name, "backend": "+".join(
            sorted({str(r.summary.get("backend")) for r in runs})),
        "data_dir": data_dir, "vote": vote, "geometric": geometric,
        "weights": [float(x) for x in w], "weights_fitted": fitted,
        "members": member_metrics(runs, ids, y, rows), "num_classes": len(runs[0].classes),
        "num_test": len(runs[0].test_ids), "num_common_valid": len(ids),
        "valid_acc": None, "valid_loss": None}
    cal = Calibration("none", note=note)
    if len(ids):
        v_labels, v_probs = combine(rows, vote, w, geometric)
        summary["valid_acc"] = float((v_labels == y).mean())
        if vote == "soft":
            cal, probs, v_probs = calibrate_vote(v_probs, y, probs, method, note)
        # a hard vote's shares are not probabilities (zeros): no log-loss for it
        summary["valid_loss"] = log_loss(v_probs, y) if vote == "soft" else None
        valid = (ids, y, v_probs)
    summary["calibration"] = cal.to_json()
    summary["warnings"] = [f"calibration: {w}" for w in cal.warnings]
    summary["timings"] = {"total_s": round(time.perf_counter() - t0, 2)}
    summary = write_outputs(out, comp, data_dir, runs[0].classes, runs[0].test_ids, probs,
                             labels, valid, summary)
    if log:
        log(format_members(summary))
    return summary

def calibrate_vote(valid_probs: np.ndarray, y: np.ndarray, test_probs: np.ndarray,
                   method: str, note: str = "") -> tuple[Calibration, np.ndarray, np.ndarray]:
    """A soft vote's calibration: fitted on its combined validation probabilities (the same
    combination of the same members as its test rows), applied to both. Returns the
    calibration and the calibrated test and validation probabilities."""
    cal = calibrate(valid_probs, y, method, note)
    return cal, cal.apply(test_probs), cal.apply(valid_probs)

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
    cal = summary.get("calibration") or {}
    if cal.get("method") == "temperature":
        how += f", temperature {cal['temperature']:.3f}"
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
