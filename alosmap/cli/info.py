"""``alosmap info``: describe a model file or a raster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

MODEL_SUFFIXES = (".safetensors", ".onnx", ".engine", ".plan", ".trt")


def info(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="A model file (.safetensors, .onnx, .engine) or a raster (GeoTIFF).",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON on stdout instead of text.")
    ] = False,
) -> None:
    """Describe a model file (its spec) or a raster (size, CRS, pixels, no-data)."""
    if path.suffix.lower() in MODEL_SUFFIXES:
        from alosmap.spec import load_spec

        spec = load_spec(path)
        data: dict[str, Any] = {"path": str(path), "kind": "model", **spec.to_dict()}
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        a = spec.arch
        lines = [
            f"model       {path}",
            f"name        {spec.name}",
            f"task        {spec.task} ({spec.num_outputs} output(s))",
            f"encoder     Swin C={a.embed_dim} depths={list(a.depths)} "
            f"heads={list(a.num_heads)} windows={list(a.window_size)}",
            f"decoder     UPerNet {a.decoder_channels} ch, "
            f"high-res={'on' if a.highres else 'off'}, "
            f"refine-up={'on' if a.refine_up else 'off'}",
            f"tile        {a.img_size}x{a.img_size} px, {a.in_chans} band",
            f"radiometry  band {spec.radiometry.band}, units {spec.radiometry.units}, "
            f"CF {spec.radiometry.calibration_factor_db} dB, clip "
            f"{list(spec.radiometry.clip_db)} dB, mean {spec.radiometry.mean_db:.3f} "
            f"std {spec.radiometry.std_db:.3f} dB",
            "classes     " + ", ".join(f"{c.code}={c.name}" for c in spec.classes),
        ]
        if spec.threshold is not None:
            lines.append(f"threshold   {spec.threshold}")
        for k, v in sorted(spec.provenance.items()):
            lines.append(f"provenance  {k}: {v}")
        typer.echo("\n".join(lines))
        return
    from alosmap.io.raster import describe_raster

    desc = describe_raster(path)
    if as_json:
        typer.echo(json.dumps(desc, indent=2, default=str))
        return
    width = max(len(k) for k in desc)
    for k, v in desc.items():
        typer.echo(f"{k.ljust(width)}  {v}")
