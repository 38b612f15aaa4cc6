"""Progress: a bar on a terminal only; log lines every 10 % at -v otherwise."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from alosmap._progress import progress_bar


def _no_bar(text: str) -> bool:
    """No tqdm output (other tests' stale log handlers may still write here)."""
    return "\r" not in text and "tile/s" not in text and "it/s" not in text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(total=50, **kw):
    with progress_bar(total, "mapping", unit="tile", **kw) as bar:
        for _ in range(total):
            bar.update(1)
            bar.set_postfix(loss="0.1")


def test_no_carriage_returns_when_stderr_is_not_a_terminal(monkeypatch, caplog):
    err = io.StringIO()  # a log file
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with caplog.at_level(logging.WARNING):
        _run()
    assert _no_bar(err.getvalue()) and not caplog.records
    # -v: one INFO line every 10 %, still no carriage return
    with caplog.at_level(logging.INFO):
        _run(total=1000)
    assert "\r" not in err.getvalue()
    lines = [r.getMessage() for r in caplog.records if r.name == "alosmap.progress"]
    assert len(lines) == 10
    assert lines[0].startswith("mapping: 10 % (100/1000 tile")
    assert lines[-1].startswith("mapping: 100 % (1000/1000 tile")


def test_a_terminal_gets_a_bar_unless_tqdm_disable(monkeypatch, caplog):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    _run()
    assert "\r" in tty.getvalue() and "mapping" in tty.getvalue()
    tty2 = _Tty()
    monkeypatch.setattr(sys, "stderr", tty2)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with caplog.at_level(logging.INFO):
        _run(total=20)
    assert _no_bar(tty2.getvalue())
    assert len([r for r in caplog.records if r.name == "alosmap.progress"]) == 10


@pytest.mark.parametrize("stream", [_Tty, io.StringIO])
def test_disabled_draws_and_logs_nothing(monkeypatch, caplog, stream):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    with caplog.at_level(logging.DEBUG):
        _run(enabled=False)
    assert _no_bar(err.getvalue()) and not caplog.records


def test_unknown_total_logs_once_at_the_end(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO), progress_bar(None, "scenes", unit="scene") as b:
        b.update(3)
    assert [r.getMessage() for r in caplog.records] == ["scenes: done (3 scene)"]
