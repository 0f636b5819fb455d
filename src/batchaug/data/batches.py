"""The batches of a run: which samples step ``s`` trains on, and getting them onto the device.

:class:`EpochBatchSampler` is the order: epoch ``e`` is a permutation drawn from ``(seed, e)`` and
step ``s`` takes positions ``[p·B, (p+1)·B)`` of its epoch (the last incomplete batch of an epoch is
dropped); under ``torchrun`` each rank takes rows ``rank::world`` of that global batch. It is a
function of the step alone, so a resumed run needs nothing but the step to draw exactly the
batches of an uninterrupted one, and it is a ``batch_sampler`` any ``DataLoader`` accepts.

:class:`StepBatches` is what the trainer iterates: ``(step, images, targets)`` on the training
device, from uint8 tensors held in memory (the permutation is moved to the tensors' device once per
epoch, so no step waits on a host-to-device copy of its indices) or from a map-style dataset read by
DataLoader workers over the same sampler (streaming, when the data does not fit in memory).

Both are *batch sources*, what the trainer iterates, and so is
:class:`~batchaug.data.token_batches.TokenBatches` (truncated-BPTT windows of a token stream). A batch
source has ``steps_per_epoch``, ``epoch_of(step)``, ``epoch_at(step)`` (fractional epochs done before
``step``), ``progress(step)`` (extra keys of the metrics line), ``fetch(step)``,
``iterate(start, stop)`` yielding ``(step, inputs, targets)``, ``streaming``, and ``state_dict()`` /
``check_state(state)`` (what the order depends on besides the step, checked on resume).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from batchaug.errors import ConfigError

__all__ = ["EpochBatchSampler", "StepBatches"]

_SEED_STRIDE = 1_000_003  # a prime, so (seed, epoch) pairs map to distinct generator seeds


class EpochBatchSampler:
    """Index batches of steps ``start .. stop - 1`` over ``range(num_samples)``, by step.

    Args:
        num_samples: size of the training split.
        batch_size: samples per step over all processes (B).
        seed: the run's seed; epoch ``e``'s order is ``randperm`` from a generator seeded by ``(seed, e)``.
        world, rank: the processes sharing each step, and which one this is (rows ``rank::world``).
        start, stop: the steps ``__iter__`` yields (``stop=None``: endless).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, *, world: int = 1, rank: int = 0,
                 start: int = 0, stop: int | None = None) -> None:
        if num_samples < 1:
            raise ConfigError(f"batches: there are no training samples (num_samples={num_samples})")
        if not 1 <= batch_size <= num_samples:
            raise ConfigError(f"train.batch_size: a batch of {batch_size} samples does not fit the {num_samples} "
                              f"training images (data.subset); it must be between 1 and {num_samples}")
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"batches: rank {rank} of {world} processes is not a valid rank")
        if batch_size % world:
            raise ConfigError(f"train.batch_size: {batch_size} is not divisible by the {world} processes")
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.world, self.rank = int(world), int(rank)
        self.start, self.stop = int(start), stop
        self._perm: tuple[int, str, Tensor] | None = None  # (epoch, device, permutation) of the last epoch used

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def epoch_permutation(self, epoch: int, device: torch.device | str = "cpu") -> Tensor:
        """The order of epoch ``epoch`` (drawn on the CPU, so it is the same on every device), on ``device``."""
        device = torch.device(device)
        cached = self._perm
        if cached is not None and cached[0] == epoch and cached[1] == str(device):
            return cached[2]
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        perm = torch.randperm(self.num_samples, generator=g).to(device)
        self._perm = (epoch, str(device), perm)
        return perm

    def indices(self, step: int, device: torch.device | str = "cpu") -> Tensor:
        """This rank's sample indices of step ``step`` (int64, on ``device``)."""
        epoch, pos = divmod(int(step), self.steps_per_epoch)
        idx = self.epoch_permutation(epoch, device)[pos * self.batch_size:(pos + 1) * self.batch_size]
        return idx[self.rank::self.world] if self.world > 1 else idx

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield self.indices(step).tolist()
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless EpochBatchSampler (stop=None) has no length")
        return max(0, self.stop - self.start)

    def state_dict(self) -> dict[str, Any]:
        """What the order depends on besides the step; a resume checks it is unchanged."""
        return {"num_samples": self.num_samples, "batch_size": self.batch_size, "seed": self.seed,
                "world": self.world}

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ConfigError when ``state`` (from a checkpoint) describes a different order."""
        mine = self.state_dict()
        for key, value in state.items():
            if key in mine and mine[key] != value:
                raise ConfigError(f"resume: the checkpoint's batches had {key}={value!r}, this run has "
                                  f"{mine[key]!r}: the same steps would draw other samples")


class StepBatches:
    """``(step, uint8 images, int64 targets)`` for the steps of a run, on ``device``.

    ``images`` is a uint8 ``(N, C, H, W)`` tensor with ``targets`` its labels (in memory, on any
    device), or a map-style :class:`~torch.utils.data.Dataset` of ``(uint8 (C, H, W), target)``
    with ``targets=None``, read by ``num_workers`` DataLoader workers in the sampler's order.
    """

    def __init__(self, images: Tensor | Dataset, targets: Tensor | None, sampler: EpochBatchSampler,
                 device: torch.device, *, num_workers: int = 0) -> None:
        self.streaming = not isinstance(images, Tensor)
        if not self.streaming and (targets is None or targets.shape[0] != images.shape[0]):
            raise ConfigError("batches: in-memory images need one target per image")
        self.images, self.targets = images, targets
        self.sampler, self.device, self.num_workers = sampler, torch.device(device), int(num_workers)

    def __len__(self) -> int:
        return len(self.images) if self.streaming else int(self.images.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def epoch_of(self, step: int) -> int:
        """The epoch step ``step`` belongs to."""
        return step // self.sampler.steps_per_epoch

    def epoch_at(self, step: int) -> float:
        """Epochs done before step ``step`` (fractional)."""
        return step / self.sampler.steps_per_epoch

    def progress(self, step: int) -> dict[str, Any]:
        """Extra keys of a metrics line after ``step`` steps: none (``images_seen`` says it all)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def check_state(self, state: dict[str, Any]) -> None:
        self.sampler.check_state(state)

    def fetch(self, step: int) -> tuple[Tensor, Tensor]:
        """The images and targets of step ``step`` (in-memory only)."""
        if self.streaming:
            raise RuntimeError("StepBatches.fetch: a streamed dataset is read through iterate()")
        idx = self.sampler.indices(step, self.images.device)
        images = self.images.index_select(0, idx).to(self.device, non_blocking=True)
        targets = self.targets.index_select(0, idx).to(self.device, non_blocking=True)
        return images, targets

    def iterate(self, start: int, stop: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Steps ``start .. stop - 1`` in order."""
        if not self.streaming:
            for step in range(start, stop):
                yield (step, *self.fetch(step))
            return
        from batchaug.data.loader import collate_uint8

        order = EpochBatchSampler(self.sampler.num_samples, self.sampler.batch_size, self.sampler.seed,
                                  world=self.sampler.world, rank=self.sampler.rank, start=start, stop=stop)
        loader = DataLoader(self.images, batch_sampler=order, num_workers=self.num_workers,
                            collate_fn=collate_uint8, pin_memory=self.device.type == "cuda")
        for step, (images, targets) in zip(range(start, stop), loader):
            yield step, images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
