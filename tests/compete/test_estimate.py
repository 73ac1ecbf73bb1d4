"""``estimate=True`` (``d2lkaggle demo``): the expected duration before the first epoch, from a
few timed batches of a throwaway model — said, handed to the progress line as its first ETA,
and without changing the run; the progress line's ETA is the whole run's average rate."""
import io
import time

import numpy as np
import pytest

from conftest import is_installed


@pytest.mark.skipif(not is_installed("torch"), reason="needs torch")
def test_estimate_is_said_and_changes_nothing(tmp_path):
    from d2lkaggle.compete.run import run_competition
    from d2lkaggle.data.demo import make_demo
    data = make_demo(str(tmp_path / "demo"), n_train=60, n_test=8, seed=0)
    runs = {}
    for estimate in (True, False):
        lines = []
        s = run_competition("demo", data, out=str(tmp_path / f"run-{estimate}"), epochs=1,
                            progress=False, log=lines.append, amp=False, estimate=estimate)
        runs[estimate] = (s, lines)
    said = [line for line in runs[True][1] if line.startswith("expected duration: about ")]
    assert len(said) == 1 and not any("expected" in line for line in runs[False][1])
    # 54 training images at the small-set batch 32 (drop_last: 1 batch), 60 in the retrain
    assert "2 phases of 1 epoch: 2 training batches" in said[0], said
    assert "took" in said[0] and " s just now" in said[0], said
    # the throwaway model leaves the run as it would have been
    a, b = (np.load(str(tmp_path / f"run-{e}" / "test_probs.npy")) for e in (True, False))
    np.testing.assert_allclose(a, b, atol=1e-6)


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
