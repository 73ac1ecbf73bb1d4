"""Checks made before a run writes anything or trains an epoch.

Every setting and every input is checked first, so a mistake costs seconds, not a night of
training, and a failure never leaves a file a later run would trust: the numbers of a run
(:func:`check_settings`), the labels file's and the sample submission's headers
(:func:`check_labels_header`, :func:`check_sample_header`), the run folder
(:func:`prepare_out`), whether ``--resume`` may continue a checkpoint trained with another
configuration (:func:`check_resume`) and what it continues (:func:`resume_line`).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable

__all__ = ["check_settings", "check_data_dir", "check_out_outside_data", "prepare_out", "config_diff", "check_resume", "normalize_config",
           "check_checkpoint", "check_labels_header", "check_sample_header", "resume_line"]

#: the data a checkpoint was trained on (data.splits.data_fingerprint), in a user's words
DATA_KEYS = {"data_labels": "the labels", "data_split": "the train/valid split",
             "data_images": "the image list"}


def _number(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def check_settings(recipe: Any, image_size: int | None = None) -> None:
    """Refuse settings that would train nothing or something else than asked, before any
    file is written: ``epochs < 1`` (a submission from an untrained net), a validation ratio
    outside [0, 1) or NaN (silently no validation), ``image_size < 1`` (silently the
    default), a non-positive batch size, a non-finite learning rate or weight decay."""
    epochs = getattr(recipe, "epochs", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) \
            or not math.isfinite(epochs) or epochs <= 0:
        raise ValueError(f"--epochs must be a number > 0 (whole, or a fraction like 9.9), got "
                         f"{epochs!r} (a run trains before it writes a submission)")
    ratio = _number("--valid-ratio", getattr(recipe, "valid_ratio", 0.0))
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--valid-ratio must be in [0, 1) (0: no validation), got "
                         f"{getattr(recipe, 'valid_ratio')!r}")
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) != image_size
                                   or image_size < 1):
        raise ValueError(f"--image-size must be a positive integer, got {image_size!r}")
    bs = getattr(recipe, "batch_size", 1)
    if isinstance(bs, bool) or int(bs) != bs or bs < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {bs!r}")
    if _number("--lr", getattr(recipe, "lr", 1.0)) <= 0:
        raise ValueError(f"--lr must be > 0, got {getattr(recipe, 'lr')!r}")
    if _number("--wd", getattr(recipe, "wd", 0.0)) < 0:
        raise ValueError(f"--wd must be >= 0, got {getattr(recipe, 'wd')!r}")
    decay = getattr(recipe, "lr_decay", 1.0)
    if decay is not None and _number("--lr-decay", decay) <= 0:
        raise ValueError(f"--lr-decay must be > 0, got {decay!r}")
    period = getattr(recipe, "lr_period", None)
    if period is not None and (int(period) != period or period < 1):
        raise ValueError(f"--lr-period must be an integer >= 1, got {period!r}")


def check_data_dir(comp: Any, data_dir: str, others: Any = ()) -> None:
    """``--data-dir`` exists and holds ``comp``'s label file — or, when it holds another
    competition's (``others``: the competitions table), one line saying which it looks like.
    (A CIFAR python archive is checked when it is read.)"""
    if not os.path.exists(data_dir):
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist; give the folder with "
                                f"{comp.labels_file}, {comp.train_dir}/ and {comp.test_dir}/")
    if not os.path.isdir(data_dir) or os.path.exists(os.path.join(data_dir, comp.labels_file)):
        return
    from ..data.cifar import find_cifar_archive
    if find_cifar_archive(data_dir) is not None:
        return
    like = [c.name for c in others if c.name != comp.name and c.recipe is not None
            and c.labels_file != comp.labels_file
            and os.path.exists(os.path.join(data_dir, c.labels_file))]
    if like:
        other = next(c for c in others if c.name == like[0])
        raise FileNotFoundError(
            f"{data_dir} has no {comp.labels_file} but a {other.labels_file}: it looks like a "
            f"{' / '.join(like)} folder, not {comp.name}; run it as `d2lkaggle run {like[0]} "
            f"--data-dir {data_dir}`, or give {comp.name}'s folder")
    raise FileNotFoundError(f"{os.path.join(data_dir, comp.labels_file)} not found: --data-dir "
                            f"must hold {comp.name}'s {comp.labels_file}, {comp.train_dir}/ and "
                            f"{comp.test_dir}/")


def check_out_outside_data(out: str, comp: Any, data_dir: str) -> None:
    """A run folder inside the data's ``train/`` or ``test/`` would be read as images by every
    later run: refused before anything is written."""
    real = os.path.realpath(out)
    for sub in (comp.train_dir, comp.test_dir):
        folder = os.path.realpath(os.path.join(data_dir, sub))
        if real == folder or real.startswith(folder + os.sep):
            raise ValueError(f"--out {out} is inside the data's {sub}/ folder ({folder}): the "
                             f"run's files would be read as images there by every later run; "
                             f"choose an --out outside {sub}/")


def prepare_out(out: str) -> str:
    """Create the run folder ``out`` (mode per the umask) or say in one line why it cannot be."""
    out = os.path.abspath(out)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise type(e)(f"cannot create the run folder {out}: {e.strerror or e}; choose "
                      f"another --out") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into the run folder {out}: permission denied; "
                              f"choose another --out")
    return out


def normalize_config(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(config, default=str))


def config_diff(old: dict, new: dict) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (missing keys included).

    A key one side lacks while the other records ``null`` is no difference: a setting added
    in a later version with "unset" as its default must not stop an older run's ``--resume``.
    """
    old, new = normalize_config(old), normalize_config(new)
    missing = object()
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, missing), new.get(k, missing)
        if {id(a), id(b)} <= {id(missing), id(None)}:
            continue
        if a != b:
            fmt = lambda v: "(not recorded)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{k}: {fmt(a)} -> {fmt(b)}")
    return out


def check_resume(checkpoint_dir: str, config: dict, resume: bool | str,
                 log: Callable[[str], Any] | None = print,
                 forced: list[dict[str, Any]] | None = None) -> bool:
    """Whether training may continue from ``checkpoint_dir/last.npz``.

    ``resume`` is False, True or ``"force"``. With True, a checkpoint trained with another
    configuration (see ``pipeline.run_config``) raises :class:`ValueError` listing every
    differing key; ``"force"`` continues anyway and says so once, loudly, on stderr (and to
    ``log`` when it is not ``print``: a run's ``log.txt``), and appends ``{"warning": ...,
    "config": the checkpoint's}`` to ``forced`` (summary.json's warnings and the data the
    model was trained on). A damaged checkpoint raises :class:`ValueError` naming it.
    """
    if resume not in (False, True, "force"):
        raise ValueError(f"resume must be False, True or 'force', got {resume!r}")
    last = os.path.join(checkpoint_dir, "last.npz")
    if not resume or not os.path.exists(last):
        return bool(resume)
    from ..utils.files import load_npz
    _, meta = load_npz(last)
    old = meta.get("config")
    diff = (["the checkpoint records no configuration (written by an older version)"]
            if old is None else config_diff(old, config))
    if not diff:
        return True
    changed = [words for key, words in DATA_KEYS.items()
               if old is not None and old.get(key) is not None and old.get(key) != config.get(key)]
    if changed and resume != "force":
        more = any(not d.startswith("data_") for d in diff)
        raise ValueError(f"--resume: {last} was trained on other data ({' and '.join(changed)} "
                         f"changed since){' and with another configuration' if more else ''}: "
                         + "; ".join(diff) + "; drop --resume or choose another --out to start "
                         "over, or pass --resume force to continue it anyway")
    if resume == "force":
        what = (f"--resume force: continuing {last} although its configuration differs: "
                + "; ".join(diff))
        print("WARNING: " + what, file=sys.stderr)
        if log is not None and log is not print:   # (a file only, e.g. log.txt: said once)
            log("WARNING: " + what)
        if forced is not None:
            forced.append({"warning": what, "config": old or {}})
        return True
    raise ValueError(f"--resume: {last} was trained with another configuration ("
                     + "; ".join(diff) + "); drop --resume or choose another --out to start "
                     "over, or pass --resume force to continue it anyway")


def check_checkpoint(path: str, meta: dict, config: dict) -> None:
    """A checkpoint reloaded within a run (its best epoch) must have been made by this run's
    configuration and data: otherwise one line naming what differs, never a silent reuse."""
    old = meta.get("config")
    diff = (["it records no configuration"] if old is None else config_diff(old, config))
    if diff:
        changed = [w for k, w in DATA_KEYS.items()
                   if old and old.get(k) is not None and old.get(k) != config.get(k)]
        what = f"other data ({' and '.join(changed)})" if changed else "another configuration"
        raise ValueError(f"{path} was made by {what} than this run (" + "; ".join(diff[:4])
                         + "); it is not used: delete it or choose another --out")


def _first_rows(path: str, n: int = 2) -> list[list[str]]:
    """The first ``n`` non-blank rows of a CSV file, cells stripped (``[]`` when unreadable:
    the reader that loads it later names the problem)."""
    import csv
    rows: list[list[str]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.reader(f, skipinitialspace=True):
                if any(c.strip() for c in row):
                    rows.append([c.strip() for c in row])
                if len(rows) == n:
                    break
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    return rows


def _names_image(folder: str, image_id: str) -> bool:
    """Whether ``folder`` holds an image file named ``image_id`` (any extension)."""
    import glob
    return bool(image_id) and bool(glob.glob(os.path.join(glob.escape(folder),
                                                          glob.escape(image_id) + ".*")))


def check_labels_header(comp: Any, data_dir: str) -> str | None:
    """The labels file's header against the competition's columns, before anything is read:
    the competition's own header passes silently; another one whose first column names the
    images is read as (id, label) and said in the returned line; a header whose columns are
    the other way round, or whose first row names no image, is refused with the expected
    header. (A missing or malformed file is left to the reader, which names the line.)"""
    path = os.path.join(data_dir, comp.labels_file)
    rows = _first_rows(path)
    want = [comp.id_column, comp.label_column]
    if not rows or len(rows[0]) != 2 or rows[0] == want or rows[0][0].isdigit():
        return None
    head, first = rows[0], rows[1] if len(rows) > 1 and len(rows[1]) == 2 else None
    expected = f"expected the header '{','.join(want)}' ({comp.name}'s: the image id first, then its label)"
    if [h.lower() for h in head] == [w.lower() for w in reversed(want)]:
        raise ValueError(f"{path}: header '{','.join(head)}' has {comp.name}'s columns the other "
                         f"way round; {expected}: swap the two columns")
    train = os.path.join(data_dir, comp.train_dir)
    if first is None or not os.path.isdir(train):
        return None      # nothing to tell the columns apart by: the reader says what is wrong
    if _names_image(train, head[0]):   # a hex id is no number: only the images tell
        raise ValueError(f"{path}: missing header row: line 1 ({','.join(head)}) names an image "
                         f"in {comp.train_dir}/, so it is data; {expected}: add it as line 1")
    if _names_image(train, first[0]):
        return (f"note: {path} has the header '{','.join(head)}', not {comp.name}'s "
                f"'{','.join(want)}': column '{head[0]}' is read as the image id (line 2: "
                f"{first[0]!r}, an image in {comp.train_dir}/) and column '{head[1]}' as the "
                f"{comp.label_column} ({first[1]!r})")
    if _names_image(train, first[1]):
        raise ValueError(f"{path}: header '{','.join(head)}': its second column holds the image "
                         f"ids (line 2: {first[1]!r} is an image in {comp.train_dir}/); "
                         f"{expected}: swap the two columns")
    raise ValueError(f"{path}: header '{','.join(head)}' is not {comp.name}'s and its first "
                     f"row ({','.join(first)}) names no image in {train}; {expected} — is this "
                     f"{comp.name}'s labels file?")


def check_sample_header(comp: Any, data_dir: str) -> None:
    """The sample submission's header, before anything is read: Kaggle scores
    ``submission.csv`` by its column names, so a sample whose columns are not the
    competition's (``ID,Category`` for ``id,label``) is refused with the expected header.
    (Its ids, and a probability sample's class columns, are checked against the test images
    and the labels while loading, before any training.)"""
    path = os.path.join(data_dir, comp.sample_file)
    rows = _first_rows(path, 1)
    if not rows:
        return
    head = rows[0]
    want = [comp.id_column, comp.label_column] if comp.submission == "label" else [comp.id_column]
    got = head if comp.submission == "label" else head[:1]
    if got != want:
        shown = ",".join(want) + ("" if comp.submission == "label" else ",<one column per class>")
        raise ValueError(f"{path}: header '{','.join(head[:6])}{',...' if len(head) > 6 else ''}' "
                         f"is not {comp.name}'s; expected '{shown}' (Kaggle scores the "
                         f"submission by these column names): use the competition's own "
                         f"{comp.sample_file}, or correct its first line")


#: a run's phases as ``--resume`` names them: checkpoint folder -> words
PHASE_WORDS = {"valid": "the validation phase", "final": "the retrain on all labels"}


def resume_line(out: str, phases: Any, epochs: int, finished: bool = False) -> str:
    """What ``--resume`` found in ``out``, in one line: no checkpoint (starting afresh), the
    phase and epoch it continues, or a finished run (re-reported: predicted and written again
    from its checkpoints). ``phases``: the checkpoint folders the run trains, in order."""
    from ..utils.progress import plural
    from .runfolder import epochs_done
    done = {ph: epochs_done(os.path.join(out, "checkpoints", ph, "last.npz")) for ph in phases}
    if not any(done.values()):
        return f"--resume: no checkpoint in {out}: starting afresh"
    if all(done[ph] >= epochs for ph in phases):
        if finished:
            return (f"--resume: {out} holds a finished run: re-reporting (predictions, "
                    "submission and pictures written again from its checkpoints)")
        return ("--resume: every phase's checkpoints are complete: predicting and writing "
                "the run's files")
    complete = [f"{PHASE_WORDS[ph]} is complete ({done[ph]}/{plural(epochs, 'epoch')})"
                for ph in phases if done[ph] >= epochs]
    ph = next(p for p in phases if done[p] < epochs)
    verb = (f"resuming {PHASE_WORDS[ph]} at epoch {done[ph] + 1}/{epochs}" if done[ph]
            else f"starting {PHASE_WORDS[ph]}")
    return "--resume: " + "; ".join(complete + [verb])
