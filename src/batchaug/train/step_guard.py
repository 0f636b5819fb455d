"""What an optimizer step changes before its update, saved so that a failed attempt can be undone.

The trainer's out-of-memory fallback retries a step in twice as many micro-batches. For the retry to
be the step a run micro-batched from the start would have taken ("same step, same update"), every
state the failed attempt touched is put back first:

- the running statistics and ``num_batches_tracked`` of every BatchNorm-like layer (train-mode
  forwards update them as they go, so a pass that failed half-way has moved some of them);
- the method's state (:meth:`~batchaug.methods.base.Method.state_dict`, what a resumed run needs at a
  step boundary: e.g. Batch Augmentation's smoothed gradient-norm ratio, which a probe updates inside
  the forward); the trainer then calls ``begin_step`` again, which re-derives the step's draws (SBA's
  λ, layer and noise are seeded from the step);
- PyTorch's default generators (CPU, and the training device's), which dropout and other random
  layers of the model draw from.

The views are remade from the step's re-seeded augmentation generator, so they are the same.
:class:`StepSnapshot` holds these; saving costs a fused copy of the BN buffers and two generator
states per step (no device synchronization).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.nn.bn_utils import is_batch_norm
from batchaug.nn.wrappers import unwrap

__all__ = ["StepSnapshot"]


class StepSnapshot:
    """The state of ``model``'s BatchNorms, a method and the default generators at the start of a step."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = torch.device(device)
        self._buffers: list[Tensor] = []
        self._saved: list[Tensor] = []
        self._method: dict[str, Any] = {}
        self._cpu_rng: Tensor | None = None
        self._device_rng: Tensor | None = None

    def _bn_buffers(self) -> list[Tensor]:
        return [buf for module in unwrap(self.model).modules() if is_batch_norm(module)
                for buf in module.buffers(recurse=False)]

    @torch.no_grad()
    def save(self, method: Any) -> None:
        """Record the current state (call before the step's ``begin_step``)."""
        buffers = self._bn_buffers()
        same = len(buffers) == len(self._saved) and all(
            b.shape == s.shape and b.dtype == s.dtype and b.device == s.device
            for b, s in zip(buffers, self._saved, strict=True))
        if not same:  # first step, or the model's buffers were replaced (moved, reloaded)
            self._saved = [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._saved, buffers)
        self._buffers = buffers
        self._method = copy.deepcopy(method.state_dict())
        self._cpu_rng = torch.get_rng_state()
        self._device_rng = _device_rng_state(self.device)

    @torch.no_grad()
    def restore(self, method: Any) -> None:
        """Put back what :meth:`save` recorded."""
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)
        method.load_state_dict(copy.deepcopy(self._method))
        if self._cpu_rng is not None:
            torch.set_rng_state(self._cpu_rng)
        if self._device_rng is not None:
            torch.cuda.set_rng_state(self._device_rng, self.device)


def _device_rng_state(device: torch.device) -> Tensor | None:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_rng_state(device)  # host-side (seed, offset): no device synchronization
    return None
