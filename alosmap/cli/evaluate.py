"""``alosmap evaluate``: accuracy of a map against a reference (JAXA tile, labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap.cli import _common
from alosmap.cli._maps import (
    AoiOpt,
    OverwriteOpt,
    check_outputs,
    map_argument,
)
from alosmap.cli.options import Task, input_file, output_option

#: Report suffixes of ``-o``.
REPORT_SUFFIXES = (".json", ".csv", ".png")


MapArg = Annotated[
    Path,
    map_argument(
        "Map written by alosmap predict / water / batch (LULC, water or a model's "
        "own legend)."
    ),
]


def evaluate(
    map_path: MapArg,
    reference: Annotated[
        Path,
        typer.Argument(
            metavar="REFERENCE",
            parser=input_file("reference"),
            help="JAXA HRLULC tile (codes 1-14, remapped to the 9 classes or to "
            "water), another alosmap map, or a label raster (--reference-legend).",
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
    as_json: _common.JsonOpt = False,
    task: Annotated[
        Task | None,
        typer.Option(help="Task of a map without the ALOSMAP_TASK tag."),
    ] = None,
    reference_legend: Annotated[
        str,
        typer.Option(
            metavar="LEGEND",
            help="How to read the reference: auto = its alosmap tags, else a JAXA "
            "tile (LULC and water maps only; a raster of only 0/1 values is "
            "refused); jaxa, lulc, water = their map codes; jaxa-lulc9, "
            "jaxa-water, water-binary (0/1, 255 = no data) = label presets; or a "
            "legend FILE (YAML/JSON, e.g. the one the model was trained with): "
            "the reference holds its label values.",
        ),
    ] = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Compare a map with a reference: confusion matrix, mIoU or IoU_water.

    The reference is resampled onto the map's grid (nearest neighbour).
    Pixels without data in either raster, or outside the AOI, are not
    counted. LULC (any multi-class legend): per-class IoU and accuracy, mIoU,
    mAcc (paper Table II; means over the classes present in the reference,
    absent ones marked *); water (any binary legend): IoU of the positive
    class, precision, recall (Table III), on stdout (--json: the report as one
    JSON document, with the files written and warnings).
    """
    from alosmap.national.evaluate import evaluate_map, format_report

    legend_file = Path(reference_legend)
    inputs = [map_path, reference, aoi, legend_file if legend_file.is_file() else None]
    outputs = check_outputs(list(output or []), REPORT_SUFFIXES, overwrite, inputs)
    if any(p.suffix.lower() == ".png" for p in outputs):
        from alosmap._imports import lazy_import

        lazy_import("matplotlib")
    with _common.json_document("evaluate", as_json) as doc:
        report = evaluate_map(
            map_path,
            reference,
            task=task.value if task else None,
            reference_legend=reference_legend,
            aoi=aoi,
        )
        _write_reports(
            outputs,
            report,
            title=f"{Path(map_path).name} vs {Path(reference).name} (row %)",
        )
        doc.update(report, outputs=outputs)
    if not as_json:
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
