"""Data-parallel training across processes, framework-free: who am I, and which examples are mine.

A launcher (``torchrun``, ``python -m paddle.distributed.launch``, MXNet's ``dist_sync``
tooling) starts one process per device and tells each its rank through environment
variables; :func:`detect` reads them into a :class:`DistEnv`. The core loader then gives each
rank a disjoint part of every *global* batch (:func:`shard_batch`), the backend's engine
(torch ``DistributedDataParallel``, ``paddle.DataParallel``, the MXNet kvstore) averages the
gradients, :func:`d2lkaggle.train.loop.fit` sums the metrics over ranks through the step's
``all_reduce_sum``, and only the main rank writes files.

``--batch-size`` stays the global batch: with ``world_size`` processes each trains on
``batch_size // world_size`` examples of every batch, so the recipe's learning rate keeps
its meaning and, without augmentation, two processes compute the same update as one.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

#: launchers :func:`detect` recognises (``DistEnv.launcher``)
LAUNCHERS = ("torchrun", "paddle", "mxnet")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel run (``world_size == 1``: a normal run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str | None = None          # "torchrun" | "paddle" | "mxnet" | None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} of world size {self.world_size}: the launcher's "
                             "environment is inconsistent (need 0 <= rank < world_size)")
        if self.launcher is not None and self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS} or None, got {self.launcher!r}")

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process: gradients and metrics are combined across ranks."""
        return self.world_size > 1


def _int(environ: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = environ.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"the launcher set no {key} in the environment")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def detect(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """The :class:`DistEnv` a launcher described in ``environ`` (no launcher: one process).

    torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``paddle.distributed.launch`` sets
    ``PADDLE_TRAINER_ID``/``PADDLE_TRAINERS_NUM`` (and ``PADDLE_LOCAL_RANK`` or
    ``FLAGS_selected_*``); MXNet's launcher sets ``DMLC_ROLE=worker`` and
    ``DMLC_NUM_WORKER`` — its rank is only known from the kvstore, so it reads 0 here until
    the backend's ``init`` asks the kvstore (``DMLC_WORKER_ID`` is used when set).
    """
    if "WORLD_SIZE" in environ and "RANK" in environ:
        return DistEnv(rank=_int(environ, "RANK"), world_size=_int(environ, "WORLD_SIZE"),
                       local_rank=_int(environ, "LOCAL_RANK", 0), launcher="torchrun")
    if "PADDLE_TRAINERS_NUM" in environ and "PADDLE_TRAINER_ID" in environ:
        return DistEnv(rank=_int(environ, "PADDLE_TRAINER_ID"),
                       world_size=_int(environ, "PADDLE_TRAINERS_NUM"),
                       local_rank=_int(environ, "PADDLE_LOCAL_RANK",
                                       _int(environ, "PADDLE_RANK_IN_NODE", 0)),
                       launcher="paddle")
    if environ.get("DMLC_ROLE") == "worker" and "DMLC_NUM_WORKER" in environ:
        rank = _int(environ, "DMLC_WORKER_ID", 0)
        # (DMLC_LOCAL_RANK: the worker's device on its machine, set by d2lkaggle.parallel.pslaunch)
        return DistEnv(rank=rank, world_size=_int(environ, "DMLC_NUM_WORKER"),
                       local_rank=_int(environ, "DMLC_LOCAL_RANK", rank), launcher="mxnet")
    return DistEnv()


def check_batch_size(batch_size: int, env: DistEnv) -> int:
    """The per-rank batch (``batch_size // world_size``); an error when it does not divide."""
    if env.enabled and batch_size % env.world_size:
        lo = max(env.world_size, batch_size - batch_size % env.world_size)
        raise ValueError(f"--batch-size {batch_size} (the global batch) does not divide over "
                         f"{env.world_size} processes; choose a multiple of {env.world_size} "
                         f"such as {lo} or {lo + env.world_size}")
    return batch_size // env.world_size


def shard_batch(idx: np.ndarray, env: DistEnv) -> np.ndarray:
    """This rank's disjoint part of a global batch of example indices (the chapters' batches,
    split over processes); the parts of all ranks cover ``idx`` in order.

    A batch that divides gives every rank ``len(idx) // world_size`` consecutive indices (a
    training batch must divide: :func:`check_batch_size`); the last, partial batch of an
    evaluation set is split as evenly as it goes, so some ranks may get one fewer — or none.
    """
    idx = np.asarray(idx)
    if not env.enabled:
        return idx
    return np.array_split(idx, env.world_size)[env.rank]


def shard(loader: Any, env: DistEnv) -> Any:
    """A copy of a core loader that yields this rank's shard of each global batch (the same
    as building it with ``ImageLoader(..., dist=env)``)."""
    if not env.enabled:
        return loader
    check_batch_size(loader.batch_size, env)
    part = copy.copy(loader)
    part.dist = env
    return part


def unsharded(loader: Any) -> Any:
    """A copy of a sharded loader that yields whole batches (prediction on the main rank)."""
    if getattr(loader, "dist", None) is None:
        return loader
    whole = copy.copy(loader)
    whole.dist = None
    return whole


# ---- the backend's half: process groups and barriers -------------------------------------

def backend_module(backend: Any):
    """``d2lkaggle.<name>_impl.distributed`` of a backend module or name (``init``/``barrier``)."""
    from ..utils.registry import backend_module as wing
    return wing(backend, "distributed")


def setup(backend: Any, env: DistEnv | None = None) -> DistEnv:
    """Start the backend's process group for ``env`` (default: :func:`detect`); a no-op for one
    process. Returns the env, so ``env = setup("torch")`` is the whole start of a script."""
    env = detect() if env is None else env
    if env.enabled:
        backend_module(backend).init(env)
    return env


def barrier(backend: Any, env: DistEnv | None) -> None:
    """Wait until every rank got here (the main rank has written its files); no-op alone."""
    if env is not None and env.enabled:
        backend_module(backend).barrier()


def step_barrier(step: Any) -> None:
    """Synchronise the ranks of ``step`` (its ``barrier``; else a zero all-reduce, which every
    rank must also reach)."""
    env = getattr(step, "dist", None)
    if env is None or not env.enabled:
        return
    wait = getattr(step, "barrier", None)
    if callable(wait):
        wait()
    else:
        step.all_reduce_sum(np.zeros(1))


def reduce_metrics(step: Any, loss_sum: float, correct: int, n: int) -> tuple[float, int, int]:
    """(loss_sum, correct, n) summed over every rank of ``step`` (unchanged in one process)."""
    env = getattr(step, "dist", None)
    if env is None or not env.enabled:
        return loss_sum, correct, n
    total = np.asarray(step.all_reduce_sum(np.array([loss_sum, correct, n], dtype=np.float64)),
                       dtype=np.float64)
    return float(total[0]), int(round(total[1])), int(round(total[2]))


def run_env(distributed: Any, batch_size: int) -> DistEnv:
    """The run's :class:`~d2lkaggle.parallel.distributed.DistEnv`, its global batch size checked."""
    if isinstance(distributed, DistEnv):
        env = distributed
    elif distributed is False:
        env = DistEnv()
    else:
        env = detect()
        if distributed is True and env.launcher is None:   # (a launcher of 1 process is fine)
            raise ValueError("distributed=True but no launcher started this process (no "
                             "RANK/WORLD_SIZE in the environment); start it with torchrun "
                             "--nproc_per_node N -m d2lkaggle.cli run ... (docs/scale.md)")
    check_batch_size(int(batch_size), env)
    return env


def join(backend: str, env: DistEnv) -> None:
    """Join the backend's process group; rank 0 has created the run folder when it returns."""
    setup(backend, env)
    barrier(backend, env)


# ---- launching ----------------------------------------------------------------------------

def launch_command(backend: str, nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``d2lkaggle <argv>`` in ``nproc`` processes on this machine
    under the backend's own launcher."""
    from ..utils.registry import canonical_name
    name = canonical_name(backend)
    if name == "torch":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={int(nproc)}", "-m", "d2lkaggle.cli", *argv]
    if name == "paddle":
        # (Paddle's launcher has no -m: a non-.py entry point runs as a command, so the
        # interpreter comes first; measured with Paddle 3.3.1)
        return [sys.executable, "-m", "paddle.distributed.launch", f"--nproc_per_node={int(nproc)}",
                sys.executable, "-m", "d2lkaggle.cli", *argv]
    if name == "mxnet":   # ps-lite scheduler + server + workers (d2lkaggle.parallel.pslaunch)
        return [sys.executable, "-m", "d2lkaggle.parallel.pslaunch", f"--nproc_per_node={int(nproc)}",
                "-m", "d2lkaggle.cli", *argv]
    raise ValueError(f"--distributed with backend {name!r}: no launcher is wired up for it "
                     "(see docs/scale.md); use --backend torch, paddle or mxnet")


def default_nproc(backend: str) -> int:
    """Processes ``--distributed`` starts by default: one per GPU when there are several, else 2."""
    from ..utils.registry import backend_module
    n = backend_module(backend, "device").num_gpus()
    return n if n > 1 else 2


class Collectives:
    """A backend Step's ``all_reduce_sum`` and ``barrier``, written once for the three wings.

    In one process (``dist`` is None) the sum is a float64 copy and the barrier a no-op;
    across ranks both go to the wing's ``distributed`` module (``_collectives``), which talks
    to the framework's engine. ``_collective_kwargs`` adds what one engine needs (torch: the
    device NCCL wants the tensor on).
    """

    dist: "DistEnv | None" = None
    _collectives: Any = None

    def _collective_kwargs(self) -> dict[str, Any]:
        return {}

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """float64 ``values`` summed over the ranks (themselves in one process)."""
        if self.dist is None:
            return np.asarray(values, dtype=np.float64).copy()
        return self._collectives.all_reduce_sum(values, **self._collective_kwargs())

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.dist is not None:
            self._collectives.barrier()
