"""Write and check Kaggle submission files.

* CIFAR-10: one predicted label per test id, ``id,label`` (:func:`write_label_submission`).
* Dog Breed: one probability per class per test id, ``id,<breed 1>,...,<breed 120>``
  (:func:`write_proba_submission`).

Given the competition's sample submission (``sample=``), the written file has exactly the
sample's columns (names and order) and the sample's ids, in the sample's row order; anything
that does not match raises :class:`ValueError` before a file is written. Ids are compared as
the strings the files hold (``"1"``, never the number 1). Files are written to a temporary
file in the target folder and renamed, so a failure never leaves a partial ``submission.csv``.
"""
from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from ..utils.files import atomic_open

if TYPE_CHECKING:   # (types only: load.py builds the data, and this room stays below it)
    from ..specs.competitions import Competition
    from .load import CompetitionData

__all__ = ["write_label_submission", "write_proba_submission", "validate_submission",
           "read_submission", "write_submission", "preflight_submission", "PROBA_TOLERANCE"]

#: how far a row of probabilities may sum from 1
PROBA_TOLERANCE = 1e-6


def _listing(items: Sequence, limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """A submission or sample-submission CSV as strings (``dtype=str``, no NA conversion),
    with column names and cells stripped of surrounding spaces."""
    name = os.fspath(path)
    try:
        df = pd.read_csv(name, dtype=str, keep_default_na=False, na_filter=False,
                         encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{name}: empty CSV file") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{name}: malformed CSV: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    for c in df.columns:
        df[c] = df[c].str.strip()
    return df


def _sample_frame(sample) -> tuple[pd.DataFrame, str]:
    if isinstance(sample, pd.DataFrame):
        return sample.astype(str), "the sample submission"
    return read_submission(sample), os.fspath(sample)


def _check_ids(ids: list[str], what: str = "ids") -> None:
    empty = [k for k, i in enumerate(ids) if not i]
    if empty:
        raise ValueError(f"{what}: empty id at position {empty[0]}")
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        raise ValueError(f"{what}: {len(dup)} duplicate ids: {_listing(dup)}")


def _sample_order(ids: list[str], sample_ids: list[str], where: str) -> list[int]:
    """Positions in ``ids`` of each sample id, in the sample's order; mismatches fail."""
    _check_ids(sample_ids, f"{where}")
    pos = {i: k for k, i in enumerate(ids)}
    sample_set = set(sample_ids)
    missing = [i for i in sample_ids if i not in pos]
    extra = [i for i in ids if i not in sample_set]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ids of {where} have no prediction: {_listing(missing)}")
        if extra:
            parts.append(f"{len(extra)} predicted ids are not in {where}: {_listing(extra)}")
        raise ValueError("; ".join(parts))
    return [pos[i] for i in sample_ids]


def _atomic_write_rows(path: str | os.PathLike, header: list[str], rows: Iterable[list]) -> str:
    """Write ``header`` + ``rows`` as CSV (LF line ends) via a temporary file and a rename."""
    path = os.fspath(path)
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def write_label_submission(ids: Sequence, labels: Sequence[str], path: str | os.PathLike,
                           sample: str | os.PathLike | pd.DataFrame | None = None,
                           id_column: str = "id", label_column: str = "label") -> str:
    """Write ``id,label`` rows (CIFAR-10's format) to ``path``; returns ``path``.

    Without ``sample`` the rows keep the given order and the header is
    ``id_column,label_column``. With ``sample`` the header is the sample's (which must have
    two columns), the rows follow the sample's order, and the ids must be exactly the
    sample's.
    """
    ids = [str(i).strip() for i in ids]
    labels = [str(v).strip() for v in labels]
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    _check_ids(ids)
    empty = [i for i, v in zip(ids, labels) if not v]
    if empty:
        raise ValueError(f"{len(empty)} ids have an empty label: {_listing(empty)}")
    header = [id_column, label_column]
    order: Sequence[int] = range(len(ids))
    if sample is not None:
        df, where = _sample_frame(sample)
        if df.shape[1] != 2:
            raise ValueError(f"{where}: a label submission has 2 columns (id, label); the "
                             f"sample has {df.shape[1]}: {list(df.columns)}")
        header = list(df.columns)
        order = _sample_order(ids, df.iloc[:, 0].tolist(), where)
    return _atomic_write_rows(path, header, ([ids[k], labels[k]] for k in order))


def _check_probs(ids: list[str], probs: np.ndarray, n_classes: int) -> None:
    if probs.ndim != 2 or probs.shape != (len(ids), n_classes):
        raise ValueError(f"probabilities must have shape (n_ids, n_classes) = "
                         f"({len(ids)}, {n_classes}), got {probs.shape}")
    bad_value = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs > 1).any(axis=1)
    with np.errstate(invalid="ignore"):
        bad_sum = ~(np.abs(probs.sum(axis=1) - 1.0) <= PROBA_TOLERANCE)
    bad = np.flatnonzero(bad_value | bad_sum)
    if bad.size:
        k = int(bad[0])
        row = probs[k]
        why = ("a value that is not finite or not in [0, 1]" if bad_value[k]
               else f"a sum of {row.sum():.9g}, not 1 (tolerance {PROBA_TOLERANCE:g})")
        raise ValueError(f"{bad.size} rows of probabilities are invalid; the first, id "
                         f"{ids[k]!r}, has {why}")


def write_proba_submission(ids: Sequence, probs, classes: Sequence[str], path: str | os.PathLike,
                           sample: str | os.PathLike | pd.DataFrame | None = None,
                           id_column: str = "id") -> str:
    """Write ``id,<class 1>,...`` rows of probabilities (Dog Breed's format); returns ``path``.

    ``probs[i, k]`` is the probability that image ``ids[i]`` shows ``classes[k]``; every row
    must be finite, in [0, 1] and sum to 1 within :data:`PROBA_TOLERANCE`. With ``sample`` the
    classes must be the sample's class columns (in any order: the columns are written in the
    sample's order), the ids exactly the sample's, written in the sample's row order.
    """
    ids = [str(i).strip() for i in ids]
    classes = [str(c) for c in classes]
    _check_ids(ids)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes contain duplicates: {classes}")
    probs = np.asarray(probs, dtype=np.float64)
    _check_probs(ids, probs, len(classes))
    header = [id_column, *classes]
    order: Sequence[int] = range(len(ids))
    cols = list(range(len(classes)))
    if sample is not None:
        df, where = _sample_frame(sample)
        sample_classes = list(df.columns[1:])
        have, want = set(classes), set(sample_classes)
        missing = [c for c in sample_classes if c not in have]
        extra = [c for c in classes if c not in want]
        if missing or extra:
            raise ValueError(
                f"classes do not match the columns of {where}: "
                + "; ".join(p for p in (
                    f"{len(missing)} sample columns missing from classes: {_listing(missing)}"
                    if missing else "",
                    f"{len(extra)} classes not in the sample: {_listing(extra)}"
                    if extra else "") if p))
        pos = {c: k for k, c in enumerate(classes)}
        cols = [pos[c] for c in sample_classes]
        header = list(df.columns)
        order = _sample_order(ids, df.iloc[:, 0].tolist(), where)
    table = probs[np.asarray(order, dtype=np.intp)][:, cols] if len(ids) else probs
    return _atomic_write_rows(
        path, header, ([ids[k], *map(repr, row)] for k, row in zip(order, table.tolist())))


def validate_submission(path: str | os.PathLike, sample: str | os.PathLike | pd.DataFrame,
                        kind: str = "label") -> None:
    """Check a written submission against the sample submission; :class:`ValueError` if wrong.

    Checks: same column names in the same order; same set of ids, none duplicated or empty;
    for ``kind="label"`` no empty label; for ``kind="proba"`` every value a number in [0, 1]
    and every row summing to 1 within :data:`PROBA_TOLERANCE`.
    """
    if kind not in ("label", "proba"):
        raise ValueError(f"unknown submission kind {kind!r}; choose 'label' or 'proba'")
    name = os.fspath(path)
    sub = read_submission(name)
    ref, where = _sample_frame(sample)
    if list(sub.columns) != list(ref.columns):
        raise ValueError(f"{name}: columns {_listing(list(sub.columns))} differ from the "
                         f"columns of {where}: {_listing(list(ref.columns))}")
    if kind == "label" and sub.shape[1] != 2:
        raise ValueError(f"{name}: a label submission has 2 columns, found {sub.shape[1]}")
    if kind == "proba" and sub.shape[1] < 2:
        raise ValueError(f"{name}: a probability submission needs class columns")
    ids = sub.iloc[:, 0].tolist()
    _check_ids(ids, name)
    _sample_order(ids, ref.iloc[:, 0].tolist(), where)
    if kind == "label":
        empty = [i for i, v in zip(ids, sub.iloc[:, 1].tolist()) if not v]
        if empty:
            raise ValueError(f"{name}: {len(empty)} ids have an empty label: {_listing(empty)}")
        return
    values = sub.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        k = int(np.flatnonzero(np.isnan(values).any(axis=1))[0])
        raise ValueError(f"{name}: row of id {ids[k]!r} has a value that is not a number")
    try:
        _check_probs(ids, values, values.shape[1])
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


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

def preflight_submission(comp: Competition, data_dir: str, data: CompetitionData) -> None:
    """Write and validate a placeholder submission (uniform probabilities) in a temporary
    folder: a sample file whose ids or columns do not fit fails now, before training."""
    import tempfile
    probs = np.full((len(data.test_ids), len(data.classes)), 1.0 / len(data.classes))
    with tempfile.TemporaryDirectory(prefix="d2lkaggle-preflight-") as tmp:
        write_submission(comp, data_dir, probs, data, os.path.join(tmp, "submission.csv"))
