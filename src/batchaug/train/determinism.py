"""``train.deterministic``: what it guarantees and the settings that make it so.

**Guarantee.** Two runs of the same configuration (seed included) on the same machine and software
(device model, driver, CUDA/cuDNN and PyTorch versions, number of processes) produce the same run
bit for bit: the same ``metrics.jsonl`` numbers and the same checkpoints. A run that reaches an
operation without a deterministic implementation stops with PyTorch's error naming it, instead of
warning and continuing nondeterministically (what ``warn_only=True`` did).

Not promised: equality across devices (CPU and CUDA draw different random streams), GPU models,
library versions or process counts. A run that the out-of-memory fallback switched to micro-batching
is itself deterministic, but differs from the unchunked run (BatchNorm statistics per chunk).

Without the flag, CPU runs are run-to-run deterministic anyway (the training path uses no
nondeterministic CPU kernel); CUDA runs are not (cuDNN's benchmarked algorithm choice, atomics in
some backward kernels, cuBLAS's split reductions).

**Settings** (:func:`configure_determinism`):

- ``torch.use_deterministic_algorithms(True)`` — deterministic kernels (cuDNN convolutions, scatter
  and index accumulation) and an error for the rest; uninitialized memory is filled, so that reading
  it by mistake cannot differ between runs;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set — cuBLAS gives reproducible results only
  with a fixed workspace configuration (CUDA >= 10.2), and PyTorch refuses cuBLAS calls under
  deterministic mode without it. It is read when the process first uses cuBLAS: ``prepare_run`` sets
  it before the run's first matrix product (a process that used cuBLAS earlier should set it itself);
- ``torch.backends.cudnn.benchmark = False`` (no timing-based algorithm choice) and
  ``torch.backends.cudnn.deterministic = True``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["CUBLAS_WORKSPACE", "configure_determinism"]

#: the configuration NVIDIA documents for reproducible cuBLAS (the other is ``:16:8``, less memory, slower)
CUBLAS_WORKSPACE = ":4096:8"


def configure_determinism(enabled: bool) -> None:
    """Apply the settings of the module docstring when ``enabled`` (process-wide); do nothing otherwise,
    so that settings a user made themselves stay as they are."""
    if not enabled:
        return
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
