"""Batch Augmentation for DataLoader pipelines whose transforms are per-sample (torchvision, timm, your own).

Two routes, both giving batches in which the M views of a sample are adjacent rows (the layout of
:class:`~batchaug.augment.ViewAugmenter`, so :func:`~batchaug.augment.repeat_targets` and every
batchaug loss read them the same way):

- :class:`RepeatedAugSampler`, a ``batch_sampler``: each batch lists ``batch_size // m`` samples ``m``
  times in a row, and a Dataset that augments in ``__getitem__`` draws a fresh view at every read.
  Nothing else in the pipeline changes; each view reads (decodes) its sample again.
- :class:`RepeatedAugCollate`, a ``collate_fn``: the Dataset returns un-augmented samples and the
  collate applies the user's transform ``m`` times to each, so a sample is read once.

``docs/distributed.md`` shows both in a torchvision training loop and in the style of timm's ``train.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from torch.utils.data._utils.collate import default_collate

from batchaug.errors import ConfigError

__all__ = ["RepeatedAugCollate", "RepeatedAugSampler"]

_SEED_STRIDE = 1_000_003  # a prime, so (seed, epoch) pairs map to distinct generator seeds


def _positive_int(value: Any, name: str, owner: str = "RepeatedAugSampler") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return value


class RepeatedAugSampler(Sampler[list[int]]):
    """Index batches of ``batch_size`` rows: ``batch_size // m`` samples, each ``m`` times in a row.

    Use it as a DataLoader's ``batch_sampler`` over a Dataset that augments in ``__getitem__``: the m
    reads of a sample give m independently augmented views (Batch Augmentation with per-sample
    transforms). ``batch_size`` counts rows (views), as a DataLoader's does, and must be a multiple of ``m``.

    Epoch ``e`` (:meth:`set_epoch`) visits the samples in the order of ``randperm`` from a generator
    seeded by ``(seed, e)`` (``shuffle=False``: in index order). Distributed-aware like
    ``DistributedSampler``: with ``num_replicas`` processes (default: the torch.distributed world, else 1)
    replica ``rank`` (default: this process's rank) takes every ``num_replicas``-th sample of that order,
    so the replicas see disjoint samples and every view of a sample stays on its replica. All replicas
    yield the same number of batches: ``drop_last=True`` drops the samples that do not fill a batch on
    every replica; ``drop_last=False`` wraps around to give every replica the same number of samples and
    ends with one smaller batch (still ``m`` rows per sample).
    """

    def __init__(self, data_source: Sized, m: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.m = _positive_int(m, "m")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if batch_size % m:
            lower, upper = batch_size // m * m, (batch_size // m + 1) * m
            raise ConfigError(f"RepeatedAugSampler: batch_size {batch_size} is not a multiple of m={m}: a batch holds "
                              f"batch_size // m samples with m views each; use e.g. {lower or upper} or {upper}")
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = _positive_int(num_replicas if num_replicas is not None
                                          else (dist.get_world_size() if distributed else 1), "num_replicas")
        self.rank = int(rank if rank is not None else (dist.get_rank() if distributed else 0))
        if not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"RepeatedAugSampler: rank {self.rank} is not in [0, {self.num_replicas})")
        self.num_samples = len(data_source)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if drop_last:
            self.per_replica = self.num_samples // self.num_replicas
        else:
            self.per_replica = math.ceil(self.num_samples / self.num_replicas)
        if len(self) == 0:
            raise ConfigError(f"RepeatedAugSampler: {self.num_samples} samples over {self.num_replicas} replica(s) "
                              f"do not fill one batch of {self.samples_per_batch} samples (batch_size {batch_size}, "
                              f"m={m}); lower batch_size or set drop_last=False")

    @property
    def samples_per_batch(self) -> int:
        """Distinct samples in a full batch: ``batch_size // m``."""
        return self.batch_size // self.m

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of epoch ``epoch`` at the next iteration (call it before every epoch, on every replica)."""
        self.epoch = int(epoch)

    def replica_samples(self) -> list[int]:
        """This replica's samples of the current epoch, in order (each once)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        total = self.per_replica * self.num_replicas
        if total > self.num_samples:  # drop_last=False: wrap around so every replica gets as many samples
            order = order.repeat(math.ceil(total / self.num_samples))
        return order[:total][self.rank::self.num_replicas].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        samples = self.replica_samples()
        per = self.samples_per_batch
        for lo in range(0, len(samples), per):
            chunk = samples[lo:lo + per]
            if len(chunk) < per and self.drop_last:
                return
            yield [i for i in chunk for _ in range(self.m)]

    def __len__(self) -> int:
        per = self.samples_per_batch
        return self.per_replica // per if self.drop_last else math.ceil(self.per_replica / per)


class RepeatedAugCollate:
    """A ``collate_fn`` that applies ``transform`` ``m`` times to every sample of a batch, then collates.

    The Dataset returns un-augmented items, ``(sample, target, ...)`` tuples or bare samples; the batch
    of ``n`` items becomes ``n·m`` rows, the m views of item i at rows ``i·m ... i·m + m - 1`` with its
    target (and any further fields) repeated. ``transform`` is any per-sample callable (a torchvision
    ``Compose``, timm's transforms, a function), drawing its own randomness at each call. ``collate_fn``
    (default: PyTorch's ``default_collate``) stacks the rows. Picklable when ``transform`` is, so it works
    with DataLoader workers.
    """

    def __init__(self, transform: Callable[[Any], Any], m: int, collate_fn: Callable[[list[Any]], Any] | None = None
                 ) -> None:
        if not callable(transform):
            raise ConfigError(f"RepeatedAugCollate: transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.m = _positive_int(m, "m", "RepeatedAugCollate")
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __call__(self, batch: list[Any]) -> Any:
        rows = []
        for item in batch:
            for _ in range(self.m):
                if isinstance(item, (tuple, list)):
                    rows.append((self.transform(item[0]), *item[1:]))
                else:
                    rows.append(self.transform(item))
        return self.collate_fn(rows)
