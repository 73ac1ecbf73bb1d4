"""The Dog Breed chapter at 224 px: a frozen ResNet-34 per backend, and ``--cache-features``.

For each installed backend, in its own process (never two frameworks in one):

* **examples/s** of the chapter's training step — a frozen ResNet-34 backbone + the new
  Linear→ReLU→Linear head, 224×224 inputs, batch 16, the Step the library trains with
  (torch: ``amp="auto"``, i.e. bf16 autocast where the CPU has native bf16); the backbone
  has random weights (pretrained ones cannot be fetched offline; the speed is the same);
* **--cache-features** on the demo's Dog layout (``make_demo(layout="dog")``, JPEGs of
  varying size, resized and centre-cropped to 224 px, ``augment="none"``): seconds per
  epoch training on the images against training the head on cached features, the one-off
  cost of computing the features, and the validation log loss of both after the same epochs.

    python benchmarks/dog.py            # 48 demo images, 2 epochs
    python benchmarks/dog.py --quick    # 24 demo images, 1 epoch
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = r"""
import json, sys, time
import numpy as np
import d2lkaggle
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.train.features import train_with_cached_features
from d2lkaggle.train.loop import loader_norm
from d2lkaggle.compete.run import load_data
name, data_dir, epochs, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bk = d2lkaggle.get_backend(name)
comp = get_competition("dog-breed")
out = {"backend": name, "bf16": bool(getattr(bk, "SUPPORTS_BF16", False))}

# 1. the training step at 224 px, batch 16 (model only: the batch is already decoded)
bk.set_seed(0)
net = bk.finetune_net(120)
step = bk.Step(net, lr=0.01, wd=1e-4, amp="auto", mean=comp.mean, std=comp.std)
out["amp"] = bool(getattr(step, "amp", False))
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
y = rng.integers(0, 120, 16)
step.train_batch(x, y)                        # warm-up (graph building, allocations)
t0 = time.perf_counter()
for _ in range(steps):
    step.train_batch(x, y)
out["step_examples_per_s"] = 16 * steps / (time.perf_counter() - t0)

# 2. --cache-features against training on the images (the demo's Dog layout, augment none)
def loaders():
    return load_data(comp, data_dir, batch_size=16, valid_ratio=0.25, image_size=224, seed=0,
                     augment="none")
kw = dict(lr=0.01, wd=1e-4, progress=False, log=None, amp="auto")
bk.set_seed(0); a = bk.finetune_net(10)
d = loaders()
ha = bk.train(a, d.train_iter, d.valid_iter, epochs, devices=None, **kw)
bk.set_seed(0); b = bk.finetune_net(10)
d = loaders()
t0 = time.perf_counter()
hb = train_with_cached_features(bk, b, d.train_iter, d.valid_iter, epochs, devices=None,
                                backend=name, **kw)
total_b = time.perf_counter() - t0
out.update(images_epoch_s=float(np.median(ha.column("seconds"))),
           cached_epoch_s=float(np.median(hb.column("seconds"))),
           images_run_s=float(sum(ha.column("seconds"))), cached_run_s=total_b,
           images_valid_loss=ha.last["valid_loss"], cached_valid_loss=hb.last["valid_loss"],
           n_train=d.train_iter.num_examples, n_valid=len(d.valid_iter.source), epochs=epochs)
print(json.dumps(out))
"""


def _demo(root: str, n_train: int) -> str:
    from d2lkaggle.data.demo import make_demo
    return make_demo(os.path.join(root, "dog"), n_train=n_train, n_test=8, size=96, seed=0,
                     layout="dog")


def measure(backend: str, data_dir: str, epochs: int, steps: int) -> dict:
    """One backend's figures, in a fresh process (feature caches stay in ``data_dir``)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", CHILD, backend, data_dir, str(epochs), str(steps)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"dog benchmark ({backend}) failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rows(quick: bool) -> list[dict]:
    """The "Dog chapter at 224 px" and "--cache-features" rows for benchmarks/run.py."""
    from d2lkaggle.utils.registry import is_installed
    n_train, epochs, steps = (24, 1, 1) if quick else (48, 2, 2)
    out = []
    with tempfile.TemporaryDirectory(prefix="d2lk-dog-") as tmp:
        for name in ("torch", "mxnet", "paddle"):
            if not is_installed(name):
                out.append({"row": f"dog 224 px, {name}", "ours": None, "textbook": None,
                            "unit": "examples/s", "goal": "report", "met": None,
                            "note": f"{name} is not installed"})
                continue
            data = _demo(tmp, n_train)        # a fresh copy: no cache from another backend
            print(f"[dog] {name}: frozen ResNet-34 at 224 px ...", flush=True)
            r = measure(name, data, epochs, steps)
            speedup = r["images_epoch_s"] / max(r["cached_epoch_s"], 1e-9)
            print(f"[dog] {name}: {r['step_examples_per_s']:.1f} examples/s; epoch "
                  f"{r['images_epoch_s']:.2f} s on images vs {r['cached_epoch_s']:.4f} s on "
                  f"cached features ({speedup:.0f}x)", flush=True)
            prec = "bf16 autocast (native bf16 CPU)" if r["amp"] else "float32"
            out.append({
                "row": f"dog 224 px, frozen ResNet-34 training step, {name}",
                "ours": round(r["step_examples_per_s"], 1), "textbook": None,
                "unit": "examples/s", "goal": "report", "met": None,
                "note": f"batch 16, {prec}, random backbone weights (pretrained ones cannot "
                        f"be fetched offline; same speed), model step only"})
            out.append({
                "row": f"dog --cache-features, {name}: epoch speed-up",
                "ours": round(speedup, 1), "textbook": None, "unit": "× per epoch",
                "goal": "≫ 10×", "met": speedup >= 10,
                "note": f"{r['n_train']} train / {r['n_valid']} valid demo Dog images, "
                        f"{r['epochs']} epochs: {r['images_epoch_s']:.2f} s/epoch on images, "
                        f"{r['cached_epoch_s']:.4f} s/epoch on features; whole run "
                        f"{r['images_run_s']:.1f} s vs {r['cached_run_s']:.1f} s (features "
                        f"computed once); valid log loss {r['images_valid_loss']:.4f} without, "
                        f"{r['cached_valid_loss']:.4f} with"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24 demo images, 1 epoch "
                    "(default: 48 images, 2 epochs)")
    a = ap.parse_args(argv)
    for r in rows(a.quick):
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
