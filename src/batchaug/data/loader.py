"""Collating uint8 images read one at a time (streamed folders) into batches.

The order of the batches is :class:`~batchaug.data.batches.EpochBatchSampler`'s, a ``batch_sampler``
for any ``DataLoader``: ``DataLoader(dataset, batch_sampler=EpochBatchSampler(...),
collate_fn=collate_uint8)`` is how the trainer streams a folder that does not fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import default_collate

from batchaug.errors import DataError


def collate_uint8(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(uint8 (C, H, W), target)`` pairs; a size mismatch names the sizes seen."""
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) > 1:
        raise DataError(f"images of different sizes in one batch {sorted(shapes)}: give the dataset a "
                        "fixed image_size (e.g. ImageFolderSource(..., image_size=224))")
    images, targets = default_collate(list(batch))
    return images, targets.to(torch.int64)
