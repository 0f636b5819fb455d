"""Where the lines of ``metrics.jsonl`` also go: TensorBoard, a CSV file, Weights & Biases."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchaug.errors import ConfigError
from batchaug.io import append_text, write_text
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer

__all__ = ["CSVLogger", "TensorBoardLogger", "WandbLogger"]


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def _wants(cfg: RunConfig, name: str) -> bool:
    return name in cfg.train.loggers and (name != "tensorboard" or cfg.train.tensorboard)


class TensorBoardLogger(Callback):
    """TensorBoard events in ``RUN/tensorboard/`` (when the ``tensorboard`` package is installed;
    without it the logger is silently off, as it is on by default). Evaluation lines under their
    own names, step lines under ``step/<name>``."""

    name = "tensorboard"
    listable = False
    option = "train.loggers"

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> TensorBoardLogger | None:
        if out_dir is None or not _wants(cfg, cls.name):
            return None
        return cls(out_dir / "tensorboard")

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # an optional extra
            return
        self._writer = SummaryWriter(str(self.log_dir))

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        prefix = "step/" if record.get("kind") == "step" else ""
        for key, value in _scalars(record).items():
            self._writer.add_scalar(prefix + key, value, record.get("step", 0))
        self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CSVLogger(Callback):
    """``RUN/metrics.csv``: one row per line of ``metrics.jsonl`` (evaluation and step lines, told
    apart by ``kind``), the columns in the order keys first appear. A key that appears later widens
    the header (the file is rewritten); on resume the file is rebuilt from ``metrics.jsonl``, so the
    two always agree. Unmeasured values are empty cells."""

    name = "csv"
    listable = False
    option = "train.loggers"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._columns: list[str] = []
        self._rows: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> CSVLogger | None:
        if out_dir is None or not _wants(cfg, cls.name):
            return None
        return cls(out_dir / "metrics.csv")

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        from batchaug.train.metrics_log import read_metrics

        jsonl = self.path.with_name("metrics.jsonl")
        self._rows = [{"kind": "eval", **r} for r in read_metrics(jsonl, kind=None)] if jsonl.exists() else []
        self._columns = []
        for row in self._rows:
            self._widen(row)
        self._rewrite()

    def _widen(self, row: dict[str, Any]) -> bool:
        new = [k for k in row if k not in self._columns]
        self._columns += new
        return bool(new)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._columns, restval="")
        writer.writeheader()
        writer.writerows(self._rows)
        write_text(self.path, buf.getvalue())

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        row = {"kind": "eval", **{k: ("" if v is None else v) for k, v in record.items()}}
        self._rows.append(row)
        if self._widen(row) or not self.path.exists():
            self._rewrite()
            return
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self._columns, restval="").writerow(row)
        append_text(self.path, buf.getvalue())


class WandbLogger(Callback):
    """Weights & Biases: every line logged at its step, the resolved config as the run's config.
    Needs ``pip install 'batchaug[wandb]'``; never on unless ``train.loggers`` lists ``wandb``. The
    project, entity and mode come from wandb's own environment (``WANDB_PROJECT``, default
    ``batchaug``; ``WANDB_MODE=offline`` to log without a network); the wandb run id is kept in the
    checkpoint, so a resumed run continues the same wandb run."""

    name = "wandb"
    listable = False
    option = "train.loggers"

    def __init__(self, out_dir: str | Path, config: dict[str, Any] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.config = config or {}
        self.run_id: str | None = None
        self._run: Any = None

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> WandbLogger | None:
        if out_dir is None or not _wants(cfg, cls.name):
            return None
        return cls(out_dir, cfg.to_dict())

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError("train.loggers: 'wandb' needs the wandb package: pip install 'batchaug[wandb]'") from exc
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "batchaug"), name=self.out_dir.name,
                               dir=str(self.out_dir), config=self.config, id=self.run_id, resume="allow")
        self.run_id = self._run.id

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._run is None:
            return
        prefix = "step/" if record.get("kind") == "step" else ""
        self._run.log({prefix + k: v for k, v in _scalars(record).items()}, step=int(record.get("step", 0)))

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
