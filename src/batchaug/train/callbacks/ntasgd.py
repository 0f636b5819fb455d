"""NT-ASGD: non-monotonically triggered averaged SGD (Merity et al. 2017), ``optim.ntasgd_nonmono``.

Train with plain SGD; at every evaluation, compare the validation's selection value (e.g. ``val_ppl``)
with the best of all evaluations but the last ``nonmono`` (the reference's ``val_loss >
min(best_val_loss[:-nonmono])``, with more than ``nonmono`` evaluations logged). The first time it is
worse, averaging starts: from the next step on, the callback keeps the uniform mean of the weights
after every step, and that mean is what validation measures, what ``best.pt`` keeps (as
``eval_model``) and what ``batchaug eval`` evaluates — the reference evaluates and saves the averaged
weights the same way. The SGD steps themselves go on unchanged.

Relation to the reference (salesforce/awd-lstm-lm ``main.py``), which switches to
``torch.optim.ASGD(lr, t0=0, lambd=0)``: with ``lambd = 0`` ASGD's step is SGD's (the reference's SGD has
no momentum), so only the average differs — the reference's ASGD leaves the first iterate after the
switch out of it (its ``mu`` is 1 for two steps), and takes each step with the previous step's
learning rate (its ``eta`` lags one step behind the ``seq_len / bptt`` scaling). Here the average is
the plain mean of every iterate after the switch and every step uses its own learning rate.

The history, the switch step and the average are checkpointed, so a resumed run averages exactly as an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from batchaug.nn.wrappers import clean_state_dict, unwrap
from batchaug.schema import check_bounds
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer

__all__ = ["NTASGD"]


class NTASGD(Callback):
    """Start averaging the weights when validation stops improving for ``nonmono`` evaluations.

    Evaluation lines gain ``ntasgd_averaging`` (whether the line's validation measured the average) and,
    once averaging, ``ntasgd_since_step`` (the step after which averaging began).
    """

    name = "ntasgd"
    listable = False
    option = "optim.ntasgd_nonmono"

    def __init__(self, nonmono: int) -> None:
        check_bounds(nonmono, "optim.ntasgd_nonmono", ge=1)
        self.nonmono = int(nonmono)
        self.history: list[float] = []
        self.start_step: int | None = None  # averaging covers the iterates after this step
        self.count = 0
        self.weights: dict[str, Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> NTASGD | None:
        return cls(cfg.optim.ntasgd_nonmono) if cfg.optim.ntasgd_nonmono is not None else None

    @property
    def averaging(self) -> bool:
        return self.start_step is not None

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, step: int, out: dict[str, Any]) -> None:
        if not self.averaging:
            return
        current = unwrap(trainer.model).state_dict()
        self.count += 1
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in current.items()}
            return
        floats = [k for k, v in self.weights.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.weights[k] for k in floats], [current[k].detach() for k in floats],
                             1.0 / self.count)  # running mean: w̄ += (w - w̄) / n
        for k, v in self.weights.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        record["ntasgd_averaging"] = self.weights is not None  # what this line's validation measured
        key, mode = trainer.validation.selection
        value = record.get(key)
        if not self.averaging and value is not None:
            earlier = self.history[:-self.nonmono]
            if len(self.history) > self.nonmono:
                best = max(earlier) if mode == "max" else min(earlier)
                if (value < best) if mode == "max" else (value > best):
                    self.start_step = trainer.state.step
            self.history.append(float(value))
        if self.averaging:
            record["ntasgd_since_step"] = self.start_step

    def eval_weights(self, trainer: Trainer) -> Mapping[str, Tensor] | None:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {"nonmono": self.nonmono, "history": list(self.history), "start_step": self.start_step,
                "count": self.count, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(v) for v in state.get("history", [])]
        start = state.get("start_step")
        self.start_step = None if start is None else int(start)
        self.count = int(state.get("count", 0))
        weights = state.get("weights")
        self.weights = {k: v.clone() for k, v in clean_state_dict(weights).items()} if weights is not None else None
