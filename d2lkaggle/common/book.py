"""The textbook's own helpers, so code typed from the two Kaggle chapters runs here.

The chapters call ``d2l.Timer``, ``d2l.Accumulator``, ``d2l.Animator``, ``get_net(devices)``
and ``evaluate_loss(data_iter, net, devices)`` (see ``docs/from-the-book.md`` for every call
and what it maps to). This module holds the framework-free parts: the three small helper
classes, :class:`TensorLoader` (what each backend's ``tensors()`` returns, for hand-written
training loops), the book's argument order and the chapters' ``get_net``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np


class Timer:
    """The book's ``d2l.Timer``: records the seconds between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        """Start (or restart) the clock."""
        self.tik = time.perf_counter()

    def stop(self) -> float:
        """Stop the clock, record and return the elapsed seconds."""
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        """Mean of the recorded times."""
        return sum(self.times) / len(self.times) if self.times else 0.0

    def sum(self) -> float:
        """Sum of the recorded times."""
        return sum(self.times)

    def cumsum(self) -> list[float]:
        """Running totals of the recorded times."""
        return np.cumsum(self.times).tolist()


class Accumulator:
    """The book's ``d2l.Accumulator``: sums ``n`` running totals (loss, correct, count ...)."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        """Add one value to each total; framework scalars are read with ``float``."""
        if len(args) != len(self.data):
            raise ValueError(f"Accumulator({len(self.data)}).add got {len(args)} values")
        self.data = [a + _scalar(b) for a, b in zip(self.data, args)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]


def _scalar(v: Any) -> float:
    # torch/mxnet/paddle 0-d tensors all support float(); .item() would not exist on floats
    return float(v.item() if hasattr(v, "item") and not isinstance(v, (int, float)) else v)


class Animator:
    """The book's ``d2l.Animator``: points added one by one, drawn as lines.

    Same arguments as the book's, plus ``path``: where a PNG of the figure is written after
    every ``add``. In Jupyter it shows in the cell, as the book's does. Outside Jupyter, with
    no ``path``, it writes ``animator.png`` in the working folder (``animator-2.png`` ... for
    later Animators of the process in that folder, so a chapter's two ``train`` calls keep
    both figures) and says so in one line: the book's code runs headless and still shows
    its curves.
    """

    _headless: dict[str, int] = {}   # folder -> Animators of this process that drew there

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None,
                 legend: Sequence[str] | None = None, xlim=None, ylim=None,
                 xscale: str = "linear", yscale: str = "linear",
                 fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1, ncols: int = 1,
                 figsize: tuple[float, float] = (3.5, 2.5), path: str | None = None) -> None:
        self.xlabel, self.ylabel, self.legend = xlabel, ylabel, list(legend or [])
        self.xlim, self.ylim, self.xscale, self.yscale = xlim, ylim, xscale, yscale
        self.fmts, self.figsize, self.path = tuple(fmts), figsize, path
        self.X: list[list[float]] | None = None
        self.Y: list[list[float]] | None = None

    def add(self, x: Any, y: Any) -> None:
        """Add one point per line; ``None`` in ``y`` skips that line (as in the book)."""
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        xs = list(x) if isinstance(x, (list, tuple)) else [x] * len(ys)
        if self.X is None:
            self.X, self.Y = [[] for _ in ys], [[] for _ in ys]
        for i, (a, b) in enumerate(zip(xs, ys)):
            if a is not None and b is not None:
                self.X[i].append(_scalar(a))
                self.Y[i].append(_scalar(b))
        self.draw()

    def draw(self) -> None:
        from ..train.plotting import _in_notebook
        notebook = _in_notebook()
        if self.X is None:
            return
        if not (notebook or self.path):
            here = os.getcwd()
            k = Animator._headless[here] = Animator._headless.get(here, 0) + 1
            self.path = os.path.join(here, "animator.png" if k == 1 else f"animator-{k}.png")
            print(f"Animator: drawing to {self.path} (not in Jupyter; Animator(path=...) "
                  f"picks the file)", file=sys.stderr)
        import matplotlib
        if not notebook:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=self.figsize)
        try:
            for i, (xs, ys) in enumerate(zip(self.X, self.Y)):
                if xs:
                    label = self.legend[i] if i < len(self.legend) else None
                    ax.plot(xs, ys, self.fmts[i % len(self.fmts)], label=label)
            ax.set_xlabel(self.xlabel or "")
            ax.set_ylabel(self.ylabel or "")
            ax.set_xscale(self.xscale)
            ax.set_yscale(self.yscale)
            if self.xlim:
                ax.set_xlim(self.xlim)
            if self.ylim:
                ax.set_ylim(self.ylim)
            if self.legend:
                ax.legend()
            ax.grid(True, alpha=0.3)
            if self.path:
                from ..utils.files import atomic_path
                with atomic_path(self.path, ".png") as tmp:
                    fig.savefig(tmp, dpi=100, format="png")
            if notebook:
                from IPython import display
                display.clear_output(wait=True)
                display.display(fig)
        finally:
            plt.close(fig)


class TensorLoader:
    """A core loader whose batches come out as framework tensors (what ``bk.tensors`` returns).

    Iterating yields ``(X, y)``: X normalised with the loader's mean/std, N×3×H×W on the
    device; y int64 labels (or float soft targets) on the same device. Each ``for`` loop is
    a new epoch with fresh shuffling and augmentation, as with the book's DataLoader;
    ``len()`` is the number of batches, as the chapters' ``train`` expects.
    """

    def __init__(self, loader, to_x: Callable[[np.ndarray], Any], to_y: Callable[[np.ndarray], Any]):
        if isinstance(loader, TensorLoader):
            loader = loader.loader
        self.loader, self.to_x, self.to_y = loader, to_x, to_y

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for x, y in self.loader:
            yield self.to_x(x), self.to_y(y)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    def __getattr__(self, name: str) -> Any:
        # mean/std/num_examples/source ... of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def device_list(devices: Any, default: Callable[[], list]) -> list:
    """The book's ``devices`` argument as a list: None → ``default()`` (the backend's
    ``try_all_gpus``), one device → ``[device]``."""
    if devices is None:
        return list(default())
    return list(devices) if isinstance(devices, (list, tuple)) else [devices]


def tensor_loader(data_iter, devices: Any, default: Callable[[], list],
                  to_tensor: Callable[..., Any], to_y: Callable[[np.ndarray, Any], Any]) -> TensorLoader:
    """What every backend's ``tensors(data_iter, devices)`` returns: batches normalised with the
    loader's mean/std by the backend's ``to_tensor`` and labels by ``to_y``, on ``devices[0]``."""
    device = device_list(devices, default)[0]
    mean, std = data_iter.mean, data_iter.std
    return TensorLoader(data_iter, lambda x: to_tensor(x, mean, std, device), lambda y: to_y(y, device))


def is_loader(obj: Any) -> bool:
    """True for this library's data loaders (core :class:`ImageLoader` or a TensorLoader)."""
    from ..data.loader import ImageLoader
    return isinstance(obj, (ImageLoader, TensorLoader))


def net_first(a: Any, b: Any, net_types: type | tuple[type, ...] | None = None) -> tuple[Any, Any]:
    """``(net, data_iter)`` from either order: ours ``(net, data_iter)`` or the Dog chapter's
    ``evaluate_loss(data_iter, net, devices)``, told apart by type: ``net_types`` (the
    framework's layer class), else this library's loader types. A TensorLoader is unwrapped
    to its loader."""
    if net_types is not None:
        swap = isinstance(b, net_types) and not isinstance(a, net_types)
    else:
        swap = is_loader(a) and not is_loader(b)
    if swap:
        a, b = b, a
    if isinstance(b, TensorLoader):
        b = b.loader
    return a, b


def get_net(backend, competition: str = "dog-breed",
            num_classes: int | None = None, weights: str | None = "recipe") -> Any:
    """The chapters' ``get_net``: the competition recipe's model, built in ``backend``.

    ``dog-breed`` (the default, as the Dog chapter's ``get_net(devices)``): the frozen
    ResNet-34 + two-layer head, ImageNet weights, 120 classes. ``cifar10``: the book's
    ResNet-18 with 10 classes. ``weights="recipe"`` takes the recipe's (``"imagenet"``
    for dog-breed), ``None`` a random backbone, or a weight file's path.
    """
    from ..models.build import build_net
    from ..specs.competitions import get_competition
    comp = get_competition(competition)
    if comp.recipe is None:
        raise ValueError(f"competition {comp.name!r} has no recipe to build a net from")
    recipe = comp.recipe if weights == "recipe" else replace(comp.recipe, weights=weights)
    if num_classes is None:   # the competition's own count (its table entry)
        num_classes = comp.num_classes or 10
    return build_net(backend, recipe, int(num_classes))
