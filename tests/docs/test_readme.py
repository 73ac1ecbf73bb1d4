import os
import re

from conftest import ROOT


def quick_start():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    cmds = quick_start()
    assert len(cmds) == 2
    assert cmds[0].endswith("d2lkaggle demo") and "pytest" in cmds[1]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert cmds[1] in ci.splitlines()


def test_setup_cfg_extras():
    cfg = open(os.path.join(ROOT, "setup.cfg")).read()
    for extra in ("torch", "mxnet", "paddle", "all", "test"):
        assert re.search(rf"^{extra} =", cfg, re.M), extra
    assert "d2lkaggle = d2lkaggle.cli:main" in cfg


def _bash_lines(text):
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                yield line


def test_readme_d2lkaggle_commands_parse():
    """Every `d2lkaggle ...` line of the README is a valid command line (parsed, not run)."""
    import shlex
    from d2lkaggle.cli import build_parser
    text = open(os.path.join(ROOT, "README.md")).read()
    cmds = [ln for ln in _bash_lines(text) if ln.startswith("d2lkaggle ")]
    assert any(c.startswith("d2lkaggle kaggle download") for c in cmds)
    assert any(c.startswith("d2lkaggle kaggle submit") for c in cmds)
    for c in cmds:
        args = build_parser().parse_args(shlex.split(c, comments=True)[1:])
        assert callable(args.func), c


def test_readme_kaggle_round_trip_is_five_lines_and_all_pip_forms():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("## Kaggle round trip", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.strip().splitlines() if ln.strip()]
    assert len(lines) == 5 and "kaggle download" in lines[2] and "kaggle submit" in lines[4]
    for form in ('".[torch]"', '".[mxnet]"', '".[paddle]"', "--index-url https://download.pytorch.org/whl/cpu"):
        assert form in text, form
