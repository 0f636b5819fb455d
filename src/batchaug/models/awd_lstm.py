"""AWD-LSTM, the word-level language model of Merity, Keskar & Socher, "Regularizing and Optimizing LSTM
Language Models" (2017), written from its description and reference code (salesforce/awd-lstm-lm
``model.py``).

Embedding (with embedding dropout) -> locked dropout -> ``num_layers`` weight-dropped LSTM layers with
locked dropout between them -> locked dropout -> linear decoder tied to the embedding. The last layer
has ``emb_size`` units when the weights are tied, so the decoder can share the embedding matrix. In
training the model also reports its activation regularizers: AR ``alpha · mean(dropped output²)`` and
TAR ``beta · mean((h_t - h_{t-1})²)`` of the last layer's raw output (reference ``main.py``).

Dropout masks are a :class:`DropoutMasks` argument, so a training method can draw them from its own
generator and give every copy of a sample its own (``batchaug.methods.sequence``); without one, a
training-mode forward draws one set for the whole batch from the global RNG, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.models.common import check_positive
from batchaug.nn.seq_dropout import apply_keep, embedding_keep, keep_mask, locked_dropout
from batchaug.nn.weight_drop_lstm import LSTMState, WeightDropLSTM

__all__ = ["AWDLSTM", "DropoutMasks", "LMOutput", "awd_lstm"]


@dataclass
class DropoutMasks:
    """The dropout masks of one forward pass of an :class:`AWDLSTM` over ``N`` rows in ``copies`` copies.

    ``per_row`` (first dimension N, rows sample-major): ``"input"`` (N, emb) on the embeddings,
    ``"hidden.<l>"`` (N, hidden_l) after LSTM layer ``l`` (all but the last), ``"output"`` (N, out) on
    the last layer's output. ``per_copy`` (first dimension ``copies``; row ``r`` is copy ``r % copies``):
    ``"embed"`` (C, vocab) words kept by embedding dropout, ``"weight_hh.<l>"`` (C, 4H, H) weight-drop
    masks of layer ``l``. A missing key means no dropout there. All masks are boolean "keep" tensors.
    """

    copies: int = 1
    per_row: dict[str, Tensor] = field(default_factory=dict)
    per_copy: dict[str, Tensor] = field(default_factory=dict)


class LMOutput(NamedTuple):
    """What :class:`AWDLSTM` returns: next-token ``logits`` (N, L, vocab), the final ``state`` (one
    ``(h, c)`` per layer, rows first) and the activation ``regularizer`` (a 0-d tensor; 0 in eval mode)."""

    logits: Tensor
    state: list[LSTMState]
    regularizer: Tensor


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"awd_lstm: {name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) < 0:
        raise ConfigError(f"awd_lstm: {name} must be a number >= 0, got {value!r}")
    return float(value)


class AWDLSTM(nn.Module):
    """A weight-dropped multi-layer LSTM language model over a vocabulary of ``vocab_size`` words.

    ``forward(tokens, state=None, masks=None)``: ``tokens`` (N, L) int64, ``state`` from
    :meth:`init_state` or a previous call, ``masks`` from :meth:`sample_masks` (training mode only; in
    eval mode no dropout is applied). Returns an :class:`LMOutput`.

    The defaults are the paper's Penn Treebank model (24M parameters for PTB's 10,000 words).
    """

    def __init__(self, vocab_size: int, emb_size: int = 400, hidden_size: int = 1150, num_layers: int = 3,
                 dropout_input: float = 0.4, dropout_hidden: float = 0.25, dropout_output: float = 0.4,
                 dropout_embed: float = 0.1, weight_drop: float = 0.5, tie_weights: bool = True,
                 ar_alpha: float = 2.0, tar_beta: float = 1.0) -> None:
        super().__init__()
        for what, value in (("vocab_size", vocab_size), ("emb_size", emb_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            check_positive("awd_lstm", what, value)
        self.vocab_size, self.emb_size = vocab_size, emb_size
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.dropout_input = _probability("dropout_input", dropout_input)
        self.dropout_hidden = _probability("dropout_hidden", dropout_hidden)
        self.dropout_output = _probability("dropout_output", dropout_output)
        self.dropout_embed = _probability("dropout_embed", dropout_embed)
        self.weight_drop = _probability("weight_drop", weight_drop)
        self.ar_alpha = _non_negative("ar_alpha", ar_alpha)
        self.tar_beta = _non_negative("tar_beta", tar_beta)
        self.tie_weights = bool(tie_weights)
        self.encoder = nn.Embedding(vocab_size, emb_size)
        sizes = [hidden_size] * (num_layers - 1) + [emb_size if tie_weights else hidden_size]
        inputs = [emb_size] + sizes[:-1]
        self.rnns = nn.ModuleList(WeightDropLSTM(i, o, self.weight_drop) for i, o in zip(inputs, sizes, strict=True))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        # reference init_weights: embedding (and an untied decoder) uniform in ±0.1, decoder bias 0
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    @property
    def layer_sizes(self) -> list[int]:
        """Units of each LSTM layer (the state's widths)."""
        return [rnn.hidden_size for rnn in self.rnns]

    def init_state(self, rows: int, device: torch.device | str | None = None) -> list[LSTMState]:
        """Zero state for ``rows`` sequences: one ``(h, c)`` per layer, each (rows, units)."""
        device = device if device is not None else self.encoder.weight.device
        dtype = self.encoder.weight.dtype
        return [(torch.zeros(rows, n, device=device, dtype=dtype), torch.zeros(rows, n, device=device, dtype=dtype))
                for n in self.layer_sizes]

    def sample_masks(self, rows: int, copies: int = 1, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> DropoutMasks:
        """Draw every dropout mask of a training forward over ``rows`` sequences in ``copies`` copies
        (``rows`` sample-major, a multiple of ``copies``), from ``generator`` (the global RNG when None).

        The draw order is fixed (embedding, input, then per layer weight and hidden masks, output), so
        the same generator state gives the same masks.
        """
        if copies < 1 or rows % copies:
            raise ValueError(f"{rows} rows do not split into {copies} copies")
        if device is None:
            device = generator.device if generator is not None else self.encoder.weight.device
        masks = DropoutMasks(copies)

        def draw(shape: tuple[int, ...], p: float) -> Tensor | None:
            return keep_mask(shape, p, generator=generator, device=device) if p > 0 else None

        def put(table: dict[str, Tensor], key: str, mask: Tensor | None) -> None:
            if mask is not None:
                table[key] = mask

        put(masks.per_copy, "embed", draw((copies, self.vocab_size), self.dropout_embed))
        put(masks.per_row, "input", draw((rows, self.emb_size), self.dropout_input))
        for layer, rnn in enumerate(self.rnns):
            put(masks.per_copy, f"weight_hh.{layer}", draw((copies, *rnn.mask_shape), self.weight_drop))
            if layer < self.num_layers - 1:
                put(masks.per_row, f"hidden.{layer}", draw((rows, rnn.hidden_size), self.dropout_hidden))
        put(masks.per_row, "output", draw((rows, self.layer_sizes[-1]), self.dropout_output))
        return masks

    def forward(self, tokens: Tensor, state: list[LSTMState] | None = None,
                masks: DropoutMasks | None = None) -> LMOutput:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (N, L) int64 ids, got shape {tuple(tokens.shape)}")
        rows = tokens.shape[0]
        if not self.training:
            masks = None
        elif masks is None:
            masks = self.sample_masks(rows)
        if state is None:
            state = self.init_state(rows, tokens.device)
        if len(state) != self.num_layers:
            raise ValueError(f"state has {len(state)} layers, the model {self.num_layers}")
        per_row = masks.per_row if masks is not None else {}
        per_copy = masks.per_copy if masks is not None else {}

        steps = tokens.t()  # time-major (L, N): what the LSTM layers run over
        x = self.encoder(steps)
        if "embed" in per_copy:
            x = apply_keep(x, embedding_keep(per_copy["embed"], steps).unsqueeze(-1), self.dropout_embed)
        x = locked_dropout(x, per_row.get("input"), self.dropout_input)
        new_state = []
        for layer, rnn in enumerate(self.rnns):
            x, layer_state = rnn(x, state[layer], per_copy.get(f"weight_hh.{layer}"))
            new_state.append(layer_state)
            if layer < self.num_layers - 1:
                x = locked_dropout(x, per_row.get(f"hidden.{layer}"), self.dropout_hidden)
        raw = x
        dropped = locked_dropout(raw, per_row.get("output"), self.dropout_output)
        logits = self.decoder(dropped.transpose(0, 1))  # (N, L, vocab), batch-first
        regularizer = dropped.new_zeros(())
        if self.training:
            if self.ar_alpha:
                regularizer = regularizer + self.ar_alpha * dropped.float().pow(2).mean()
            if self.tar_beta and raw.shape[0] > 1:
                regularizer = regularizer + self.tar_beta * (raw[1:] - raw[:-1]).float().pow(2).mean()
        return LMOutput(logits, new_state, regularizer)

    def extra_repr(self) -> str:
        return (f"vocab={self.vocab_size}, dropout (embed, input, hidden, output)=({self.dropout_embed:g}, "
                f"{self.dropout_input:g}, {self.dropout_hidden:g}, {self.dropout_output:g}), "
                f"weight_drop={self.weight_drop:g}, tied={self.tie_weights}, AR={self.ar_alpha:g}, "
                f"TAR={self.tar_beta:g}")


def awd_lstm(num_classes: int = 10_000, emb_size: int = 400, hidden_size: int = 1150, num_layers: int = 3,
             dropout_input: float = 0.4, dropout_hidden: float = 0.25, dropout_output: float = 0.4,
             dropout_embed: float = 0.1, weight_drop: float = 0.5, tie_weights: bool = True,
             ar_alpha: float = 2.0, tar_beta: float = 1.0) -> AWDLSTM:
    """The registry builder: ``num_classes`` is the vocabulary size (input words and output classes)."""
    return AWDLSTM(num_classes, emb_size, hidden_size, num_layers, dropout_input, dropout_hidden, dropout_output,
                   dropout_embed, weight_drop, tie_weights, ar_alpha, tar_beta)
