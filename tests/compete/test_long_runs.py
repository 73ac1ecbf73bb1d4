"""Long runs a user can trust at a glance: a first line before anything slow, an ETA on every
epoch line off a terminal, a log.txt that ends with how the run ended (finished, interrupted
and how to resume, or the error's line), --resume saying what it found, and mistakes (a
sample submission's header, a labels file's columns, weights that cannot be had) refused
before anything is loaded or trained."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, is_installed
from d2lkaggle.cli import main
from d2lkaggle.compete import preflight
from d2lkaggle.compete.run import plan_run
from d2lkaggle.data.demo import make_demo
from d2lkaggle.utils.files import save_npz

needs_torch = pytest.mark.skipif(not is_installed("torch"), reason="needs torch")


@pytest.fixture
def tiny(tmp_path) -> str:
    return make_demo(str(tmp_path / "data"), n_train=60, n_test=8, seed=3)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m d2lkaggle.cli ARGS`` with stdout a pipe (off a terminal), one line at a time."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", **(env or {}))
    # Ctrl-C as a terminal's foreground process gets it: a suite started as a background job
    # of a non-interactive shell hands its children SIGINT ignored (and Python then installs
    # no KeyboardInterrupt for it)
    return subprocess.Popen([sys.executable, "-m", "d2lkaggle.cli", *args], cwd=ROOT, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def read_until(proc: subprocess.Popen, word: str) -> list[str]:
    """stdout's lines up to and including the first that holds ``word`` (all of them if none)."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if word in line:
            break
    return lines


def log_lines(out) -> list[str]:
    return (out / "log.txt").read_text().splitlines()


@needs_torch
def test_redirected_run_says_what_it_loads_first_and_an_eta_on_every_epoch_line(tiny, tmp_path):
    out = tmp_path / "run"
    proc = start_cli("run", "demo", "--data-dir", tiny, "--out", str(out), "--epochs", "2")
    try:
        first = proc.stdout.readline().rstrip("\n")
        # said as soon as it is said, before anything slow: the process is still loading or
        # estimating, nothing is trained, and log.txt already holds the same line
        alive = proc.poll() is None
        trained = (out / "checkpoints").exists()
        logged = log_lines(out)[:1]
        rest, err = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert alive and not trained and logged == [first]
    assert first.startswith(f"loading demo from {tiny}: 60 labelled images") and \
        "and 8 test images" in first
    lines = [first] + rest.splitlines()
    epochs = [line for line in lines if " epoch " in line and "/2 " in line]
    assert len(epochs) == 2, lines                    # 2 epochs, validated (no retrain)
    for line in epochs + [line for line in log_lines(out) if line in epochs]:
        assert " run ETA " in line and line.endswith(" left)"), line
    said = [k for k, line in enumerate(lines) if line.startswith("expected duration: ")]
    assert len(said) == 1 and said[0] < lines.index(epochs[0])
    assert log_lines(out)[-1].startswith("finished in ") and log_lines(out)[-1].endswith(
        f"files in {out}")


@needs_torch
def test_interrupted_runs_log_says_how_to_resume_and_resume_says_what_it_found(tiny, tmp_path):
    out = tmp_path / "run"
    # (ResNet-18, 200 epochs: the signal must come while it trains; the default's epochs on
    # this tiny set can all end before a pipe's reader sees epoch 2)
    args = ["run", "demo", "--data-dir", tiny, "--out", str(out), "--epochs", "200",
            "--recipe", "resnet18"]
    proc = start_cli(*args)
    try:
        read_until(proc, "train/valid epoch 2/200")   # epoch 1 is in its checkpoint now
        proc.send_signal(signal.SIGINT)                      # Ctrl-C
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "d2lkaggle: interrupted (Ctrl-C)" in err, err[-3000:]
    last = log_lines(out)[-1]
    assert last.startswith(f"interrupted (Ctrl-C) in {out}: its checkpoints hold train/valid ")
    assert last.endswith("resume with " + shlex.join(["d2lkaggle", *args, "--resume"])), last
    assert not (out / "summary.json").exists()

    proc = start_cli(*args, "--resume")                      # as the log says, then `kill`
    try:
        found = read_until(proc, "--resume: ")[-1]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert found.startswith("--resume: resuming the validation phase at epoch ") and \
        found.endswith("/200"), found
    assert proc.returncode == 143, err[-3000:]
    assert log_lines(out)[-1].startswith(f"interrupted (SIGTERM) in {out}: ")
    assert found in log_lines(out)   # log.txt keeps both runs' lines, in order


@needs_torch
def test_failed_runs_log_ends_with_the_errors_line(tiny, tmp_path, capsys):
    victim = os.path.join(tiny, "test", "5.png")
    with open(victim, "wb") as f:
        f.write(b"not a png")
    out = tmp_path / "run"
    assert main(["run", "demo", "--data-dir", tiny, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5.png" in err[0]
    last = log_lines(out)[-1]
    assert last.startswith("failed: ") and "5.png" in last and last[8:] in err[0]
    assert not (out / "checkpoints").exists()


@needs_torch
def test_resume_on_an_empty_folder_says_it_starts_afresh(tiny, tmp_path):
    from d2lkaggle.compete.run import run_competition
    lines = []
    run_competition("demo", tiny, out=str(tmp_path / "run"), epochs=1, resume=True,
                    progress=False, log=lines.append, amp=False)
    assert f"--resume: no checkpoint in {tmp_path / 'run'}: starting afresh" in lines


def test_resume_line_names_the_phase_and_epoch_it_continues(tmp_path):
    out = str(tmp_path)
    say = lambda: preflight.resume_line(out, ["valid", "final"], 20)  # noqa: E731

    def done(phase, epochs):
        os.makedirs(os.path.join(out, "checkpoints", phase), exist_ok=True)
        save_npz(os.path.join(out, "checkpoints", phase, "last.npz"), {"w": np.zeros(1)},
                 {"epoch": epochs - 1})

    assert say() == f"--resume: no checkpoint in {out}: starting afresh"
    done("valid", 6)
    assert say() == "--resume: resuming the validation phase at epoch 7/20"
    done("valid", 20)
    assert say() == ("--resume: the validation phase is complete (20/20 epochs); starting the "
                     "retrain on all labels")
    done("final", 3)
    assert say().endswith("; resuming the retrain on all labels at epoch 4/20")
    done("final", 20)
    assert say().startswith("--resume: every phase's checkpoints are complete")
    assert preflight.resume_line(out, ["valid", "final"], 20, finished=True) == (
        f"--resume: {out} holds a finished run: re-reporting (predictions, submission and "
        "pictures written again from its checkpoints)")


def test_wrong_sample_header_is_refused_before_anything(tiny, tmp_path, capsys):
    sample = os.path.join(tiny, "sampleSubmission.csv")
    rows = open(sample).read().splitlines()
    with open(sample, "w") as f:
        f.write("\n".join(["ID,Category"] + rows[1:]) + "\n")
    out = tmp_path / "run"
    assert main(["run", "demo", "--data-dir", tiny, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "header 'ID,Category'" in err[0] and "expected 'id,label'" in err[0]
    assert not out.exists() and captured.out == ""     # nothing written, loaded or trained


def test_missing_weights_file_is_refused_before_anything(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "resnet18.safetensors"
    assert main(["run", "demo", "--data-dir", tiny, "--out", str(out), "--weights",
                 str(missing)]) == 2
    captured = capsys.readouterr()
    assert f"--weights {missing}: no such file" in captured.err and captured.out == ""
    assert not out.exists()


def test_dog_run_without_reachable_imagenet_weights_fails_at_the_start(dog_dir, tmp_path,
                                                                       monkeypatch, capsys):
    dead = "http://127.0.0.1:9"     # an empty torch cache and a dead proxy: offline
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, dead)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "")
    out = tmp_path / "run"
    for backend in ("torch", "mxnet"):   # torch downloads; MXNet needs a converted file
        assert main(["run", "dog-breed", "--data-dir", dog_dir, "--out", str(out),
                     "--backend", backend]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and captured.out == "" and not out.exists(), captured
        assert ("cannot be reached" in err[0] and "resnet34-b627a593.pth" in err[0]
                and "--weights PATH" in err[0]) if backend == "torch" else \
            "--weights resnet34.safetensors" in err[0], err[0]


def test_weights_check_imports_no_framework(dog_dir, tmp_path):
    from conftest import run_py
    r = run_py("import sys\nfrom d2lkaggle.compete.run import plan_run\n"
               "try:\n    plan_run('dog-breed', sys.argv[1], out=sys.argv[2])\n"
               "except RuntimeError as e:\n    print('refused:', e)\n"
               "print(sorted(m for m in ('torch', 'mxnet', 'paddle') if m in sys.modules))",
               dog_dir, str(tmp_path / "o"),
               env={"TORCH_HOME": str(tmp_path / "t"), "https_proxy": "http://127.0.0.1:9",
                    "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused: cannot get the ImageNet resnet34 weights" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("head, words", [
    ("image,class", None),                               # another header: accepted, said
    ("label,id", "has demo's columns the other way round"),
    ("class,image", "its second column holds the image ids"),
    ("a,b", None),
])
def test_labels_header_is_accepted_with_a_line_or_refused(tiny, tmp_path, head, words):
    labels = os.path.join(tiny, "trainLabels.csv")
    rows = open(labels).read().splitlines()
    body = rows[1:] if head != "class,image" else [",".join(r.split(",")[::-1]) for r in rows[1:]]
    if head == "a,b":   # a first row that names no image
        body = ["nothing,cat"] + body
    with open(labels, "w") as f:
        f.write("\n".join([head] + body) + "\n")
    if head == "image,class":
        plan = plan_run("demo", tiny, out=str(tmp_path / "o"))
        first_id, first_label = body[0].split(",")
        assert plan.notes == (
            f"note: {labels} has the header 'image,class', not demo's 'id,label': column 'image' "
            f"is read as the image id (line 2: {first_id!r}, an image in train/) and column "
            f"'class' as the label ({first_label!r})",)
        return
    with pytest.raises(ValueError) as e:
        plan_run("demo", tiny, out=str(tmp_path / "o"))
    msg = str(e.value)
    assert "expected the header 'id,label'" in msg and (words is None or words in msg), msg
    assert not (tmp_path / "o").exists()


def test_headerless_dog_labels_are_refused(dog_dir, tmp_path):
    data = shutil.copytree(dog_dir, tmp_path / "dog")
    labels = data / "labels.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match="missing header row: line 1 .* names an image"):
        plan_run("dog-breed", str(data), out=str(tmp_path / "o"), weights="none")


def test_tta_accuracy_is_labelled_wherever_it_differs(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from d2lkaggle.compete import report
    from d2lkaggle.train import plotting
    s = {"competition": "dog-breed", "backend": "torch", "valid_acc": 0.08, "best_valid_acc": 0.08,
         "best_epoch": 2, "tta": "flip", "tta_valid_acc": 0.09, "submission_model": "m",
         "files": {"summary": "/r/summary.json"}}
    assert "last 0.0800 (0.0900 with TTA flip) · " in report.summary_line(s)
    assert "with TTA" not in report.summary_line(dict(s, tta_valid_acc=0.08))
    assert "with TTA" not in report.summary_line(dict(s, tta=None))
    notes = []
    monkeypatch.setattr(plotting, "plot_confusion", lambda *a, note="", **k: notes.append(note))
    monkeypatch.setattr(plotting, "plot_mistakes", lambda *a, note="", **k: notes.append(note))
    y = np.array([0, 1, 1, 0])
    data = SimpleNamespace(valid_iter=SimpleNamespace(labels=y, source=None), classes=["a", "b"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])   # accuracy 0.75
    report.valid_pictures(str(tmp_path), data, probs, "t", tta="flip", plain_acc=0.5)
    report.valid_pictures(str(tmp_path), data, probs, "t", tta="flip", plain_acc=0.75)
    report.valid_pictures(str(tmp_path), data, probs, "t", tta=None, plain_acc=0.5)
    assert notes == ["with TTA flip (0.500 without)"] * 2 + ["with TTA flip"] * 2 + [""] * 2
