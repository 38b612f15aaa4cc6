"""Benchmarks of the runtimes and of the prediction pipeline (``alosmap bench``).

Every measurement runs in a fresh child process (``python -m
alosmap.predict.bench``), so the peak memory it reports belongs to that
measurement alone.

**Backend comparison** (:func:`compare`). For each variant (backend, precision,
``torch.compile``, execution providers) a child:

1. opens the model with that runtime (load time);
2. for each batch size, ascending: one warm-up batch (its time is reported: that is
   where ``torch.compile`` compiles and TensorRT builds), then ``batches`` timed
   batches → tiles/s and ms/tile. The batch is put on the runtime's device before
   the clock starts and the probabilities stay there (the runtime protocol), and on a
   GPU the clock stops after ``torch.cuda.synchronize``: this is the model alone,
   without host copies. Then the peak memory so far: ``ru_maxrss`` on the
   CPU (it only grows, so ascending batch sizes give each one's peak), and on a GPU
   the device memory in use (total − free, from ``cudaMemGetInfo``; no NVML needed,
   and the same measure for every backend) minus what was in use before the model was
   loaded;
3. runs a fixed set of agreement tiles, cut from the generated scene exactly as
   ``predict`` reads it (:func:`agreement_tiles`), and saves their probabilities;
   the parent compares them with the reference's on the same tiles: argmax
   agreement (% of pixels) and max |Δprob|. The reference is PyTorch fp32 with a
   ``.safetensors`` model, else the first variant (onnx fp32 for an ``.onnx``
   model);
4. end to end: :func:`~alosmap.predict.pipeline.predict_scene` on a generated
   ``size²`` scene with the open runtime (reading, blending and COG writing
   included, model loading excluded) → seconds, tiles/s, and the hours that rate
   implies for all of Japan (:data:`JAPAN_PIXELS` at 10 m).

**Pipeline** (:func:`measure`): model-only vs end-to-end throughput at one batch size
(their ratio is the pipeline efficiency), peak RSS at several scene sizes, and a scene
whose top rows are no data.

Scenes are speckled uint16 DN rasters written strip by strip (bounded memory), with an
optional fraction of no-data rows at the top.

:func:`run_bench` is the whole ``alosmap bench`` from a :class:`BenchRequest`: the
model files (a random model without one, ONNX exports made on the fly by the exporter
the caller passes), the comparison, then the pipeline measurements.
:func:`plan_bench` settles the variants and the model first; without PyTorch (the
lean install) that is ONNX Runtime alone on an ``.onnx`` model (the bundled
``lulc.onnx`` by default): nothing here or in the children then imports torch (the
runtime's arrays are NumPy), and what needs it is refused before any work.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from alosmap.errors import AlosmapError, BackendOptionError

if TYPE_CHECKING:
    from alosmap.runtime.base import Runtime
    from alosmap.spec import ModelSpec

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


class OnnxExporter(Protocol):
    """Writes an ONNX file of a model (``alosmap.export.onnx.export_onnx``)."""

    def __call__(
        self, model: Any, path: Path, *, metadata: Mapping[str, str], fp16: bool = ...
    ) -> Path:
        """Export ``model`` to ``path`` with ``metadata``; return the path."""
        ...


@dataclass(frozen=True)
class BenchRequest:
    """What ``alosmap bench`` measures (its options, parsed).

    Attributes:
        variants: the runtimes to compare (:func:`parse_variants`).
        model: the model file (``.safetensors``, ``.onnx`` or an engine); None for a
            random model of ``preset``.
        preset: architecture of the random model.
        batch_sizes: batch sizes timed model-only.
        batch_size: batch size of the end-to-end and pipeline runs.
        batches: timed batches per batch size (after one warm-up batch).
        agree_tiles: tiles compared with PyTorch fp32.
        size: side of the generated scene run end to end (0: none).
        onnx: an ONNX export of ``model`` (None: exported on the fly when needed).
        engine: a TensorRT engine of ``model``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        overlap: tile overlap of the end-to-end runs.
        threads: intra-op CPU threads (None: the physical cores).
        rss_sizes: scene sides at which the pipeline's peak RSS is also measured.
        nodata_check: also time the first variant on a ``size`` scene whose top
            30 % is no data.
        notes: lines for the report from whoever settled the request
            (:func:`plan_bench`).
    """

    variants: tuple[Variant, ...]
    model: Path | None = None
    preset: str = "paper"
    batch_sizes: tuple[int, ...] = (8,)
    batch_size: int = 8
    batches: int = 3
    agree_tiles: int = 8
    size: int = 2000
    onnx: Path | None = None
    engine: Path | None = None
    device: str = "cpu"
    overlap: int | None = None  # None: predict's default for the model
    threads: int | None = None
    rss_sizes: tuple[int, ...] = ()
    nodata_check: bool = False
    notes: tuple[str, ...] = ()


@dataclass
class BenchFiles:
    """The model files of a bench run, by backend.

    Attributes:
        name: file name of the measured model (for the report).
        torch: the ``.safetensors`` model (torch variants and the fp32 reference).
        onnx: its fp32 ONNX export (onnx variants).
        onnx_fp16: its fp16 ONNX export (``onnx-…-fp16`` variants).
        engine: a TensorRT engine (tensorrt variants).
    """

    name: str
    torch: Path | None = None
    onnx: Path | None = None
    onnx_fp16: Path | None = None
    engine: Path | None = None

    def for_backend(self, backend: str) -> Path | None:
        """The file a backend runs (fp32 ONNX for onnx)."""
        return {"torch": self.torch, "onnx": self.onnx, "tensorrt": self.engine}.get(
            backend
        )

    def for_variant(self, v: Variant) -> Path | None:
        """The file a variant runs: the fp16 export for ``onnx-…-fp16`` if any."""
        if v.backend == "onnx" and v.precision == "fp16" and self.onnx_fp16 is not None:
            return self.onnx_fp16
        return self.for_backend(v.backend)

    def any(self) -> Path:
        """One of the files (they all carry the model spec)."""
        return next(
            p
            for p in (self.torch, self.onnx, self.onnx_fp16, self.engine)
            if p is not None
        )


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


def agreement_tiles(scene: Path, spec: ModelSpec, count: int) -> np.ndarray:
    """``count`` normalised tiles ``[N, 1, T, T]`` spread over a scene.

    The tiles are windows of the pipeline's grid (default overlap) read exactly as
    ``predict`` reads them (:func:`~alosmap.predict.tiles.read_strip_tiles`: units,
    masks, DN → σ0 dB with the model's calibration, clip, the model's mean/std):
    a ``⌈√count⌉²`` subgrid spread evenly over the scene, the first ``count`` of
    them row by row (windows without valid pixels are skipped, as predict does).

    Raises:
        BackendOptionError: a scene smaller than a tile, or without valid windows.
    """
    from alosmap.io.scene import Scene
    from alosmap.predict.options import default_overlap
    from alosmap.predict.tiles import read_strip_tiles
    from alosmap.tiling import axis_starts

    t = spec.tile_size
    out: list[np.ndarray] = []
    with Scene(scene, spec.radiometry) as ds:
        h, w = ds.info.height, ds.info.width
        if h < t or w < t:
            raise BackendOptionError(f"the agreement scene must be >= {t} px")
        side = max(1, int(np.ceil(np.sqrt(count))))
        ov = default_overlap(t)
        rows = _spread(axis_starts(h, t, ov), side)
        cols = _spread(axis_starts(w, t, ov), side)
        for r in rows:
            if len(out) >= count:
                break
            strip = read_strip_tiles(ds, spec.radiometry, r, t, cols)
            out.extend(x for _, x in strip.tiles)
    if not out:
        raise BackendOptionError(f"{scene}: no window with valid pixels")
    return np.stack(out[:count])[:, None].astype(np.float32)


def _spread(starts: list[int], n: int) -> list[int]:
    """``n`` of ``starts`` spread evenly from the first to the last (may repeat)."""
    picks = np.linspace(0, len(starts) - 1, n).round().astype(int)
    return [starts[i] for i in picks]


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


def peak_rss_mb() -> float:
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


def _time_batches(rt: Runtime, x: np.ndarray, n: int) -> tuple[float, float, float]:
    """One warm-up call, then ``n`` timed calls: ``(warm-up s, timed s, timed CPU s)``.

    The CPU seconds are the process's (every thread): on a shared machine they, not
    the wall-clock seconds, say what the work costs.

    ``x`` is put in the runtime's array kind first: a NumPy array for a host runtime
    (ONNX Runtime on the CPU: no PyTorch imported), else a torch tensor on the
    runtime's device; on a GPU each measurement ends with ``torch.cuda.synchronize``
    (runs are queued, not finished, when ``run`` returns). The warm-up is where
    ``torch.compile`` compiles, TensorRT builds and the allocators grow.
    """
    batch, sync = _runtime_batch(rt, x)
    sync()
    t = time.perf_counter()
    rt.run(batch)
    sync()
    warm = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        rt.run(batch)
    sync()
    return warm, time.perf_counter() - t, time.process_time() - c


def _runtime_batch(rt: Runtime, x: np.ndarray) -> tuple[Any, Callable[[], None]]:
    """``x`` as ``rt.run`` takes it, and what waits for the runtime's queued work."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if getattr(rt, "array_kind", "torch") == "numpy":  # nothing is queued on a host
        return x, lambda: None
    import torch

    device = rt.device

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    return torch.from_numpy(x).to(device), sync


def _predict_bench_scene(rt: Runtime, args: dict[str, Any], batch: int) -> Any:
    """``predict_scene`` on the child's generated scene with the open runtime."""
    from alosmap.predict.pipeline import predict_scene

    return predict_scene(
        args["scene"],
        args["output"],
        runtime=rt,
        batch_size=batch,
        overlap=args["overlap"],
        overwrite=True,
    )


def compare_child(args: dict[str, Any]) -> dict[str, Any]:
    """The measurement a comparison child makes (see the module docstring)."""
    import importlib

    from alosmap.runtime.base import BACKEND_MODULES, run_numpy

    gpu = args["device"].startswith("cuda")
    # import the backend first: load_s is opening the model, not importing a library
    with contextlib.suppress(ImportError):
        importlib.import_module(BACKEND_MODULES[args["backend"]])
    mem = _GpuMemory(args["device"]) if gpu else None
    t0 = time.perf_counter()
    rt = _open(args)
    load_s = time.perf_counter() - t0
    tiles = np.load(args["tiles"])
    rows, first_s = _model_rows(rt, tiles, args, mem)
    chunk = max(args["batch_sizes"])
    probs = np.concatenate(
        [run_numpy(rt, tiles[i : i + chunk]) for i in range(0, len(tiles), chunk)]
    )
    np.save(args["probs"], probs)
    return {
        "backend": rt.name,
        "precision": getattr(rt, "precision", None),
        "providers": list(getattr(rt, "providers", []) or []),
        "threads": getattr(rt, "threads", None),
        "load_s": load_s,
        "first_batch_s": first_s,
        "memory": "gpu" if gpu else "rss",
        "rows": rows,
        "e2e": _e2e_row(rt, args, mem) if args.get("scene") else None,
    }


def _peak_mb(mem: _GpuMemory | None) -> float:
    """Peak device memory above the baseline on a GPU, else this process's RSS."""
    return mem.sample() if mem else peak_rss_mb()


def _model_rows(
    rt: Runtime, tiles: np.ndarray, args: dict[str, Any], mem: _GpuMemory | None
) -> tuple[list[dict[str, float]], float | None]:
    """Model-only rows, ascending batch sizes; and the first warm-up's seconds."""
    tile = rt.spec.tile_size
    rng = np.random.default_rng(0)
    rows = []
    first_s = None
    for b in sorted(args["batch_sizes"]):
        x = tiles[rng.integers(0, len(tiles), b)] if len(tiles) else None
        if x is None or x.shape[-1] != tile:
            x = rng.standard_normal((b, 1, tile, tile), dtype=np.float32)
        n = args["batches"]
        warm, dt, cpu = _time_batches(rt, x, n)
        first_s = warm if first_s is None else first_s
        rows.append(
            {
                "batch_size": b,
                "tiles_per_s": n * b / dt,
                "tiles_per_cpu_s": n * b / cpu,
                "ms_per_tile": 1000.0 * dt / (n * b),
                "warmup_s": warm,
                "peak_mb": _peak_mb(mem),
            }
        )
    return rows, first_s


def _e2e_row(
    rt: Runtime, args: dict[str, Any], mem: _GpuMemory | None
) -> dict[str, float]:
    """The end-to-end row: predict on the generated scene, and the Japan hours."""
    c = time.process_time()
    res = _predict_bench_scene(rt, args, args["e2e_batch"])
    cpu = time.process_time() - c
    return {
        "tiles_per_cpu_s": res.tiles_run / cpu,
        "size": args["size"],
        "batch_size": args["e2e_batch"],
        "seconds": res.seconds,
        "tiles_run": res.tiles_run,
        "tiles_total": res.tiles_total,
        "tiles_per_s": res.tiles_run / res.seconds,
        "peak_mb": _peak_mb(mem),
        "japan_hours": res.seconds * JAPAN_PIXELS / args["size"] ** 2 / 3600.0,
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
    #: why the variant was not run: a precision the device has no native
    #: arithmetic for (also its ``error``, so it counts as not measured)
    skipped: str | None = None


def compare(
    request: BenchRequest, files: BenchFiles, *, workdir: Path
) -> dict[str, Any]:
    """Compare runtimes on the same model and tiles (see the module docstring).

    Args:
        request: the variants and settings (batch sizes, scene size, device, ...).
        files: the model files of the backends.
        workdir: scratch folder (scenes, maps, probabilities).

    Returns:
        ``{"reference": label, "variants": [CompareResult as dict, ...], ...}``.
    """
    from alosmap.spec import load_spec

    spec = load_spec(files.any())
    scene_size = request.size if request.size else max(1024, spec.tile_size)
    scene = workdir / f"bench_{scene_size}.tif"
    if not scene.exists():
        write_bench_scene(scene, scene_size)
    tiles = workdir / "agreement_tiles.npy"
    np.save(tiles, agreement_tiles(scene, spec, request.agree_tiles))
    run = _Comparison(request, files, workdir, scene if request.size else None, tiles)
    variants = request.variants
    ref = _reference_variant(variants, files.torch is not None)
    results: list[CompareResult] = []
    ref_probs: np.ndarray | None = None
    for v in [ref, *[v for v in variants if v != ref]]:
        shown = v in variants
        res, probs = run.variant(v, shown)
        if probs is not None and v == ref:
            ref_probs = probs
        elif probs is not None and ref_probs is not None:
            res.agreement = agreement(ref_probs, probs)
        if shown or files.for_variant(v) is None:  # a missing file is always shown
            results.append(res)
    return {
        "reference": ref.label if ref_probs is not None else None,
        "device": request.device,
        "agreement_tiles": request.agree_tiles,
        "variants": [asdict(r) for r in results],
    }


def _reference_variant(variants: Sequence[Variant], has_model: bool) -> Variant:
    """The variant the others are compared with: PyTorch fp32 when there is a model.

    Without a ``.safetensors`` model the first variant; a plain ``torch`` variant
    stands in for ``torch-fp32`` (the same thing) when only it is asked for.
    """
    ref = Variant("torch", "fp32") if has_model else variants[0]
    if ref not in variants and Variant("torch") in variants:
        ref = Variant("torch")
    return ref


@dataclass
class _Comparison:
    """What every variant of one :func:`compare` shares: settings, files, inputs."""

    request: BenchRequest
    files: BenchFiles
    workdir: Path
    scene: Path | None
    tiles: Path

    def variant(
        self, v: Variant, shown: bool
    ) -> tuple[CompareResult, np.ndarray | None]:
        """Measure one variant in a child; its result and its agreement-tile probs.

        A variant that is not ``shown`` (the reference alone) only runs its
        agreement tiles: the smallest batch size, one timed batch, no scene.
        """
        res = CompareResult(variant=v.label, backend=v.backend, precision=v.precision)
        path = self.files.for_variant(v)
        if path is None:
            res.error = f"no {v.backend} model file for this variant"
            return res, None
        from alosmap.runtime.probe import precision_problem

        why = precision_problem(v.precision, self.request.device, v.backend)
        if why is not None:
            res.error = res.skipped = f"{v.precision} is not native here: {why}"
            return res, None
        probs_path = self.workdir / f"probs_{v.label}.npy"
        try:
            out = _child("compare", self._args(v, path, shown, probs_path))
        except AlosmapError as exc:
            res.error = str(exc).removeprefix("benchmark child failed: ")
            return res, None
        for key in ("precision", "providers", "threads", "load_s", "first_batch_s"):
            setattr(res, key, out[key])
        res.memory, res.rows, res.e2e = out["memory"], out["rows"], out["e2e"]
        return res, np.load(probs_path)

    def _args(self, v: Variant, path: Path, shown: bool, probs: Path) -> dict[str, Any]:
        """The arguments of a variant's comparison child (:func:`compare_child`)."""
        r = self.request
        fp16_file = v.backend == "onnx" and path == self.files.onnx_fp16
        return {
            "device": r.device,
            "threads": r.threads,
            "tiles": str(self.tiles),
            "overlap": r.overlap,
            "e2e_batch": r.batch_size,
            "size": r.size,
            "model": str(path),
            "backend": v.backend,
            "precision": None if fp16_file else v.precision,
            "compile": v.compile,
            "providers": list(v.providers) if v.providers else None,
            "probs": str(probs),
            "batch_sizes": list(r.batch_sizes) if shown else [min(r.batch_sizes)],
            "batches": r.batches if shown else 1,
            "scene": str(self.scene) if (self.scene and shown) else None,
            "output": str(self.workdir / f"map_{v.label}.tif"),
        }


def run_child(args: dict[str, Any]) -> BenchResult:
    """The measurement a pipeline child makes (:func:`measure`)."""
    rt = _open({**args, "e2e_batch": args["batch_size"]})
    tile = rt.spec.tile_size
    b = args["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, 1, tile, tile), dtype=np.float32)
    n = args["batches"]
    model_tps = n * b / _time_batches(rt, x, n)[1]
    res = _predict_bench_scene(rt, args, b)
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
        peak_rss_mb=peak_rss_mb(),
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
    overlap: int | None = None,
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


def run_bench(
    request: BenchRequest, *, export_onnx: OnnxExporter | None = None
) -> dict[str, Any]:
    """``alosmap bench``: compare the variants, then the pipeline measurements.

    Works in a temporary folder: the random model (without ``request.model``), the
    ONNX exports made on the fly, the generated scenes and maps.

    Args:
        request: what to measure.
        export_onnx: the ONNX exporter, for onnx variants of a ``.safetensors``
            model without ``request.onnx`` (the export package provides it).

    Returns:
        The :func:`compare` report plus ``model`` (file name), ``machine`` (one
        line), ``notes`` and, when measured, ``pipeline`` (:class:`BenchResult`
        dicts).

    Raises:
        BackendOptionError: a tensorrt variant without an engine, or onnx variants
            that need an export and no ``export_onnx``.
        BenchError: no variant could be measured (each one's error named); some
            variants failing is no error: the report names their errors.
    """
    notes = list(request.notes)
    with temp_workdir() as tmp:
        work = Path(tmp)
        files = _bench_files(request, work, notes, export_onnx)
        report = compare(request, files, workdir=work)
        check_measured(report["variants"])
        pipeline = _pipeline_runs(request, files, work)
    report.update(model=files.name, machine=machine_description(report), notes=notes)
    if pipeline:
        report["pipeline"] = [asdict(r) for r in pipeline]
    return report


#: The variants ``alosmap bench`` compares by default, with PyTorch installed.
DEFAULT_BACKENDS = "torch,onnx"


@dataclass(frozen=True)
class BenchPlan:
    """What ``alosmap bench`` measures, settled from its options before any work.

    Attributes:
        variants: the runtimes to compare.
        model: the model file; None for a random model of ``--preset``.
        note: one line saying what was chosen because PyTorch is not installed
            (None: nothing was).
    """

    variants: tuple[Variant, ...]
    model: Path | None
    note: str | None = None


def plan_bench(
    backends: str | None,
    model: Path | None,
    *,
    preset_given: bool = False,
    device: str = "cpu",
) -> BenchPlan:
    """The variants and model of ``alosmap bench``, before any work.

    With PyTorch: ``backends`` (default :data:`DEFAULT_BACKENDS`) and ``model`` as
    given (None: a random model of ``--preset``). Without PyTorch (the lean install):
    ``backends`` default to ``onnx`` and no ``model`` means the bundled
    ``lulc.onnx``, which the plan's note says; the agreement reference is then the
    first variant (onnx fp32), not PyTorch fp32.

    Args:
        backends: the ``--backends`` text; None when not given.
        model: the ``--model`` file; None when not given.
        preset_given: whether ``--preset`` was given (a random model needs PyTorch).
        device: the ``--device``.

    Raises:
        BackendOptionError: ``backends`` does not parse (:func:`parse_variants`).
        BackendUnavailableError: something asked for needs PyTorch, which is not
            installed: a torch or tensorrt variant, a ``.safetensors`` model, a
            random ``--preset`` model or a CUDA device (one line naming
            ``alosmap[torch]``).
    """
    from alosmap.runtime.base import backend_installed

    if backend_installed("torch"):
        variants = parse_variants(DEFAULT_BACKENDS if backends is None else backends)
        return BenchPlan(tuple(variants), model)
    variants = parse_variants("onnx" if backends is None else backends)
    _refuse_without_torch(variants, model, preset_given and model is None, device)
    what = []
    if model is None:
        from alosmap.predict.pipeline import default_model_path

        model = default_model_path("lulc")
        what.append(f"the bundled {model.name}")
    if backends is None:
        what.append("with onnx only")
    note = None
    if what:
        from alosmap._imports import install_hint

        note = (
            f"PyTorch is not installed: measuring {' '.join(what)} "
            f"({install_hint('torch')} for the torch variants)"
        )
    return BenchPlan(tuple(variants), model, note)


def _refuse_without_torch(
    variants: Sequence[Variant], model: Path | None, preset: bool, device: str
) -> None:
    """Raise the one line naming ``alosmap[torch]`` for the first thing needing it."""
    from alosmap._imports import require_torch

    needs = [f"--backends {v.label}" for v in variants if v.backend != "onnx"]
    if model is not None and model.suffix.lower() == ".safetensors":
        needs.append(f"--model {model.name} (a .safetensors model)")
    if preset:
        needs.append("--preset (a random model; pass an .onnx --model instead)")
    if device.startswith("cuda"):
        needs.append(f"--device {device}")
    if needs:
        require_torch(needs[0])  # PyTorch is not importable: this raises


class BenchError(AlosmapError):
    """Nothing could be measured: every variant of ``alosmap bench`` failed."""


def check_measured(variants: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a comparison in which no variant could be measured.

    Args:
        variants: the ``variants`` of a :func:`compare` report.

    Raises:
        BenchError: every variant failed; one line with each one's error.
    """
    if any(not v["error"] for v in variants):
        return
    why = "; ".join(
        f"{v['variant']}: {' '.join(str(v['error']).split())}" for v in variants
    )
    raise BenchError(f"no variant could be measured ({why})")


def _bench_files(
    request: BenchRequest,
    work: Path,
    notes: list[str],
    export_onnx: OnnxExporter | None,
) -> BenchFiles:
    """The files each backend runs: given, made at random, or exported here."""
    model = request.model
    if model is None:
        model = _random_model(request.preset, work)
        notes.append(f"{request.preset} preset, random weights")
    files = BenchFiles(model.name, onnx=request.onnx, engine=request.engine)
    key = {".safetensors": "torch", ".onnx": "onnx"}.get(model.suffix.lower(), "engine")
    setattr(files, key, model)
    wants = {v.backend for v in request.variants}
    if files.torch is not None and "onnx" in wants:
        _export_onnx_files(
            files, files.torch, request.variants, work, notes, export_onnx
        )
    if "tensorrt" in wants and files.engine is None:
        raise BackendOptionError(
            "--backends tensorrt needs an engine: pass --engine (build one with "
            "`alosmap export tensorrt`)"
        )
    return files


def _random_model(preset: str, workdir: Path) -> Path:
    """A LULC model of ``preset`` with random (seeded) weights: speed needs no more.

    Raises:
        BackendUnavailableError: PyTorch is not installed (one line naming
            ``alosmap[torch]``).
    """
    from alosmap._imports import require_torch

    torch = require_torch("a random model of --preset (no --model)")
    from alosmap.arch import get_preset
    from alosmap.classes import LULC
    from alosmap.models import build_model
    from alosmap.spec import default_spec, save_model

    spec = default_spec(LULC.name, get_preset(preset), name=f"{preset}-bench")
    torch.manual_seed(0)
    path: Path = save_model(
        build_model(spec.arch).eval(), spec, workdir / f"{preset}.safetensors"
    )
    return path


def _export_onnx_files(
    files: BenchFiles,
    model: Path,
    variants: Sequence[Variant],
    work: Path,
    notes: list[str],
    export_onnx: OnnxExporter | None,
) -> None:
    """Export ``model`` to ONNX: fp32 unless given, fp16 for ``onnx-…-fp16``.

    A failed fp16 export becomes a note: the fp16 variants then report it.
    """
    from alosmap.spec import SPEC_KEY, load_model

    fp16 = any(v.backend == "onnx" and v.precision == "fp16" for v in variants)
    if files.onnx is not None and not fp16:
        return
    if export_onnx is None:
        raise BackendOptionError(
            "the onnx variants need an ONNX export of the model: pass --onnx"
        )
    net, spec = load_model(model)
    meta = {SPEC_KEY: spec.to_json()}
    if files.onnx is None:
        t0 = time.perf_counter()
        files.onnx = export_onnx(net, work / "model.onnx", metadata=meta)
        notes.append(f"ONNX export {time.perf_counter() - t0:.0f} s")
    if fp16:
        try:
            files.onnx_fp16 = export_onnx(
                net, work / "model_fp16.onnx", metadata=meta, fp16=True
            )
        except AlosmapError as exc:  # the fp16 variants then report it
            notes.append(f"fp16 ONNX export failed: {exc}")


def _pipeline_runs(
    request: BenchRequest, files: BenchFiles, work: Path
) -> list[BenchResult]:
    """The pipeline measurements (:func:`measure`) with the first plain variant."""
    first = next((v for v in request.variants if v.providers is None), None)
    if first is None or not (request.nodata_check or request.rss_sizes):
        return []
    path = files.for_backend(first.backend)
    if path is None:
        return []
    kw: dict[str, Any] = dict(
        workdir=work,
        backend=first.backend,
        batch_size=request.batch_size,
        precision=first.precision,
        compile=first.compile,
        device=request.device,
        batches=request.batches,
        overlap=request.overlap,
        threads=request.threads,
    )
    out = []
    if request.nodata_check and request.size:
        out.append(measure(path, request.size, **kw))
        out.append(measure(path, request.size, nodata_fraction=0.3, **kw))
    out.extend(measure(path, s, **kw) for s in request.rss_sizes)
    return out


def machine_description(report: dict[str, Any]) -> str:
    """One line: the CPU, its cores, and the CPU threads the variants used."""
    import platform

    from alosmap.runtime.probe import cpu_info

    cpu = cpu_info()
    used = {v["threads"] for v in report["variants"] if v.get("threads")}
    return (
        f"{cpu['model']} ({platform.machine()}), {cpu['physical']} physical cores "
        f"({cpu['logical']} logical); CPU threads used: "
        + (", ".join(map(str, sorted(used))) or "-")
    )


def _main(argv: list[str]) -> None:
    from alosmap._process import configure_process

    configure_process("predict")  # as the CLI does for predict
    mode, payload = (argv[1], argv[2]) if len(argv) > 2 else ("pipeline", argv[1])
    args = json.loads(payload)
    if mode == "compare":
        print(json.dumps(compare_child(args)))
    else:
        print(json.dumps(asdict(run_child(args))))


if __name__ == "__main__":  # a child process
    _main(sys.argv)
