"""Training and inference speed of every model-table model, per backend (each in its own process).

For each backend × model × image size: parameters, training examples/s of ``Step.train_batch``
(the backend's default ``amp="auto"``: bf16 autocast in torch on a CPU with native bf16) and
inference examples/s of ``forward``, after one warm-up batch.

    python benchmarks/model_speed.py [--backends torch mxnet paddle] [--models cnn_elu ...]
                                     [--sizes 32 224] [--batch 16] [--batch224 4] [--steps 3]
"""
import argparse
import json
import subprocess
import sys

CODE = r"""
import json, sys, time, numpy as np, d2lkaggle
backend, model, size, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
B = d2lkaggle.get_backend(backend)
B.set_seed(0)
kw = {"image_size": size} if model == "cnn_elu" else {"width": 64} if model == "resnet18" else {}
net = B.create_model(model, 10, **kw)
params = sum(int(np.prod(v.shape)) for k, v in B.get_state(net).items()
             if "running_" not in k)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
y = rng.integers(0, 10, batch)
step = B.Step(net, lr=0.01, wd=5e-4, mean=(0.5,) * 3, std=(0.25,) * 3)
step.train_batch(x, y)
t = time.perf_counter()
for _ in range(steps):
    step.train_batch(x, y)
train = batch * steps / (time.perf_counter() - t)
step.predict_batch(x)
t = time.perf_counter()
for _ in range(steps):
    step.predict_batch(x)
infer = batch * steps / (time.perf_counter() - t)
print(json.dumps({"params": params, "train": train, "infer": infer,
                  "amp": bool(getattr(step, "amp", False))}))
"""

MODELS = ("resnet18", "resnet34", "cnn_elu", "efficientnet_v2_s", "efficientnet_v2_m",
          "efficientnet_v2_l")


def measure(backend, model, size, batch, steps):
    r = subprocess.run([sys.executable, "-c", CODE, backend, model, str(size), str(batch), str(steps)],
                       capture_output=True, text=True)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backends", nargs="*", default=["torch", "mxnet", "paddle"])
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--sizes", nargs="*", type=int, default=[32, 224])
    p.add_argument("--batch", type=int, default=16, help="batch at sizes below 224 (default: 16)")
    p.add_argument("--batch224", type=int, default=4, help="batch at 224 px and above (default: 4)")
    p.add_argument("--steps", type=int, default=3, help="timed batches (default: 3)")
    a = p.parse_args()
    print("| backend | model | px | batch | params | train ex/s | inference ex/s | bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for size in a.sizes:
        for model in a.models:
            for backend in a.backends:
                bs = a.batch224 if size >= 224 else a.batch
                r = measure(backend, model, size, bs, a.steps)
                if "error" in r:
                    print(f"| {backend} | {model} | {size} | {bs} | - | error: {r['error']} | | |")
                else:
                    print(f"| {backend} | {model} | {size} | {bs} | {r['params'] / 1e6:.2f} M | "
                          f"{r['train']:.1f} | {r['infer']:.1f} | {'yes' if r['amp'] else 'no'} |",
                          flush=True)


if __name__ == "__main__":
    main()
