"""The expected duration before the first epoch (every ``d2lkaggle run``), from a few timed
batches of a throwaway model scaled by the run's own counts — said, handed to the progress
line as its first ETA, and without changing the run — and the whole run's ETA on every epoch
line, rescaled by how long the run's parts really took."""
import io
import time

import numpy as np
import pytest

from conftest import is_installed
from d2lkaggle.train import estimate as E

needs_torch = pytest.mark.skipif(not is_installed("torch"), reason="needs torch")


@needs_torch
def test_estimate_is_said_and_changes_nothing(tmp_path):
    from d2lkaggle.compete.run import run_competition
    from d2lkaggle.data.demo import make_demo
    data = make_demo(str(tmp_path / "demo"), n_train=60, n_test=8, seed=0)
    runs = {}
    for estimate in (True, False):
        lines = []
        s = run_competition("demo", data, out=str(tmp_path / f"run-{estimate}"), epochs=1,
                            progress=False, log=lines.append, amp=False, estimate=estimate,
                            tta="flip", recipe="resnet18")   # (two phases: the retrain's too)
        runs[estimate] = (s, lines)
    said = [line for line in runs[True][1] if line.startswith("expected duration: ")]
    assert len(said) == 1 and not any("expected" in line for line in runs[False][1])
    # the run's own counts: 50 training images at the small-set batch 32 (drop_last: 1 batch)
    # validated on 10, 60 in the retrain; the predictions with their TTA views
    for part in ("train/valid 1 epoch × 1 batch of 32 + 10 validation images",
                 "validation predictions of 10 images × 2 TTA views",
                 "retrain 1 epoch × 1 batch of 32", "test predictions of 8 images × 2 TTA views",
                 "timed just now: a training batch of 32 took", "predicting an image with TTA flip"):
        assert part in said[0], (part, said[0])
    # every epoch line ends with the whole run's ETA, with or without the estimate
    for _, lines in runs.values():
        epochs = [line for line in lines if " epoch 1/1 " in line]
        assert len(epochs) == 2 and all(" run ETA " in line and " left)" in line
                                        for line in epochs), epochs
    # the throwaway model leaves the run as it would have been
    a, b = (np.load(str(tmp_path / f"run-{e}" / "test_probs.npy")) for e in (True, False))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_clock_total_and_eta_rescale_by_the_real_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(E.time, "monotonic", lambda: now[0])
    parts = [E.Part("features", once_s=10.0), E.Part("train/valid", epochs=4, epoch_s=5.0),
             E.Part("validation predictions", once_s=2.0),
             E.Part("retrain", epochs=4, epoch_s=5.0, start=2),   # resumed: 2 epochs left
             E.Part("test predictions", once_s=8.0)]
    clock = E.RunClock(parts, timed=True)
    assert clock.total() == 10 + 20 + 2 + 10 + 8
    assert "about 50 s" in clock.line("timed just now") and "retrain" in clock.line()
    clock.start()
    clock.begin("train/valid")
    assert clock.eta(0) == ""               # nothing done, no time gone: nothing to tell
    now[0] += 30.0                          # features + 1 epoch (15 s expected) took 30 s
    assert clock.left(1) == pytest.approx((15 + 2 + 10 + 8) * 2)
    assert clock.eta(1).startswith("run ETA ") and clock.eta(1).endswith("(70 s left)")
    clock.begin("retrain")
    now[0] += 17.0 + 5.0                    # 3 epochs + predictions, then a resumed epoch
    assert clock.left(3) == pytest.approx((5 + 8) * (52.0 / (50 - 13)))
    assert E.duration(59.6) == "60 s" and E.duration(125) == "2 min 05 s" and E.duration(0.4) == "< 1 s"
    assert E.duration(3 * 3600 + 300) == "3 h 05 min"


def test_first_batches_leave_the_loader_as_it_was():
    from d2lkaggle.data.loader import ArraySource, ImageLoader
    x = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    loader = ImageLoader(ArraySource(x), np.arange(10), 3, shuffle=True, drop_last=True, seed=4)
    first = E.FirstBatches(loader, 2)
    got = [y.tolist() for _, y in first]
    assert len(first) == 2 and got == [loader.labels[i].tolist() for i in loader.batch_indices(0)[:2]]
    assert loader.epoch == 0 and first.dist is None and first.batch_size == 3


def test_progress_eta_is_the_runs_average_rate(monkeypatch):
    from d2lkaggle.utils import progress as P
    now = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: now[0])
    bar = P.RunProgress(10, file=io.StringIO())
    bar.set_estimate(120)
    assert bar.bar.postfix.endswith("(estimated)")
    now[0] += 30          # one batch, after 29 s validating: 30 s for the first batch
    bar.update(1)
    done = time.strftime("%H:%M", time.localtime(1000.0 + 30 + 9 * 30))
    assert bar.bar.postfix == f"done at {done}"   # 9 batches left at 30 s each
    bar.close()
