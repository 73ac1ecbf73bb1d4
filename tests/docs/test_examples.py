"""The chapter scripts in examples/ run end to end (demo data, one epoch) in each backend."""
import csv
import os
import subprocess
import sys

import pytest

from conftest import ROOT, backend_params


@pytest.mark.parametrize("backend", backend_params())
def test_kaggle_cifar10_example(backend, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, D2LKAGGLE_DATA=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "kaggle_cifar10.py"),
                        "--backend", backend, "--demo", "--demo-size", "300", "--epochs", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # data and submission go to the cache folder, nothing into the working folder
    assert os.listdir(tmp_path) == ["cache"]
    rows = list(csv.reader(open(tmp_path / "cache" / "examples" / "kaggle_cifar10" / "submission.csv")))
    assert rows[0] == ["id", "label"] and len(rows) == 61
