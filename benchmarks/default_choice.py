"""The measurements behind the CIFAR default (docs/airbench.md): a labelled hold-out set, and
per setting the accuracy a run's submission gets on it.

    python benchmarks/default_choice.py holdout DIR --n-train 1000 --n-test 2000 --hard --small
    python benchmarks/default_choice.py run DIR --recipe default --epochs 5 --seed 0 \
        [--predict-with retrain] [--set batch_size=64 lr=0.375] [--backend torch] [--tta-all]

``holdout`` writes the Kaggle CIFAR-10 layout (``train/``, ``trainLabels.csv``, ``test/``,
``sampleSubmission.csv``) from ``make_demo(hard=True)`` images whose test labels are known,
kept beside it in ``DIR.labels.csv`` (the competition's own test labels are secret; these are
not). ``--small`` draws the shapes small and anywhere (``make_demo(small_subjects=True)``): a
set on which the default does not reach 1.0, so choices show.

``run`` trains one ``run_competition`` and prints one line: the validation curve, the run's
timings and the test accuracy of its submission on the hold-out labels; with ``--tta-all``
the trained model then predicts the test set with each TTA (none, flip, flip-shift) and the
line gives each accuracy and prediction time. Every figure is this machine's, as it was.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))


def holdout(out: str, n_train: int, n_test: int, hard: bool, small: bool, seed: int = 7) -> str:
    """The layout with ``n_train`` labelled and ``n_test`` test images of known labels."""
    from d2lkaggle.data.demo import make_demo
    src = make_demo(out + ".src", n_train=n_train + n_test, n_test=1, seed=seed, hard=hard,
                    small_subjects=small)
    with open(os.path.join(src, "trainLabels.csv"), newline="") as f:
        rows = list(csv.reader(f))[1:]
    for d in ("train", "test"):
        os.makedirs(os.path.join(out, d))
    with open(os.path.join(out, "trainLabels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for i, label in rows[:n_train]:
            os.replace(os.path.join(src, "train", f"{i}.png"), os.path.join(out, "train", f"{i}.png"))
            w.writerow([i, label])
    with open(os.path.join(out, "sampleSubmission.csv"), "w", newline="") as f, \
            open(out.rstrip("/") + ".labels.csv", "w", newline="") as g:
        w, h = csv.writer(f), csv.writer(g)
        w.writerow(["id", "label"])
        h.writerow(["id", "label"])
        for k, (i, label) in enumerate(rows[n_train:], 1):
            os.replace(os.path.join(src, "train", f"{i}.png"), os.path.join(out, "test", f"{k}.png"))
            w.writerow([k, rows[0][1]])
            h.writerow([k, label])
    shutil.rmtree(src)
    return out


def holdout100(out: str, n_train: int, n_test: int, seed: int = 7) -> str:
    """A 100-class stand-in for CIFAR-100 in the Kaggle layout: class ``c`` is the hard demo's
    shape ``c % 10`` with a grating of orientation ``(c // 10) × 18°`` over the picture (ten
    shapes × ten textures), the test labels kept in ``DIR.labels.csv``."""
    import numpy as np
    from PIL import Image

    from d2lkaggle.data.demo import SHAPES, _draw_hard
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    for d in ("train", "test"):
        os.makedirs(os.path.join(out, d))
    names = [f"c{c:02d}" for c in range(100)]

    def picture(c: int) -> Image.Image:
        img = np.asarray(_draw_hard(SHAPES[c % 10], 32, 32, rng), dtype=np.float64)
        theta = np.pi * (c // 10) / 10
        phase = rng.uniform(0, 2 * np.pi)
        grating = 30 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 6 + phase)
        return Image.fromarray(np.clip(img + grating[..., None], 0, 255).astype(np.uint8))

    train_cls = rng.permutation(np.arange(n_train) % 100)
    test_cls = rng.integers(0, 100, n_test)
    with open(os.path.join(out, "trainLabels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for i, c in enumerate(train_cls, 1):
            picture(int(c)).save(os.path.join(out, "train", f"{i}.png"))
            w.writerow([i, names[c]])
    with open(os.path.join(out, "sampleSubmission.csv"), "w", newline="") as f, \
            open(out.rstrip("/") + ".labels.csv", "w", newline="") as g:
        w, h = csv.writer(f), csv.writer(g)
        w.writerow(["id", "label"])
        h.writerow(["id", "label"])
        for i, c in enumerate(test_cls, 1):
            picture(int(c)).save(os.path.join(out, "test", f"{i}.png"))
            w.writerow([i, names[0]])
            h.writerow([i, names[c]])
    return out


def _value(v: str):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(v, v)


def _accuracy(pred_labels: dict[str, str], truth: dict[str, str]) -> float:
    return sum(pred_labels[i] == truth[i] for i in truth) / len(truth)


def run(data: str, recipe: str, backend: str, seed: int, epochs: float | None,
        predict_with: str | None, settings: dict, tta_all: bool,
        competition: str = "cifar10", model: str | None = None) -> dict:
    """One run and its submission's accuracy on the hold-out labels (see the module text)."""
    from d2lkaggle.compete.run import run_competition
    from d2lkaggle.specs.competitions import get_competition, model_recipe, recipe_for
    comp = get_competition(competition)
    r = model_recipe(comp, model) if model else recipe_for(comp, recipe)
    r = r.with_overrides(epochs=epochs, **settings)
    with open(data.rstrip("/") + ".labels.csv", newline="") as f:
        truth = {row["id"]: row["label"] for row in csv.DictReader(f)}
    out = tempfile.mkdtemp(prefix="d2lk-choice-")
    try:
        s = run_competition(competition, data, backend=backend, out=os.path.join(out, "run"),
                            recipe=r, seed=seed, predict_with=predict_with, log=None,
                            progress=False, verbose=0)
        with open(os.path.join(out, "run", "submission.csv"), newline="") as f:
            sub = {row["id"]: row["label"] for row in csv.DictReader(f)}
        import pandas as pd
        h = pd.read_csv(os.path.join(out, "run", "history.csv"))
        res = {"competition": competition, "recipe": recipe, "model": r.model,
               "settings": settings, "epochs": r.epochs, "seed": seed,
               "backend": backend, "predict_with": s["predict_with"], "valid_acc": s["valid_acc"],
               "curve": [round(v, 3) for v in h[h.phase == "valid"].valid_acc],
               "timings": s["timings"], "devices": s["devices"], "tta": r.tta,
               "test_acc": _accuracy(sub, truth)}
        if tta_all:
            res["tta_all"] = _tta_all(backend, r, s, out, truth, comp)
        return res
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _tta_all(backend: str, r, s: dict, out: str, truth: dict, comp) -> dict:
    """The trained model (its last checkpoint) predicting the test set with each TTA."""
    from d2lkaggle.compete.load import load_data, normalized
    from d2lkaggle.models.build import build_net
    from d2lkaggle.utils.files import load_npz
    from d2lkaggle.utils.registry import get_backend
    bk = get_backend(backend)
    comp = normalized(comp, r)
    d = load_data(comp, s["data_dir"], batch_size=256, valid_ratio=r.valid_ratio,
                  augment=r.augment)
    phase = "final" if os.path.exists(os.path.join(out, "run", "checkpoints", "final")) else "valid"
    state, _ = load_npz(os.path.join(out, "run", "checkpoints", phase, "last.npz"))
    net = build_net(bk, r, len(d.classes), 32)
    bk.set_state(net, {k[6:]: v for k, v in state.items() if k.startswith("model/")})
    res = {}
    for tta in (None, "flip", "flip-shift"):
        t = time.perf_counter()
        p = bk.predict(net, d.test_iter, tta=tta)
        sec = time.perf_counter() - t
        pred = {i: d.classes[int(k)] for i, k in zip(d.test_ids, p.argmax(1))}
        res[tta or "none"] = {"test_acc": _accuracy(pred, truth), "seconds": round(sec, 2)}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("holdout")
    h.add_argument("dir")
    h.add_argument("--n-train", type=int, default=1000)
    h.add_argument("--n-test", type=int, default=2000)
    h.add_argument("--hard", action="store_true")
    h.add_argument("--small", action="store_true")
    h.add_argument("--classes", type=int, choices=(10, 100), default=10,
                   help="100: the CIFAR-100 stand-in (ten shapes × ten gratings)")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--recipe", default="default")
    r.add_argument("--backend", default="torch")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epochs", type=float)
    r.add_argument("--predict-with", choices=("retrain", "best", "last"))
    r.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    r.add_argument("--tta-all", action="store_true")
    r.add_argument("--competition", default="cifar10")
    r.add_argument("--model", help="the competition's own recipe for this model")
    a = ap.parse_args(argv)
    if a.cmd == "holdout":
        print(holdout100(a.dir, a.n_train, a.n_test) if a.classes == 100 else
              holdout(a.dir, a.n_train, a.n_test, a.hard, a.small))
        return 0
    settings = {k: _value(v) for k, v in (x.split("=", 1) for x in a.set)}
    epochs = int(a.epochs) if a.epochs is not None and a.epochs.is_integer() else a.epochs
    print(json.dumps(run(a.dir, a.recipe, a.backend, a.seed, epochs, a.predict_with, settings,
                         a.tta_all, a.competition, a.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
