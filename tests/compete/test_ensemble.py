"""Ensembles, bagging, k-fold and TTA in the core (no framework is imported here)."""
import itertools
import json
import os
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from d2lkaggle.compete import ensembles as E
from d2lkaggle.compete import members as M
from d2lkaggle.compete import runfolder as R
from d2lkaggle.compete import voting as V
from d2lkaggle.data import splits as S
from d2lkaggle.cli import main
from d2lkaggle.data.loader import ArraySource, ImageLoader
from d2lkaggle.data.labels import read_csv_labels
from d2lkaggle.train.loop import predict
from d2lkaggle.train.tta import check_tta, num_views, predict_tta, tta_batches


# --------------------------------------------------------------------------- voting math

def test_soft_vote_weighted_mean_by_hand():
    p1 = np.array([[0.6, 0.4], [0.2, 0.8]])
    p2 = np.array([[0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(V.soft_vote([p1, p2]), [[0.4, 0.6], [0.3, 0.7]])
    # weights are normalised: 3:1 is 0.75/0.25
    np.testing.assert_allclose(V.soft_vote([p1, p2], [3, 1]), [[0.5, 0.5], [0.25, 0.75]])


def test_geometric_vote_by_hand():
    # sqrt(.5*.8) : sqrt(.5*.2) = 2 : 1
    p = V.soft_vote([np.array([[0.5, 0.5]]), np.array([[0.8, 0.2]])], geometric=True)
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3]])
    # weights 1:0 give back the first member
    p = V.soft_vote([np.array([[0.7, 0.3]]), np.array([[0.1, 0.9]])], [1, 0], geometric=True)
    np.testing.assert_allclose(p, [[0.7, 0.3]])


def test_hard_vote_majority_and_ties_by_hand():
    m1 = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    m2 = np.array([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3]])
    m3 = np.array([[0.1, 0.8, 0.1], [0.3, 0.2, 0.5]])
    labels, shares = V.hard_vote([m1, m2, m3])
    # image 0: votes 0,0,1 -> 0
    # image 1: votes 0,1,2 (a three-way tie) -> largest mean probability: (.3, .367, .333) -> 1
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(shares, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3]])
    # weights decide the vote: member 1 has half of the weight -> class 0 on image 1
    labels, _ = V.hard_vote([m1, m2, m3], [2, 1, 1])
    assert labels.tolist() == [0, 0]
    # majority against the mean: two weak votes for 0 beat one confident vote for 1
    labels, _ = V.hard_vote([np.array([[0.51, 0.49]]), np.array([[0.51, 0.49]]),
                             np.array([[0.0, 1.0]])])
    assert labels.tolist() == [0] and V.soft_vote(
        [np.array([[0.51, 0.49]])] * 2 + [np.array([[0.0, 1.0]])]).argmax() == 1
    # a two-way tie goes to the larger mean probability: (.45, .55) -> 1
    labels, _ = V.hard_vote([np.array([[0.6, 0.4]]), np.array([[0.3, 0.7]])])
    assert labels.tolist() == [1]


def test_metrics_by_hand():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    y = np.array([0, 0, 0])
    assert V.accuracy(p, y) == pytest.approx(2 / 3)  # argmax of a tie is the first class
    assert V.log_loss(p, y) == pytest.approx(-(np.log(0.5) + np.log(0.9) + np.log(1e-15)) / 3)


# --------------------------------------------------------------------------- weights

def _members(rng, n=300, c=4):
    y = rng.integers(0, c, n)
    def member(skill):
        z = rng.normal(0, 1, (n, c))
        z[np.arange(n), y] += skill
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    return y, [member(3.0), member(1.0), member(0.0)]


@pytest.mark.parametrize("geometric", [False, True])
def test_fit_weights_minimises_the_log_loss(geometric):
    y, members = _members(np.random.default_rng(0))
    w = V.fit_weights(members, y, geometric=geometric)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1)
    assert w[0] > w[1] > w[2] - 1e-9  # the skilled member gets the most weight
    fitted = V.log_loss(V.soft_vote(members, w, geometric), y)
    grid = [(a / 50, b / 50, 1 - (a + b) / 50) for a, b in itertools.product(range(51), repeat=2)
            if a + b <= 50]
    best = min(V.log_loss(V.soft_vote(members, g, geometric), y) for g in grid)
    assert fitted <= best + 1e-6
    assert fitted < V.log_loss(V.soft_vote(members, None, geometric), y)


def test_fit_weights_picks_the_only_useful_member():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    perfect = np.eye(3)[y] * 0.98 + 0.01
    noise = rng.dirichlet(np.ones(3), 200)
    w = V.fit_weights([noise, perfect], y)
    assert w[1] > 0.99


def test_parse_weights():
    assert V.parse_weights(None, 2) is None and V.parse_weights("AUTO", 3) == "auto"
    np.testing.assert_allclose(V.parse_weights("1,3", 2), [0.25, 0.75])
    for bad, msg in (("1,2,3", "3 weights for 2"), ("a,b", "numbers separated"),
                     ("-1,2", ">= 0"), ("0,0", "not all 0")):
        with pytest.raises(ValueError, match=msg):
            V.parse_weights(bad, 2)


# --------------------------------------------------------------------------- bagging and folds

def test_bootstrap_and_out_of_bag_sets():
    ids = [f"{i:04d}" for i in range(1000)]
    bag, oob = S.bootstrap_split(ids, seed=3)
    assert len(bag) == len(ids) and bag == sorted(bag)
    assert len(set(bag)) < len(bag)  # drawn with replacement
    assert set(oob) == set(ids) - set(bag) and oob == sorted(oob)
    assert 0.33 < len(oob) / len(ids) < 0.41  # (1 - 1/n)^n ~ e^-1 = 0.368
    assert S.bootstrap_split(ids[::-1], seed=3) == (bag, oob)  # order of the input is irrelevant
    assert S.bootstrap_split(ids, seed=4)[1] != oob
    with pytest.raises(ValueError, match="at least 2"):
        S.bootstrap_split(["a"], 0)


def test_stratified_folds_follow_the_per_class_rule():
    labels = {f"{c}{i:03d}": c for c, n in (("a", 10), ("b", 7), ("c", 23)) for i in range(n)}
    folds = S.stratified_folds(labels, 3, seed=0)
    flat = [i for f in folds for i in f]
    assert sorted(flat) == sorted(labels) and len(flat) == len(labels)  # each image once
    for c, n in Counter(labels.values()).items():
        per_fold = [sum(labels[i] == c for i in f) for f in folds]
        assert set(per_fold) <= {n // 3, -(-n // 3)} and sum(per_fold) == n
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert S.stratified_folds(dict(reversed(list(labels.items()))), 3, seed=0) == folds
    assert S.stratified_folds(labels, 3, seed=1) != folds
    assert len(S.stratified_folds(labels, 7)) == 7  # the rarest class has 7 images
    with pytest.raises(ValueError, match="larger than the rarest class .'b' has 7"):
        S.stratified_folds(labels, 8)
    for k in (1, 0, True):
        with pytest.raises(ValueError, match="integer >= 2"):
            S.stratified_folds(labels, k)


# --------------------------------------------------------------------------- TTA

class _BandStep:
    """Probabilities from each image's own left/right brightness: not flip-invariant."""

    def predict_batch(self, x):
        x = np.asarray(x, dtype=np.float64)
        w = x.shape[2]
        z = np.stack([x[:, :, : w // 2].mean((1, 2, 3)), x[:, :, w // 2:].mean((1, 2, 3)),
                      x[:, : x.shape[1] // 2].mean((1, 2, 3))], 1) / 40
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _loader(x, bs):
    return ImageLoader(ArraySource(x), None, bs, seed=5)


def test_tta_keeps_row_order_and_count():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (11, 16, 16, 3)).astype(np.uint8)
    step = _BandStep()
    for tta in ("flip", "flip-crop"):
        batched = predict(step, _loader(x, 4), tta=tta)  # 4+4+3 rows
        one_by_one = np.concatenate([predict(step, _loader(x[i:i + 1], 1), tta=tta)
                                     for i in range(len(x))])
        assert batched.shape == (11, 3)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-12)
        assert not np.allclose(batched, predict(step, _loader(x, 4)))  # the views do change it
    # flip by hand: the mean of the image and its mirror
    manual = (step.predict_batch(x) + step.predict_batch(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(predict(step, _loader(x, 4), tta="flip"), manual, atol=1e-12)
    # images of one colour look the same in every view: TTA must give back the plain rows
    flat = np.repeat(np.repeat(rng.integers(0, 255, (9, 1, 1, 3)), 16, 1), 16, 2).astype(np.uint8)
    plain = predict(step, _loader(flat, 4))
    for tta in ("flip", "flip-crop", 5, "3"):
        np.testing.assert_allclose(predict(step, _loader(flat, 4), tta=tta), plain, atol=1e-6)


def test_tta_views_are_seeded_and_counted():
    x = np.random.default_rng(1).integers(0, 255, (6, 8, 8, 3)).astype(np.uint8)
    for tta, n in (("flip", 2), ("flip-crop", 10), (4, 4)):
        batches = [(list(v), y) for v, y in tta_batches(_loader(x, 4), tta)]
        assert [len(v) for v, _ in batches] == [n, n] and num_views(tta) == n
        for views, _ in batches:
            assert all(v.shape == views[0].shape and v.dtype == np.uint8 for v in views)
        np.testing.assert_array_equal(batches[0][0][0], x[:4])  # the plain view first
    a = [list(v) for v, _ in tta_batches(_loader(x, 4), 4)]
    b = [list(v) for v, _ in tta_batches(_loader(x, 4), 4)]
    assert all(np.array_equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))


def test_check_tta():
    assert check_tta(None) is None and check_tta("none") is None and check_tta(1) is None
    assert check_tta("FLIP") == "flip" and check_tta("8") == 8 and check_tta(3) == 3
    for bad in ("rotate", 0, -2, 2.5, "x1"):
        with pytest.raises(ValueError, match="flip"):
            check_tta(bad)
    with pytest.raises(ValueError, match="empty"):
        predict_tta(_BandStep().predict_batch, [], "flip")


# --------------------------------------------------------------------------- combining run folders

def _fake_run(folder, demo_dir, probs, *, classes=None, test_ids=None, valid=None,
              backend="numpy"):
    """A finished run folder as run_competition writes it, with given probabilities."""
    import pandas as pd
    sample = pd.read_csv(os.path.join(demo_dir, "sampleSubmission.csv"), dtype=str)
    labels = read_csv_labels(os.path.join(demo_dir, "trainLabels.csv"))
    classes = classes or sorted(set(labels.values()))
    data = SimpleNamespace(classes=classes, test_ids=test_ids or sample["id"].tolist())
    vp = None
    if valid is not None:
        ids, vp = valid
        data.valid_ids = ids
        data.valid_iter = SimpleNamespace(labels=[classes.index(labels[i]) for i in ids])
    os.makedirs(folder, exist_ok=True)
    R.save_run_predictions(str(folder), data, probs, vp)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"competition": "demo", "backend": backend, "data_dir": demo_dir,
                   "recipe": {"model": "fake"}}, f)
    return str(folder), classes, data.test_ids


def _rand_probs(rng, n, c):
    return rng.dirichlet(np.ones(c), n).astype(np.float32)


def test_ensemble_of_runs_with_auto_weights(demo_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = read_csv_labels(os.path.join(demo_dir, "trainLabels.csv"))
    classes = sorted(set(labels.values()))
    v_ids = sorted(labels)[:40]
    y = np.array([classes.index(labels[i]) for i in v_ids])
    good = np.eye(len(classes))[y] * 0.9 + 0.01
    a, _, ids = _fake_run(tmp_path / "a", demo_dir, _rand_probs(rng, 30, 10),
                          valid=(v_ids, good / good.sum(1, keepdims=True)))
    # run b lists its classes and test rows in another order: they are aligned, not refused
    perm, rows = rng.permutation(10), rng.permutation(30)
    pb = _rand_probs(rng, 30, 10)
    b, _, _ = _fake_run(tmp_path / "b", demo_dir, pb[rows][:, perm],
                        classes=[classes[k] for k in perm], test_ids=[ids[r] for r in rows],
                        valid=(v_ids[5:], _rand_probs(rng, 35, 10)[:, perm]))
    out = tmp_path / "ens"
    assert main(["ensemble", a, b, "--out", str(out), "--weights", "auto"]) == 0
    s = json.load(open(out / "summary.json"))
    assert s["num_common_valid"] == 35 and s["weights"][0] > 0.95 and s["weights_fitted"]
    assert s["valid_acc"] == pytest.approx(1.0) and s["members"][0]["valid_acc"] == 1.0
    assert s["valid_loss"] < s["members"][1]["valid_loss"]
    got = np.load(out / "test_probs.npy")
    pa = np.load(os.path.join(a, "test_probs.npy"))
    np.testing.assert_allclose(got, s["weights"][0] * pa + s["weights"][1] * pb, atol=1e-5)
    sub = open(out / "submission.csv").read().splitlines()
    assert sub[0] == "id,label" and [r.split(",")[0] for r in sub[1:]] == ids
    assert [r.split(",")[1] for r in sub[1:]] == [classes[k] for k in got.argmax(1)]
    assert "ensemble (soft vote)" in capsys.readouterr().out
    # fixed weights and the hard vote
    assert main(["ensemble", a, b, "--out", str(tmp_path / "h"), "--vote", "hard",
                 "--weights", "0,1"]) == 0
    sub = open(tmp_path / "h" / "submission.csv").read().splitlines()
    assert [r.split(",")[1] for r in sub[1:]] == [classes[k] for k in pb.argmax(1)]


def test_ensemble_bad_input_leaves_nothing(demo_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    a, classes, ids = _fake_run(tmp_path / "a", demo_dir, _rand_probs(rng, 30, 10))
    b, _, _ = _fake_run(tmp_path / "b", demo_dir, _rand_probs(rng, 30, 10))
    other_ids = _fake_run(tmp_path / "ids", demo_dir, _rand_probs(rng, 30, 10),
                          test_ids=ids[:-1] + ["nope"])[0]
    other_cls = _fake_run(tmp_path / "cls", demo_dir, _rand_probs(rng, 30, 10),
                          classes=classes[:-1] + ["zebra"])[0]
    old = tmp_path / "old"
    os.makedirs(old)
    open(old / "summary.json", "w").write("{}")
    out = tmp_path / "out"
    cases = [([a], "at least 2 runs"),
             ([a, other_ids], f"run {other_ids} predicts other test ids"),
             ([a, other_cls], f"run {other_cls} has other classes"),
             ([a, str(old)], f"{old} has no test_probs.npy .*--resume"),
             ([a, str(tmp_path / 'missing')], "run folder not found"),
             ([a, a], "given twice"),
             ([a, b, "--weights", "auto"], "did not validate"),
             ([a, b, "--weights", "1,2,3"], "3 weights for 2 runs"),
             ([a, b, "--vote", "hard", "--geometric"], "geometric")]
    for args, msg in cases:
        assert main(["ensemble", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("d2lkaggle: error: ") and len(err.strip().splitlines()) == 1
        import re
        assert re.search(msg, err), (msg, err)
        assert not out.exists() or not os.listdir(out), args
    # --out may not be a member, nor a training run's folder
    assert main(["ensemble", a, b, "--out", a]) == 2
    assert "one of the runs" in capsys.readouterr().err
    os.makedirs(tmp_path / "train" / "checkpoints")
    open(tmp_path / "train" / "summary.json", "w").write('{"backend": "torch"}')
    assert main(["ensemble", a, b, "--out", str(tmp_path / "train")]) == 2
    assert "holds a training run" in capsys.readouterr().err


def test_failed_submission_keeps_the_previous_ensemble(demo_dir, tmp_path):
    rng = np.random.default_rng(2)
    a = _fake_run(tmp_path / "a", demo_dir, _rand_probs(rng, 30, 10))[0]
    b = _fake_run(tmp_path / "b", demo_dir, _rand_probs(rng, 30, 10))[0]
    out = tmp_path / "out"
    E.ensemble_runs([a, b], str(out), log=None)
    before = {f: open(out / f, "rb").read() for f in os.listdir(out)}
    # a sample file that no longer matches: the new submission fails its check
    data = tmp_path / "data"
    os.makedirs(data)
    open(data / "sampleSubmission.csv", "w").write("id,label\n1,cat\n")
    with pytest.raises(ValueError):
        E.ensemble_runs([a, b], str(out), data_dir=str(data), vote="hard", log=None)
    assert {f: open(out / f, "rb").read() for f in os.listdir(out)} == before


def test_member_variants_cycle_and_fail_clearly(monkeypatch):
    from d2lkaggle.data import transforms as augment
    from d2lkaggle.specs.competitions import get_competition
    comp = get_competition("demo")
    assert M.member_variants("seed", 3, comp) == [{}, {}, {}]
    with pytest.raises(ValueError, match="needs --members-vary augment or model"):
        M.member_variants("seed", 2, comp, "a,b")

    def takes_all(comp, data_dir, **kw):
        return kw

    def takes_nothing(comp, data_dir, *, out=None):
        return out
    monkeypatch.setattr(augment, "PRESETS", ("book", "crop-flip", "none"), raising=False)
    assert M.member_variants("augment", 3, comp, None, takes_all) == [
        {"augment": "book"}, {"augment": "crop-flip"}, {"augment": "book"}]
    assert M.member_variants("augment", 2, comp, "none,book", takes_all) == [
        {"augment": "none"}, {"augment": "book"}]
    with pytest.raises(ValueError, match="unknown augment 'spin'"):
        M.member_variants("augment", 2, comp, "spin", takes_all)
    with pytest.raises(ValueError, match="not available in this version"):
        M.member_variants("augment", 2, comp, None, takes_nothing)
    monkeypatch.delattr(augment, "PRESETS")
    with pytest.raises(ValueError, match="not available in this version"):
        M.member_variants("augment", 2, comp, None, takes_all)


def test_given_split_is_checked():
    labels = {"a": "x", "b": "y", "c": "x"}
    assert S.check_split((["a", "a", "b"], ["c"]), labels) == (["a", "a", "b"], ["c"])
    for split, msg in (((["a", "zz"], ["c"]), "1 split ids have no label: zz"),
                       (([], ["c"]), "no training image"),
                       ((["a", "b"], ["b"]), "both in training and validation: b")):
        with pytest.raises(ValueError, match=msg):
            S.check_split(split, labels)


def test_split_digest():
    d = S.split_digest((["a", "a", "b"], ["c"]))
    assert d.startswith("3/1:") and d == S.split_digest((["a", "a", "b"], ["c"]))
    assert d != S.split_digest((["a", "b"], ["c"])) and S.split_digest(None) is None


def test_loop_predict_and_predict_tta_agree():
    x = np.random.default_rng(3).integers(0, 255, (10, 8, 8, 3)).astype(np.uint8)
    step = _BandStep()
    for tta in ("flip", "flip-crop", 4):
        np.testing.assert_allclose(predict(step, _loader(x, 4), tta=tta),
                                   predict_tta(step.predict_batch, _loader(x, 4), tta), atol=1e-12)


def test_report_notes_few_shared_validation_images(demo_dir, tmp_path):
    rng = np.random.default_rng(5)
    ids = sorted(read_csv_labels(os.path.join(demo_dir, "trainLabels.csv")))
    a = _fake_run(tmp_path / "a", demo_dir, _rand_probs(rng, 30, 10),
                  valid=(ids[:20], _rand_probs(rng, 20, 10)))[0]
    b = _fake_run(tmp_path / "b", demo_dir, _rand_probs(rng, 30, 10),
                  valid=(ids[15:35], _rand_probs(rng, 20, 10)))[0]
    lines = []
    s = E.ensemble_runs([a, b], str(tmp_path / "e"), log=lines.append)
    assert s["num_common_valid"] == 5 and "share only 5 of their 20+" in lines[0]
