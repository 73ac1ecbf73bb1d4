"""Every Python block of the CIFAR-archive and write-up docs runs (in order, one namespace)."""
import importlib.util
import os
import re

import pytest

from conftest import ROOT, run_py

DOCS = ["cifar_archives.md", "writeups.md"]


def python_blocks(name):
    text = open(os.path.join(ROOT, "docs", name), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the docs train with torch")
@pytest.mark.parametrize("name", DOCS)
def test_doc_python_blocks_run(name, tmp_path):
    if not os.path.exists(os.path.join(ROOT, "docs", name)):
        pytest.fail(f"docs/{name} is missing")
    blocks = python_blocks(name)
    assert blocks, f"docs/{name} has no python block"
    code = "\n".join(f"# --- block {i}\n{b}" for i, b in enumerate(blocks))
    r = run_py("import os, sys; os.chdir(sys.argv[1]); exec(compile(sys.argv[2], 'doc', 'exec'))",
               str(tmp_path), code, timeout=900,
               env={"D2LKAGGLE_DATA": str(tmp_path / "cache"), "TORCH_HOME": str(tmp_path / "torch")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
