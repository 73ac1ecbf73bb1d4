"""A torch .pth file read by the core without torch and without running code from it."""
import os
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
