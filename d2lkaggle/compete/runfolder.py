"""The run folder's files: what a finished run leaves, what an ensemble reads back.

A run folder (``--out``) holds ``summary.json``, ``submission.csv``, ``history.csv``, the
pictures and ``checkpoints/``, and the predictions that ensembles combine
(:data:`PREDICTION_FILES`):

* ``test_probs.npy`` — float32, one row per test image in the submission's id order;
* ``classes.json`` — the column order (a JSON list of class names);
* ``test_ids.json`` — the test ids of the rows (a JSON list);
* ``valid_probs.npy`` + ``valid_ids.json`` (``{"ids": [...], "labels": [...]}``, labels as class
  names) — when the run validated: the validated model's probabilities on its validation set.
* ``calibration.json`` — when the run validated: the calibration fitted on those images
  (:mod:`d2lkaggle.compete.calibration`; ``{"method": "none"}`` when off). Both ``.npy`` files
  hold the probabilities after it, as ``submission.csv`` does.

These files hold nothing framework-specific, so runs of different backends and models vote
together (:mod:`d2lkaggle.compete.ensembles`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.splits import split_digest
from ..train.tta import check_tta
from ..utils.files import META_KEY, atomic_open, atomic_write_text
from .voting import accuracy, log_loss

#: files a finished run leaves; ``overwrite=True`` replaces exactly these (and checkpoints/)
RUN_FILES = ("summary.json", "submission.csv", "history.csv", "curves.png", "confusion.png",
             "mistakes.png", "test_probs.npy", "classes.json", "test_ids.json", "valid_probs.npy",
             "valid_ids.json", "calibration.json", "log.txt")
#: what each run folder keeps for ensembles
PREDICTION_FILES = ("test_probs.npy", "classes.json", "test_ids.json", "valid_probs.npy", "valid_ids.json")


def check_run_folder(out: str, *, overwrite: bool, resume: bool) -> bool:
    """Refuse to write over a finished run (its summary.json exists) unless asked to; True when
    the new run must be built beside it (``overwrite``: :func:`stage_folder`, then
    :func:`install_run` once it has finished, so a crash leaves the old run whole).

    ``resume`` continues it; a folder without a finished run is simply used.
    """
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(summary) or resume:
        return False
    if not overwrite:
        raise ValueError(f"{out} holds a finished run ({summary}); pass --overwrite "
                              "(overwrite=True) to replace it, --resume to continue it, or "
                              "--out to write elsewhere")
    return True

def clear_run(out: str) -> None:
    """Remove the finished run's own files from ``out`` (never anything else in the folder):
    ``--overwrite`` of a data-parallel run, whose ranks must all see one folder."""
    import shutil
    for f in RUN_FILES:   # summary.json first: the folder no longer claims a finished run
        if os.path.exists(os.path.join(out, f)):
            os.unlink(os.path.join(out, f))
    for phase in ("valid", "final"):
        shutil.rmtree(os.path.join(out, "checkpoints", phase), ignore_errors=True)


def epochs_done(last_npz: str) -> int:
    """Epochs a ``last.npz`` checkpoint holds (0 when there is none); reads only its metadata."""
    if not os.path.exists(last_npz):
        return 0
    try:
        with np.load(last_npz, allow_pickle=False) as z:   # lazy: the arrays are not read
            return int(json.loads(str(z[META_KEY])).get("epoch", -1)) + 1
    except (OSError, ValueError, KeyError):
        return 0


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

def read_json(path: str, what: str) -> Any:
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
    summary = read_json(summary_path, "run summary")
    classes = read_json(os.path.join(path, "classes.json"), "class list")
    ids_path = os.path.join(path, "test_ids.json")
    if not os.path.exists(ids_path):
        raise FileNotFoundError(f"{path} has test_probs.npy but no test_ids.json; re-run it "
                                "with --resume")
    test_ids = [str(i) for i in read_json(ids_path, "test id list")]
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
        meta = read_json(os.path.join(path, "valid_ids.json"), "validation id list")
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


# ----------------------------------------------------------------------------- one run per folder

#: the run folder's lock (held for the whole run) and who holds it
LOCK_FILE, OWNER_FILE = ".d2lkaggle-run.lock", ".d2lkaggle-run.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # (another user's process: it exists)
        return True
    return True


def _owner_text(owner: dict[str, Any]) -> str:
    return (f"process {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}: "
            f"{owner.get('command', '?')}")


def _command() -> str:
    import sys
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    prog = "d2lkaggle" if "d2lkaggle" in prog else os.path.basename(prog)
    return " ".join([prog, *sys.argv[1:]])


class RunFolderLock:
    """A run folder belongs to one run: an inter-process lock on ``folder/.d2lkaggle-run.lock``
    (``filelock``; the OS releases it when its holder exits, even by ``kill -9``, so a dead
    run's lock is simply taken over) and ``.d2lkaggle-run.json`` saying who holds it.

    A second run into a held folder gets one line naming the running one.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path, self.owner = os.path.join(folder, LOCK_FILE), os.path.join(folder, OWNER_FILE)
        self.lock: Any = None
        self.taken_over: dict[str, Any] | None = None   # a dead run's record, when there was one

    def _read_owner(self) -> dict[str, Any]:
        try:
            with open(self.owner, encoding="utf-8") as f:
                owner = json.load(f)
            return owner if isinstance(owner, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunFolderLock":
        import socket
        import sys
        import time

        from filelock import FileLock, Timeout
        lock = FileLock(self.path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = self._read_owner()
            who = _owner_text(owner) if owner else "another process"
            raise RuntimeError(f"{self.folder} is in use by another run ({who}); wait for it to "
                               "finish, or choose another --out") from None
        self.lock = lock
        old = self._read_owner()
        host = socket.gethostname()
        if old and not (old.get("host") == host and old.get("pid") == os.getpid()):
            self.taken_over = old   # its holder is gone: the OS released its lock
        atomic_write_text(self.owner, json.dumps({
            "pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": _command()}) + "\n")
        return self

    def stale_note(self) -> str | None:
        """A line saying whose lock was taken over (``None`` when it was free)."""
        if not self.taken_over:
            return None
        pid = self.taken_over.get("pid")
        dead = isinstance(pid, int) and not _alive(pid)
        return (f"note: {self.folder} was locked by {_owner_text(self.taken_over)}, which is "
                f"{'no longer running' if dead else 'gone'}; its lock was taken over")

    def release(self) -> None:
        if self.lock is not None:
            try:
                os.unlink(self.owner)
            except OSError:
                pass
            self.lock.release()
            self.lock = None


#: ``--overwrite``: the new run is built in the stage, and during the swap the old run's files
#: wait in the aside folder (both beside ``out``, named after the process that swaps)
STAGE_PREFIX, ASIDE_PREFIX = ".{}.overwrite-", ".{}.replaced-"
#: written into the aside folder once every old file is in it: the new ones may move in
MOVED = ".all-old-files-aside"


def stage_folder(out: str) -> str:
    """An empty folder beside ``out`` where ``--overwrite`` builds the new run
    (``.<name>.overwrite-<pid>``). The caller holds ``out``'s lock and has run
    :func:`recover_swaps`, so no other process's stage is left."""
    import shutil
    parent, name = os.path.split(os.path.abspath(out))
    stage = os.path.join(parent, f"{STAGE_PREFIX.format(name)}{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    return stage


def _aside_of(stage: str) -> str:
    parent, entry = os.path.split(stage)
    name, _, pid = entry[1:].rpartition(".overwrite-")
    return os.path.join(parent, f"{ASIDE_PREFIX.format(name)}{pid}")


def _run_entries(folder: str, stage: str) -> list[str]:
    """The finished run's own entries in ``folder`` (relative paths): its files
    (:data:`RUN_FILES`), whatever the staged run brings, and its checkpoint phases; never the
    run folder's lock, never anything else of the user's."""
    names = set(RUN_FILES)
    phases = {"valid", "final"}
    if os.path.isdir(stage):
        names |= set(os.listdir(stage))
        if os.path.isdir(os.path.join(stage, "checkpoints")):
            phases |= set(os.listdir(os.path.join(stage, "checkpoints")))
    names -= {LOCK_FILE, OWNER_FILE, "checkpoints", MOVED}
    found = [n for n in names if os.path.lexists(os.path.join(folder, n))]
    found += [os.path.join("checkpoints", p) for p in phases
              if os.path.lexists(os.path.join(folder, "checkpoints", p))]
    return sorted(found)


def _move(rel: str, src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
    os.replace(os.path.join(src, rel), os.path.join(dst, rel))


def install_run(stage: str, out: str) -> None:
    """Replace the finished run in ``out`` by the one built in ``stage``, so that a kill at
    any moment leaves a whole run — the old or the new — for :func:`recover_swaps` to finish:

    1. the old run's own files move (one rename each, ``summary.json`` first) into the aside
       folder, which then gets the marker :data:`MOVED`;
    2. the new run's files move into ``out``, ``summary.json`` last;
    3. the stage and then the aside folder (the old run) are removed, the marker last.

    Nothing else in ``out`` is touched. Calling it again after an interruption continues
    where it stopped (each step only moves what is still to move)."""
    import shutil
    aside = _aside_of(stage)
    os.makedirs(aside, exist_ok=True)
    if not os.path.exists(os.path.join(aside, MOVED)):
        for rel in sorted(_run_entries(out, stage), key=lambda e: e != "summary.json"):
            _move(rel, out, aside)
        with open(os.path.join(aside, MOVED), "w"):
            pass
    if os.path.isdir(stage):
        for rel in sorted(_run_entries(stage, stage), key=lambda e: e == "summary.json"):
            _move(rel, stage, out)
        shutil.rmtree(stage)
    _remove_aside(aside)


def _remove_aside(aside: str) -> None:
    """Remove the aside folder with its marker last: a folder that still holds old files
    without the marker is always a swap that had not finished moving them aside."""
    import shutil
    for entry in os.listdir(aside):
        if entry != MOVED:
            path = os.path.join(aside, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    if os.path.exists(os.path.join(aside, MOVED)):
        os.unlink(os.path.join(aside, MOVED))
    os.rmdir(aside)


def _undo(aside: str, out: str) -> None:
    """Put an interrupted swap's old files back (``summary.json`` last) and drop the aside."""
    import shutil
    for rel in sorted(_run_entries(aside, aside), key=lambda e: e == "summary.json"):
        if not os.path.lexists(os.path.join(out, rel)):
            _move(rel, aside, out)
    shutil.rmtree(aside)


def recover_swaps(out: str) -> list[str]:
    """What a start finds of ``--overwrite`` runs that died in ``out``'s place (the caller
    holds ``out``'s lock, so their processes are gone), put right, one line each:

    * a staged run that finished (its ``summary.json`` written), or a swap stopped half-way:
      the swap is completed (:func:`install_run` continues it), the new run is in ``out``;
    * a swap whose new run is gone before its old files were all aside: undone, the old run
      is back;
    * a staged run that never finished: removed; the run in ``out`` is kept.

    A finished run is never deleted, except the old one of a completed swap (what
    ``--overwrite`` asked for)."""
    import shutil
    parent, name = os.path.split(os.path.abspath(out))
    found: dict[str, dict[str, str]] = {}
    if not os.path.isdir(parent):
        return []
    for entry in os.listdir(parent):
        for kind, prefix in (("stage", STAGE_PREFIX.format(name)),
                             ("aside", ASIDE_PREFIX.format(name))):
            if entry.startswith(prefix) and entry[len(prefix):].isdigit():
                found.setdefault(entry[len(prefix):], {})[kind] = os.path.join(parent, entry)
    lines = []
    for pid, where in sorted(found.items()):
        stage = where.get("stage") or os.path.join(parent, STAGE_PREFIX.format(name) + pid)
        aside = _aside_of(stage)
        finished = os.path.exists(os.path.join(stage, "summary.json"))
        moved = os.path.exists(os.path.join(aside, MOVED))
        emptied = os.path.isdir(aside) and not _run_entries(aside, aside)
        what = f"--overwrite of process {pid} into {out}"
        if finished or moved or (emptied and not os.path.isdir(stage)):
            if emptied and not finished and not os.path.isdir(stage):
                _remove_aside(aside)   # only the aside's removal was left to do
            else:
                install_run(stage, out)
            lines.append(f"note: an interrupted {what} was completed: the run it finished is "
                         "now in the folder (the one it replaced is removed)")
        elif os.path.isdir(aside):
            _undo(aside, out)
            shutil.rmtree(stage, ignore_errors=True)
            lines.append(f"note: an interrupted {what} was undone: the earlier run is back "
                         "in the folder")
        else:
            shutil.rmtree(stage, ignore_errors=True)
            lines.append(f"note: the unfinished run of an interrupted {what} ({stage}) was "
                         "removed; the run in the folder is kept")
    return lines


def retarget(value: Any, stage: str, out: str) -> Any:
    """``value`` (a summary, nested) with every path under ``stage`` moved to ``out``."""
    if isinstance(value, str) and (value == stage or value.startswith(stage + os.sep)):
        return out + value[len(stage):]
    if isinstance(value, dict):
        return {k: retarget(v, stage, out) for k, v in value.items()}
    if isinstance(value, list):
        return [retarget(v, stage, out) for v in value]
    return value


class RunLog:
    """Every line a run says, also kept in its folder's ``log.txt`` (the same lines a
    redirected stdout gets: one per epoch, one per phase, no progress frames)."""

    def __init__(self, path: str, log: Any = print, append: bool = False):
        self.path, self.log = path, log
        self.file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, msg: Any) -> None:
        """``msg`` into ``log.txt`` only."""
        if not self.file.closed:
            self.file.write(str(msg).rstrip("\n") + "\n")
            self.file.flush()

    def __call__(self, msg: Any) -> Any:
        self.write(msg)
        if self.log is not None:
            return self.log(msg)
        return None

    def close(self) -> None:
        self.file.close()
