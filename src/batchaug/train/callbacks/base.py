"""The hook interface between the trainer and its callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer


class Callback:
    """Hooks the trainer calls, in this order within a run (all optional):

    ``on_fit_start(trainer)``
        once, after a resume has restored the state and before the first step;
    ``on_before_optimizer_step(trainer, grad_norm)``
        every step, after backward (and AMP unscaling) and before ``optimizer.step()``;
        ``grad_norm`` is the global L2 norm of the gradients (a 0-d tensor, not synced);
    ``on_step_end(trainer, step, out)``
        every step, after the optimizer step; ``trainer.state.step == step + 1``; ``out`` holds
        ``loss`` (a 0-d tensor), ``grad_norm``, ``lr``, ``views`` and the method's ``metrics``;
    ``on_eval(trainer, record)``
        at every evaluation, before its line is written: may add keys to ``record``;
    ``on_log(trainer, record)``
        for every line written to ``metrics.jsonl`` (evaluation lines, and ``"kind": "step"`` lines);
    ``on_checkpoint(trainer, path)``
        after ``last.pt`` or ``best.pt`` was written;
    ``on_fit_end(trainer)``
        once, when training stops (also after an error).

    ``eval_weights(trainer)`` is asked at every evaluation and checkpoint: weights (a state dict of the
    plain model) that stand for the model in validation, ``best.pt`` and ``batchaug eval`` instead of
    its own (NT-ASGD's average once it runs); the first callback that offers some wins.

    ``state_dict()``/``load_state_dict()`` carry what a resumed run needs: the trainer stores it in
    every checkpoint under ``"callbacks"`` -> :attr:`name` and restores it before ``on_fit_start``.
    Values must be tensors or plain containers (checkpoints load with ``weights_only=True``).
    """

    #: registry name; also the key of this callback's state in checkpoints
    name: ClassVar[str] = ""
    #: whether ``train.callbacks`` may list it (False for those a config option switches on)
    listable: ClassVar[bool] = True
    #: the config option that switches it on, for error messages (when not listable)
    option: ClassVar[str] = ""

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> Callback | None:
        """The callback ``cfg`` asks for, or None. Default: ``cls()`` when ``train.callbacks`` lists it."""
        return cls() if cls.name in cfg.train.callbacks else None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first step of this process."""

    def on_before_optimizer_step(self, trainer: Trainer, grad_norm: Tensor) -> None:
        """Called with the (unscaled) gradients in place, before the optimizer uses them."""

    def on_step_end(self, trainer: Trainer, step: int, out: dict[str, Any]) -> None:
        """Called after each optimizer step."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called at each evaluation with the line about to be written."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called for each line written to ``metrics.jsonl``."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """Called after a checkpoint was written to ``path``."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when training stops."""

    def eval_weights(self, trainer: Trainer) -> Mapping[str, Tensor] | None:
        """Weights to validate and deliver instead of the model's own; None (the default): the model's."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
