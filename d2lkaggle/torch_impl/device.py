"""Devices and seeds in PyTorch: the book's ``try_gpu``/``try_all_gpus`` and what the CPU can do."""
from __future__ import annotations

import random

import numpy as np
import torch

#: capability flag: bf16 autocast on this machine's CPU (AVX-512 BF16 / AMX)
SUPPORTS_BF16 = bool(getattr(torch.backends, "mkldnn", None) and
                     torch.backends.mkldnn.is_available() and
                     getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def try_gpu(i: int = 0) -> torch.device:
    """GPU ``i`` if it exists, else the CPU."""
    if torch.cuda.is_available() and i < torch.cuda.device_count():
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """All GPUs, or ``[cpu]`` when there is none (the book's version returns ``[]``)."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [torch.device(f"cuda:{i}") for i in range(n)] or [torch.device("cpu")]


def set_seed(seed: int) -> None:
    """Seed torch, numpy and random so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def num_gpus() -> int:
    """GPUs this process can see (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
