"""A run's per-epoch records (what the chapters' Animator plots): ``history.csv``, checkpoints' metadata."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..utils.files import atomic_write_text

HISTORY_COLUMNS = ("epoch", "lr", "lr_last", "train_loss", "train_acc", "valid_loss", "valid_acc",
                   "seconds", "examples_per_sec")


@dataclass
class History:
    """Per-epoch records of a run (what the chapters' Animator plots)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    devices: str = ""
    precision: str = ""    # what the step computed in: "bf16", "float32" ... (amp="auto" decides)

    def add(self, **row: float) -> None:
        self.rows.append({k: row.get(k, math.nan) for k in HISTORY_COLUMNS})

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[float]:
        return [r[name] for r in self.rows]

    @property
    def last(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {k: math.nan for k in HISTORY_COLUMNS}

    @property
    def best_valid_acc(self) -> float:
        accs = [a for a in self.column("valid_acc") if not math.isnan(a)]
        return max(accs) if accs else math.nan

    @property
    def examples_per_sec(self) -> float:
        """Training throughput over all epochs (examples / seconds spent in training)."""
        n = sum(r["examples_per_sec"] * r["seconds"] for r in self.rows)
        s = sum(r["seconds"] for r in self.rows)
        return n / s if s > 0 else math.nan

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "devices": self.devices,
                           "precision": self.precision})

    @classmethod
    def from_json(cls, text: str) -> "History":
        d = json.loads(text)
        # columns added later (lr_last) read as NaN from older checkpoints
        return cls(rows=[{k: (math.nan if r.get(k) is None else r[k]) for k in HISTORY_COLUMNS}
                         for r in d["rows"]], devices=d.get("devices", ""),
                   precision=d.get("precision", ""))

    def to_csv(self, path: str, extra: dict[str, Any] | None = None) -> str:
        """Write the history as CSV (atomically)."""
        cols = list(extra or {}) + list(HISTORY_COLUMNS)
        lines = [",".join(cols)]
        for r in self.rows:
            vals = list((extra or {}).values()) + [r[k] for k in HISTORY_COLUMNS]
            lines.append(",".join("" if isinstance(v, float) and math.isnan(v) else str(v)
                                  for v in vals))
        return atomic_write_text(path, "\n".join(lines) + "\n")

    def summary(self) -> str:
        r = self.last
        text = f"train loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}"
        if not math.isnan(r["valid_acc"]):
            text += f", valid loss {r['valid_loss']:.3f}, valid acc {r['valid_acc']:.3f}"
        return text + f"; {self.examples_per_sec:.1f} examples/sec on {self.devices}"
