"""The torchrun environment: rank, world size and local rank of this process.

``torchrun --nproc_per_node N`` (or SLURM through it) sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; without them the process is rank 0 of 1. Batch mapping shards its
scene list by these, training joins a process group with them; both read them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from alosmap.errors import AlosmapError


class DistEnvError(AlosmapError, ValueError):
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment are not valid."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job (defaults: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        """True on rank 0, the only rank that logs and writes shared files."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (defaults 0, 1, 0).

    Raises:
        DistEnvError: for values that are not integers or a rank outside the world.
    """
    env = os.environ
    try:
        rank = int(env.get("RANK", "0"))
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise DistEnvError(
            f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}"
        ) from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistEnvError(
            f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world}) "
            f"or LOCAL_RANK={local} < 0"
        )
    return DistInfo(rank, world, local)
