"""BatchNorm helpers of batchaug.nn.bn_utils: what counts as a BatchNorm, the folded (scale, shift) transform."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchaug.nn import SplitBatchNorm, SplitBatchNorm1d, SplitBatchNorm2d, is_batch_norm
from batchaug.nn.bn_utils import fold_batch_norm, is_batchaug_norm
from batchaug.nn.ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNorm3d

BATCH_NORMS = [
    lambda: nn.BatchNorm1d(4), lambda: nn.BatchNorm2d(4), lambda: nn.BatchNorm3d(4),
    lambda: nn.BatchNorm2d(4, affine=False, track_running_stats=False), lambda: nn.LazyBatchNorm2d(),
    lambda: nn.SyncBatchNorm(4),
    lambda: SplitBatchNorm(4), lambda: SplitBatchNorm1d(4), lambda: SplitBatchNorm2d(4, num_splits=3),
    lambda: GhostBatchNorm1d(4, 2), lambda: GhostBatchNorm2d(4, 2), lambda: GhostBatchNorm3d(4, 2),
]
OTHERS = [
    lambda: nn.GroupNorm(2, 4), lambda: nn.LayerNorm(4), lambda: nn.InstanceNorm2d(4), lambda: nn.Conv2d(4, 4, 1),
    lambda: nn.Linear(4, 4), lambda: nn.Identity(), lambda: nn.Sequential(nn.BatchNorm2d(4)),
]


@pytest.mark.parametrize("make", BATCH_NORMS)
def test_is_batch_norm_accepts_torch_and_batchaug_batchnorms(make):
    assert is_batch_norm(make()) is True


@pytest.mark.parametrize("make", OTHERS)
def test_is_batch_norm_rejects_other_modules(make):
    assert is_batch_norm(make()) is False


def test_is_batchaug_norm_means_the_split_layers_that_replace_batchnorm():
    assert is_batchaug_norm(SplitBatchNorm2d(4)) is True
    assert is_batchaug_norm(SplitBatchNorm1d(4, num_splits=3)) is True
    for module in (nn.BatchNorm2d(4), nn.SyncBatchNorm(4), GhostBatchNorm2d(4, 2), nn.GroupNorm(2, 4)):
        assert is_batchaug_norm(module) is False


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm1d, (7, 5)), (nn.BatchNorm1d, (7, 5, 3)),
                                        (nn.BatchNorm2d, (7, 5, 4, 3)), (nn.BatchNorm3d, (7, 5, 2, 3, 2))])
def test_folded_scale_shift_reproduce_eval_mode_batchnorm(cls, shape, affine):
    gen = torch.Generator().manual_seed(0)
    bn = cls(5, eps=1e-3, affine=affine).eval()
    with torch.no_grad():
        bn.running_mean.normal_(generator=gen)
        bn.running_var.uniform_(0.1, 3.0, generator=gen)
        if affine:
            bn.weight.normal_(generator=gen)
            bn.bias.normal_(generator=gen)
    x = torch.randn(shape, generator=gen)
    scale, shift = fold_batch_norm(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    view = [1, 5] + [1] * (x.dim() - 2)
    with torch.no_grad():
        torch.testing.assert_close(x * scale.view(view) + shift.view(view), bn(x), rtol=1e-5, atol=1e-5)
    assert scale.shape == shift.shape == (5,)
    if not affine:
        torch.testing.assert_close(scale, torch.rsqrt(bn.running_var + bn.eps))
        torch.testing.assert_close(shift, -bn.running_mean * scale)
