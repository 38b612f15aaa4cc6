"""``alosmap train``: build datasets, pretrain, finetune and evaluate models."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Build training data, pretrain (SAR-W-MixMAE), finetune and evaluate models.",
    no_args_is_help=True,
)


class Task(str, Enum):
    """Segmentation task."""

    lulc = "lulc"
    water = "water"


@app.command("init")
def init_model(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="Model file to write."),
    ],
    task: Annotated[Task, typer.Option(help="lulc (9 classes) or water.")] = Task.lulc,
    preset: Annotated[
        str, typer.Option(help="Architecture preset: paper, small or tiny.")
    ] = "small",
    no_highres: Annotated[
        bool, typer.Option("--no-highres", help="Do not inject the high-res map.")
    ] = False,
    no_refine_up: Annotated[
        bool,
        typer.Option("--no-refine-up", help="Plain head (×4 interpolation)."),
    ] = False,
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

    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.spec import default_spec, save_model

    arch = get_preset(preset, highres=not no_highres, refine_up=not no_refine_up)
    spec = default_spec(
        task.value,
        arch,
        name=f"{preset}-{task.value}-untrained",
        provenance={"weights": "random initialisation (untrained)", "seed": str(seed)},
    )
    torch.manual_seed(seed)
    model = build_model(spec.arch).eval()
    out = save_model(model, spec, output, overwrite=overwrite)
    typer.echo(str(out))
