"""--overwrite's swap cannot lose a run: the process is killed before every file operation of
install_run (each rename, each removal, each folder made), and the next start finds a whole
run in --out — the old one or the new one, never a mix — says what it did in one line, and
leaves nothing beside the folder."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from d2lkaggle.compete import runfolder as R

OLD = {"summary.json": "old", "submission.csv": "old", "history.csv": "old", "log.txt": "old",
       "valid_probs.npy": "old", "checkpoints/valid/last.npz": "old",
       "checkpoints/final/last.npz": "old"}
NEW = {"summary.json": "new", "submission.csv": "new", "history.csv": "new", "log.txt": "new",
       "mistakes.png": "new", "checkpoints/valid/last.npz": "new",
       "checkpoints/valid/best.npz": "new"}
USERS = {"notes.txt": "mine", "checkpoints/my_model.pth": "mine", R.LOCK_FILE: ""}
#: the calls that change the file system during a swap (shutil.rmtree goes through the last two)
CALLS = ("replace", "mkdir", "unlink", "rmdir")


def write(folder, files):
    for rel, text in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def read(folder):
    got = {}
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            got[os.path.relpath(path, folder)] = open(path).read()
    return got


def setup(tmp_path, finished=True):
    out, pid = str(tmp_path / "run"), 4242
    stage = str(tmp_path / f".run.overwrite-{pid}")
    write(out, {**OLD, **USERS})
    write(stage, NEW if finished else {k: v for k, v in NEW.items() if k != "summary.json"})
    return out, stage


def swap_killed_at(out, stage, k):
    """install_run in a forked child that exits (as by kill -9: no cleanup) just before its
    k-th file-system call; the number of calls it made when it is not killed."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:   # never returns into pytest
        try:
            os.close(r)
            count = [0]

            def wrap(fn):
                def call(*a, **kw):
                    if count[0] == k:
                        os._exit(9)
                    count[0] += 1
                    return fn(*a, **kw)
                return call

            for name in CALLS:
                setattr(os, name, wrap(getattr(os, name)))
            R.install_run(stage, out)
            os.write(w, str(count[0]).encode())
        finally:
            os._exit(0)
    os.close(w)
    made = os.read(r, 64)
    os.close(r)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), int(made) if made else None


def test_a_swap_killed_before_any_of_its_steps_leaves_a_whole_run(tmp_path):
    out, stage = setup(tmp_path / "count")
    code, total = swap_killed_at(out, stage, 10 ** 9)
    assert code == 0 and total > 15 and read(out) == {**NEW, **USERS}
    assert os.listdir(tmp_path / "count") == ["run"]
    results = {}
    for k in range(total + 1):
        case = tmp_path / str(k)
        out, stage = setup(case)
        code, _ = swap_killed_at(out, stage, k)
        assert code == (9 if k < total else 0), k
        lines = R.recover_swaps(out)          # the next start, with the folder's lock
        got = read(out)
        whole = got in ({**OLD, **USERS}, {**NEW, **USERS})
        assert whole, (k, got)
        assert os.listdir(case) == ["run"], (k, os.listdir(case))   # nothing left beside it
        assert len(lines) == (1 if k < total else 0), (k, lines)
        if lines:
            assert "interrupted --overwrite of process 4242" in lines[0] and "\n" not in lines[0]
        results[k] = "new" if got["summary.json"] == "new" else "old"
        assert R.recover_swaps(out) == [] and read(out) == got   # a second start: nothing to do
    # the staged run had finished: every interrupted swap is completed, none undone
    assert set(results.values()) == {"new"}


def test_an_unfinished_staged_run_is_removed_and_the_old_run_kept(tmp_path):
    out, stage = setup(tmp_path, finished=False)
    lines = R.recover_swaps(out)
    assert read(out) == {**OLD, **USERS} and not os.path.exists(stage)
    assert len(lines) == 1 and "unfinished run" in lines[0] and "kept" in lines[0]


def test_a_swap_whose_new_run_vanished_is_undone(tmp_path):
    out, stage = setup(tmp_path)
    aside = str(tmp_path / ".run.replaced-4242")
    for rel in ("summary.json", "valid_probs.npy", "checkpoints/valid"):   # half aside
        os.makedirs(os.path.dirname(os.path.join(aside, rel)), exist_ok=True)
        os.replace(os.path.join(out, rel), os.path.join(aside, rel))
    shutil.rmtree(stage)
    lines = R.recover_swaps(out)
    assert read(out) == {**OLD, **USERS} and os.listdir(tmp_path) == ["run"]
    assert len(lines) == 1 and "undone" in lines[0]


def test_the_next_cli_start_completes_a_killed_swap_and_says_so(tmp_path, demo_dir, capsys):
    from d2lkaggle.cli import main
    out = tmp_path / "run"
    write(str(out), {**OLD, **USERS})
    stage = tmp_path / ".run.overwrite-4242"
    new = dict(NEW, **{"summary.json": json.dumps({"competition": "demo"})})
    write(str(stage), new)
    code, _ = swap_killed_at(str(out), str(stage), 6)   # some old files aside, none new in
    assert code == 9
    rc = main(["run", "demo", "--data-dir", demo_dir, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    # the swap is completed and said; then this start (no --overwrite) keeps the finished run
    assert rc == 2 and "holds a finished run" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    notes = [l for l in captured.out.splitlines() if "interrupted --overwrite" in l]
    assert len(notes) == 1 and "completed" in notes[0]
    assert read(str(out)) == {**new, **USERS, R.LOCK_FILE: ""}
    assert sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.parametrize("pid", ["123", "abc"])
def test_other_folders_beside_the_run_are_not_touched(tmp_path, pid):
    out = tmp_path / "run"
    write(str(out), OLD)
    other = tmp_path / f".run2.overwrite-{pid}"
    write(str(other), NEW)
    assert R.recover_swaps(str(out)) == [] and read(str(other)) == NEW
