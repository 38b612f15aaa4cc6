"""``alosmap info``: describe a model file or a raster, or list the backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alosmap.cli.options import input_file

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.classes import Legend


def info(
    path: Annotated[
        Path | None,
        typer.Argument(
            parser=input_file("input"),
            metavar="PATH",
            help="A model file (.safetensors, .onnx, .engine) or a raster (GeoTIFF, "
            "VRT, GDAL virtual path or URL). Without it: the backends available on "
            "this machine.",
        ),
    ] = None,
    backends: Annotated[
        bool,
        typer.Option(
            "--backends",
            help="List the inference backends, ONNX Runtime execution providers "
            "(checked by loading each), devices and versions of this machine.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON on stdout instead of text.")
    ] = False,
) -> None:
    """Describe a model file, a raster, or (without PATH) this machine's backends.

    A model: its spec (legend: classes, codes, label values, no data) and the
    backend that runs it here. A raster: size, CRS, pixels,
    no-data; for a map of alosmap also its provenance (alosmap version, model name,
    file and SHA-256, the input as given, the options that made it). The backends:
    PyTorch, ONNX Runtime (each execution provider checked by loading it) and
    TensorRT, with devices, precisions and versions.
    """
    if path is None or backends:
        if path is not None:
            _describe_path(path, as_json)
        _describe_backends(as_json)
        return
    _describe_path(path, as_json)


def _describe_path(path: Path, as_json: bool) -> None:
    from alosmap.runtime.base import SUFFIX_BACKEND

    backend = SUFFIX_BACKEND.get(Path(path).suffix.lower())
    if backend is not None:
        _describe_model(path, backend, as_json)
        return
    from alosmap.io.raster import describe_raster

    desc = describe_raster(path)
    if desc.get("acquisition_date") is None:  # a JAXA mosaic tile: its date file
        from alosmap.io.scene import scene_date

        d = scene_date(path, {})
        desc["acquisition_date"] = d.isoformat() if d else None
    prov = _map_provenance(path)
    if as_json:
        typer.echo(json.dumps({**desc, "provenance": prov}, indent=2, default=str))
        return
    width = max(len(k) for k in [*desc, "provenance"])
    for k, v in desc.items():
        typer.echo(f"{k.ljust(width)}  {v}")
    for k, v in prov.items():  # what made the map: model, its SHA-256, input, options
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        typer.echo(f"{'provenance'.ljust(width)}  {k}: {text}")


def _map_provenance(path: Path) -> dict[str, Any]:
    """The provenance tags of an alosmap map (empty for other rasters)."""
    from alosmap.io.raster import open_raster
    from alosmap.io.writer import provenance

    with open_raster(path) as ds:
        return provenance(ds.tags())


def _describe_model(path: Path, backend: str, as_json: bool) -> None:
    from alosmap.runtime.probe import describe_backend
    from alosmap.spec import load_spec

    if backend == "onnx":
        # what ONNX Runtime would refuse (external data outside the model's
        # folder) is said here, as `predict -m` says it, not "runs here"
        from alosmap.runtime.onnx_backend import read_onnx_metadata

        read_onnx_metadata(Path(path))
    spec = load_spec(path)
    runs = _runs_here(describe_backend(backend))
    if as_json:
        data: dict[str, Any] = {"path": str(path), "kind": "model", **spec.to_dict()}
        data["legend"] = spec.legend.to_dict()
        data["backend"] = {"name": backend, "runs_here": runs}
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
        *_legend_lines(spec.legend),
    ]
    if spec.threshold is not None:
        lines.append(f"threshold   {spec.threshold}")
    for k, v in sorted(spec.provenance.items()):
        lines.append(f"provenance  {k}: {v}")
    where = ", ".join(runs["devices"]) if runs["devices"] else "nowhere on this machine"
    lines.append(f"backend     {backend}: runs here on {where}")
    lines.extend(f"            {note}" for note in runs["notes"])
    typer.echo("\n".join(lines))


def _legend_lines(legend: Legend) -> list[str]:
    """The model's legend: kind, no data, ignored labels; classes with label values."""
    kind = "binary (one output thresholded)" if legend.binary else "argmax"
    ignored = ", ".join(map(str, legend.ignore))
    return [
        f"legend      {legend.name}: {legend.title}; {len(legend.classes)} classes, "
        f"{kind}; map no data {legend.nodata}"
        + (f"; ignored label values {ignored}" if ignored else ""),
        "classes     "
        + ", ".join(
            f"{c.code}={c.name} (labels {', '.join(map(str, c.label_values))})"
            for c in legend.classes
        ),
    ]


def _runs_here(entry: dict[str, Any]) -> dict[str, Any]:
    """Devices one backend entry can use here, and why not the others."""
    if not entry.get("installed"):
        return {"devices": [], "notes": [entry["install"]]}
    if entry.get("error"):
        return {
            "devices": [],
            "notes": [f"{entry['name']} is broken: {entry['error']}"],
        }
    notes = [
        f"{p['name']}: {p['reason']}"
        for p in entry.get("providers", [])
        if not p.get("loads") and p.get("reason")
    ]
    if entry.get("note"):
        notes.append(entry["note"])
    return {"devices": list(entry.get("devices", [])), "notes": notes}


def _describe_backends(as_json: bool) -> None:
    from alosmap.runtime.probe import describe_backends

    report = describe_backends(probe=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    lines = []
    for b in report["backends"]:
        name = b["name"].ljust(9)
        if not b.get("installed"):
            lines.append(f"{name} not installed: {b['install'].split(': ', 1)[-1]}")
            continue
        if b.get("error"):
            lines.append(f"{name} installed but broken: {b['error']}")
            continue
        devices = ", ".join(b["devices"]) or "no device"
        if b["name"] == "torch":
            cuda = f", CUDA {b['cuda_build']} build" if b["cuda_build"] else ""
            prec = "; ".join(f"{d} {'/'.join(p)}" for d, p in b["precisions"].items())
            lines.append(
                f"{name} PyTorch {b['version']}{cuda}; devices: {devices}; "
                f"precision: {prec}; torch.compile: {'yes' if b['compile'] else 'no'}"
            )
        elif b["name"] == "onnx":
            cuda = f", CUDA {b['cuda_build']} build" if b["cuda_build"] else ""
            lines.append(
                f"{name} {b['package']} {b['version']}{cuda}; devices: {devices}"
            )
            for p in b["providers"]:
                state = "loads" if p.get("loads") else f"no: {p.get('reason')}"
                lines.append(f"{'':10}{p['name']:<27} {state}")
        else:
            note = f" ({b['note']})" if b.get("note") else ""
            lines.append(
                f"{name} TensorRT {b['version'] or '?'}; devices: {devices}{note}"
            )
    c = report["cpu"]
    lines.append(
        f"{'cpu':<9} {c['model']}: {c['physical']} physical cores "
        f"({c['logical']} logical); "
        f"default threads {c['default_threads']}; native bf16: "
        f"{'yes' if c['native_bf16'] else 'no'}"
    )
    if report["gpus"]:
        for g in report["gpus"]:
            lines.append(
                f"{'gpu':<9} {g['device']} {g['name']} (sm {g['capability']}, "
                f"{g['memory_gb']} GB, bf16 {'yes' if g['bf16'] else 'no'})"
            )
    else:
        lines.append(f"{'gpu':<9} none visible to PyTorch")
    lines.append(
        f"{'auto':<9} .safetensors → torch, .onnx → onnx (TensorRT EP → CUDA EP → "
        "CPU EP on --device cuda), .engine → tensorrt"
    )
    typer.echo("\n".join(lines))
