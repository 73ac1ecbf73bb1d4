"""Data parallelism for the paddle wing: joining the launcher's group and waiting for it.

The same two names as the torch wing's distributed.py. Until the Paddle (paddle.DataParallel) path lands, one
process is all this wing runs: :func:`init` refuses a multi-process environment with the
command that works instead, so no rank trains alone believing it is synchronised.
"""
from __future__ import annotations

from ..distributed import DistEnv


def init(env: DistEnv) -> None:
    """Join the launcher's process group (one process: nothing to join)."""
    if env.enabled:
        raise RuntimeError(f"data-parallel training is not available for the paddle backend here "
                           f"({env.world_size} processes from {env.launcher}); run it with "
                           "--backend torch under torchrun (docs/scale.md), or in one process")


def barrier() -> None:
    """Wait for every rank: one process never waits."""
    return None
