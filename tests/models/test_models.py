"""The model table: core architecture rows, and every model in every backend (own subprocess).

Each backend builds every table model, trains it a few steps on tiny inputs, checks the
stochastic-depth semantics (per-example drop, 1/(1-p) scaling, identity in eval), the
EfficientNetV2 head replacement and the ImageNet-file errors; the tests compare the results
with the core table and with the torch backend's names and shapes.
"""
import json
import os

import numpy as np
import pytest

from conftest import backend_params, run_cli, run_py
from d2lkaggle.models import table
from d2lkaggle.models import weights as neutral
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.utils.registry import is_installed

# ----------------------------------------------------------------------------- core (no framework)


def test_stochastic_depth_rates_grow_linearly_like_torchvision():
    assert table.stochastic_depth_rates(0.2, 4) == [0.0, 0.05, 0.1, 0.15000000000000002]
    assert table.stochastic_depth_rates(0.0, 3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        table.stochastic_depth_rates(1.0, 3)


def test_resnet_tables():
    r18 = table.resnet18_blocks(16, drop_path=0.1)
    assert [(b.in_channels, b.out_channels, b.stride, b.shortcut) for b in r18] == [
        (16, 16, 1, False), (16, 16, 1, False), (16, 32, 2, True), (32, 32, 1, False),
        (32, 64, 2, True), (64, 64, 1, False), (64, 128, 2, True), (128, 128, 1, False)]
    assert [b.drop_path for b in r18] == table.stochastic_depth_rates(0.1, 8)
    r34 = table.resnet34_blocks()
    assert len(r34) == 16 and sum(b.shortcut for b in r34) == 3 and r34[-1].out_channels == 512


def test_efficientnet_v2_tables():
    s = table.efficientnet_v2_blocks("efficientnet_v2_s", 0.2)
    assert len(s) == 40 and s[0].drop_path == 0.0 and s[-1].drop_path == pytest.approx(0.2 * 39 / 40)
    assert s[0] == table.MBBlock(1, 0, True, 24, 24, 24, 3, 1, 0, True, 0.0)   # fused, no expansion
    first_mb = next(b for b in s if not b.fused)
    assert (first_mb.in_channels, first_mb.expanded, first_mb.squeeze, first_mb.stride) == (64, 256, 16, 2)
    assert not first_mb.residual and s[-1].residual
    assert len(table.efficientnet_v2_blocks("efficientnet_v2_m")) == 57
    assert len(table.efficientnet_v2_blocks("efficientnet_v2_l")) == 79
    assert table.efficientnet_v2_head("efficientnet_v2_l") == (32, 640, 1280)
    with pytest.raises(ValueError, match="efficientnet_v2_s"):
        table.efficientnet_v2_blocks("efficientnet_v2_xl")


def test_cnn_elu_table():
    assert table.CNN_ELU.flat_features(32) == 4096   # the write-up's 64·8·8
    assert table.CNN_ELU.flat_features(64) == 64 * 16 * 16
    kinds = [k for k, _, _ in table.CNN_ELU.layer_names()]
    assert kinds == ["conv", "elu", "bn", "conv", "elu", "bn", "pool", "conv", "elu", "bn", "pool"]
    with pytest.raises(ValueError, match="divisible by 4"):
        table.CNN_ELU.flat_features(30)


def test_unknown_model_and_keyword_list_the_valid_ones():
    with pytest.raises(ValueError) as e:
        table.check_model_name("effnet")
    assert all(n in str(e.value) for n in table.MODEL_NAMES)

    def resnet18(num_classes, in_channels=3, width=64, drop_path=0.0):
        return (num_classes, width, drop_path)
    assert table.create({"resnet18": resnet18}, "resnet18", 10, width=8) == (10, 8, 0.0)
    with pytest.raises(ValueError, match="its arguments: in_channels, width, drop_path"):
        table.create({"resnet18": resnet18}, "resnet18", 10, depth=3)
    with pytest.raises(ValueError, match="resnet34, efficientnet_v2_s"):
        table.check_finetune_arch("vgg16")


def test_recipe_kwargs():
    from d2lkaggle.models.build import recipe_kwargs
    assert recipe_kwargs(get_competition("demo").recipe) == {"width": 32}   # airbench94's own 0.4
    assert recipe_kwargs(get_competition("demo").recipe.with_overrides(bn_momentum=0.2)) == {
        "width": 32, "bn_momentum": 0.2}
    from d2lkaggle.specs.competitions import RESNET18_DEMO as demo
    assert recipe_kwargs(demo) == {"in_channels": 3, "width": 16, "bn_momentum": 0.4}
    from dataclasses import replace   # the book's BatchNorm: no keyword, the model's 0.1
    assert recipe_kwargs(replace(demo, bn_momentum=None)) == {"in_channels": 3, "width": 16}
    dog = get_competition("dog-breed").recipe
    assert recipe_kwargs(dog) == {"weights": "imagenet", "hidden": 256}
    assert recipe_kwargs(demo.with_overrides(model="cnn_elu"), 64) == {"image_size": 64}
    assert recipe_kwargs(demo.with_overrides(model="efficientnet_v2_s")) == {"weights": None}


def test_fit_classifier_replaces_another_number_of_classes():
    state = {"features.0.weight": np.zeros((4, 3)), "classifier.1.weight": np.zeros((1000, 8)),
             "classifier.1.bias": np.zeros(1000)}
    same = {"features.0.weight": (4, 3), "classifier.1.weight": (1000, 8), "classifier.1.bias": (1000,)}
    kept, msg = neutral.fit_classifier(state, same, "classifier.", "f")
    assert msg is None and set(kept) == set(state)
    other = dict(same, **{"classifier.1.weight": (10, 8), "classifier.1.bias": (10,)})
    kept, msg = neutral.fit_classifier(state, other, "classifier.", "f")
    assert set(kept) == {"features.0.weight"}
    assert "(1000, 8) in the file, (10, 8) in the model" in msg and "replaced" in msg


def test_imagenet_file_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = os.path.join(str(tmp_path), "hub", "checkpoints")
    with pytest.raises(RuntimeError) as e:
        neutral.imagenet_file("efficientnet_v2_m", "Paddle")
    assert "efficientnet_v2_m-dc08266a.pth" in str(e.value) and folder in str(e.value)
    assert "https://download.pytorch.org/models/efficientnet_v2_m-dc08266a.pth" in str(e.value)
    os.makedirs(folder)
    open(os.path.join(folder, "efficientnet_v2_m-dc08266a.safetensors"), "wb").close()
    assert neutral.imagenet_file("efficientnet_v2_m", "Paddle").endswith(".safetensors")


def test_cli_model_flag(tmp_path):
    from d2lkaggle.cli import build_parser
    a = build_parser().parse_args(["run", "demo", "--data-dir", "d", "--model", "cnn_elu"])
    assert a.model == "cnn_elu"
    assert build_parser().parse_args(["demo"]).model is None   # the recipe's model
    r = run_cli("run", "demo", "--data-dir", str(tmp_path), "--model", "effnet")
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "unknown model 'effnet'" in line and "efficientnet_v2_s" in line and "cnn_elu" in line


# ----------------------------------------------------------------------------- every backend

SCRIPT = r"""
import importlib, json, os, shutil, sys, time, warnings
import numpy as np
import d2lkaggle
from d2lkaggle.models import table
name, tmp = sys.argv[1], sys.argv[2]
B = d2lkaggle.get_backend(name)
M = importlib.import_module(f"d2lkaggle.{name}_impl.models")
out = {"list": B.list_models(), "seconds": {}}
T0 = [time.perf_counter()]

def lap(what):   # where the time goes (this test must stay cheap)
    t = time.perf_counter()
    out["seconds"][what] = round(t - T0[0], 1)
    T0[0] = t

try:
    B.create_model("effnet", 3)
except ValueError as e:
    out["unknown"] = str(e)

def sd(p, x, train):
    # the backend's stochastic-depth layer in train or eval mode
    if name == "torch":
        import torch
        layer = M.StochasticDepth(p, "row")
        layer.train(train)
        return layer(torch.from_numpy(x)).numpy()
    if name == "mxnet":
        from mxnet import autograd, np as mnp
        layer = M.StochasticDepth(p)
        with (autograd.train_mode() if train else autograd.predict_mode()):
            return layer(mnp.array(x)).asnumpy()
    import paddle
    layer = M.StochasticDepth(p)
    layer.train() if train else layer.eval()
    return layer(paddle.to_tensor(x)).numpy()

B.set_seed(0)
x = np.ones((4000, 2, 3, 3), np.float32)
t = sd(0.3, x, True).reshape(4000, -1)
out["sd_rows_constant"] = bool((t == t[:, :1]).all())
out["sd_values"] = sorted({round(float(v), 5) for v in np.unique(t)})
out["sd_kept"] = float((t[:, 0] > 0).mean())
out["sd_eval_identity"] = bool(np.array_equal(sd(0.3, x, False), x))

def rates(net, blocks, attr):
    return [float(getattr(getattr(getattr(net, f"layer{b.stage + 1}")[b.index], attr) or 0, "p", 0.0))
            for b in blocks]

# drop path on the ResNets: rates per block, no new parameters, identity in eval
B.set_seed(0)
plain, dp = B.resnet18(4, 3, 8), B.resnet18(4, 3, 8, drop_path=0.5)
out["r18_rates"] = rates(dp, table.resnet18_blocks(8, 0.5), "drop_path")
out["r18_same_names"] = sorted(B.get_state(plain)) == sorted(B.get_state(dp))
B.set_state(dp, B.get_state(plain))
xi = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
out["r18_eval_diff"] = float(np.abs(B.forward(plain, xi) - B.forward(dp, xi)).max())
r34 = B.resnet34(10, drop_path=0.2)
out["r34_rates"] = rates(r34, table.resnet34_blocks(0.2), "stochastic_depth")
out["r34_names"] = sorted(B.get_state(r34)) == sorted(B.get_state(B.resnet34(10)))
lap("drop_path")

# every table model trains a few steps (32 px, tiny batches)
rng = np.random.default_rng(1)
runs = {"resnet18": ({"width": 8, "drop_path": 0.2}, 4, 2), "resnet34": ({"drop_path": 0.1}, 2, 1),
        "cnn_elu": ({}, 4, 2), "efficientnet_v2_s": ({}, 2, 2),
        "finetune": ({"arch": "efficientnet_v2_s", "freeze": True}, 2, 1)}
out["trained"] = {}
for model, (kw, bs, steps) in runs.items():
    B.set_seed(0)
    net = B.create_model(model, 3, **kw)
    before = B.get_state(net)
    step = B.Step(net, lr=0.01, amp=False)
    losses = [step.train_batch(rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8),
                               rng.integers(0, 3, bs))[0] / bs for _ in range(steps)]
    after = B.get_state(net)
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    out["trained"][model] = {"losses": losses, "changed": changed, "n": len(before)}
    lap("train " + model)
out["cnn_elu_names"] = {k: list(v.shape) for k, v in B.get_state(B.cnn_elu(10)).items()}

# EfficientNetV2: names and shapes (what loading checks), M and L build and run at 32 px
out["effnet_names"] = {}
for arch in ("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"):
    net = B.create_model(arch, 7)
    out["effnet_names"][arch] = {k: list(v.shape) for k, v in B.get_state(net).items()}
    out[arch + "_out"] = list(B.forward(net, xi[:1]).shape)
    del net
    lap(arch)

# a file for another number of classes: the head is replaced, said once, the rest loaded
src = B.efficientnet_v2_s(5, stochastic_depth=0.1)
path = os.path.join(tmp, "e5.safetensors")
B.save_weights(src, path)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    net = B.efficientnet_v2_s(3, weights=path)
msgs = [str(w.message) for w in caught if "head is replaced" in str(w.message)]
out["head_warnings"] = msgs
a, b = B.get_state(src), B.get_state(net)
out["head_shape"] = list(b["classifier.1.weight"].shape)
out["body_equal"] = all(np.array_equal(a[k], b[k]) for k in a if not k.startswith("classifier."))
if name == "torch":   # a torchvision-style .pth, converted once to a neutral file, loads back
    from d2lkaggle.models.weights import convert
    B.save_weights(src, os.path.join(tmp, "e5.pth"))
    convert(os.path.join(tmp, "e5.pth"), os.path.join(tmp, "e5c.npz"))
    back = B.efficientnet_v2_s(5, weights=os.path.join(tmp, "e5c.npz"))
    out["converted_equal"] = all(np.array_equal(a[k], v) for k, v in B.get_state(back).items())
lap("head")

# "imagenet": torchvision's download (torch) or torch's cache folder (the others)
try:
    if name == "torch":
        import torchvision
        def offline(*a, **k):
            raise OSError("Temporary failure in name resolution")
        torchvision.models.EfficientNet_V2_S_Weights.get_state_dict = offline
    B.finetune_net(3, weights="imagenet", arch="efficientnet_v2_s")
    out["imagenet_error"] = None
except RuntimeError as e:
    out["imagenet_error"] = str(e)
if name != "torch":
    folder = os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(path, os.path.join(folder, "efficientnet_v2_s-dd5fe13b.safetensors"))
    with warnings.catch_warnings(record=True):
        ft = B.finetune_net(3, weights="imagenet", arch="efficientnet_v2_s", freeze=False)
    c = B.get_state(ft)
    out["imagenet_cache_loaded"] = all(np.array_equal(a[k], c[k]) for k in a if not k.startswith("classifier."))
lap("imagenet")
print(json.dumps(out))
"""


def run_models(backend, tmp_path):
    home = tmp_path / "torch_home"
    home.mkdir()
    r = run_py(SCRIPT, backend, str(tmp_path), env={"TORCH_HOME": str(home)}, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    if not is_installed("torch"):
        pytest.skip("torch (the reference backend) is not installed")
    return run_models("torch", tmp_path_factory.mktemp("torch"))


@pytest.mark.parametrize("backend", backend_params())
def test_models_in_backend(backend, tmp_path, torch_models):
    res = torch_models if backend == "torch" else run_models(backend, tmp_path)
    print(backend, res["seconds"])
    assert res["list"] == list(table.MODEL_NAMES)
    assert "efficientnet_v2_s" in res["unknown"] and "effnet" in res["unknown"]
    # stochastic depth, "row" mode: a whole example is dropped or kept and scaled by 1/(1-p)
    assert res["sd_rows_constant"] and res["sd_values"] == [0.0, round(1 / 0.7, 5)]
    assert abs(res["sd_kept"] - 0.7) < 4 * np.sqrt(0.7 * 0.3 / 4000)
    assert res["sd_eval_identity"]
    assert res["r18_rates"] == pytest.approx(table.stochastic_depth_rates(0.5, 8))
    assert res["r34_rates"] == pytest.approx(table.stochastic_depth_rates(0.2, 16))
    assert res["r18_same_names"] and res["r34_names"] and res["r18_eval_diff"] == 0.0
    for model, t in res["trained"].items():
        assert all(np.isfinite(t["losses"])), (model, t)
        if model == "finetune":   # frozen EfficientNetV2: only the classifier moves
            assert t["changed"] == ["classifier.1.bias", "classifier.1.weight"], t["changed"]
        else:
            assert len(t["changed"]) > 0.9 * t["n"], (model, len(t["changed"]), t["n"])
    for arch in ("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"):
        assert res[arch + "_out"] == [1, 7]
    assert len(res["head_warnings"]) == 1, res["head_warnings"]
    assert res["head_shape"] == [3, 1280] and res["body_equal"]
    err = res["imagenet_error"]
    assert err and "efficientnet_v2_s-dd5fe13b.pth" in err and "checkpoints" in err
    if backend == "torch":
        assert res["converted_equal"]
    else:
        assert res["imagenet_cache_loaded"]
        # one neutral checkpoint fits every backend: the same names and (torch) shapes
        assert res["effnet_names"] == torch_models["effnet_names"]
        assert res["cnn_elu_names"] == torch_models["cnn_elu_names"]


def test_torch_effnet_is_torchvisions_and_the_table_matches_it():
    code = r"""
import json, torchvision, d2lkaggle
from torchvision.models.efficientnet import _efficientnet_conf
from d2lkaggle.models import table
B = d2lkaggle.get_backend("torch")
out = {}
for arch in table.EFFICIENTNET_V2:
    ours, theirs = B.create_model(arch, 10), getattr(torchvision.models, arch)(num_classes=10)
    out[arch] = [[k, list(v.shape)] for k, v in ours.state_dict().items()] == \
                [[k, list(v.shape)] for k, v in theirs.state_dict().items()]
    setting, last = _efficientnet_conf(arch)
    rows = [(type(c).__name__.startswith("Fused"), c.expand_ratio, c.kernel, c.stride,
             c.input_channels, c.out_channels, c.num_layers) for c in setting]
    out[arch + "_table"] = rows == [tuple(r) for r in table.EFFICIENTNET_V2[arch]["stages"]] and \
        last == table.EFFICIENTNET_V2[arch]["last_channel"]
    sd = [m.p for m in ours.modules() if type(m).__name__ == "StochasticDepth"]
    out[arch + "_sd"] = sd == [b.drop_path for b in table.efficientnet_v2_blocks(arch, 0.2)]
    bns = {(m.eps, m.momentum) for m in ours.modules() if type(m).__name__ == "BatchNorm2d"}
    out[arch + "_bn"] = bns == {(1e-3, 0.1)}
print(json.dumps(out))
"""
    if not is_installed("torch"):
        pytest.skip("torch is not installed")
    r = run_py(code)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(res.values()), res


@pytest.mark.parametrize("backend", backend_params("torch"))
def test_run_with_model_flag(backend, demo_dir, tmp_path):
    # --model replaces the recipe's model; summary.json records it
    out = tmp_path / "run"
    r = run_cli("run", "demo", "--data-dir", demo_dir, "--backend", backend, "--model", "cnn_elu",
                "--epochs", "1", "--no-retrain", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["model"] == "cnn_elu"
    assert (out / "submission.csv").exists()
