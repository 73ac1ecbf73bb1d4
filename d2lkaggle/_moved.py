"""Import paths of the flat core (before 0.2) that still work, for one release, with a warning.

The core was one folder of 36 modules; it is now grouped by concern (docs/architecture.md).
Each old module below resolves to its new home — ``import d2lkaggle.pipeline``,
``from d2lkaggle.ensemble import soft_vote`` and ``python -m d2lkaggle.pslaunch`` keep
working — and warns once with the path to use instead (a ``FutureWarning``, which Python
shows by default, as timm does for its moved modules). A module that was split looks a name
up in each of its new homes in turn. Nothing here is imported until an old path is used.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

#: old module -> the module(s) that hold its names now (the first is the main one)
MOVED: dict[str, tuple[str, ...]] = {
    "d2lkaggle.registry": ("d2lkaggle.utils.registry",),
    "d2lkaggle.checkpoint": ("d2lkaggle.utils.files",),
    "d2lkaggle.progress": ("d2lkaggle.utils.progress",),
    "d2lkaggle.distributed": ("d2lkaggle.parallel.distributed",),
    "d2lkaggle.pslaunch": ("d2lkaggle.parallel.pslaunch",),
    "d2lkaggle.hub": ("d2lkaggle.data.hub", "d2lkaggle.data.archives"),
    "d2lkaggle.labels": ("d2lkaggle.data.labels",),
    "d2lkaggle.reorg": ("d2lkaggle.data.reorg", "d2lkaggle.data.splits"),
    "d2lkaggle.images": ("d2lkaggle.data.images",),
    "d2lkaggle.stream": ("d2lkaggle.data.stream",),
    "d2lkaggle.augment": ("d2lkaggle.data.transforms",),
    "d2lkaggle.cifar": ("d2lkaggle.data.cifar",),
    "d2lkaggle.datasets": ("d2lkaggle.data.demo",),
    "d2lkaggle.mixing": ("d2lkaggle.data.mixing",),
    "d2lkaggle.loop": ("d2lkaggle.train.loop",),
    "d2lkaggle.optim": ("d2lkaggle.train.optim",),
    "d2lkaggle.schedules": ("d2lkaggle.train.schedules",),
    "d2lkaggle.diagnostics": ("d2lkaggle.train.diagnostics",),
    "d2lkaggle.tta": ("d2lkaggle.train.tta",),
    "d2lkaggle.lrfind": ("d2lkaggle.train.lrfind", "d2lkaggle.compete.lrfind"),
    "d2lkaggle.plotting": ("d2lkaggle.train.plotting",),
    "d2lkaggle.features": ("d2lkaggle.train.features",),
    "d2lkaggle.weights": ("d2lkaggle.models.weights",),
    "d2lkaggle.parity": ("d2lkaggle.models.parity",),
    "d2lkaggle.competitions": ("d2lkaggle.specs.competitions", "d2lkaggle.specs.recipe"),
    "d2lkaggle.writeups": ("d2lkaggle.specs.writeups",),
    "d2lkaggle.recipes": ("d2lkaggle.specs.tricks",),
    "d2lkaggle.book": ("d2lkaggle.common.book",),
    "d2lkaggle.pipeline": ("d2lkaggle.compete.run", "d2lkaggle.compete.load",
                           "d2lkaggle.compete.report", "d2lkaggle.compete.submission",
                           "d2lkaggle.compete.runfolder", "d2lkaggle.models.build"),
    "d2lkaggle.ensemble": ("d2lkaggle.compete.ensembles", "d2lkaggle.compete.members",
                           "d2lkaggle.compete.voting", "d2lkaggle.compete.runfolder",
                           "d2lkaggle.data.splits"),
    "d2lkaggle.submission": ("d2lkaggle.compete.submission",),
    "d2lkaggle.preflight": ("d2lkaggle.compete.preflight",),
    "d2lkaggle.kaggle": ("d2lkaggle.compete.kaggle",),
}


def message(old: str) -> str:
    """The warning for ``old``: where its names are now."""
    return (f"{old} moved in d2lkaggle 0.2: import from {' or '.join(MOVED[old])} "
            f"(the old path goes in the next release; docs/architecture.md has the map)")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path to a module whose attributes come from the new homes."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=MOVED[fullname][0])

    def create_module(self, spec):
        return None   # a plain module, filled in by exec_module

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        warnings.warn(message(old), FutureWarning, stacklevel=2)
        homes = [importlib.import_module(m) for m in MOVED[old]]

        def __getattr__(name: str) -> Any:
            for home in homes:
                if hasattr(home, name):
                    return getattr(home, name)
            raise AttributeError(f"module {old!r} (moved to {', '.join(MOVED[old])}) has no "
                                 f"attribute {name!r}")

        module.__getattr__ = __getattr__
        module.__dir__ = lambda: sorted({n for h in homes for n in dir(h)})
        module.__all__ = [n for h in homes
                          for n in getattr(h, "__all__", [k for k in vars(h) if not k.startswith("_")])]

    def get_code(self, fullname: str):
        """``python -m <old path>``: warn, then run the new module as ``__main__``."""
        return compile(f"import runpy, warnings\n"
                       f"warnings.warn({message(fullname)!r}, FutureWarning)\n"
                       f"runpy.run_module({MOVED[fullname][0]!r}, run_name='__main__', "
                       f"alter_sys=True)\n", f"<{fullname}>", "exec")

    def is_package(self, fullname: str) -> bool:
        return False


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once; ``import d2lkaggle`` does it)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
