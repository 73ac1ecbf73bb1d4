"""Every weights error's advice, executed as written, works (issue 28).

Each backend is asked, offline, for ImageNet weights it does not have: the fine-tune net's
ResNet-34 backbone and EfficientNetV2-S. Its error message is then read like a user would:
every ``d2lkaggle ...`` command in it is run (in the folder holding the file it names), every
"place FILE in/at WHERE" is done, every ``weights=...`` it suggests (``PATH`` standing for a
weight file) is passed back, and the net must then build, with the file's weights. The files
are torchvision's architectures with random values, saved by torch (no download anywhere).
"""
import json
import os

import pytest

from conftest import ROOT, backend_params, run_py

#: builds that need ImageNet weights, by name: (constructor call, a parameter checked against
#: the file after loading, and the torchvision file it comes from)
CHILD = r'''
import json, os, re, shutil, subprocess, sys
import numpy as np
import d2lkaggle
from d2lkaggle.models.weights import read_weights
bk = d2lkaggle.get_backend(sys.argv[1])
src, cache = sys.argv[2], os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints")
os.makedirs(cache, exist_ok=True)
BUILDS = {"finetune_net": (lambda w: bk.finetune_net(120, weights=w), "conv1.weight",
                           "resnet34-b627a593.pth"),
          "efficientnet_v2_s": (lambda w: bk.efficientnet_v2_s(10, weights=w),
                                "features.0.0.weight", "efficientnet_v2_s-dd5fe13b.pth")}
only = sys.argv[3].split(",")

def loaded(build, key, reference, weights, cwd):
    """Build with ``weights`` in ``cwd``: 'none' when random, else whether the file's
    values arrived."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        net = build(weights)
    finally:
        os.chdir(here)
    if reference is None:
        return "built"
    got = bk.get_state(net)[key]
    return "file's weights" if np.allclose(got, reference[key]) else "other weights"

report = {}
for name in only:
    build, key, fname = BUILDS[name]
    reference = read_weights(os.path.join(src, fname))
    try:
        build("imagenet")
        report[name] = {"message": None}
        continue
    except Exception as e:
        msg, error = str(e), e
    done = {}
    # 1. "place FILE ... in|at WHERE": put torchvision's file there, ask for "imagenet" again
    places = re.findall(r"place (?:torchvision's )?(\S+) (?:\(from \S+\) )?(?:in|at) "
                        r"(\S+?)[,;)]?(?: |$)", msg)
    dests = []
    for f, where in places:
        dest = where if where.endswith(f) else os.path.join(os.path.expanduser(where), f)
        dests.append(dest)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(os.path.join(src, f), dest)
        done[f"place {f}"] = loaded(build, key, reference, "imagenet", src)
        os.remove(dest)
    # 2. every `d2lkaggle ...` command: "there" is the folder a "place" named (then "imagenet"
    # must find the result); otherwise it runs where the file it names is, and each weights=
    # the message suggests is passed from that folder
    for cmd, there in re.findall(r"`(d2lkaggle [^`]+)`( there)?", msg):
        work = (os.path.dirname(dests[-1]) if there and dests
                else os.path.join(os.environ["TORCH_HOME"], "work-" + name))
        os.makedirs(work, exist_ok=True)
        before = set(os.listdir(work))
        shutil.copy(os.path.join(src, fname), work)
        r = subprocess.run([sys.executable, "-m", "d2lkaggle.cli", *cmd.split()[1:]],
                           cwd=work, capture_output=True, text=True)
        done[cmd] = r.returncode if r.returncode else "ok"
        if there:
            os.remove(os.path.join(work, fname))   # only the converted file is left there
            done[f"{cmd} there -> 'imagenet'"] = loaded(build, key, reference, "imagenet", src)
        else:
            for value in re.findall(r"weights='([^']+)'", msg):
                if value != "none":
                    done[f"{cmd} -> weights={value!r}"] = loaded(build, key, reference, value, work)
        for f in set(os.listdir(work)) - before:
            os.remove(os.path.join(work, f))
    # 3. weights=PATH (a weight file) and 'none' (a random backbone), passed as written
    if "weights=PATH" in msg:
        done["weights=PATH"] = loaded(build, key, reference, os.path.join(src, fname), src)
    if "'none'" in msg:
        done["weights='none'"] = loaded(build, key, None, "none", src)
    report[name] = {"message": msg, "done": done,
                    "cli": getattr(error, "for_cli", lambda: None)()}
print(json.dumps(report))
'''

#: torchvision's two files (random values), written once by torch
MAKE = r'''
import os, sys, torch, torchvision
out = sys.argv[1]
torch.manual_seed(0)
torch.save(torchvision.models.resnet34().state_dict(), os.path.join(out, "resnet34-b627a593.pth"))
torch.save(torchvision.models.efficientnet_v2_s().state_dict(),
           os.path.join(out, "efficientnet_v2_s-dd5fe13b.pth"))
'''


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    from d2lkaggle.utils.registry import is_installed
    if not is_installed("torch"):
        pytest.skip("torch makes the torchvision weight files these messages name")
    out = tmp_path_factory.mktemp("torchvision")
    r = run_py(MAKE, str(out), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return str(out)


def offline_env(tmp_path) -> dict:
    """An empty torch cache and a dead proxy: nothing is found, nothing downloads."""
    dead = "http://127.0.0.1:9"
    return {"TORCH_HOME": str(tmp_path / "torch"), "HOME": str(tmp_path / "home"),
            "http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
            "no_proxy": "", "NO_PROXY": "", "OMP_NUM_THREADS": "1"}


#: which builds each backend is asked for: torch downloads ImageNet weights itself (the
#: fine-tune net's message says so); MXNet and Paddle share the core's two messages, so the
#: EfficientNetV2 one (a 21M-parameter net, built once per advice) is run in one of them
ASKED = {"torch": "finetune_net", "mxnet": "finetune_net,efficientnet_v2_s",
         "paddle": "finetune_net"}


@pytest.mark.parametrize("backend", backend_params())
def test_every_weights_advice_works_as_written(backend, torchvision_files, tmp_path):
    r = run_py(CHILD, backend, torchvision_files, ASKED[backend], env=offline_env(tmp_path),
               timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    for name, got in report.items():
        msg, done = got["message"], got["done"]
        assert msg, f"{backend} {name}: no error offline without weights"
        assert done, f"{backend} {name}: no advice understood in: {msg}"
        bad = {k: v for k, v in done.items() if v not in ("ok", "built", "file's weights")}
        assert not bad, f"{backend} {name}: {bad}\nmessage: {msg}"
        # the command line's form names what --weights accepts
        if got["cli"]:
            assert "weights=" not in got["cli"] and "--weights" in got["cli"]
    if backend == "torch":
        assert set(report["finetune_net"]["done"]) == {"place resnet34-b627a593.pth",
                                                       "weights=PATH"}
    else:
        done = report["finetune_net"]["done"]
        cmd = "d2lkaggle weights convert resnet34-b627a593.pth resnet34.safetensors"
        assert done[cmd] == "ok" and done["weights='none'"] == "built"
        assert done[f"{cmd} -> weights='resnet34.safetensors'"] == "file's weights"
        # it names torch's cache where this machine has it ($TORCH_HOME), not a fixed path
        torch_cache = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints")
        assert torch_cache in report["finetune_net"]["message"]
    if backend == "mxnet":
        done = report["efficientnet_v2_s"]["done"]
        cmd = ("d2lkaggle weights convert efficientnet_v2_s-dd5fe13b.pth "
               "efficientnet_v2_s-dd5fe13b.safetensors")
        assert done == {"place efficientnet_v2_s-dd5fe13b.pth": "file's weights", cmd: "ok",
                        f"{cmd} there -> 'imagenet'": "file's weights",
                        "weights=PATH": "file's weights"}


def test_weights_none_means_random_as_on_the_command_line(tmp_path):
    from d2lkaggle.models.table import weights_choice
    assert [weights_choice(w) for w in (None, "none", " None ", "RANDOM")] == [None] * 4
    assert weights_choice("imagenet") == "imagenet"
    from pathlib import Path
    assert weights_choice(Path("w") / "resnet34.safetensors") == os.path.join(
        "w", "resnet34.safetensors")
    # a run's recipe: the same rule (compete/run.py)
    from d2lkaggle.compete.run import plan_run
    from d2lkaggle.data.demo import make_demo
    data = make_demo(str(tmp_path / "dog"), n_train=20, n_test=2, size=16, layout="dog",
                     num_classes=2)
    plan = plan_run("dog-breed", data, backend="mxnet", weights="none", log=None)
    assert plan.recipe.weights is None
