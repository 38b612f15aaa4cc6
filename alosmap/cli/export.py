"""``alosmap export``: ONNX files and TensorRT engines, checked for parity."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alosmap.cli import _common
from alosmap.cli.options import OverwriteOpt, input_file, output_option

if TYPE_CHECKING:
    from alosmap.export.tensorrt import EngineBuild

app = typer.Typer(
    help="Export models to ONNX and TensorRT, checked against the original.",
    no_args_is_help=True,
)


def _fp16_option(help_text: str) -> Any:
    """``--fp16``: the reduced-precision export."""
    return typer.Option("--fp16", help=help_text)


def _tolerance_option(reference: str, defaults: str) -> Any:
    """``--tolerance``: the parity check's largest accepted max |Δprob|."""
    return typer.Option(
        min=0.0,
        help=(
            f"Largest max |Δprob| against {reference} accepted by the parity "
            f"check (default {defaults} with --fp16)."
        ),
        show_default=False,
    )


ParityScenes = Annotated[
    list[Path] | None,
    typer.Option(
        "--parity-scene",
        metavar="<file>",
        parser=input_file("parity scene"),
        help=(
            "Scene to cut the parity tiles from, read like `alosmap predict` reads "
            "it (repeatable). Default: the sample_data/ scenes of a source checkout; "
            "random tiles, with a warning, when there are none."
        ),
    ),
]
ParityTiles = Annotated[
    int,
    typer.Option(min=1, help="Number of tiles in the parity check."),
]
Check = Annotated[
    bool,
    typer.Option(help="Run the parity check; without it nothing is compared."),
]
ModelArg = Annotated[
    Path,
    typer.Argument(
        metavar="MODEL",
        parser=input_file("model", virtual=False, kind="model"),
        help="alosmap model file (.safetensors).",
    ),
]
OnnxArg = Annotated[
    Path,
    typer.Argument(
        metavar="ONNX_MODEL",
        parser=input_file("ONNX model", virtual=False, kind="model"),
        help="ONNX file written by `alosmap export onnx`.",
    ),
]
OnnxOutput = Annotated[Path, output_option("ONNX file to write.")]
EngineOutput = Annotated[
    Path,
    output_option("Engine file to write (.engine); its spec goes to <engine>.json."),
]
Opset = Annotated[
    int, typer.Option(min=17, help="ONNX opset (17 or later; 18 is native).")
]
OnnxFp16 = Annotated[
    bool,
    _fp16_option(
        "fp16 weights and compute (half the file size); LayerNorm and "
        "softmax stay fp32, input and output stay float32."
    ),
]
EngineFp16 = Annotated[
    bool, _fp16_option("Allow FP16 kernels; LayerNorm and softmax layers stay FP32.")
]
OnnxTolerance = Annotated[float | None, _tolerance_option("PyTorch", "1e-3; 1e-2")]
EngineTolerance = Annotated[
    float | None, _tolerance_option("ONNX Runtime", "1e-2; 2e-2")
]
MinBatch = Annotated[
    int, typer.Option(min=1, help="Smallest batch the engine accepts.")
]
OptBatch = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Batch the kernels are tuned for (default 8, kept within min..max).",
        show_default=False,
    ),
]
MaxBatch = Annotated[
    int,
    typer.Option(min=1, help="Largest batch (bigger ones are split when predicting)."),
]
Workspace = Annotated[int, typer.Option(min=64, help="Builder workspace limit in MiB.")]
BuildDevice = Annotated[
    str, typer.Option(help="CUDA device to build on (cuda or cuda:N).")
]


def _report(prefix: str, parity: dict | None, source: str, tol: float | None) -> None:
    if parity is None:
        typer.echo(f"{prefix}: parity not checked (--no-check)", err=True)
        return
    typer.echo(
        f"parity: max |Δprob| = {parity['max_abs_prob_diff']:.2e} "
        f"(tolerance {tol:.1e}), argmax agreement = "
        f"{100 * parity['argmax_agreement']:.3f} % on {source}",
        err=True,
    )


@app.command("onnx")
def onnx_cmd(
    model: ModelArg,
    output: OnnxOutput,
    opset: Opset = 18,
    fp16: OnnxFp16 = False,
    check: Check = True,
    tolerance: OnnxTolerance = None,
    parity_scene: ParityScenes = None,
    parity_tiles: ParityTiles = 12,
    overwrite: OverwriteOpt = False,
    as_json: _common.JsonOpt = False,
) -> None:
    """Export a model to ONNX: fixed tile, dynamic batch, spec in the metadata.

    The file is checked with onnx.checker, then real SAR tiles run through
    PyTorch and ONNX Runtime (CPU); the export fails, writing nothing, when the
    class probabilities differ by more than --tolerance. The parity line goes
    to stderr, the written path to stdout (--json: one JSON document).
    """
    from alosmap._fileio import check_output_place
    from alosmap.export.onnx import export_onnx_file

    check_output_place(output)
    with _common.json_document("export onnx", as_json) as doc:
        res = export_onnx_file(
            model,
            output,
            opset=opset,
            fp16=fp16,
            check=check,
            tolerance=tolerance,
            parity_scenes=parity_scene,
            parity_tiles=parity_tiles,
            overwrite=overwrite,
        )
        _report("onnx", res.parity, res.parity_source, res.tolerance)
        size = res.path.stat().st_size
        typer.echo(
            f"{res.precision} ONNX, opset {opset}, {size / 2**20:.1f} MiB, exported "
            f"in {res.seconds:.1f} s",
            err=True,
        )
        doc.update(
            outputs=[res.path],
            precision=res.precision,
            opset=opset,
            bytes=size,
            seconds=res.seconds,
            parity=res.parity,
            parity_source=res.parity_source,
            tolerance=res.tolerance,
        )
    _common.echo_paths([res.path], as_json)


@app.command("tensorrt")
def tensorrt_cmd(
    onnx_model: OnnxArg,
    output: EngineOutput,
    fp16: EngineFp16 = False,
    min_batch: MinBatch = 1,
    opt_batch: OptBatch = None,
    max_batch: MaxBatch = 32,
    workspace: Workspace = 4096,
    device: BuildDevice = "cuda",
    check: Check = True,
    tolerance: EngineTolerance = None,
    parity_scene: ParityScenes = None,
    parity_tiles: ParityTiles = 12,
    overwrite: OverwriteOpt = False,
    as_json: _common.JsonOpt = False,
) -> None:
    """Build a TensorRT engine (needs TensorRT and an NVIDIA GPU).

    An engine runs only with the TensorRT version and on the GPU architecture
    that built it; both are recorded in the <engine>.json sidecar next to the
    model spec, and checked when the engine is loaded. After the build, real SAR
    tiles run through the engine and ONNX Runtime (CPU); the build fails,
    writing nothing, when the probabilities differ by more than --tolerance.
    Prints the engine's path (--json: one JSON document).
    """
    from alosmap._fileio import check_output_place
    from alosmap.export.tensorrt import build_engine

    check_output_place(output)
    with _common.json_document("export tensorrt", as_json) as doc:
        res = build_engine(
            onnx_model,
            output,
            fp16=fp16,
            min_batch=min_batch,
            opt_batch=_opt_batch(min_batch, opt_batch, max_batch),
            max_batch=max_batch,
            workspace_mib=workspace,
            device=device,
            check=check,
            tolerance=tolerance,
            parity_scenes=parity_scene,
            parity_tiles=parity_tiles,
            overwrite=overwrite,
        )
        _report_engine(res, min_batch, max_batch)
        doc.update(
            outputs=[res.path], bytes=res.size, seconds=res.seconds, engine=res.sidecar
        )
    _common.echo_paths([res.path], as_json)


def _opt_batch(min_batch: int, opt_batch: int | None, max_batch: int) -> int:
    """``--opt-batch`` (defaulted), the profile checked as a usage error (exit 2)."""
    from alosmap.errors import ExportError
    from alosmap.export.tensorrt import check_profile, default_opt_batch

    if opt_batch is None:
        opt_batch = default_opt_batch(min_batch, max_batch)
    try:
        check_profile(min_batch, opt_batch, max_batch)
    except ExportError as exc:
        raise typer.BadParameter(str(exc), param_hint="batch profile") from exc
    return opt_batch


def _report_engine(res: EngineBuild, min_batch: int, max_batch: int) -> None:
    """The parity and engine lines on stderr."""
    parity = res.sidecar.get("parity")
    _report(
        "tensorrt",
        parity,
        parity["tiles"] if parity else "",
        parity["tolerance"] if parity else None,
    )
    trt = res.sidecar["tensorrt"]
    typer.echo(
        f"TensorRT {trt['version']} {trt['precision']} engine for {trt['gpu_name']} "
        f"(batch {min_batch}..{max_batch}), {res.size / 2**20:.1f} MiB, built in "
        f"{res.seconds:.1f} s",
        err=True,
    )
