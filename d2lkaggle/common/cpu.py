"""What the CPU can do, asked without a framework: native bfloat16 arithmetic.

The MXNet wing's ``SUPPORTS_BF16`` reads it (torch asks its own oneDNN build). A CPU without
these instructions still runs oneDNN's bf16 kernels, emulated and slower than float32, which
is why ``amp="auto"`` wants the native ones.
"""
from __future__ import annotations

#: /proc/cpuinfo flags of native bf16 dot products: AVX-512 BF16 (Cooper Lake, Zen 4) or AMX
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 dot products natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)
