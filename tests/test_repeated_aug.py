"""Batch Augmentation in a plain DataLoader pipeline: RepeatedAugSampler and RepeatedAugCollate with
torchvision's per-sample transforms."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from batchaug.data import RepeatedAugCollate, RepeatedAugSampler
from batchaug.errors import ConfigError

transforms = pytest.importorskip("torchvision.transforms")


class _Images(Dataset):
    """PIL images of two learnable classes (dark / bright, with noise); ``(image, label, index)`` items,
    passed through ``transform`` when one is given."""

    def __init__(self, n: int = 48, transform=None) -> None:
        from PIL import Image

        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 2
        base = (60 + 120 * self.labels).view(n, 1, 1, 1).expand(n, 16, 16, 3)
        pixels = (base + torch.randint(-50, 50, (n, 16, 16, 3), generator=g)).clamp(0, 255).to(torch.uint8)
        self.images = [Image.fromarray(p.numpy()) for p in pixels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i] if self.transform is None else self.transform(self.images[i])
        return image, int(self.labels[i]), i


def _augment():
    return transforms.Compose([transforms.RandomResizedCrop(12, scale=(0.4, 1.0)), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor()])


def _check_views(x: torch.Tensor, idx: torch.Tensor, m: int) -> None:
    """Rows i·m .. i·m + m - 1 are m distinct views of one sample, and the batch's samples are distinct."""
    groups = idx.view(-1, m)
    assert (groups == groups[:, :1]).all()
    assert len(set(groups[:, 0].tolist())) == groups.shape[0]
    views = x.view(groups.shape[0], m, -1)
    for a, b in itertools.combinations(range(m), 2):
        assert not (views[:, a] == views[:, b]).all(dim=1).any(), "two views of a sample are the same"


def test_a_torchvision_loop_trains_on_m_distinct_views_of_every_sample():
    torch.manual_seed(0)
    m, batch_size = 3, 12
    dataset = _Images(transform=_augment())
    sampler = RepeatedAugSampler(dataset, m, batch_size, seed=1)
    loader = DataLoader(dataset, batch_sampler=sampler)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    plain = torch.stack([transforms.ToTensor()(im.resize((12, 12))) for im in dataset.images])

    def loss_on_all() -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(plain), dataset.labels))

    before = loss_on_all()
    steps = 0
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x, y, idx in loader:
            assert x.shape == (batch_size, 3, 12, 12)
            _check_views(x, idx, m)
            assert torch.equal(y, dataset.labels[idx])
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            steps += 1
    assert steps == 2 * len(sampler) == 2 * (48 // 4)
    assert loss_on_all() < 0.7 * before  # it learned


def test_the_collate_makes_m_views_of_each_sample_read_once():
    reads = []

    class Counting(_Images):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    dataset = Counting()  # un-augmented PIL images
    loader = DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=RepeatedAugCollate(_augment(), m=3))
    x, y, idx = next(iter(loader))
    assert x.shape == (12, 3, 12, 12) and len(reads) == 4
    _check_views(x, idx, 3)
    assert torch.equal(y, dataset.labels[idx])


def test_sampler_layout_epochs_and_replicas():
    s = RepeatedAugSampler(range(20), 2, 8, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 5 and all(len(b) == 8 for b in batches)
    assert all(b[0::2] == b[1::2] for b in batches)  # each sample twice, adjacent
    assert sorted(i for b in batches for i in b[::2]) == list(range(20))  # an epoch visits every sample once
    assert list(s) == batches  # the epoch's order is fixed by (seed, epoch)
    s.set_epoch(1)
    assert list(s) != batches
    ordered = RepeatedAugSampler(range(20), 2, 8, shuffle=False)
    assert next(iter(ordered)) == [0, 0, 1, 1, 2, 2, 3, 3]

    replicas = [RepeatedAugSampler(range(22), 2, 8, seed=3, num_replicas=2, rank=r) for r in range(2)]
    seen = [[i for b in r for i in b[::2]] for r in replicas]
    assert len(replicas[0]) == len(replicas[1]) == 11 // 4  # drop_last: full batches only, the same count
    assert not set(seen[0]) & set(seen[1])  # disjoint samples: every view of a sample stays on its replica
    padded = [RepeatedAugSampler(range(22), 2, 8, seed=3, num_replicas=4, rank=r, drop_last=False) for r in range(4)]
    sizes = [[len(b) for b in r] for r in padded]
    assert sizes == [[8, 4]] * 4  # 6 samples each (22 wrapped to 24): a full batch and a smaller one
    covered = {i for r in padded for b in r for i in b}
    assert covered == set(range(22))


def test_sampler_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="batch_size 10 is not a multiple of m=4: .* use e.g. 8 or 12"):
        RepeatedAugSampler(range(40), 4, 10)
    with pytest.raises(ConfigError, match="m must be an integer >= 1"):
        RepeatedAugSampler(range(40), 0, 10)
    with pytest.raises(ConfigError, match="rank 2 is not in"):
        RepeatedAugSampler(range(40), 2, 8, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="do not fill one batch of 8 samples"):
        RepeatedAugSampler(range(10), 2, 16, num_replicas=2)
    with pytest.raises(ConfigError, match="transform must be callable"):
        RepeatedAugCollate("flip", 2)


def test_sampler_takes_its_replica_from_the_process_group(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    s = RepeatedAugSampler(range(22), 2, 8, seed=3)
    assert (s.num_replicas, s.rank) == (2, 1)
    assert list(s) == list(RepeatedAugSampler(range(22), 2, 8, seed=3, num_replicas=2, rank=1))
