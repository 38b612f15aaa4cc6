"""What the commands that read class maps share: ``evaluate``, ``stats``, ``vectorize``.

The ``MAP`` argument (local files, VRTs, GDAL virtual paths and URLs), the ``--aoi``
and ``--overwrite`` options, the legends that ``--task`` of ``stats`` and
``vectorize`` can name for a map without an ``ALOSMAP_TASK`` tag, and the check of
``-o`` paths made before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap._fileio import check_not_input, check_output_place, check_overwrite
from alosmap.cli.options import input_file


class Legend(str, Enum):
    """Codes of a map without an ``ALOSMAP_TASK`` tag."""

    lulc = "lulc"
    water = "water"
    jaxa = "jaxa"


def map_argument(help: str, metavar: str = "MAP", what: str = "map") -> Any:
    """A class-map argument with the command's ``help``.

    An existing local file (missing or unreadable: one error line, exit 1), a VRT,
    a GDAL virtual path (``/vsizip/``, ``/vsicurl/``, ``/vsis3/``) or a URL
    (``https://``, ``s3://``; passed on as a string).

    Args:
        help: the help text.
        metavar: the name in the usage line (``MAP``, ``REFERENCE``).
        what: what the file is, for messages.
    """
    return typer.Argument(metavar=metavar, parser=input_file(what), help=help)


AoiOpt = Annotated[
    Path | None,
    typer.Option(
        "--aoi",
        parser=input_file("AOI file", virtual=False),
        help="Polygons (GeoJSON in WGS 84; .gpkg/.shp with alosmap\\[vector]): only "
        "pixels whose centre is inside count.",
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files.")
]


def check_outputs(
    paths: list[Path],
    suffixes: tuple[str, ...],
    overwrite: bool,
    inputs: Sequence[Path | str | None] = (),
) -> list[Path]:
    """Validate output paths before any work: suffix, duplicates, directory, exists.

    An output that is one of ``inputs`` (same file, link) is refused whatever
    ``overwrite`` says.

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
        check_output_place(p)
        check_overwrite([p], overwrite)
    check_not_input(paths, [i for i in inputs if i is not None])
    return paths
