"""``alosmap export``: write ONNX models (TensorRT engines come with the runtimes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Export models to ONNX (and TensorRT).", no_args_is_help=True)


@app.command("onnx")
def onnx_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="alosmap model file (.safetensors)."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", dir_okay=False, help="ONNX file to write.")
    ],
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset.")] = 18,
    check: Annotated[
        bool,
        typer.Option(help="Compare ONNX Runtime with PyTorch after export."),
    ] = True,
    tolerance: Annotated[
        float,
        typer.Option(help="Largest |Δprob| accepted by the parity check."),
    ] = 1e-3,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
) -> None:
    """Export a model to ONNX: fixed tile, dynamic batch, spec in the metadata.

    The parity check runs random tiles through PyTorch and ONNX Runtime (CPU) and fails
    when the probabilities differ by more than --tolerance.
    """
    import numpy as np

    from alosmap.errors import AlosmapError, OutputExistsError
    from alosmap.spec import SPEC_KEY, load_model

    from .onnx import check_parity, export_onnx

    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; use --overwrite to replace it")
    net, spec = load_model(model)
    path = export_onnx(net, output, opset=opset, metadata={SPEC_KEY: spec.to_json()})
    if check:
        rng = np.random.default_rng(0)
        s = spec.tile_size
        tiles = rng.standard_normal((2, 1, s, s), dtype=np.float32)
        res = check_parity(net, path, tiles)
        typer.echo(
            f"parity: max |Δprob| = {res['max_abs_prob_diff']:.2e}, "
            f"argmax agreement = {100 * res['argmax_agreement']:.3f} %",
            err=True,
        )
        if res["max_abs_prob_diff"] > tolerance:
            path.unlink(missing_ok=True)
            raise AlosmapError(
                f"ONNX parity check failed: max |Δprob| {res['max_abs_prob_diff']:.2e} "
                f"> tolerance {tolerance:.1e}; the ONNX file was removed"
            )
    typer.echo(str(path))
