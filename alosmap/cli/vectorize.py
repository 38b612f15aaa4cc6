"""``alosmap vectorize``: water (or any class) polygons of a map."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common
from alosmap.cli._maps import Legend, OverwriteOpt, map_argument
from alosmap.cli.options import output_option


def _out_crs(text: str) -> str:
    """``--crs``: auto, map, wgs84 or a CRS rasterio reads; else a usage error."""
    value = text.strip()
    if value.lower() in ("auto", "map", "wgs84"):
        return value.lower()
    from alosmap.national.vectorize import output_crs

    try:
        output_crs(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--crs {text!r}: ")) from None
    return value


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
        str,
        typer.Option(
            "--crs",
            parser=_out_crs,
            metavar="CRS",
            help="CRS of the output. auto (default): GeoJSON in WGS 84 lon/lat "
            "(RFC 7946), GeoPackage in the map's CRS. Else wgs84, map (the map's "
            "CRS) or any CRS (EPSG:3857, WKT); GeoJSON not in WGS 84 names its CRS "
            "in a legacy 'crs' member (GDAL and QGIS read it).",
        ),
    ] = "auto",
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
    as_json: _common.JsonOpt = False,
) -> None:
    """Polygons of the water pixels of a map, as GeoJSON or GeoPackage.

    Whole polygons (no tiling seams), valid Polygon geometries (never
    MultiPolygon), with id, class, code and area_m2 per feature. GeoJSON is
    WGS 84 lon/lat (RFC 7946), GeoPackage the map's CRS, unless --crs. Prints
    the file written (--json: one JSON document).
    """
    from alosmap.io.raster import raster_stem
    from alosmap.national.vectorize import vectorize_map

    out = output if output is not None else Path(f"{raster_stem(map_path)}.geojson")
    with _common.json_document("vectorize", as_json) as doc:
        res = vectorize_map(
            map_path,
            out,
            legend=task.value if task else None,
            class_=class_,
            min_area_m2=min_area,
            simplify=simplify,
            crs=crs,
            overwrite=overwrite,
        )
        dropped = f" ({res.dropped} under {min_area:g} m² dropped)"
        dropped = dropped if res.dropped else ""
        _common.info_line(
            f"{res.path.name}: {res.polygons} polygons{dropped}, "
            f"{res.area_m2 / 1e6:.4f} km²; CRS {res.crs or 'none'}"
        )
        doc.update(
            map=str(map_path),
            outputs=[res.path],
            output=res.path,
            polygons=res.polygons,
            dropped=res.dropped,
            area_m2=res.area_m2,
            crs=res.crs,
        )
    _common.echo_paths([res.path], as_json)
