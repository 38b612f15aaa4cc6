"""``alosmap bench``: throughput, pipeline efficiency and memory of predict."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Annotated

import typer


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected sizes like 2000,6000 — got {text!r}"
        ) from None
    if any(s < 64 for s in sizes):
        raise typer.BadParameter("sizes must be >= 64 px")
    return sizes


def bench(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            exists=True,
            dir_okay=False,
            help="Model file to measure (default: a random model of --preset).",
        ),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Architecture when no --model: paper, small or tiny.")
    ] = "paper",
    size: Annotated[
        int, typer.Option(min=64, help="Scene size (px, square) for throughput.")
    ] = 2000,
    rss_sizes: Annotated[
        str,
        typer.Option(
            help="Also measure peak RSS at these scene sizes (e.g. "
            "2000,6000,12000); empty to skip."
        ),
    ] = "",
    nodata_check: Annotated[
        bool,
        typer.Option(help="Also time a scene whose top 30 % is no data."),
    ] = True,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Tiles per model call.")
    ] = 8,
    batches: Annotated[int, typer.Option(min=1, help="Batches timed model-only.")] = 3,
    backend: Annotated[str, typer.Option(help="auto, torch or onnx.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    overlap: Annotated[int, typer.Option(min=0, help="Tile overlap (px).")] = 64,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for the model.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Measure model-only vs end-to-end throughput, efficiency and peak memory.

    Every measurement runs in its own process on a generated speckled scene. Random
    weights are used without --model: speed does not depend on the weights.
    """
    import os

    from alosmap.bench import measure, temp_workdir

    extra = _sizes(rss_sizes) if rss_sizes else []
    with temp_workdir() as tmp:
        work = Path(tmp)
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
        if backend == "onnx" and model.suffix == ".safetensors":
            from alosmap.export.onnx import export_onnx
            from alosmap.spec import SPEC_KEY, load_model

            net, spec = load_model(model)
            model = export_onnx(
                net, work / "model.onnx", metadata={SPEC_KEY: spec.to_json()}
            )
        kw = dict(
            workdir=work,
            backend=backend,
            device=device,
            batch_size=batch_size,
            batches=batches,
            overlap=overlap,
            threads=threads,
        )
        results = [measure(model, size, **kw)]
        if nodata_check:
            results.append(measure(model, size, nodata_fraction=0.3, **kw))
        for s in extra:
            if s != size:
                results.append(measure(model, s, **kw))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU threads, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    if as_json:
        from dataclasses import asdict

        typer.echo(
            json.dumps(
                {
                    "model": str(model.name),
                    "machine": machine,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
        return
    typer.echo(
        f"model {model.name} · {machine} · batch {batch_size} · overlap {overlap}"
    )
    header = (
        f"{'scene':>12} {'no-data':>7} {'backend':>7} {'model t/s':>9} "
        f"{'e2e t/s':>8} {'effic.':>6} {'tiles':>11} {'e2e s':>8} "
        f"{'peak RSS MB':>11}"
    )
    typer.echo(header)
    for r in results:
        typer.echo(
            f"{r.size:>5}x{r.size:<6} {r.nodata_fraction:>7.0%} {r.backend:>7} "
            f"{r.model_tiles_per_s:>9.3f} {r.e2e_tiles_per_s:>8.3f} "
            f"{r.efficiency:>6.3f} {r.tiles_run:>5}/{r.tiles_total:<5} "
            f"{r.e2e_seconds:>8.1f} {r.peak_rss_mb:>11.0f}"
        )
    full = results[0]
    if nodata_check:
        nd = results[1]
        typer.echo(
            f"time(30 % no data) / time(full) = {nd.e2e_seconds / full.e2e_seconds:.3f}"
        )
    rss = {r.size: r.peak_rss_mb for r in results if r.nodata_fraction == 0}
    if len(rss) > 1:
        lo = min(rss)
        for s in sorted(rss):
            if s != lo:
                typer.echo(f"peak RSS {s}² / {lo}² = {rss[s] / rss[lo]:.3f}")
