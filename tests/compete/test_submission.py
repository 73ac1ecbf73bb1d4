"""write_label_submission, write_proba_submission, validate_submission."""
from __future__ import annotations

import os

import numpy as np
import pytest

from d2lkaggle.compete import submission
from d2lkaggle.compete.submission import (validate_submission, write_label_submission,
                                  write_proba_submission)


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def read(path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def softmax(n: int, k: int, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- labels

def test_label_submission_plain(tmp_path):
    out = write_label_submission([1, 2, 10], ["cat", "dog", "frog"], tmp_path / "sub.csv")
    assert out == str(tmp_path / "sub.csv")
    assert (tmp_path / "sub.csv").read_bytes() == b"id,label\n1,cat\n2,dog\n10,frog\n"


def test_label_submission_follows_sample(tmp_path):
    sample = write(tmp_path / "sampleSubmission.csv", "Id,Category\n2,cat\n10,cat\n1,cat\n")
    out = write_label_submission(["1", "2", "10"], ["cat", "dog", "frog"], tmp_path / "s.csv",
                                 sample=sample)
    # column names from the sample, rows in the sample's order
    assert read(out) == "Id,Category\n2,dog\n10,frog\n1,cat\n"
    validate_submission(out, sample, kind="label")


def test_numeric_ids_stay_strings(tmp_path):
    sample = write(tmp_path / "sample.csv", "id,label\n007,cat\n8,cat\n")
    out = write_label_submission(["8", "007"], ["a", "b"], tmp_path / "s.csv", sample=sample)
    assert read(out) == "id,label\n007,b\n8,a\n"
    with pytest.raises(ValueError, match="'7'"):
        write_label_submission([7, 8], ["a", "b"], tmp_path / "t.csv", sample=sample)


def test_sample_id_mismatch(tmp_path):
    ids = [str(i) for i in range(1, 21)]
    sample = write(tmp_path / "sample.csv", "id,label\n" + "".join(f"{i},cat\n" for i in ids))
    with pytest.raises(ValueError) as e:
        write_label_submission(ids[:-1] + ["99"], ["x"] * 20, tmp_path / "s.csv", sample=sample)
    msg = str(e.value)
    assert "1 ids of" in msg and "'20'" in msg and "not in" in msg and "'99'" in msg
    with pytest.raises(ValueError) as e:
        write_label_submission(ids[:5], ["x"] * 5, tmp_path / "s.csv", sample=sample)
    assert "15 ids of" in str(e.value) and "(5 more)" in str(e.value)
    assert not (tmp_path / "s.csv").exists()


def test_label_input_errors(tmp_path):
    with pytest.raises(ValueError, match="3 ids but 2 labels"):
        write_label_submission([1, 2, 3], ["a", "b"], tmp_path / "s.csv")
    with pytest.raises(ValueError, match="duplicate ids: '1'"):
        write_label_submission([1, 1], ["a", "b"], tmp_path / "s.csv")
    with pytest.raises(ValueError, match="empty label"):
        write_label_submission([1, 2], ["a", ""], tmp_path / "s.csv")
    sample3 = write(tmp_path / "s3.csv", "id,a,b\n1,0.5,0.5\n")
    with pytest.raises(ValueError, match="2 columns"):
        write_label_submission([1], ["a"], tmp_path / "s.csv", sample=sample3)


# ----------------------------------------------------------------------------- probabilities

def test_proba_submission_follows_sample_columns_and_rows(tmp_path):
    sample = write(tmp_path / "sample_submission.csv",
                   "id,affenpinscher,beagle,collie\nff,0.3,0.3,0.4\n0a,0.3,0.3,0.4\n")
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    # classes given in another order than the sample's columns: values follow their class
    out = write_proba_submission(["0a", "ff"], probs, ["collie", "beagle", "affenpinscher"],
                                 tmp_path / "sub.csv", sample=sample)
    assert read(out) == ("id,affenpinscher,beagle,collie\n"
                                "ff,0.25,0.25,0.5\n"
                                "0a,0.7,0.2,0.1\n")
    validate_submission(out, sample, kind="proba")


def test_proba_roundtrip_float32_softmax(tmp_path):
    classes = [f"c{k:03d}" for k in range(120)]
    ids = [f"{i:032x}" for i in range(50)]
    probs = softmax(50, 120)
    sample = write(tmp_path / "sample.csv", "id," + ",".join(classes) + "\n"
                   + "".join(i + "," + ",".join(["0.1"] * 120) + "\n" for i in ids))
    out = write_proba_submission(ids, probs, classes, tmp_path / "sub.csv", sample=sample)
    validate_submission(out, sample, kind="proba")
    back = submission.read_submission(out)
    np.testing.assert_array_equal(back.iloc[:, 1:].astype(np.float64).to_numpy(),
                                  probs.astype(np.float64))


def test_proba_class_mismatch(tmp_path):
    sample = write(tmp_path / "sample.csv", "id,a,b,c\n1,0.3,0.3,0.4\n")
    with pytest.raises(ValueError) as e:
        write_proba_submission(["1"], [[0.5, 0.25, 0.25]], ["a", "b", "d"], tmp_path / "s.csv",
                               sample=sample)
    msg = str(e.value)
    assert "missing from classes: 'c'" in msg and "not in the sample: 'd'" in msg


@pytest.mark.parametrize("bad_row, why", [
    ([0.5, 0.4, 0.0], "sum of 0.9"),
    ([0.6, 0.6, -0.2], "not in \\[0, 1\\]"),
    ([np.nan, 0.5, 0.5], "not finite"),
    ([0.5, 0.5, 1e-5], "sum of"),
])
def test_proba_rows_must_be_distributions(tmp_path, bad_row, why):
    probs = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], bad_row, [0.1, 0.1, 0.8]])
    with pytest.raises(ValueError, match=f"id 'c'.*{why}"):
        write_proba_submission(["a", "b", "c", "d"], probs, ["x", "y", "z"], tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_proba_shape(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_proba_submission(["a", "b"], np.full((2, 2), 0.5), ["x", "y", "z"], tmp_path / "s.csv")


# ----------------------------------------------------------------------------- atomic writes

def test_failed_rename_leaves_no_file(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(submission.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_label_submission([1, 2], ["a", "b"], tmp_path / "sub.csv")
    assert os.listdir(tmp_path) == []  # neither the file nor a temporary file


def test_failure_mid_write_keeps_old_file(tmp_path):
    old = write(tmp_path / "sub.csv", "id,label\n1,old\n")

    class Bad:
        def __str__(self):
            raise RuntimeError("boom while formatting")

    # the label of the 3rd row fails while rows are being written
    with pytest.raises(RuntimeError):
        submission._atomic_write_rows(old, ["id", "label"],
                                      ([i, Bad() if i == 3 else "x"] for i in range(5)))
    assert read(old) == "id,label\n1,old\n"
    assert os.listdir(tmp_path) == ["sub.csv"]


# ----------------------------------------------------------------------------- validation

def test_validate_submission_problems(tmp_path):
    sample = write(tmp_path / "sample.csv", "id,label\n1,cat\n2,cat\n3,cat\n")
    validate_submission(write(tmp_path / "ok.csv", "id,label\n3,a\n1,b\n2,c\n"), sample)
    with pytest.raises(ValueError, match="columns"):
        validate_submission(write(tmp_path / "a.csv", "id,breed\n1,a\n2,b\n3,c\n"), sample)
    with pytest.raises(ValueError, match="no prediction: '3'"):
        validate_submission(write(tmp_path / "b.csv", "id,label\n1,a\n2,b\n"), sample)
    with pytest.raises(ValueError, match="duplicate ids: '2'"):
        validate_submission(write(tmp_path / "c.csv", "id,label\n1,a\n2,b\n2,b\n3,c\n"), sample)
    with pytest.raises(ValueError, match="empty label"):
        validate_submission(write(tmp_path / "d.csv", "id,label\n1,a\n2,\n3,c\n"), sample)
    with pytest.raises(ValueError, match="kind"):
        validate_submission(tmp_path / "ok.csv", sample, kind="probs")

    psample = write(tmp_path / "ps.csv", "id,x,y\n1,0.5,0.5\n2,0.5,0.5\n")
    validate_submission(write(tmp_path / "p.csv", "id,x,y\n2,0.25,0.75\n1,1,0\n"), psample,
                        kind="proba")
    with pytest.raises(ValueError, match="id '1'.*sum"):
        validate_submission(write(tmp_path / "q.csv", "id,x,y\n2,0.25,0.75\n1,0.5,0.4\n"),
                            psample, kind="proba")
    with pytest.raises(ValueError, match="not a number"):
        validate_submission(write(tmp_path / "r.csv", "id,x,y\n2,abc,0.75\n1,0.5,0.5\n"),
                            psample, kind="proba")
