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

Training is compared twice: in float32 (what users run) and in float64 (``Step(dtype=
"float64")``). Ten float32 steps of a BatchNorm ResNet drift from float64 by ~1e-1 per tensor
in every framework alone (chaotic amplification of rounding), so float32 runs of two
frameworks can only be held to that drift; float64 removes it and leaves the conventions,
which then agree to the float32 rounding of the saved state (~1e-7).
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
import time
from typing import Any, Sequence

import numpy as np

from ..utils.registry import BACKENDS, get_backend, is_installed

#: per model: constructor call, input size, batch size (kept small: paddle is slow on CPU),
#: classes, and the spread of the BatchNorm gammas/betas drawn around 1/0
MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {"build": "B.resnet18(10, 3, 16)", "size": 32, "batch": 16, "classes": 10, "bn": 0.5},
    # the optimizers' parity tests: the same net, narrower and on smaller images (fast)
    "resnet18-tiny": {"build": "B.resnet18(10, 3, 8)", "size": 16, "batch": 8, "classes": 10, "bn": 0.5},
    "resnet34": {"build": "B.resnet34(1000)", "size": 32, "batch": 4, "classes": 1000, "bn": 0.2},
    # its frozen backbone: the ResNet-34 above, calibrated once for both
    "finetune": {"build": "B.finetune_net(120)", "size": 32, "batch": 4, "classes": 120, "bn": 0.2,
                 "frozen_bn": True, "backbone": "resnet34"},
    # the write-ups' models; no dropout (its masks are each framework's own random numbers)
    "cnn_elu": {"build": "B.cnn_elu(10, 3, 64, dropout=0.0)", "size": 64, "batch": 8,
                "classes": 10, "bn": 0.5},
    "efficientnet_v2_s": {"build": "B.efficientnet_v2_s(10, stochastic_depth=0.0, dropout=0.0)",
                          "size": 64, "batch": 2, "classes": 10, "bn": 0.1, "calibrate": 4,
                          "forward_only": True},
    # M and L: torch-saved neutral files into every backend at a small size (forward only;
    # tests/parity/test_effnet_ml_parity.py, and `d2lkaggle parity --model efficientnet_v2_l`)
    "efficientnet_v2_m": {"build": "B.efficientnet_v2_m(10, stochastic_depth=0.0, dropout=0.0)",
                          "size": 32, "batch": 2, "classes": 10, "bn": 0.1, "calibrate": 2,
                          "forward_only": True},
    "efficientnet_v2_l": {"build": "B.efficientnet_v2_l(10, stochastic_depth=0.0, dropout=0.0)",
                          "size": 32, "batch": 2, "classes": 10, "bn": 0.1, "calibrate": 2,
                          "forward_only": True},
    # the speed-run record's net with its optimizer: Nesterov momentum 0.85, the BatchNorm
    # biases at 64 × lr, its BatchNorm momentum 0.4, the whitening bias frozen after step 5
    "airbench94": {"build": "B.airbench94(10)", "size": 32, "batch": 8, "classes": 10, "bn": 0.5,
                   "bn_momentum": 0.4, "freeze": (5, ("whiten.bias",)),
                   "step": {"optimizer": "nesterov", "momentum": 0.85, "bn_bias_lr": 64.0}},
}
BN_MOMENTUM = 0.1   # torch's convention: weight of the new batch statistics
LR, LR_AFTER, LR_STEP, WD, MOMENTUM = 0.01, 0.005, 5, 5e-4, 0.9
#: the optimizers' runs (``--optimizer``): Step keywords and the centre of the cyclic lr;
#: timm's no-decay set is on for nesterov and adamw, so the grouping is compared too
OPTIMIZER_RUNS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 0.01, "wd": 5e-4, "momentum": 0.9},
    "nesterov": {"optimizer": "nesterov", "lr": 0.01, "wd": 5e-4, "momentum": 0.9,
                 "wd_exclude": "bn_bias"},
    "adam": {"optimizer": "adam", "lr": 1e-3, "wd": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8},
    "adamw": {"optimizer": "adamw", "lr": 1e-3, "wd": 5e-2, "betas": (0.9, 0.999), "eps": 1e-8,
              "wd_exclude": "bn_bias"},
}
#: MixUp of the parity batches: the core's :class:`~d2lkaggle.data.mixing.Mixup` (timm's), α = 0.4,
#: drawn per batch from :func:`~d2lkaggle.data.mixing.batch_rng` as the training loop draws it
MIX_ALPHA = 0.4
MIX_SEED = 11
CYCLE_STEPS = 2   # CyclicLR step_size_up (= step_size_down) in iterations


def cyclic_lrs(lr: float, steps: int, step_size: int = CYCLE_STEPS) -> list[float]:
    """The rate of each of ``steps`` iterations of the parity runs' per-step schedule: the
    core's :func:`~d2lkaggle.train.schedules.cyclic` (torch's ``CyclicLR(base_lr=lr/2, max_lr=2·lr,
    step_size_up=step_size, mode="triangular2")``) over one epoch of ``steps`` batches, asked
    at ``t = b / steps`` as the loop asks it."""
    from ..train.schedules import cyclic
    schedule = cyclic(lr / 2, 2 * lr, steps_per_epoch=steps, step_size_up=step_size,
                      mode="triangular2")
    return [schedule(b / steps) for b in range(steps)]


def mix_batches(x: np.ndarray, y: np.ndarray, classes: int, seed: int = MIX_SEED) -> tuple[np.ndarray, np.ndarray]:
    """MixUp of every batch with the core's ``Mixup(mixup_alpha=MIX_ALPHA)`` and the loop's
    per-batch generator ``batch_rng(seed, 0, b)``: float32 pixels in 0..255 and float32 soft
    targets, the bytes the loop would hand each backend, made once by :func:`prepare`."""
    from ..data.mixing import batch_rng, mixup
    mixing = mixup(MIX_ALPHA, num_classes=classes)
    xs, ys = [], []
    for b, (xb, yb) in enumerate(zip(x, y)):
        xm, ym = mixing(xb, yb, batch_rng(seed, 0, b))
        xs.append(np.asarray(xm, dtype=np.float32))
        ys.append(ym)
    return np.stack(xs), np.stack(ys)


def run_name(optimizer: str, mixing: bool) -> str:
    """The file tag of one optimizer run (``adam-mix``)."""
    return optimizer + ("-mix" if mixing else "")


MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


# ----------------------------------------------------------------------------- the worker

def _init_state(B: Any, model: str,  # noqa: N803 (a backend module)
                cache: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """The reference backend's freshly built ``model`` (seed 0) with BatchNorm statistics of
    the input distribution (30 steps at lr 0: only they change), so that inference-mode
    activations, and thus the logits compared, have a realistic scale.

    A model with a frozen ``backbone`` (the fine-tune net) takes that model's calibrated state
    (minus its classifier) and its own new head. ``cache`` keeps each model's state, so one
    process calibrates a model once however many cases use it."""
    cache = {} if cache is None else cache
    if model in cache:
        return cache[model]
    spec = MODELS[model]
    B.set_seed(0)
    net = eval(spec["build"])
    if spec.get("backbone"):
        head = {k: v for k, v in B.get_state(net).items() if k.startswith("head.")}
        base = _init_state(B, spec["backbone"], cache)
        state = {**{k: v for k, v in base.items() if not k.startswith("fc.")}, **head}
    else:
        # (at lr 0 no weight moves whatever the optimizer: plain SGD is the cheapest update)
        step = B.Step(net, lr=0.0, momentum=0.0, wd=0.0, amp=False)
        rng = np.random.default_rng(1)
        s, b = spec["size"], spec["batch"]
        for _ in range(spec.get("calibrate", 30)):   # (fewer for a slow, big model)
            step.train_batch(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
                             rng.integers(0, 10, b))
        state = B.get_state(net)
    cache[model] = state
    return state


def _worker(backend: str, task: str, model: str, workdir: str, steps: int,
            optimizers: Sequence[str] = (), mixing: bool = False) -> None:
    """Run one task in this process, with one framework, and save its numpy results.

    With ``optimizers``, ``train``/``train64`` run each of :data:`OPTIMIZER_RUNS` named there
    (cyclic lr; MixUp'd soft targets when ``mixing``), one result file per optimizer."""
    from ..utils.files import save_npz
    B = get_backend(backend)  # noqa: N806 (used by the MODELS expressions)
    spec = MODELS[model]
    out: dict[str, np.ndarray] = {}
    if task == "init":
        out = {"model/" + k: v for k, v in _init_state(B, model).items()}
    elif task == "forward":
        net = eval(spec["build"])
        B.load_weights(net, os.path.join(workdir, "weights.safetensors"))
        out["logits"] = B.forward(net, np.load(os.path.join(workdir, "input.npy")))
    elif task in ("train", "train64") and optimizers:
        # the optimizers' runs: a cyclic lr per step, int or mixed soft targets
        with np.load(os.path.join(workdir, "batches.npz")) as z:
            xs, ys = (z["xm"], z["ym"]) if mixing else (z["x"], z["y"])
        for opt in optimizers:
            net = eval(spec["build"])
            B.load_weights(net, os.path.join(workdir, "weights.safetensors"))
            kw = dict(OPTIMIZER_RUNS[opt])
            step = B.Step(net, amp=False, mean=MEAN, std=STD,
                          dtype="float64" if task == "train64" else "float32", **kw)
            res: dict[str, np.ndarray] = {}
            losses = []
            for i, lr in enumerate(cyclic_lrs(kw["lr"], steps)):
                step.set_lr(lr)
                ls, _, n = step.train_batch(xs[i % len(xs)], ys[i % len(ys)])
                losses.append(ls / n)
                if i == 0:
                    res.update({"step1/" + k: np.array(v, np.float64) for k, v in step.state_dict().items()})
            res.update({"final/" + k: np.array(v, np.float64) for k, v in step.state_dict().items()})
            res["losses"] = np.array(losses)
            save_npz(os.path.join(workdir, f"{backend}-{task}-{run_name(opt, mixing)}.npz"), res)
        return
    elif task in ("train", "train64"):
        net = eval(spec["build"])
        B.load_weights(net, os.path.join(workdir, "weights.safetensors"))
        kw = {"lr": LR, "wd": WD, "momentum": MOMENTUM, **spec.get("step", {})}
        step = B.Step(net, amp=False, mean=MEAN, std=STD,
                      dtype="float64" if task == "train64" else "float32", **kw)
        with np.load(os.path.join(workdir, "batches.npz")) as z:
            xs, ys = z["x"], z["y"]
        losses = []
        freeze_at, frozen = spec.get("freeze", (None, ()))
        for i in range(steps):
            if i == freeze_at:
                step.freeze(list(frozen))
            step.set_lr(LR if i < LR_STEP else LR_AFTER)   # a StepLR change in between
            ls, _, n = step.train_batch(xs[i % len(xs)], ys[i % len(ys)])
            losses.append(ls / n)
            if i == 0:   # parameters, BatchNorm statistics and momentum buffers (torch's form)
                out.update({"step1/" + k: np.array(v, np.float64) for k, v in step.state_dict().items()})
        out.update({"final/" + k: np.array(v, np.float64) for k, v in step.state_dict().items()})
        out["losses"] = np.array(losses)
    elif task == "data":
        from ..data.loader import ArraySource, ImageLoader
        from ..data.transforms import cifar_train
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
               timeout: int = 900, optimizers: Sequence[str] = (), mixing: bool = False) -> Any:
    """Run :func:`_worker` in a fresh interpreter and load what it saved (with
    ``optimizers``: ``{optimizer: results}``, all of them trained in that one process)."""
    from ..utils.files import load_npz
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    extra = (["--optimizers", ",".join(optimizers)] + (["--mixing"] if mixing else [])
             if optimizers and task in ("train", "train64") else [])
    r = subprocess.run([sys.executable, "-m", "d2lkaggle.models.parity", "--worker", backend, task, model,
                        workdir, str(steps)] + extra, capture_output=True, text=True, env=env,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{backend} parity worker ({task}, {model}) failed:\n{r.stderr[-3000:]}")
    if extra:
        return {o: load_npz(os.path.join(workdir, f"{backend}-{task}-{run_name(o, mixing)}.npz"))[0]
                for o in optimizers}
    return load_npz(os.path.join(workdir, f"{backend}-{task}.npz"))[0]


# ----------------------------------------------------------------------------- inputs

def prepare(workdir: str, model: str, steps: int, reference: str, seed: int = 0,
            state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Shared inputs: neutral weights (BatchNorm statistics calibrated on the input
    distribution, gammas and betas perturbed), one float input and the uint8 training batches.

    ``state``: the calibrated state (:func:`_init_state`) when the caller has it already;
    otherwise ``reference`` computes it in a worker process."""
    from .weights import save_neutral
    spec = MODELS[model]
    if state is None:
        state = {k[6:]: v for k, v in run_worker(reference, "init", model, workdir).items()}
    state = dict(state)   # (perturbed below: the caller's dict stays as it was)
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
    x = rng.integers(0, 256, (n, b, s, s, 3), dtype=np.uint8)
    y = rng.integers(0, spec["classes"], (n, b)).astype(np.int64)
    xm, ym = mix_batches(x, y, spec["classes"])
    np.savez(os.path.join(workdir, "batches.npz"), x=x, y=y, xm=xm, ym=ym)
    return state


# ----------------------------------------------------------------------------- comparison

def bn_examples(model: str, name: str, size: int, batch: int) -> int:
    """How many values a BatchNorm layer averages over per channel (batch × its H × W)."""
    if model == "cnn_elu":   # layer.{i}: halved by each max-pool before it; fc_layer: per example
        from .table import CNN_ELU
        if not name.startswith("layer."):
            return batch
        pos = int(name.split(".")[1])
        pools = sum(1 for kind, p, _ in CNN_ELU.layer_names() if kind == "pool" and p < pos)
        return batch * (size >> pools) ** 2
    if model == "airbench94":   # block i: the 2×2 stem (size − 1), then i max-pools of 2
        side = size - 1
        for _ in range(int(name.split(".")[0][len("block"):])):
            side //= 2
        return batch * side * side
    if model not in MODELS or model.startswith("efficientnet"):
        raise ValueError(f"no BatchNorm sizes for {model!r} (compare its forward pass only)")
    layer = next((int(p[5:]) for p in name.split(".") if p.startswith("layer")), 0)
    if model.startswith("resnet18"):
        side = size >> max(0, layer - 1)
    else:   # torchvision ResNet-34: stride-2 stem, max-pool, then stages at /4 … /32
        side = size // 2 if layer == 0 else size // 4 >> max(0, layer - 1)
    return batch * side * side


def unbiased_running_var(biased_rv: np.ndarray, rv0: np.ndarray, steps: int, n: int,
                         momentum: float = BN_MOMENTUM) -> np.ndarray:
    """Map a running variance built from *biased* batch variances onto torch's (unbiased).

    With momentum m, ``rv_t = (1-m)^t·rv0 + Σ m(1-m)^(t-s)·b_s``; torch blends ``b_s·n/(n-1)``
    instead, so its value is ``(1-m)^t·rv0 + (rv_t - (1-m)^t·rv0)·n/(n-1)`` — exactly, without
    knowing the per-step batch variances.
    """
    keep = (1 - momentum) ** steps
    return keep * rv0 + (biased_rv - keep * rv0) * n / (n - 1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def _state(res: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in res.items() if k.startswith(prefix)}


def compare_states(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest per-tensor relative difference of parameters, of momentum buffers and of
    BatchNorm statistics, and the relative L2 distance of all parameters together."""
    params = [k for k in a if k.startswith("model/") and "running_" not in k]
    stats = [k for k in a if "running_" in k]
    moms = [k for k in a if k.startswith("optim/")]
    if set(a) != set(b):
        raise ValueError(f"the runs saved different names: {sorted(set(a) ^ set(b))[:5]}")
    diff = np.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in params))
    norm = np.sqrt(sum(float((b[k] ** 2).sum()) for k in params))
    # an optimizer-state tensor that is pure rounding — the moments of a conv bias before a
    # BatchNorm (exact gradient 0) when no weight decay reaches it (timm's no-decay set) —
    # is measured against 1e-6 of the largest tensor of its kind, not against its own noise
    top: dict[str, float] = {}
    for k in moms:
        slot = k.rsplit("/", 1)[1]
        top[slot] = max(top.get(slot, 0.0), float(np.abs(b[k]).max()))
    mom_rel = max((float(np.abs(a[k] - b[k]).max()) /
                   max(float(np.abs(b[k]).max()), 1e-6 * top[k.rsplit("/", 1)[1]], 1e-12)
                   for k in moms), default=0.0)
    return {"params_rel": max(_rel(a[k], b[k]) for k in params),
            "params_l2_rel": diff / max(norm, 1e-12),
            "momentum_rel": mom_rel,
            "bn_stats_rel": max((_rel(a[k], b[k]) for k in stats), default=0.0)}


def compare_train(ra: dict, rb: dict, backend_a: str, backend_b: str,
                  initial: dict[str, np.ndarray], model: str, steps: int) -> dict[str, float]:
    """Two training runs: parameters, momentum and BatchNorm statistics after one step and
    after all steps, and the per-step losses. A biased running_var (MXNet, Paddle) is mapped
    onto torch's unbiased convention first (exact, :func:`unbiased_running_var`)."""
    spec = MODELS[model]
    row: dict[str, float] = {}
    for when, t in (("step1", 1), ("final", steps)):
        sa, sb = _state(ra, when + "/"), _state(rb, when + "/")
        # (a frozen backbone's statistics never move: nothing to map)
        if (backend_a == "torch" or backend_b == "torch") and not spec.get("frozen_bn"):
            for s, backend in ((sa, backend_a), (sb, backend_b)):
                if backend != "torch":
                    for k in s:
                        if k.endswith("running_var"):
                            n = bn_examples(model, k[6:], spec["size"], spec["batch"])
                            s[k] = unbiased_running_var(s[k], initial[k[6:]], t, n,
                                                        spec.get("bn_momentum", BN_MOMENTUM))
        d = compare_states(sa, sb)
        row[f"{when}_params_rel"], row[f"{when}_bn_rel"] = d["params_rel"], d["bn_stats_rel"]
        row[f"{when}_momentum_rel"], row[f"{when}_params_l2_rel"] = d["momentum_rel"], d["params_l2_rel"]
    la, lb = ra["losses"], rb["losses"]
    row["loss_abs"] = float(np.abs(la - lb).max())
    row["loss_rel"] = float((np.abs(la - lb) / np.maximum(np.abs(lb), 1e-12)).max())
    return row


#: what a case can run in each backend (``prepare``, the inputs, is the reference's own job)
TASKS = ("forward", "train", "train64", "data")


def parity_case(model: str = "resnet18", steps: int = 10,
                tasks: Sequence[str] = ("forward", "train", "train64", "data"),
                optimizers: Sequence[str] | None = None, mixing: bool = False) -> dict[str, Any]:
    """One comparison :func:`run_cases` runs, checked and normalised (the arguments of
    :func:`run_parity`): a forward-only model keeps ``forward``/``data``; the optimizers' runs
    (``optimizers`` or ``mixing``) keep ``train``/``train64`` (default ``train64``)."""
    if optimizers is not None or mixing:
        optimizers = list(optimizers or ["sgd"])
        bad = [o for o in optimizers if o not in OPTIMIZER_RUNS]
        if bad:
            raise ValueError(f"unknown optimizer {bad[0]!r}; choose from {', '.join(OPTIMIZER_RUNS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown parity task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if optimizers:
        tasks = [t for t in tasks if t in ("train", "train64")] or ["train64"]
    elif MODELS[model].get("forward_only"):   # (training at batch 2 would compare BatchNorm noise)
        tasks = [t for t in tasks if t in ("forward", "data")]
    return {"model": model, "steps": int(steps), "tasks": list(tasks), "optimizers": optimizers,
            "mixing": bool(mixing)}


def _run_jobs(backend: str, path: str) -> None:
    """Run every job of the JSON list at ``path`` in this process, with one framework (the
    framework is imported once; a model's calibrated state is computed once per process)."""
    with open(path) as f:
        jobs = json.load(f)
    initial: dict[str, dict[str, np.ndarray]] = {}
    seconds = []   # (where a parity run spends its time: written beside the job list)
    for job in jobs:
        task, model = job["task"], job["model"]
        t0 = time.perf_counter()
        try:
            if task == "prepare":
                state = _init_state(get_backend(backend), model, initial)
                prepare(job["dir"], model, job["steps"], backend, state=state)
            else:
                _worker(backend, task, model, job["dir"], job["steps"],
                        tuple(job.get("optimizers") or ()), bool(job.get("mixing")))
        except Exception as e:
            raise RuntimeError(f"{backend} parity job {task} of {model} in {job['dir']} failed") from e
        seconds.append([task, model, os.path.basename(job["dir"]), round(time.perf_counter() - t0, 2)])
        with open(path[:-len(".json")] + "-seconds.json", "w") as f:
            json.dump(seconds, f)


def _spawn_jobs(backend: str, jobs: list[dict], workdir: str, timeout: int) -> float:
    """Run ``jobs`` in a fresh interpreter for ``backend``; its wall time in seconds."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path = os.path.join(workdir, f"{backend}-jobs.json")
    with open(path, "w") as f:
        json.dump(jobs, f)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "d2lkaggle.models.parity", "--jobs", backend, path],
                       capture_output=True, text=True, env=env, timeout=timeout * max(1, len(jobs)))
    if r.returncode != 0:
        what = ", ".join(sorted({f"{j['task']} {j['model']}" for j in jobs}))
        raise RuntimeError(f"{backend} parity worker ({what}) failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def run_cases(cases: dict[str, dict[str, Any]], backends: Sequence[str] | None = None,
              workdir: str | None = None, timeout: int = 900) -> dict[str, dict]:
    """:func:`run_parity` for several comparisons at once, in ONE process per backend.

    ``cases`` maps a name to :func:`run_parity`'s keywords (``model``, ``steps``, ``tasks``,
    ``optimizers``, ``mixing``); the result maps each name to its report. The first installed
    backend calibrates each model once and writes every case's inputs, then each backend runs
    all cases' tasks in one interpreter: a framework is imported once per backend, not once
    per task (what dominates a parity run on a small CPU). Case ``""`` uses ``workdir`` itself,
    any other ``workdir/<name>``. ``report["seconds"]``: each backend's process wall time (for
    all cases together; ``<backend>-jobs-seconds.json`` in ``workdir`` has it per job).
    """
    from ..utils.files import load_npz
    from .weights import load_neutral
    specs = {name: parity_case(**dict(c)) for name, c in cases.items()}
    names = [b for b in (backends or BACKENDS) if is_installed(b)]
    if len(names) < 2:
        raise RuntimeError(f"parity needs two installed backends, found {names or 'none'}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="d2lkaggle-parity-") as tmp:
            return {k: {**r, "workdir": None} for k, r in run_cases(cases, backends, tmp, timeout).items()}
    dirs = {name: os.path.join(workdir, name) if name else workdir for name in specs}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    prep = [{"task": "prepare", "model": c["model"], "dir": dirs[n], "steps": c["steps"]}
            for n, c in specs.items()]
    work = [{"task": t, "model": c["model"], "dir": dirs[n], "steps": c["steps"],
             "optimizers": c["optimizers"], "mixing": c["mixing"]}
            for n, c in specs.items() for t in c["tasks"]]
    seconds = {b: round(_spawn_jobs(b, (prep if b == names[0] else []) + work, workdir, timeout), 1)
               for b in names}

    def result(b: str, t: str, c: dict, d: str) -> Any:
        if c["optimizers"]:
            return {o: load_npz(os.path.join(d, f"{b}-{t}-{run_name(o, c['mixing'])}.npz"))[0]
                    for o in c["optimizers"]}
        return load_npz(os.path.join(d, f"{b}-{t}.npz"))[0]

    reports = {}
    for n, c in specs.items():
        initial = load_neutral(os.path.join(dirs[n], "weights.safetensors"))
        results = {t: {b: result(b, t, c, dirs[n]) for b in names} for t in c["tasks"]}
        report = (_optimizer_report if c["optimizers"] else _report)(c, names, results, initial)
        reports[n] = {**report, "workdir": dirs[n], "seconds": seconds}
    return reports


def run_parity(model: str = "resnet18", steps: int = 10, backends: Sequence[str] | None = None,
               workdir: str | None = None,
               tasks: Sequence[str] = ("forward", "train", "train64", "data"),
               optimizers: Sequence[str] | None = None, mixing: bool = False) -> dict:
    """Run every installed backend on the same inputs and return the pairwise differences.

    ``train`` trains in float32 (what users run), ``train64`` the same steps in float64: the
    conventions, without float32 rounding. ``report["rounding"]`` compares each backend's
    float32 run with its own float64 run: how far float32 alone moves the same training.

    ``optimizers`` (names of :data:`OPTIMIZER_RUNS`) trains with each of them instead of the
    chapters' SGD with one lr change: a triangular2 cyclic lr per step and, with ``mixing``,
    MixUp'd float32 pixels with soft targets; ``report["rows"]`` then has one row per pair
    and optimizer (``row["optimizer"]``). One process per backend (:func:`run_cases`).
    """
    case = {"model": model, "steps": steps, "tasks": tasks, "optimizers": optimizers,
            "mixing": mixing}
    return run_cases({"": case}, backends, workdir)[""]


def _report(c: dict, names: list[str], results: dict, initial: dict[str, np.ndarray]) -> dict:
    """The chapters' comparison (forward, SGD training in float32/float64, data pipeline)."""
    model, steps = c["model"], c["steps"]
    rows = []
    for x, y in itertools.combinations(names, 2):
        row: dict[str, Any] = {"pair": f"{x} vs {y}"}
        if "forward" in results:
            la, lb = results["forward"][x]["logits"], results["forward"][y]["logits"]
            row["forward_abs"] = float(np.abs(la - lb).max())
        for task, prefix in (("train", ""), ("train64", "f64_")):
            if task in results:
                d = compare_train(results[task][x], results[task][y], x, y, initial, model, steps)
                row.update({prefix + k: v for k, v in d.items()})
        if "data" in results:
            row["batches_identical"] = bool(results["data"][x]["sha256"] == results["data"][y]["sha256"])
            row["to_tensor_abs"] = float(np.abs(results["data"][x]["tensor"] - results["data"][y]["tensor"]).max())
        rows.append(row)
    rounding = []
    if "train" in results and "train64" in results:
        for b in names:   # same backend, same conventions: only the precision differs
            d = compare_train(results["train"][b], results["train64"][b], b, b, initial, model, steps)
            rounding.append({"pair": f"{b} f32 vs f64", **d})
    return {"model": model, "steps": steps, "backends": names, "rows": rows, "rounding": rounding,
            "tasks": sorted(results)}


def _optimizer_report(c: dict, names: list[str], results: dict, initial: dict[str, np.ndarray]) -> dict:
    """The optimizers' comparison: one row per pair and optimizer."""
    model, steps, optimizers = c["model"], c["steps"], c["optimizers"]
    rows, rounding = [], []
    for opt in optimizers:
        for x, y in itertools.combinations(names, 2):
            row: dict[str, Any] = {"pair": f"{x} vs {y}", "optimizer": opt}
            for task, prefix in (("train", ""), ("train64", "f64_")):
                if task in results:
                    d = compare_train(results[task][x][opt], results[task][y][opt], x, y, initial,
                                      model, steps)
                    row.update({prefix + k: v for k, v in d.items()})
            rows.append(row)
        if "train" in results and "train64" in results:
            for b in names:
                d = compare_train(results["train"][b][opt], results["train64"][b][opt], b, b,
                                  initial, model, steps)
                rounding.append({"pair": f"{b} f32 vs f64", "optimizer": opt, **d})
    return {"model": model, "steps": steps, "backends": names, "rows": rows, "rounding": rounding,
            "optimizers": optimizers, "mixing": c["mixing"],
            "lrs": {o: cyclic_lrs(OPTIMIZER_RUNS[o]["lr"], steps) for o in optimizers}}


COLUMNS = ("forward_abs",
           "step1_params_rel", "step1_momentum_rel", "step1_bn_rel", "final_params_rel",
           "final_params_l2_rel", "final_momentum_rel", "final_bn_rel", "loss_abs", "loss_rel",
           "f64_step1_params_rel", "f64_final_params_rel", "f64_final_params_l2_rel",
           "f64_final_momentum_rel", "f64_final_bn_rel", "f64_loss_abs",
           "to_tensor_abs", "batches_identical")


def format_table(report: dict) -> str:
    """The report as an aligned text table: one row per measure, one column per pair (and per
    backend's own float32-vs-float64 run)."""
    cols = report["rows"] + report.get("rounding", [])
    measures = [m for m in COLUMNS if any(m in c for c in cols)]
    cell = lambda v: "-" if v is None else f"{v:.1e}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [["max difference"] + [c["pair"] + (f" {c['optimizer']}" if "optimizer" in c else "")
                                   for c in cols]]
    lines += [[m] + [cell(c.get(m)) for c in cols] for m in measures]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
    spec = MODELS[report["model"]]
    if report.get("optimizers"):
        runs = "; ".join(f"{o} " + ", ".join(f"{k} {v}" for k, v in OPTIMIZER_RUNS[o].items()
                                             if k != "optimizer") for o in report["optimizers"])
        targets = f"MixUp α={MIX_ALPHA} soft targets" if report["mixing"] else "int labels"
        return (f"model {report['model']} ({spec['size']}×{spec['size']}, batch {spec['batch']}), "
                f"{report['steps']} steps, CyclicLR triangular2 per step (lr/2 … 2·lr, step size "
                f"{CYCLE_STEPS}), {targets}; {runs}; float32 unless f64_:\n{text}")
    head = f"model {report['model']} ({spec['size']}×{spec['size']}, batch {spec['batch']}), "
    if not {"train", "train64"} & set(report.get("tasks", ["train"])):
        return head + f"eval-mode forward pass only (no training steps); float32:\n{text}"
    kw = {"momentum": MOMENTUM, **spec.get("step", {})}
    sgd = "Nesterov SGD" if kw.get("optimizer") == "nesterov" else "SGD"
    extra = "".join([f", BatchNorm biases at lr x{kw['bn_bias_lr']:g} and wd /{kw['bn_bias_lr']:g}"
                     if "bn_bias_lr" in kw else "",
                     f", {', '.join(spec['freeze'][1])} frozen from step {spec['freeze'][0] + 1}"
                     if "freeze" in spec else ""])
    return head + (f"{report['steps']} {sgd} steps (momentum {kw['momentum']}, wd {WD}, lr {LR} "
                   f"then {LR_AFTER} from step {LR_STEP + 1}{extra}); float32 unless f64_:\n{text}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="d2lkaggle parity")
    p.add_argument("--worker", nargs=5, metavar=("BACKEND", "TASK", "MODEL", "DIR", "STEPS"))
    p.add_argument("--jobs", nargs=2, metavar=("BACKEND", "JOBS_JSON"),
                   help="run a list of worker jobs in this process (what run_cases spawns)")
    p.add_argument("--model", default="resnet18", choices=list(MODELS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backends", nargs="*", help="default: every installed one")
    p.add_argument("--optimizers", help="comma-separated optimizer runs (default: the chapters' SGD)")
    p.add_argument("--mixing", action="store_true", help="MixUp'd soft targets")
    a = p.parse_args(argv)
    opts = a.optimizers.split(",") if a.optimizers else None
    if a.jobs:
        _run_jobs(*a.jobs)
        return 0
    if a.worker:
        backend, task, model, workdir, steps = a.worker
        _worker(backend, task, model, workdir, int(steps), tuple(opts or ()), a.mixing)
        return 0
    report = run_parity(a.model, a.steps, a.backends or None, optimizers=opts, mixing=a.mixing)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
