"""The demo competition trained with several model-table models (one backend per process).

Each run: the demo's data (built once), its recipe's SGD + StepLR (lr 0.05, wd 5e-4, batch 64,
lr halved every 4 epochs) with the model replaced, ``--epochs`` epochs, no retraining; prints
valid accuracy and training examples/s.

    python benchmarks/model_demo.py [--backend torch] [--epochs 8] [--n-train 1000] [--runs resnet18 cnn_elu ...]

A run is ``NAME`` or ``NAME:key=value,key=value`` (e.g. ``resnet18:width=16,drop_path=0.1``).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CODE = r"""
import json, sys, d2lkaggle
from d2lkaggle.competitions import get_competition
from d2lkaggle.pipeline import load_data
backend, data_dir, epochs, name, kw = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
comp = get_competition("demo")
r = comp.recipe
data = load_data(comp, data_dir, batch_size=r.batch_size, valid_ratio=r.valid_ratio, seed=0)
B = d2lkaggle.get_backend(backend)
B.set_seed(0)
net = B.create_model(name, len(data.classes), **kw)
h = B.train(net, data.train_iter, data.valid_iter, epochs, r.lr, r.wd, None, r.lr_period, r.lr_decay,
            progress=False, log=None)
print(json.dumps({"valid_acc": h.last["valid_acc"], "best_valid_acc": h.best_valid_acc,
                  "examples_per_sec": h.examples_per_sec}))
"""


def parse_run(text):
    name, _, rest = text.partition(":")
    kw = {}
    for item in filter(None, rest.split(",")):
        k, v = item.split("=")
        kw[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    return name, kw


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="torch")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--runs", nargs="*", default=["resnet18:width=16", "resnet18:width=16,drop_path=0.1",
                                                 "cnn_elu", "efficientnet_v2_s"])
    p.add_argument("--data", help="demo folder (default: built in a temporary folder)")
    p.add_argument("--n-train", type=int, default=1000, help="demo training images (default: 1000)")
    a = p.parse_args()
    data = a.data or os.path.join(tempfile.mkdtemp(), "demo")
    if not os.path.exists(os.path.join(data, "trainLabels.csv")):
        from d2lkaggle.datasets import make_demo
        make_demo(data, n_train=a.n_train, seed=0)
    print(f"| backend | model | epochs | valid acc | best valid acc | train ex/s |")
    print("|---|---|---|---|---|---|")
    for run in a.runs:
        name, kw = parse_run(run)
        r = subprocess.run([sys.executable, "-c", CODE, a.backend, data, str(a.epochs), name,
                            json.dumps(kw)], capture_output=True, text=True)
        if r.returncode:
            print(f"| {a.backend} | {run} | {a.epochs} | error: {r.stderr.strip().splitlines()[-1][:100]} | | |")
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"| {a.backend} | {run} | {a.epochs} | {res['valid_acc']:.3f} | {res['best_valid_acc']:.3f} | "
              f"{res['examples_per_sec']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
