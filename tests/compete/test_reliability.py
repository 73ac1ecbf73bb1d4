"""Issue 12 through the command line: every user error is one line and exit 2, nothing
half-written is trusted, resume refuses another configuration, files honour the umask."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import replace

import pytest

from conftest import run_cli
from d2lkaggle.cli import main
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.data.demo import make_demo
from d2lkaggle.utils.registry import is_installed

needs_torch = pytest.mark.skipif(not is_installed("torch"), reason="torch is not installed")
QUICK = ["--epochs", "1", "--batch-size", "16", "--quiet", "--workers", "1", "--no-retrain"]


def one_error_line(err: str) -> str:
    """The single ``d2lkaggle: error:`` line of ``err``; fails on tracebacks or several lines."""
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if "error" in l.lower()]
    assert len(lines) == 1 and lines[0].startswith("d2lkaggle: error: "), err
    return lines[0]


def cli(capsys, *args) -> tuple[int, str]:
    """``d2lkaggle ARGS`` in this process (for errors raised before a framework is imported)."""
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.fixture
def tiny(tmp_path) -> str:
    return make_demo(str(tmp_path / "data"), n_train=40, n_test=6, seed=3)


@pytest.fixture
def read_only():
    """Make a folder read-only even for root (``chattr +i``; ``chmod`` for other users)."""
    made = []

    def make(path: str) -> str:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", path]).returncode:
                pytest.skip("running as root without a working chattr: cannot make a "
                            "folder read-only")
        else:
            os.chmod(path, 0o555)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path])
        else:
            os.chmod(path, 0o755)


# ----------------------------------------------------------------------------- settings

@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], "--epochs: expected a number of epochs > 0, e.g. 10 or 9.9; got '0'"),
    (["--valid-ratio", "-0.5"], "--valid-ratio must be in [0, 1)"),
    (["--valid-ratio", "nan"], "--valid-ratio must be a finite number"),
    (["--image-size", "0"], "--image-size must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "nan"], "--lr must be in (0, inf), got nan"),
])
def test_bad_settings_are_one_line_before_anything_is_written(capsys, tiny, tmp_path, flags,
                                                               words):
    out = tmp_path / "run"
    rc, err = cli(capsys, "run", "demo", "--data-dir", tiny, "--out", str(out), *flags)
    assert rc == 2 and words in one_error_line(err)
    assert not out.exists()


def test_argparse_errors_are_one_line_too(capsys):
    rc, err = cli(capsys, "run", "demo", "--data-dir", "x", "--epochs", "many")
    assert rc == 2 and "--epochs: expected a number of epochs > 0" in one_error_line(err)
    assert "usage:" not in err


def test_out_that_is_a_file(capsys, tiny, tmp_path):
    f = tmp_path / "taken"
    f.write_text("mine")
    rc, err = cli(capsys, "run", "demo", "--data-dir", tiny, "--out", str(f))
    assert rc == 2 and f"--out {f} is a file" in one_error_line(err)
    assert f.read_text() == "mine"


def test_out_that_is_not_writable(capsys, tiny, tmp_path, read_only):
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(str(ro))
    rc, err = cli(capsys, "run", "demo", "--data-dir", tiny, "--out", str(ro / "run"))
    line = one_error_line(err)
    assert rc == 2 and str(ro / "run") in line and "choose another --out" in line


def test_read_only_reorg_and_download_folders(capsys, tiny, tmp_path, read_only):
    read_only(tiny)
    rc, err = cli(capsys, "reorg", tiny)
    assert rc == 2 and tiny in one_error_line(err)
    folder = tmp_path / "downloads"
    folder.mkdir()
    read_only(str(folder))
    rc, err = cli(capsys, "download", "http://127.0.0.1:9/x.zip", "--folder", str(folder))
    assert rc == 2 and str(folder) in one_error_line(err)


def test_download_folder_that_is_a_file(capsys, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    rc, err = cli(capsys, "download", "http://127.0.0.1:9/x.zip", "--folder", str(f))
    assert rc == 2 and "is a file" in one_error_line(err)


def test_debug_shows_the_traceback(capsys, tiny, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--valid-ratio"):
        main(["run", "demo", "--data-dir", tiny, "--valid-ratio", "-0.5", "--debug"])
    monkeypatch.setenv("D2LKAGGLE_DEBUG", "1")
    with pytest.raises(ValueError, match="--valid-ratio"):
        main(["run", "demo", "--data-dir", tiny, "--valid-ratio", "-0.5"])


# ----------------------------------------------------------------------------- inputs

def test_two_files_with_one_id_in_train(capsys, tiny, tmp_path):
    shutil.copy(os.path.join(tiny, "train", "3.png"), os.path.join(tiny, "train", "3.jpg"))
    rc, err = cli(capsys, "run", "demo", "--data-dir", tiny, "--out", str(tmp_path / "run"))
    line = one_error_line(err)
    assert rc == 2 and "'3'" in line and "3.png" in line and "3.jpg" in line


def test_huge_image_in_a_cifar_layout_set_is_named(capsys, tiny, tmp_path):
    from PIL import Image
    huge = os.path.join(tiny, "train", "1.png")
    Image.new("1", (12000, 12000)).save(huge)
    rc, err = cli(capsys, "run", "demo", "--data-dir", tiny, "--out", str(tmp_path / "run"))
    line = one_error_line(err)
    assert rc == 2 and huge in line and "12000x12000" in line


def test_ids_na_null_nan_stay_ids(tiny):
    from d2lkaggle.specs.competitions import get_competition
    from d2lkaggle.compete.load import load_data
    ids = ["NA", "null", "nan", "None", "4", "5"]
    for old, new in zip(range(1, 7), ids):
        os.rename(os.path.join(tiny, "test", f"{old}.png"), os.path.join(tiny, "test", f"{new}.png"))
    with open(os.path.join(tiny, "sampleSubmission.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{i},cat\n" for i in ids))
    data = load_data(get_competition("demo"), tiny, batch_size=8, valid_ratio=0.1)
    assert data.test_ids == ids


def dog_comp():
    from d2lkaggle.specs.competitions import get_competition
    comp = get_competition("dog-breed")
    return replace(comp, recipe=replace(comp.recipe, weights=None, epochs=1, batch_size=8))


def test_dog_test_images_are_checked_before_the_first_epoch(dog_dir, tmp_path):
    from d2lkaggle.compete.run import run_competition
    data = shutil.copytree(dog_dir, tmp_path / "dog")
    victim = sorted((data / "test").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG: its header still reads
    logs = []
    with pytest.raises(ValueError, match=victim.name):
        run_competition(dog_comp(), str(data), out=str(tmp_path / "run"), progress=False,
                        log=logs.append)
    assert not (tmp_path / "run" / "checkpoints").exists() and not any("epoch" in l for l in logs)


def test_dog_sample_columns_are_checked_before_the_first_epoch(dog_dir, tmp_path):
    from d2lkaggle.compete.run import run_competition
    data = shutil.copytree(dog_dir, tmp_path / "dog")
    sample = data / "sample_submission.csv"
    lines = sample.read_text().splitlines()
    lines[0] = lines[0].rsplit(",", 1)[0] + ",not_a_breed"
    sample.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="not_a_breed"):
        run_competition(dog_comp(), str(data), out=str(tmp_path / "run"), progress=False, log=None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_make_demo_folder_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = make_demo(str(tmp_path / "d"), n_train=10, n_test=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


# ----------------------------------------------------------------------------- training runs

@needs_torch
def test_diverged_run_is_an_error_and_writes_no_submission(tiny, tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "demo", "--data-dir", tiny, "--out", str(out), "--lr", "1e30",
                "--epochs", "2", "--batch-size", "64", "--quiet", "--no-retrain")  # a batch each
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "not finite" in one_error_line(r.stderr)
    assert not (out / "submission.csv").exists()
    assert not (out / "checkpoints" / "valid" / "best.npz").exists()


@needs_torch
def test_resume_refuses_another_configuration_and_damaged_checkpoints(tiny, tmp_path):
    out = tmp_path / "run"
    ids = ["NA", "null", "nan", "4", "5", "6"]  # and the ids pandas would read as NaN
    for old, new in zip(range(1, 4), ids):
        os.rename(os.path.join(tiny, "test", f"{old}.png"), os.path.join(tiny, "test", f"{new}.png"))
    with open(os.path.join(tiny, "sampleSubmission.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{i},cat\n" for i in ids))
    base = ["run", "demo", "--data-dir", tiny, "--out", str(out), *QUICK]
    old = os.umask(0o022)
    try:
        r = run_cli(*base)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out / "submission.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ids
    for f in ("submission.csv", "summary.json", "history.csv"):
        assert stat.S_IMODE(os.stat(out / f).st_mode) == 0o644, f
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    summary = json.loads((out / "summary.json").read_text())
    lr0 = get_competition("demo").recipe.lr
    assert summary["config"]["seed"] == 0 and summary["config"]["lr"] == lr0
    # what ran, not what was asked: amp "auto" trained in bf16 or float32, as the run said
    assert summary["amp"] in ("bf16", "float32")
    assert f"cpu, {summary['amp']}" in (out / "log.txt").read_text()
    assert (summary["config"]["tta"], summary["config"]["calibrate"]) == ("none", "none")
    before = (out / "summary.json").read_bytes()

    r = run_cli(*base, "--resume", "--seed", "1", "--lr", "0.1", "--valid-ratio", "0.3")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "--resume force" in line
    for key in ("seed: 0 -> 1", f"lr: {lr0:g} -> 0.1", "valid_ratio: 0.1 -> 0.3"):
        assert key in line
    assert (out / "summary.json").read_bytes() == before  # no summary that lies

    r = run_cli(*base, "--resume", "force", "--seed", "1", "--no-amp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING: --resume force" in r.stderr and "seed: 0 -> 1" in r.stderr
    assert r.stderr.count("WARNING") == 1 and "WARNING" not in r.stdout   # once, not twice
    trained_in = summary["amp"]
    summary = json.loads((out / "summary.json").read_text())
    # nothing left to train: the model's one epoch ran in what the first run used
    assert summary["amp"] == trained_in and summary["config"]["amp"] is False
    assert [w for w in summary["warnings"] if "seed: 0 -> 1" in w]

    last = out / "checkpoints" / "valid" / "last.npz"
    good = last.read_bytes()
    # empty and truncated files: tests/train/test_loop.py::test_damaged_checkpoint_names_the_file...
    last.write_bytes(good[:300] + bytes([good[300] ^ 0xFF]) + good[301:])  # one bit-flipped byte
    r = run_cli(*base, "--resume", "force")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and str(last) in line and "delete it" in line


def test_read_only_cache_with_the_file_still_works(capsys, tmp_path, read_only):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "x.zip").write_bytes(b"already here")
    read_only(str(folder))
    rc = main(["download", "http://127.0.0.1:9/x.zip", "--folder", str(folder)])
    assert rc == 0 and capsys.readouterr().out.strip() == str(folder / "x.zip")


def test_config_keys_added_later_as_unset_do_not_block_resume():
    # a Recipe field added in a later version (e.g. drop_path, default None) is absent from an
    # older checkpoint's configuration: that is no difference; a value actually set still is
    from d2lkaggle.compete.preflight import config_diff
    old = {"lr": 0.1, "epochs": 3}
    assert config_diff(old, {**old, "drop_path": None}) == []
    assert config_diff({**old, "drop_path": None}, old) == []
    assert config_diff(old, {**old, "drop_path": 0.1}) == ["drop_path: (not recorded) -> 0.1"]
    assert config_diff(old, {**old, "lr": 0.2}) == ["lr: 0.1 -> 0.2"]
