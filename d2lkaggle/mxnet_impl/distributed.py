"""MXNet's ``dist_sync`` kvstore for the core's data parallelism (ps-lite parameter server).

The mxnet 1.9.1 wheel has the distributed kvstore compiled in
(``mx.runtime.Features().is_enabled("DIST_KVSTORE")``). A job is a ps-lite scheduler, one or
more servers and one worker per training process (``python -m d2lkaggle.parallel.pslaunch
--nproc_per_node N ...`` starts them on one machine; MXNet's ``tools/launch.py`` would, but
its tracker does not run on Python >= 3.9). :func:`init` connects this worker to the
kvstore; :class:`~d2lkaggle.mxnet_impl.train.MXNetStep` broadcasts rank 0's weights through
it when built, and after every ``backward`` pushes each gradient and pulls back the sum the
servers form over all workers (what Gluon's ``Trainer(update_on_kvstore=False)`` does),
divided by the number of workers: the mean, as torch's DDP and ``paddle.DataParallel`` give.
Every worker then applies the same core optimizer update to the same weights. The core
loop's metric sums (:func:`all_reduce_sum`) travel the same way.
"""
from __future__ import annotations

import itertools
import os
from typing import Sequence

import mxnet as mx
import numpy as np

from ..parallel.distributed import DistEnv

_KV = None            # this worker's dist_sync kvstore (one per process)
_KEYS: set = set()    # keys initialised on the servers (an init is collective: once per key)
_STEPS = itertools.count()   # every rank builds its data-parallel steps in the same order


def init(env: DistEnv) -> None:
    """Connect this worker to the job's ``dist_sync`` kvstore (once; no-op for one process)."""
    global _KV
    if not env.enabled:
        return
    if os.environ.get("DMLC_ROLE") != "worker" or not os.environ.get("DMLC_WORKER_ID"):
        raise RuntimeError("MXNet data parallel needs a ps-lite job: DMLC_ROLE=worker, "
                           "DMLC_WORKER_ID (0..N-1, the rank) and the DMLC_PS_ROOT_URI/PORT, "
                           "DMLC_NUM_SERVER/WORKER of a running scheduler; start the run with "
                           "python -m d2lkaggle.parallel.pslaunch --nproc_per_node N -m d2lkaggle.cli "
                           "run ... --backend mxnet (docs/scale.md)")
    if _KV is None:
        _KV = mx.kv.create("dist_sync")
    if _KV.num_workers != env.world_size:
        raise RuntimeError(f"the kvstore has {_KV.num_workers} workers but the launcher "
                           f"described {env.world_size} (DMLC_NUM_WORKER); start the job again")


def barrier() -> None:
    """Wait for every worker (a no-op without a kvstore)."""
    if _KV is not None:
        _KV._barrier()   # (ps-lite's worker barrier; MXNet has no public name for it)


def _sum(keys: Sequence[str], arrays: Sequence[mx.nd.NDArray]) -> None:
    """Replace each array by its sum over the workers (in place; the servers add them)."""
    new = [(k, a) for k, a in zip(keys, arrays) if k not in _KEYS]
    if new:   # (collective: rank 0 stores the zeros, everyone waits for it)
        _KV.init([k for k, _ in new], [mx.nd.zeros(a.shape, dtype=a.dtype) for _, a in new])
        _KEYS.update(k for k, _ in new)
    _KV.push(list(keys), list(arrays))
    _KV.pull(list(keys), out=list(arrays))


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """float64 ``values`` summed over every worker (a copy of them in one process)."""
    arr = np.array(values, dtype=np.float64)
    if _KV is None or arr.size == 0:
        return arr
    flat = mx.nd.array(arr.reshape(-1), dtype="float64")
    _sum([f"d2lkaggle/sum/{arr.size}"], [flat])
    return flat.asnumpy().reshape(arr.shape)


class GradientSync:
    """The kvstore side of one data-parallel step: one key per parameter (``names``)."""

    def __init__(self, names: Sequence[str], env: DistEnv):
        if _KV is None:
            init(env)
        self.env = env
        self.prefix = f"d2lkaggle/{next(_STEPS)}/"
        self.keys = [self.prefix + n for n in names]

    def broadcast(self, names: Sequence[str], arrays: Sequence[mx.nd.NDArray]) -> None:
        """Every worker gets rank 0's values of ``names`` (all parameters, frozen ones and
        BatchNorm statistics too, as torch's DDP broadcasts them): rank 0 pushes them, the
        others zeros (a sum with zeros is exact), so a differently initialised rank cannot
        drift."""
        if not self.env.is_main:
            for a in arrays:
                a[:] = 0
        _sum([self.prefix + "init/" + n for n in names], arrays)

    def average(self, grads: Sequence[mx.nd.NDArray]) -> None:
        """Each gradient becomes its mean over the workers (in place)."""
        _sum(self.keys, grads)
        for g in grads:
            g /= self.env.world_size
