"""``metrics.jsonl`` (the run-directory contract), TensorBoard events, and interval averaging."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

REQUIRED_KEYS = ("epoch", "step", "images_seen", "lr", "train_loss", "val_loss", "val_acc", "grad_norm", "wall_time")


class IntervalMeter:
    """Weighted means of scalar metrics since the last :meth:`reset` (values may be 0-d tensors).

    Tensors are summed on their device and converted to Python floats only when read, so logging every
    step does not force a device synchronization every step.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, Any] = defaultdict(float)
        self._weights: dict[str, float] = defaultdict(float)

    def add(self, name: str, value: float | torch.Tensor, weight: float = 1.0) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
        self._sums[name] = self._sums[name] + value * weight
        self._weights[name] += weight

    def means(self) -> dict[str, float]:
        out = {}
        for k, s in self._sums.items():
            w = self._weights[k]
            out[k] = float(s) / w if w else float("nan")
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self._sums.items()}, "weights": dict(self._weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._sums.update(state.get("sums", {}))
        self._weights.update(state.get("weights", {}))


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/Infinity; null says "not measured"
    return v


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl``, fsync'd so a kill loses at most a line.

    Other sinks (TensorBoard, CSV, W&B) are callbacks that receive the same lines
    (:mod:`batchaug.train.callbacks.loggers`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop lines written after ``step`` (lines of an interrupted run newer than its checkpoint)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", -1) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (tensors read, NaN/inf written as null); returns what was written."""
        record = {k: _clean(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def close(self) -> None:
        """Nothing is held open between lines; kept so writers can be used uniformly."""


def read_metrics(path: str | os.PathLike, kind: str | None = "eval") -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` (or of ``RUN/metrics.jsonl`` when given a run directory).

    ``kind="eval"`` (the default): the evaluation lines (``"kind": "eval"``, or no ``kind``: runs
    written before step lines existed); ``"step"``: the ``train.log_every`` lines; ``None``: all.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.exists():
        return []
    records = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if kind is None:
        return records
    return [r for r in records if r.get("kind", "eval") == kind]
