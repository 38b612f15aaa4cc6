"""Small, explicit DDP helpers: the process group, barriers, sums over ranks.

Where this process stands (rank, world size, local rank) comes from
:func:`alosmap._dist.dist_info`, the one reader of torchrun's ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is a single process and
every helper here is a no-op. The process group uses NCCL when the run is on CUDA
and gloo otherwise (CPU, e.g. the tests). Only the primary rank (0) logs and writes
files; nothing here touches ``print``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from alosmap._dist import DistInfo, dist_info

__all__ = [
    "all_gather_objects",
    "barrier",
    "cleanup",
    "init_distributed",
    "is_primary",
    "reduce_sums",
]


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; no-op for one process.

    Args:
        device_type: ``"cuda"`` (NCCL; also selects GPU ``LOCAL_RANK``) or
            ``"cpu"`` (gloo).

    Returns:
        This process's :class:`DistInfo`.
    """
    info = dist_info()
    if not info.distributed or dist.is_initialized():
        return info
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return info


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_primary() -> bool:
    """True on rank 0 (or without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return True


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over all ranks (every rank must call it with the same keys).

    Args:
        values: per-rank partial sums (e.g. summed losses and a batch count).

    Returns:
        The sums over ranks (the input unchanged for one process).
    """
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    buf = buf.to(_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return dict(zip(keys, buf.cpu().tolist(), strict=True))


def all_gather_objects(obj: Any) -> list[Any]:
    """Collect one picklable object from every rank, in rank order.

    Used for the per-rank RNG states of a resume checkpoint (an in-memory exchange
    between our own processes, never a file).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
