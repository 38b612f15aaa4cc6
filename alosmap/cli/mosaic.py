"""``alosmap mosaic``: per-scene maps onto the JAXA 1° grid."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common
from alosmap.cli import options as opt


class Grid(str, Enum):
    """Target grid of the mosaic."""

    jaxa = "jaxa"


class Merge(str, Enum):
    """How overlapping maps are resolved."""

    confidence = "confidence"
    latest = "latest"
    first = "first"


def mosaic(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            parser=opt.existing_path("input"),
            show_default=False,
            metavar="INPUT",
            help="Batch output directories and/or map files (alosmap maps only).",
        ),
    ],
    output: Annotated[
        Path,
        opt.output_option(
            "Directory for the cell COGs and the VRT (created if missing).",
            directory=True,
            show_default=False,
        ),
    ] = ...,  # type: ignore[assignment]
    grid: Annotated[
        Grid,
        typer.Option(
            help="jaxa: JAXA's LULC grid, EPSG:4326, 1°×1° cells of 12000×12000 "
            "pixels (1/12000°), named by the south-west corner (LC_N35E139.tif)."
        ),
    ] = Grid.jaxa,
    merge: Annotated[
        Merge,
        typer.Option(
            help="Where maps overlap: confidence = the most confident pixel (ties: "
            "the later scene; reads each map's <map>_confidence.tif), latest / "
            "first = by acquisition date."
        ),
    ] = Merge.confidence,
    task: Annotated[
        str | None,
        typer.Option(
            metavar="TASK",
            help="Mosaic only maps of this task: lulc, water or the legend name of "
            "a model trained with its own (needed when the inputs hold maps of "
            "several).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing cells and VRT.")
    ] = False,
    co: opt.CreationOpt = None,
    as_json: _common.JsonOpt = False,
) -> None:
    """Mosaic per-scene maps onto the JAXA 1° grid: one COG per cell plus a VRT.

    Each map is reprojected from its own CRS (nearest neighbour) so that the cells
    line up pixel for pixel with JAXA's LULC tiles. Cells are named like JAXA's
    (LC_N35E139.tif; WATER_N35E139.tif for water maps, FLOOD_N35E139.tif for maps
    of a model with its own legend "flood"); lulc.vrt (water.vrt, flood.vrt) covers
    them all, and each gets a QGIS style (.qml). Maps of different legends are
    never mixed. With confidence, each cell gets
    <cell>_confidence.tif and lulc_confidence.vrt covers them. Pixels no map covers
    stay no data. Prints the files written, one per line (--json: one JSON
    document).
    """
    from alosmap.io.cog_options import creation_options
    from alosmap.national.mosaic import mosaic_maps

    with _common.json_document("mosaic", as_json) as doc, creation_options(co):
        res = mosaic_maps(
            inputs,
            output,
            merge=merge.value,
            task=task,
            overwrite=overwrite,
            progress=_common.show_progress(),
        )
        _common.info_line(
            f"mosaic: {len(res.maps)} {res.task} maps -> {len(res.cells)} cell(s) "
            f"(merge {res.merge}) in {res.seconds:.1f} s"
        )
        doc.update(
            outputs=res.files,
            cells=res.cells,
            vrt=res.vrt,
            confidence=res.confidence,
            confidence_vrt=res.confidence_vrt,
            maps=[m.path for m in res.maps],
            task=res.task,
            merge=res.merge,
            seconds=res.seconds,
            valid_pixels=res.valid_pixels,
        )
    # cells, VRT, then their confidence files and VRT
    _common.echo_paths(res.files, as_json)
