"""Run the Python blocks of a Markdown page, top to bottom, like a notebook.

Rules for pages (docs/*.md and README.md):

* Every fenced block opened with ```python runs, in order, in ONE fresh interpreter per page
  (later blocks see earlier blocks' names). Other fences (```bash, ```text ...) never run.
* A block meant only to be read gets a marker on the line just above its fence, with a
  reason: ``<!-- no-run: needs the internet -->``. Keep these few.
* A page that should hold for every framework says so once, anywhere:
  ``<!-- docs-backends: torch mxnet paddle -->``; it then runs once per backend with
  ``torch_impl`` and ``get_backend("torch")`` replaced by the other backend's names.
* Pages run in an empty temporary folder with ``D2LKAGGLE_DATA``/``TORCH_HOME``/``TMPDIR``
  pointing into it, matplotlib on Agg and one OpenMP thread, so they write nothing outside it. Keep them tiny the way the
  book does: a ``demo = True`` switch that picks the synthetic competition and few epochs.

A failing block is reported with the page's file name and the line number inside the
Markdown file (the code is compiled with its Markdown line offset).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)(.*)$")
NO_RUN = re.compile(r"<!--\s*no-run\s*:\s*(.*?)\s*-->")
BACKENDS = re.compile(r"<!--\s*docs-backends\s*:\s*([\w\s]+?)\s*-->")


@dataclass
class Block:
    line: int          # 1-based line of the first code line in the Markdown file
    code: str
    skip_reason: str | None = None


def parse(text: str) -> list[Block]:
    """The ```python blocks of a page, with their first line and no-run reasons."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        if lang in ("python", "py", "python3"):
            prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = NO_RUN.search(prev)
            if skip is not None and not skip.group(1):
                raise ValueError(f"line {i}: a no-run marker needs a reason: <!-- no-run: why -->")
            body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[start:j]]
            blocks.append(Block(start + 1, "\n".join(body) + "\n",
                                skip.group(1) if skip else None))
        i = j + 1
    return blocks


def page_backends(text: str) -> list[str] | None:
    """Backends the page asks to be run in (``<!-- docs-backends: ... -->``), else None."""
    m = BACKENDS.search(text)
    return m.group(1).split() if m else None


def for_backend(code: str, backend: str) -> str:
    """The page's code with the torch backend's names replaced by ``backend``'s."""
    if backend == "torch":
        return code
    return (code.replace("torch_impl", f"{backend}_impl")
            .replace('get_backend("torch")', f'get_backend("{backend}")')
            .replace("get_backend('torch')", f"get_backend('{backend}')"))


def needed_backends(code: str) -> set[str]:
    """Frameworks a page's code imports (to skip it where one is not installed)."""
    found = set(re.findall(r"\b(torch|mxnet|paddle)_impl\b", code))
    found |= set(re.findall(r"get_backend\(\s*['\"](torch|mxnet|paddle)['\"]", code))
    found |= set(re.findall(r"\bbackend\s*=\s*['\"](torch|mxnet|paddle)['\"]", code))
    found |= {m for m in re.findall(r"^\s*(?:import|from)\s+(torch|mxnet|paddle)\b", code, re.M)}
    return found


DRIVER = r"""
import json, sys, traceback
path, blocks = sys.argv[1], json.load(open(sys.argv[2]))
ns = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile("\n" * (line - 1) + code, path, "exec"), ns)
    except BaseException:
        traceback.print_exc()
        print(f"DOCS-FAILED {path}:{line}", file=sys.stderr)
        sys.exit(1)
"""


def run_page(path: str, workdir: str, backend: str = "torch", timeout: int = 900,
             extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the runnable blocks of ``path`` in a fresh interpreter inside ``workdir``."""
    text = open(path, encoding="utf-8").read()
    blocks = [(b.line, for_backend(b.code, backend)) for b in parse(text) if b.skip_reason is None]
    # a page's own tempfile.mkdtemp() lands in workdir too, so nothing outlives the test's folder
    tmpdir = os.path.join(workdir, ".tmp")
    os.makedirs(tmpdir, exist_ok=True)
    spec = os.path.join(workdir, ".docs_blocks.json")
    with open(spec, "w", encoding="utf-8") as f:
        json.dump(blocks, f)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               D2LKAGGLE_DATA=os.path.join(workdir, "cache"),
               TORCH_HOME=os.path.join(workdir, "torch-home"), MPLBACKEND="Agg",
               TMPDIR=tmpdir)
    # tiny demo nets: one OpenMP thread is as fast, and far faster on a loaded machine
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-c", DRIVER, os.path.relpath(path, root), spec],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


_RUNS: dict[tuple[str, str], subprocess.CompletedProcess] = {}


def run_page_once(path: str, backend: str, new_dir) -> subprocess.CompletedProcess:
    """:func:`run_page` once per test session for ``(path, backend)``: the tests that check the
    same page (tests/docs/test_docs.py runs every page; a page's own test asserts on its output)
    share one run instead of training the same demo twice. ``new_dir()`` gives the folder."""
    key = (os.path.abspath(path), backend)
    if key not in _RUNS:
        workdir = new_dir()
        _RUNS[key] = run_page(path, workdir, backend)
        if _RUNS[key].returncode == 0:
            # the tests assert on the output; a page's runs and checkpoints are GBs over a suite
            shutil.rmtree(workdir, ignore_errors=True)
    return _RUNS[key]
