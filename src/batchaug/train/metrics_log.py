"""``metrics.jsonl`` (the run-directory contract), TensorBoard events, and interval averaging."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from batchaug.errors import DataError
from batchaug.io import append_text, make_dirs, write_text

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

    Every line goes through :func:`batchaug.io.append_text` (a failed write leaves no fragment behind), and
    :meth:`truncate_after` rewrites the file atomically. Other sinks (TensorBoard, CSV, W&B) are callbacks
    that receive the same lines (:mod:`batchaug.train.callbacks.loggers`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        make_dirs(self.path.parent)

    def truncate_after(self, step: int) -> None:
        """Drop lines written after ``step`` (lines of an interrupted run newer than its checkpoint) and a
        last line cut short by a kill or a full disk (with a warning); the file is replaced atomically."""
        if not self.path.exists():
            return
        keep = [r for r in _parse(self.path) if r.get("step", -1) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (tensors read, NaN/inf written as null); returns what was written."""
        record = {k: _clean(v) for k, v in record.items()}
        append_text(self.path, json.dumps(record) + "\n")
        return record

    def close(self) -> None:
        """Nothing is held open between lines; kept so writers can be used uniformly."""


def _parse(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``. A last line without its newline is a write that a kill or a full
    disk cut short: dropped with a warning when it does not parse. Any other bad line is a DataError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); not a metrics.jsonl batchaug wrote") from exc
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the unterminated tail
                warnings.warn(f"{path}: ignoring its last line, cut short ({len(line)} bytes without a newline: "
                              "a write interrupted by a kill or a full disk)", RuntimeWarning, stacklevel=3)
                continue
            raise DataError(f"{path}, line {number}: not a JSON object ({_snippet(line)})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: not a JSON object ({_snippet(line)})")
        records.append(record)
    return records


def _snippet(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")


def read_metrics(path: str | os.PathLike, kind: str | None = "eval") -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` (or of ``RUN/metrics.jsonl`` when given a run directory).

    ``kind="eval"`` (the default): the evaluation lines (``"kind": "eval"``, or no ``kind``: runs
    written before step lines existed); ``"step"``: the ``train.log_every`` lines; ``None``: all.
    A last line cut short by a kill or a full disk is skipped with a warning; any other line that is
    not a JSON object raises :class:`~batchaug.errors.DataError` naming the file and line.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():  # not exists(): a run directory created between the two checks is no file to parse
        return []
    records = _parse(p)
    if kind is None:
        return records
    return [r for r in records if r.get("kind", "eval") == kind]
