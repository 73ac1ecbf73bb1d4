"""torch.distributed for the core's data parallelism: the process group torchrun describes.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; :func:`init` joins
the group (gloo on CPU, NCCL on CUDA), :class:`~d2lkaggle.torch_impl.train.TorchStep`
wraps the net in ``DistributedDataParallel`` (gradients averaged by torch during
``backward``), and the core loop sums its metrics with :func:`all_reduce_sum`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..parallel.distributed import DistEnv


def process_group_backend(device_type: str) -> str:
    """torch's collective library for a device type: NCCL for CUDA, gloo for the CPU."""
    return "nccl" if device_type == "cuda" else "gloo"


def rank_device(env: DistEnv, cuda_count: int | None = None) -> torch.device:
    """The device of this rank: GPU ``local_rank`` when the machine has it, else the CPU."""
    n = (torch.cuda.device_count() if torch.cuda.is_available() else 0) if cuda_count is None \
        else cuda_count
    if n == 0:
        return torch.device("cpu")
    if env.local_rank >= n:
        raise ValueError(f"local rank {env.local_rank} has no GPU (this machine has {n}); start "
                         f"at most {n} processes per node (torchrun --nproc_per_node {n})")
    return torch.device(f"cuda:{env.local_rank}")


def init(env: DistEnv) -> None:
    """Join the process group of ``env`` (once; a no-op for one process).

    The rendezvous is torchrun's ``env://`` (MASTER_ADDR/MASTER_PORT); on CUDA this rank's
    GPU becomes the current device before NCCL starts.
    """
    if not env.enabled:
        return
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise RuntimeError(f"a process group of world size {dist.get_world_size()} (rank "
                               f"{dist.get_rank()}) exists; it does not match {env}")
        return
    device = rank_device(env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(process_group_backend(device.type), rank=env.rank,
                            world_size=env.world_size, **kwargs)


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """float64 ``values`` summed over every rank (``device``: where NCCL wants the tensor)."""
    arr = np.asarray(values, dtype=np.float64)
    if not (dist.is_available() and dist.is_initialized()):
        return arr.copy()
    t = torch.from_numpy(arr.copy()).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()
