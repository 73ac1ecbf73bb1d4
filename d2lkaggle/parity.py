"""Cross-framework parity: one neutral checkpoint, the same batches, the same numbers.

Every backend runs in its own process (never two frameworks in one interpreter), loads the
same neutral weight file and writes its results as ``.npz``; this module compares them in
numpy. ``d2lkaggle parity`` prints the table; ``tests/parity`` asserts the tolerances.

Conventions that differ between the frameworks and how they are aligned:

* SGD momentum form: torch and Paddle use ``v = m·v + g + wd·w; w -= lr·v``; Gluon's ``sgd``
  keeps ``lr`` inside the velocity, so the MXNet backend applies torch's form itself.
* Loss scale: the mean over the batch everywhere (no ``Trainer.step(batch_size)`` rescale).
* BatchNorm momentum: torch 0.1 ≙ MXNet/Paddle 0.9 (weight of the old statistics).
* BatchNorm running variance: torch blends in the *unbiased* batch variance (÷(n−1)),
  MXNet and Paddle the biased one (÷n). This is not aligned in the backends; the comparison
  maps the biased trajectory onto torch's exactly (see :func:`unbiased_running_var`).
* Weight layout: Paddle's ``Linear.weight`` is ``[in, out]``; its backend transposes to
  torch's ``[out, in]`` when it reads or writes canonical names.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Sequence

import numpy as np

from .registry import BACKENDS, is_installed

#: per model: constructor call, input size, batch size (kept small: paddle is slow on CPU),
#: classes, and the spread of the BatchNorm gammas/betas drawn around 1/0
MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {"build": "B.resnet18(10, 3, 16)", "size": 32, "batch": 16, "classes": 10, "bn": 0.5},
    "resnet34": {"build": "B.resnet34(1000)", "size": 64, "batch": 4, "classes": 1000, "bn": 0.2},
    "finetune": {"build": "B.finetune_net(120)", "size": 64, "batch": 4, "classes": 120, "bn": 0.2},
}
BN_MOMENTUM = 0.1   # torch's convention: weight of the new batch statistics
LR, LR_AFTER, LR_STEP, WD, MOMENTUM = 0.01, 0.005, 5, 5e-4, 0.9
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


# ----------------------------------------------------------------------------- the worker

def _worker(backend: str, task: str, model: str, workdir: str, steps: int) -> None:
    """Run one task in this process, with one framework, and save its numpy results."""
    import d2lkaggle
    from .checkpoint import save_npz
    B = d2lkaggle.get_backend(backend)  # noqa: N806 (used by the MODELS expressions)
    spec = MODELS[model]
    out: dict[str, np.ndarray] = {}
    if task == "init":
        B.set_seed(0)
        net = eval(spec["build"])
        head = {k: v for k, v in B.get_state(net).items() if k.startswith("head.")}
        if model == "finetune":   # its backbone is frozen: calibrate a plain ResNet-34 instead
            net = B.resnet34(1000)
        # BatchNorm statistics of the input distribution (lr 0: only they change), so that
        # inference-mode activations, and thus the logits compared, have a realistic scale
        step = B.Step(net, lr=0.0, amp=False)
        rng = np.random.default_rng(1)
        s, b = spec["size"], spec["batch"]
        for _ in range(30):
            step.train_batch(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                             rng.integers(0, 10, b))
        state = B.get_state(net)
        if model == "finetune":
            state = {**{k: v for k, v in state.items() if not k.startswith("fc.")}, **head}
        out = {"model/" + k: v for k, v in state.items()}
    elif task == "forward":
        net = eval(spec["build"])
        B.load_weights(net, os.path.join(workdir, "weights.safetensors"))
        out["logits"] = B.forward(net, np.load(os.path.join(workdir, "input.npy")))
    elif task == "train":
        net = eval(spec["build"])
        B.load_weights(net, os.path.join(workdir, "weights.safetensors"))
        step = B.Step(net, lr=LR, wd=WD, momentum=MOMENTUM, amp=False, mean=MEAN, std=STD)
        with np.load(os.path.join(workdir, "batches.npz")) as z:
            xs, ys = z["x"], z["y"]
        losses = []
        for i in range(steps):
            step.set_lr(LR if i < LR_STEP else LR_AFTER)   # a StepLR change in between
            ls, _, n = step.train_batch(xs[i % len(xs)], ys[i % len(ys)])
            losses.append(ls / n)
            if i == 0:
                out.update({"step1/" + k: v for k, v in B.get_state(net).items()})
        out.update({"final/" + k: v for k, v in B.get_state(net).items()})
        out["losses"] = np.array(losses)
    elif task == "data":
        from .augment import cifar_train
        from .data import ArraySource, ImageLoader
        images = np.random.default_rng(7).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
        loader = ImageLoader(ArraySource(images), np.arange(24) % 10, 8, transform=cifar_train(32),
                             shuffle=True, seed=3)
        loader.set_epoch(1)
        batches = [x for x, _ in loader]
        digest = hashlib.sha256(b"".join(x.tobytes() for x in batches)).hexdigest()
        out["sha256"] = np.array(digest)
        t = B.to_tensor(batches[0], MEAN, STD)
        out["tensor"] = np.asarray(t.numpy() if hasattr(t, "numpy") and not hasattr(t, "asnumpy")
                                   else t.asnumpy(), dtype=np.float32)
        if out["tensor"].shape[1] != 3:   # a backend may keep NHWC memory; compare in NCHW
            out["tensor"] = out["tensor"].transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"unknown parity task {task!r}")
    save_npz(os.path.join(workdir, f"{backend}-{task}.npz"), out)


def run_worker(backend: str, task: str, model: str, workdir: str, steps: int = 10,
               timeout: int = 900) -> dict[str, np.ndarray]:
    """Run :func:`_worker` in a fresh interpreter and load what it saved."""
    from .checkpoint import load_npz
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "d2lkaggle.parity", "--worker", backend, task, model,
                        workdir, str(steps)], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{backend} parity worker ({task}, {model}) failed:\n{r.stderr[-3000:]}")
    return load_npz(os.path.join(workdir, f"{backend}-{task}.npz"))[0]


# ----------------------------------------------------------------------------- inputs

def prepare(workdir: str, model: str, steps: int, reference: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Shared inputs: neutral weights (BatchNorm statistics calibrated on the input
    distribution, gammas and betas perturbed), one float input and the uint8 training batches."""
    from .weights import save_neutral
    spec = MODELS[model]
    state = {k[6:]: v for k, v in run_worker(reference, "init", model, workdir).items()}
    rng = np.random.default_rng(seed)
    for k, v in state.items():
        if k.rsplit(".", 1)[0] + ".running_mean" in state and not k.endswith(("running_mean", "running_var")):
            # non-zero betas and non-unit gammas (as in any trained net): with zero betas a
            # "relative difference" after a few steps is a ratio of rounding-sized numbers
            w = spec["bn"]   # narrower for ResNet-34: 33 perturbed layers compound the scale
            lo, hi = (1 - w, 1 + w) if k.endswith(".weight") else (-w, w)
            state[k] = rng.uniform(lo, hi, v.shape).astype(np.float32)
    save_neutral(os.path.join(workdir, "weights.safetensors"), state)
    s, b = spec["size"], spec["batch"]
    np.save(os.path.join(workdir, "input.npy"), rng.normal(0, 1, (b, 3, s, s)).astype(np.float32))
    n = max(1, min(steps, 10))
    np.savez(os.path.join(workdir, "batches.npz"),
             x=rng.integers(0, 256, (n, b, s, s, 3), dtype=np.uint8),
             y=rng.integers(0, spec["classes"], (n, b)).astype(np.int64))
    return state


# ----------------------------------------------------------------------------- comparison

def bn_examples(model: str, name: str, size: int, batch: int) -> int:
    """How many values a BatchNorm layer averages over per channel (batch × its H × W)."""
    layer = next((int(p[5:]) for p in name.split(".") if p.startswith("layer")), 0)
    if model == "resnet18":
        side = size >> max(0, layer - 1)
    else:   # torchvision ResNet-34: stride-2 stem, max-pool, then stages at /4 … /32
        side = size // 2 if layer == 0 else size // 4 >> max(0, layer - 1)
    return batch * side * side


def unbiased_running_var(biased_rv: np.ndarray, rv0: np.ndarray, steps: int, n: int) -> np.ndarray:
    """Map a running variance built from *biased* batch variances onto torch's (unbiased).

    With momentum m, ``rv_t = (1-m)^t·rv0 + Σ m(1-m)^(t-s)·b_s``; torch blends ``b_s·n/(n-1)``
    instead, so its value is ``(1-m)^t·rv0 + (rv_t - (1-m)^t·rv0)·n/(n-1)`` — exactly, without
    knowing the per-step batch variances.
    """
    keep = (1 - BN_MOMENTUM) ** steps
    return keep * rv0 + (biased_rv - keep * rv0) * n / (n - 1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def _state(res: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in res.items() if k.startswith(prefix)}


def compare_states(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest per-tensor relative difference of parameters and of BatchNorm statistics, and
    the relative L2 distance of all parameters together."""
    params = [k for k in a if "running_" not in k]
    stats = [k for k in a if "running_" in k]
    diff = np.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in params))
    norm = np.sqrt(sum(float((b[k] ** 2).sum()) for k in params))
    return {"params_rel": max(_rel(a[k], b[k]) for k in params),
            "params_l2_rel": diff / max(norm, 1e-12),
            "bn_stats_rel": max((_rel(a[k], b[k]) for k in stats), default=0.0)}


def run_parity(model: str = "resnet18", steps: int = 10, backends: Sequence[str] | None = None,
               workdir: str | None = None, tasks: Sequence[str] = ("forward", "train", "data")) -> dict:
    """Run every installed backend on the same inputs and return the pairwise differences."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    names = [b for b in (backends or BACKENDS) if is_installed(b)]
    if len(names) < 2:
        raise RuntimeError(f"parity needs two installed backends, found {names or 'none'}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="d2lkaggle-parity-") as tmp:
            return {**run_parity(model, steps, backends, tmp, tasks), "workdir": None}
    os.makedirs(workdir, exist_ok=True)
    spec = MODELS[model]
    initial = prepare(workdir, model, steps, names[0])
    results = {t: {b: run_worker(b, t, model, workdir, steps) for b in names} for t in tasks}
    rows = []
    for x, y in itertools.combinations(names, 2):
        row: dict[str, Any] = {"pair": f"{x} vs {y}"}
        if "forward" in results:
            la, lb = results["forward"][x]["logits"], results["forward"][y]["logits"]
            row["forward_abs"] = float(np.abs(la - lb).max())
        if "train" in results:
            for when, t in (("step1", 1), ("final", steps)):
                sa = _state(results["train"][x], when + "/")
                sb = _state(results["train"][y], when + "/")
                # torch's running_var is built from unbiased batch variances, the others' not
                for s, backend in ((sa, x), (sb, y)):
                    if backend != "torch":
                        for k in s:
                            if k.endswith("running_var"):
                                n = bn_examples(model, k, spec["size"], spec["batch"])
                                s[k] = unbiased_running_var(s[k], initial[k], t, n)
                d = compare_states(sa, sb)
                row[f"{when}_params_rel"], row[f"{when}_bn_rel"] = d["params_rel"], d["bn_stats_rel"]
                row[f"{when}_params_l2_rel"] = d["params_l2_rel"]
            row["loss_abs"] = float(np.abs(results["train"][x]["losses"] - results["train"][y]["losses"]).max())
        if "data" in results:
            row["batches_identical"] = bool(results["data"][x]["sha256"] == results["data"][y]["sha256"])
            row["to_tensor_abs"] = float(np.abs(results["data"][x]["tensor"] - results["data"][y]["tensor"]).max())
        rows.append(row)
    return {"model": model, "steps": steps, "backends": names, "rows": rows, "workdir": workdir}


def format_table(report: dict) -> str:
    """The report as an aligned text table."""
    cols = [c for c in ("forward_abs", "step1_params_rel", "step1_bn_rel", "final_params_rel",
                        "final_params_l2_rel", "final_bn_rel", "loss_abs", "to_tensor_abs",
                        "batches_identical")
            if any(c in r for r in report["rows"])]
    head = ["pair"] + cols
    lines = [head] + [[r["pair"]] + [(f"{r[c]:.2e}" if isinstance(r[c], float) else str(r[c]))
                                     for c in cols] for r in report["rows"]]
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    text = "\n".join("  ".join(v.ljust(w) for v, w in zip(l, widths)) for l in lines)
    return (f"model {report['model']}, {report['steps']} SGD steps (momentum {MOMENTUM}, wd {WD}, "
            f"lr {LR} then {LR_AFTER} from step {LR_STEP + 1}); max differences:\n{text}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="d2lkaggle parity")
    p.add_argument("--worker", nargs=5, metavar=("BACKEND", "TASK", "MODEL", "DIR", "STEPS"))
    p.add_argument("--model", default="resnet18", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backends", nargs="*", help="default: every installed one")
    a = p.parse_args(argv)
    if a.worker:
        backend, task, model, workdir, steps = a.worker
        _worker(backend, task, model, workdir, int(steps))
        return 0
    report = run_parity(a.model, a.steps, a.backends or None)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
