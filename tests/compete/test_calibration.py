"""Temperature scaling (d2lkaggle.compete.calibration): the fit, what it keeps, where a run
and an ensemble apply it, and that --resume keeps the temperature."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from d2lkaggle.cli import main
from d2lkaggle.compete import calibration as C
from d2lkaggle.compete import runfolder as R
from d2lkaggle.compete.voting import log_loss, soft_vote
from d2lkaggle.data.labels import read_csv_labels
from d2lkaggle.specs.competitions import get_competition


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def miscalibrated(rng, n=400, c=10, skill=2.0, scale=3.0):
    """Probabilities of a net that ranks well (``skill``) but is ``scale`` times too sure."""
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, c))
    z[np.arange(n), y] += skill
    return softmax(z * scale).astype(np.float32), y


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_fit_finds_the_grid_searchs_minimum(scale):
    p, y = miscalibrated(np.random.default_rng(int(scale * 10)), scale=scale)
    t = C.fit_temperature(p, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    losses = np.array([log_loss(C.apply_temperature(p, g), y) for g in grid])
    best = grid[losses.argmin()]
    assert log_loss(C.apply_temperature(p, t), y) <= losses.min() + 1e-9
    assert abs(np.log(t / best)) < 2 * np.log(grid[1] / grid[0])
    # over-confident nets are softened (T > 1), timid ones sharpened (T < 1)
    assert (t > 1.5) if scale == 4.0 else (t < 0.7) if scale == 0.3 else True


def test_calibrated_rows_sum_to_one_and_keep_their_argmax():
    p, y = miscalibrated(np.random.default_rng(0), scale=5.0)
    p[0] = 0.0   # float32 softmax underflow: zeros must not become NaN
    p[0, 3] = 1.0
    for t in (0.05, 0.5, 1.0, 3.0, 80.0):
        q = C.apply_temperature(p, t)
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
        assert np.isfinite(q).all() and (q >= 0).all()
        assert (q.argmax(1) == p.argmax(1)).all()
    np.testing.assert_allclose(C.apply_temperature(p, 1.0), p, atol=1e-6)
    # the same as dividing the logits: softmax(z / T)
    z = np.random.default_rng(1).normal(0, 3, (5, 4))
    np.testing.assert_allclose(C.apply_temperature(softmax(z), 2.5), softmax(z / 2.5), atol=1e-12)


def test_report_edges_and_bad_input():
    rng = np.random.default_rng(3)
    p, y = miscalibrated(rng, scale=4.0)
    cal = C.calibrate(p, y, "temperature")
    assert cal.log_loss_after < cal.log_loss_before and cal.log_loss_cross_fitted < cal.log_loss_before
    assert cal.log_loss_after <= cal.log_loss_cross_fitted
    assert "temperature" in cal.line() and cal.to_json()["num_valid"] == 400
    off = C.calibrate(p, y, "none")
    assert off.method == "none" and np.array_equal(off.apply(p), p)
    # every image right and well separated: the sharpest temperature allowed
    sep = np.eye(4)[np.arange(40) % 4] * 0.9 + 0.025
    assert C.fit_temperature(sep, np.arange(40) % 4) == C.T_RANGE[0]
    for bad, words in [((p, y[:-1]), "labels for"), ((p[:, :1], y), "C >= 2"),
                       ((p, y + 10), "class indices")]:
        with pytest.raises(ValueError, match=words):
            C.fit_temperature(*bad)
    with pytest.raises(ValueError, match="--calibrate must be one of none, temperature"):
        C.check_calibrate("platt")


def test_defaults_follow_the_competitions_metric():
    dog, cifar = get_competition("dog-breed"), get_competition("cifar10")
    assert C.resolve_calibration(None, dog, True)[0] == "temperature"
    assert C.resolve_calibration(None, cifar, True)[0] == "none"
    assert C.resolve_calibration("temperature", cifar, True)[0] == "temperature"
    method, note = C.resolve_calibration(None, dog, False)
    assert method == "none" and "no validation images" in note
    with pytest.raises(ValueError, match="--calibrate temperature fits on validation images"):
        C.resolve_calibration("temperature", dog, False)


def test_cli_refuses_a_temperature_without_validation_images(capsys, dog_dir, tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "dog-breed", "--data-dir", dog_dir, "--out", str(out), "--weights", "none",
               "--valid-ratio", "0", "--calibrate", "temperature", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("d2lkaggle: error: --calibrate temperature")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------------------- ensembles

def _dog_run(folder, dog_dir, test_probs, valid_ids, valid_probs, calibration=None):
    """A finished Dog Breed run folder with the given probabilities."""
    import pandas as pd
    labels = read_csv_labels(os.path.join(dog_dir, "labels.csv"))
    classes = sorted(set(labels.values()))
    ids = pd.read_csv(os.path.join(dog_dir, "sample_submission.csv"), dtype=str)["id"].tolist()
    data = SimpleNamespace(classes=classes, test_ids=ids, valid_ids=valid_ids,
                           valid_iter=SimpleNamespace(labels=[classes.index(labels[i])
                                                              for i in valid_ids]))
    os.makedirs(folder, exist_ok=True)
    R.save_run_predictions(str(folder), data, test_probs, valid_probs)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"competition": "dog-breed", "backend": "numpy", "data_dir": dog_dir,
                   "recipe": {"model": "fake"}, "calibration": calibration}, f)
    return str(folder), classes, np.array(data.valid_iter.labels)


def test_ensemble_calibrates_the_soft_vote(dog_dir, tmp_path, capsys):
    labels = read_csv_labels(os.path.join(dog_dir, "labels.csv"))
    v_ids = sorted(labels)[:40]
    rng = np.random.default_rng(5)
    classes = sorted(set(labels.values()))
    y = np.array([classes.index(labels[i]) for i in v_ids])
    runs, tests, valids = [], [], []
    for k in range(2):   # two members that rank well and are far too sure
        z = rng.normal(0, 1, (50, 4))
        z[np.arange(40), y] += 1.5
        p = softmax(6.0 * z)
        tests.append(p[40:])
        valids.append(p[:40])
        runs.append(_dog_run(tmp_path / f"m{k}", dog_dir, p[40:], v_ids, p[:40])[0])
    out = tmp_path / "ens"
    assert main(["ensemble", *runs, "--out", str(out)]) == 0   # calibrated by default (dog)
    s = json.load(open(out / "summary.json"))
    cal = s["calibration"]
    vote = soft_vote(valids)
    t = C.fit_temperature(vote, y)
    assert cal["method"] == "temperature" and cal["temperature"] == pytest.approx(t, rel=1e-6)
    assert abs(np.log(cal["temperature"])) > 0.2 and cal["log_loss_after"] < cal["log_loss_before"]
    assert cal["log_loss_before"] == pytest.approx(log_loss(vote, y), rel=1e-6)
    assert s["valid_loss"] == pytest.approx(cal["log_loss_after"], rel=1e-6)
    want = C.apply_temperature(soft_vote(tests), t)
    np.testing.assert_allclose(np.load(out / "test_probs.npy"), want, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "valid_probs.npy"), C.apply_temperature(vote, t),
                               atol=1e-6)
    rows = [r.split(",") for r in open(out / "submission.csv").read().splitlines()[1:]]
    np.testing.assert_allclose([sum(map(float, r[1:])) for r in rows], 1.0, atol=1e-6)
    assert json.load(open(out / "calibration.json"))["temperature"] == cal["temperature"]
    assert "temperature" in capsys.readouterr().out
    # --calibrate none: the plain vote, and no stale calibration.json
    assert main(["ensemble", *runs, "--out", str(out), "--calibrate", "none"]) == 0
    np.testing.assert_allclose(np.load(out / "test_probs.npy"), soft_vote(tests), atol=1e-6)
    assert json.load(open(out / "summary.json"))["calibration"]["method"] == "none"
    # members without shared validation images: the default quietly skips, a request is refused
    lone = [_dog_run(tmp_path / f"n{k}", dog_dir, tests[k], v_ids[20 * k:20 * k + 20],
                     valids[k][20 * k:20 * k + 20])[0] for k in range(2)]
    assert main(["ensemble", *lone, "--out", str(tmp_path / "e2")]) == 0
    assert json.load(open(tmp_path / "e2" / "summary.json"))["calibration"]["method"] == "none"
    capsys.readouterr()
    assert main(["ensemble", *lone, "--out", str(tmp_path / "e3"), "--calibrate",
                 "temperature"]) == 2
    assert "share no validation images" in capsys.readouterr().err

# A whole run applies the temperature and --resume keeps it: tests/compete/test_end_to_end.py
# (test_resume_whole_run), the Dog runs there check the default in every backend.


# --------------------------------------------------------------------------- when T is not trusted

def test_a_temperature_at_the_edge_is_not_applied_and_said():
    """The issue's case: a model right on every validation image fits T = 0.01 (a reported
    cross-fitted loss of 0), and a 90 %-accurate one then made the test log loss 0.63 -> 3.83."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    z = rng.normal(0, 1, (40, 4))
    z[np.arange(40), y] += 6.0          # right on every validation image
    valid = softmax(z)
    assert (valid.argmax(1) == y).all()
    cal = C.calibrate(valid, y, "temperature")
    assert C.fit_temperature(valid, y) == C.T_RANGE[0]
    assert cal.method == "none" and cal.fitted == C.T_RANGE[0] and cal.temperature == 1.0
    assert len(cal.warnings) == 1 and "low end of the range" in cal.warnings[0]
    assert "not applied" in cal.line() and cal.to_json()["warnings"] == list(cal.warnings)
    test_y = np.arange(100) % 4
    zt = rng.normal(0, 1, (100, 4))
    zt[np.arange(100), test_y] += 3.0
    zt[:10] = zt[:10, ::-1]              # ten confident mistakes
    test = softmax(zt)
    assert np.array_equal(cal.apply(test), test)
    assert log_loss(C.apply_temperature(test, C.T_RANGE[0]), test_y) > 3 * log_loss(test, test_y)


def test_one_class_one_image_and_a_useless_fit_fall_back_to_none():
    rng = np.random.default_rng(1)
    p, y = miscalibrated(rng, n=60, c=5, scale=3.0)
    # validation images of one class, which the model gives little: T = 100, uniform rows
    z = rng.normal(0, 1, (30, 5))
    z[:, 0] -= 2.0
    one = C.calibrate(softmax(3 * z), np.zeros(30, np.int64), "temperature")
    assert one.method == "none" and one.fitted == C.T_RANGE[1] and any(
        "high end of the range" in w for w in one.warnings)
    single = C.calibrate(p[:1], y[:1], "temperature")              # the 1 image
    assert single.method == "none" and any("fewer than 2 per class" in w for w in single.warnings)
    # a net that is calibrated already: T ~ 1 fits the noise, cross-fitting says so
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (300, 5))
    calibrated = softmax(z)
    labels = np.array([rng.choice(5, p=row) for row in calibrated])
    cal = C.calibrate(calibrated, labels, "temperature")
    assert cal.method == "none" and "does not help" in cal.note and not cal.warnings
    assert cal.log_loss_cross_fitted >= cal.log_loss_before and cal.apply(calibrated) is not None


def test_few_images_per_class_apply_a_helpful_temperature_with_a_warning():
    p, y = miscalibrated(np.random.default_rng(0), n=15, c=10, skill=1.5, scale=6.0)
    cal = C.calibrate(p, y, "temperature")
    assert cal.log_loss_cross_fitted < cal.log_loss_before
    assert cal.method == "temperature" and cal.temperature > 1
    assert cal.warnings == ("the temperature is fitted on 15 validation images for 10 classes "
                            "(fewer than 2 per class): it may not hold on the test images",)


def test_a_row_of_zeros_is_uniform_never_nan():
    p, y = miscalibrated(np.random.default_rng(3), n=50, c=4, scale=4.0)
    p[[0, 7]] = 0.0                      # every probability underflowed
    cal = C.calibrate(p, y, "temperature")
    assert all(np.isfinite([cal.log_loss_before, cal.log_loss_after, cal.log_loss_cross_fitted]))
    assert cal.method == "temperature" and cal.temperature != 1.0
    assert any("2 validation row(s)" in w for w in cal.warnings)
    q = cal.apply(p)
    assert np.isfinite(q).all() and np.allclose(q[0], 0.25)
    assert np.isfinite(log_loss(p, y)) and log_loss(p[:1], y[:1]) == pytest.approx(np.log(4))


def test_the_warnings_reach_the_lines_and_summary(dog_dir, tmp_path, capsys):
    labels = read_csv_labels(os.path.join(dog_dir, "labels.csv"))
    v_ids = sorted(labels)[:20]
    classes = sorted(set(labels.values()))
    y = np.array([classes.index(labels[i]) for i in v_ids])
    rng = np.random.default_rng(4)
    runs = []
    for k in range(2):                   # two members right on every validation image
        z = rng.normal(0, 1, (30, len(classes)))
        z[np.arange(20), y] += 6.0
        p = softmax(z)
        runs.append(_dog_run(tmp_path / f"m{k}", dog_dir, p[20:], v_ids, p[:20])[0])
    assert main(["ensemble", *runs, "--out", str(tmp_path / "ens")]) == 0
    s = json.load(open(tmp_path / "ens" / "summary.json"))
    assert s["calibration"]["method"] == "none" and s["calibration"]["fitted"] == C.T_RANGE[0]
    assert len(s["warnings"]) == 1 and s["warnings"][0].startswith("calibration: temperature 0.01")
    assert "warning: calibration: temperature 0.01" in capsys.readouterr().out
    # a run says it in its lines too (calibrate_stage)
    from d2lkaggle.compete.run import calibrate_stage
    said = []
    plan = SimpleNamespace(calibrate="temperature", calibrate_note="", out=str(tmp_path),
                           say=said.append)
    run = SimpleNamespace(plan=plan, valid_probs=softmax(np.eye(4)[np.arange(12) % 4] * 9),
                          data=SimpleNamespace(valid_iter=SimpleNamespace(labels=np.arange(12) % 4)))
    cal = calibrate_stage(run)
    assert cal.method == "none" and said[0].startswith("calibration: none (a temperature of 0.01")
    assert said[1].startswith("warning: calibration: temperature 0.01")
    assert json.load(open(tmp_path / "calibration.json"))["warnings"] == list(cal.warnings)
