"""Shared CLI state and helpers: verbosity, logging, messages, outputs, ``--json``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

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


#: ``--json`` of the commands that make something (``predict``, ``batch``, ...).
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document on stdout (files written, figures, warnings) "
        "instead of the file list; logs and progress stay on stderr.",
    ),
]


class _Collect(logging.Handler):
    """Keep the messages of warning (and higher) log records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


def _plain_json(value: Any) -> Any:
    """What :func:`json.dumps` cannot write: paths, enums, dates, NumPy numbers."""
    import datetime
    import enum

    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.date):
        return value.isoformat()
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@contextlib.contextmanager
def json_document(command: str, enabled: bool) -> Iterator[dict[str, Any]]:
    """The ``--json`` document of ``command``: filled in the block, printed after it.

    The warnings logged during the block (also Python warnings, which
    :func:`configure_logging` routes to the log) go into its ``warnings`` list;
    they are still logged on stderr. When the block raises, nothing is printed
    (the error is one line on stderr, as without ``--json``).

    Args:
        command: the command's name (the document's ``command``).
        enabled: whether ``--json`` was given; else the document is discarded.

    Yields:
        The document (a dict) to fill: paths as :class:`~pathlib.Path` or str,
        figures as numbers.
    """
    doc: dict[str, Any] = {"command": command}
    handler = _Collect()
    root = logging.getLogger()
    level, shown = root.level, [(h, h.level) for h in root.handlers]
    if level > logging.WARNING:  # -q: warnings still reach the document, not stderr
        for h, was in shown:
            h.setLevel(max(was, level))
        root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield doc
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for h, was in shown:
            h.setLevel(was)
    if enabled:
        doc["warnings"] = [*doc.get("warnings", []), *handler.messages]
        print(json.dumps(doc, indent=2, default=_plain_json), file=sys.stdout)


def echo_paths(paths: Iterable[os.PathLike[str] | str], as_json: bool) -> None:
    """Print the files written, one per line on stdout; nothing with ``--json``."""
    if not as_json:
        for path in paths:
            print(os.fspath(path), file=sys.stdout)


def class_counts(
    pixels: Mapping[int, int], names: Mapping[int, str]
) -> list[dict[str, Any]]:
    """``[{code, name, pixels, percent}]`` of a map's class pixel counts, by code.

    ``percent`` is of the pixels with data (None when there are none).
    """
    total = sum(pixels.values())
    return [
        {
            "code": int(code),
            "name": names.get(code, str(code)),
            "pixels": int(n),
            "percent": 100.0 * n / total if total else None,
        }
        for code, n in sorted(pixels.items())
    ]
