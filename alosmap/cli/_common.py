"""Shared CLI state and helpers: verbosity, logging, messages, output checks."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: Verbosity set by the global ``-v/-q`` options (0 = warnings, <0 = quiet).
VERBOSITY = 0


def configure_logging(verbosity: int) -> None:
    """Map ``-v``/``-q`` counts to a log level on stderr (``max(10, 30 - 10·v)``)."""
    global VERBOSITY
    VERBOSITY = verbosity
    level = logging.ERROR if verbosity < 0 else max(10, 30 - 10 * verbosity)
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)


def quiet() -> bool:
    """True when ``-q`` was given: no progress bars, no chatter."""
    return VERBOSITY < 0


def show_progress() -> bool:
    """Whether long work should draw a progress bar on stderr."""
    return not quiet()


def error_line(message: str) -> None:
    """Print ``alosmap: error: message`` as one red line on stderr."""
    text = " ".join(str(message).split())
    if sys.stderr.isatty():
        text = f"\x1b[31m{text}\x1b[0m"
    print(f"alosmap: error: {text}", file=sys.stderr)


def info_line(message: str) -> None:
    """Print a status line on stderr unless quiet."""
    if not quiet():
        print(message, file=sys.stderr)


def check_output_dir(path: Path, *, create: bool) -> None:
    """Check, before any work, that an output directory can be written (or made).

    Args:
        path: the output directory.
        create: whether the command creates missing directories (then the nearest
            existing ancestor must be a writable directory), else its parent must
            exist.

    Raises:
        OutputPathError: ``path`` is a file, or the place is missing or not
            writable.
    """
    from alosmap.errors import OutputPathError

    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"output directory {path} is a file")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"output directory {path} is not writable")
        return
    if not create:
        from alosmap._fileio import check_output_place

        check_output_place(path)
        return
    base = path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputPathError(
            f"cannot create output directory {path}: {base} is not a directory"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot create output directory {path}: {base} is not writable"
        )
