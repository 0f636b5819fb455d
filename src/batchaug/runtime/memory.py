"""Out-of-memory errors, recognised the same way on every PyTorch version and back end.

An allocation failure reaches Python in several forms: ``torch.OutOfMemoryError`` (PyTorch 2.5 and
later; ``torch.cuda.OutOfMemoryError`` before, both a ``RuntimeError``) from the caching allocator,
and a plain ``RuntimeError`` from the libraries that allocate on their own (cuBLAS
``CUBLAS_STATUS_ALLOC_FAILED`` when it creates a handle or workspace, cuDNN
``CUDNN_STATUS_ALLOC_FAILED``, cuFFT ``CUFFT_ALLOC_FAILED``, "CUDA error: out of memory" from a bare
``cudaMalloc``, "MPS backend out of memory", the CPU allocator's "can't allocate memory").
:func:`is_out_of_memory` says whether an exception is one of them.
"""

from __future__ import annotations

import gc

import torch

__all__ = ["is_out_of_memory", "release_cached_memory"]

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
     if isinstance(t, type)})
_OOM_MESSAGES = ("out of memory", "alloc_failed", "can't allocate memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports a failed memory allocation (any device, any PyTorch version)."""
    if _OOM_TYPES and isinstance(exc, _OOM_TYPES):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return any(m in message for m in _OOM_MESSAGES)


def release_cached_memory(device: torch.device) -> None:
    """Return the caching allocator's free blocks to the device, so that a retry can use them.

    Call it only after the failed attempt's tensors are unreachable (outside the ``except`` block
    that caught the error: the traceback holds the frames, and so the autograd graph, until then).
    """
    gc.collect()  # tensors kept alive by reference cycles of the failed frames
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
