"""``python -m benchmarks``: the one-command table runs and produces real rows.

Timings are never asserted (the machine is shared); the test checks that a table with
numbers, ratios and goals comes out and that the marked README section is rewritten.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, tmp_path, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               D2LKAGGLE_BENCH_CACHE=str(tmp_path / "cache"),
               D2LKAGGLE_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def test_quick_reorg_table_and_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nkept text\n")
    out = tmp_path / "r.json"
    r = _run(["--quick", "--only", "reorg", "--write", str(readme), "--json", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("| reorg-")]
    assert [l.split("|")[1].strip() for l in lines] == ["reorg-fresh", "reorg-rerun"]
    res = json.loads(out.read_text())["results"]
    for row in res:
        assert row["ours"] > 0 and row["textbook"] > 0, row
        assert row["ratio"] == pytest.approx(row["ours"] / row["textbook"])
        assert row["goal"].startswith("≤") and row["unit"] == "s"
        assert "os.link" in row["note"]
    text = readme.read_text()
    assert "kept text" in text and "| reorg-fresh |" in text and "native bf16" in text
    # a second run replaces the marked section instead of appending another one
    r = _run(["--quick", "--only", "reorg-fresh", "--write", str(readme)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    text = readme.read_text()
    assert text.count("benchmarks:begin") == 1 and "| reorg-rerun |" not in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("torchvision") is None,
                    reason="the textbook side needs torch + torchvision")
def test_quick_pipeline_row_against_torchvision(tmp_path):
    r = _run(["--quick", "--only", "pipeline"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(l for l in r.stdout.splitlines() if l.startswith("| pipeline |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[4].endswith("×"), cells
    assert cells[5] == "≥ 10×" and cells[6] in ("met", "**missed**")


def test_unknown_row_is_one_clear_error(tmp_path):
    r = _run(["--only", "no-such-row"], tmp_path)
    assert r.returncode != 0 and "no row 'no-such-row'" in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("torchvision") is None,
                    reason="the textbook side needs torch + torchvision")
def test_quick_time_to_accuracy_row(tmp_path):
    # the row alone, tiny: ours (default recipe) and the chapter's loop, each run once in its
    # own process, the textbook capped by ours' time; no timing is asserted
    out = tmp_path / "r.json"
    r = _run(["--quick", "--only", "time_to_accuracy", "--json", str(out)], tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())["results"][0]
    assert row["row"] == "time-to-0.30-torch" and row["unit"] == "s", row
    assert "failed" not in row["note"] and row["goal"] == "≥ 5× faster", row
    # both curves are in the note: (accuracy @ seconds) after every epoch of each side
    ours, book = row["note"].split("; textbook: ")
    assert "default recipe" in ours and "@" in ours and "@" in book, row["note"]
    assert (row["ours"] is None) == ("not reached" in ours), row
