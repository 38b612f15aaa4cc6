"""``alosmap vectorize``: water (or any class) polygons of a map."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common
from alosmap.cli._maps import Legend, OverwriteOpt, map_argument, output_option


class OutCrs(str, Enum):
    """CRS of the output coordinates."""

    auto = "auto"
    wgs84 = "wgs84"
    map = "map"


MapArg = Annotated[
    Path,
    map_argument(
        "Water map of alosmap water (or a LULC map, a map of a model with its own "
        "legend, or a JAXA tile)."
    ),
]


def vectorize(
    map_path: MapArg,
    output: Annotated[
        Path | None,
        output_option(
            "Polygons to write: .geojson or .gpkg (needs alosmap\\[vector]). "
            "Default: <map>.geojson here."
        ),
    ] = None,
    min_area: Annotated[
        float,
        typer.Option(
            "--min-area",
            min=0.0,
            help="Drop polygons smaller than this many m² (their pixels' area; "
            "holes are kept).",
        ),
    ] = 0.0,
    simplify: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Simplify outlines with this tolerance in pixels (0 = exact pixel "
            "edges; 1 = one pixel).",
        ),
    ] = 0.0,
    crs: Annotated[
        OutCrs,
        typer.Option(
            "--crs",
            help="Output coordinates: wgs84 (lon/lat), map (the map's CRS; in GeoJSON "
            "a non-standard 'crs' member names it), auto = wgs84 for GeoJSON, map "
            "for GeoPackage.",
        ),
    ] = OutCrs.auto,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="Class to trace, by name or code. Default: the positive class of "
            "a binary legend (Water of a water map), else the water class.",
        ),
    ] = None,
    task: Annotated[
        Legend | None,
        typer.Option(help="Codes of a map without the ALOSMAP_TASK tag."),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Polygons of the water pixels of a map, as GeoJSON or GeoPackage.

    Whole polygons (no tiling seams), valid geometries, with id, class,
    code and area_m2 per feature. GeoJSON is WGS 84 lon/lat (RFC 7946)
    unless --crs map.
    """
    from alosmap.io.raster import raster_stem
    from alosmap.national.vectorize import vectorize_map

    out = output if output is not None else Path(f"{raster_stem(map_path)}.geojson")
    res = vectorize_map(
        map_path,
        out,
        legend=task.value if task else None,
        class_=class_,
        min_area_m2=min_area,
        simplify=simplify,
        crs=crs.value,
        overwrite=overwrite,
    )
    dropped = f" ({res.dropped} under {min_area:g} m² dropped)" if res.dropped else ""
    _common.info_line(
        f"{res.path.name}: {res.polygons} polygons{dropped}, "
        f"{res.area_m2 / 1e6:.4f} km²; CRS {res.crs or 'none'}"
    )
    typer.echo(str(res.path))
