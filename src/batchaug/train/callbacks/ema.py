"""An exponential moving average of the weights (``train.ema_decay``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from batchaug.nn.wrappers import clean_state_dict, swapped_weights, unwrap
from batchaug.schema import check_bounds
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer

__all__ = ["EMA", "ema_weights", "swapped_weights"]


class EMA(Callback):
    """``ema = decay · ema + (1 - decay) · w`` after every optimizer step, for every floating-point
    entry of the model's state dict (parameters and BN running statistics; integer buffers such as
    ``num_batches_tracked`` are copied). The average starts from the weights of the first step.

    At each evaluation the average is swapped into the model (so the method's ``predict``, hooks
    included, is used as is) and evaluated: the line gains ``val_loss_ema`` and ``val_acc_ema`` (every
    key of the run's validation with ``_ema`` appended). It
    is checkpointed under ``"callbacks"`` -> ``"ema"`` -> ``"weights"`` (a state dict of the plain
    model, see :func:`ema_weights`), which ``batchaug eval DIR --ema`` evaluates.
    """

    name = "ema"
    listable = False
    option = "train.ema_decay"

    def __init__(self, decay: float) -> None:
        check_bounds(decay, "train.ema_decay", ge=0, lt=1)
        self.decay = float(decay)
        self.weights: dict[str, Tensor] | None = None
        self.updates = 0

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> EMA | None:
        return cls(cfg.train.ema_decay) if cfg.train.ema_decay is not None else None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in unwrap(trainer.model).state_dict().items()}

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, step: int, out: dict[str, Any]) -> None:
        assert self.weights is not None, "on_fit_start must run first"
        current = unwrap(trainer.model).state_dict()
        floats = [k for k, v in self.weights.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([self.weights[k] for k in floats], [current[k].detach() for k in floats],
                                 1.0 - self.decay)
        for k, v in self.weights.items():
            if not v.is_floating_point():
                v.copy_(current[k])
        self.updates += 1

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        assert self.weights is not None, "on_fit_start must run first"
        with swapped_weights(trainer.model, self.weights):
            val = trainer.evaluate(test=False)  # the average is selected and compared on the validation set
        for key, value in val.items():  # val_loss_ema, val_acc_ema (val_ppl_ema for language models)
            record[f"{key}_ema"] = value

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("weights") is not None:
            self.weights = {k: v.clone() for k, v in clean_state_dict(state["weights"]).items()}
        self.updates = int(state.get("updates", 0))


def ema_weights(checkpoint: Mapping[str, Any]) -> dict[str, Tensor] | None:
    """The averaged weights stored in a checkpoint (None when the run kept no average)."""
    state = checkpoint.get("callbacks", {}).get(EMA.name)
    weights = state.get("weights") if state else None
    return clean_state_dict(weights) if weights is not None else None
