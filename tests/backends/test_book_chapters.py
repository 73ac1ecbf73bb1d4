"""The two Kaggle chapters' code, every tab, as the book has it, offline, end to end.

tests/backends/chapters/ holds the chapters' code cells in order, one file per chapter and tab
(the English edition's PyTorch and MXNet tabs, the Chinese edition's PaddlePaddle tab); the
only changed lines carry ``# book: ...`` (or ``# added: ...``) and are the ones
docs/from-the-book.md lists. run.py runs both chapters of one framework in one process, on
tiny generated demos (a few small batches, one epoch) that the chapters' own
``download_extract(...)`` line finds through ``D2LKAGGLE_LOCAL_<NAME>``; this test then checks
each ``submission.csv`` the book's code wrote against the demo's sample submission.
"""
import json
import os
import re

import pytest

from conftest import ROOT, backend_params, run_py
from d2lkaggle.compete.submission import read_submission, validate_submission

CHAPTERS = os.path.join(ROOT, "tests", "backends", "chapters")
TAB = {"torch": "pytorch", "mxnet": "mxnet", "paddle": "paddle"}
MARK = re.compile(r"#\s*(book|added):")


@pytest.mark.parametrize("backend", backend_params())
def test_both_chapters_run_as_the_book_has_them(backend, tmp_path):
    # one OpenMP thread: these nets are tiny, and two threads on a loaded 2-core machine
    # mostly wait for each other (see test_book.py)
    script = os.path.join(CHAPTERS, "run.py")
    r = run_py(f"import runpy; runpy.run_path({script!r}, run_name='__main__')", backend,
               str(tmp_path / "run"), timeout=600, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for chapter, sample, kind in (("cifar10", "sampleSubmission.csv", "label"),
                                  ("dog", "sample_submission.csv", "proba")):
        work, data = out[chapter]["work"], out[chapter]["data_dir"]
        sub = os.path.join(work, "submission.csv")
        validate_submission(sub, os.path.join(data, sample), kind=kind)
        assert len(read_submission(sub)) == 5
        # the chapter's reorg wrote the folders its own ImageFolder/DatasetFolder read
        tvt = os.path.join(data, "train_valid_test")
        assert sorted(os.listdir(tvt)) == ["test", "train", "train_valid", "valid"]
        # headless, each of the chapter's two train() calls drew its curves to a PNG
        assert sorted(f for f in os.listdir(work) if f.endswith(".png")) == [
            "animator-2.png", "animator.png"]
    # the chapter's download_extract line found the demo the documented offline way
    assert "cifar10_tiny: using " in r.stderr and "from D2LKAGGLE_LOCAL_CIFAR10_TINY" in r.stderr
    assert "dog_tiny: using " in r.stderr and "from D2LKAGGLE_LOCAL_DOG_TINY" in r.stderr
    # the CIFAR chapter's train() printed its validation accuracy: evaluate_accuracy_gpu(s)
    # took the framework's own loader
    assert re.search(r"train loss [\d.]+, train acc [\d.]+, valid acc [\d.]+", r.stdout)
    assert re.search(r"train loss [\d.]+, valid loss [\d.]+", r.stdout)


def changed_lines(path: str) -> list[str]:
    """The code of the lines a transcription changes (marked ``# book:`` / ``# added:``)."""
    return [MARK.split(line)[0].strip() for line in open(path, encoding="utf-8")
            if MARK.search(line) and not line.lstrip().startswith("#")]


def test_the_docs_list_every_changed_line():
    doc = open(os.path.join(ROOT, "docs", "from-the-book.md"), encoding="utf-8").read()
    for chapter in ("cifar10", "dog"):
        for backend, tab in TAB.items():
            lines = changed_lines(os.path.join(CHAPTERS, f"{chapter}_{tab}.py"))
            assert lines[0] == f"from d2lkaggle import {backend}_impl as d2l"
            for code in lines[1:]:
                assert f"`{code}`" in doc, (chapter, tab, code)


def test_fast_edits_apply_once_each():
    import importlib.util
    spec = importlib.util.spec_from_file_location("chapters_run", os.path.join(CHAPTERS, "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    for chapter, sizes in run.FAST.items():
        for tab in TAB.values():
            path = os.path.join(CHAPTERS, f"{chapter}_{tab}.py")
            code = open(path, encoding="utf-8").read()
            assert run.edited(code, sizes["edits"], path) != code
    with pytest.raises(SystemExit, match="occurs 0 times"):
        run.edited("x = 1\n", [("y = 2", "y = 3")], "f.py")
