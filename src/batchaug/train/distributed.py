"""torchrun support: this process's device, process-group setup from the environment and small collectives.

torchrun starts one process per device and tells each its place through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``). :func:`process_device` turns that and the
configured ``train.device`` into this process's device (GPU ``LOCAL_RANK`` of its node);
:func:`init_from_env` pins the process to it and joins the group (NCCL on CUDA, gloo otherwise).

:func:`agree_on_chunks` is how ranks that ran out of memory in the same step agree on the chunk count
they retry with: per-chunk collectives (DDP's buffer broadcasts, SyncBN's all-reduces) only match when
every rank cuts its step into the same chunks. It talks over a side gloo group, never the training
group, whose collectives may be half done when memory runs out.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from batchaug.errors import ConfigError

#: Seconds the ranks that ran out of memory wait for the others to join the chunk agreement. Ranks in
#: the same step reach it within one chunk's compute; one that did not run out of memory never does
#: (it waits in the step's collectives), and then every rank must stop rather than hang.
AGREEMENT_TIMEOUT_S = 60.0

_SIDE_GROUP: tuple[Any, Any] | None = None  # (the default group it belongs to, the gloo side group)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launch_rank() -> int:
    """This process's global rank as torchrun's ``RANK`` gives it (0 when not launched by it): known before
    the process group is joined and after it is left, so a command can print from one process only."""
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """Processes of the launch as torchrun's ``WORLD_SIZE`` gives it (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes on this node: torchrun's ``LOCAL_WORLD_SIZE`` (1 when not launched by it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def process_device(name: str, *, cuda_count: int, local_rank: int = 0, local_world: int = 1) -> torch.device:
    """The device of process ``local_rank`` of the ``local_world`` processes of a node with ``cuda_count``
    GPUs, for ``train.device`` ``name``: ``auto`` and ``cuda`` take GPU ``local_rank`` (``auto``: the CPU
    when there is no GPU); an explicit ``cuda:N`` is kept for one process per node and refused for more
    (unless N is ``local_rank``), where it would put every process on GPU N (NCCL fails on duplicate GPUs).

    Pure (the caller reads the environment and CUDA), so the choice is testable without a GPU."""
    if name == "auto":
        if cuda_count == 0:
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type != "cuda":
        return device
    if cuda_count == 0:
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available; use cpu or auto")
    if device.index is not None:
        if local_world > 1 and device.index != local_rank:
            raise ConfigError(f"train.device: {name!r} would put all {local_world} processes of this node on one "
                              f"GPU; use cuda or auto (process LOCAL_RANK takes GPU LOCAL_RANK)")
        if device.index >= cuda_count:
            raise ConfigError(f"train.device: {name!r} but this machine has {cuda_count} GPU(s)")
        return device
    if local_world > cuda_count:
        raise ConfigError(f"train.device: {local_world} processes on this node but {cuda_count} GPU(s); start at "
                          f"most one process per GPU (torchrun --nproc_per_node {cuda_count})")
    return torch.device("cuda", local_rank)


def init_from_env(device: torch.device) -> bool:
    """Join the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    On CUDA the process is first pinned to ``device`` (``torch.cuda.set_device``) and NCCL is told
    which GPU is this rank's (``device_id``), so no rank creates a context on GPU 0; gloo otherwise,
    so multi-process runs also work on the CPU. Returns True when running distributed.
    """
    if launch_world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return True


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[bool]:
    """The process group for a piece of work (a run, a sweep of runs): joined from the environment on
    entry (:func:`init_from_env`; yields whether distributed) and left on exit, cleanly or, after an
    error, without waiting for the others. A group that was joined already (by an enclosing ``joined``,
    or the caller) is left alone: a sweep under torchrun keeps one group for all its runs, because a
    group joined again on the same torchrun store can find the previous group's stale addresses there."""
    if dist.is_available() and dist.is_initialized():
        yield world_size() > 1
        return
    distributed = init_from_env(device)
    try:
        yield distributed
    except BaseException:
        shutdown(wait_for_others=False)
        raise
    shutdown()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    if world_size() <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process); a collective: all ranks call it.

    Tensors inside ``obj`` (dicts, lists, tuples) travel on the CPU: unpickled as they are, another
    rank's CUDA tensors would land on that rank's GPU and open a context there."""
    if world_size() <= 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, _on_cpu(obj))
    return out


def _on_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):  # (not a NamedTuple, whose constructor takes fields)
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each key's mean over the ranks that have it (a collective): the training figures of a metrics
    line are the global batch's, not rank 0's share of it. One process: ``values`` unchanged."""
    if world_size() <= 1:
        return values
    gathered = all_gather_object(values)
    out = {}
    for key in values:
        seen = [d[key] for d in gathered if key in d and d[key] is not None]
        out[key] = sum(seen) / len(seen) if seen else values[key]
    return out


def setup_agreement_group() -> None:
    """Create the side gloo group :func:`agree_on_chunks` talks over. A collective (``new_group``):
    every rank calls it, at the same point (the trainer does, when it is built); once per process group."""
    global _SIDE_GROUP
    if world_size() <= 1:
        return
    world = dist.group.WORLD
    if _SIDE_GROUP is None or _SIDE_GROUP[0] is not world:
        _SIDE_GROUP = (world, dist.new_group(backend="gloo"))


def agree_on_chunks(chunks: int, *, step: int | None = None, timeout_s: float | None = None) -> int:
    """The chunk count to retry a step with after running out of memory: the largest of the ranks' ``chunks``.

    Only the ranks that ran out of memory call it. When all did (the usual case: same model, same
    shapes), they meet within ``timeout_s`` (default :data:`AGREEMENT_TIMEOUT_S`) and all retry the step
    in the same number of chunks. When one did not, it waits in the step's collectives and never comes:
    then this raises ``torch.OutOfMemoryError`` saying so, the process ends, and torchrun stops the
    others (a rank that ends makes its peers' gloo/NCCL calls fail) — all ranks fail together instead
    of hanging. One process: ``chunks`` unchanged.
    """
    if world_size() <= 1:
        return chunks
    where = f" at step {step}" if step is not None else ""
    if _SIDE_GROUP is None or _SIDE_GROUP[0] is not dist.group.WORLD:
        raise torch.OutOfMemoryError(f"out of memory{where} on rank {rank()}; the ranks cannot agree on "
                                     "micro-batching (no agreement group: call setup_agreement_group() on every "
                                     "rank first); set train.micro_batch")
    box = torch.tensor([int(chunks)], dtype=torch.int64)
    work = dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_SIDE_GROUP[1], async_op=True)
    seconds = AGREEMENT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        work.wait(timeout=datetime.timedelta(seconds=seconds))
    except RuntimeError as exc:
        raise torch.OutOfMemoryError(
            f"out of memory{where} on rank {rank()} but not on every rank (the others did not join the "
            f"micro-batching agreement within {seconds:g} s): the ranks cannot retry the step alone, so the "
            f"run stops; resume it (--resume) with train.micro_batch small enough for {chunks} chunks per step"
        ) from exc
    return int(box.item())


def shutdown(*, wait_for_others: bool = True) -> None:
    """Leave the process group cleanly. Without the barrier, a rank that exits while gloo threads of
    another are still talking aborts ("terminate called without an active exception"). After an
    error the barrier is skipped: the other ranks may never reach it."""
    global _SIDE_GROUP
    if dist.is_available() and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()
    _SIDE_GROUP = None
