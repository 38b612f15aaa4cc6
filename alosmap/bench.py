"""Benchmarks of the prediction pipeline (``alosmap bench``).

Each measurement runs in a fresh child process (``python -m alosmap.bench``) so that
its peak resident memory (``ru_maxrss``) belongs to that measurement alone. A child:

1. opens the model with the chosen backend;
2. **model only**: runs ``--batches`` batches of random normalised tiles through the
   runtime after one warm-up batch → tiles/s at that batch size;
3. **end to end**: runs :func:`~alosmap.pipeline.predict_scene` on a generated scene
   with the same runtime → tiles/s over the whole run (reading, blending, writing the
   COG included; model loading excluded, since the runtime is already open);
4. reports both, their ratio (pipeline efficiency) and the peak RSS.

Scenes are speckled uint16 DN rasters written strip by strip (bounded memory), with
an optional fraction of no-data rows at the top.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class BenchResult:
    """One child's measurements."""

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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(args: dict[str, Any]) -> BenchResult:
    """The measurement a child process makes (see the module docstring)."""
    from .pipeline import predict_scene
    from .runtime import load_runtime

    rt = load_runtime(
        args["model"],
        backend=args["backend"],
        device=args["device"],
        threads=args.get("threads"),
    )
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
) -> BenchResult:
    """Generate a scene and measure it in a child process."""
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
    }
    proc = subprocess.run(
        [sys.executable, "-m", "alosmap.bench", json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        from .errors import AlosmapError

        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise AlosmapError(f"benchmark child failed: {tail[0]}")
    return BenchResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def temp_workdir() -> tempfile.TemporaryDirectory:
    """A scratch directory for scenes and maps."""
    return tempfile.TemporaryDirectory(prefix="alosmap-bench-")


if __name__ == "__main__":  # the child process
    os.environ.setdefault("GDAL_CACHEMAX", "64")  # as the CLI does
    result = run_child(json.loads(sys.argv[1]))
    print(json.dumps(asdict(result)))
