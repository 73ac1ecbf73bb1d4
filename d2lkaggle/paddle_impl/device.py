"""Devices and seeds in PaddlePaddle: the book's ``try_gpu``/``try_all_gpus`` and what the CPU can do."""
from __future__ import annotations

import random

import numpy as np
import paddle

#: capability flag: no bf16 training on the CPU in Paddle 3.3's dygraph. ``paddle.amp.auto_cast``
#: is a no-op on a CPUPlace (python/paddle/amp/auto_cast.py: "amp_guard can only be enabled on
#: CUDAPlace, XPUPlace, and CustomPlace"), the CPU kernels of ``conv2d`` are registered for
#: float32/float64 only (a bf16 input: "kernel_key.backend() == Backend::CPU"), and the oneDNN
#: kernels that have bf16 run only in static graphs, where training crashed (docs/speed.md)
SUPPORTS_BF16 = False


def try_gpu(i: int = 0):
    """GPU ``i`` if it exists, else the CPU."""
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > i:
        return paddle.CUDAPlace(i)
    return paddle.CPUPlace()


def try_all_gpus() -> list:
    """All GPUs, or ``[CPUPlace]`` — always a list (the book's Paddle version returns a bare place)."""
    n = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    return [paddle.CUDAPlace(i) for i in range(n)] or [paddle.CPUPlace()]


def set_seed(seed: int) -> None:
    """Seed paddle, numpy and random so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def num_gpus() -> int:
    """GPUs this process can see (0 without CUDA)."""
    return paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
