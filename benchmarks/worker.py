"""One measurement in a fresh process: ``python -m benchmarks.worker '<json job>'``.

``benchmarks/run.py`` starts one of these per setting and repeat, so thread counts and
framework switches (which must be set before a framework loads) never leak between
settings. The result is printed as one line ``RESULT {json}``.
"""
from __future__ import annotations

import json
import os
import sys
import time



def _loaders(data_dir: str, batch: int):
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.compete.load import load_data
    return load_data(get_competition("cifar10"), data_dir, batch_size=batch, valid_ratio=0.1)


def ours_train(backend: str, data_dir: str, batch: int, steps: int, warmup: int,
               amp: object = "auto", compile: bool = False, prefetch: int | None = None,
               workers: int | None = None) -> dict:
    """The library's training step fed by its own loader, as ``loop.fit`` drives it.

    The keyword levers (``--levers`` rows) change one setting each: ``amp`` (torch), a
    ``torch.compile``d model, the loader's prefetch depth and worker threads."""
    from d2lkaggle.utils.registry import get_backend
    bk = get_backend(backend)
    data = _loaders(data_dir, batch)
    if prefetch is not None:
        data.train_iter.prefetch = int(prefetch)
    if workers is not None:
        data.train_iter.num_workers = int(workers)
    bk.set_seed(0)
    kw = {"amp": amp} if backend == "torch" else {}
    step = bk.Step(bk.resnet18(10), lr=0.02, wd=5e-4, momentum=0.9,
                   mean=data.train_iter.mean, std=data.train_iter.std, **kw)
    if compile:
        import torch
        step.model = torch.compile(step.net)
    t0 = n0 = None
    n = 0
    for b, (x, y) in enumerate(data.train_iter):
        if b == warmup:
            t0, n0 = time.perf_counter(), n
        step.set_lr(0.02)
        _, _, k = step.train_batch(x, y)
        n += k
        if b + 1 >= warmup + steps:
            break
    out = {"examples_per_sec": (n - n0) / (time.perf_counter() - t0),
           "precision": getattr(step, "precision", None)}
    if backend == "torch":
        import torch
        out.update(threads=torch.get_num_threads(), bf16=bool(getattr(step, "amp", False)),
                   channels_last=bool(getattr(step, "channels_last", False)))
    return out


def ours_accuracy(data_dir: str, batch: int, epochs: int, lr: float) -> dict:
    """Valid accuracy of the library's ``train`` with the chapter's recipe (StepLR 4 / 0.9)."""
    from d2lkaggle import torch_impl as T
    data = _loaders(data_dir, batch)
    T.set_seed(0)
    t = time.perf_counter()
    h = T.train(T.resnet18(10), data.train_iter, data.valid_iter, epochs, lr, 5e-4,
                lr_period=4, lr_decay=0.9, progress=False, log=None)
    return {"valid_acc": h.last["valid_acc"], "train_loss": h.last["train_loss"],
            "seconds": time.perf_counter() - t}


class _Reached(Exception):
    """Raised from ``on_epoch`` once the target accuracy is reached: the run stops there."""


def ours_time_to_accuracy(backend: str, data_dir: str, target: float,
                          epochs: int | None = None, competition: str = "cifar10",
                          amp: object = "auto", recipe: str = "default",
                          max_seconds: float | None = None) -> dict:
    """Wall seconds until the library's default recipe first validates at ``target``.

    ``run_competition``'s stages as ``d2lkaggle run cifar10 --data-dir DIR --no-retrain``
    runs them (``epochs`` None: the recipe's); the clock starts before the plan (loading and
    decoding the images included) and stops at the first epoch at ``target``, where the run
    is stopped (None when no epoch reaches it)."""
    import tempfile
    from d2lkaggle.compete.run import (load_stage, open_run_folder, plan_run, start_training,
                                       validate)
    t0 = time.perf_counter()
    curve = []

    devices = []

    def on_epoch(epoch, history):
        devices[:] = [history.devices]
        acc = float(history.last["valid_acc"])
        curve.append((round(time.perf_counter() - t0, 1), round(acc, 3)))
        if acc >= target or (max_seconds and time.perf_counter() - t0 > max_seconds):
            raise _Reached   # (or out of time: the curve says which)

    with tempfile.TemporaryDirectory(prefix="d2lkaggle-tta-") as tmp:
        plan = open_run_folder(plan_run(competition, data_dir, backend=backend, epochs=epochs,
                                        out=os.path.join(tmp, "run"), retrain=False,
                                        progress=False, log=None, amp=amp, recipe=recipe))
        run = load_stage(plan)
        start_training(run)
        run.train_kw["on_epoch"] = on_epoch
        try:
            validate(run)
        except _Reached:
            pass
    hit = next((t for t, a in curve if a >= target), None)
    return {"seconds": hit, "curve": curve, "epochs": len(curve), "planned": plan.recipe.epochs,
            "best_acc": max(a for _, a in curve), "wall": time.perf_counter() - t0,
            "batch": plan.recipe.batch_size, "model": plan.recipe.model,
            "precision": devices[0] if devices else None}


def ours_pipeline(data_dir: str, batch: int, n_batches: int) -> dict:
    """Augmented uint8 batches/s of the core loader alone (no model, no framework)."""
    data = _loaders(data_dir, batch)
    return {"batches_per_sec": batches_per_sec(data.train_iter, n_batches)}


def batches_per_sec(loader, n_batches: int) -> float:
    """Batches/s over ``n_batches`` after one warm-up batch, epoch after epoch as needed."""
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        try:
            next(it)
        except StopIteration:  # the next epoch, as a training loop would go on
            it = iter(loader)
            next(it)
    return n_batches / (time.perf_counter() - t)


def reorg(root: str) -> dict:
    """Seconds of the ``os.link`` floor, a fresh reorganisation and a re-run, same process.

    The floor: one ``os.link`` per placed file (train or valid, train_valid, test) into
    folders made beforehand (not timed) — what no reorganisation can beat on this file system.
    Ours: ``reorg_train_valid`` (valid_ratio 0.1) + ``reorg_test`` in link mode, the labels
    already read (as in benchmarks/reorg_speed.py).
    """
    import shutil
    from d2lkaggle.data.labels import read_csv_labels
    from d2lkaggle.data.reorg import reorg_test, reorg_train_valid
    from d2lkaggle.data.splits import split_train_valid
    labels = read_csv_labels(os.path.join(root, "trainLabels.csv"))
    _, valid = split_train_valid(labels, 0.1, 0)
    valid = set(valid)
    floor = os.path.join(root, "floor_tree")
    shutil.rmtree(floor, ignore_errors=True)
    for part in ("train", "valid", "train_valid"):
        for c in set(labels.values()):
            os.makedirs(os.path.join(floor, part, c))
    os.makedirs(os.path.join(floor, "test", "unknown"))
    train_src, test_src = os.path.join(root, "train"), os.path.join(root, "test")
    train_files, test_files = sorted(os.listdir(train_src)), sorted(os.listdir(test_src))
    plan = []
    for name in train_files:
        stem = name.rsplit(".", 1)[0]
        c = labels[stem]
        src = os.path.join(train_src, name)
        plan.append((src, os.path.join(floor, "train_valid", c, name)))
        plan.append((src, os.path.join(floor, "valid" if stem in valid else "train", c, name)))
    plan += [(os.path.join(test_src, n), os.path.join(floor, "test", "unknown", n))
             for n in test_files]
    link = os.link
    t = time.perf_counter()
    for src, dst in plan:
        link(src, dst)
    t_floor = time.perf_counter() - t
    shutil.rmtree(floor)
    shutil.rmtree(os.path.join(root, "train_valid_test"), ignore_errors=True)
    out = {"floor": t_floor, "links": len(plan)}
    for run in ("fresh", "rerun"):
        t = time.perf_counter()
        reorg_train_valid(root, labels, 0.1, seed=0, mode="link")
        reorg_test(root, mode="link")
        out[run] = time.perf_counter() - t
    return out


def book(module: str, fn: str, **kw) -> dict:
    import importlib
    return getattr(importlib.import_module(f"benchmarks.textbook.{module}"), fn)(**kw)


JOBS = {"ours_train": ours_train, "ours_accuracy": ours_accuracy,
        "ours_pipeline": ours_pipeline, "book": book, "reorg": reorg,
        "ours_time_to_accuracy": ours_time_to_accuracy}


def main(argv=None) -> int:
    job = json.loads((argv or sys.argv[1:])[0])
    kind = job.pop("job")
    out = JOBS[kind](**job)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
