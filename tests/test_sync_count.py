"""Device→host synchronizations of the hot path, counted on the CPU (``batchaug.runtime.count_syncs``):
a Batch Augmentation step and every policy call make a small number that does not grow with M.

On the CPU nothing is asynchronous, so the counter counts what would synchronize if the tensors lived
on an accelerator (host reads, data-dependent shapes); on CUDA the same tests hold with the driver's
count (``count_syncs("cuda")``, run by ``../shared/device/gpu-check.sh``'s ``pytest -m gpu``).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from batchaug.augment import ViewAugmenter, build_policy, geometry
from batchaug.runtime import count_syncs

pytestmark = pytest.mark.usefixtures("one_thread")
CIFAR = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}


def _images(n: int = 8, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


# ------------------------------------------------------------------------------------ the counter

def test_count_syncs_counts_host_reads_and_data_dependent_shapes() -> None:
    x = torch.randn(10)
    mask = x > 0
    with count_syncs() as syncs:
        y = x * 2 + 1  # arithmetic: nothing
        y[mask] = 0.0  # a scalar through a mask is masked_fill_: nothing
        x.repeat_interleave(3, dim=0)  # int repeats: nothing
        torch.where(mask, x, y)
    assert syncs.total == 0
    with count_syncs() as syncs:
        x.sum().item()
        bool(mask.any())
        x.tolist()
        x.nonzero()
        x[mask]
        torch.unique(x)
        torch.bincount(mask.long())
        torch.tensor([1.0, 2.0])
    assert dict(syncs.by_op) == {"item": 2, "tolist": 1, "nonzero": 1, "mask_index": 1, "unique": 1, "bincount": 1}
    assert syncs.uploads == 1
    assert len(syncs.where) == syncs.total


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_count_syncs_on_cuda_counts_what_the_driver_reports() -> None:
    x = torch.randn(100, device="cuda")
    with count_syncs("cuda") as syncs:
        x * 2
    assert syncs.total == 0
    with count_syncs("cuda") as syncs:
        x.sum().item()
        x.nonzero()
    assert syncs.total >= 2


# ------------------------------------------------------------------------- a training step, any M

def _ba_trainer(policy: str, m: int, batch: int = 8, device: str = "cpu"):
    from batchaug.bench.step import _trainer

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (4 * batch,), generator=g)
    return _trainer("resnet20", "ba", m, batch, None, torch.device(device), images, targets, policy)


# per step: cutout none; RandAugment one (the group sizes of both operation slots, read at once)
@pytest.mark.parametrize("policy, expected", [("cutout", 0), ("randaugment", 1)])
@pytest.mark.parametrize("m", [1, 4, 16])
def test_ba_step_sync_count_does_not_grow_with_m(policy: str, expected: int, m: int) -> None:
    trainer = _ba_trainer(policy, m)
    trainer.train_step(0)  # warm-up: per-device constants and tables are made once
    with count_syncs() as syncs:
        out = trainer.train_step(1)
    assert out["views"] == 8 * m
    assert syncs.total == expected, syncs.where
    assert syncs.uploads == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy, expected", [("cutout", 0), ("randaugment", 1)])
@pytest.mark.parametrize("m", [1, 16])
def test_ba_step_sync_count_on_cuda(policy: str, expected: int, m: int) -> None:
    """The same count as the driver sees it (B = 64: one augmentation chunk on CUDA at any M here)."""
    trainer = _ba_trainer(policy, m, batch=64, device="cuda")
    trainer.train_step(0)
    trainer.train_step(1)  # warm-up: cuDNN's algorithm choice, the allocator, per-device constants
    with count_syncs("cuda") as syncs:
        trainer.train_step(2)
    assert syncs.total <= expected, syncs.where


# ------------------------------------------------------------------------------- every policy call

@pytest.mark.parametrize("spec, expected", [
    ("standard", 0), ("cutout", 0), ("crop", 0), ("translate", 0), ("gaussian", 0),
    ({"name": "gaussian", "sigma": [0.0, 0.2]}, 0), ("resized_crop", 0),
    ("randaugment", 1), ({"name": "randaugment", "num_ops": 3, "magnitude": 7.5}, 1),
    ({"name": "randaugment", "magnitude_std": 0.5}, 1), ("trivialaugment", 1), ("autoaugment", 1),
    ("augmix", 1), ({"name": "augmix", "alpha": 0.5, "depth": 2}, 1), ("colorjitter", 1),
    ({"name": "colorjitter", "hue": 0.1}, 1),
])
def test_policy_sync_count(spec, expected: int) -> None:
    """One call over 64 views; before, AugMix made 35 (a rejection loop per Gamma draw, a group-size
    read per operation slot), ColorJitter 12 (a nonzero per position and operation)."""
    policy = build_policy(spec, image_size=(32, 32))
    x = _images(64)
    policy(x, torch.Generator().manual_seed(0))
    with count_syncs() as syncs:
        policy(x, torch.Generator().manual_seed(1))
    assert syncs.total == expected, syncs.where
    assert syncs.uploads == 0


def test_flip_off_the_cpu_takes_the_sync_free_route_with_the_same_result(monkeypatch) -> None:
    x = _images(32)
    mask = torch.rand(32, generator=torch.Generator().manual_seed(3)) < 0.5
    on_cpu = geometry.hflip(x, mask)
    monkeypatch.setattr(geometry, "_host_reads_are_free", lambda device: False)
    with count_syncs() as syncs:
        elsewhere = geometry.hflip(x, mask)
    assert syncs.total == 0
    assert torch.equal(elsewhere, on_cpu)


def test_view_augmenter_chunks_are_larger_off_the_cpu() -> None:
    from batchaug.augment.views import chunk_elements

    assert chunk_elements(torch.device("cpu")) == 1 << 21  # 682 CIFAR views
    # a BA step of B=1024 CIFAR images at M=16 is one chunk on an accelerator: one sync with RandAugment
    assert chunk_elements(torch.device("cuda")) // (3 * 32 * 32) >= 1024 * 16
    va = ViewAugmenter("randaugment", 16, **CIFAR)
    va(_images(64), torch.Generator().manual_seed(0))  # warm-up: the magnitude tables are made once
    with count_syncs() as syncs:
        va(_images(64), torch.Generator().manual_seed(1))
    assert syncs.total == 2  # 1024 views in two CPU chunks of 512, one sync each


def test_bench_syncs_reports_the_counts(capsys) -> None:
    import json

    from batchaug.cli import main

    assert main(["bench", "syncs", "--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"cutout": {"1": 0, "2": 0}, "randaugment": {"1": 1, "2": 1}}
