"""What the command line asks of the library: validated request objects.

* :class:`RunOptions`: the options every training run has (``pretrain``,
  ``finetune``), with their defaults (this module's and
  :mod:`alosmap.train.defaults`'): the CLI declares them once and passes one
  record on;
* :class:`alosmap.train.dataset.request.BuildRequest`: ``build-dataset``;
* the runs' own configurations: :class:`alosmap.train.finetune.FinetuneConfig`
  (through :func:`~alosmap.train.finetune.make_config`) and
  :class:`alosmap.train.pretrain.PretrainConfig`.

A light module (no torch): ``alosmap train --help`` reads its defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from alosmap.train import defaults
from alosmap.train.errors import TrainingError

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """The options ``pretrain`` and ``finetune`` share.

    Attributes:
        augment: random flips/rot90 of the training patches.
        workers: DataLoader workers per process; None: the default
            (:func:`~alosmap.train.defaults.data_workers`); never more than the
            CPUs the process may use (resolved when the record is made).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA.
        seed: the run's seed.
        resume: continue from the run directory's ``last.pt``.
        stop_after: stop after this many epochs in this call (None: run to the
            end).

    Raises:
        TrainingError: a negative ``workers`` or a ``stop_after`` below 1.
    """

    augment: bool = True
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = True
    stop_after: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise TrainingError(f"--workers {self.workers}: must be ≥ 0")
        if self.stop_after is not None and self.stop_after < 1:
            raise TrainingError(f"--stop-after {self.stop_after}: must be ≥ 1")
        object.__setattr__(self, "workers", defaults.data_workers(self.workers))

    def options(self) -> dict[str, Any]:
        """As the keyword options of ``pretrain`` / ``finetune``."""
        return asdict(self)
