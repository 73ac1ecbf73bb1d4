"""``--weights FILE`` starts every model, in every backend, from what the file holds: a run's
checkpoint loads whole and starts at its validation accuracy, a checkpoint for another number of
classes gets a new classifier, a file that fits nothing is refused before the run folder exists,
and a weight file that would run code is refused in every format without running it."""
from __future__ import annotations

import json
import os
import pickle
import zipfile

import pytest

from conftest import backend_params, run_py

SCRIPT = r"""
import contextlib, io, json, os, sys
from d2lkaggle.cli import main
from d2lkaggle.compete import run_competition
from d2lkaggle.data.demo import make_demo
from d2lkaggle.utils.registry import get_backend

backend, root = sys.argv[1], sys.argv[2]
ten = make_demo(os.path.join(root, "ten"), n_train=60, n_test=4, size=16, seed=5)
four = make_demo(os.path.join(root, "four"), n_train=40, n_test=4, size=16, seed=6, num_classes=4)
lines = []
kw = dict(backend=backend, epochs=1, image_size=16, batch_size=16, retrain=False, progress=False,
          log=lines.append, num_workers=1, valid_ratio=0.2, amp=False)
res = {}
for model in ("cnn_elu", "resnet18"):
    first = run_competition("demo", ten, out=os.path.join(root, model + "-1"), model=model, **kw)
    best = os.path.join(root, model + "-1", "checkpoints", "valid", "best.npz")
    again = run_competition("demo", ten, out=os.path.join(root, model + "-2"), model=model,
                            weights=best, **kw)
    res[model] = {"best": first["best_valid_acc"], "weights": again["weights"]}
four_run = run_competition("demo", four, out=os.path.join(root, "four-run"), model="cnn_elu",
                           weights=os.path.join(root, "cnn_elu-1", "checkpoints", "valid", "best.npz"), **kw)
res["four"] = four_run["weights"]
res["lines"] = lines

def cli(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(args))
    return rc, err.getvalue()

res["unfit"] = cli("run", "demo", "--data-dir", ten, "--out", os.path.join(root, "unfit"),
                   "--backend", backend, "--model", "resnet18", "--epochs", "1",
                   "--weights", os.path.join(root, "cnn_elu-1", "checkpoints", "valid", "best.npz"))
res["unfit_out"] = os.path.exists(os.path.join(root, "unfit"))
bk = get_backend(backend)
net = bk.create_model("cnn_elu", 10, image_size=16)
res["evil"] = {}
for name in sys.argv[3:]:
    try:
        bk.load_weights(net, name)
        res["evil"][name] = "loaded"
    except ValueError as e:
        res["evil"][name] = str(e)
    res["evil"][name + " cli"] = cli("run", "demo", "--data-dir", ten, "--backend", backend,
                                     "--out", os.path.join(root, "evil"), "--weights", name)
print(json.dumps(res))
"""


def evil_files(folder, marker) -> list[str]:
    """A payload that would create ``marker`` if any of it ran, in each framework's format."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps({"layer.0.weight": Payload()}, protocol=2)
    pth, pdparams, params = (os.path.join(folder, "evil" + s) for s in (".pth", ".pdparams", ".params"))
    with zipfile.ZipFile(pth, "w") as z:
        z.writestr("evil/data.pkl", blob)
    for path in (pdparams, params):
        with open(path, "wb") as f:
            f.write(blob)
    return [pth, pdparams, params]


@pytest.mark.parametrize("backend", backend_params())
def test_weights_start_every_model_and_unsafe_files_never_run(backend, tmp_path):
    marker = tmp_path / "ran"
    evil = evil_files(str(tmp_path), marker)
    r = run_py(SCRIPT, backend, str(tmp_path), *evil, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for model in ("cnn_elu", "resnet18"):
        w = res[model]["weights"]
        assert w["parts"] == "whole model" and w["new"] == [] and len(w["sha1"]) == 40
        assert w["file"].endswith(os.path.join(model + "-1", "checkpoints", "valid", "best.npz"))
        # the checkpoint's own validation accuracy, on the same split (6 images: exact)
        assert abs(w["valid_acc_at_start"] - res[model]["best"]) < 1e-6, (model, w, res[model])
    four = res["four"]
    assert four["parts"] == "all but the classifier" and four["new"] == ["fc_layer.4.*"]
    assert any("(10, 100) in the file, (4, 100) in cnn_elu (another number of classes)" in l
               for l in res["lines"]), res["lines"]
    rc, err = res["unfit"]
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not fit resnet18: conv1.weight (16, 3, 3, 3) of resnet18 is not in the file" in err
    assert not res["unfit_out"]   # refused before the run folder was made
    formats = {".pth": "a PyTorch state dict", ".pdparams": "a Paddle .pdparams file",
               ".params": "an MXNet .params file"}
    for path in evil:
        fmt = formats[os.path.splitext(path)[1]]
        assert f"{path}: refused as {fmt}" in res["evil"][path], res["evil"][path]
        rc, err = res["evil"][path + " cli"]
        assert rc == 2 and f"refused as {fmt}" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "evil").exists()
