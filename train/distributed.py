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
    "WeightedSampler",
    "all_gather_objects",
    "barrier",
    "cleanup",
    "init_distributed",
    "is_primary",
    "reduce_sums",
    "train_sampler",
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


class WeightedSampler(torch.utils.data.Sampler[int]):
    """Training items drawn with replacement, with probability ∝ their weight.

    The sampler of a dataset whose manifest gives its patches unequal weights (the
    input manifest's ``weight`` column); each epoch draws as many items as
    :class:`~torch.utils.data.DistributedSampler` with ``drop_last`` gives, and
    each rank takes every ``num_replicas``-th of one draw seeded by ``seed`` and the
    epoch (the same on every rank: exact resumes, disjoint shards).
    """

    def __init__(
        self, weights: Any, num_replicas: int, rank: int, seed: int = 0
    ) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.num_samples = len(self.weights) // num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the draw (call once per epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Any:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = self.num_samples * self.num_replicas
        idx = torch.multinomial(self.weights, n, replacement=True, generator=g)
        return iter(idx[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def train_sampler(
    dataset: Any, num_replicas: int, rank: int, seed: int
) -> torch.utils.data.DistributedSampler[int] | WeightedSampler:
    """The sampler of a training split: each rank its shard, reshuffled per epoch.

    Patches of unequal ``dataset.weights`` (the manifest's ``weight`` column):
    :class:`WeightedSampler`; otherwise every patch once per epoch
    (:class:`~torch.utils.data.DistributedSampler`, ``drop_last``).
    """
    weights = getattr(dataset, "weights", None)
    if weights is not None and len(set(weights.tolist())) > 1:
        return WeightedSampler(weights, num_replicas, rank, seed)
    return torch.utils.data.DistributedSampler(
        dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
