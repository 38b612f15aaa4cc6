"""``alosmap bench``: compare backends (speed, memory, agreement) and time predict."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Annotated, Any

import typer


def _ints(text: str, what: str, minimum: int) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected {what} like 1,8,64 — got {text!r}"
        ) from None
    if any(v < minimum for v in values):
        raise typer.BadParameter(f"{what} must be >= {minimum}")
    return values


def bench(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            exists=True,
            dir_okay=False,
            help="Model file to measure: .safetensors (torch; exported to ONNX on "
            "the fly for onnx), .onnx or .engine. Default: a random model of "
            "--preset.",
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Architecture when no --model: paper, small or tiny.")
    ] = "paper",
    backends: Annotated[
        str,
        typer.Option(
            help="Variants to compare, comma-separated: backend[-options] with "
            "backend torch, onnx or tensorrt and options fp32/bf16/fp16, compile "
            "(torch) and cpu/cuda/trt (onnx execution providers). E.g. "
            "torch,torch-bf16,torch-compile,onnx,onnx-cuda-fp16,tensorrt.",
        ),
    ] = "torch,onnx",
    batch_sizes: Annotated[
        str,
        typer.Option(
            help="Batch sizes timed model-only, e.g. 1,8,64 (default: --batch-size)."
        ),
    ] = "",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", "-b", min=1, help="Batch size of the end-to-end run."
        ),
    ] = 8,
    batches: Annotated[
        int, typer.Option(min=1, help="Timed batches per batch size (after warm-up).")
    ] = 3,
    agree_tiles: Annotated[
        int,
        typer.Option(min=1, help="Tiles compared with PyTorch fp32 (agreement)."),
    ] = 8,
    size: Annotated[
        int,
        typer.Option(
            min=0,
            help="Side (px) of the generated scene run end to end through predict; "
            "0 skips it.",
        ),
    ] = 2000,
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx",
            exists=True,
            dir_okay=False,
            help="ONNX export of --model to use (instead of exporting on the fly).",
        ),
    ] = None,
    engine: Annotated[
        Path | None,
        typer.Option(
            "--engine",
            exists=True,
            dir_okay=False,
            help="TensorRT engine of --model, for the tensorrt variant.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    overlap: Annotated[int, typer.Option(min=0, help="Tile overlap (px).")] = 64,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="CPU threads for the model (default: the physical cores)."
        ),
    ] = None,
    rss_sizes: Annotated[
        str,
        typer.Option(
            help="Also measure the pipeline's peak RSS at these scene sizes (e.g. "
            "2000,6000,12000) with the first variant; empty to skip."
        ),
    ] = "",
    nodata_check: Annotated[
        bool,
        typer.Option(
            help="Also time the first variant on a --size scene whose top 30 % is "
            "no data."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare backends on the same model and tiles, and time predict end to end.

    For each variant: tiles/s, ms/tile and peak memory (RSS on the CPU, device memory
    on a GPU) at each batch size, agreement with PyTorch fp32 on the same tiles
    (argmax % and max |Δprob|), and the end-to-end time of predict on a generated
    speckled scene of --size² px, with the hours that rate implies for all of Japan
    (3.8·10⁹ px at 10 m). Every variant runs in its own process. Random weights are
    used without --model: speed does not depend on the weights.
    """
    import time

    from alosmap.errors import AlosmapError, BackendOptionError
    from alosmap.predict.bench import compare, measure, parse_variants, temp_workdir

    try:
        variants = parse_variants(backends)
    except BackendOptionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backends") from None
    sizes = _ints(batch_sizes, "batch sizes", 1) if batch_sizes else [batch_size]
    extra = _ints(rss_sizes, "sizes", 64) if rss_sizes else []
    notes: list[str] = []
    with temp_workdir() as tmp:
        work = Path(tmp)
        files: dict[str, Path | None] = {
            "model": None,
            "onnx": onnx,
            "onnx_fp16": None,
            "engine": engine,
        }
        if model is None:
            import torch

            from alosmap.arch import get_preset
            from alosmap.models import build_model
            from alosmap.spec import default_spec, save_model

            spec = default_spec("lulc", get_preset(preset), name=f"{preset}-bench")
            torch.manual_seed(0)
            model = save_model(
                build_model(spec.arch).eval(), spec, work / f"{preset}.safetensors"
            )
            notes.append(f"{preset} preset, random weights")
        suffix = model.suffix.lower()
        key = {".safetensors": "model", ".onnx": "onnx"}.get(suffix, "engine")
        files[key] = model
        wants = {v.backend for v in variants}
        fp16 = any(v.backend == "onnx" and v.precision == "fp16" for v in variants)
        if files["model"] is not None and "onnx" in wants:
            from alosmap.export.onnx import export_onnx
            from alosmap.spec import SPEC_KEY, load_model

            net, spec = load_model(files["model"])
            meta = {SPEC_KEY: spec.to_json()}
            if files["onnx"] is None:
                t0 = time.perf_counter()
                files["onnx"] = export_onnx(net, work / "model.onnx", metadata=meta)
                notes.append(f"ONNX export {time.perf_counter() - t0:.0f} s")
            if fp16:
                try:
                    files["onnx_fp16"] = export_onnx(
                        net, work / "model_fp16.onnx", metadata=meta, fp16=True
                    )
                except AlosmapError as exc:  # the fp16 variants then report it
                    notes.append(f"fp16 ONNX export failed: {exc}")
        if "tensorrt" in wants and files["engine"] is None:
            raise BackendOptionError(
                "--backends tensorrt needs an engine: pass --engine (build one with "
                "`alosmap export tensorrt`)"
            )
        report = compare(
            variants,
            workdir=work,
            model=files["model"],
            onnx=files["onnx"],
            onnx_fp16=files["onnx_fp16"],
            engine=files["engine"],
            device=device,
            batch_sizes=tuple(sizes),
            batches=batches,
            agree_tiles=agree_tiles,
            size=size,
            e2e_batch=batch_size,
            overlap=overlap,
            threads=threads,
        )
        pipeline = []
        first = next((v for v in variants if v.providers is None), None)
        if first is not None and (nodata_check or extra):
            path = {"torch": files["model"], "onnx": files["onnx"]}.get(
                first.backend, files["engine"]
            )
            kw: dict[str, Any] = dict(
                workdir=work,
                backend=first.backend,
                device=device,
                batch_size=batch_size,
                batches=batches,
                overlap=overlap,
                threads=threads,
                precision=first.precision,
                compile=first.compile,
            )
            if path is not None:
                if nodata_check and size:
                    pipeline.append(measure(path, size, **kw))
                    pipeline.append(measure(path, size, nodata_fraction=0.3, **kw))
                pipeline.extend(measure(path, s, **kw) for s in extra)
    from alosmap.runtime.probe import cpu_info

    cpu = cpu_info()
    threads = {v["threads"] for v in report["variants"] if v.get("threads")}
    machine = (
        f"{cpu['model']} ({platform.machine()}), {cpu['physical']} physical cores "
        f"({cpu['logical']} logical); CPU threads used: "
        + (", ".join(map(str, sorted(threads))) or "-")
    )
    report.update(model=model.name, machine=machine, notes=notes)
    if pipeline:
        from dataclasses import asdict

        report["pipeline"] = [asdict(r) for r in pipeline]
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report, pipeline)


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _print_report(report: dict[str, Any], pipeline: list[Any]) -> None:
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
    ref_tps = {}
    for v in report["variants"]:
        if v["variant"] == ref:
            ref_tps = {r["batch_size"]: r["tiles_per_s"] for r in v["rows"]}
    for v in report["variants"]:
        if v["error"]:
            typer.echo(f"{v['variant']:<20} failed: {v['error']}")
            continue
        where = _runs_on(v)
        label = v["variant"] + (f" ({v['precision']})" if v["precision"] else "")
        for i, r in enumerate(v["rows"]):
            a = v["agreement"]
            if v["variant"] == ref:
                agree, dprob = "ref", "ref"
            elif a:
                agree, dprob = f"{a['argmax_pct']:.3f}", f"{a['max_abs_dprob']:.1e}"
            else:
                agree, dprob = "-", "-"
            base = ref_tps.get(r["batch_size"])
            speed = _fmt(r["tiles_per_s"] / base if base else None, ".2f")
            typer.echo(
                f"{label if i == 0 else '':<20} {where if i == 0 else '':<10} "
                f"{r['batch_size']:>5} {r['tiles_per_s']:>8.3f} "
                f"{r['ms_per_tile']:>8.1f} {speed:>6} {r['peak_mb']:>11.0f} "
                f"{agree if i == 0 else '':>9} {dprob if i == 0 else '':>8} "
                f"{_fmt(v['load_s'], '.1f') if i == 0 else '':>6} "
                f"{r['warmup_s']:>6.1f}"
            )
    e2e = [v for v in report["variants"] if v.get("e2e")]
    if e2e:
        s = e2e[0]["e2e"]
        typer.echo(
            f"end to end: predict on a generated {s['size']}x{s['size']} scene "
            f"(batch {s['batch_size']}); Japan = 3.8e9 px at 10 m"
        )
        typer.echo(
            f"{'variant':<20} {'tiles':>11} {'seconds':>8} {'tiles/s':>8} "
            f"{'effic.':>6} {mem:>11} {'Japan h':>9}"
        )
        for v in e2e:
            s = v["e2e"]
            model_tps = {r["batch_size"]: r["tiles_per_s"] for r in v["rows"]}
            base = model_tps.get(s["batch_size"])
            eff = _fmt(s["tiles_per_s"] / base if base else None, ".2f")
            typer.echo(
                f"{v['variant']:<20} {s['tiles_run']:>5}/{s['tiles_total']:<5} "
                f"{s['seconds']:>8.1f} {s['tiles_per_s']:>8.3f} {eff:>6} "
                f"{s['peak_mb']:>11.0f} {s['japan_hours']:>9.1f}"
            )
    if pipeline:
        _print_pipeline(pipeline)


def _runs_on(v: dict[str, Any]) -> str:
    short = {
        "TensorrtExecutionProvider": "TRT EP",
        "CUDAExecutionProvider": "CUDA EP",
        "CPUExecutionProvider": "CPU EP",
    }
    if v["providers"]:
        return short.get(v["providers"][0], v["providers"][0])
    return "gpu" if v["memory"] == "gpu" else "cpu"


def _print_pipeline(results: list[Any]) -> None:
    typer.echo("pipeline (first variant): model-only vs end-to-end throughput")
    typer.echo(
        f"{'scene':>12} {'no-data':>7} {'backend':>8} {'model t/s':>9} "
        f"{'e2e t/s':>8} {'effic.':>6} {'tiles':>11} {'e2e s':>8} "
        f"{'peak RSS MB':>11}"
    )
    for r in results:
        typer.echo(
            f"{r.size:>5}x{r.size:<6} {r.nodata_fraction:>7.0%} {r.backend:>8} "
            f"{r.model_tiles_per_s:>9.3f} {r.e2e_tiles_per_s:>8.3f} "
            f"{r.efficiency:>6.3f} {r.tiles_run:>5}/{r.tiles_total:<5} "
            f"{r.e2e_seconds:>8.1f} {r.peak_rss_mb:>11.0f}"
        )
    full = [r for r in results if r.nodata_fraction == 0]
    nd = [r for r in results if r.nodata_fraction > 0]
    if full and nd:
        typer.echo(
            f"time(30 % no data) / time(full) = "
            f"{nd[0].e2e_seconds / full[0].e2e_seconds:.3f}"
        )
    rss = {r.size: r.peak_rss_mb for r in full}
    if len(rss) > 1:
        lo = min(rss)
        for s in sorted(rss):
            if s != lo:
                typer.echo(f"peak RSS {s}² / {lo}² = {rss[s] / rss[lo]:.3f}")
