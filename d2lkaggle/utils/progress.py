"""One overall progress line across a run's phases (train/valid, retrain), with an ETA.

Pass a :class:`RunProgress` as ``progress=`` to a backend's ``train`` (or ``loop.fit``): each
epoch's bar then sits under one line that counts the batches of every phase and shows the
time left for the whole run. Log lines go through :meth:`RunProgress.wrap` so they print
above the bars instead of through them.

Bars are drawn only on a terminal (:func:`interactive`): redirected to a file, a pipe, a CI log
or a notebook cell capturing output, a run writes one line per epoch instead of carriage-return
frames. :func:`resolve_verbose` gives Keras' ``verbose`` levels (``--quiet``, ``--verbose``).
"""
from __future__ import annotations

import math

import sys
import time
from typing import Any, Callable

#: Keras' ``verbose``: 0 no epoch output, 1 a live bar (epoch lines above it), 2 one line per epoch
VERBOSE_LEVELS = (0, 1, 2)


def interactive() -> bool:
    """True when stdout and stderr are both terminals, or in a Jupyter kernel (tqdm's widget):
    bars may redraw in place there."""
    if all(bool(getattr(s, "isatty", lambda: False)()) for s in (sys.stdout, sys.stderr)):
        return True
    ipython = sys.modules.get("IPython")   # (never imported here: only when already running)
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:   # noqa: BLE001 - an odd shell is not a notebook
        return False


def resolve_verbose(verbose: Any = "auto") -> int:
    """Keras' ``verbose`` as a level: ``"auto"`` is 1 (a live bar) on a terminal and 2 (one line
    per epoch) anywhere else; 0 prints no epoch output at all."""
    if verbose in ("auto", None):
        return 1 if interactive() else 2
    if isinstance(verbose, bool) or verbose not in VERBOSE_LEVELS:
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2 (Keras' levels), got {verbose!r}")
    return int(verbose)


def plural(n: float, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``, ``9.9 epochs`` (``many``: the plural when it is not
    ``word + "s"``): a count and its noun, as a sentence says it."""
    return f"{n:g} {word if n == 1 else many or word + 's'}"


def clock(seconds: float) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour) of a duration."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _EpochBar:
    """An epoch's tqdm bar that also advances the overall line."""

    def __init__(self, run: "RunProgress", bar):
        self.run, self.bar = run, bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.run.update(n)

    def set_postfix(self, *args: Any, **kw: Any) -> None:
        self.bar.set_postfix(*args, **kw)

    def close(self) -> None:
        self.bar.close()


class RunProgress:
    """The overall line: ``total`` training batches over all phases (from :meth:`plan`)."""

    def __init__(self, total: int, desc: str = "run", file=None):
        from tqdm.auto import tqdm
        self._tqdm = tqdm
        self.total = int(total)
        self.phase = ""
        self.t0 = time.time()
        # smoothing=0: the rate is batches over the whole run's time so far, so the time spent
        # validating between epochs (and a slow first batch) is in the ETA; tqdm's default
        # moving average forgot it and the first ETA of a busy machine was minutes short
        self.bar = tqdm(total=self.total, desc=desc, position=0, dynamic_ncols=True, unit="batch",
                        file=file, smoothing=0,
                        bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                        "batches [{elapsed}<{remaining} left{postfix}]")
        self.file = file

    @staticmethod
    def plan(*phases: tuple[float, int]) -> int:
        """Total batches of phases given as ``(epochs, batches_per_epoch)``; a fractional
        epoch count is the loop's ``ceil(epochs × batches)``."""
        return sum(max(0, math.ceil(float(e) * int(b) - 1e-9)) for e, b in phases)

    def set_estimate(self, seconds: float) -> None:
        """The expected duration measured before training: the ETA until batches are done."""
        eta = time.localtime(time.time() + float(seconds))
        self.bar.set_postfix_str(f"done at {time.strftime('%H:%M', eta)} (estimated)")

    def set_phase(self, phase: str) -> None:
        """Name the phase shown before each epoch's bar (e.g. ``"retrain"``)."""
        self.phase = phase
        self.bar.set_description(f"run ({phase})" if phase else "run")

    def epoch_bar(self, total: int, desc: str) -> _EpochBar:
        bar = self._tqdm(total=total, desc=f"{self.phase} {desc}".strip(), position=1, leave=False,
                         dynamic_ncols=True, file=self.file)
        return _EpochBar(self, bar)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        elapsed = time.time() - self.t0
        if self.bar.n and elapsed > 0:   # the whole run's average rate (see smoothing=0)
            eta = time.localtime(time.time() + (self.total - self.bar.n) * elapsed / self.bar.n)
            self.bar.set_postfix_str(f"done at {time.strftime('%H:%M', eta)}", refresh=False)

    def wrap(self, log: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
        """``log`` printing above the bars (tqdm.write for ``print``)."""
        if log is None:
            return None
        if log is print:
            return lambda msg: self._tqdm.write(str(msg), file=self.file)

        def write(msg: str) -> Any:
            with self._tqdm.external_write_mode(file=self.file):
                return log(msg)
        return write

    def close(self) -> None:
        self.bar.close()

    def __bool__(self) -> bool:  # progress=RunProgress(...) means "show progress"
        return True


def epoch_bar(total: int, desc: str, progress: Any):
    """An epoch's bar: ``None`` when ``progress`` is off (or ``True`` off a terminal), the run's
    line when it is a :class:`RunProgress`, else a tqdm bar of its own."""
    if not progress or (progress is True and not interactive()):
        return None
    if hasattr(progress, "epoch_bar"):  # a RunProgress: one overall line across phases
        return progress.epoch_bar(total, desc)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
