"""Each subpackage's export table: its public names, imported from their module on first use.

``from d2lkaggle.data import make_demo`` works without ``data/__init__.py`` importing every
module of the room (a table, not imports: the room stays cheap to enter, and a name can move
between the room's modules without breaking a user's import).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str], fallback: str | None = None
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table`` maps a public name to the module
    (relative to the package, or a full ``d2lkaggle.…`` path in a room below: where a
    newcomer looks for a name that lives elsewhere) that defines it; ``fallback`` is looked in
    for any other name (the old flat module the package replaced, whose names stay
    reachable)."""

    def module(where: str) -> str:
        return where if where.startswith("d2lkaggle.") else f"{package}.{where}"

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(module(table[name])), name)
        if fallback is not None and not name.startswith("__"):
            mod = importlib.import_module(f"{package}.{fallback}")
            if hasattr(mod, name):
                return getattr(mod, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__
