"""``alosmap evaluate``: accuracy of a map against a JAXA LULC reference."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap.cli import _common
from alosmap.cli._maps import (
    AoiOpt,
    OverwriteOpt,
    check_outputs,
    map_argument,
    output_option,
)
from alosmap.cli.options import Task, input_file

#: Report suffixes of ``-o``.
REPORT_SUFFIXES = (".json", ".csv", ".png")


class ReferenceLegend(str, Enum):
    """Codes of the reference raster."""

    auto = "auto"
    jaxa = "jaxa"
    lulc = "lulc"
    water = "water"


MapArg = Annotated[
    Path, map_argument("LULC or water map written by alosmap predict / water.")
]


def evaluate(
    map_path: MapArg,
    reference: Annotated[
        Path,
        typer.Argument(
            metavar="REFERENCE",
            parser=input_file("reference"),
            help="JAXA HRLULC tile (codes 1-14, remapped to the 9 classes or to "
            "water), or another alosmap map.",
        ),
    ],
    aoi: AoiOpt = None,
    output: Annotated[
        list[Path] | None,
        output_option(
            "Also write the report: .json (everything), .csv (per-class "
            "metrics and confusion matrix), .png (confusion matrix; needs "
            "alosmap\\[plot]). Repeat for several.",
            metavar="FILE",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of tables.")
    ] = False,
    task: Annotated[
        Task | None,
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
    from alosmap.national.evaluate import evaluate_map, format_report

    outputs = check_outputs(
        list(output or []), REPORT_SUFFIXES, overwrite, [map_path, reference, aoi]
    )
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
    _write_reports(
        outputs,
        report,
        title=f"{Path(map_path).name} vs {Path(reference).name} (row %)",
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_report(report))


def _write_reports(outputs: list[Path], report: dict[str, Any], title: str) -> None:
    """Write the report to each ``-o`` file, by suffix (``.json``, ``.csv``, ``.png``).

    Args:
        outputs: the files (already checked by :func:`check_outputs`).
        report: the report of :func:`alosmap.national.evaluate.evaluate_map`.
        title: title of the confusion-matrix plot.
    """
    from alosmap._fileio import atomic_write_bytes
    from alosmap.national.evaluate import report_csv
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
                report["confusion_matrix"], report["classes"], p, title=title
            )
        _common.info_line(f"wrote {p}")
