"""``alosmap synth``: write synthetic ALOS-2 HH scenes and JAXA-style label tiles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common
from alosmap.cli.options import OverwriteOpt

app = typer.Typer(
    help=(
        "Synthetic ALOS-2 PALSAR-2 L2.1 HH scenes (uint16 DN on UTM) with JAXA-style "
        "LULC label tiles, for tests, demos and trying the pipeline end to end. "
        "The data are simulated, not real ALOS-2 or JAXA products."
    ),
    no_args_is_help=True,
)


def _check_date(value: str) -> str:
    """Accept YYYY-MM-DD or an ISO datetime; reject anything else (exit code 2)."""
    text = value.strip()
    try:
        if "T" in text or " " in text:
            dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        else:
            dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date; use YYYY-MM-DD, e.g. 2022-09-12"
        ) from None
    return text


def _check_heading(value: float) -> float:
    """The swath may tilt at most 30° from north-south (ALOS-2: ~190° or ~350°)."""
    tilt = abs((value + 90.0) % 180.0 - 90.0)
    if tilt > 30.0:
        raise typer.BadParameter(
            f"heading {value}° tilts the swath {tilt:.0f}° from north-south; "
            "use about 190 (descending) or 350 (ascending)"
        )
    return value


SeedOpt = Annotated[
    int,
    typer.Option(min=0, help="Random seed; the same options give identical files."),
]
SizeOpt = Annotated[
    int,
    typer.Option(min=16, max=16384, help="Scene width and height in pixels (square)."),
]
PixelSizeOpt = Annotated[
    float,
    typer.Option(
        min=0.5, max=100.0, help="Pixel size in metres (ALOS-2 L2.1: 3-10 m)."
    ),
]
LonOpt = Annotated[
    float,
    typer.Option(
        min=-180.0,
        max=179.999,
        help="Scene centre longitude in degrees (picks the UTM zone).",
    ),
]
LatOpt = Annotated[
    float,
    typer.Option(
        min=-80.0, max=84.0, help="Scene centre latitude in degrees (UTM range)."
    ),
]
DateOpt = Annotated[
    str,
    typer.Option(
        callback=_check_date,
        help="Acquisition date YYYY-MM-DD (UTC) or ISO datetime; sets the file "
        "name, the ACQUISITION_DATE tag and the paddy season.",
    ),
]
HeadingOpt = Annotated[
    float,
    typer.Option(
        callback=_check_heading,
        help="Track heading in degrees clockwise from north: about 190 for a "
        "descending pass, 350 for an ascending one (tilts the swath footprint).",
    ),
]
SceneLabelsOpt = Annotated[
    bool,
    typer.Option(
        "--scene-labels/--no-scene-labels",
        help="Also write the labels resampled onto the scene grid (LC-*.tif).",
    ),
]


@app.command("scene")
def scene(
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR",
            file_okay=False,
            help="Output directory (created if needed).",
        ),
    ],
    seed: SeedOpt = 0,
    size: SizeOpt = 1024,
    pixel_size: PixelSizeOpt = 8.0,
    lon: LonOpt = 139.45,
    lat: LatOpt = 35.30,
    date: DateOpt = "2022-09-12",
    heading: HeadingOpt = 190.0,
    scene_labels: SceneLabelsOpt = False,
    overwrite: OverwriteOpt = False,
    as_json: _common.JsonOpt = False,
) -> None:
    """Write one synthetic HH scene and the JAXA-style label tile(s) it lies in.

    The scene is named like an ALOS-2 L2.1 product
    (IMG-HH-ALOS2<orbit><frame>-<YYMMDD>-UBSR2.1GU<A|D>.tif); the labels are
    1°×1° tiles LC_N<lat>E<lon>.tif on EPSG:4326. Paths written go to stdout
    (--json: one JSON document).
    """
    from alosmap.synthetic import generate_scene

    _common.check_output_dir(out_dir, create=True)
    with _common.json_document("synth scene", as_json) as doc:
        result = generate_scene(
            out_dir,
            seed=seed,
            width=size,
            pixel_size=pixel_size,
            center_lon=lon,
            center_lat=lat,
            date=date,
            heading_deg=heading,
            write_scene_labels=scene_labels,
            overwrite=overwrite,
        )
        labels = [result.scene_labels] if result.scene_labels is not None else []
        files = [result.path, *result.label_tiles, *labels]
        doc.update(
            outputs=files,
            scene=result.path,
            label_tiles=result.label_tiles,
            scene_labels=result.scene_labels,
        )
    _common.echo_paths(files, as_json)


@app.command("sample-data")
def sample_data(
    out_dir: Annotated[
        Path,
        typer.Argument(
            metavar="OUT_DIR",
            file_okay=False,
            help="Output directory, e.g. sample_data (created if needed).",
        ),
    ],
    overwrite: OverwriteOpt = False,
    as_json: _common.JsonOpt = False,
) -> None:
    """Regenerate the repository's sample_data/ (three scenes, one tile, SHA256SUMS).

    The files are byte-identical to the committed ones when the same versions of
    numpy, scipy and GDAL are used. Other files in OUT_DIR are left alone.
    Paths written go to stdout (--json: one JSON document).
    """
    from alosmap.synthetic import make_sample_data

    _common.check_output_dir(out_dir, create=True)
    with _common.json_document("synth sample-data", as_json) as doc:
        files = make_sample_data(out_dir, overwrite=overwrite)
        doc.update(outputs=files)
    _common.echo_paths(files, as_json)
