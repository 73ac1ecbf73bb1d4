"""Every Python block of docs/ensembles.md runs (core only, no framework)."""
import os
import re

from conftest import ROOT, run_py


def test_python_blocks_run(tmp_path):
    text = open(os.path.join(ROOT, "docs", "ensembles.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        r = run_py(code, env={"D2LKAGGLE_DATA": str(tmp_path)})
        assert r.returncode == 0, code + r.stderr[-2000:]
