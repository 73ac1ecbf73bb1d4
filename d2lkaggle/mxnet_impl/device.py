"""Devices and seeds in MXNet: the book's ``try_gpu``/``try_all_gpus`` and what the CPU can do."""
from __future__ import annotations

import random

import mxnet as mx
import numpy as np

from ..common.cpu import native_bf16

#: capability flag: bf16 training on the CPU — MXNet built with oneDNN (its bf16 convolution,
#: BatchNorm, pooling kernels) on a CPU with native bf16 (AVX-512 BF16 / AMX); elsewhere oneDNN
#: emulates bf16, slower than float32
SUPPORTS_BF16 = bool(mx.runtime.Features().is_enabled("MKLDNN")) and native_bf16()


def try_gpu(i: int = 0) -> mx.Context:
    """GPU ``i`` if it exists, else the CPU."""
    return mx.gpu(i) if mx.context.num_gpus() > i else mx.cpu()


def try_all_gpus() -> list[mx.Context]:
    """All GPUs, or ``[cpu]`` when there is none (the book's version returns ``[]``)."""
    return [mx.gpu(i) for i in range(mx.context.num_gpus())] or [mx.cpu()]


def set_seed(seed: int) -> None:
    """Seed mxnet, numpy and random so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed)


def num_gpus() -> int:
    """GPUs this process can see (0 without CUDA)."""
    return mx.context.num_gpus()
