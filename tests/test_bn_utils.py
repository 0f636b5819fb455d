"""BatchNorm helpers of batchaug.nn.bn_utils: the folded (scale, shift) transform."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchaug.nn.bn_utils import fold_batch_norm


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
