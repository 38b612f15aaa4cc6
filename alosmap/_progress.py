"""Progress reporting that suits where stderr goes: a bar, log lines or nothing.

:func:`progress_bar` returns an object with tqdm's small interface (``update``,
``set_postfix``, ``set_description``, ``close``, context manager), whatever it
draws:

* stderr is a terminal and ``TQDM_DISABLE`` is not set: a tqdm bar on stderr;
* otherwise (a log file, a pipe, CI, or ``TQDM_DISABLE=1``): no carriage returns at
  all; when the ``alosmap`` logger is at INFO or lower (``-v``), one log line every
  10 % (``desc: 40 % (400/1000 tiles, 12 s)``), else nothing;
* ``enabled=False`` (``-q``, a non-primary DDP rank): nothing.

A 12000² scene written to a log file thus gives at most ten lines instead of
hundreds of bar redraws.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["LOG_STEP_PERCENT", "Progress", "progress_bar"]

#: a log line every this many percent when no bar is drawn.
LOG_STEP_PERCENT = 10

_logger = logging.getLogger("alosmap.progress")


class Progress:
    """No-op progress: the interface of every object :func:`progress_bar` returns."""

    n: int = 0
    total: int | None = None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Extra figures shown after the bar (ignored without a bar)."""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the text before the bar."""

    def close(self) -> None:
        """Finish (the bar is removed)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _LogProgress(Progress):
    """One INFO log line each time another :data:`LOG_STEP_PERCENT` % is done."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self._next = LOG_STEP_PERCENT
        self._t0 = time.monotonic()
        self._closed = False

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Use ``desc`` in the next lines."""
        if desc is not None:
            self.desc = desc

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; log when a 10 % step is crossed."""
        self.n += n
        if not self.total or self.total <= 0:
            return
        pct = 100.0 * self.n / self.total
        if pct >= self._next:
            while self._next <= pct:
                self._next += LOG_STEP_PERCENT
            self._line(min(100, int(pct)))

    def _line(self, pct: int) -> None:
        secs = time.monotonic() - self._t0
        _logger.info(
            "%s: %d %% (%d/%d %s, %.0f s)",
            self.desc,
            pct,
            self.n,
            self.total or 0,
            self.unit,
            secs,
        )

    def close(self) -> None:
        """Without a total, one line saying how much was done."""
        if not self._closed and not self.total and self.n:
            _logger.info("%s: done (%d %s)", self.desc, self.n, self.unit)
        self._closed = True


class _TqdmProgress(Progress):
    """A tqdm bar (on a terminal)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self.total = bar.total
        self.n = 0

    def update(self, n: int = 1) -> None:
        """Advance the bar."""
        self.n += n
        self._bar.update(n)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Figures after the bar, as tqdm's ``set_postfix``."""
        self._bar.set_postfix(*args, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Text before the bar."""
        self._bar.set_description(desc, refresh=refresh)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()


def _env_disabled() -> bool:
    """``TQDM_DISABLE`` set to anything but an empty string, ``0`` or ``false``."""
    value = os.environ.get("TQDM_DISABLE", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress_bar(
    total: int | None,
    desc: str,
    enabled: bool = True,
    *,
    unit: str = "it",
    leave: bool = False,
) -> Progress:
    """Progress for ``total`` units of work, drawn as suits stderr (module docs).

    Args:
        total: units of work (None when unknown: no percentages, one line at the
            end when logging).
        desc: what is being done (text before the bar, start of each log line).
        enabled: False for no progress at all (``-q``, non-primary processes).
        unit: name of a unit (``tile``, ``batch``, ``scene``).
        leave: keep the finished bar on the terminal.

    Returns:
        An object with ``update(n)``, ``set_postfix(...)``, ``set_description``,
        ``close()`` and the context-manager protocol.
    """
    if not enabled:
        return Progress()
    stream = sys.stderr
    if _isatty(stream) and not _env_disabled():
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            leave=leave,
            file=stream,
            dynamic_ncols=True,
        )
        return _TqdmProgress(bar)
    if _logger.isEnabledFor(logging.INFO):
        return _LogProgress(total, desc, unit)
    return Progress()
