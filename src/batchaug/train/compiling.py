"""``train.compile``: ``torch.compile`` for every method, and a watch on what the compiler does.

How the methods meet the compiler (measured with ``torch._dynamo`` counters, ``tests/test_compile.py``):

- **baseline, BA, RA, split BN**: one training graph; evaluation (eval mode, no gradients) adds its
  own. A batch size that changes (the last micro-batch, a smaller last evaluation batch) makes dynamo
  mark the batch dimension dynamic once (automatic dynamic shapes). Split BN's route is an attribute
  the graphs are guarded on: one graph per route the run uses (``split`` in training, ``main`` and
  ``aux`` in validation).
- **SBA**: the latent augmenter's hooks are registered once and excluded from compilation
  (:class:`~batchaug.nn.latent.LatentAugmenter`): a graph break at each eligible layer, in every
  forward, and the graphs between the breaks serve whichever layer is active. Hooks added and removed
  per step would be invisible to the compiled model (dynamo does not guard on module hooks), which
  then ran the graph of another step: a wrong loss, or an error.

After the warm-up (the first steps and the first evaluation) no step compiles anything. Dynamo's
default recompile limit, 8 variants per code object, is too small for that warm-up: code that several
modules share (a ResNet's stage ``Sequential``\\ s, resumed after SBA's graph breaks) needs train/eval
and static/dynamic-shape variants for each module, and past the limit dynamo runs the code eagerly
without saying so in the run's output. :func:`compile_model` raises the limit to
:data:`RECOMPILE_LIMIT`; the ``compile_watch`` callback warns if it is reached anyway.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from batchaug.errors import ConfigError

__all__ = ["RECOMPILE_LIMIT", "compile_model", "recompile_limit_hits"]

#: variants per code object allowed during warm-up (dynamo's default is 8)
RECOMPILE_LIMIT = 64


def _raise_recompile_limit(limit: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    if getattr(config, name, limit) < limit:
        setattr(config, name, limit)


def compile_model(model: nn.Module, how: bool | str) -> nn.Module:
    """``torch.compile(model)`` with the default backend (``True``) or the backend named ``how``, with
    dynamo's recompile limit raised to :data:`RECOMPILE_LIMIT` (process-wide)."""
    _raise_recompile_limit(RECOMPILE_LIMIT)
    if how is True:
        return torch.compile(model)
    try:
        return torch.compile(model, backend=how)
    except Exception as exc:  # an unknown backend name raises a backend-specific error type
        raise ConfigError(f"train.compile: {how!r} is not a torch.compile backend here ({exc}); use true, false "
                          "or a name from torch._dynamo.list_backends()") from exc


def recompile_limit_hits() -> int:
    """How many times dynamo gave up compiling a frame because of the recompile limit (in this process)."""
    counters: Any = torch._dynamo.utils.counters
    hits = 0
    for group in ("unimplemented", "graph_break"):
        for reason, count in counters.get(group, {}).items():
            text = str(reason).lower()
            if "limit" in text and ("recompile" in text or "cache size" in text or "cache_size" in text):
                hits += count
    return hits


def warn_on_recompile_limit(already: int) -> int:
    """Warn when :func:`recompile_limit_hits` grew past ``already``; returns the current count."""
    hits = recompile_limit_hits()
    if hits > already:
        warnings.warn(f"train.compile: dynamo reached its recompile limit {hits} time(s) and runs that code "
                      f"eagerly from now on; raise torch._dynamo.config.recompile_limit (batchaug sets "
                      f"{RECOMPILE_LIMIT}), or see TORCH_LOGS=recompiles for what keeps changing", RuntimeWarning,
                      stacklevel=2)
    return hits
