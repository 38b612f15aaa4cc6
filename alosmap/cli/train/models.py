"""``alosmap train init``, ``alosmap train evaluate`` and ``alosmap train adapt``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli.options import (
    OverwriteOpt,
    Task,
    Units,
    UnitsOpt,
    input_file,
    output_option,
)
from alosmap.cli.train import app
from alosmap.cli.train._options import (
    DataOpt,
    EvalDeviceOpt,
    NoHighresOpt,
    NoRefineUpOpt,
)


@app.command("init")
def init_model(
    output: Annotated[
        Path,
        output_option("Model file to write."),
    ],
    task: Annotated[Task, typer.Option(help="lulc (9 classes) or water.")] = Task.lulc,
    preset: Annotated[
        str, typer.Option(help="Architecture preset: paper, small or tiny.")
    ] = "small",
    no_highres: NoHighresOpt = False,
    no_refine_up: NoRefineUpOpt = False,
    tile_size: Annotated[
        int,
        typer.Option(
            min=32,
            help="Tile size in pixels the model is built for (a multiple of 32).",
        ),
    ] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
) -> None:
    """Write a randomly initialised model file (untrained; for tests and export).

    The file carries a full spec, so it works with every other command; its maps are
    meaningless until it is trained.
    """
    import torch

    from alosmap._fileio import check_output_place
    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.spec import default_spec, save_model

    arch = get_preset(
        preset,
        img_size=tile_size,
        highres=not no_highres,
        refine_up=not no_refine_up,
    )
    spec = default_spec(
        task.value,
        arch,
        name=f"{preset}-{task.value}-untrained",
        provenance={"weights": "random initialisation (untrained)", "seed": str(seed)},
    )
    check_output_place(output)
    torch.manual_seed(seed)
    model = build_model(spec.arch).eval()
    out = save_model(model, spec, output, overwrite=overwrite)
    typer.echo(str(out))


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[
        Path,
        typer.Option(
            parser=input_file("model", virtual=False, kind="model"),
            metavar="FILE",
            help="Model file (.safetensors).",
        ),
    ],
    data: DataOpt,
    split: Annotated[
        str, typer.Option(help="Split to evaluate: test, val or train.")
    ] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per batch.")] = 8,
    device: EvalDeviceOpt = "cpu",
    output: Annotated[
        Path | None,
        output_option(
            "Also write report.json and confusion_matrix.png here.", directory=True
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
) -> None:
    """Evaluate a model on a dataset split in the paper's table layout.

    LULC and other multi-class legends: per-class IoU and accuracy, mIoU and mAcc
    (Table II); water and other binary legends: IoU_water, precision and recall
    (Table III), in percent. The model's spec sets the legend (the dataset's labels
    must follow it) and the input normalisation (the statistics the model was
    trained with).
    """
    import json

    from alosmap._fileio import check_not_input, remove_stale_temps
    from alosmap.cli._common import check_output_dir
    from alosmap.train.evaluate import evaluate_file, format_table, write_report

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(
            f"{split!r}; use test, val or train", param_hint="--split"
        )
    if output is not None:
        check_output_dir(output, create=True)
        outputs = [output / "report.json", output / "confusion_matrix.png"]
        check_not_input(outputs, [model])
        remove_stale_temps(*outputs)
    report = evaluate_file(model, data, split, batch_size=batch_size, device=device)
    if output is not None:
        write_report(report, output)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        typer.echo(format_table(report))


@app.command("adapt")
def adapt_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            parser=input_file("model", virtual=False, kind="model"),
            metavar="MODEL",
            help="The model to adapt (.safetensors); it is not changed.",
        ),
    ],
    output: Annotated[
        Path,
        output_option("The adapted model file to write."),
    ],
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--images",
            metavar="SCENE",
            help="Representative scenes of the new sensor, season or region, "
            "without labels (--images A.tif B.tif ..., or repeated).",
        ),
    ] = None,
    more: Annotated[
        list[str] | None,
        typer.Argument(metavar="[SCENE]...", help="More scenes.", show_default=False),
    ] = None,
    band: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Band of the scenes to use (multi-band files): the one the model "
            "was trained on, e.g. HH for ALOS-2, VV or VH for Sentinel-1.",
        ),
    ] = None,
    input_units: UnitsOpt = Units.auto,
    max_tiles: Annotated[
        int,
        typer.Option(
            min=2, help="Most tiles (drawn at random) for the BatchNorm statistics."
        ),
    ] = 256,
    batch_size: Annotated[
        int, typer.Option(min=2, help="Tiles per forward pass (at least 2).")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the tile draw and order.")] = 0,
    no_bn: Annotated[
        bool,
        typer.Option("--no-bn", help="Keep the BatchNorm statistics (normalise only)."),
    ] = False,
    no_norm: Annotated[
        bool,
        typer.Option(
            "--no-norm", help="Keep the input mean/std (BatchNorm statistics only)."
        ),
    ] = False,
    device: EvalDeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Adapt a model to new scenes without labels (sensor, season or region).

    Re-estimates the input normalisation (mean/std of σ0 dB, clipped like model
    input, over the valid pixels of the scenes) and the BatchNorm statistics of the
    network (forward passes over up to --max-tiles tiles of the scenes; no labels,
    no weight updates), and writes a new model file whose spec records the new
    radiometry and the provenance. Reports the input statistics before (the
    model's) and after, and warns when they differ much. Prints the path of the
    adapted model.

    Adapt or finetune? Adapt corrects shifted inputs (another sensor's
    calibration, season or region) given representative unlabelled scenes whose
    mix of classes is like the training data's. Do not adapt on the scenes to be
    mapped when their mix differs (e.g. flood scenes, 25 % water): the statistics
    then shift with the classes and the adapted model misses the change. With
    labelled patches, or when classes look different (another band or legend),
    use 'alosmap train finetune --init-from MODEL'.
    """
    from alosmap.cli import _common
    from alosmap.train.adapt import AdaptOptions, adapt

    scenes = [*(images or []), *(more or [])]
    if not scenes:
        raise typer.BadParameter("give the scenes to adapt to", param_hint="--images")
    opts = AdaptOptions(
        band=band,
        input_units=input_units.value,
        max_tiles=max_tiles,
        batch_size=batch_size,
        seed=seed,
        normalization=not no_norm,
        batchnorm=not no_bn,
        device=device,
    )
    result = adapt(
        model,
        [Path(s) for s in scenes],
        output,
        options=opts,
        overwrite=overwrite,
        log=_common.info_line,
    )
    typer.echo(str(result.path))
