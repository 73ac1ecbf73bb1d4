"""Weight files read by the core without their framework and without running code from them:
PyTorch .pth, MXNet .params, Paddle .pdparams (checked against what each framework writes)."""
import os
import pickle
import zipfile

import numpy as np
import pytest

from conftest import run_py
from d2lkaggle.models.formats import UnsafeWeightsError, read_torch_zip
from d2lkaggle.models.weights import read_pth
from d2lkaggle.utils.registry import is_installed

pytestmark = pytest.mark.skipif(not is_installed("torch"), reason="torch writes the files")

WRITE = r"""
import sys, torch, torchvision, numpy as np
torch.manual_seed(0)
m = torchvision.models.resnet18(num_classes=7)
torch.save(m.state_dict(), sys.argv[1] + "/sd.pth")
np.savez(sys.argv[1] + "/ref.npz", **{k: v.float().numpy() for k, v in m.state_dict().items()})
t = {"t": torch.randn(3, 4).t(), "p": torch.nn.Parameter(torch.randn(5)), "bf": torch.randn(2, 3).bfloat16(),
     "s": torch.tensor(3.5), "slice": torch.arange(10.0)[2:7], "i": torch.arange(6).view(2, 3)}
torch.save(t, sys.argv[1] + "/mixed.pt")
np.savez(sys.argv[1] + "/mixed.npz", **{k: v.detach().float().numpy() for k, v in t.items()})
torch.save(m, sys.argv[1] + "/whole_model.pth")   # a pickled nn.Module: code, not arrays
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pth"))
    r = run_py(WRITE, d)
    assert r.returncode == 0, r.stderr
    return d


def test_state_dict_reads_exactly_without_torch(files):
    # the core module never imports torch: read it in a process where importing torch fails
    code = ("import sys, numpy as np; sys.modules['torch'] = None\n"
            "from d2lkaggle.models.weights import read_pth\n"
            "sd = read_pth(sys.argv[1] + '/sd.pth'); ref = np.load(sys.argv[1] + '/ref.npz')\n"
            "keys = [k for k in ref.files if not k.endswith('num_batches_tracked')]\n"
            "assert sorted(sd) == sorted(keys), (sorted(sd)[:3], keys[:3])\n"
            "assert all(np.array_equal(sd[k], ref[k]) for k in keys)\n"
            "print('ok', len(sd), len(ref.files))")
    r = run_py(code, files)
    assert r.returncode == 0, r.stderr
    ok, n, total = r.stdout.split()
    assert ok == "ok" and int(n) == int(total) - 20   # 20 BatchNorm counters are not weights


def test_strided_bf16_scalar_and_integer_tensors(files):
    got = read_torch_zip(os.path.join(files, "mixed.pt"))
    ref = np.load(os.path.join(files, "mixed.npz"))
    for k in ref.files:
        assert got[k].shape == ref[k].shape, k
        assert np.array_equal(np.asarray(got[k], dtype=np.float32), ref[k]), k
    assert got["i"].dtype == np.int64


def test_a_pickled_model_is_refused_and_nothing_runs(files, tmp_path):
    with pytest.raises(UnsafeWeightsError, match="torchvision.models.resnet.ResNet"):
        read_pth(os.path.join(files, "whole_model.pth"))
    # a payload that would create a file if any of it ran
    import pickle
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
    with pytest.raises(UnsafeWeightsError, match="io.open"):
        read_pth(str(evil))
    assert not marker.exists()


def test_not_a_zip_is_refused_with_advice(tmp_path):
    old = tmp_path / "legacy.pth"
    old.write_bytes(b"\x80\x02}q\x00.")   # a bare pickle, as torch < 1.6 wrote
    with pytest.raises(UnsafeWeightsError, match="Re-save it"):
        read_pth(str(old))


MXNET_WRITE = r"""
import sys, numpy as np, mxnet as mx
from d2lkaggle import get_backend
d = sys.argv[1]
arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.array([1.5, -2.0]),
          "f16": np.array([[0.5]], dtype=np.float16), "i64": np.arange(4, dtype=np.int64),
          "u8": np.array([7, 255], dtype=np.uint8)}
mx.nd.save(d + "/dict.params", {k: mx.nd.array(v, dtype=v.dtype) for k, v in arrays.items()})
mx.nd.save(d + "/list.params", [mx.nd.array(arrays["f32"]), mx.nd.array(arrays["f64"], dtype="float64")])
np.savez(d + "/mx_ref.npz", **arrays)
bk = get_backend("mxnet")
net = bk.create_model("cnn_elu", 5, image_size=8)
net.save_parameters(d + "/cnn.params")               # MXNet's own save, numpy shape semantics
np.savez(d + "/mx_cnn.npz", **bk.get_state(net))      # the same weights under canonical names
"""

PADDLE_WRITE = r"""
import sys, numpy as np, paddle
from d2lkaggle import get_backend
d = sys.argv[1]
bk = get_backend("paddle")
net = bk.create_model("cnn_elu", 5, image_size=8)
paddle.save(net.state_dict(), d + "/cnn.pdparams")
np.savez(d + "/pd_cnn.npz", **bk.get_state(net))
"""


def _written(code: str, backend: str, folder) -> str:
    if not is_installed(backend):
        pytest.skip(f"{backend} is not installed")
    r = run_py(code, str(folder))
    assert r.returncode == 0, r.stderr[-3000:]
    return str(folder)


def test_mxnet_params_read_as_mxnet_wrote_them(tmp_path):
    from d2lkaggle.models.formats import read_mxnet_params
    from d2lkaggle.models.weights import read_weights
    d = _written(MXNET_WRITE, "mxnet", tmp_path)
    ref = np.load(os.path.join(d, "mx_ref.npz"))
    got = read_mxnet_params(os.path.join(d, "dict.params"))
    assert sorted(got) == sorted(ref.files)
    for k in ref.files:
        assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), k
    listed = read_mxnet_params(os.path.join(d, "list.params"))
    assert list(listed) == ["0", "1"] and np.array_equal(listed["1"], ref["f64"])
    cnn, canon = read_weights(os.path.join(d, "cnn.params")), np.load(os.path.join(d, "mx_cnn.npz"))
    assert sorted(cnn) == sorted(canon.files)   # gamma/beta under torch's names
    assert all(np.array_equal(cnn[k], canon[k]) for k in canon.files)


def test_paddle_pdparams_read_as_paddle_wrote_them(tmp_path):
    from d2lkaggle.models.weights import read_weights
    d = _written(PADDLE_WRITE, "paddle", tmp_path)
    cnn, canon = read_weights(os.path.join(d, "cnn.pdparams")), np.load(os.path.join(d, "pd_cnn.npz"))
    assert sorted(cnn) == sorted(canon.files)   # _mean/_variance renamed, Linear transposed
    assert all(np.array_equal(cnn[k], canon[k]) for k in canon.files)


def test_weights_convert_reads_every_format(files, tmp_path, capsys):
    from d2lkaggle.cli import main
    from d2lkaggle.models.weights import load_neutral
    from d2lkaggle.utils.files import save_npz
    ckpt = tmp_path / "best.npz"   # a run's checkpoint: the model's arrays beside the optimizer's
    save_npz(str(ckpt), {"model/fc.weight": np.ones((2, 3)), "optim/fc.weight/momentum": np.ones((2, 3))},
             {"epoch": 0})
    with open(tmp_path / "p.pdparams", "wb") as f:
        pickle.dump({"fc.weight": np.ones((3, 2), np.float32), "bn._mean": np.zeros(2, np.float32)}, f,
                    protocol=4)
    srcs = {os.path.join(files, "sd.pth"): 102, str(ckpt): 1, str(tmp_path / "p.pdparams"): 2}
    for src, n in srcs.items():
        dst = str(tmp_path / (os.path.basename(src) + ".safetensors"))
        assert main(["weights", "convert", src, dst]) == 0
        assert f"wrote {n} arrays" in capsys.readouterr().out
    pd = load_neutral(str(tmp_path / "p.pdparams.safetensors"))
    assert pd["fc.weight"].shape == (2, 3) and "bn.running_mean" in pd
    assert list(load_neutral(str(tmp_path / "best.npz.safetensors"))) == ["fc.weight"]


@pytest.mark.parametrize("suffix, data, fmt, why", [
    (".params", b"\x80\x04K\x01.", "an MXNet .params file", "a pickle"),
    (".params", b"\x12\x01" + b"\x00" * 14 + b"\x01" + b"\x00" * 7 + b"\xc9\xfa", "an MXNet .params file", "truncated or damaged"),
    (".pdparams", b"PK\x03\x04junk", "a Paddle .pdparams file", "not a pickle"),
    (".npz", None, "a numpy .npz file of arrays", "pickled Python objects"),
    (".safetensors", b"\xff" * 40, "a .safetensors file", "damaged"),
])
def test_malformed_files_are_one_line_naming_the_format(tmp_path, capsys, suffix, data, fmt, why):
    from d2lkaggle.cli import main
    src = tmp_path / ("w" + suffix)
    if data is None:
        np.savez(src, a=np.array([{"x": 1}], dtype=object))
    else:
        src.write_bytes(data)
    assert main(["weights", "convert", str(src), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{src}: refused as {fmt}" in err and why in err, err
    assert "internal error" not in err and not (tmp_path / "out.npz").exists()
