"""Label files: ``trainLabels.csv`` (CIFAR-10) and ``labels.csv`` (Dog Breed).

:func:`read_csv_labels` is the chapters' helper of the same name, made strict: a label file
with a problem raises :class:`ValueError` naming the file and the line instead of silently
producing a wrong table.

File format
-----------
* A header row is **required**. It has exactly two non-empty cells: the id column and the
  label column (``id,label`` for CIFAR-10, ``id,breed`` for Dog Breed); the names themselves
  are free. A missing header is detected when the first row's first cell is purely digits
  (``1,frog`` — the CIFAR-10 ids) because a column name never is; a missing header whose first
  id is not numeric (a Dog Breed hex id) cannot be told from a header and is read as one.
* Every other non-empty row has exactly two cells: the id and the label. Surrounding spaces
  are stripped from both, and said (``notes``, or a warning): ``"cat "`` and ``"cat"`` are one
  class; ids are kept as given (Kaggle ids are bare stems such as ``1`` or
  ``000bec180eb18c7604dcecc8fe0dba07``; nothing is removed from them).
* UTF-8 with or without a byte-order mark, LF or CRLF line ends, quoted fields (``"a, b"``).
  Blank lines are ignored.
* Empty ids or labels and duplicate ids are errors (a duplicate names both lines).
"""
from __future__ import annotations

import csv
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["read_csv_labels", "class_names", "label_indices"]


def _blank(row: Sequence[str]) -> bool:
    return all(not cell.strip() for cell in row)


def read_csv_labels(path: str | os.PathLike, notes: list[str] | None = None) -> dict[str, str]:
    """Read a two-column label CSV into ``{id: label}`` (in file order).

    Raises :class:`ValueError` naming the file and line number for a missing or malformed
    header, a row without exactly two cells, an empty id or label, a duplicate id, a file that
    is not UTF-8 or not valid CSV. See the module docstring for the accepted format.
    Labels with surrounding spaces (stripped) are said in one line: appended to ``notes``
    when given, else a :class:`UserWarning`.
    """
    name = os.fspath(path)
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    spaced: list[tuple[int, str]] = []
    header_seen = False
    try:
        with open(name, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True)
            try:
                for row in reader:
                    line = reader.line_num
                    if _blank(row):
                        # A blank line; a row of only commas (",") is a row with empty cells.
                        if len(row) <= 1:
                            continue
                    cells = [c.strip() for c in row]
                    if not header_seen:
                        if len(cells) != 2 or not all(cells):
                            raise ValueError(
                                f"{name}, line {line}: expected a header row with two column "
                                f"names such as 'id,label', got {row!r}")
                        if cells[0].isdigit():
                            raise ValueError(
                                f"{name}, line {line}: missing header row: the first row "
                                f"{row!r} looks like data (its first cell is a number); add a "
                                f"header such as 'id,label'")
                        header_seen = True
                        continue
                    if len(cells) != 2:
                        raise ValueError(
                            f"{name}, line {line}: expected 2 columns (id, label), got "
                            f"{len(cells)}: {row!r}")
                    key, label = cells
                    if row[1] != label and label:
                        spaced.append((line, row[1]))
                    if any("\n" in c or "\r" in c for c in row):
                        raise ValueError(
                            f"{name}, line {line}: malformed CSV: a line break inside a field "
                            f"(unterminated quote?) in row {row!r}")
                    if not key:
                        raise ValueError(f"{name}, line {line}: empty id in row {row!r}")
                    if not label:
                        raise ValueError(f"{name}, line {line}: empty label for id {key!r}")
                    if key in labels:
                        raise ValueError(
                            f"{name}, line {line}: duplicate id {key!r} (first seen on line "
                            f"{first_line[key]})")
                    labels[key] = label
                    first_line[key] = line
            except csv.Error as e:
                raise ValueError(f"{name}, line {reader.line_num}: malformed CSV: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not a UTF-8 text file ({e})") from e
    if not header_seen:
        raise ValueError(f"{name}: empty label file (expected a header such as 'id,label' "
                         f"followed by one 'id,label' row per image)")
    if spaced:
        line, raw = spaced[0]
        msg = (f"note: {name}: {len(spaced)} labels have spaces around them, which are removed "
               f"(line {line}: {raw!r} is read as {raw.strip()!r})")
        if notes is not None:
            notes.append(msg)
        else:
            import warnings
            warnings.warn(msg[len("note: "):], UserWarning, stacklevel=2)
    return labels


def class_names(labels: Mapping[str, str] | Iterable[str]) -> list[str]:
    """Sorted unique labels: class ``k`` is ``class_names(labels)[k]``.

    This is the order the book's ``ImageFolder`` gives the ``<label>`` folders (plain string
    sort) and the column order of the Dog Breed sample submission. Accepts the ``{id: label}``
    table or any iterable of labels.
    """
    values = labels.values() if isinstance(labels, Mapping) else labels
    return sorted(set(values))


def label_indices(labels: Mapping[str, str], ids: Iterable[str],
                  classes: Sequence[str] | None = None) -> np.ndarray:
    """Class indices (int64) of ``ids`` under ``classes`` (default :func:`class_names`).

    Raises :class:`ValueError` listing (up to 10) ids that have no label or whose label is not
    in ``classes``.
    """
    if classes is None:
        classes = class_names(labels)
    index = {c: k for k, c in enumerate(classes)}
    if len(index) != len(classes):
        raise ValueError("classes contains duplicates")
    ids = list(ids)
    no_label = [i for i in ids if i not in labels]
    if no_label:
        raise ValueError(f"{len(no_label)} ids have no label: "
                         + ", ".join(map(repr, no_label[:10])) + (" ..." if len(no_label) > 10 else ""))
    unknown = [i for i in ids if labels[i] not in index]
    if unknown:
        raise ValueError(
            f"{len(unknown)} ids have a label not among the {len(index)} classes: "
            + ", ".join(f"{i!r} ({labels[i]!r})" for i in unknown[:10])
            + (" ..." if len(unknown) > 10 else ""))
    return np.fromiter((index[labels[i]] for i in ids), dtype=np.int64, count=len(ids))
