"""``alosmap bench``: compare backends (speed, memory, agreement) and time predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alosmap.cli import options as opt
from alosmap.cli.options import DeviceOpt, ThreadsOpt

if TYPE_CHECKING:
    from alosmap.predict.bench import BenchPlan, OnnxExporter


def _ints(text: str, what: str, minimum: int) -> list[int]:
    """Comma-separated integers ``>= minimum`` (a usage error otherwise)."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected {what} like 1,8,64 — got {text!r}"
        ) from None
    if any(v < minimum for v in values):
        raise typer.BadParameter(f"{what} must be >= {minimum}")
    return values


def _existing_file(*names: str, help_text: str) -> Any:
    """An option naming an existing model file (missing: one line, exit 1)."""
    return typer.Option(
        *names,
        parser=opt.input_file("model", virtual=False, kind="model"),
        metavar="FILE",
        help=help_text,
    )


ModelFile = Annotated[
    Path | None,
    _existing_file(
        "--model",
        "-m",
        help_text="Model file to measure: .safetensors (torch; exported to ONNX on "
        "the fly for onnx), .onnx or .engine. Default: a random model of "
        "--preset; without PyTorch, the bundled lulc.onnx.",
    ),
]
OnnxFile = Annotated[
    Path | None,
    _existing_file(
        "--onnx",
        help_text="ONNX export of --model to use (instead of exporting on the fly).",
    ),
]
EngineFile = Annotated[
    Path | None,
    _existing_file(
        "--engine", help_text="TensorRT engine of --model, for the tensorrt variant."
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        help="Architecture of the random model when no --model: paper (default), "
        "small or tiny. Needs PyTorch.",
        show_default=False,
    ),
]
BackendsOpt = Annotated[
    str | None,
    typer.Option(
        help="Variants to compare, comma-separated: backend[-options] with "
        "backend torch, onnx or tensorrt and options fp32/bf16/fp16, compile "
        "(torch) and cpu/cuda/trt (onnx execution providers). E.g. "
        "torch,torch-bf16,torch-compile,onnx,onnx-cuda-fp16,tensorrt. Default: "
        "torch,onnx; onnx without PyTorch (torch and tensorrt need it).",
        show_default=False,
    ),
]
BatchSizesOpt = Annotated[
    str,
    typer.Option(
        help="Batch sizes timed model-only, e.g. 1,8,64 (default: --batch-size)."
    ),
]
E2EBatchOpt = Annotated[
    int,
    typer.Option("--batch-size", "-b", min=1, help="Batch size of the end-to-end run."),
]
BatchesOpt = Annotated[
    int, typer.Option(min=1, help="Timed batches per batch size (after warm-up).")
]
AgreeTilesOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Tiles compared with the reference (agreement): PyTorch fp32 with a "
        ".safetensors model, else the first variant.",
    ),
]
SceneSizeOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Side (px) of the generated scene run end to end through predict; "
        "0 skips it. Default: 2000; 6000 with --ceiling.",
        show_default=False,
    ),
]
CeilingOpt = Annotated[
    bool,
    typer.Option(
        "--ceiling",
        help="Measure the pipeline's own speed limit instead: predict on a "
        "generated --size² scene with a model that costs nothing (fixed "
        "probabilities of the right shape, already on --device). Prints tiles/s, "
        "the host-side stages' tiles/s, ms per tile by stage and peak memory. The "
        "model's tiles/s (plain bench) must stay far below it.",
    ),
]
CeilingTaskOpt = Annotated[
    str,
    typer.Option(
        "--task",
        help="With --ceiling: whose outputs to imitate: lulc (9 classes) or water.",
    ),
]
CeilingConfOpt = Annotated[
    bool,
    typer.Option("--confidence", help="With --ceiling: also write the confidence."),
]
CeilingProbOpt = Annotated[
    bool,
    typer.Option(
        "--probabilities", help="With --ceiling: also write the probabilities."
    ),
]
CeilingPathOpt = Annotated[
    str | None,
    typer.Option(
        "--path",
        help="With --ceiling: which path to time: host (NumPy engine, the model "
        "returns NumPy as ONNX Runtime on the CPU; no PyTorch), torch-cpu (NumPy "
        "engine, the model returns torch CPU tensors as PyTorch) or device (the "
        "torch engine of a GPU: raw strips, radiometry, blend and finish in torch "
        "tensors; also runs on the CPU). Default: host on the CPU, device on a GPU.",
        show_default=False,
    ),
]
CeilingCreationOpt = Annotated[
    list[str] | None,
    opt.creation_option(
        "With --ceiling: a GDAL creation option of the COGs, as predict's --co "
        "(e.g. --co LEVEL=5: the COG build's share at another DEFLATE level); "
        "repeatable."
    ),
]
TileOverlapOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Tile overlap (px). Default: predict's, a quarter of the model's tile.",
    ),
]
RssSizesOpt = Annotated[
    str,
    typer.Option(
        help="Also measure the pipeline's peak RSS at these scene sizes (e.g. "
        "2000,6000,12000) with the first variant; empty to skip."
    ),
]
NodataCheckOpt = Annotated[
    bool,
    typer.Option(
        help="Also time the first variant on a --size scene whose top 30 % is no data."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def bench(
    model: ModelFile = None,
    preset: PresetOpt = None,
    backends: BackendsOpt = None,
    batch_sizes: BatchSizesOpt = "",
    batch_size: E2EBatchOpt = 8,
    batches: BatchesOpt = 3,
    agree_tiles: AgreeTilesOpt = 8,
    size: SceneSizeOpt = None,
    onnx: OnnxFile = None,
    engine: EngineFile = None,
    device: DeviceOpt = "cpu",
    overlap: TileOverlapOpt = None,
    threads: ThreadsOpt = None,
    rss_sizes: RssSizesOpt = "",
    nodata_check: NodataCheckOpt = False,
    ceiling: CeilingOpt = False,
    task: CeilingTaskOpt = "lulc",
    confidence: CeilingConfOpt = False,
    probabilities: CeilingProbOpt = False,
    path: CeilingPathOpt = None,
    co: CeilingCreationOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare backends on the same model and tiles, and time predict end to end.

    For each variant: tiles/s, ms/tile and peak memory (RSS on the CPU, device memory
    on a GPU) at each batch size, agreement with PyTorch fp32 (or, without a
    .safetensors model, the first variant) on the same tiles (argmax % and max
    |Δprob|), and the end-to-end time of predict on a generated speckled scene of
    --size² px, with the hours that rate implies for all of Japan (3.8·10⁹ px at
    10 m). Every variant runs in its own process. Random weights are used without
    --model: speed does not depend on the weights. Without PyTorch (pip install
    alosmap, no extras) the bundled lulc.onnx runs on ONNX Runtime alone.

    With --ceiling: the pipeline alone (reading, radiometry, blending, writing, COG)
    with a zero-cost model: the most tiles/s any model can get through predict here.
    """
    if ceiling:
        _check_overlap(overlap, model, preset or "paper", task)
        _ceiling(
            size if size is not None else 6000,
            task=task,
            device=device,
            batch_size=batch_size,
            overlap=overlap,
            confidence=confidence,
            probabilities=probabilities,
            path=path,
            creation=co,
            as_json=as_json,
        )
        return
    if co:
        opt.usage_error(
            "--co is for --ceiling (the pipeline's COG build); the end-to-end runs "
            "write predict's default COGs"
        )
    from alosmap.predict.bench import BenchRequest, run_bench

    plan = _plan(backends, model, preset, device)
    _check_overlap(overlap, plan.model, preset or "paper", None)
    request = BenchRequest(
        variants=plan.variants,
        model=plan.model,
        preset=preset or "paper",
        batch_sizes=tuple(
            _ints(batch_sizes, "batch sizes", 1) if batch_sizes else [batch_size]
        ),
        batch_size=batch_size,
        batches=batches,
        agree_tiles=agree_tiles,
        size=2000 if size is None else size,
        onnx=onnx,
        engine=engine,
        device=device,
        overlap=overlap,
        threads=threads,
        rss_sizes=tuple(_ints(rss_sizes, "sizes", 64)),
        nodata_check=nodata_check,
        notes=(plan.note,) if plan.note else (),
    )
    report = run_bench(request, export_onnx=_onnx_exporter())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)


def _plan(
    backends: str | None, model: Path | None, preset: str | None, device: str
) -> BenchPlan:
    """The variants and model (:func:`~alosmap.predict.bench.plan_bench`).

    A bad ``--backends``, or what needs PyTorch where it is not installed: one line,
    exit 2, before any work.
    """
    from alosmap.errors import BackendOptionError, BackendUnavailableError
    from alosmap.predict.bench import plan_bench

    try:
        return plan_bench(
            backends, model, preset_given=preset is not None, device=device
        )
    except BackendOptionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backends") from None
    except BackendUnavailableError as exc:
        opt.usage_error(str(exc))


def _onnx_exporter() -> OnnxExporter | None:
    """The ONNX exporter where PyTorch is installed (it exports with it), else None."""
    from alosmap.runtime.base import backend_installed

    if not backend_installed("torch"):
        return None
    from alosmap.export.onnx import export_onnx

    return export_onnx


def _check_overlap(
    overlap: int | None, model: Path | None, preset: str, ceiling_task: str | None
) -> None:
    """``--overlap`` that does not fit the model's tile: a usage error (exit 2).

    The tile is the bundled model's of ``ceiling_task`` with ``--ceiling``, else
    ``--model``'s or ``--preset``'s. A model or preset that cannot be read is left
    to the benchmark to report.
    """
    if overlap is None:
        return
    from alosmap.errors import AlosmapError, InferenceOptionError
    from alosmap.predict.options import InferenceOptions

    try:
        if ceiling_task is not None:
            from alosmap.predict.pipeline import default_model_path
            from alosmap.spec import load_spec

            tile = load_spec(default_model_path(ceiling_task)).tile_size
        elif model is not None:
            from alosmap.spec import load_spec

            tile = load_spec(model).tile_size
        else:
            from alosmap.arch import get_preset

            tile = get_preset(preset).img_size
    except (AlosmapError, ValueError):
        return
    try:
        InferenceOptions(tile=tile, overlap=overlap)
    except InferenceOptionError as exc:
        opt.usage_error(opt.flag_message(str(exc)))


def _ceiling(
    size: int,
    *,
    task: str,
    device: str,
    batch_size: int,
    overlap: int | None,
    confidence: bool,
    probabilities: bool,
    path: str | None,
    creation: list[str] | None,
    as_json: bool,
) -> None:
    """``alosmap bench --ceiling``: time predict with a zero-cost model."""
    from alosmap.classes import TASKS
    from alosmap.io.cog_options import creation_options
    from alosmap.predict.bench import temp_workdir
    from alosmap.predict.ceiling import ceiling_report, format_ceiling, run_ceiling

    if task not in TASKS:
        raise typer.BadParameter(
            f"expected one of {', '.join(TASKS)}, got {task!r}", param_hint="--task"
        )
    if size < 64:
        raise typer.BadParameter(
            "--ceiling needs a scene of >= 64 px", param_hint="--size"
        )
    paths = {"host": ("numpy", "numpy"), "torch-cpu": ("torch", "numpy")}
    paths["device"] = ("torch", "torch")
    if path is None:
        path = "device" if device.startswith("cuda") else "host"
    if path not in paths:
        raise typer.BadParameter(
            f"expected host, torch-cpu or device, got {path!r}", param_hint="--path"
        )
    if path != "device" and device.startswith("cuda"):
        raise typer.BadParameter(
            f"--path {path} runs on the CPU; use --path device with --device {device}",
            param_hint="--path",
        )
    arrays, engine = paths[path]
    with temp_workdir() as tmp, creation_options(creation):
        result = run_ceiling(
            size,
            Path(tmp),
            task=task,
            device=device,
            batch_size=batch_size,
            overlap=overlap,
            confidence=confidence,
            probabilities=probabilities,
            arrays=arrays,
            engine=engine,
        )
    if as_json:
        typer.echo(json.dumps(ceiling_report(result), indent=2))
    else:
        typer.echo(format_ceiling(result))


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    """``value`` formatted with ``spec``; ``missing`` for None."""
    return missing if value is None else format(value, spec)


def _print_report(report: dict[str, Any]) -> None:
    """The report as tables: model only, end to end, then the pipeline runs."""
    ref = report["reference"]
    head = " · ".join(
        [f"model {report['model']}", *report["notes"], f"device {report['device']}"]
    )
    typer.echo(f"{head}\n{report['machine']}")
    typer.echo(
        f"model only (warm-up batch excluded); agreement on {report['agreement_tiles']}"
        f" tiles vs {ref or '(no reference)'}"
    )
    mem = "peak GPU MB" if report["device"].startswith("cuda") else "peak RSS MB"
    typer.echo(
        f"{'variant':<20} {'runs on':<10} {'batch':>5} {'tiles/s':>8} {'ms/tile':>8} "
        f"{'x ref':>6} {mem:>11} {'argmax %':>9} {'max|Δp|':>8} {'load s':>6} "
        f"{'1st s':>6}"
    )
    ref_tps: dict[int, float] = {}
    for v in report["variants"]:
        if v["variant"] == ref:
            ref_tps = _tiles_per_s(v)
    for v in report["variants"]:
        _print_variant(v, ref, ref_tps)
    e2e = [v for v in report["variants"] if v.get("e2e")]
    if e2e:
        _print_e2e(e2e, mem)
    if report.get("pipeline"):
        _print_pipeline(report["pipeline"])


def _tiles_per_s(variant: dict[str, Any]) -> dict[int, float]:
    """A variant's model-only tiles/s by batch size."""
    return {r["batch_size"]: r["tiles_per_s"] for r in variant["rows"]}


def _ratio(value: float, base: dict[int, float], batch: int) -> str:
    """``value`` over ``base[batch]`` (2 decimals), ``-`` without a base."""
    b = base.get(batch)
    return _fmt(value / b if b else None, ".2f")


def _print_variant(
    v: dict[str, Any], ref: str | None, ref_tps: dict[int, float]
) -> None:
    """A variant's model-only rows (its error line if it failed)."""
    if v.get("skipped"):
        typer.echo(f"{v['variant']:<20} skipped: {v['skipped']}")
        return
    if v["error"]:
        typer.echo(f"{v['variant']:<20} failed: {v['error']}")
        return
    where = _runs_on(v)
    label = v["variant"] + (f" ({v['precision']})" if v["precision"] else "")
    a = v["agreement"]
    if v["variant"] == ref:
        agree, dprob = "ref", "ref"
    elif a:
        agree, dprob = f"{a['argmax_pct']:.3f}", f"{a['max_abs_dprob']:.1e}"
    else:
        agree, dprob = "-", "-"
    for i, r in enumerate(v["rows"]):
        speed = _ratio(r["tiles_per_s"], ref_tps, r["batch_size"])
        typer.echo(
            f"{label if i == 0 else '':<20} {where if i == 0 else '':<10} "
            f"{r['batch_size']:>5} {r['tiles_per_s']:>8.3f} "
            f"{r['ms_per_tile']:>8.1f} {speed:>6} {r['peak_mb']:>11.0f} "
            f"{agree if i == 0 else '':>9} {dprob if i == 0 else '':>8} "
            f"{_fmt(v['load_s'], '.1f') if i == 0 else '':>6} "
            f"{r['warmup_s']:>6.1f}"
        )


def _print_e2e(variants: list[dict[str, Any]], mem: str) -> None:
    """The end-to-end table: predict on the generated scene, per variant."""
    s = variants[0]["e2e"]
    typer.echo(
        f"end to end: predict on a generated {s['size']}x{s['size']} scene "
        f"(batch {s['batch_size']}); Japan = 3.8e9 px at 10 m"
    )
    typer.echo(
        f"{'variant':<20} {'tiles':>11} {'seconds':>8} {'tiles/s':>8} "
        f"{'effic.':>6} {mem:>11} {'Japan h':>9}"
    )
    for v in variants:
        s = v["e2e"]
        eff = _ratio(s["tiles_per_s"], _tiles_per_s(v), s["batch_size"])
        typer.echo(
            f"{v['variant']:<20} {s['tiles_run']:>5}/{s['tiles_total']:<5} "
            f"{s['seconds']:>8.1f} {s['tiles_per_s']:>8.3f} {eff:>6} "
            f"{s['peak_mb']:>11.0f} {s['japan_hours']:>9.1f}"
        )


def _runs_on(v: dict[str, Any]) -> str:
    short = {
        "TensorrtExecutionProvider": "TRT EP",
        "CUDAExecutionProvider": "CUDA EP",
        "CPUExecutionProvider": "CPU EP",
    }
    if v["providers"]:
        return short.get(v["providers"][0], v["providers"][0])
    return "gpu" if v["memory"] == "gpu" else "cpu"


def _print_pipeline(results: list[dict[str, Any]]) -> None:
    """Model-only vs end-to-end throughput, the no-data and the peak RSS ratios."""
    typer.echo("pipeline (first variant): model-only vs end-to-end throughput")
    typer.echo(
        f"{'scene':>12} {'no-data':>7} {'backend':>8} {'model t/s':>9} "
        f"{'e2e t/s':>8} {'effic.':>6} {'tiles':>11} {'e2e s':>8} "
        f"{'peak RSS MB':>11}"
    )
    for r in results:
        typer.echo(
            f"{r['size']:>5}x{r['size']:<6} {r['nodata_fraction']:>7.0%} "
            f"{r['backend']:>8} {r['model_tiles_per_s']:>9.3f} "
            f"{r['e2e_tiles_per_s']:>8.3f} {r['efficiency']:>6.3f} "
            f"{r['tiles_run']:>5}/{r['tiles_total']:<5} "
            f"{r['e2e_seconds']:>8.1f} {r['peak_rss_mb']:>11.0f}"
        )
    full = [r for r in results if r["nodata_fraction"] == 0]
    nd = [r for r in results if r["nodata_fraction"] > 0]
    if full and nd:
        typer.echo(
            f"time(30 % no data) / time(full) = "
            f"{nd[0]['e2e_seconds'] / full[0]['e2e_seconds']:.3f}"
        )
    rss = {r["size"]: r["peak_rss_mb"] for r in full}
    if len(rss) > 1:
        lo = min(rss)
        for s in sorted(rss):
            if s != lo:
                typer.echo(f"peak RSS {s}² / {lo}² = {rss[s] / rss[lo]:.3f}")
