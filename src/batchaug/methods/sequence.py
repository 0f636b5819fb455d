"""Batch Augmentation for language models: M copies of every sequence, each with its own dropout masks.

For an image the copies of a sample differ by their augmentation; for text, by the model's own
stochastic regularization (Hoffer et al. 2019, Table 1, the PTB word-level LSTM): every copy of a row
of the batch gets independent embedding-dropout, locked-dropout and weight-drop masks, and the loss is
the mean over all copies' tokens. With M = 1 this is the ordinary AWD-LSTM step (``baseline``).

A step of truncated BPTT (the batch source yields :class:`~batchaug.data.token_batches.TokenWindow`s):

- ``make_batch`` repeats every row M times (sample-major: row ``b·M + j`` is copy ``j`` of row ``b``),
  draws every dropout mask of the step from the step's generator (so a resumed run draws the same ones,
  and a micro-batched step the same as a whole one), and attaches the hidden state the previous step
  left (zeros at the start of an epoch);
- ``loss`` runs the model from that state and returns cross-entropy + the model's AR/TAR regularizer,
  and the final state as ``LossOutput.carry``;
- ``end_step`` keeps the carried state, detached: the next window starts where this one ended, but no
  gradient flows back into it. Each copy carries its own state (its rows saw their own masks).

The state is method state: it is checkpointed (``state_dict``), so a resumed run continues from exactly
the state the interrupted one had. ``init_state`` and ``predict_window`` serve evaluation
(:mod:`batchaug.evaluate.perplexity`): perplexity over a stream with the state carried across windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.methods.base import LossOutput, Method, MethodBatch, MethodContext
from batchaug.nn.wrappers import unwrap
from batchaug.schema import option

__all__ = ["SequenceBAOptions", "SequenceBaseline", "SequenceBaselineOptions", "SequenceBatchAugmentation",
           "SequenceMethod"]

_STATE = "state"
_MASK = "mask"


@dataclass
class SequenceBaselineOptions:
    """Options of ``method.name=baseline`` on token streams: none (one copy of every row)."""


@dataclass
class SequenceBAOptions:
    """Options of ``method.name=ba`` on token streams."""

    m: int = option(4, ge=1)
    """Copies of every row of the batch, each with its own dropout masks (the paper's M)."""


class SequenceMethod(Method):
    """``copies`` copies of every row of a token window, independent dropout masks, state carried across steps.

    Works with any language model of the ``text`` family that has ``init_state(rows, device)``,
    ``sample_masks(rows, copies, generator=...)`` and ``forward(tokens, state, masks)`` returning
    ``(logits, state, regularizer)`` (:class:`~batchaug.models.awd_lstm.AWDLSTM`).
    """

    Options = SequenceBaselineOptions

    def __init__(self, options: Any, context: MethodContext) -> None:
        super().__init__(options, context)
        self._lm: nn.Module | None = None
        self._state: list[tuple[Tensor, Tensor]] | None = None

    @property
    def copies(self) -> int:
        return 1

    @property
    def views_per_sample(self) -> int:
        return self.copies

    def describe(self) -> str:
        if self.copies == 1:
            return f"{self.name} (one copy of every row: the AWD-LSTM step, state carried across windows)"
        return f"{self.name} (M={self.copies} copies of every row, each with its own dropout masks)"

    def prepare_model(self, model: nn.Module) -> nn.Module:
        missing = [name for name in ("init_state", "sample_masks") if not callable(getattr(model, name, None))]
        if missing:
            raise ConfigError(f"method {self.name!r} on token streams needs a language model (model.name of the "
                              f"'text' family, e.g. awd_lstm); {type(model).__name__} has no {', '.join(missing)}")
        self._lm = model
        return model

    def _model(self, model: nn.Module | None = None) -> nn.Module:
        if self._lm is None:
            if model is None:
                raise RuntimeError("prepare_model(model) must be called before the first step")
            self.prepare_model(unwrap(model))
        assert self._lm is not None
        return self._lm

    # -- one step --------------------------------------------------------------------------------
    def make_batch(self, images: Any, targets: Tensor, generator: torch.Generator | None = None) -> MethodBatch:
        window = images  # a TokenWindow: this method's inputs
        tokens = getattr(window, "tokens", None)
        if tokens is None:
            raise ConfigError(f"method {self.name!r} on token streams expects TokenWindow inputs, got "
                              f"{type(window).__name__}")
        lm = self._model()
        m = self.copies
        rows = tokens.shape[0] * m
        state = self._state
        if window.start or state is None or state[0][0].shape[0] != rows:
            state = lm.init_state(rows, tokens.device)
        masks = lm.sample_masks(rows, m, generator=generator, device=tokens.device)
        tensors = {"tokens": tokens.repeat_interleave(m, 0), "targets": targets.repeat_interleave(m, 0)}
        for layer, (h, c) in enumerate(state):
            tensors[f"{_STATE}.h.{layer}"], tensors[f"{_STATE}.c.{layer}"] = h, c
        tensors.update({f"{_MASK}.{key}": mask for key, mask in masks.per_row.items()})
        extras = {"copies": m, "per_copy": masks.per_copy, "layers": len(state)}
        return MethodBatch(tensors, tokens.shape[0], extras, lr_scale=float(window.lr_scale))

    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        from batchaug.models.awd_lstm import DropoutMasks

        state = _unpack_state(batch)
        per_row = {key[len(_MASK) + 1:]: t for key, t in batch.tensors.items() if key.startswith(_MASK + ".")}
        masks = DropoutMasks(batch.extras["copies"], per_row, batch.extras["per_copy"])
        logits, new_state, regularizer = model(batch["tokens"], state, masks)
        ce = self.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))
        return LossOutput(ce + regularizer, metrics={"train_ce": ce.detach()}, carry=new_state)

    def end_step(self, step: int, carries: Sequence[Any]) -> None:
        if not carries or any(c is None for c in carries):
            return
        if len(carries) == 1:
            self._state = [(h.detach(), c.detach()) for h, c in carries[0]]
            return
        layers = len(carries[0])
        self._state = [(torch.cat([chunk[layer][0] for chunk in carries]).detach(),
                        torch.cat([chunk[layer][1] for chunk in carries]).detach()) for layer in range(layers)]

    @property
    def state(self) -> list[tuple[Tensor, Tensor]] | None:
        """The hidden state the next step starts from (detached; None before the first step)."""
        return self._state

    # -- evaluation ------------------------------------------------------------------------------
    def init_state(self, model: nn.Module, rows: int, device: torch.device | str | None = None) -> Any:
        """Zero state for ``rows`` evaluation sequences."""
        return self._model(model).init_state(rows, device)

    def predict_window(self, model: nn.Module, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Next-token logits (N, L, vocab) of ``tokens`` (N, L) from ``state`` (eval mode: no dropout), and
        the state after the window."""
        logits, new_state, _ = model(tokens, state)
        return logits, new_state

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        raise TypeError(f"method {self.name!r} is a language-model method: evaluate it with "
                        "batchaug.evaluate.perplexity, not with image predictions")

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._state is None:
            return {}
        return {"hidden": [h for h, _ in self._state], "cell": [c for _, c in self._state]}

    def load_state_dict(self, state: Any) -> None:
        if state and state.get("hidden") is not None:
            self._state = list(zip(state["hidden"], state["cell"], strict=True))
        else:
            self._state = None


class SequenceBaseline(SequenceMethod):
    """One copy of every row: the AWD-LSTM training step."""

    name = "baseline"
    Options = SequenceBaselineOptions


class SequenceBatchAugmentation(SequenceMethod):
    """M copies of every row with independent dropout masks (Batch Augmentation for sequences)."""

    name = "ba"
    Options = SequenceBAOptions

    @property
    def copies(self) -> int:
        return self.options.m


def _unpack_state(batch: MethodBatch) -> list[tuple[Tensor, Tensor]]:
    return [(batch[f"{_STATE}.h.{layer}"], batch[f"{_STATE}.c.{layer}"]) for layer in range(batch.extras["layers"])]
