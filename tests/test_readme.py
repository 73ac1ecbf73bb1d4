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
