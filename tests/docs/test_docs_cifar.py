"""Every Python block of the CIFAR-archive and write-up docs runs (in order, one namespace)."""
import importlib.util
import os
import re

import pytest

from conftest import ROOT
from docs_runner import parse, run_page_once

DOCS = ["cifar_archives.md", "writeups.md"]


def python_blocks(name):
    text = open(os.path.join(ROOT, "docs", name), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the docs train with torch")
@pytest.mark.parametrize("name", DOCS)
def test_doc_python_blocks_run(name, tmp_path_factory):
    if not os.path.exists(os.path.join(ROOT, "docs", name)):
        pytest.fail(f"docs/{name} is missing")
    blocks = python_blocks(name)
    assert blocks, f"docs/{name} has no python block"
    path = os.path.join(ROOT, "docs", name)
    # every block runs (none is show-only), in order, in one namespace: the page's one run,
    # shared with tests/docs/test_docs.py (D2LKAGGLE_DATA and TORCH_HOME inside its temp folder)
    assert all(b.skip_reason is None for b in parse(open(path, encoding="utf-8").read()))
    r = run_page_once(path, "torch", lambda: str(tmp_path_factory.mktemp("page")))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
