"""One command, one table: d2lkaggle against the textbook's own code, on the same data and machine.

    python -m benchmarks                     # every row, medians of 3 interleaved repeats
    python -m benchmarks --quick             # tiny sizes, 1 repeat (a smoke test, not figures)
    python -m benchmarks --only train-torch,reorg --repeats 5
    python -m benchmarks --list              # the rows and what they compare

Every measurement runs in a fresh subprocess (``python -m benchmarks.worker``): thread counts
and framework switches must be set before a framework loads, and importing one framework
changes another's threads. The settings of a row (ours, the textbook) alternate repeat by
repeat, so load from elsewhere hits both alike; the table shows medians. Rows from other
scripts (``benchmarks/<name>.py`` with ``rows(quick: bool) -> list[dict]``) are added when
present. A full run (no ``--only``, no ``--quick``) rewrites the table between the markers in
benchmarks/README.md, with the machine it ran on.

Data sets are generated once into ``$D2LKAGGLE_BENCH_CACHE`` (default
``~/.cache/d2lkaggle-bench``) and reused; they are never part of the repository.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata as md
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BEGIN, END = "<!-- benchmarks:begin (python -m benchmarks rewrites this section) -->", \
    "<!-- benchmarks:end -->"


def cache_dir() -> str:
    """Where generated benchmark data lives (``D2LKAGGLE_BENCH_CACHE``)."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get("D2LKAGGLE_BENCH_CACHE", "~/.cache/d2lkaggle-bench")))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data sets

def demo_set(n_train: int) -> str:
    """A CIFAR-10-layout demo competition of ``n_train`` 32×32 PNGs (+ the book's tree)."""
    from d2lkaggle.data.demo import make_demo
    from d2lkaggle.data.images import list_images, load_image_array
    from d2lkaggle.data.labels import read_csv_labels
    from d2lkaggle.data.reorg import reorg_train_valid
    path = os.path.join(cache_dir(), f"demo-{n_train}")
    if os.path.exists(os.path.join(path, ".complete")):
        return path
    t = time.perf_counter()
    make_demo(path, n_train=n_train, n_test=10, seed=0)
    # the book reads its reorganised tree (train_valid_test/<part>/<class>/); same files
    reorg_train_valid(path, read_csv_labels(os.path.join(path, "trainLabels.csv")), 0.1,
                      seed=0, mode="link")
    t1 = time.perf_counter()
    # the decoded uint8 cache the library builds on its first run over these files
    load_image_array(list_images(os.path.join(path, "train")))
    t2 = time.perf_counter()
    with open(os.path.join(path, ".complete"), "w") as f:
        json.dump({"generate_s": t1 - t, "decode_s": t2 - t1, "n": n_train}, f)
    log(f"  generated {path} ({n_train} PNGs) in {t1 - t:.1f} s, decoded cache {t2 - t1:.1f} s")
    return path


def decode_seconds(path: str) -> float:
    with open(os.path.join(path, ".complete")) as f:
        return float(json.load(f)["decode_s"])


def reorg_set(n_train: int, n_test: int) -> str:
    """A CIFAR-10-sized Kaggle folder of PNGs for the reorganisation rows."""
    sys.path.insert(0, HERE)
    from reorg_speed import make_competition  # noqa: E402 (the existing generator)
    path = os.path.join(cache_dir(), f"reorg-{n_train}-{n_test}")
    if os.path.exists(os.path.join(path, ".complete")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    make_competition(path, n_train, n_test)
    open(os.path.join(path, ".complete"), "w").close()
    log(f"  generated {path} ({n_train}+{n_test} PNGs) in {time.perf_counter() - t:.1f} s")
    return path


# --------------------------------------------------------------------------- measuring

def run_job(job: dict, timeout: float = 900) -> dict:
    """Run one measurement in a fresh ``python -m benchmarks.worker`` process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("D2LKAGGLE_DATA", os.path.join(cache_dir(), "d2lkaggle-data"))
    t = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(job)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not lines:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit {r.returncode}: {tail[:300]}")
    out = json.loads(lines[-1][7:])
    out["_wall"] = time.perf_counter() - t
    return out


@dataclass
class Row:
    """One line of the table: ``ours`` and ``textbook`` are jobs (or callables) giving ``key``."""

    name: str
    what: str
    unit: str
    goal: float
    higher_is_better: bool
    ours: Callable[[bool], dict]
    textbook: Callable[[bool], dict]
    key: str
    note: Callable[[list, list, bool], str] = lambda o, t, q: ""
    kind: str = "ratio"        # "ratio": ours / textbook; "delta": ours - textbook (accuracy)
    repeats: int | None = None  # fixed repeats (e.g. 1 for a long accuracy run)
    pre: Callable[[bool], None] | None = None
    alternate: bool = True      # swap which side runs first every other repeat
    extra: dict = field(default_factory=dict)


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def measure(row: Row, repeats: int, quick: bool) -> dict:
    """Interleave ours/textbook ``repeats`` times; medians, ratio, goal met or missed."""
    n = row.repeats or repeats
    if row.pre:
        row.pre(quick)
    ours, book = [], []
    for r in range(n):
        sides = [("ours", row.ours, ours), ("textbook", row.textbook, book)]
        if row.alternate and r % 2:
            sides.reverse()  # ABBA order: neither side always runs first
        for side, fn, acc in sides:
            t = time.perf_counter()
            res = fn(quick)
            acc.append(res)
            log(f"  {row.name} [{r + 1}/{n}] {side:8s} {_fmt(res[row.key])} {row.unit} "
                f"({time.perf_counter() - t:.0f} s)")
    o = statistics.median(x[row.key] for x in ours)
    b = statistics.median(x[row.key] for x in book)
    if row.kind == "delta":
        ratio = o - b
        met = ratio >= -row.goal
        goal = f"ours ≥ textbook − {row.goal:g}"
        ratio_s = f"{ratio:+.3f}"
    else:
        ratio = o / b if b else math.nan
        met = ratio >= row.goal if row.higher_is_better else ratio <= row.goal
        goal = ("≥ " if row.higher_is_better else "≤ ") + f"{row.goal:g}×"
        ratio_s = f"{ratio:.2f}×"
    spread = lambda xs: "/".join(_fmt(x[row.key]) for x in xs)  # noqa: E731
    note = row.note(ours, book, quick)
    if n > 1:
        note = (note + "; " if note else "") + f"repeats {spread(ours)} vs {spread(book)}"
    return {"row": row.name, "what": row.what, "ours": o, "textbook": b, "unit": row.unit,
            "ratio": ratio, "ratio_s": ratio_s, "goal": goal, "met": bool(met), "note": note}


# --------------------------------------------------------------------------- the rows

def _sizes(quick: bool) -> dict:
    if quick:
        return dict(n=320, b32=(1, 2), b128=(1, 1), mx=(1, 1), pd=(1, 1), acc_n=400, epochs=1,
                    pipe=3, reorg=(500, 100))
    return dict(n=2560, b32=(3, 30), b128=(2, 12), mx=(2, 10), pd=(1, 4), acc_n=1000, epochs=12,
                pipe=60, reorg=(50_000, 10_000))


def _train_rows() -> list[Row]:
    def job(kind, backend, batch, which):
        def f(quick):
            s = _sizes(quick)
            warm, steps = s[which]
            d = demo_set(s["n"])
            if kind == "ours":
                return run_job(dict(job="ours_train", backend=backend, data_dir=d, batch=batch,
                                    steps=steps, warmup=warm))
            return run_job(dict(job="book", module=f"{backend}_cifar", fn="train_speed",
                                data_dir=d, batch_size=batch, steps=steps, warmup=warm))
        return f

    def note_torch(o, b, q):
        x = o[0]
        path = ("bf16 autocast + channels_last" if x.get("bf16") else "fp32 NCHW")
        return (f"ours: {path} (amp='auto'), {x.get('threads')} threads, decoded uint8 cache "
                f"(built once: {decode_seconds(demo_set(_sizes(q)['n'])):.1f} s for "
                f"{_sizes(q)['n']} PNGs); textbook: ImageFolder + DataLoader(num_workers=0), fp32")

    def pre(quick):
        demo_set(_sizes(quick)["n"])

    rows = []
    for batch, which in ((32, "b32"), (128, "b128")):
        rows.append(Row(f"train-torch-b{batch}",
                        f"training, book ResNet-18, CIFAR recipe, batch {batch}, torch, end to end",
                        "examples/s", 2.2, True, job("ours", "torch", batch, which),
                        job("book", "torch", batch, which), "examples_per_sec", note_torch,
                        pre=pre))
    rows.append(Row("train-mxnet", "training, batch 32, MXNet vs the chapter's MXNet tab",
                    "examples/s", 1.5, True, job("ours", "mxnet", 32, "mx"),
                    job("book", "mxnet", 32, "mx"), "examples_per_sec",
                    lambda o, b, q: "textbook: ImageFolderDataset + gluon DataLoader, hybridized, "
                                    "MXNet's default threads", pre=pre))
    rows.append(Row("train-paddle", "training, batch 32, Paddle vs the Paddle tab",
                    "examples/s", 3.0, True, job("ours", "paddle", 32, "pd"),
                    job("book", "paddle", 32, "pd"), "examples_per_sec",
                    lambda o, b, q: "textbook: DatasetFolder + paddle.io.DataLoader, "
                                    "paddle.DataParallel, Paddle's default threads", pre=pre))

    def note_vs_torch(o, b, q):
        return (f"issue 24: ours in {o[0].get('precision')} against ours in torch "
                f"({b[0].get('precision')}, the 'textbook' column), batch 128, the same loader; "
                "Paddle's dygraph has no CPU bf16 path (docs/speed.md)")
    for backend, which in (("mxnet", "mx"), ("paddle", "pd")):
        rows.append(Row(f"{backend}-vs-torch-b128",
                        f"training, batch 128, {backend} against torch (both ours, amp='auto')",
                        "examples/s", 0.7, True, job("ours", backend, 128, which),
                        job("ours", "torch", 128, which), "examples_per_sec", note_vs_torch,
                        pre=pre))
    return rows


def _accuracy_row() -> Row:
    batch, lr, wd = 32, 0.05, 5e-4   # the chapter's recipe at batch 32, on the batch mean

    def f(kind):
        def g(quick):
            s = _sizes(quick)
            d = demo_set(s["acc_n"])
            if kind == "ours":
                return run_job(dict(job="ours_accuracy", data_dir=d, batch=batch,
                                    epochs=s["epochs"], lr=lr))
            # The chapter back-propagates the SUM of the batch's losses, the library the mean:
            # lr / batch and wd · batch give the chapter's SGD the very step ours takes (at
            # the same lr its summed step is 32× ours and diverged to NaN in 12 epochs).
            return run_job(dict(job="book", module="torch_cifar", fn="accuracy_run", data_dir=d,
                                batch_size=batch, epochs=s["epochs"], lr=lr / batch,
                                wd=wd * batch))
        return g

    def note(o, b, q):
        s = _sizes(q)
        return (f"demo set ({s['acc_n']} PNGs, 10 % valid), {s['epochs']} epochs, batch 32, "
                f"SGD lr 0.05 momentum 0.9 wd 5e-4 on the batch mean, StepLR(4, 0.9), both "
                f"sides (the textbook's summed loss gets lr 0.05/32, wd 5e-4·32: the same "
                f"step); one run each "
                f"(±1 image = ±{1 / (s['acc_n'] // 10):.2f}); ours trained in "
                f"{o[0]['seconds']:.0f} s, textbook {b[0]['seconds']:.0f} s")
    return Row("accuracy-torch", "valid accuracy after the same epochs, torch", "accuracy",
               0.05, True, f("ours"), f("book"), "valid_acc", note, kind="delta", repeats=1,
               pre=lambda q: demo_set(_sizes(q)["acc_n"]))


def _pipeline_row() -> Row:
    def f(kind):
        def g(quick):
            s = _sizes(quick)
            d = demo_set(s["n"])
            if kind == "ours":
                return run_job(dict(job="ours_pipeline", data_dir=d, batch=128,
                                    n_batches=s["pipe"]))
            return run_job(dict(job="book", module="torch_cifar", fn="pipeline_speed",
                                data_dir=d, batch_size=128, n_batches=s["pipe"]))
        return g
    return Row("pipeline", "data pipeline alone: augmented batches of 128, no model",
               "batches/s", 10.0, True, f("ours"), f("book"), "batches_per_sec",
               lambda o, b, q: "ours: core ImageLoader (Resize 40, RandomResizedCrop 32, flip) "
                               "over the decoded cache, uint8 out; textbook: torchvision "
                               "ImageFolder + the chapter's transforms + DataLoader",
               pre=lambda q: demo_set(_sizes(q)["n"]))


def _reorg_rows() -> list[Row]:
    """Fresh reorganisation and a re-run, each against the ``os.link`` floor of the same run."""
    # one worker run measures the floor, a fresh reorganisation and a re-run together: the
    # fresh row uses it first, the re-run row takes the same repeat's figures
    store: dict = {"fresh": [], "rerun": []}
    current: dict = {}

    def measure_once(quick):
        n_tr, n_te = _sizes(quick)["reorg"]
        return run_job(dict(job="reorg", root=reorg_set(n_tr, n_te)))

    def ours(which):
        other = "rerun" if which == "fresh" else "fresh"

        def g(quick):
            if store[which]:
                r = store[which].pop(0)
            else:
                r = measure_once(quick)
                store[other].append(r)
            current[which] = r
            return {"seconds": r[which], **r}
        return g

    def floor(which):
        return lambda quick: {"seconds": current[which]["floor"], **current[which]}

    def note(o, b, q):
        n_tr, n_te = _sizes(q)["reorg"]
        links = o[0]["links"]
        return (f"{n_tr}+{n_te} PNGs, mode='link'; floor = {links} os.link calls into pre-made "
                f"folders, measured in the same process right before")
    rows = []
    for name, which, goal in (("reorg-fresh", "fresh", 1.3), ("reorg-rerun", "rerun", 1.5)):
        r = Row(name, f"reorganisation {'into a fresh folder' if which == 'fresh' else 're-run over the tree'}"
                      " vs the os.link floor", "s", goal, False, ours(which), floor(which),
                "seconds", note, pre=lambda q: reorg_set(*_sizes(q)["reorg"]),
                alternate=False)  # the floor is read from ours' worker run
        rows.append(r)
    return rows


def _lever_rows() -> list[Row]:
    """``--levers``: each speed lever of the torch row against the library as shipped."""
    def job(**kw):
        def f(quick):
            s = _sizes(quick)
            warm, steps = s["b32"]
            return run_job(dict(job="ours_train", backend="torch", data_dir=demo_set(s["n"]),
                                batch=32, steps=steps, warmup=warm + (3 if kw.get("compile") else 0),
                                **kw))
        return f
    shipped = job()
    out = []
    for name, what, kw in (
            ("lever-fp32", "fp32 NCHW instead of bf16 + channels_last", dict(amp=False)),
            ("lever-compile", "torch.compile(model) on top of the shipped step", dict(compile=True)),
            ("lever-prefetch1", "loader prefetch depth 1 instead of 4", dict(prefetch=1)),
            ("lever-workers1", "loader in the training thread (num_workers=1)", dict(workers=1))):
        out.append(Row(name, f"torch batch 32: {what} (textbook column: ours as shipped)",
                       "examples/s", 1.0, True, job(**kw), shipped, "examples_per_sec",
                       pre=lambda q: demo_set(_sizes(q)["n"])))
    return out


def builtin_rows(levers: bool = False) -> list[Row]:
    rows = _train_rows()
    rows.insert(2, _accuracy_row())
    return rows + [_pipeline_row()] + _reorg_rows() + (_lever_rows() if levers else [])


def external_modules() -> list[str]:
    """``benchmarks/<name>.py`` files that define a top-level ``rows`` function."""
    names = []
    for fn in sorted(os.listdir(HERE)):
        if not fn.endswith(".py") or fn in ("run.py", "worker.py", "__main__.py", "__init__.py"):
            continue
        try:
            tree = ast.parse(open(os.path.join(HERE, fn), encoding="utf-8").read())
        except SyntaxError:
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "rows" and n.args.args
               and n.args.args[0].arg == "quick" for n in tree.body):
            names.append(fn[:-3])
    return names


def external_rows(name: str, quick: bool) -> list[dict]:
    """Rows of ``benchmarks/<name>.py``; a failure becomes one 'failed' row."""
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
        out = []
        for r in mod.rows(quick):
            r = dict(r)
            o, b = r.get("ours"), r.get("textbook")
            if "ratio" not in r:
                try:
                    r["ratio"] = float(o) / float(b)
                    r["ratio_s"] = f"{r['ratio']:.2f}×"
                except (TypeError, ValueError, ZeroDivisionError):
                    r["ratio"], r["ratio_s"] = math.nan, "–"
            r.setdefault("ratio_s", _fmt(r["ratio"]) if isinstance(r.get("ratio"), float) else str(r.get("ratio")))
            r.setdefault("what", r.get("row", name))
            out.append(r)
        return out
    except Exception as e:  # noqa: BLE001 (one broken script must not sink the table)
        return [{"row": name, "what": f"benchmarks/{name}.py", "ours": math.nan,
                 "textbook": math.nan, "unit": "", "ratio": math.nan, "ratio_s": "–",
                 "goal": "", "met": False, "note": f"failed: {type(e).__name__}: {e}"}]


# --------------------------------------------------------------------------- machine, table

_PROBE = ("import torch; print(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "
          "torch.get_num_threads())")


def start_probe() -> subprocess.Popen:
    """Ask torch about native bf16 in a subprocess (started early, read at the end)."""
    return subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def machine(probe: subprocess.Popen) -> dict:
    """CPU model and flags, native bf16, cores, versions (frameworks asked in subprocesses)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        out, _ = probe.communicate(timeout=180)
        bf16, threads = out.split()
    except Exception:  # noqa: BLE001 (no torch, or it failed: say so in the table)
        probe.kill()
        bf16, threads = "unknown (torch did not answer)", "?"
    versions = {}
    for pkg in ("torch", "torchvision", "mxnet", "paddlepaddle", "numpy", "Pillow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"cpu": model, "flags": [f for f in wanted if f in flags], "cores": cores,
            "bf16_native": bf16, "torch_threads": threads, "python": platform.python_version(),
            "versions": versions, "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def table(results: list[dict]) -> str:
    head = "| row | ours | textbook | unit | ratio | goal | met | note |"
    lines = [head, "|---|---:|---:|---|---:|---|---|---|"]
    for r in results:
        met = "report" if r.get("met") is None else "met" if r["met"] else "**missed**"
        lines.append(f"| {r['row']} | {_fmt(r.get('ours'))} | {_fmt(r.get('textbook'))} | "
                     f"{r.get('unit', '')} | {r.get('ratio_s', '')} | {r.get('goal', '')} | {met} "
                     f"| {r.get('note', '')} |")
    return "\n".join(lines)


def machine_text(m: dict, when: str, seconds: float, repeats: int, quick: bool) -> str:
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
    return (f"Measured {when} in {seconds / 60:.1f} min by `python -m benchmarks"
            f"{' --quick' if quick else ''}` (medians of {repeats} interleaved "
            f"repeats, each setting in a fresh process).\n"
            f"Machine: {m['cpu']}; {m['cores']} cores; flags {' '.join(m['flags']) or 'none of note'}; "
            f"native bf16 (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`): {m['bf16_native']}; "
            f"torch threads {m['torch_threads']}; load average at start "
            f"{m['load_avg'] if m['load_avg'] is None else round(m['load_avg'], 1)}.\n"
            f"Python {m['python']}, {v}.")


def write_readme(path: str, text: str) -> None:
    """Replace the marked section of ``path`` (appended when the markers are missing)."""
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)


def _selected(name: str, only: list[str] | None, skip: list[str] | None = None) -> bool:
    if skip and any(name == o or name.startswith(o) for o in skip):
        return False
    return only is None or any(name == o or name.startswith(o) for o in only)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (default: off)")
    ap.add_argument("--only", metavar="ROWS", help="comma-separated row names or prefixes, e.g. "
                    "train-torch,reorg,pipeline or an extra script's name (default: all rows)")
    ap.add_argument("--skip", metavar="ROWS", help="comma-separated rows or prefixes to leave "
                    "out (default: none)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per row "
                    "(default: 3, 1 with --quick)")
    ap.add_argument("--write", metavar="PATH", help="rewrite the marked table section of PATH "
                    "(default: benchmarks/README.md after a full run, nothing otherwise)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON (default: no)")
    ap.add_argument("--levers", action="store_true", help="add the lever rows: each torch speed "
                    "lever against the library as shipped (default: off)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    a = ap.parse_args(argv)
    only = [s.strip() for s in a.only.split(",") if s.strip()] if a.only else None
    skip = [s.strip() for s in a.skip.split(",") if s.strip()] if a.skip else None
    rows = builtin_rows(a.levers)
    extras = external_modules()
    if a.list:
        for r in rows:
            print(f"{r.name:18s} {r.what}")
        for e in extras:
            print(f"{e:18s} rows of benchmarks/{e}.py")
        return 0
    if a.repeats is None:
        a.repeats = 1 if a.quick else 3
    if a.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {a.repeats}")
    known = [r.name for r in rows] + extras
    for o in (only or []) + (skip or []):
        if not any(k == o or k.startswith(o) for k in known):
            ap.error(f"--only/--skip: no row {o!r}; rows: {', '.join(known)}")
    t0 = time.perf_counter()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # in a quick run the probe overlaps the rows; a full run asks afterwards (no extra load)
    probe = start_probe() if a.quick else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log(f"cache {cache_dir()}; load average {load}")
    todo = [r for r in rows if _selected(r.name, only, skip)]
    todo_x = [e for e in extras if _selected(e, only, skip)]
    results = []
    for i, r in enumerate(todo, 1):
        log(f"[{i}/{len(todo) + len(todo_x)}] {r.name}: {r.what}")
        try:
            results.append(measure(r, a.repeats, a.quick))
        except Exception as e:  # noqa: BLE001 (a failed row is reported, the rest still run)
            results.append({"row": r.name, "what": r.what, "ours": math.nan, "textbook": math.nan,
                            "unit": r.unit, "ratio": math.nan, "ratio_s": "–", "goal": "",
                            "met": False, "note": f"failed: {e}"})
        log(f"    -> {results[-1]['ratio_s']} ({'met' if results[-1]['met'] else 'missed'}), "
            f"{(time.perf_counter() - t0) / 60:.1f} min so far")
    for j, e in enumerate(todo_x, len(todo) + 1):
        log(f"[{j}/{len(todo) + len(todo_x)}] rows of benchmarks/{e}.py")
        results.extend(external_rows(e, a.quick))
    m = machine(probe or start_probe())
    m["load_avg"] = load
    secs = time.perf_counter() - t0
    text = table(results) + "\n\n" + machine_text(m, when, secs, a.repeats, a.quick)
    print(text)
    full = not a.quick and only is None and skip is None
    target = a.write or (os.path.join(HERE, "README.md") if full else None)
    if target:
        write_readme(target, text)
        log(f"table written to {target}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "results": results, "seconds": secs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
