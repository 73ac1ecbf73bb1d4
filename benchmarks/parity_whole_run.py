"""Whole-run parity: the demo competition trained to the end in every backend from the same
initial neutral checkpoint; prints the final valid accuracies side by side.

    python benchmarks/parity_whole_run.py [--epochs 16] [--out /tmp/parity-run]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from d2lkaggle.datasets import make_demo
from d2lkaggle.registry import BACKENDS, is_installed

WORKER = r"""
import json, sys, time
import d2lkaggle
from d2lkaggle.competitions import get_competition
from d2lkaggle.pipeline import build_net, load_data
backend, data_dir, init, epochs, save_init = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
B = d2lkaggle.get_backend(backend)
comp = get_competition("demo")
r = comp.recipe.with_overrides(epochs=epochs)
data = load_data(comp, data_dir, batch_size=r.batch_size, valid_ratio=r.valid_ratio, seed=0)
B.set_seed(0)
net = build_net(B, r, len(data.classes))
if save_init:
    B.save_weights(net, init)
B.load_weights(net, init)
t = time.perf_counter()
h = B.train(net, data.train_iter, data.valid_iter, r.epochs, r.lr, r.wd, None, r.lr_period, r.lr_decay,
            progress=False, log=None, amp=False)
print("RESULT " + json.dumps({"valid_acc": h.last["valid_acc"], "best_valid_acc": h.best_valid_acc,
                              "train_loss": h.last["train_loss"], "seconds": time.perf_counter() - t,
                              "examples_per_sec": h.examples_per_sec}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "d2lkaggle-parity-run"))
    a = p.parse_args()
    data_dir = os.path.join(a.out, "data")
    if not os.path.exists(os.path.join(data_dir, "trainLabels.csv")):
        make_demo(data_dir, seed=0)
    init = os.path.join(a.out, "init.safetensors")
    names = [b for b in BACKENDS if is_installed(b)]
    print(f"demo competition, {a.epochs} epochs, float32, same initial weights ({init})")
    for i, b in enumerate(names):
        r = subprocess.run([sys.executable, "-c", WORKER, b, data_dir, init, str(a.epochs),
                            "1" if i == 0 else "0"], capture_output=True, text=True)
        if r.returncode:
            print(f"  {b:7s} failed: {r.stderr.strip().splitlines()[-1]}")
            continue
        res = json.loads([l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
        print(f"  {b:7s} valid acc {res['valid_acc']:.3f} (best {res['best_valid_acc']:.3f}), "
              f"train loss {res['train_loss']:.4f}, {res['examples_per_sec']:.0f} examples/s, "
              f"{res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
