"""Drop-path (Larsson et al., FractalNet, 2017, as used in NASNet and DARTS): drop a whole path of a
multi-branch block for some samples of a batch.

:func:`drop_path` zeroes the output of one path for each sample with probability ``p`` and scales the
kept samples by ``1 / (1 - p)``, so the path's expected output is unchanged (inverted dropout with one
Bernoulli draw per sample instead of per element). A model whose drop-path probability changes during
training (DARTS raises it linearly from 0) exposes a ``drop_path_prob`` attribute;
:func:`set_drop_path_prob` sets it on every module of a model that has one, under any DDP or
``torch.compile`` wrapper, which is what the ``model.drop_path`` schedule
(:class:`batchaug.train.callbacks.drop_path.DropPathSchedule`) does before each step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from batchaug.nn.wrappers import unwrap

__all__ = ["drop_path", "drop_path_modules", "set_drop_path_prob"]


def drop_path(x: Tensor, prob: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x`` with every sample (row of dimension 0) zeroed with probability ``prob``, the others scaled
    by ``1 / (1 - prob)``.

    ``prob`` may be a float or a 0-d tensor (a tensor lets a compiled model change it without
    recompiling); ``prob = 0`` returns ``x`` unchanged in value. The draws come from ``generator`` (on
    ``x``'s device) or PyTorch's global generator, like ``nn.Dropout``. Call it in training only.
    """
    if isinstance(prob, (int, float)) and not 0.0 <= prob < 1.0:
        raise ValueError(f"drop_path: prob must be in [0, 1), got {prob!r}")
    keep = 1.0 - prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    u = torch.rand(shape, device=x.device, dtype=torch.float32, generator=generator)
    scale = (u < keep).to(torch.float32) / keep  # (N, 1, ...): 0 or 1/keep per sample
    return x * scale.to(x.dtype)


def drop_path_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` (unwrapped from DDP / ``torch.compile``) with a ``drop_path_prob`` attribute."""
    return [m for m in unwrap(model).modules() if hasattr(m, "drop_path_prob")]


def set_drop_path_prob(model: nn.Module, prob: float) -> int:
    """Set ``drop_path_prob = prob`` on every module of ``model`` that has the attribute; returns how many."""
    if not 0.0 <= float(prob) < 1.0:
        raise ValueError(f"drop-path probability must be in [0, 1), got {prob!r}")
    modules = drop_path_modules(model)
    for m in modules:
        m.drop_path_prob = float(prob)
    return len(modules)
