"""``alosmap evaluate``: accuracy of a map against a JAXA LULC reference."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common

#: Report suffixes of ``-o``.
REPORT_SUFFIXES = (".json", ".csv", ".png")


class MapTask(str, Enum):
    """Task of a map without an ``ALOSMAP_TASK`` tag."""

    lulc = "lulc"
    water = "water"


class ReferenceLegend(str, Enum):
    """Codes of the reference raster."""

    auto = "auto"
    jaxa = "jaxa"
    lulc = "lulc"
    water = "water"


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
    from alosmap.errors import OutputExistsError, OutputPathError

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
        if p.exists() and not overwrite:
            raise OutputExistsError(
                f"{p} exists; use --overwrite to replace it (it is kept as it is)"
            )
    return paths


def evaluate(
    map_path: Annotated[
        Path,
        typer.Argument(
            metavar="MAP",
            exists=True,
            dir_okay=False,
            help="LULC or water map written by alosmap predict / water.",
        ),
    ],
    reference: Annotated[
        Path,
        typer.Argument(
            metavar="REFERENCE",
            exists=True,
            dir_okay=False,
            help="JAXA HRLULC tile (codes 1-14, remapped to the 9 classes or to "
            "water), or another alosmap map.",
        ),
    ],
    aoi: AoiOpt = None,
    output: Annotated[
        list[Path] | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            metavar="FILE",
            help="Also write the report: .json (everything), .csv (per-class "
            "metrics and confusion matrix), .png (confusion matrix; needs "
            "alosmap\\[plot]). Repeat for several.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of tables.")
    ] = False,
    task: Annotated[
        MapTask | None,
        typer.Option(help="Task of a map without the ALOSMAP_TASK tag."),
    ] = None,
    reference_legend: Annotated[
        ReferenceLegend,
        typer.Option(
            help="Codes of the reference: auto = its ALOSMAP_TASK tag, else JAXA."
        ),
    ] = ReferenceLegend.auto,
    overwrite: OverwriteOpt = False,
) -> None:
    """Compare a map with a reference: confusion matrix, mIoU or IoU_water.

    The reference is resampled onto the map's grid (nearest neighbour).
    Pixels without data in either raster, or outside the AOI, are not
    counted. LULC: per-class IoU and accuracy, mIoU, mAcc (paper Table
    II); water: IoU_water, precision, recall (Table III), on stdout.
    """
    from alosmap.national.evaluate import evaluate_map, format_report, report_csv

    outputs = check_outputs(list(output or []), REPORT_SUFFIXES, overwrite)
    if any(p.suffix.lower() == ".png" for p in outputs):
        from alosmap._imports import lazy_import

        lazy_import("matplotlib")
    report = evaluate_map(
        map_path,
        reference,
        task=task.value if task else None,
        reference_legend=reference_legend.value,
        aoi=aoi,
    )
    from alosmap._fileio import atomic_write_bytes
    from alosmap.report import plot_confusion

    for p in outputs:
        suffix = p.suffix.lower()
        if suffix == ".json":
            text = json.dumps(report, indent=2) + "\n"
            atomic_write_bytes(p, text.encode("utf-8"))
        elif suffix == ".csv":
            atomic_write_bytes(p, report_csv(report).encode("utf-8"))
        else:
            plot_confusion(
                report["confusion_matrix"],
                report["classes"],
                p,
                title=f"{map_path.name} vs {reference.name} (row %)",
            )
        _common.info_line(f"wrote {p}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_report(report))
