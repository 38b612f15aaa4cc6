"""What the commands that read class maps share: ``evaluate``, ``stats``, ``vectorize``.

The ``MAP`` argument, the ``--aoi`` and ``--overwrite`` options, the legends that
``--task`` of ``stats`` and ``vectorize`` can name for a map without an
``ALOSMAP_TASK`` tag, and the check of ``-o`` paths made before any work.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap._fileio import check_overwrite
from alosmap.errors import OutputPathError


class Legend(str, Enum):
    """Codes of a map without an ``ALOSMAP_TASK`` tag."""

    lulc = "lulc"
    water = "water"
    jaxa = "jaxa"


def map_argument(help: str) -> Any:
    """The ``MAP`` argument (an existing file) with the command's ``help``."""
    return typer.Argument(metavar="MAP", exists=True, dir_okay=False, help=help)


def output_option(help: str, **extra: Any) -> Any:
    """The ``-o/--output`` option (a file, not a directory) with ``help``."""
    return typer.Option("--output", "-o", dir_okay=False, help=help, **extra)


AoiOpt = Annotated[
    Path | None,
    typer.Option(
        "--aoi",
        exists=True,
        dir_okay=False,
        help="Polygons (GeoJSON in WGS 84; .gpkg/.shp with alosmap\\[vector]): only "
        "pixels whose centre is inside count.",
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files.")
]


def check_outputs(
    paths: list[Path], suffixes: tuple[str, ...], overwrite: bool
) -> list[Path]:
    """Validate output paths before any work: suffix, duplicates, directory, exists.

    Raises:
        typer.BadParameter: an unknown suffix or a path given twice.
        OutputPathError: the directory does not exist.
        OutputExistsError: a file exists and ``overwrite`` is false.
    """
    seen: set[Path] = set()
    for p in paths:
        if p.suffix.lower() not in suffixes:
            raise typer.BadParameter(
                f"{p}: use a {', '.join(suffixes)} file name", param_hint="-o"
            )
        key = p.resolve()
        if key in seen:
            raise typer.BadParameter(f"{p} given twice", param_hint="-o")
        seen.add(key)
        if not p.parent.is_dir():
            raise OutputPathError(f"output directory {p.parent} does not exist")
        if not os.access(p.parent, os.W_OK):
            raise OutputPathError(f"output directory {p.parent} is not writable")
        check_overwrite([p], overwrite)
    return paths
