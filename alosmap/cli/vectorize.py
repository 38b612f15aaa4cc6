"""``alosmap vectorize``: placeholder being written in this session (issue 7)."""

from __future__ import annotations

import typer


def vectorize() -> None:
    """Not yet available (issue 7, in progress)."""
    raise typer.Exit(1)
