"""Step-level lines in ``metrics.jsonl`` (``train.log_every``), independent of evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchaug.schema import check_bounds
from batchaug.train.callbacks.base import Callback
from batchaug.train.metrics_log import IntervalMeter

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer


class StepLog(Callback):
    """Every ``every`` steps, a ``"kind": "step"`` line: ``step``, ``epoch``, ``images_seen``, ``lr``
    (of that step), ``train_loss`` and ``grad_norm`` (means since the previous step line) and
    ``wall_time``. The means are accumulated on the device and read once per line."""

    name = "step_log"
    listable = False
    option = "train.log_every"

    def __init__(self, every: int) -> None:
        check_bounds(every, "train.log_every", ge=1)
        self.every = int(every)
        self.meter = IntervalMeter()

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> StepLog | None:
        return cls(cfg.train.log_every) if cfg.train.log_every is not None else None

    def on_step_end(self, trainer: Trainer, step: int, out: dict[str, Any]) -> None:
        self.meter.add("train_loss", out["loss"])
        self.meter.add("grad_norm", out["grad_norm"])
        done = step + 1
        if done % self.every:
            return
        means = self.meter.means()
        self.meter.reset()
        trainer.log({"kind": "step", "epoch": trainer.batches.epoch_at(done), "step": done,
                     "images_seen": done * trainer.s.batch_size, "lr": out["lr"], "train_loss": means["train_loss"],
                     "grad_norm": means["grad_norm"], "wall_time": trainer.wall_time()})

    def state_dict(self) -> dict[str, Any]:
        return {"meter": self.meter.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state.get("meter", {}))
