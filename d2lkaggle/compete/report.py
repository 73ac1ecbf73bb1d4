"""What a run tells: its first line, the pictures' titles, curves, confusion and mistakes,
``history.csv``, the test metrics of a labelled test set and the summary's verdict."""
from __future__ import annotations

import math
import os
import shlex
from typing import Any

import numpy as np

from ..specs.competitions import Competition
from ..specs.recipe import Recipe
from ..specs.tricks import model_text, recipe_text
from ..train.loop import History
from ..utils.files import atomic_write_text
from ..utils.progress import plural
from .load import CompetitionData


def labelled_test_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of predicted probabilities against known test labels."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
    return {"test_acc": float((probs.argmax(axis=1) == labels).mean()),
            "test_loss": float(-np.log(p).mean())}

def json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

def write_history(out: str, histories: list[tuple[str, History]]) -> None:
    from ..train.loop import HISTORY_COLUMNS
    lines = ["phase," + ",".join(HISTORY_COLUMNS)]
    for phase, h in histories:
        for r in h.rows:
            lines.append(phase + "," + ",".join(
                "" if isinstance(r[k], float) and math.isnan(r[k]) else repr(r[k]) if isinstance(r[k], float)
                else str(r[k]) for k in HISTORY_COLUMNS))
    atomic_write_text(os.path.join(out, "history.csv"), "\n".join(lines) + "\n")
    from ..train.plotting import plot_history
    if histories and not os.path.exists(os.path.join(out, "curves.png")):
        plot_history(histories[-1][1], os.path.join(out, "curves.png"))

def header(comp: Competition, data: CompetitionData, backend: str, recipe: Recipe | None = None) -> str:
    """The first line of a run: class and image counts as reorg counts them (plus a warning
    line when the recipe fine-tunes a frozen backbone that has no pretrained weights)."""
    tr = data.train_iter
    n_train, per_epoch = len(tr.source), tr.num_examples
    train = f"{n_train} train" + (f" ({per_epoch} per epoch after drop_last)"
                                  if per_epoch != n_train else "")
    n_valid = len(data.valid_iter.source) if data.valid_iter else 0
    head = (f"{comp.name}: {len(data.classes)} classes, {train} / {n_valid} valid / "
            f"{len(data.test_ids)} test images; backend {backend}")
    if recipe is not None and recipe.model == "finetune" and recipe.weights is None:
        head += ("\nwarning: fine-tuning a frozen backbone with random weights (weights none): only "
                 "the head trains, on random features; expect accuracy near chance")
    return head

def title(comp: Competition, backend: str, recipe: Recipe) -> str:
    """``competition · backend · model · what it trains with`` for the pictures, generated from
    the recipe the run used (optimizer, schedule and its parameters, mixing, batch after the
    small-set rule; :func:`d2lkaggle.specs.tricks.recipe_text`)."""
    model = model_text(recipe)
    if recipe.weights == "imagenet":
        model += " from ImageNet weights"
    elif recipe.weights:
        model += f" from {os.path.basename(str(recipe.weights))}"
    elif recipe.model == "finetune":
        model += " (random backbone)"
    return " · ".join([comp.name, backend, model, recipe_text(recipe)])

def valid_pictures(out: str, data: CompetitionData, probs: np.ndarray, title: str,
                   tta: Any = None, plain_acc: float | None = None) -> dict[str, str]:
    """``confusion.png`` and ``mistakes.png`` of the validation set; with test-time
    augmentation (``tta``) their accuracy is labelled as such, beside the plain one
    (``plain_acc``, the epoch's figure the log and ``summary.json`` give) when they differ."""
    from ..train.plotting import plot_confusion, plot_mistakes
    y = data.valid_iter.labels
    files = {"confusion": os.path.join(out, "confusion.png"),
             "mistakes": os.path.join(out, "mistakes.png")}
    note = ""
    if tta is not None:
        acc = float((np.asarray(probs).argmax(axis=1) == y).mean())
        note = f"with TTA {tta}" + (f" ({plain_acc:.3f} without)" if plain_acc is not None
                                    and f"{plain_acc:.3f}" != f"{acc:.3f}" else "")
    plot_confusion(y, probs, data.classes, files["confusion"], title, note=note)
    plot_mistakes(data.valid_iter.source, y, probs, data.classes, files["mistakes"], title=title,
                  note=note)
    return files

def run_outcome(valid_hist: History | None, final_hist: History | None, predict_with: str,
                 num_classes: int, recipe: Recipe) -> dict[str, Any]:
    """Summary keys saying which model wrote the submission and how validation went."""
    from ..train.diagnostics import not_learning
    if valid_hist is None:  # no validation images after all: the retrained model it is
        predict_with = "retrain"
    out: dict[str, Any] = {"predict_with": predict_with}
    if valid_hist is not None and len(valid_hist):
        accs = valid_hist.column("valid_acc")
        best = max(range(len(accs)), key=lambda i: -math.inf if math.isnan(accs[i]) else accs[i])
        out["best_epoch"] = int(valid_hist.rows[best]["epoch"])
    model = {"retrain": f"the model retrained on train+valid ({plural(recipe.epochs, 'epoch')})",
             "best": f"the validation phase's best epoch ({out.get('best_epoch')})",
             "last": "the validation phase's last epoch"}[predict_with]
    out["submission_model"] = model
    # how each phase ENDED (an early warning of a run that learned later is not repeated)
    frozen_random = recipe.model == "finetune" and recipe.weights is None
    out["warnings"] = [f"{phase}: {w}" for phase, h in (("train/valid split", valid_hist),
                                                        ("retrain", final_hist))
                       if h is not None and (w := not_learning(h, num_classes, final=True,
                                                               frozen_random=frozen_random))]
    return out

def plot_run(histories: list[tuple[str, History]], path: str, title: str) -> str:
    """``curves.png`` of every phase of the run."""
    from ..train.plotting import plot_run as _plot
    if histories:
        _plot(histories, path, title)
    return path


#: errors a user's input, files or machine can cause (the command line's one line, exit 2);
#: anything else is a bug of ours, said as one too, with the exception's name
USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError, ArithmeticError, MemoryError)


def error_line(e: BaseException) -> str:
    """One line for an exception: its message, with the file an OSError names."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        msg = f"{e.strerror}: {where}"
    elif isinstance(e, MemoryError):
        msg = f"out of memory ({e or 'no details'}); use smaller images or batches"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())  # one line, whatever the message held


def summary_line(summary: dict[str, Any]) -> str:
    """The line a user reads last: best and last valid accuracy (and with TTA where it
    differs), the submission's model, the folder."""
    folder = os.path.dirname(summary["files"]["summary"])
    parts = [f"{summary['competition']} · {summary['backend']}"]
    if summary.get("valid_acc") is not None:
        best_epoch = summary.get("best_epoch")
        parts.append(f"valid acc best {summary['best_valid_acc']:.4f}"
                     + (f" (epoch {best_epoch})" if best_epoch else "")
                     + f", last {summary['valid_acc']:.4f}" + tta_text(summary))
    model = summary.get("submission_model") or summary.get("predict_with", "")
    parts.append(f"submission.csv from {model}")
    parts.append(f"files in {folder}")
    return " · ".join(parts)


def tta_text(summary: dict[str, Any]) -> str:
    """``" (0.0900 with TTA flip)"`` where the validation predictions' accuracy (with the
    run's test-time augmentation, what the pictures show) differs from the epochs' plain one."""
    tta, acc = summary.get("tta"), summary.get("tta_valid_acc")
    if tta is None or acc is None or summary.get("valid_acc") is None \
            or round(acc, 4) == round(summary["valid_acc"], 4):
        return ""
    return f" ({acc:.4f} with TTA {tta})"


#: the arguments of the ``d2lkaggle`` command running in this process (set by
#: :func:`d2lkaggle.cli.main` while it runs; ``None`` for a call from Python)
COMMAND: list[str] | None = None


def rerun_command(resume: bool) -> str:
    """How to start this run again: the command line (with ``--resume`` when ``resume``) or,
    from Python, the call."""
    if COMMAND is None:
        return "run_competition(..., resume=True)" if resume else "the same run_competition(...) call"
    args = list(COMMAND)
    if resume:   # (--resume force stays as given)
        args = [a for a in args if a != "--overwrite"]
        args += [] if "--resume" in args else ["--resume"]
    return shlex.join(["d2lkaggle", *args])


def ending_line(e: BaseException, out: str, phases: dict[str, tuple[str, int, int]],
                staged_for: str | None = None) -> str:
    """How a run that did not finish ended, in one line for its ``log.txt``: interrupted (what
    its checkpoints hold and the command that resumes it) or failed (the error's one line).
    ``phases``: phase label -> (checkpoint folder, epochs done, epochs); ``staged_for``: the
    finished run an ``--overwrite`` was to replace (kept: the new one is discarded)."""
    if isinstance(e, KeyboardInterrupt):
        how = str(e) or "Ctrl-C"
        if staged_for is not None:
            return (f"interrupted ({how}): the new run is discarded and the finished run in "
                    f"{staged_for} is kept; start it again with {rerun_command(False)}")
        held = ", ".join(f"{label} {done}/{plural(epochs, 'epoch')}" for label, (_, done, epochs)
                         in phases.items())
        return (f"interrupted ({how}) in {out}: its checkpoints hold {held}; resume with "
                f"{rerun_command(True)}")
    # the command line's words where the error has them (--weights FILE, not weights='FILE')
    line = " ".join(e.for_cli().split()) if COMMAND is not None and hasattr(e, "for_cli") \
        else error_line(e)
    if not isinstance(e, USER_ERRORS):
        line = f"{type(e).__name__}: {line} (internal error)"
    return f"failed: {line}" + (f" (the finished run in {staged_for} is kept)"
                                if staged_for is not None else "")
