"""What a run tells: its first line, the pictures' titles, curves, confusion and mistakes,
``history.csv``, the test metrics of a labelled test set and the summary's verdict."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..specs.competitions import Competition
from ..specs.recipe import Recipe
from ..specs.tricks import recipe_text
from ..train.loop import History
from ..utils.files import atomic_write_text
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
    model = recipe.model
    if recipe.weights == "imagenet":
        model += " from ImageNet weights"
    elif recipe.weights:
        model += f" from {os.path.basename(str(recipe.weights))}"
    elif recipe.model == "finetune":
        model += " (random backbone)"
    return " · ".join([comp.name, backend, model, recipe_text(recipe)])

def valid_pictures(out: str, data: CompetitionData, probs: np.ndarray, title: str) -> dict[str, str]:
    """``confusion.png`` and ``mistakes.png`` of the validation set."""
    from ..train.plotting import plot_confusion, plot_mistakes
    y = data.valid_iter.labels
    files = {"confusion": os.path.join(out, "confusion.png"),
             "mistakes": os.path.join(out, "mistakes.png")}
    plot_confusion(y, probs, data.classes, files["confusion"], title)
    plot_mistakes(data.valid_iter.source, y, probs, data.classes, files["mistakes"], title=title)
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
    model = {"retrain": f"the model retrained on train+valid ({recipe.epochs} epochs)",
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
