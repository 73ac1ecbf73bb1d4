"""Weight averaging during training, once for every framework (numpy on the step's state).

:class:`Lookahead` is the averaging of the CIFAR-10 speed-run record (airbench94's
``LookaheadState``): every ``every`` optimizer steps the model's floating-point state —
parameters and BatchNorm statistics — is blended into an average, ``avg ← decay·avg +
(1 − decay)·w``, and the model is put back onto that average (``w ← avg``: Lookahead's "slow
weights"); the decay grows with training as ``decay_max · (step / total)^power``, so early
steps follow the fast weights and late ones average over the last stretch. After the last
step the model is the average as of its last update (airbench's final ``update(decay=1.0)``).

:class:`AveragedStep` wraps a backend's step (:class:`d2lkaggle.train.loop.Step`), so no wing
has averaging code: it reads and writes the model through ``state_dict``/``load_state_dict``
(canonical numpy names, ``model/...``) and keeps the average, with its step count, in the
step's own checkpoint state (``average/...``), so a resumed run averages exactly as an
uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["AVERAGES", "Lookahead", "AveragedStep", "check_average", "make_average"]

#: what ``--average`` accepts (``none``: the last weights, as trained)
AVERAGES = ("none", "lookahead")
_MODEL, _AVG, _COUNT = "model/", "average/", "average_steps"


class Lookahead:
    """airbench94's weight averaging: every ``every`` steps ``avg ← d·avg + (1−d)·w``, then
    ``w ← avg``, with ``d = decay · (step / total_steps)^power`` (``decay`` 0.95⁵, ``power`` 3,
    ``every`` 5: the record's values)."""

    name = "lookahead"

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5, power: float = 3.0):
        if int(every) < 1:
            raise ValueError(f"lookahead: every must be >= 1 step, got {every!r}")
        if not (0.0 <= float(decay) < 1.0) or not math.isfinite(float(power)) or power < 0:
            raise ValueError(f"lookahead: decay must be in [0, 1) and power >= 0, got "
                             f"{decay!r}, {power!r}")
        self.every, self.decay, self.power = int(every), float(decay), float(power)

    def decay_at(self, step: int, total_steps: int) -> float:
        """The blend's decay after optimizer step ``step`` (1-based) of ``total_steps``."""
        return self.decay * (step / max(1, total_steps)) ** self.power

    def describe(self) -> dict[str, Any]:
        """What summary.json records."""
        return {"name": self.name, "every": self.every, "decay": self.decay, "power": self.power}


def check_average(average: Any) -> str:
    """``average`` normalised to a name of :data:`AVERAGES` (``None``/``False`` → ``"none"``)."""
    if average is None or average is False:
        return "none"
    if isinstance(average, str) and average.strip().lower() in AVERAGES:
        return average.strip().lower()
    raise ValueError(f"--average {average!r} is not one of {', '.join(AVERAGES)}")


def make_average(average: Any) -> Lookahead | None:
    """The averaging object of a name of :data:`AVERAGES` (``None`` for ``"none"``)."""
    return Lookahead() if check_average(average) == "lookahead" else None


class AveragedStep:
    """``step`` with :class:`Lookahead` applied after its optimizer steps (every other method
    is the step's own). ``total_steps`` is the training's length in optimizer steps, which the
    decay's ramp and the final "weights := average" need."""

    def __init__(self, step: Any, average: Lookahead, total_steps: int):
        self.step, self.average, self.total_steps = step, average, int(total_steps)
        self.count = 0
        self.avg: dict[str, np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)

    def _model(self) -> dict[str, np.ndarray]:
        # floating state only (a step's integer counters, if any, are not averaged)
        return {k: np.asarray(v) for k, v in self.step.state_dict().items()
                if k.startswith(_MODEL) and np.issubdtype(np.asarray(v).dtype, np.floating)}

    def _blend(self, decay: float) -> None:
        w = self._model()
        if self.avg is None:   # airbench's average starts as a copy of the initial weights
            raise AssertionError("the average is taken at the first step")
        for k, v in w.items():
            a = self.avg[k]
            a += (1.0 - decay) * (v.astype(a.dtype) - a)   # torch's lerp_(w, 1 - decay)
        self.step.load_state_dict({k: a.astype(w[k].dtype) for k, a in self.avg.items()})

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if self.avg is None:   # the weights before the first step
            self.avg = {k: v.copy() for k, v in self._model().items()}
        out = self.step.train_batch(x, y)
        self.count += 1
        if self.count % self.average.every == 0:
            self._blend(self.average.decay_at(self.count, self.total_steps))
        if self.count == self.total_steps:   # the last step: the weights become the average
            self._blend(1.0)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        state = dict(self.step.state_dict())
        if self.avg is not None:
            state.update({_AVG + k: v.copy() for k, v in self.avg.items()})
        state[_COUNT] = np.array(float(self.count))
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.step.load_state_dict({k: v for k, v in state.items()
                                   if not k.startswith(_AVG) and k != _COUNT})
        avg = {k[len(_AVG):]: np.array(v) for k, v in state.items() if k.startswith(_AVG)}
        self.avg = avg or None
        self.count = int(round(float(np.asarray(state.get(_COUNT, 0)).reshape(-1)[0])))
