"""Schedules lr(t): known values always, and whole-run curves against torch's own schedulers."""
import importlib.util
import json
import math

import numpy as np
import pytest

from d2lkaggle.train import loop
from d2lkaggle.train import schedules as S

from conftest import NumpyStep, run_py

E, N = 6, 7  # epochs, batches per epoch of the compared runs
TS = [e + b / N for e in range(E) for b in range(N)]
LOSSES = [1.0, 0.9, 0.95, 0.92, 0.91, 0.5]  # the plateau's validation losses, one per epoch


def ours() -> dict[str, list[float]]:
    curves = {
        "step": [S.step_lr(0.1, 2, 0.5)(t) for t in TS],
        "multistep": [S.multistep(0.1, [2, 5], 0.3)(t) for t in TS],
        "onecycle": [S.onecycle(0.2, E, N, pct_start=0.5)(t) for t in TS],
        "onecycle3": [S.onecycle(0.2, E, N, pct_start=0.3, div_factor=10, final_div_factor=100,
                                 three_phase=True)(t) for t in TS],
        "cosine": [S.cosine(0.1, E, warmup=2, min_lr=1e-3, warmup_start=0.2)(t) for t in TS],
    }
    for mode in S.CYCLE_MODES:
        f = S.cyclic(0.01, 0.1, N, step_size_up=5, step_size_down=3, mode=mode, gamma=0.97)
        curves["cyclic_" + mode] = [f(t) for t in TS]
    p = S.plateau(0.1, factor=0.5, patience=1, cooldown=1)
    curves["plateau"] = []
    for e in range(E):
        curves["plateau"] += [p(e + b / N) for b in range(N)]
        p.observe(LOSSES[e])
    return curves


TORCH = r"""
import json, sys, torch
E, N = int(sys.argv[1]), int(sys.argv[2])
LOSSES = json.loads(sys.argv[3])
def run(make, lr, per_batch=True, metric=False):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    s = make(opt)
    out = []
    for e in range(E):
        for b in range(N):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_batch:
                s.step()
        if not per_batch:
            s.step(LOSSES[e]) if metric else s.step()
    return out
L = torch.optim.lr_scheduler
c = {
 "step": run(lambda o: L.StepLR(o, 2, 0.5), 0.1, False),
 "multistep": run(lambda o: L.MultiStepLR(o, [2, 5], 0.3), 0.1, False),
 "onecycle": run(lambda o: L.OneCycleLR(o, 0.2, epochs=E, steps_per_epoch=N, pct_start=0.5,
                                        cycle_momentum=False), 0.2),
 "onecycle3": run(lambda o: L.OneCycleLR(o, 0.2, total_steps=E * N, pct_start=0.3, div_factor=10,
                                         final_div_factor=100, three_phase=True,
                                         cycle_momentum=False), 0.2),
 "cosine": run(lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.2, 1.0, total_iters=2 * N),
                                            L.CosineAnnealingLR(o, T_max=E * N - 2 * N,
                                                                eta_min=1e-3)],
                                        milestones=[2 * N]), 0.1),
 "plateau": run(lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=1), 0.1,
                False, True),
}
for mode in ("triangular", "triangular2", "exp_range"):
    c["cyclic_" + mode] = run(lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=5, step_size_down=3,
                                                   mode=mode, gamma=0.97, cycle_momentum=False), 0.01)
print(json.dumps(c))
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_whole_run_curves_equal_torchs_schedulers():
    r = run_py(TORCH, str(E), str(N), json.dumps(LOSSES), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = json.loads(r.stdout.strip().splitlines()[-1])
    mine = ours()
    assert set(theirs) == set(mine)
    for name in mine:
        np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_known_values():
    c = ours()
    # StepLR per epoch: today's numbers
    assert c["step"][:N] == [0.1] * N and c["step"][2 * N] == 0.05 and c["step"][-1] == 0.025
    assert c["multistep"][2 * N - 1] == 0.1 and c["multistep"][2 * N] == pytest.approx(0.03)
    assert c["multistep"][-1] == pytest.approx(0.009)
    # one-cycle: max_lr/25 at the start, max_lr at step pct*total - 1, /25/1e4 at the end
    oc = c["onecycle"]
    assert oc[0] == pytest.approx(0.2 / 25) and max(oc) == pytest.approx(0.2)
    assert int(np.argmax(oc)) == round(0.5 * E * N - 1) and oc[-1] == pytest.approx(0.2 / 25 / 1e4)
    # cyclic: base at 0, max after step_size_up, back to base after a whole cycle
    tri, tri2 = c["cyclic_triangular"], c["cyclic_triangular2"]
    assert tri[0] == pytest.approx(0.01) and tri[5] == pytest.approx(0.1) and tri[8] == pytest.approx(0.01)
    assert tri2[13] == pytest.approx(0.01 + 0.09 / 2)  # second cycle's peak is half as high
    assert c["cyclic_exp_range"][5] == pytest.approx(0.01 + 0.09 * 0.97 ** 5)
    # cosine: warm-up from 0.2*lr, lr at the end of warm-up, min_lr approached at the end
    cos = S.cosine(0.1, E, warmup=2, min_lr=1e-3, warmup_start=0.2)
    assert cos(0) == pytest.approx(0.02) and cos(2) == pytest.approx(0.1)
    assert cos(E) == pytest.approx(1e-3) and cos(1) == pytest.approx(0.06)
    # plateau: improvements at epochs 1, 2; two bad epochs (> patience 1) halve the rate
    pl = c["plateau"][::N]
    assert pl == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_plateau_state_survives_resume(blobs, tmp_path):
    from test_loop import loaders
    x, y = blobs

    def make():
        return S.plateau(0.3, factor=0.5, patience=0, threshold=10, threshold_mode="abs")  # never better

    full, p_full = NumpyStep(192, 4), make()
    h_full = loop.fit(full, *loaders(x, y), 4, p_full, progress=False, log=None,
                      checkpoint_dir=str(tmp_path / "a"))
    first = NumpyStep(192, 4)
    loop.fit(first, *loaders(x, y), 2, make(), progress=False, log=None,
             checkpoint_dir=str(tmp_path / "b"))
    second, p2 = NumpyStep(192, 4, seed=9), make()
    h_res = loop.fit(second, *loaders(x, y), 4, p2, progress=False, log=None,
                     checkpoint_dir=str(tmp_path / "b"), resume=True)
    assert h_res.column("lr") == h_full.column("lr") and h_full.column("lr") == [0.3, 0.3, 0.15, 0.075]
    assert p2.state_dict() == p_full.state_dict()
    np.testing.assert_array_equal(second.w, full.w)


def test_per_batch_rates_and_history_first_last(blobs):
    from test_loop import loaders
    x, y = blobs
    tr, va = loaders(x, y)  # 8 batches per epoch
    step = NumpyStep(192, 4)
    f = S.onecycle(0.5, 3, len(tr))
    h = loop.fit(step, tr, va, 3, f, progress=False, log=None)
    assert step.lrs == pytest.approx([f(e + b / 8) for e in range(3) for b in range(8)])
    assert h.column("lr") == pytest.approx([f(0), f(1), f(2)])
    assert h.column("lr_last") == pytest.approx([f(7 / 8), f(1 + 7 / 8), f(2 + 7 / 8)])


def test_bad_rate_is_an_error_before_training(blobs):
    from test_loop import loaders
    x, y = blobs
    step = NumpyStep(192, 4)
    with pytest.raises(ValueError, match=r"schedule .*bad.* gives learning rate nan at t=1\.5"):
        def bad(t):
            return math.nan if t >= 1.5 else 0.1
        loop.fit(step, *loaders(x, y, bs=32), 3, bad, progress=False, log=None)
    assert step.lrs == []  # not one batch trained
    with pytest.raises(ValueError, match="cyclic: max_lr"):
        S.cyclic(0.1, -1.0, 10)
    with pytest.raises(ValueError, match="mode must be one of"):
        S.cyclic(0.1, 1.0, 10, mode="sine")
    with pytest.raises(ValueError, match="warmup"):
        S.cosine(0.1, 5, warmup=5)
    with pytest.raises(ValueError, match="milestones"):
        S.multistep(0.1, [0])
