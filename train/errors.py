"""The errors of training: datasets, checkpoints, runs.

Each is an :class:`~alosmap.errors.AlosmapError` (the CLI prints its message and
exits 1) and a :class:`ValueError` (bad input, for Python callers).
"""

from __future__ import annotations

from alosmap.errors import AlosmapError

__all__ = [
    "CheckpointError",
    "DatasetBuildError",
    "DatasetFormatError",
    "TrainingError",
]


class DatasetFormatError(AlosmapError, ValueError):
    """A directory that is not an alosmap dataset, or of another format version."""


class DatasetBuildError(AlosmapError, ValueError):
    """Bad build parameters, or inputs that give no usable dataset."""


class CheckpointError(AlosmapError, ValueError):
    """A checkpoint that cannot be used: wrong kind, unsafe, or another shape."""


class TrainingError(AlosmapError, ValueError):
    """Training cannot start or go on (bad option for this data, diverged loss)."""
