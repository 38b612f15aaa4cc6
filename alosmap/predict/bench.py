"""Benchmarks of the runtimes and of the prediction pipeline (``alosmap bench``).

Every measurement runs in a fresh child process (``python -m
alosmap.predict.bench``), so the peak memory it reports belongs to that
measurement alone.

**Backend comparison** (:func:`compare`). For each variant (backend, precision,
``torch.compile``, execution providers) a child:

1. opens the model with that runtime (load time);
2. for each batch size, ascending: one warm-up batch (its time is reported: that is
   where ``torch.compile`` compiles and TensorRT builds), then ``batches`` timed
   batches → tiles/s and ms/tile; then the peak memory so far: ``ru_maxrss`` on the
   CPU (it only grows, so ascending batch sizes give each one's peak), and on a GPU
   the device memory in use (total − free, from ``cudaMemGetInfo``; no NVML needed,
   and the same measure for every backend) minus what was in use before the model was
   loaded;
3. runs a fixed set of agreement tiles, cut from the generated scene and normalised
   with the model's own radiometry, and saves their probabilities; the parent
   compares them with PyTorch fp32's on the same tiles: argmax agreement (% of
   pixels) and max |Δprob|;
4. end to end: :func:`~alosmap.predict.pipeline.predict_scene` on a generated
   ``size²`` scene with the open runtime (reading, blending and COG writing
   included, model loading excluded) → seconds, tiles/s, and the hours that rate
   implies for all of Japan (:data:`JAPAN_PIXELS` at 10 m).

**Pipeline** (:func:`measure`): model-only vs end-to-end throughput at one batch size
(their ratio is the pipeline efficiency), peak RSS at several scene sizes, and a scene
whose top rows are no data.

Scenes are speckled uint16 DN rasters written strip by strip (bounded memory), with an
optional fraction of no-data rows at the top.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.errors import AlosmapError, BackendOptionError

#: Land area of Japan in 10 m pixels (about 378 000 km²).
JAPAN_PIXELS = 3.8e9
_PRECISIONS = ("fp32", "bf16", "fp16")
_EP_TOKENS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "trt": [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
}


@dataclass
class BenchResult:
    """One pipeline child's measurements (:func:`measure`)."""

    size: int
    nodata_fraction: float
    backend: str
    batch_size: int
    model_tiles_per_s: float
    e2e_tiles_per_s: float
    efficiency: float
    tiles_run: int
    tiles_total: int
    e2e_seconds: float
    peak_rss_mb: float


@dataclass(frozen=True)
class Variant:
    """One runtime configuration to compare.

    Attributes:
        backend: ``torch``, ``onnx`` or ``tensorrt``.
        precision: ``fp32``, ``bf16``, ``fp16``, or None for the backend's default.
        compile: ``torch.compile`` (torch only).
        providers: ONNX Runtime execution providers (None: the default order).
    """

    backend: str
    precision: str | None = None
    compile: bool = False
    providers: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """``torch-compile-bf16``-style name (the ``--backends`` syntax)."""
        parts = [self.backend]
        if self.compile:
            parts.append("compile")
        if self.providers:
            parts.append(
                next(k for k, v in _EP_TOKENS.items() if tuple(v) == self.providers)
            )
        if self.precision:
            parts.append(self.precision)
        return "-".join(parts)


def parse_variants(text: str) -> list[Variant]:
    """Parse ``--backends``: comma-separated ``backend[-token...]`` names.

    Tokens: a precision (``fp32``, ``bf16``, ``fp16``), ``compile`` (torch) and, for
    onnx, the execution providers (``cpu``, ``cuda``: CUDA EP then CPU, ``trt``:
    TensorRT EP, CUDA, CPU). Examples: ``torch``, ``torch-bf16``,
    ``torch-compile``, ``onnx``, ``onnx-cuda-fp16``, ``tensorrt``.

    Raises:
        BackendOptionError: an unknown backend or token, naming the valid ones.
    """
    out: list[Variant] = []
    for item in (t.strip().lower() for t in text.split(",")):
        if not item:
            continue
        backend, *tokens = item.split("-")
        if backend not in ("torch", "onnx", "tensorrt"):
            raise BackendOptionError(
                f"--backends: unknown backend {backend!r} in {item!r}; use torch, "
                "onnx or tensorrt (e.g. torch,torch-bf16,onnx,onnx-cuda-fp16)"
            )
        precision: str | None = None
        compile_ = False
        providers: tuple[str, ...] | None = None
        for tok in tokens:
            if tok in _PRECISIONS:
                precision = tok
            elif tok == "compile" and backend == "torch":
                compile_ = True
            elif tok in _EP_TOKENS and backend == "onnx":
                providers = tuple(_EP_TOKENS[tok])
            else:
                valid = {
                    "torch": "fp32, bf16, fp16, compile",
                    "onnx": "fp32, fp16, cpu, cuda, trt",
                    "tensorrt": "(none)",
                }[backend]
                raise BackendOptionError(
                    f"--backends: unknown option {tok!r} in {item!r}; {backend} "
                    f"takes {valid}"
                )
        v = Variant(backend, precision, compile_, providers)
        if v not in out:
            out.append(v)
    if not out:
        raise BackendOptionError("--backends: name at least one backend")
    return out


def write_bench_scene(
    path: Path, size: int, *, nodata_fraction: float = 0.0, seed: int = 0
) -> Path:
    """Write a ``size × size`` speckled DN scene (UTM, 10 m), strip by strip."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    rng = np.random.default_rng(seed)
    empty_rows = round(size * nodata_fraction)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "nodata": 0,
        "crs": CRS.from_epsg(32654),
        "transform": Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 4000000.0),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        step = 512
        for r in range(0, size, step):
            h = min(step, size - r)
            # σ0 around −12 dB with 3-look gamma speckle, as amplitude DN
            db = -12.0 + 6.0 * np.sin(np.arange(size) / 97.0)[None, :]
            power = 10 ** (db / 10) * rng.gamma(3.0, 1 / 3.0, size=(h, size))
            dn = np.sqrt(power * 10 ** (83.0 / 10))
            dn = np.clip(np.rint(dn), 1, 65535).astype(np.uint16)
            rows = np.arange(r, r + h)
            dn[rows < empty_rows] = 0
            ds.write(dn, 1, window=((r, r + h), (0, size)))
    return path


def agreement_tiles(scene: Path, spec: Any, count: int) -> np.ndarray:
    """``count`` normalised tiles ``[N, 1, T, T]`` spread over a DN scene.

    The tiles go through the same radiometry as ``predict`` (DN → σ0 dB with the
    model's calibration factor, clip, the model's mean/std).
    """
    import rasterio

    from alosmap.io.scene import normalize
    from alosmap.radiometry import dn_to_db

    t = spec.tile_size
    with rasterio.open(scene) as ds:
        h, w = ds.height, ds.width
        if h < t or w < t:
            raise BackendOptionError(f"the agreement scene must be >= {t} px")
        side = max(1, int(np.ceil(np.sqrt(count))))
        rows = np.linspace(0, h - t, side).round().astype(int)
        cols = np.linspace(0, w - t, side).round().astype(int)
        out = []
        for r in rows:
            for c in cols:
                if len(out) == count:
                    break
                dn = ds.read(1, window=((int(r), int(r) + t), (int(c), int(c) + t)))
                db = dn_to_db(dn, spec.radiometry.calibration_factor_db)
                valid = np.isfinite(db)
                out.append(normalize(np.nan_to_num(db), valid, spec)[None])
    return np.stack(out).astype(np.float32)


def agreement(ref: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Argmax agreement (% of pixels) and max |Δprob| of ``probs`` against ``ref``.

    For one output (water) the argmax is the 0.5 threshold.
    """
    if ref.shape != probs.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {probs.shape}")
    if ref.shape[1] == 1:
        same = (ref[:, 0] >= 0.5) == (probs[:, 0] >= 0.5)
    else:
        same = ref.argmax(1) == probs.argmax(1)
    return {
        "argmax_pct": float(100.0 * same.mean()),
        "max_abs_dprob": float(np.abs(ref.astype(np.float64) - probs).max()),
    }


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    ``VmHWM`` where Linux has it: ``ru_maxrss`` carries the parent's peak across
    fork + exec, so a child of a bench that exported a big model would report the
    parent's RSS; ``VmHWM`` belongs to the child's own address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _GpuMemory:
    """Device memory in use (total − free), highest seen, above a baseline."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.index = int(device.split(":", 1)[1]) if ":" in device else 0
        self.base = self._used()
        self.peak = self.base

    def _used(self) -> float:
        free, total = self.torch.cuda.mem_get_info(self.index)
        return float(total - free) / 2**20

    def sample(self) -> float:
        self.peak = max(self.peak, self._used())
        return self.peak - self.base


def _open(args: dict[str, Any]) -> Any:
    from alosmap.runtime import load_runtime

    if args["backend"] == "onnx" and args.get("providers"):
        from alosmap.runtime.onnx_backend import OnnxRuntime

        cpu_only = args["providers"] == ["CPUExecutionProvider"]
        return OnnxRuntime(
            Path(args["model"]),
            device="cpu" if cpu_only else args["device"],
            threads=args.get("threads"),
            precision=args.get("precision"),
            batch_size=args.get("e2e_batch"),
            providers=args["providers"],
        )
    return load_runtime(
        args["model"],
        backend=args["backend"],
        device=args["device"],
        threads=args.get("threads"),
        precision=args.get("precision"),
        compile=bool(args.get("compile")),
        batch_size=args.get("e2e_batch"),
    )


def compare_child(args: dict[str, Any]) -> dict[str, Any]:
    """The measurement a comparison child makes (see the module docstring)."""
    import importlib

    from alosmap.runtime.base import BACKEND_MODULES

    gpu = args["device"].startswith("cuda")
    # import the backend first: load_s is opening the model, not importing a library
    with contextlib.suppress(ImportError):
        importlib.import_module(BACKEND_MODULES[args["backend"]])
    mem = _GpuMemory(args["device"]) if gpu else None
    t0 = time.perf_counter()
    rt = _open(args)
    load_s = time.perf_counter() - t0
    tiles = np.load(args["tiles"])
    tile = rt.spec.tile_size
    rng = np.random.default_rng(0)
    rows = []
    first_s = None
    for b in sorted(args["batch_sizes"]):
        x = tiles[rng.integers(0, len(tiles), b)] if len(tiles) else None
        if x is None or x.shape[-1] != tile:
            x = rng.standard_normal((b, 1, tile, tile), dtype=np.float32)
        t = time.perf_counter()
        rt.run(x)  # warm-up (compilation, engine build, allocator growth)
        warm = time.perf_counter() - t
        first_s = warm if first_s is None else first_s
        n = args["batches"]
        t = time.perf_counter()
        for _ in range(n):
            rt.run(x)
        dt = time.perf_counter() - t
        rows.append(
            {
                "batch_size": b,
                "tiles_per_s": n * b / dt,
                "ms_per_tile": 1000.0 * dt / (n * b),
                "warmup_s": warm,
                "peak_mb": mem.sample() if mem else _peak_rss_mb(),
            }
        )
    chunk = max(args["batch_sizes"])
    probs = np.concatenate(
        [rt.run(tiles[i : i + chunk]) for i in range(0, len(tiles), chunk)]
    )
    np.save(args["probs"], probs.astype(np.float32))
    e2e = None
    if args.get("scene"):
        from alosmap.predict.pipeline import predict_scene

        res = predict_scene(
            args["scene"],
            args["output"],
            runtime=rt,
            batch_size=args["e2e_batch"],
            overlap=args["overlap"],
            overwrite=True,
        )
        e2e = {
            "size": args["size"],
            "batch_size": args["e2e_batch"],
            "seconds": res.seconds,
            "tiles_run": res.tiles_run,
            "tiles_total": res.tiles_total,
            "tiles_per_s": res.tiles_run / res.seconds,
            "peak_mb": mem.sample() if mem else _peak_rss_mb(),
            "japan_hours": res.seconds * JAPAN_PIXELS / args["size"] ** 2 / 3600.0,
        }
    return {
        "backend": rt.name,
        "precision": getattr(rt, "precision", None),
        "providers": list(getattr(rt, "providers", []) or []),
        "threads": getattr(rt, "threads", None),
        "load_s": load_s,
        "first_batch_s": first_s,
        "memory": "gpu" if gpu else "rss",
        "rows": rows,
        "e2e": e2e,
    }


def _child(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "alosmap.predict.bench", mode, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = re.sub(r"^[\w.]+(Error|Exception): ", "", (err or ["(no output)"])[-1])
        raise AlosmapError(f"benchmark child failed: {last}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@dataclass
class CompareResult:
    """One variant's results in :func:`compare`."""

    variant: str
    backend: str
    precision: str | None = None
    providers: list[str] = field(default_factory=list)
    threads: int | None = None
    load_s: float | None = None
    first_batch_s: float | None = None
    memory: str = "rss"
    rows: list[dict[str, float]] = field(default_factory=list)
    agreement: dict[str, float] | None = None
    e2e: dict[str, float] | None = None
    error: str | None = None


def compare(
    variants: list[Variant],
    *,
    workdir: Path,
    model: Path | None = None,
    onnx: Path | None = None,
    onnx_fp16: Path | None = None,
    engine: Path | None = None,
    device: str = "cpu",
    batch_sizes: tuple[int, ...] = (8,),
    batches: int = 3,
    agree_tiles: int = 8,
    size: int = 2000,
    e2e_batch: int = 8,
    overlap: int = 64,
    threads: int | None = None,
) -> dict[str, Any]:
    """Compare runtimes on the same model and tiles (see the module docstring).

    Args:
        variants: what to compare (:func:`parse_variants`).
        workdir: scratch folder (scenes, maps, probabilities).
        model: the ``.safetensors`` model (torch variants and the fp32 reference).
        onnx: its fp32 ONNX export (onnx variants).
        onnx_fp16: its fp16 ONNX export (``onnx-…-fp16`` variants).
        engine: a TensorRT engine (tensorrt variants).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batch_sizes: batch sizes timed model-only.
        batches: timed batches per batch size (after one warm-up batch).
        agree_tiles: tiles compared with PyTorch fp32.
        size: side of the generated scene for the end-to-end run (0: none).
        e2e_batch: batch size of the end-to-end run.
        overlap: tile overlap of the end-to-end run.
        threads: intra-op CPU threads (default: the physical cores).

    Returns:
        ``{"reference": label, "variants": [CompareResult as dict, ...], ...}``.
    """
    from alosmap.spec import load_spec

    files = {"torch": model, "onnx": onnx, "tensorrt": engine}
    any_file = next(p for p in (model, onnx, onnx_fp16, engine) if p is not None)
    spec = load_spec(any_file)
    scene_size = size if size else max(1024, spec.tile_size)
    scene = workdir / f"bench_{scene_size}.tif"
    if not scene.exists():
        write_bench_scene(scene, scene_size)
    tiles_path = workdir / "agreement_tiles.npy"
    np.save(tiles_path, agreement_tiles(scene, spec, agree_tiles))
    base = {
        "device": device,
        "threads": threads,
        "batches": batches,
        "tiles": str(tiles_path),
        "overlap": overlap,
        "e2e_batch": e2e_batch,
        "size": size,
    }
    ref = Variant("torch", "fp32") if model is not None else variants[0]
    runs = list(variants)
    if ref not in runs and Variant("torch") in runs:
        ref = Variant("torch")
    results: list[CompareResult] = []
    ref_probs: np.ndarray | None = None
    order = [ref, *[v for v in runs if v != ref]]
    for v in order:
        shown = v in runs
        path = files.get(v.backend)
        if v.backend == "onnx" and v.precision == "fp16" and onnx_fp16 is not None:
            path = onnx_fp16
        res = CompareResult(variant=v.label, backend=v.backend, precision=v.precision)
        if path is None:
            res.error = f"no {v.backend} model file for this variant"
            results.append(res)
            continue
        probs_path = workdir / f"probs_{v.label}.npy"
        args = {
            **base,
            "model": str(path),
            "backend": v.backend,
            "precision": None
            if (v.backend == "onnx" and path == onnx_fp16)
            else v.precision,
            "compile": v.compile,
            "providers": list(v.providers) if v.providers else None,
            "probs": str(probs_path),
            "batch_sizes": list(batch_sizes) if shown else [min(batch_sizes)],
            "batches": batches if shown else 1,
            "scene": str(scene) if (size and shown) else None,
            "output": str(workdir / f"map_{v.label}.tif"),
        }
        try:
            out = _child("compare", args)
        except AlosmapError as exc:
            res.error = str(exc).removeprefix("benchmark child failed: ")
            if shown:
                results.append(res)
            continue
        keys = (
            "precision",
            "providers",
            "threads",
            "load_s",
            "first_batch_s",
            "memory",
        )
        for key in keys:
            setattr(res, key, out[key])
        res.rows, res.e2e = out["rows"], out["e2e"]
        probs = np.load(probs_path)
        if v == ref:
            ref_probs = probs
        elif ref_probs is not None:
            res.agreement = agreement(ref_probs, probs)
        if shown:
            results.append(res)
    return {
        "reference": ref.label if ref_probs is not None else None,
        "device": device,
        "agreement_tiles": agree_tiles,
        "variants": [asdict(r) for r in results],
    }


def run_child(args: dict[str, Any]) -> BenchResult:
    """The measurement a pipeline child makes (:func:`measure`)."""
    from alosmap.predict.pipeline import predict_scene

    rt = _open({**args, "e2e_batch": args["batch_size"]})
    tile = rt.spec.tile_size
    b = args["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, 1, tile, tile), dtype=np.float32)
    rt.run(x)  # warm-up
    n = args["batches"]
    t0 = time.perf_counter()
    for _ in range(n):
        rt.run(x)
    model_tps = n * b / (time.perf_counter() - t0)
    res = predict_scene(
        args["scene"],
        args["output"],
        runtime=rt,
        batch_size=b,
        overlap=args["overlap"],
        overwrite=True,
    )
    e2e_tps = res.tiles_run / res.seconds
    return BenchResult(
        size=args["size"],
        nodata_fraction=args["nodata_fraction"],
        backend=rt.name,
        batch_size=b,
        model_tiles_per_s=model_tps,
        e2e_tiles_per_s=e2e_tps,
        efficiency=e2e_tps / model_tps,
        tiles_run=res.tiles_run,
        tiles_total=res.tiles_total,
        e2e_seconds=res.seconds,
        peak_rss_mb=_peak_rss_mb(),
    )


def measure(
    model: Path,
    size: int,
    *,
    workdir: Path,
    backend: str = "auto",
    device: str = "cpu",
    batch_size: int = 8,
    batches: int = 3,
    overlap: int = 64,
    nodata_fraction: float = 0.0,
    threads: int | None = None,
    precision: str | None = None,
    compile: bool = False,
) -> BenchResult:
    """Generate a scene and measure the pipeline on it in a child process."""
    scene = workdir / f"bench_{size}_{int(nodata_fraction * 100)}.tif"
    if not scene.exists():
        write_bench_scene(scene, size, nodata_fraction=nodata_fraction)
    args = {
        "model": str(model),
        "scene": str(scene),
        "output": str(workdir / f"map_{size}_{int(nodata_fraction * 100)}.tif"),
        "size": size,
        "backend": backend,
        "device": device,
        "batch_size": batch_size,
        "batches": batches,
        "overlap": overlap,
        "nodata_fraction": nodata_fraction,
        "threads": threads,
        "precision": precision,
        "compile": compile,
    }
    return BenchResult(**_child("pipeline", args))


def temp_workdir() -> tempfile.TemporaryDirectory[str]:
    """A scratch directory for scenes and maps."""
    return tempfile.TemporaryDirectory(prefix="alosmap-bench-")


def _main(argv: list[str]) -> None:
    os.environ.setdefault("GDAL_CACHEMAX", "64")  # as the CLI does
    mode, payload = (argv[1], argv[2]) if len(argv) > 2 else ("pipeline", argv[1])
    args = json.loads(payload)
    if mode == "compare":
        print(json.dumps(compare_child(args)))
    else:
        print(json.dumps(asdict(run_child(args))))


if __name__ == "__main__":  # a child process
    _main(sys.argv)
