"""Scheduled drop-path (``model.drop_path``): the drop-path probability rises linearly from 0 to
``model.drop_path`` over the run, as in DARTS (github.com/quark0/darts ``cnn/train.py``:
``model.drop_path_prob = args.drop_path_prob * epoch / args.epochs``, 0.2 at the end).

The probability of step ``s`` of a run of ``T`` steps is ``p · s / T``: 0 at the first step, ``p / 2``
halfway, ``p`` after the last. The reference sets it once per epoch (``p · e / E``); per step is the
same line without the staircase. It is set on every module of the model that has a ``drop_path_prob``
attribute (:func:`batchaug.nn.drop_path.set_drop_path_prob`), under DDP and ``torch.compile``
wrappers; the trainer knows neither drop-path nor the model. A resumed run recomputes it from its step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchaug.errors import ConfigError
from batchaug.nn.drop_path import drop_path_modules, set_drop_path_prob
from batchaug.schema import check_bounds
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer


class DropPathSchedule(Callback):
    """Set the model's ``drop_path_prob`` to ``max_prob · step / total_steps`` before every step."""

    name = "drop_path"
    listable = False
    option = "model.drop_path"

    def __init__(self, max_prob: float) -> None:
        check_bounds(max_prob, "model.drop_path", ge=0, lt=1)
        self.max_prob = float(max_prob)

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> DropPathSchedule | None:
        return cls(cfg.model.drop_path) if cfg.model.drop_path is not None else None

    def prob_at(self, step: int, total_steps: int) -> float:
        """The drop-path probability of step ``step`` (0-based) of ``total_steps``."""
        return self.max_prob * min(max(step, 0), total_steps) / max(total_steps, 1)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not drop_path_modules(trainer.model):
            raise ConfigError("model.drop_path: the model has no drop-path (no module with a drop_path_prob "
                              "attribute, e.g. darts_v2); unset model.drop_path")
        self._set(trainer, trainer.state.step)

    def on_step_end(self, trainer: Trainer, step: int, out: dict[str, Any]) -> None:
        self._set(trainer, step + 1)  # the probability of the next step

    def _set(self, trainer: Trainer, step: int) -> None:
        set_drop_path_prob(trainer.model, self.prob_at(step, trainer.s.total_steps))
