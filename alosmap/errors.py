"""Exceptions and warnings raised by alosmap.

Library code raises these typed errors; only the command-line layer turns them into
exit codes (1 for an :class:`AlosmapError`, 2 for usage errors, 143 for
:class:`Terminated`). Where it helps, an error also derives from the matching builtin
so ``except OSError`` / ``except ValueError`` keeps working.
"""

from __future__ import annotations


class AlosmapError(Exception):
    """Root of every error alosmap raises on purpose."""


class InputRasterError(AlosmapError, OSError):
    """A scene or label raster is missing, unreadable or unusable."""


class ModelFileError(AlosmapError, OSError):
    """A model file is missing, malformed, or not an alosmap model."""


class SpecError(AlosmapError, ValueError):
    """A model spec is invalid; the message names the bad field."""


class SpecMismatchError(AlosmapError, ValueError):
    """A model's spec does not fit the input (bands, units, tile size)."""


class InferenceOptionError(SpecMismatchError):
    """An inference option is out of range or does not fit the model (names it)."""


class OutputExistsError(AlosmapError, FileExistsError):
    """The output exists and ``--overwrite`` was not given."""


class OutputPathError(AlosmapError, OSError):
    """An output path cannot be written (missing or read-only directory, bad suffix)."""


class DiskFullError(OutputPathError):
    """The disk (or quota) filled up while writing an output; nothing was left.

    Attributes:
        directory: the directory written to (its file system is full).
        free: its free bytes when the error was seen (None: unknown).
        needed: bytes the outputs may need at most (None: unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        directory: str | None = None,
        free: int | None = None,
        needed: int | None = None,
    ) -> None:
        super().__init__(message)
        self.directory, self.free, self.needed = directory, free, needed


class BackendUnavailableError(AlosmapError, ImportError):
    """An optional runtime (ONNX Runtime, TensorRT, CUDA) is not installed."""


class BackendOptionError(AlosmapError, ValueError):
    """A runtime option the backend cannot honour (precision, compile, device)."""


class AlosmapWarning(UserWarning):
    """Recoverable data problems (no CRS, odd metadata, …)."""


class AoiError(AlosmapError, ValueError):
    """An area-of-interest file is unreadable, holds no polygons, or misses the map."""


class MosaicInputError(AlosmapError, ValueError):
    """The maps given to ``mosaic`` cannot be mosaicked together as they are."""


class BatchError(AlosmapError):
    """A batch cannot start (bad manifest, clashing outputs, records of another run)."""


class ExportError(AlosmapError, ValueError):
    """A model cannot be exported as asked (bad optimisation profile, unusable ONNX)."""


class ParityError(ExportError):
    """An exported model's output differs from its reference beyond the tolerance."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread of the command-line tool.

    A ``KeyboardInterrupt`` so that every clean-up that Ctrl-C runs runs alike
    (no hidden temporaries are left); the tool then exits with 143.
    """
