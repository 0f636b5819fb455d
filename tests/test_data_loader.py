"""The batch source: EpochBatchSampler (an order that is a function of the step: coverage, sharding,
resume) and StepBatches (in memory and streamed through DataLoader workers, the same batches)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from batchaug.data import (
    EpochBatchSampler,
    ImageFolderSource,
    StepBatches,
    collate_uint8,
    load_split,
    stratified_indices,
)
from batchaug.errors import ConfigError, DataError


def test_each_epoch_is_a_permutation_in_whole_batches():
    s = EpochBatchSampler(23, 4, seed=0)
    assert s.steps_per_epoch == 5  # the last 3 samples of each epoch are dropped
    epoch0 = torch.cat([s.indices(k) for k in range(5)])
    assert len(set(epoch0.tolist())) == 20 and all(0 <= i < 23 for i in epoch0.tolist())
    assert not torch.equal(s.indices(0), s.indices(5))  # a new order every epoch


def test_the_order_depends_on_seed_and_step_only():
    a, b, c = EpochBatchSampler(50, 10, seed=7), EpochBatchSampler(50, 10, seed=7), EpochBatchSampler(50, 10, seed=8)
    assert all(torch.equal(a.indices(k), b.indices(k)) for k in (0, 3, 11, 4))  # any order of asking
    assert not torch.equal(a.indices(0), c.indices(0))
    resumed = EpochBatchSampler(50, 10, seed=7, start=7, stop=12)
    assert list(resumed) == [a.indices(k).tolist() for k in range(7, 12)] and len(resumed) == 5


def test_ranks_split_each_global_batch():
    whole = EpochBatchSampler(64, 8, seed=3)
    ranks = [EpochBatchSampler(64, 8, seed=3, world=2, rank=r) for r in range(2)]
    for step in range(10):
        parts = [r.indices(step) for r in ranks]
        assert torch.equal(torch.sort(torch.cat(parts)).values, torch.sort(whole.indices(step)).values)
        assert not set(parts[0].tolist()) & set(parts[1].tolist())


def test_bad_batches_are_named_and_resume_checks_the_order():
    with pytest.raises(ConfigError, match="train.batch_size: a batch of 30 samples does not fit the 20"):
        EpochBatchSampler(20, 30)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        EpochBatchSampler(20, 4, world=3)
    s = EpochBatchSampler(20, 4, seed=1)
    s.check_state(EpochBatchSampler(20, 4, seed=1).state_dict())
    with pytest.raises(ConfigError, match="batch_size=5"):
        s.check_state(EpochBatchSampler(20, 5, seed=1).state_dict())


def test_indices_and_data_stay_on_their_device():
    s = EpochBatchSampler(40, 8, seed=0)
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    batches = StepBatches(images, torch.arange(40), s, torch.device("cpu"))
    steps = list(batches.iterate(3, 7))
    assert [k for k, _, _ in steps] == [3, 4, 5, 6]
    for k, x, y in steps:
        assert torch.equal(y, s.indices(k)) and torch.equal(x[:, 0, 0, 0].long(), y)


def _tree_zip(tmp_path: Path, sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, (h, w) in enumerate(sizes):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
            zf.writestr(f"train/{'ab'[i % 2]}/{i:02d}.png", buf.getvalue())
    return archive


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_the_in_memory_ones(tmp_path, workers, monkeypatch):
    monkeypatch.setenv("BATCHAUG_CACHE", str(tmp_path / "cache"))
    archive = _tree_zip(tmp_path, [(20 + i, 30 - i) for i in range(10)])
    lazy = ImageFolderSource(archive, image_size=16)
    whole = load_split(archive, image_size=16, cache=False)
    sampler = EpochBatchSampler(10, 4, seed=5)
    streamed = list(StepBatches(lazy, None, sampler, torch.device("cpu"), num_workers=workers).iterate(1, 5))
    in_memory = list(StepBatches(whole.images, whole.targets, sampler, torch.device("cpu")).iterate(1, 5))
    for (k1, x1, y1), (k2, x2, y2) in zip(streamed, in_memory, strict=True):
        assert k1 == k2 and x1.dtype == torch.uint8 and y1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_the_sampler_drives_any_dataloader(tmp_path):
    ds = ImageFolderSource(_tree_zip(tmp_path, [(8, 8)] * 12), image_size=8)
    sampler = EpochBatchSampler(len(ds), 4, seed=0, start=0, stop=6)
    batches = list(DataLoader(ds, batch_sampler=sampler, collate_fn=collate_uint8))
    assert len(batches) == 6 and batches[0][0].shape == (4, 3, 8, 8)
    assert torch.equal(batches[4][1], ds.targets[sampler.indices(4)])


def test_stratified_subset_of_a_lazy_dataset(tmp_path):
    ds = ImageFolderSource(_tree_zip(tmp_path, [(8, 8)] * 10), image_size=8)
    idx = stratified_indices(ds.targets, 4, torch.Generator().manual_seed(0))
    assert torch.bincount(ds.targets[idx]).tolist() == [2, 2]
    sub = torch.utils.data.Subset(ds, idx.tolist())
    assert torch.equal(sub[1][0], ds[int(idx[1])][0])


def test_collate_needs_a_fixed_size(tmp_path):
    ds = ImageFolderSource(_tree_zip(tmp_path, [(8, 8), (9, 9)]))
    with pytest.raises(DataError, match="different sizes.*image_size"):
        collate_uint8([ds[0], ds[1]])
