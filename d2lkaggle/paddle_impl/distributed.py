"""paddle.distributed for the core's data parallelism: the collective group Paddle's launcher describes.

``python -m paddle.distributed.launch --nproc_per_node N`` starts one process per device and
sets ``PADDLE_TRAINER_ID``/``PADDLE_TRAINERS_NUM``/``PADDLE_TRAINER_ENDPOINTS``/``PADDLE_MASTER``
(and ``PADDLE_DISTRI_BACKEND=gloo`` on a CPU-only wheel); :func:`init` joins the group with
``paddle.distributed.init_parallel_env()``,
:class:`~d2lkaggle.paddle_impl.train.PaddleStep` wraps the net in ``paddle.DataParallel``
(rank 0's weights broadcast when it is built; gradients averaged over the ranks during
``backward``), and the core loop sums its metrics with :func:`all_reduce_sum`.

Measured with Paddle 3.3.1's CPU wheel on this machine: gloo collectives (all_reduce,
barrier, DataParallel's gradient average) work for float32 and float64.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.distributed as dist

from ..parallel.distributed import DistEnv


def init(env: DistEnv) -> None:
    """Join the launcher's collective group (once; a no-op for one process)."""
    if not env.enabled:
        return
    if not dist.is_initialized():
        dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    if (rank, world) != (env.rank, env.world_size):
        raise RuntimeError(f"paddle's parallel environment is rank {rank} of {world}; it does "
                           f"not match {env} (start the run with python -m "
                           "paddle.distributed.launch, docs/scale.md)")


def barrier() -> None:
    """Wait for every rank (a no-op without a parallel environment)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """float64 ``values`` summed over every rank (a copy of them in one process)."""
    arr = np.array(values, dtype=np.float64)
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return arr
    t = paddle.to_tensor(arr, dtype="float64", place=paddle.CPUPlace())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return np.array(t.numpy(), dtype=np.float64)
