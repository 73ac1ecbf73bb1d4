"""The library's airbench94 against the record's own code (the ``airbench`` package, run on
the CPU by tests/airbench_ref.py): the same initial weights, logits, optimizer step, whole
short runs (schedule, lookahead, the whitening bias frozen), the whitening filters from the
same patches and the TTA's output. docs/airbench.md lists what differs on purpose."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("airbench")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import airbench_ref as ref  # noqa: E402

from d2lkaggle.data.loader import ArraySource, ImageLoader  # noqa: E402
from d2lkaggle.models.table import from_airbench_names  # noqa: E402
from d2lkaggle.models.whitening import patch_whitening  # noqa: E402
from d2lkaggle.specs.competitions import AIRBENCH94_RECIPE  # noqa: E402
from d2lkaggle.specs.tricks import make_mixing, make_schedule, train_kwargs  # noqa: E402
from d2lkaggle.torch_impl import models as M  # noqa: E402
from d2lkaggle.torch_impl.train import predict as torch_predict  # noqa: E402
from d2lkaggle.torch_impl.train import train as torch_train  # noqa: E402
from d2lkaggle.torch_impl.weights import get_state, set_state  # noqa: E402

BATCH = 128


def _ours(seed: int):
    torch.manual_seed(seed)
    return M.airbench94(10)


def _state(net) -> dict[str, np.ndarray]:
    return from_airbench_names({k: v.detach().numpy().copy() for k, v in net.state_dict().items()})


def _rel(a: np.ndarray, b: np.ndarray, floor: float = 1e-12) -> float:
    """Largest difference relative to the largest entry of ``b`` (or to ``floor``)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


def _worst(ours: dict, theirs: dict) -> tuple[str, float]:
    """The tensor with the largest relative difference; a tensor whose entries are all below
    0.01 (the whitening bias after one step: 1e-3, a sum over 123,000 positions in float32)
    is compared relative to 0.01."""
    errs = {k: _rel(ours[k], theirs[k], 1e-2) for k in theirs}
    k = max(errs, key=errs.get)
    return k, errs[k]


def test_same_seed_gives_the_records_initial_weights():
    """Modules are made in airbench's order with its initialisation (torch's defaults, dirac
    on the first filters, zero biases): one torch seed gives the same weights, bit for bit."""
    theirs, ours = _state(ref.make_net(3)), get_state(_ours(3))
    assert sorted(theirs) == sorted(ours)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    frozen = {n for n, p in _ours(3).named_parameters() if not p.requires_grad}
    assert frozen == {from_airbench_names({n: 0}).popitem()[0]
                      for n, p in ref.make_net(3).named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_match(mode):
    theirs, ours = ref.make_net(0), _ours(1)
    set_state(ours, _state(theirs))     # the same weights (and BatchNorm statistics)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32))
    getattr(theirs, mode)(), getattr(ours, mode)()
    with torch.no_grad():
        a, b = ours(x).numpy(), theirs(x).numpy()
    assert _rel(a, b) <= 1e-5


def _data(tmp_path, n: int, seed: int = 0):
    x = ref.images(n, seed)
    y = np.random.default_rng(seed + 1).integers(0, 10, n)
    return x, y


def _our_loader(x, y, batch=BATCH):
    return ImageLoader(ArraySource(x), y, batch, shuffle=False, drop_last=True, mean=ref.MEAN,
                       std=ref.STD, num_workers=1)


def _train_ours(net, x, y, epochs, *, average=True, whiten_bias_epochs=3):
    """The library's airbench94 recipe (its own values, lr per example at this batch)."""
    r = AIRBENCH94_RECIPE.with_overrides(epochs=epochs, batch_size=BATCH,
                                         lr=AIRBENCH94_RECIPE.lr * BATCH / 1024,
                                         whiten_bias_epochs=whiten_bias_epochs)
    if not average:
        r = r.with_overrides(average="none")
    ld = _our_loader(x, y)
    kw = train_kwargs(r, make_schedule(r, r.epochs, len(ld)), make_mixing(r, 10))
    torch_train(net, ld, None, r.epochs, r.lr, r.wd, amp=False, progress=False, log=None, **kw)
    return net


def test_one_optimizer_step_matches(tmp_path):
    """Nesterov SGD on the batch-mean loss with the recipe's lr 1.5 × B/1024 and wd
    0.0153/11.5 (BatchNorm biases ×64 and ÷64) is airbench's step on its summed loss."""
    x, y = _data(tmp_path, BATCH)
    theirs = ref.make_net(0)
    w0 = _state(theirs)
    ab_loader = ref.loader(str(tmp_path / "ab"), x, y, train=True, batch_size=BATCH, aug={})
    filt = patch_whitening(x, ref.MEAN, ref.STD, kernel=2, n_filters=24, max_images=len(x))
    ref.train(ab_loader, theirs, 1, whitening=filt, lookahead=False)
    ours = _ours(1)
    set_state(ours, {**w0, "whiten.weight": filt})
    _train_ours(ours, x, y, 1, average=False)
    k, err = _worst(get_state(ours), _state(theirs))
    assert err <= 1e-5, (k, err)
    assert _rel(get_state(ours)["block1.norm1.bias"], w0["block1.norm1.bias"]) > 1e-3  # it moved


def test_short_run_matches_step_by_step(tmp_path):
    """Two epochs of three steps: the triangle schedule, lookahead at step 5 and the final
    average, and the whitening bias frozen after epoch 1 — the weights after the run."""
    x, y = _data(tmp_path, 3 * BATCH, seed=2)
    theirs = ref.make_net(5)
    w0 = _state(theirs)
    ab_loader = ref.loader(str(tmp_path / "ab"), x, y, train=True, batch_size=BATCH, aug={},
                           shuffle=False)
    filt = patch_whitening(x, ref.MEAN, ref.STD, kernel=2, n_filters=24, max_images=len(x))
    ref.train(ab_loader, theirs, 2, whitening=filt, whiten_bias_epochs=1)
    ours = _ours(0)
    set_state(ours, {**w0, "whiten.weight": filt})
    _train_ours(ours, x, y, 2, whiten_bias_epochs=1)
    k, err = _worst(get_state(ours), _state(theirs))
    assert err <= 1e-4, (k, err)


def test_whitening_filters_from_the_same_patches():
    """Our numpy filters are airbench's ``init_whitening_conv`` on the same normalised images,
    up to each eigenvector's sign (fixed here, free in LAPACK)."""
    x = ref.images(600, seed=4)
    conv = torch.nn.Conv2d(3, 24, 2)
    imgs = (torch.from_numpy(x).float() / 255).permute(0, 3, 1, 2)
    imgs = (imgs - torch.tensor(ref.MEAN).view(1, 3, 1, 1)) / torch.tensor(ref.STD).view(1, 3, 1, 1)
    import airbench.utils as abu
    abu.init_whitening_conv(conv, imgs)
    theirs = conv.weight.detach().numpy()
    ours = patch_whitening(x, ref.MEAN, ref.STD, kernel=2, n_filters=24, max_images=len(x))
    assert ours.shape == theirs.shape == (24, 3, 2, 2)
    for i in range(12):
        s = np.sign(np.sum(ours[i] * theirs[i]))
        assert _rel(ours[i], s * theirs[i]) <= 1e-3, i
        assert _rel(ours[i + 12], s * theirs[i + 12]) <= 1e-3, i


def test_tta_output_matches(tmp_path):
    """``tta="flip-shift"``: airbench's ``infer(..., tta_level=2)`` logits, as probabilities."""
    import airbench.utils as abu
    x, y = _data(tmp_path, 40, seed=6)
    theirs = ref.make_net(0)
    theirs.train()
    with torch.no_grad():   # BatchNorm statistics that are not the initial ones
        theirs(torch.from_numpy(np.random.default_rng(1).normal(size=(64, 3, 32, 32))
                                .astype(np.float32)))
    test = ref.loader(str(tmp_path / "ab"), x, y, train=False, batch_size=2000)
    with torch.no_grad():
        logits = abu.infer(theirs, test, tta_level=2).numpy()
    expected = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    ours = _ours(1)
    set_state(ours, _state(theirs))
    probs = torch_predict(ours, ImageLoader(ArraySource(x), y, 16, mean=ref.MEAN, std=ref.STD),
                      tta="flip-shift")
    assert np.abs(probs - expected).max() <= 1e-5
    assert (probs.argmax(1) == logits.argmax(1)).all()

