"""The batches of a language-model run: truncated-BPTT windows over a token stream, step by step.

The training stream is cut into ``batch_size`` contiguous columns (:func:`~batchaug.data.ptb.batchify`)
and read front to back in windows; one window is one optimizer step, and the hidden state a window
leaves is where the next one starts (the training method carries it). An epoch is one pass over the
stream; its first window says so (``TokenWindow.start``), so the state starts from zero there, as the
reference resets it at each epoch.

Window lengths follow the AWD-LSTM (Merity et al. 2017; salesforce/awd-lstm-lm ``main.py``): with
probability 0.95 the base length is ``bptt``, otherwise ``bptt / 2``; the length is
``max(5, int(N(base, 5)))``; windows start at every row ``i < rows - 2`` the previous ones reach and
are cut at the end of the stream. The step's learning rate is scaled by ``length / bptt`` (``TokenWindow.lr_scale``; the
drawn length, as the reference does), so short windows take proportionally smaller steps. With
``variable=False`` every window is ``bptt`` long and the scale is 1.

Reproducibility: epoch ``e``'s window lengths are drawn all at once from a generator seeded by
``(seed, e)``, so the window of any step is a function of the step alone (as
:class:`~batchaug.data.batches.EpochBatchSampler`'s permutations are): a resumed run reads exactly the
windows of an uninterrupted one, with nothing to checkpoint. Epochs differ in their number of steps;
:meth:`TokenBatches.locate` maps a global step to ``(epoch, window)``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from batchaug.data.ptb import batchify
from batchaug.errors import ConfigError

__all__ = ["MIN_LENGTH", "TokenBatches", "TokenWindow", "window_lengths"]

_SEED_STRIDE = 1_000_003  # as EpochBatchSampler: (seed, epoch) pairs map to distinct generator seeds
HALF_PROBABILITY = 0.05
"""Probability of a half-length base window (``main.py``: ``bptt if random() < 0.95 else bptt / 2``)."""
LENGTH_STD = 5.0
"""Standard deviation of a window's length around its base (``main.py``: ``np.random.normal(bptt, 5)``)."""
MIN_LENGTH = 5
"""Shortest drawn window (``main.py``: ``max(5, ...)``, "prevent excessively small or negative sequence lengths")."""


@dataclass(frozen=True)
class TokenWindow:
    """The inputs of one step: ``tokens`` (B, L) int64 on the training device, one row per column of
    the stream; ``start``: the first window of an epoch (the carried state restarts from zero);
    ``lr_scale``: the factor of this step's learning rate (drawn length / bptt)."""

    tokens: Tensor
    start: bool
    lr_scale: float = 1.0

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])


def window_lengths(rows: int, bptt: int, generator: torch.Generator | None = None, *,
                   variable: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The windows of one pass over a stream of ``rows`` rows: ``(starts, lengths, drawn)`` (int64).

    ``drawn`` are the lengths before the last window is cut at the end of the stream (the learning-rate
    scale uses them); the targets of window ``k`` are rows ``starts[k] + 1 ..`` of the stream.
    """
    if bptt < 1:
        raise ConfigError(f"data.bptt: must be >= 1, got {bptt}")
    if rows < 3:
        raise ConfigError(f"the training stream has {rows} rows per column; at least 3 are needed "
                          "(fewer columns: a smaller train.batch_size, or more data.subset tokens)")
    last = rows - 2  # windows start while i < rows - 2, as the reference's training loop
    if not variable:
        starts = torch.arange(0, last, bptt, dtype=torch.int64)
        drawn = torch.full_like(starts, bptt)
    else:
        most = last // MIN_LENGTH + 1  # no epoch has more windows than this
        half = torch.rand(most, generator=generator, dtype=torch.float64) < HALF_PROBABILITY
        base = torch.where(half, bptt / 2.0, float(bptt))
        noise = torch.randn(most, generator=generator, dtype=torch.float64)
        drawn = (base + LENGTH_STD * noise).trunc().clamp_(min=MIN_LENGTH).to(torch.int64)
        starts = torch.cumsum(drawn, 0) - drawn
        keep = starts < last
        starts, drawn = starts[keep], drawn[keep]
    lengths = torch.minimum(drawn, rows - 1 - starts)
    return starts, lengths, drawn


class TokenBatches:
    """``(step, TokenWindow, targets (B, L))`` for the steps of a language-model run, on ``device``.

    Args:
        ids: the training stream, a 1-D int64 tensor of token ids.
        batch_size: columns of the stream over all processes (B).
        bptt: the base window length.
        seed: the run's seed (window lengths of epoch ``e`` come from ``(seed, e)``).
        variable: AWD-LSTM's random window lengths (else every window is ``bptt`` long).
        device: where the stream is kept (the whole of it; PTB is 3.7 MB of int32-sized ids).
        world, rank: under ``torchrun`` each process reads columns ``rank::world``.
    """

    streaming = False

    def __init__(self, ids: Tensor, batch_size: int, bptt: int, seed: int = 0, *, variable: bool = True,
                 device: torch.device | str = "cpu", world: int = 1, rank: int = 0) -> None:
        if batch_size % world:
            raise ConfigError(f"train.batch_size: {batch_size} columns are not divisible by the {world} processes")
        if bptt < 1:
            raise ConfigError(f"data.bptt: must be >= 1, got {bptt}")
        self.num_tokens, self.batch_size, self.bptt, self.seed = len(ids), int(batch_size), int(bptt), int(seed)
        self.variable, self.world, self.rank = bool(variable), int(world), int(rank)
        columns = batchify(ids, batch_size)
        if world > 1:
            columns = columns[:, rank::world]
        self.data = columns.contiguous().to(device)
        self.device = torch.device(device)
        self.rows = int(columns.shape[0])
        self._ends: list[int] = []  # _ends[e]: steps in epochs 0..e
        self._tokens: list[int] = []  # _tokens[e]: target rows in epochs 0..e
        self._epoch: tuple[int, Tensor, Tensor, Tensor] | None = None
        self.windows(0)  # validates the stream length now, not at the first step

    # -------------------------------------------------------------------------------- the schedule
    def windows(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(starts, lengths, drawn)`` of epoch ``epoch`` (see :func:`window_lengths`)."""
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1:]
        g = torch.Generator().manual_seed((self.seed * _SEED_STRIDE + epoch) * 2)  # the view generator's are odd
        starts, lengths, drawn = window_lengths(self.rows, self.bptt, g, variable=self.variable)
        self._epoch = (epoch, starts, lengths, drawn)
        return starts, lengths, drawn

    def _extend(self, epoch: int) -> None:
        while len(self._ends) <= epoch:
            e = len(self._ends)
            _, lengths, _ = self.windows(e)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(lengths))
            self._tokens.append((self._tokens[-1] if self._tokens else 0) + int(lengths.sum()))

    def steps_in_epoch(self, epoch: int) -> int:
        self._extend(epoch)
        return self._ends[epoch] - (self._ends[epoch - 1] if epoch else 0)

    @property
    def steps_per_epoch(self) -> int:
        """Steps of epoch 0 (later epochs differ by a few windows when lengths are variable)."""
        return self.steps_in_epoch(0)

    def locate(self, step: int) -> tuple[int, int]:
        """``(epoch, window index)`` of global step ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch = bisect.bisect_right(self._ends, step)
        while epoch == len(self._ends):
            self._extend(epoch)
            epoch = bisect.bisect_right(self._ends, step)
        return epoch, step - (self._ends[epoch - 1] if epoch else 0)

    def epoch_of(self, step: int) -> int:
        """The epoch step ``step`` belongs to."""
        return self.locate(step)[0]

    def epoch_at(self, step: int) -> float:
        """Epochs done before step ``step``, fractional (``e + k / steps in epoch e``)."""
        epoch, index = self.locate(step)
        return epoch + index / self.steps_in_epoch(epoch)

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps in the first ``epochs`` epochs (a fraction of an epoch rounds its steps up)."""
        whole = int(math.floor(epochs))
        self._extend(whole)
        done = self._ends[whole - 1] if whole else 0
        return max(1, done + math.ceil((epochs - whole) * self.steps_in_epoch(whole)))

    def progress(self, step: int) -> dict[str, Any]:
        """Extra keys of the metrics line after ``step`` steps: ``tokens_seen`` (target tokens trained on,
        over all processes)."""
        epoch, index = self.locate(step)
        before = self._tokens[epoch - 1] if epoch else 0
        _, lengths, _ = self.windows(epoch)
        return {"tokens_seen": (before + int(lengths[:index].sum())) * self.batch_size}

    # ------------------------------------------------------------------------------ the batches
    def fetch(self, step: int) -> tuple[TokenWindow, Tensor]:
        """The window and targets of step ``step``."""
        epoch, index = self.locate(step)
        starts, lengths, drawn = self.windows(epoch)
        i, length = int(starts[index]), int(lengths[index])
        x = self.data[i:i + length].t().contiguous()
        y = self.data[i + 1:i + 1 + length].t().contiguous()
        return TokenWindow(x, start=index == 0, lr_scale=float(drawn[index]) / self.bptt), y

    def iterate(self, start: int, stop: int) -> Iterator[tuple[int, TokenWindow, Tensor]]:
        """Steps ``start .. stop - 1`` in order."""
        for step in range(start, stop):
            yield (step, *self.fetch(step))

    def __len__(self) -> int:
        """Tokens of the training stream."""
        return self.num_tokens

    def state_dict(self) -> dict[str, Any]:
        """What the windows depend on besides the step; a resume checks it is unchanged."""
        return {"num_tokens": self.num_tokens, "batch_size": self.batch_size, "bptt": self.bptt, "seed": self.seed,
                "variable": self.variable, "world": self.world}

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ConfigError when ``state`` (from a checkpoint) describes other windows."""
        mine = self.state_dict()
        for key, value in state.items():
            if key in mine and mine[key] != value:
                raise ConfigError(f"resume: the checkpoint's batches had {key}={value!r}, this run has "
                                  f"{mine[key]!r}: the same steps would read other windows")
