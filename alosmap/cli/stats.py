"""``alosmap stats``: area per class of a map in km², optionally inside an AOI."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common
from alosmap.cli._maps import (
    AoiOpt,
    Legend,
    OverwriteOpt,
    check_outputs,
    map_argument,
)
from alosmap.cli.options import output_option


class Format(str, Enum):
    """Output format."""

    table = "table"
    csv = "csv"
    json = "json"


MapArg = Annotated[
    Path,
    map_argument(
        "Class map of alosmap (LULC, water or a model's own legend), or a JAXA "
        "HRLULC tile (--task jaxa)."
    ),
]


def stats(
    map_path: MapArg,
    aoi: AoiOpt = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            "-f",
            help="table, csv or json. Default: from the -o suffix, else table.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        output_option("Write to this file (.csv, .json, .txt) instead of stdout."),
    ] = None,
    task: Annotated[
        Legend | None,
        typer.Option(
            help="Codes of a map without the ALOSMAP_TASK tag: lulc, water, or "
            "jaxa (JAXA's 14 classes)."
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    as_json: _common.JsonOpt = False,
) -> None:
    """Area per class in km² (and % of the mapped area); no data excluded.

    Pixel areas are exact: per row on the ellipsoid for lon/lat grids
    (pixels shrink towards the poles), |det(transform)| in m² for
    projected grids. With --aoi, pixels whose centre is inside count.
    --json: one JSON document (the figures of --format json, the file
    written by -o, warnings) whatever the format of -o.
    """
    from alosmap.national.stats import class_areas

    if output is not None:
        from alosmap._fileio import check_not_input

        check_not_input([output], [map_path, *([aoi] if aoi else [])])
        check_outputs([output], (".csv", ".json", ".txt"), overwrite)
    chosen = fmt.value if fmt else None
    if chosen is None and output is not None:
        chosen = {".csv": "csv", ".json": "json"}.get(output.suffix.lower())
    chosen = chosen or "table"
    with _common.json_document("stats", as_json) as doc:
        result = class_areas(map_path, legend=task.value if task else None, aoi=aoi)
        doc.update(result.to_dict(), outputs=[output] if output else [])
        if chosen == "csv":
            text = result.to_csv()
        elif chosen == "json":
            text = result.to_json()
        else:
            text = result.format_table() + "\n"
        if output is not None:
            from alosmap._fileio import atomic_write_bytes

            atomic_write_bytes(output, text.encode("utf-8"))
            _common.info_line(
                f"wrote {output}: {result.mapped_m2 / 1e6:.4f} km² mapped in "
                f"{len(result.classes)} classes"
            )
    if as_json:
        return
    typer.echo(str(output) if output is not None else text, nl=output is not None)
