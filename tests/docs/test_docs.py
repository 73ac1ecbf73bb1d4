"""Every Python block of docs/*.md and README.md runs (see tests/docs_runner.py for the rules).

A page that fails is a failing test; new pages are picked up automatically.
"""
import glob
import os

import pytest

from conftest import ROOT
from d2lkaggle.utils.registry import is_installed
from docs_runner import needed_backends, page_backends, parse, run_page, run_page_once

PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
#: show-only blocks allowed over all pages: each must say why it cannot run here
MAX_NO_RUN = 6


def _cases():
    for path in PAGES:
        text = open(path, encoding="utf-8").read()
        if not any(b.skip_reason is None for b in parse(text)):
            continue
        for backend in page_backends(text) or ["torch"]:
            yield pytest.param(path, backend, id=f"{os.path.relpath(path, ROOT)}-{backend}")


@pytest.mark.parametrize("path,backend", list(_cases()))
def test_doc_page_runs(path, backend, tmp_path_factory):
    from docs_runner import for_backend
    code = "".join(for_backend(b.code, backend) for b in parse(open(path, encoding="utf-8").read())
                   if b.skip_reason is None)
    missing = sorted(b for b in needed_backends(code) if not is_installed(b))
    if missing:
        pytest.skip(f"{os.path.basename(path)} needs {', '.join(missing)} (not installed)")
    r = run_page_once(path, backend, lambda: str(tmp_path_factory.mktemp("page")))
    assert r.returncode == 0, f"{os.path.relpath(path, ROOT)} ({backend}) failed:\n{r.stderr[-4000:]}"


def test_few_show_only_blocks_each_with_a_reason():
    skipped = [(os.path.relpath(p, ROOT), b.line, b.skip_reason)
               for p in PAGES for b in parse(open(p, encoding="utf-8").read()) if b.skip_reason]
    assert len(skipped) <= MAX_NO_RUN, skipped
    assert all(len(reason) >= 8 for _, _, reason in skipped), skipped


def test_runner_reports_the_failing_markdown_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n<!-- no-run: shown only -->\n```python\n"
                    "raise SystemExit(3)\n```\n\n```bash\nexit 1\n```\n\n```python\n"
                    "assert x == 1\nundefined_name\n```\n")
    blocks = parse(page.read_text())
    assert [(b.line, b.skip_reason) for b in blocks] == [(4, None), (9, "shown only"), (17, None)]
    r = run_page(str(page), str(tmp_path / "work"))
    assert r.returncode == 1
    assert "NameError" in r.stderr and 'line 18' in r.stderr and "DOCS-FAILED" in r.stderr
    page.write_text("```python\nimport os\nopen('made.txt', 'w').write(os.getcwd())\n```\n")
    r = run_page(str(page), str(tmp_path / "work2"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "work2" / "made.txt").read_text() == str(tmp_path / "work2")


def test_no_run_marker_needs_a_reason():
    with pytest.raises(ValueError, match="reason"):
        parse("<!-- no-run: -->\n```python\npass\n```\n")


def test_backend_substitution():
    from docs_runner import for_backend
    code = 'from d2lkaggle.torch_impl import train\nbk = d2lkaggle.get_backend("torch")\n'
    assert for_backend(code, "paddle") == ('from d2lkaggle.paddle_impl import train\n'
                                           'bk = d2lkaggle.get_backend("paddle")\n')
    assert needed_backends(code) == {"torch"}
    assert needed_backends("import mxnet as mx\n") == {"mxnet"}
    assert needed_backends('run_competition("demo", d, backend="paddle")\n') == {"paddle"}
