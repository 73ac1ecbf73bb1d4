"""Kaggle in and out: only the client object is replaced (d2lkaggle.compete.kaggle.kaggle_api)."""
import json
import os
import shutil
import zipfile

import py7zr
import pytest

from d2lkaggle import cli
from d2lkaggle.compete import kaggle as kg
from d2lkaggle.data.demo import make_demo
from d2lkaggle.data.hub import UnsafeArchiveError


def _competition_zip(tmp_path, name="cifar-10.zip"):
    """The files Kaggle serves for CIFAR-10: one zip holding train.7z, test.7z and two CSVs."""
    demo = make_demo(str(tmp_path / "src"), n_train=20, n_test=6, seed=3)
    pack = tmp_path / "pack"
    pack.mkdir()
    for split in ("train", "test"):
        with py7zr.SevenZipFile(pack / f"{split}.7z", "w") as z:
            z.writeall(os.path.join(demo, split), arcname=split)
    for f in ("trainLabels.csv", "sampleSubmission.csv"):
        shutil.copy(os.path.join(demo, f), pack / f)
    out = tmp_path / name
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(os.listdir(pack)):
            z.write(pack / f, f)
    return out, demo


class FakeApi:
    """Kaggle's client as far as this library uses it; records every call."""

    def __init__(self, served=None):
        self.served, self.calls = served, []

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append(("download", competition, path))
        shutil.copy(self.served, os.path.join(path, f"{competition}.zip"))

    def competition_submit(self, file_name, message, competition):
        self.calls.append(("submit", file_name, message, competition))


def test_download_unpacks_outer_zip_and_inner_7z(tmp_path, monkeypatch):
    served, demo = _competition_zip(tmp_path)
    api = FakeApi(served)
    monkeypatch.setattr(kg, "kaggle_api", lambda: api)
    dest = tmp_path / "data" / "cifar-10"
    assert cli.main(["kaggle", "download", "cifar10", "--path", str(dest)]) == 0
    assert api.calls == [("download", "cifar-10", str(dest))]
    assert sorted(os.listdir(dest / "train")) == sorted(os.listdir(os.path.join(demo, "train")))
    assert len(os.listdir(dest / "test")) == 6 and (dest / "trainLabels.csv").exists()
    assert kg.find_archives(str(dest)) == []          # everything unpacked, once
    # the data is ready for the chapter: labels and images agree
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.compete.load import load_data
    data = load_data(get_competition("cifar10"), str(dest), batch_size=4, valid_ratio=0.2)
    assert len(data.train_iter.source) + len(data.valid_iter.source) == 20


def test_submit_checks_against_the_sample_first(tmp_path, monkeypatch, capsys):
    demo = make_demo(str(tmp_path / "d"), n_train=20, n_test=5, seed=4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"competition": "cifar10", "data_dir": demo}))
    shutil.copy(os.path.join(demo, "sampleSubmission.csv"), run / "submission.csv")
    api = FakeApi()
    monkeypatch.setattr(kg, "kaggle_api", lambda: api)
    assert cli.main(["kaggle", "submit", str(run), "-m", "first try"]) == 0
    assert api.calls == [("submit", str(run / "submission.csv"), "first try", "cifar-10")]
    # a wrong file (one id missing) never reaches Kaggle
    lines = (run / "submission.csv").read_text().splitlines()
    (run / "submission.csv").write_text("\n".join(lines[:-1]) + "\n")
    api.calls.clear()
    assert cli.main(["kaggle", "submit", str(run), "-m", "second"]) != 0
    assert api.calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and "id" in err[0]
    # no sample to check against: refused, with the option to give one
    (run / "summary.json").write_text(json.dumps({"competition": "cifar10"}))
    with pytest.raises(FileNotFoundError, match="--sample"):
        kg.submit(str(run), "x", api=api)
    with pytest.raises(ValueError, match="not a Kaggle competition"):
        kg.submit(str(run), "x", competition="demo", api=api)


def test_clear_errors_without_package_or_credentials(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kaggle" else real(name, *a))
    with pytest.raises(kg.KaggleSetupError, match=r"pip install \"d2lkaggle\[kaggle\]\""):
        kg.kaggle_api()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "kaggle"
                        else real(name, *a))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kg.credentials_source() is None
    assert cli.main(["kaggle", "download", "cifar-10", "--path", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kaggle.json" in err[0] and "KAGGLE_USERNAME" in err[0]
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kg.credentials_source() == "KAGGLE_USERNAME/KAGGLE_KEY"
    monkeypatch.delenv("KAGGLE_KEY")
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text('{"username": "me", "key": "k"}')
    assert kg.credentials_source() == str(tmp_path / ".kaggle" / "kaggle.json")


def test_run_names_the_unpacked_archives_and_extract_flag(tmp_path, capsys):
    served, _ = _competition_zip(tmp_path)
    d = tmp_path / "cifar-10"
    d.mkdir()
    with zipfile.ZipFile(served) as z:
        z.extractall(d)                            # train.7z / test.7z still packed
    assert cli.main(["run", "cifar10", "--data-dir", str(d), "--epochs", "1"]) != 0
    err = capsys.readouterr().err
    assert "train.7z" in err and "d2lkaggle extract" in err and "--extract" in err
    assert not (d / "train").exists()
    # --extract unpacks them before training (checked here without training)
    args = cli.build_parser().parse_args(["run", "cifar10", "--data-dir", str(d), "--extract"])
    cli.train._check_archives(args)
    assert len(os.listdir(d / "train")) == 20 and len(os.listdir(d / "test")) == 6
    cli.train._check_archives(args)                      # nothing left to do: no error, no work


def test_extract_command_and_unsafe_archive(tmp_path, capsys):
    served, _ = _competition_zip(tmp_path)
    assert cli.main(["extract", str(served), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "train.7z").exists()
    assert "extracted" in capsys.readouterr().out
    evil = tmp_path / "evil" / "train.zip"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escaped.txt", "x")
    with pytest.raises(UnsafeArchiveError):
        kg.extract_archives(str(evil.parent), log=None)
    assert not (tmp_path / "escaped.txt").exists()
