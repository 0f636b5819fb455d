"""Counting device→host synchronizations, on the CPU as on CUDA.

Every read of a device value on the host (``.item()``, ``bool(t)``, ``.tolist()``), every op whose
output size depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``,
``masked_select``) and every explicit copy to the host waits for the device to finish all queued
work: the CPU can no longer run ahead and keep the GPU fed. A training step should make a small
number of them that does not grow with the batch or the number of views.

:func:`count_syncs` measures that number for any code::

    with count_syncs() as syncs:
        trainer.train_step(0)
    syncs.total, syncs.by_op      # e.g. 2, {"item": 1, "bincount": 1}

On CUDA it counts what the driver reports (``torch.cuda.set_sync_debug_mode("warn")``). On the CPU,
where nothing is asynchronous, it counts the operations that *would* synchronize if their tensors
lived on an accelerator, by watching the ATen operations that run (a ``TorchDispatchMode``) and the
Python-level host reads (a ``TorchFunctionMode``): every tensor counts as a device tensor, so a read
of a tensor that lives on the host by design (a CPU generator's draw) counts too, an upper bound.
Tensors built from Python values (``torch.tensor([..])``), which on an accelerator are a blocking
host-to-device copy each, are counted apart as ``uploads``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SyncCounts", "count_syncs"]

_aten = torch.ops.aten
# ATen ops that read device data on the host, or whose output shape depends on the data
_SYNC_OPS = {
    _aten._local_scalar_dense: "item",  # .item(), bool(t), float(t), int(t), `if t:`
    _aten.nonzero: "nonzero",
    _aten._unique2: "unique",
    _aten.unique_dim: "unique",
    _aten.unique_consecutive: "unique",
    _aten.bincount: "bincount",
    _aten.masked_select: "masked_select",
    _aten.equal: "equal",
    _aten.is_nonzero: "item",
}
_INDEX_OPS = {_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_}
_HOST_READS = {"tolist", "numpy", "cpu"}  # Tensor methods that copy to the host (not dispatched on CPU)
_UPLOADS = {torch.tensor, torch.as_tensor}
_CUDA_SYNC_WARNING = "synchronizing CUDA operation"


@dataclass
class SyncCounts:
    """What :func:`count_syncs` counted: device→host synchronizations by operation, and uploads."""

    by_op: Counter = field(default_factory=Counter)
    uploads: int = 0
    """Tensors made from Python values (a blocking host-to-device copy each on an accelerator)."""
    where: list[str] = field(default_factory=list)
    """One line per synchronization: the operation and the innermost batchaug frame that made it."""

    @property
    def total(self) -> int:
        """Device→host synchronizations."""
        return sum(self.by_op.values())

    def _add(self, op: str) -> None:
        self.by_op[op] += 1
        self.where.append(f"{op} at {_caller()}")

    def __repr__(self) -> str:
        return f"SyncCounts(total={self.total}, by_op={dict(self.by_op)}, uploads={self.uploads})"


def _caller() -> str:
    """``file:line`` of the innermost frame inside batchaug (outside this module), for reports."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "batchaug" in name and not name.endswith(("syncs.py",)):
            return f"{name.rsplit('batchaug', 1)[-1].lstrip('/')}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _bool_index(indices: Any) -> bool:
    return any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or ()))


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counts: SyncCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        op = _SYNC_OPS.get(packet)
        if op is not None:
            self.counts._add(op)
        elif packet is _aten.repeat_interleave and func is _aten.repeat_interleave.Tensor \
                and kwargs.get("output_size") is None:
            self.counts._add("repeat_interleave")
        elif packet in _INDEX_OPS and _bool_index(args[1] if len(args) > 1 else kwargs.get("indices")):
            value = args[2] if len(args) > 2 else kwargs.get("values")
            # x[mask] = scalar becomes masked_fill_ (no sync); a gather or a tensor of values needs the count
            if packet is _aten.index or not (isinstance(value, Tensor) and value.numel() == 1):
                self.counts._add("mask_index")
        return func(*args, **kwargs)


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, counts: SyncCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS and args and isinstance(args[0], Tensor) and func is getattr(Tensor, name, None):
            self.counts._add(name)
        elif func in _UPLOADS and args and not isinstance(args[0], Tensor):
            self.counts.uploads += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_syncs(device: torch.device | str | None = None) -> Iterator[SyncCounts]:
    """Count the device→host synchronizations of the code in the block (see the module docstring).

    ``device``: a CUDA device counts what the CUDA runtime reports (``set_sync_debug_mode``); anything
    else (default) instruments the CPU run. Not thread-safe; not for use under ``torch.compile``.
    """
    counts = SyncCounts()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield counts
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for w in caught:
            if _CUDA_SYNC_WARNING in str(w.message):
                counts.by_op["cuda"] += 1
                counts.where.append(f"cuda at {w.filename}:{w.lineno}")
        return
    with _FunctionCounter(counts), _DispatchCounter(counts):
        yield counts
