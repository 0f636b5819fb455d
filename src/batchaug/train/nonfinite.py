"""What the trainer does about NaN and Inf: stop the run naming the step, or skip the step and count it.

``train.on_nonfinite: stop`` (the default). A step whose loss, gradient norm or BatchNorm running
statistics (a forward pass on huge activations overflows them while the loss stays finite) are not
finite stops the
run with :class:`~batchaug.errors.NonFiniteError` (exit status 3) naming the first such step. The
checkpoints on disk stay those of the last finite evaluation: nothing is saved after the fault. On the
CPU the check reads the step's flag at once (a host read costs nothing there), so the faulty update is
never applied; on an accelerator the flag stays on the device and is read before the next metrics line,
evaluation or checkpoint, so a healthy run pays no synchronization per step.

``train.on_nonfinite: skip``. Such a step is dropped: no optimizer step (momentum, Adam moments and
step counts untouched), the BatchNorm running statistics its forward pass updated are restored (the
trainer's step snapshot restores their counts and the method's state as well), the AMP grad scaler
(fp16) lowers its scale as it does for an overflow; the step is counted (``skipped_steps`` in every
evaluation line). Deciding per step needs one host read of the flag per step.

With fp16 the grad scaler already skips steps whose *scaled gradients* overflow and lowers the scale:
that is normal mixed-precision training, not a fault, so under a scaler only a non-finite *loss* counts.

Whatever the mode, :meth:`NonFiniteGuard.check_weights` refuses to checkpoint weights or BN statistics
that are not finite, so ``best.pt`` and ``last.pt`` never hold NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from batchaug.errors import NonFiniteError

__all__ = ["MODES", "NonFiniteGuard"]

MODES = ("stop", "skip")
_ADVICE = ("lower optim.lr, set optim.clip_grad_norm, or set train.on_nonfinite=skip to skip such steps; "
           "the checkpoints on disk are those of the last finite evaluation")


class NonFiniteGuard:
    """Per-step check of the loss and gradient norm (``mode`` ``"stop"`` or ``"skip"``, module docstring).

    Args:
        mode: ``"stop"`` or ``"skip"``.
        device: the training device (decides whether the stop check reads its flag every step).
        scaled: whether an enabled AMP grad scaler handles gradient overflows (then only the loss is checked).
        eager: whether the stop check reads its flag at every step; default: on the CPU, where a host read is
            free. False on the CPU checks as on an accelerator (the sync counts of ``batchaug bench syncs``).
    """

    def __init__(self, mode: str = "stop", device: torch.device | str = "cpu", *, scaled: bool = False,
                 eager: bool | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"on_nonfinite: {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.device = torch.device(device)
        self.scaled = scaled
        self.eager = self.device.type == "cpu" if eager is None else eager
        """Whether the stop check reads its flag at every step."""
        self.skipped = 0
        self._first_bad: Tensor | None = None  # stop mode off the CPU: the first bad step, -1 while none
        self._buffers: list[Tensor] = []
        self._saved: list[Tensor] = []

    def before_forward(self, model: nn.Module) -> None:
        """Note the model's float buffers (BN running statistics: a forward pass on huge activations can
        overflow them while the loss stays finite) and, in skip mode, remember their values."""
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        if [id(b) for b in buffers] != [id(b) for b in self._buffers]:
            self._buffers = buffers
            self._saved = [b.detach().clone() for b in buffers] if self.mode == "skip" else []
        elif buffers and self.mode == "skip":
            torch._foreach_copy_(self._saved, buffers)

    def step_ok(self, step: int, loss: Tensor, grad_norm: Tensor) -> bool:
        """Whether step ``step`` (0-based: the message says ``step + 1``, as ``metrics.jsonl`` counts steps
        done) may update the weights. Stop mode raises (or, off the CPU, records the
        fault for :meth:`raise_pending`) and returns True; skip mode returns False for a faulty step
        after restoring the BN statistics."""
        finite = torch.isfinite(loss.detach().float())
        if not self.scaled:
            finite = finite & torch.isfinite(grad_norm.detach().float().to(finite.device))
        if self._buffers:
            norms = torch._foreach_norm([b.detach() for b in self._buffers])
            finite = finite & torch.isfinite(torch.stack([n.float() for n in norms])).all().to(finite.device)
        if self.mode == "stop":
            if self.eager:
                if not bool(finite):
                    raise self._error(step, loss, grad_norm)
                return True
            bad = torch.where(finite, -1, step).to(torch.int64)
            if self._first_bad is None:
                self._first_bad = torch.full((), -1, dtype=torch.int64, device=bad.device)
            self._first_bad = torch.where(self._first_bad < 0, bad, self._first_bad)
            return True
        if bool(finite):
            return True
        self.skipped += 1
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)
        return False

    def raise_pending(self) -> None:
        """Stop mode off the CPU: raise for a fault recorded since the run started (one host read)."""
        if self._first_bad is not None:
            step = int(self._first_bad)
            if step >= 0:
                raise NonFiniteError(f"step {step + 1}: the loss, the gradient or the BatchNorm statistics became "
                                     f"NaN or Inf; training stopped ({_ADVICE})")

    def check_weights(self, model: nn.Module, step: int) -> None:
        """Raise unless every float parameter and buffer of ``model`` is finite (before a checkpoint)."""
        tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        if not tensors:
            return
        norms = torch._foreach_norm(tensors)  # NaN or Inf in a tensor makes its norm NaN or Inf
        if not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
            raise NonFiniteError(f"after step {step}: the weights hold NaN or Inf values and are not saved; "
                                 f"training stopped ({_ADVICE})")

    def _error(self, step: int, loss: Tensor, grad_norm: Tensor) -> NonFiniteError:
        what = []
        if not torch.isfinite(loss.detach().float()):
            what.append(f"loss {float(loss):g}")
        if not self.scaled and not torch.isfinite(grad_norm.detach().float()):
            what.append(f"gradient norm {float(grad_norm):g}")
        if not what:
            what.append("BatchNorm running statistics")
        return NonFiniteError(f"step {step + 1}: non-finite {' and '.join(what)}; training stopped ({_ADVICE})")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
