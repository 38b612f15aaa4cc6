"""``alosmap predict`` and ``alosmap water``: map a whole scene."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli import _common


class Task(str, Enum):
    """Mapping task."""

    lulc = "lulc"
    water = "water"


class Backend(str, Enum):
    """Inference backend."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    tensorrt = "tensorrt"


class Precision(str, Enum):
    """Compute precision of the model."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Units(str, Enum):
    """Units of the scene's values."""

    auto = "auto"
    dn = "dn"
    db = "db"
    linear = "linear"


SceneArg = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        help="ALOS-2 HH scene (L2.1 GeoTIFF, amplitude DN) or any single-band raster.",
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        exists=True,
        dir_okay=False,
        help="Model file (.safetensors, .onnx or TensorRT .engine). Default: the "
        "bundled model.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        dir_okay=False,
        help="Map to write (.tif). Default: <scene>_<task>.tif here.",
    ),
]
TileOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Tile size in pixels; the model's own (256) by default."),
]
OverlapOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Pixels shared by neighbouring tiles, blended smoothly (about the "
        "model's receptive field; 64 = a quarter tile).",
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Tiles per model call.")
]
BackendOpt = Annotated[
    Backend,
    typer.Option(
        help="auto picks by the model file: .safetensors torch, .onnx onnx (on "
        "--device cuda: TensorRT EP, then CUDA EP, then CPU EP), .engine tensorrt. "
        "`alosmap info` lists what is installed."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="torch: fp32 (default), bf16 or fp16 autocast (fp16 on CUDA only; bf16 "
        "on the CPU is fast only with AVX512-BF16/AMX). onnx: the file's own "
        "(fp32 or an fp16 export); fp16 on an fp32 file = TensorRT EP fp16. "
        "tensorrt: fixed in the engine.",
        show_default=False,
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model (torch backend). Compiling takes about a "
        "minute per batch size on a CPU, where it gained only 2 % (small preset).",
    ),
]
ConfOpt = Annotated[
    bool,
    typer.Option("--confidence", help="Add band 2: top class probability (percent)."),
]
ProbOpt = Annotated[
    bool,
    typer.Option(
        "--probabilities",
        help="Also write <output>_probabilities.tif (uint8 percent per class).",
    ),
]
PreviewOpt = Annotated[
    Path | None,
    typer.Option(
        "--preview", dir_okay=False, help="Also write a PNG quicklook (SAR | map)."
    ),
]
UnitsOpt = Annotated[
    Units,
    typer.Option(
        "--input-units",
        help="Units of the scene: dn (ALOS-2 amplitude), db (σ0 dB), linear power; "
        "auto reads the UNITS tag or guesses from the values.",
    ),
]
BandOpt = Annotated[
    int | None, typer.Option(min=1, help="Band holding HH (multi-band files).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads for the model (default: the physical cores)."
    ),
]


def _predict(task: str | None, options: dict[str, object]) -> None:
    """Run predict_scene with the command's options (enums turned into values)."""
    from alosmap.classes import classes_for_task
    from alosmap.predict.pipeline import predict_scene

    kw = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
    res = predict_scene(task=task, progress=_common.show_progress(), **kw)  # type: ignore[arg-type]
    names = {c.code: c.name for c in classes_for_task(res.task)}
    total = max(1, res.valid_pixels)
    shares = ", ".join(
        f"{names.get(code, code)} {100 * n / total:.1f}%"
        for code, n in sorted(res.class_pixels.items(), key=lambda kv: -kv[1])
    )
    _common.info_line(
        f"{res.output.name}: {res.tiles_run}/{res.tiles_total} tiles in "
        f"{res.seconds:.1f} s ({res.tiles_per_second:.2f} tiles/s); {shares}"
    )
    typer.echo(str(res.output))
    for extra in (res.probabilities, res.preview):
        if extra is not None:
            typer.echo(str(extra))


def predict(
    scene: SceneArg,
    task: Annotated[
        Task | None,
        typer.Option(
            help="lulc (9 classes) or water. Default: the model's task (lulc without "
            "--model)."
        ),
    ] = None,
    model: ModelOpt = None,
    output: OutputOpt = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = 64,
    batch_size: BatchOpt = 8,
    backend: BackendOpt = Backend.auto,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = None,
    compile: CompileOpt = False,
    confidence: ConfOpt = False,
    probabilities: ProbOpt = False,
    preview: PreviewOpt = None,
    input_units: UnitsOpt = Units.auto,
    band: BandOpt = None,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Map land use / land cover (or water) of a whole scene to a COG GeoTIFF.

    The map has the scene's CRS, transform and size: LULC codes 1-9 (0 = no data)
    with a colour table and class names; water 1 / not water 0 / no data 255.
    """
    options = dict(locals())
    options.pop("task")
    _predict(task.value if task is not None else None, options)


def water(
    scene: SceneArg,
    model: ModelOpt = None,
    output: OutputOpt = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = 64,
    batch_size: BatchOpt = 8,
    backend: BackendOpt = Backend.auto,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = None,
    compile: CompileOpt = False,
    confidence: ConfOpt = False,
    probabilities: ProbOpt = False,
    preview: PreviewOpt = None,
    input_units: UnitsOpt = Units.auto,
    band: BandOpt = None,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Map water of a whole scene (1 water, 0 not water, 255 no data) to a COG.

    The same as `alosmap predict --task water`.
    """
    _predict("water", dict(locals()))
