"""The core's optimizer definitions (framework-free): names, checks, no-decay groups, the
numpy reference of torch's rules, soft/int targets — and, with torch installed, the reference
against torch.optim itself."""
import importlib.util
import math

import numpy as np
import pytest

from d2lkaggle.train import optim
from d2lkaggle.train.optim import OptimizerSpec, make_spec


def test_names_and_nesterov_normalised():
    assert optim.OPTIMIZERS == ("sgd", "nesterov", "adam", "adamw")
    s = make_spec("nesterov", lr=0.1, momentum=0.9)
    assert s.name == "sgd" and s.nesterov and s.label == "nesterov" and s.slots == ("momentum",)
    assert make_spec("ADAMW").slots == ("exp_avg", "exp_avg_sq", "step")
    spec = OptimizerSpec("adam", lr=1e-3)
    assert make_spec(spec) is spec


@pytest.mark.parametrize("kw, words", [
    ({"optimizer": "rmsprop"}, ["'rmsprop'", "sgd, nesterov, adam, adamw"]),
    ({"optimizer": "sgd", "lr": -1}, ["lr", "-1"]),
    ({"optimizer": "sgd", "wd": float("nan")}, ["wd"]),
    ({"optimizer": "sgd", "momentum": 1.0}, ["momentum", "< 1"]),
    ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, ["Nesterov", "momentum > 0"]),
    ({"optimizer": "adam", "nesterov": True}, ["nesterov", "adam"]),
    ({"optimizer": "adam", "betas": (0.9, 1.0)}, ["betas[1]", "[0, 1)"]),
    ({"optimizer": "adam", "betas": (0.9,)}, ["betas"]),
    ({"optimizer": "adam", "eps": -1e-8}, ["eps"]),
    ({"optimizer": "adamw", "wd_exclude": "bn"}, ["'bn'", "bn_bias"]),
])
def test_bad_settings_are_one_clear_error(kw, words):
    opt = kw.pop("optimizer")
    with pytest.raises(ValueError) as e:
        make_spec(opt, **kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


SHAPES = {"conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,), "bn1.weight": (8,), "bn1.bias": (8,),
          "ln.weight": (16,), "fc.weight": (10, 16), "fc.bias": (10,), "bias": (3,)}


def test_timm_no_decay_groups():
    spec = make_spec("adamw", wd=0.05, wd_exclude="bn_bias")
    groups = optim.decay_groups(SHAPES, spec)
    assert groups == [(0.05, ["conv1.weight", "fc.weight"]),
                      (0.0, ["conv1.bias", "bn1.weight", "bn1.bias", "ln.weight", "fc.bias", "bias"])]
    # without the exclusion, or with no decay at all, one group
    assert optim.decay_groups(SHAPES, make_spec("adamw", wd=0.05)) == [(0.05, list(SHAPES))]
    assert optim.decay_groups(SHAPES, make_spec("sgd", wd_exclude="bn_bias")) == [(0.0, list(SHAPES))]
    assert optim.weight_decay_of(SHAPES, spec)["bn1.weight"] == 0.0


def _run(spec, lrs, wd=None, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 3))
    state, ws = {}, []
    for lr in lrs:
        w = optim.reference_step(spec, w, rng.normal(size=w.shape), state, lr, wd)
        ws.append(w)
    return ws, state


def test_reference_known_values():
    # one step from zero state, written out by hand
    w, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    st = {}
    w1 = optim.reference_step(make_spec("sgd", wd=0.1, momentum=0.9), w, g, st, 0.1)
    assert np.allclose(w1, w - 0.1 * (g + 0.1 * w)) and np.allclose(st["momentum"], g + 0.1 * w)
    st = {}
    w1 = optim.reference_step(make_spec("nesterov", momentum=0.9), w, g, st, 0.1)
    assert np.allclose(w1, w - 0.1 * (g + 0.9 * g))
    # Adam's first step is lr·sign(g) (up to eps): bias correction makes m̂ = g, v̂ = g²
    st = {}
    w1 = optim.reference_step(make_spec("adam", eps=0.0), w, g, st, 0.01)
    assert np.allclose(w1, w - 0.01 * np.sign(g)) and int(st["step"]) == 1
    # AdamW decays first, outside the moments
    st = {}
    w1 = optim.reference_step(make_spec("adamw", wd=0.5, eps=0.0), w, g, st, 0.01)
    assert np.allclose(w1, w * (1 - 0.01 * 0.5) - 0.01 * np.sign(g))
    assert np.allclose(st["exp_avg"], 0.1 * g)
    # eps sits after the square root of the bias-corrected second moment
    st = {"exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(2), "step": np.array(0.0)}
    w1 = optim.reference_step(make_spec("adam", eps=1e-2), w, g, st, 0.01)
    assert np.allclose(w1, w - 0.01 * g / (np.abs(g) + 1e-2))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw"])
def test_reference_is_torch_optim(name):
    import torch
    spec = make_spec(name, wd=0.05, momentum=0.9, eps=1e-6)
    lrs = [0.1, 0.05, 0.2, 0.01, 0.3]
    ws, state = _run(spec, lrs)
    rng = np.random.default_rng(0)
    p = torch.nn.Parameter(torch.tensor(rng.normal(size=(4, 3))))
    kw = dict(weight_decay=0.05)
    if name in ("sgd", "nesterov"):
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=spec.nesterov, **kw)
    else:
        opt = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)([p], lr=0.1, eps=1e-6, **kw)
    for lr, w in zip(lrs, ws):
        for g in opt.param_groups:
            g["lr"] = lr
        p.grad = torch.tensor(rng.normal(size=(4, 3)))
        opt.step()
        assert np.abs(p.detach().numpy() - w).max() <= 1e-12 * np.abs(w).max()
    if name in ("adam", "adamw"):
        assert float(opt.state[p]["step"]) == float(state["step"]) == len(lrs)
        assert np.allclose(opt.state[p]["exp_avg_sq"].numpy(), state["exp_avg_sq"], rtol=1e-12)


def test_split_targets():
    soft, hard = optim.split_targets(np.array([2, 0, 1]))
    assert soft is None and hard.dtype == np.int64 and hard.tolist() == [2, 0, 1]
    y = np.array([[0.3, 0.7], [0.6, 0.4]], np.float32)
    soft, hard = optim.split_targets(y, 2)
    assert soft is not None and hard.tolist() == [1, 0]
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        optim.split_targets(np.ones((3, 2), np.float32), 2)
    with pytest.raises(ValueError, match="int labels"):
        optim.split_targets(np.array([0.5, 1.5]))


def test_checkpoint_state_checked():
    assert optim.state_key("fc.weight", "exp_avg") == "optim/fc.weight/exp_avg"
    with pytest.raises(ValueError, match=r"shape of optim/fc.weight/exp_avg: model \(2, 3\), file \(3, 2\)"):
        optim.check_state_shape("optim/fc.weight/exp_avg", np.zeros((3, 2)), (2, 3))
    with pytest.raises(ValueError, match="step count"):
        optim.check_state_shape("optim/fc.weight/step", np.array(-1.0), (2, 3))
    assert optim.steps_in({"optim/a/step": np.array(3.0)}, ["a", "b"]) == {"a": 3, "b": 0}
    assert math.isclose(float(optim.check_state_shape("optim/a/step", np.array(7.0), (2,))), 7.0)


def test_parity_cli_flags(capsys):
    from d2lkaggle.cli import build_parser
    a = build_parser().parse_args(["parity", "--optimizer", "adam", "--optimizer", "adamw", "--mixing"])
    assert a.optimizer == ["adam", "adamw"] and a.mixing and a.model == "resnet18"
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["parity", "--optimizer", "rmsprop"])
    assert e.value.code == 2 and "adamw" in capsys.readouterr().err


def test_parity_inputs_cyclic_and_mixing():
    from d2lkaggle.models.parity import cyclic_lrs, mix_batches
    lrs = cyclic_lrs(0.01, 10)
    if importlib.util.find_spec("torch") is not None:   # the same rates as torch's CyclicLR
        import torch
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        sched = torch.optim.lr_scheduler.CyclicLR(opt, 0.005, 0.02, step_size_up=2,
                                                  mode="triangular2", cycle_momentum=False)
        ref = []
        for _ in range(10):
            ref.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert np.allclose(lrs, ref, rtol=1e-12)
    assert lrs[:3] == pytest.approx([0.005, 0.0125, 0.02])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 5, (2, 4))
    xm, ym = mix_batches(x, y, 5)
    xm2, ym2 = mix_batches(x, y, 5)
    assert xm.dtype == np.float32 and ym.shape == (2, 4, 5) and np.array_equal(xm, xm2)
    assert np.allclose(ym.sum(-1), 1) and not np.array_equal(xm, x.astype(np.float32))
