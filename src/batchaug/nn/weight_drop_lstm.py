"""One LSTM layer with DropConnect on its hidden-to-hidden weights, one mask per copy of a sample.

:class:`WeightDropLSTM` holds an ordinary ``nn.LSTM`` (one layer, time-major) and takes the weight
mask as an argument of ``forward``:

- no mask (evaluation, or ``p = 0``): the fused ``nn.LSTM`` kernel (cuDNN on a GPU);
- one mask for the whole batch (the AWD-LSTM setting): the fused kernel on the masked weight, through
  :func:`torch.func.functional_call` — no parameter surgery, unlike the reference code's
  ``WeightDrop`` wrapper (salesforce/awd-lstm-lm ``weight_drop.py``), which deletes the parameter and
  disables ``flatten_parameters`` to get the same effect;
- C masks, one per copy (Batch Augmentation with independent masks): rows ``r`` of the batch with
  ``r % C == c`` use mask ``c``. A masked matrix cannot be shared by rows with different masks, so the
  layer calls the fused kernel once per copy, on that copy's rows with that copy's masked matrix: C
  kernel calls of N/C rows each instead of one of N rows. The same FLOPs; the extra cost is C masked
  copies of the ``4H x H`` matrix (C·4H² floats, kept for backward) and C smaller kernel calls. (An
  earlier version ran its own cell loop over time with one batched matmul ``(C, N/C, H) @ (C, H, 4H)`` per
  step; with the fused calls the quick model's BA step at C = 10 went from 1.22-1.30x to 0.99-1.07x a
  plain ``nn.LSTM`` step on the same rows (``batchaug bench lstm``, BENCHMARKS.md); on a GPU it is C cuDNN
  calls instead of L steps of small kernels, not yet measured there. The loop survives as the slow
  reference in ``tests/test_lstm.py``.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from batchaug.nn.seq_dropout import apply_keep

__all__ = ["LSTMState", "WeightDropLSTM"]

LSTMState = tuple[Tensor, Tensor]
"""``(h, c)``, each (N, hidden_size): one row per sequence (batch-first, unlike ``nn.LSTM``'s (1, N, H))."""


class WeightDropLSTM(nn.Module):
    """A one-layer LSTM over time-major input (L, N, input_size) with optional weight drop.

    Args:
        input_size, hidden_size: as for ``nn.LSTM``.
        weight_drop: DropConnect probability of the hidden-to-hidden weights (the masks themselves are
            passed to :meth:`forward`; this is the probability they were drawn with, for the scale).

    The parameters are the inner ``nn.LSTM``'s (``lstm.weight_ih_l0``, ``lstm.weight_hh_l0``,
    ``lstm.bias_ih_l0``, ``lstm.bias_hh_l0``), initialised as PyTorch does (uniform ±1/√hidden).
    """

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop!r}")
        self.input_size, self.hidden_size, self.weight_drop = input_size, hidden_size, float(weight_drop)
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """Shape of one copy's hidden-to-hidden mask: ``(4 * hidden_size, hidden_size)``."""
        return tuple(self.lstm.weight_hh_l0.shape)  # type: ignore[return-value]

    def forward(self, x: Tensor, state: LSTMState | None = None,
                keep: Tensor | None = None) -> tuple[Tensor, LSTMState]:
        """Run the layer over ``x`` (L, N, input_size) from ``state``; returns the outputs (L, N, H) and
        the final ``(h, c)``.

        ``keep``: boolean hidden-to-hidden masks (C, 4H, H), one per copy; row ``r`` uses mask
        ``r % C``. None: no weight drop.
        """
        length, rows, _ = x.shape
        if state is None:
            zeros = x.new_zeros(rows, self.hidden_size)
            state = (zeros, zeros)
        if keep is None or self.weight_drop == 0.0:
            return self._fused(x, state, {})
        copies = keep.shape[0]
        if tuple(keep.shape[1:]) != self.mask_shape or rows % copies:
            raise ValueError(f"weight-drop masks of shape {tuple(keep.shape)} do not fit {rows} rows of a layer "
                             f"with hidden-to-hidden weights {self.mask_shape}")
        if copies == 1:
            dropped = apply_keep(self.lstm.weight_hh_l0, keep[0], self.weight_drop)
            return self._fused(x, state, {"weight_hh_l0": dropped})
        return self._per_copy(x, state, keep)

    def _fused(self, x: Tensor, state: LSTMState, replace: dict[str, Tensor]) -> tuple[Tensor, LSTMState]:
        h0, c0 = state
        hx = (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous())
        if replace:
            out, (h, c) = functional_call(self.lstm, replace, (x, hx))
        else:
            out, (h, c) = self.lstm(x, hx)
        return out, (h.squeeze(0), c.squeeze(0))

    def _per_copy(self, x: Tensor, state: LSTMState, keep: Tensor) -> tuple[Tensor, LSTMState]:
        """The fused kernel once per copy: copy ``c`` runs on rows ``c::C`` with its own masked matrix."""
        length, rows, _ = x.shape
        copies, hidden = keep.shape[0], self.hidden_size
        dropped = apply_keep(self.lstm.weight_hh_l0.unsqueeze(0), keep, self.weight_drop)  # (C, 4H, H)
        outs, hs, cs = [], [], []
        for c in range(copies):
            rows_c = slice(c, None, copies)
            out, (h, cell) = self._fused(x[:, rows_c], (state[0][rows_c], state[1][rows_c]),
                                         {"weight_hh_l0": dropped[c]})
            outs.append(out)
            hs.append(h)
            cs.append(cell)
        # stacked copy-minor: [.., b, c] is row b*C + c again
        out = torch.stack(outs, dim=2).reshape(length, rows, hidden)
        return out, (torch.stack(hs, dim=1).reshape(rows, hidden), torch.stack(cs, dim=1).reshape(rows, hidden))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, weight_drop={self.weight_drop:g}"
