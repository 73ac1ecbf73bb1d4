"""Run the two Kaggle chapters' code, as the book has it, for one framework, offline.

    python tests/backends/chapters/run.py torch OUT [--book [--epochs N]]

The six files beside this one are the chapters' code cells in order, one file per chapter and
tab (PyTorch and MXNet of the English edition, PaddlePaddle of the Chinese one), with only the
lines docs/from-the-book.md lists changed (each marked ``# book: ...``). This script makes a
generated demo in the tiny archive's layout for each chapter, points the chapter's
``download_extract('cifar10_tiny')`` / ``('dog_tiny')`` at it the documented offline way
(``D2LKAGGLE_LOCAL_<NAME>``), runs CIFAR-10 then Dog Breed in this one process (each in its own
folder under OUT, where it writes ``submission.csv``) and prints one JSON line: per chapter the
folders and seconds.

Default: the test's sizes — a few small batches and one epoch (the sizes below are edited into
the code before it runs; each edit must match exactly once, so the code stays the book's).
``--book``: the book's own batch sizes, epochs and image sizes, on the smallest demo with which
the book's loops run (``d2lkaggle.data.demo.book_demo_size``); ``--epochs N`` then changes only
the number of epochs (the book's: 20 for CIFAR-10, 10 for Dog Breed).
"""
from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TAB = {"torch": "pytorch", "mxnet": "mxnet", "paddle": "paddle"}
BOOK = {"cifar10": dict(batch_size=32, classes=10, layout="cifar10", size=32, name="cifar10_tiny"),
        "dog": dict(batch_size=32, classes=120, layout="dog", size=64, name="dog_tiny")}

#: the test's sizes: (the book's text, the test's text) edited into each chapter's code
FAST = {
    "cifar10": dict(batch_size=4, size=32, edits=[
        ("batch_size = 32 if demo else 128", "batch_size = 4 if demo else 128"),
        ("d2l.try_all_gpus(), 20,", "d2l.try_all_gpus(), 1,")]),
    "dog": dict(batch_size=24, size=24, edits=[
        ("batch_size = 32 if demo else 128", "batch_size = 24 if demo else 128"),
        ("d2l.try_all_gpus(), 10,", "d2l.try_all_gpus(), 1,"),
        ("RandomResizedCrop(224,", "RandomResizedCrop(32,"),
        ("Resize(256)", "Resize(36)"),
        ("CenterCrop(224)", "CenterCrop(32)")]),
}


def edited(code: str, edits: list[tuple[str, str]], path: str) -> str:
    """``code`` with each edit applied; an edit that does not match exactly once fails."""
    for old, new in edits:
        if code.count(old) != 1:
            raise SystemExit(f"{path}: {old!r} occurs {code.count(old)} times, expected once")
        code = code.replace(old, new)
    return code


#: the chapters' epoch lines, for ``--book --epochs N``
EPOCHS = {"cifar10": "d2l.try_all_gpus(), 20,", "dog": "d2l.try_all_gpus(), 10,"}


def run_chapter(chapter: str, framework: str, out: str, book: bool,
                epochs: int | None = None) -> dict:
    """Make the demo, point the chapter's DATA_HUB name at it, run the chapter's code in ``out``."""
    from d2lkaggle.data.demo import book_demo_size, make_demo
    from d2lkaggle.data.hub import local_env_var
    spec = BOOK[chapter]
    sizes = spec if book else {**spec, **FAST[chapter]}
    n_train = book_demo_size(sizes["batch_size"], spec["classes"])
    data = make_demo(os.path.join(out, "data", chapter), n_train=n_train, n_test=5,
                     size=sizes["size"], layout=spec["layout"], num_classes=spec["classes"], seed=3)
    os.environ[local_env_var(spec["name"])] = data
    path = os.path.join(HERE, f"{chapter}_{TAB[framework]}.py")
    code = open(path, encoding="utf-8").read()
    if not book:
        code = edited(code, FAST[chapter]["edits"], path)
    elif epochs is not None:
        code = edited(code, [(EPOCHS[chapter], f"d2l.try_all_gpus(), {epochs},")], path)
    work = os.path.join(out, chapter)
    os.makedirs(work, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(work)
    start = time.perf_counter()
    try:
        exec(compile(code, path, "exec"), {"__name__": "__main__", "__file__": path})
    finally:
        os.chdir(cwd)
    return {"data_dir": data, "work": work, "n_train": n_train,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str]) -> int:
    framework, out = argv[0], os.path.abspath(argv[1])
    book = "--book" in argv[2:]
    epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else None
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("D2LKAGGLE_DATA", os.path.join(out, "cache"))   # nothing in ~/.cache
    report = {ch: run_chapter(ch, framework, out, book, epochs) for ch in ("cifar10", "dog")}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
