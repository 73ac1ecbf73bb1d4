"""The whitened first layer (d2lkaggle.models.whitening) and the recipe fields around it."""
import numpy as np
import pytest

from d2lkaggle.models.whitening import patch_whitening, whiten_first_conv
from d2lkaggle.specs.competitions import get_competition, recipe_for
from d2lkaggle.specs.tricks import check_recipe, fit_tricks_to_model, fit_tricks_to_recipe

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _images(n=40, size=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3)).astype(np.float64)
    x[..., 1] = 0.7 * x[..., 0] + 0.3 * x[..., 1]     # correlated channels, as in real images
    return x.astype(np.uint8)


def test_filters_whiten_the_patches():
    x = _images()
    f = patch_whitening(x, MEAN, STD, kernel=3, n_filters=64, eps=0.0)
    assert f.shape == (54, 3, 3, 3) and f.dtype == np.float32   # 27 directions, ± each
    np.testing.assert_array_equal(f[27:], -f[:27])
    z = (x / 255.0 - MEAN) / STD
    p = np.lib.stride_tricks.sliding_window_view(z, (3, 3), axis=(1, 2)).reshape(-1, 27)
    out = p @ f[:27].reshape(27, 27).T          # the conv's responses to every patch
    cov = out.T @ out / len(p)
    np.testing.assert_allclose(cov, np.eye(27), atol=1e-3)   # decorrelated, unit variance


def test_fewer_filters_keep_the_largest_directions_and_the_rest_of_the_conv():
    x = _images()
    full = patch_whitening(x, MEAN, STD, n_filters=64)
    eight = patch_whitening(x, MEAN, STD, n_filters=16)
    np.testing.assert_allclose(eight[:8], full[:8], rtol=1e-6)
    state = {"conv1.weight": np.full((16, 3, 3, 3), 7, np.float32),
             "conv1.bias": np.full(16, 7, np.float32), "bn1.weight": np.ones(16, np.float32)}

    class Backend:   # the neutral-state calls every wing has
        @staticmethod
        def get_state(net):
            return {k: v.copy() for k, v in state.items()}

        @staticmethod
        def set_state(net, new, source, allow_missing):
            assert set(new) | set(allow_missing) == set(state) and source == "whitening"
            state.update(new)

    assert whiten_first_conv(Backend, None, "resnet18", x, MEAN, STD) == 16
    np.testing.assert_allclose(state["conv1.weight"], eight, rtol=1e-6)
    assert not state["conv1.bias"].any() and state["bn1.weight"].all()
    with pytest.raises(ValueError, match="whitened first layer is defined for resnet18"):
        whiten_first_conv(Backend, None, "cnn_elu", x, MEAN, STD)


def test_recipe_fields_checked_and_dropped_for_another_model():
    r = recipe_for(get_competition("cifar10"), "resnet18")
    assert r.whiten and r.bn_momentum == 0.4 and r.augment == "shift-flip"
    assert not recipe_for(get_competition("cifar10"), "book").whiten   # the chapter's: none
    other, note = fit_tricks_to_model(r.with_overrides(model="cnn_elu"))
    assert not other.whiten and other.bn_momentum is None
    assert note == ("--model cnn_elu: the recipe's whitened first layer and BatchNorm momentum "
                    "0.4 apply to airbench94, resnet18 only; cnn_elu trains without them")
    check_recipe(other)
    given, _ = fit_tricks_to_model(r.with_overrides(model="cnn_elu"), given={"whiten": True})
    with pytest.raises(ValueError, match="--whiten applies to a model with a stem convolution "
                                         "to whiten \\(resnet18, airbench94\\), not to --model "
                                         "cnn_elu"):
        check_recipe(given, given={"whiten"})
    with pytest.raises(ValueError, match="the recipe's whiten True applies to a model with a "
                                         "stem convolution"):
        check_recipe(given)
    with pytest.raises(ValueError, match=r"--bn-momentum must be in \(0, 1\]"):
        check_recipe(r.with_overrides(bn_momentum=1.5))
    # the default's (the speed-run record's) model-only tricks, for another model
    d = recipe_for(get_competition("cifar10"))
    assert (d.model, d.whiten, d.whiten_bias_epochs, d.bn_bias_lr) == ("airbench94", True, 3, 64.0)
    other, note = fit_tricks_to_model(d.with_overrides(model="cnn_elu"))
    assert not other.whiten and "whitened first layer" in note
    other, note = fit_tricks_to_recipe(other)
    assert (other.whiten_bias_epochs, other.bn_bias_lr) == (None, None)
    assert "whiten_bias_epochs 3" in note and "bn_bias_lr 64.0" in note
    check_recipe(other)
    with pytest.raises(ValueError, match="--whiten-bias-epochs applies to --model airbench94"):
        check_recipe(d.with_overrides(model="resnet18"), given={"whiten_bias_epochs"})
