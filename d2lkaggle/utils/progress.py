"""One overall progress line across a run's phases (train/valid, retrain), with an ETA.

Pass a :class:`RunProgress` as ``progress=`` to a backend's ``train`` (or ``loop.fit``): each
epoch's bar then sits under one line that counts the batches of every phase and shows the
time left for the whole run. Log lines go through :meth:`RunProgress.wrap` so they print
above the bars instead of through them.
"""
from __future__ import annotations

import time
from typing import Any, Callable


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
    def plan(*phases: tuple[int, int]) -> int:
        """Total batches of phases given as ``(epochs, batches_per_epoch)``."""
        return sum(int(e) * int(b) for e, b in phases)

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
    """An epoch's bar: ``None`` when ``progress`` is off, the run's line when it is a
    :class:`RunProgress`, else a tqdm bar of its own."""
    if not progress:
        return None
    if hasattr(progress, "epoch_bar"):  # a RunProgress: one overall line across phases
        return progress.epoch_bar(total, desc)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
