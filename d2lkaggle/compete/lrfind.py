"""``d2lkaggle lr-find``: the learning-rate range test on a competition's recipe model.

The finder itself (:mod:`d2lkaggle.train.lrfind`) works on any step and loader; this module
loads a competition's training split and builds its recipe's model first.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..models.build import build_net
from ..specs.competitions import get_competition
from ..train.lrfind import LRFinderResult
from ..utils.registry import canonical_name, get_backend
from .load import load_data
from .preflight import check_out_outside_data
from .run import _recipe_for


def find_lr(competition: str, data_dir: str, *, backend: str = "torch", out: str | None = None,
            batch_size: int | None = None, wd: float | None = None, image_size: int | None = None,
            weights: Any = None, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
            seed: int = 0, num_workers: int | None = None, amp: Any = "auto", progress: bool = True,
            log: Callable[[str], Any] | None = print) -> tuple[LRFinderResult, str]:
    """``d2lkaggle lr-find``: the range test on a competition's recipe model and training split;
    writes ``lr_find.png`` and ``lr_find.csv`` into ``out`` and returns ``(result, png_path)``."""
    comp = get_competition(competition)
    recipe = _recipe_for(comp, batch_size=batch_size, wd=wd, weights=weights)
    name = canonical_name(backend)
    out = os.path.abspath(out or os.path.join("runs", f"{comp.name}-{name}"))
    check_out_outside_data(out, comp, data_dir)
    data = load_data(comp, data_dir, batch_size=recipe.batch_size, valid_ratio=recipe.valid_ratio,
                     image_size=image_size, seed=seed, num_workers=num_workers)
    bk = get_backend(name)
    bk.set_seed(seed)
    net = build_net(bk, recipe, len(data.classes))
    res = bk.lr_find(net, data.train_iter, start_lr, end_lr, num_iter, wd=recipe.wd, amp=amp,
                     progress=progress, log=log)
    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "lr_find.png")
    res.plot(png, title=f"{comp.name} · {name} · {recipe.model} · batch {recipe.batch_size}, "
                        f"wd {recipe.wd:g}")
    res.to_csv(os.path.join(out, "lr_find.csv"))
    return res, png
