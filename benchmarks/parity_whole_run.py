"""Whole-run parity: the demo competition trained to the end in every backend from the same
initial neutral checkpoint; prints the final valid accuracies side by side.

Then, as the yardstick for those differences, the torch run again with only its rounding
changed: one OpenMP thread instead of all (another summation order, the same float32 math;
``--bf16`` adds a bf16-autocast run, slow on CPUs without native bf16). Float32 training trajectories separate within tens of steps (docs/parity.md),
so these rows show how far two equally correct runs end apart.

    python benchmarks/parity_whole_run.py [--epochs 16] [--out /tmp/parity-run] [--n-train 1000] [--yardstick torch,mxnet] [--only mxnet] [--bf16]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from d2lkaggle.data.demo import make_demo
from d2lkaggle.utils.registry import BACKENDS, is_installed

WORKER = r"""
import json, sys, time
import d2lkaggle
from d2lkaggle.specs.competitions import get_competition
from d2lkaggle.compete.run import load_data
from d2lkaggle.models.build import build_net
backend, data_dir, init, epochs, save_init = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
amp = len(sys.argv) > 6 and sys.argv[6] == "bf16"
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
            progress=False, log=None, amp=amp)
print("RESULT " + json.dumps({"valid_acc": h.last["valid_acc"], "best_valid_acc": h.best_valid_acc,
                              "train_loss": h.last["train_loss"], "seconds": time.perf_counter() - t,
                              "examples_per_sec": h.examples_per_sec}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "d2lkaggle-parity-run"))
    p.add_argument("--yardstick", default="torch",
                   help="backends to rerun with 1 OpenMP thread (other rounding), comma-separated; '' for none")
    p.add_argument("--only", default="", help="comma-separated backends for the main runs (default: all)")
    p.add_argument("--n-train", type=int, default=1000,
                   help="labelled demo images (10 %% of them validate); more = a finer accuracy")
    p.add_argument("--bf16", action="store_true", help="also a torch run with bf16 autocast")
    a = p.parse_args()
    data_dir = os.path.join(a.out, f"data-{a.n_train}")
    if not os.path.exists(os.path.join(data_dir, "trainLabels.csv")):
        make_demo(data_dir, n_train=a.n_train, seed=0)
    init = os.path.join(a.out, f"init-{a.n_train}.safetensors")
    names = [b for b in BACKENDS if is_installed(b)]
    print(f"demo competition ({len(os.listdir(os.path.join(data_dir, 'train')))} labelled images), "
          f"{a.epochs} epochs, float32 unless bf16, same initial weights ({init})", flush=True)
    main_runs = [b for b in names if not a.only or b in a.only.split(",")]
    runs = [(b, b, "", {}) for b in main_runs]
    for b in (a.yardstick.split(",") if a.yardstick else []):
        if b in names:
            runs.append((b, f"{b} 1 thread", "", {"OMP_NUM_THREADS": "1"}))
        if a.bf16:
            runs.append(("torch", "torch bf16", "bf16", {}))
    for i, (b, label, variant, env) in enumerate(runs):
        r = subprocess.run([sys.executable, "-c", WORKER, b, data_dir, init, str(a.epochs),
                            "0" if os.path.exists(init) else "1", variant], capture_output=True, text=True,
                           env=dict(os.environ, **env))
        if r.returncode:
            print(f"  {label:14s} failed: {r.stderr.strip().splitlines()[-1]}")
            continue
        res = json.loads([l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
        print(f"  {label:14s} valid acc {res['valid_acc']:.3f} (best {res['best_valid_acc']:.3f}), "
              f"train loss {res['train_loss']:.4f}, {res['examples_per_sec']:.0f} examples/s, "
              f"{res['seconds']:.0f} s", flush=True)

if __name__ == "__main__":
    main()
