"""A whole dataset split held as two tensors: the in-memory fast path of the design.

Keeping images as uint8 (N, C, H, W) -- 184 MB for all of CIFAR-10 -- lets the whole split live on
the GPU, so a training step is an index into it plus vectorized augmentation, with no loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from batchaug.errors import ConfigError, DataError


@dataclass
class TensorSplit:
    """Images and labels of one split.

    Attributes:
        images: uint8 (N, C, H, W), contiguous.
        targets: int64 (N,), class indices into ``classes``.
        classes: class names, index = target.
    """

    images: torch.Tensor
    targets: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"TensorSplit.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.targets.dtype != torch.int64 or self.targets.dim() != 1:
            raise DataError(f"TensorSplit.targets must be int64 (N,), got {self.targets.dtype} "
                            f"{tuple(self.targets.shape)}")
        if len(self.targets) != len(self.images):
            raise DataError(f"TensorSplit has {len(self.images)} images but {len(self.targets)} targets")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TensorSplit:
        """A copy with both tensors on ``device`` (the same object's tensors when already there)."""
        return TensorSplit(self.images.to(device, non_blocking=non_blocking),
                           self.targets.to(device, non_blocking=non_blocking), list(self.classes))

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, int64 (num_classes,)."""
        return torch.bincount(self.targets, minlength=self.num_classes)

    def subset(self, n: int, generator: torch.Generator | None = None,
               stratified: bool = True) -> TensorSplit:
        """``n`` images drawn without replacement, kept in their original order.

        Args:
            n: how many images (0 < n <= len(self)).
            generator: a CPU generator; the same generator state gives the same subset.
            stratified: balance the classes: every class gets ``n // num_classes`` images and the
                remainder goes to randomly chosen classes; a class with fewer images than its share
                gives all of them and the others make up the difference.

        Raises:
            ConfigError: ``n`` is not in ``1..len(self)``.
        """
        total = len(self)
        if not 0 < n <= total:
            raise ConfigError(f"subset size {n}: must be between 1 and the split's {total} images")
        if n == total:
            return TensorSplit(self.images, self.targets, list(self.classes))
        targets_cpu = self.targets.cpu()
        if stratified:
            index = stratified_indices(targets_cpu, n, generator, num_classes=self.num_classes)
        else:
            index = torch.randperm(total, generator=generator)[:n].sort().values
        index = index.to(self.images.device)
        return TensorSplit(self.images[index], self.targets[index], list(self.classes))

    def hold_out(self, n: int, generator: torch.Generator | None = None) -> tuple[TensorSplit, TensorSplit]:
        """Split into ``(held, rest)``: ``n`` images drawn class-balanced as :meth:`subset` draws them,
        and every other image; both keep their original order, and together they are the split.

        Raises:
            ConfigError: ``n`` is not in ``1..len(self) - 1`` (something must be left to train on).
        """
        total = len(self)
        if not 0 < n < total:
            raise ConfigError(f"hold out {n} images: must be between 1 and {total - 1} (the split has {total})")
        held = stratified_indices(self.targets.cpu(), n, generator, num_classes=self.num_classes)
        keep = torch.ones(total, dtype=torch.bool)
        keep[held] = False
        rest = keep.nonzero().flatten()
        held, rest = held.to(self.images.device), rest.to(self.images.device)
        return (TensorSplit(self.images[held], self.targets[held], list(self.classes)),
                TensorSplit(self.images[rest], self.targets[rest], list(self.classes)))


def class_quotas(counts: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """How many of ``n`` samples each class gets so the draw is as balanced as the counts allow.

    Water-filling: an equal share per class, capped at the class size, the shortfall spread over
    the classes that still have images; ties for the last samples are broken at random.
    """
    counts = counts.to(torch.int64)
    if n > int(counts.sum()):
        raise ConfigError(f"cannot draw {n} samples from {int(counts.sum())}")
    quota = torch.zeros_like(counts)
    remaining = n
    while remaining > 0:
        open_ = quota < counts
        k = int(open_.sum())
        share = remaining // k
        if share == 0:  # fewer samples left than open classes: a random few get one more
            open_idx = open_.nonzero().flatten()
            pick = open_idx[torch.randperm(k, generator=generator)[:remaining]]
            quota[pick] += 1
            break
        add = torch.minimum(counts - quota, torch.full_like(counts, share)) * open_
        quota += add
        remaining -= int(add.sum())
    return quota


def stratified_indices(targets: torch.Tensor, n: int, generator: torch.Generator | None = None, *,
                       num_classes: int | None = None) -> torch.Tensor:
    """Sorted indices of a class-balanced draw of ``n`` samples (see :meth:`TensorSplit.subset`).

    Works on any label vector, e.g. ``ImageFolderSource.targets`` to subset a lazily decoded
    dataset with ``torch.utils.data.Subset``.
    """
    targets = targets.cpu()
    counts = torch.bincount(targets, minlength=num_classes or 0)
    quota = class_quotas(counts, n, generator)
    # Shuffle, then stable-sort by class: each class's members end up in random order, and an
    # element's rank inside its class decides whether it is within the class quota.
    perm = torch.randperm(len(targets), generator=generator)
    by_class = perm[torch.sort(targets[perm], stable=True).indices]
    cls = targets[by_class]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(targets)) - starts[cls]
    return by_class[rank < quota[cls]].sort().values
