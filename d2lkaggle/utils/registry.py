"""Lazy table of framework backends.

``get_backend("torch")`` imports ``d2lkaggle.torch_impl`` only when asked, so that
``import d2lkaggle`` never loads a framework (importing mxnet, for one, drops torch to a
single thread).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: canonical name -> (module that the framework installs, pip extra)
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch"),
    "mxnet": ("mxnet", "mxnet"),
    "paddle": ("paddle", "paddle"),
}
ALIASES: dict[str, str] = {"pytorch": "torch", "mx": "mxnet", "paddlepaddle": "paddle"}
#: canonical name -> the framework's name in messages
FRAMEWORK_NAMES: dict[str, str] = {"torch": "PyTorch", "mxnet": "MXNet", "paddle": "Paddle"}

_cache: dict[str, ModuleType] = {}


class BackendNotInstalled(ImportError):
    """A known backend whose framework is not installed."""


def canonical_name(name: str) -> str:
    """Map a backend name or alias (``pytorch``, ``mx``, ``paddlepaddle``) to its canonical name."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        valid = ", ".join(sorted(BACKENDS)) + " (aliases: " + ", ".join(
            f"{a}->{c}" for a, c in sorted(ALIASES.items())) + ")"
        raise ValueError(f"unknown backend {name!r}; valid backends: {valid}")
    return key


def is_installed(name: str) -> bool:
    """True when the backend's framework can be imported (checked without importing it)."""
    module, _ = BACKENDS[canonical_name(name)]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backends() -> list[str]:
    """Canonical names of the backends whose framework is installed, without importing any."""
    return [name for name in BACKENDS if is_installed(name)]


def backend_module(backend: str | ModuleType, submodule: str | None = None) -> ModuleType:
    """A wing, or one of its submodules (``device``, ``distributed``, ``features`` ...), by
    backend name or module: the one place that turns a backend's name into an import, so
    the core never spells a wing's path."""
    name = backend if isinstance(backend, str) else getattr(backend, "NAME", None)
    mod = get_backend(name)
    return mod if submodule is None else importlib.import_module(f"{mod.__name__}.{submodule}")


def get_backend(name: str) -> ModuleType:
    """Import and return ``d2lkaggle.<name>_impl`` (cached); clear errors when unknown or missing."""
    key = canonical_name(name)
    if key in _cache:
        return _cache[key]
    module, extra = BACKENDS[key]
    if not is_installed(key):
        raise BackendNotInstalled(
            f"backend {key!r} needs the {module!r} package, which is not installed; "
            f"install it with: pip install \"d2lkaggle[{extra}]\" "
            f"(installed backends: {', '.join(backends()) or 'none'})")
    mod = importlib.import_module(f"d2lkaggle.{key}_impl")
    _cache[key] = mod
    return mod
