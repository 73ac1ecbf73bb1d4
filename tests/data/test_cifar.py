"""CIFAR-10/100 python archives: read in the real pickle format, bad members named, run end to end."""
import csv
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

from cifar_archives import CIFAR10_NAMES, COARSE, FINE, write_cifar10, write_cifar100
from conftest import backend_params, run_cli
from d2lkaggle.data.cifar import (find_cifar_archive, read_cifar_archive, to_kaggle_layout)
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.compete.load import load_data
from d2lkaggle.compete.report import labelled_test_metrics


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_cifar10_archive_reads_images_labels_and_names(tmp_path):
    written = {}
    path = write_cifar10(str(tmp_path), n_train=50, n_test=20, extra=written)
    a = read_cifar_archive(path)
    assert a.kind == "cifar10" and a.classes == CIFAR10_NAMES
    assert a.train_x.shape == (50, 32, 32, 3) and a.train_x.dtype == np.uint8
    assert a.train_x.flags["C_CONTIGUOUS"]
    # planes → H×W×3 exactly, five batches concatenated in order
    np.testing.assert_array_equal(a.train_x, written["train_x"])
    np.testing.assert_array_equal(a.train_y, written["train_y"])
    np.testing.assert_array_equal(a.test_x, written["test_x"])
    np.testing.assert_array_equal(a.test_y, written["test_y"])
    assert a.train_y.dtype == np.int64
    # nothing is unpacked next to the archive
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    written = {}
    path = write_cifar100(str(tmp_path), classes=12, extra=written)
    fine = read_cifar_archive(path, "fine")
    coarse = read_cifar_archive(path, "coarse")
    assert fine.classes == FINE and coarse.classes == COARSE
    np.testing.assert_array_equal(fine.train_y, written["train_y"])
    np.testing.assert_array_equal(coarse.train_y, written["train_y"] // 5)
    np.testing.assert_array_equal(coarse.test_y, written["test_y"] // 5)
    np.testing.assert_array_equal(fine.train_x, coarse.train_x)


def test_class_order_is_the_kaggle_layouts_sorted_order(tmp_path):
    path = write_cifar10(str(tmp_path))
    d = tmp_path / "x"
    with tarfile.open(path) as tf:
        tf.extractall(d)
    meta = d / "cifar-10-batches-py" / "batches.meta"
    names = list(reversed(CIFAR10_NAMES))  # an archive whose names are not sorted
    meta.write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2))
    a = read_cifar_archive(str(d / "cifar-10-batches-py"))  # the extracted folder works too
    b = read_cifar_archive(path)
    assert a.classes == CIFAR10_NAMES
    # label k of the archive names names[k]; after remapping, class names agree image by image
    assert [a.classes[k] for k in a.train_y] == [names[k] for k in b.train_y]


@pytest.mark.parametrize("writer,member", [(write_cifar10, "cifar-10-batches-py/batches.meta"),
                                           (write_cifar100, "cifar-100-python/meta")])
def test_missing_meta_names_the_member(tmp_path, writer, member):
    path = writer(str(tmp_path), skip=(member.rsplit("/", 1)[1],))
    with pytest.raises(ValueError, match=f"member {member} is missing"):
        read_cifar_archive(path)


def test_corrupt_pickle_names_the_member(tmp_path):
    path = write_cifar10(str(tmp_path), corrupt=("data_batch_3",))
    with pytest.raises(ValueError, match="member cifar-10-batches-py/data_batch_3 is not a valid"):
        read_cifar_archive(path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = write_cifar10(str(tmp_path))
    d = tmp_path / "x"
    with tarfile.open(path) as tf:
        tf.extractall(d)
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(flag), "w"))
    (d / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="test_batch .*refusing to load"):
        read_cifar_archive(str(d / "cifar-10-batches-py"))
    assert not flag.exists()


def test_wrong_shapes_and_labels_are_named(tmp_path):
    path = write_cifar100(str(tmp_path))
    d = tmp_path / "x"
    with tarfile.open(path) as tf:
        tf.extractall(d)
    f = d / "cifar-100-python" / "train"
    good = f.read_bytes()
    f.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}))
    with pytest.raises(ValueError, match="cifar-100-python/train .*expected uint8 N×3072"):
        read_cifar_archive(str(d / "cifar-100-python"))
    f.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [0, 1, 2, 100]}))
    with pytest.raises(ValueError, match="train .*outside 0..99"):
        read_cifar_archive(str(d / "cifar-100-python"))
    f.write_bytes(good)
    assert len(read_cifar_archive(str(d / "cifar-100-python")).train_x) == 60


def test_coarse_on_cifar10_and_truncated_archives_are_errors(tmp_path):
    path = write_cifar10(str(tmp_path))
    with pytest.raises(ValueError, match="CIFAR-10 has no coarse labels"):
        read_cifar_archive(path, "coarse")
    with pytest.raises(ValueError, match="unknown label kind 'both'"):
        read_cifar_archive(path, "both")
    cut = tmp_path / "cut" / "cifar-10-python.tar.gz"
    cut.parent.mkdir()
    cut.write_bytes(open(path, "rb").read()[:300])
    with pytest.raises(ValueError, match="cut/cifar-10-python.tar.gz is not a readable"):
        read_cifar_archive(str(cut))
    with pytest.raises(FileNotFoundError):
        read_cifar_archive(str(tmp_path / "nope" / "cifar-10-python.tar.gz"))


def test_find_archive(tmp_path, demo_dir):
    path = write_cifar10(str(tmp_path))
    assert find_cifar_archive(path) == path
    assert find_cifar_archive(str(tmp_path)) == path
    assert find_cifar_archive(demo_dir) is None  # the Kaggle layout is never an archive
    write_cifar100(str(tmp_path))
    with pytest.raises(ValueError, match="holds both"):
        find_cifar_archive(str(tmp_path))


def test_load_data_from_an_archive_keeps_the_split_rule_and_test_labels(tmp_path):
    path = write_cifar10(str(tmp_path), n_train=100, n_test=30)
    comp = get_competition("cifar10")
    data = load_data(comp, str(tmp_path), batch_size=16, valid_ratio=0.1)
    assert data.classes == CIFAR10_NAMES and data.test_ids == [str(i) for i in range(1, 31)]
    assert len(data.valid_iter.source) == 10 and data.train_iter.num_examples == 80
    a = read_cifar_archive(path)
    np.testing.assert_array_equal(data.test_labels, a.test_y)
    x, y = next(iter(data.valid_iter))
    assert x.dtype == np.uint8 and x.shape == (10, 32, 32, 3)
    xt, yt = next(iter(data.test_iter))
    assert (yt == -1).all()  # never trained on: the loader keeps them unlabelled
    np.testing.assert_array_equal(xt, a.test_x[:16])
    with pytest.raises(ValueError, match="run it as competition 'cifar10', not 'cifar100'"):
        load_data(get_competition("cifar100"), path, batch_size=16, valid_ratio=0.1)
    with pytest.raises(ValueError, match="label-kind coarse needs a CIFAR-100 python archive"):
        load_data(comp, str(tmp_path / "nope"), batch_size=16, valid_ratio=0.1, label_kind="coarse")


def test_labelled_test_metrics():
    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    m = labelled_test_metrics(p, np.array([0, 1, 1]))
    assert m["test_acc"] == pytest.approx(2 / 3)
    assert m["test_loss"] == pytest.approx(-np.log([0.7, 0.6, 0.1]).mean())


def test_to_kaggle_layout_round_trips(tmp_path, demo_dir):
    a = read_cifar_archive(write_cifar10(str(tmp_path), n_train=20, n_test=5))
    out = to_kaggle_layout(a, str(tmp_path / "kaggle"))
    data = load_data(get_competition("cifar10"), out, batch_size=5, valid_ratio=0)
    x, _ = next(iter(data.test_iter))
    np.testing.assert_array_equal(x, a.test_x)
    assert rows(os.path.join(out, "trainLabels.csv"))[1] == ["1", a.classes[a.train_y[0]]]
    with pytest.raises(ValueError, match="not empty"):
        to_kaggle_layout(a, demo_dir)
    assert os.path.exists(os.path.join(demo_dir, "trainLabels.csv"))  # nothing deleted


FAST = ["--epochs", "1", "--batch-size", "16", "--quiet", "--workers", "1"]


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_run_cifar10_archive_reports_test_accuracy(backend, tmp_path):
    path = write_cifar10(str(tmp_path), n_train=100, n_test=30)
    out = tmp_path / "run"
    r = run_cli("run", "cifar10", "--data-dir", path, "--backend", backend, "--out", str(out), *FAST)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    sub = rows(out / "submission.csv")
    assert sub[0] == ["id", "label"] and [s[0] for s in sub[1:]] == [str(i) for i in range(1, 31)]
    assert {s[1] for s in sub[1:]} <= set(CIFAR10_NAMES)
    s = json.load(open(out / "summary.json"))
    assert 0 <= s["test_acc"] <= 1 and s["test_loss"] > 0 and s["label_kind"] == "fine"
    # the accuracy is the submission's: recompute it from the file and the archive's labels
    a = read_cifar_archive(path)
    acc = np.mean([CIFAR10_NAMES.index(row[1]) == y for row, y in zip(sub[1:], a.test_y)])
    assert s["test_acc"] == pytest.approx(acc)
    assert "test accuracy" in r.stdout


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_run_cifar100_archive_coarse(backend, tmp_path):
    write_cifar100(str(tmp_path), n_train=60, n_test=10, classes=20)
    out = tmp_path / "run"
    r = run_cli("run", "cifar100", "--data-dir", str(tmp_path), "--backend", backend, "--out",
                str(out), "--label-kind", "coarse", "--no-retrain", *FAST)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    assert s["num_classes"] == 20 and s["label_kind"] == "coarse" and 0 <= s["test_acc"] <= 1
    assert {row[1] for row in rows(out / "submission.csv")[1:]} <= set(COARSE)


def test_cli_bad_archives_are_one_line_errors(tmp_path):
    path = write_cifar10(str(tmp_path), skip=("batches.meta",))
    r = run_cli("run", "cifar10", "--data-dir", path, "--epochs", "1", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "batches.meta is missing" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o" / "submission.csv").exists()
    ok = tmp_path / "ok"
    ok.mkdir()
    write_cifar10(str(ok))
    r = run_cli("run", "cifar10", "--data-dir", str(ok), "--label-kind", "coarse", "--epochs", "1",
                "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "no coarse labels" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_cifar100_kaggle_layout_runs_with_its_default_recipe(backend, tmp_path):
    # 100 classes, two images each: the chapter's split puts one of each into validation
    a = read_cifar_archive(write_cifar100(str(tmp_path), n_train=200, n_test=12, classes=100))
    data_dir = to_kaggle_layout(a, str(tmp_path / "cifar100"))
    out = tmp_path / "run"
    r = run_cli("run", "cifar100", "--data-dir", data_dir, "--backend", backend, "--out", str(out),
                *FAST)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    assert s["num_classes"] == 100 and s["recipe"]["model"] == "resnet18" and "test_acc" not in s
    sub = rows(out / "submission.csv")
    assert [row[0] for row in sub[1:]] == [str(i) for i in range(1, 13)]
    assert {row[1] for row in sub[1:]} <= set(FINE)
    hist = rows(out / "history.csv")
    assert {h[0] for h in hist[1:]} == {"valid", "train_valid"}


def test_write_cifar_archive_round_trips_in_the_real_format(tmp_path):
    from d2lkaggle.data.cifar import write_cifar_archive
    rng = np.random.default_rng(3)
    xtr, xte = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (12, 4))
    fine_tr, fine_te = rng.integers(0, 4, 12), rng.integers(0, 4, 4)
    names = ["a", "b", "c", "d"]
    path = write_cifar_archive(str(tmp_path), "cifar100", xtr, xte, {
        "fine": (names, fine_tr, fine_te), "coarse": (["x", "y"], fine_tr // 2, fine_te // 2)})
    with tarfile.open(path) as tf:
        assert sorted(tf.getnames()) == ["cifar-100-python/meta", "cifar-100-python/test",
                                         "cifar-100-python/train"]
        d = pickle.load(tf.extractfile("cifar-100-python/train"), encoding="latin1")  # torchvision's way
    assert d["data"].shape == (12, 3072) and d["fine_labels"] == [int(v) for v in fine_tr]
    np.testing.assert_array_equal(d["data"][0, :1024].reshape(32, 32), xtr[0, :, :, 0])
    a = read_cifar_archive(path, "coarse")
    np.testing.assert_array_equal(a.train_x, xtr)
    np.testing.assert_array_equal(a.test_y, fine_te // 2)
    with pytest.raises(ValueError, match="needs labels"):
        write_cifar_archive(str(tmp_path), "cifar100", xtr, xte, {"fine": (names, fine_tr, fine_te)})


def test_demo_archives_are_learnable_shapes(tmp_path):
    from d2lkaggle.data.cifar import make_demo_archive
    a = read_cifar_archive(make_demo_archive(str(tmp_path), "cifar10", 40, 10))
    assert len(a.classes) == 10 and np.bincount(a.train_y).tolist() == [4] * 10
    fine = read_cifar_archive(make_demo_archive(str(tmp_path), "cifar100", 40, 10))
    coarse = read_cifar_archive(os.path.join(tmp_path, "cifar-100-python.tar.gz"), "coarse")
    assert len(fine.classes) == 20 and len(coarse.classes) == 10
    assert all(fine.classes[f].split("_")[0] == coarse.classes[c]
               for f, c in zip(fine.train_y, coarse.train_y))


def test_data_hub_has_the_official_archives_with_their_published_md5():
    from d2lkaggle.data import hub
    assert hub.DATA_HUB["cifar10_python"] == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a")
    assert hub.DATA_HUB["cifar100_python"] == (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5:eb9058c3a382ffc7106e4002c42a8d85")


def test_download_an_archive_by_md5_from_a_local_server_and_read_it(tmp_path, monkeypatch):
    import hashlib
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from d2lkaggle.data import hub
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = tmp_path / "srv"
    srv.mkdir()
    path = write_cifar10(str(srv))
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(srv))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/cifar-10-python.tar.gz"
        monkeypatch.setitem(hub.DATA_HUB, "cifar10_python", (url, "md5:" + md5))
        got = hub.download("cifar10_python", str(tmp_path / "cache"))
        assert read_cifar_archive(got).train_x.shape == (50, 32, 32, 3)
        monkeypatch.setitem(hub.DATA_HUB, "cifar10_python", (url, "md5:" + "0" * 32))
        with pytest.raises(hub.DownloadError):
            hub.download("cifar10_python", str(tmp_path / "cache2"))
        assert not (tmp_path / "cache2" / "cifar-10-python.tar.gz").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()
