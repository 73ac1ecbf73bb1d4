"""docs/recipes.md: its Python blocks run, in order, in one fresh interpreter."""
import importlib.util
import os
import re

import pytest

from conftest import ROOT
from docs_runner import parse, run_page_once


def blocks() -> list[str]:
    text = open(os.path.join(ROOT, "docs", "recipes.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_docs_have_the_calls():
    code = "\n".join(blocks())
    for call in ("schedules.onecycle", "schedules.cyclic", "Mixup(", "preset_transforms",
                 "optimizer=", "schedule=", "mixing=", "run_competition("):
        assert call in code, call


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the training block uses torch")
def test_python_blocks_run(tmp_path_factory):
    # all blocks, in order, in one fresh interpreter: the page's one run, shared with
    # tests/docs/test_docs.py (none of its blocks is show-only, so that run runs them all)
    path = os.path.join(ROOT, "docs", "recipes.md")
    assert all(b.skip_reason is None for b in parse(open(path, encoding="utf-8").read()))
    r = run_page_once(path, "torch", lambda: str(tmp_path_factory.mktemp("page")))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout.splitlines()
    assert out[0] == "[0.002, 0.05, 0.0]" and out[1] == "0.01 0.04 0.01 0.025"
    assert "onecycle 0.4" in out                     # the write-up block
    assert "32 0.002" in out                         # the small-set batch rule (AdamW: lr kept)
