"""Shared CLI state and helpers: verbosity, logging, messages on stderr."""

from __future__ import annotations

import logging
import sys

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
