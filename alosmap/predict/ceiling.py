"""The prediction pipeline's own speed limit (``alosmap bench --ceiling``).

:func:`run_ceiling` runs the real :func:`~alosmap.predict.pipeline.predict_scene`
(reading, radiometry, blending, writing, COG build) on a generated scene with
:class:`NullRuntime`, a model that costs nothing: it returns fixed probabilities of
the right shape, already on the device. Whatever throughput comes out is the most
the pipeline can give any model on that machine; it has to stay far above the
model's own throughput (``alosmap bench``) for the model to set the speed.

The null model's probabilities are smooth fields (a few classes per tile, changing
from tile to tile), so the maps compress like real land-cover maps rather than
noise, which would make the COG build look slower than it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.io.cog_options import current_creation_options
from alosmap.predict.stages import StageClock
from alosmap.spec import ModelSpec

#: Distinct probability tiles the null model cycles through.
NULL_VARIANTS = 16
#: Stages that run on the host whatever the device (a GPU does none of them).
HOST_STAGES = ("read", "d2h", "write", "cog")


class NullRuntime:
    """A zero-cost model: fixed probabilities ``[B, K, T, T]`` on the device.

    Satisfies :class:`~alosmap.runtime.base.Runtime`. Batch position ``i`` gets
    precomputed tile ``i`` (of :data:`NULL_VARIANTS`, repeated for larger batches):
    the output is a view, as a real runtime's reused output buffer is.

    Args:
        spec: the spec whose task, classes and tile size to imitate.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the probability fields.
        array_kind: what :meth:`run` takes and returns: ``torch`` tensors (as the
            torch runtime) or ``numpy`` arrays (as ONNX Runtime on the CPU; no
            PyTorch is imported).
    """

    name = "null"
    precision: str | None = None
    path: Path | None = None
    threads: int | None = None

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "cpu",
        seed: int = 0,
        array_kind: str = "torch",
    ) -> None:
        if array_kind not in ("numpy", "torch"):
            raise ValueError(f"array_kind: numpy or torch, got {array_kind!r}")
        if array_kind == "numpy" and device != "cpu":
            raise ValueError("NumPy probabilities are on the CPU")
        self.spec = spec
        self.device = device
        self.array_kind = array_kind
        probs = null_probabilities(spec.num_outputs, spec.tile_size, seed)
        self._probs: Any = probs
        if array_kind == "torch":
            import torch

            self._probs = torch.from_numpy(probs).to(device)

    def run(self, batch: Any) -> Any:
        """Probabilities for ``batch`` (a view of the precomputed tiles)."""
        n = int(batch.shape[0])
        if n > len(self._probs):  # once per larger batch size
            reps = -(-n // len(self._probs))
            if isinstance(self._probs, np.ndarray):
                self._probs = np.concatenate([self._probs] * reps)
            else:
                self._probs = self._probs.repeat(reps, 1, 1, 1)
        return self._probs[:n]

    def close(self) -> None:
        """Nothing to release."""


def null_probabilities(k: int, tile: int, seed: int = 0) -> np.ndarray:
    """:data:`NULL_VARIANTS` smooth probability tiles ``[N, K, tile, tile]`` float32.

    Each class's logit is a low-frequency sinusoid with a random phase and
    orientation; a softmax (or, for one output, a sigmoid) turns them into
    probabilities.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32) / tile
    out = np.empty((NULL_VARIANTS, k, tile, tile), dtype=np.float32)
    for n in range(NULL_VARIANTS):
        f = rng.uniform(0.5, 2.0, size=(k, 2)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=k).astype(np.float32)
        gain = rng.uniform(1.0, 4.0, size=k).astype(np.float32)
        logits = gain[:, None, None] * np.sin(
            2 * np.pi * (f[:, 0, None, None] * yy + f[:, 1, None, None] * xx)
            + phase[:, None, None]
        )
        if k == 1:
            out[n] = 1.0 / (1.0 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(axis=0, keepdims=True))
            out[n] = e / e.sum(axis=0, keepdims=True)
    return out


#: Stages whose CPU share ``alosmap bench --ceiling`` prints, in this order.
SHARE_STAGES = ("finish", "cog", "radiometry", "blend", "read", "write", "cut")


@dataclass
class CeilingResult:
    """What :func:`run_ceiling` measured (the ``ceiling`` object of the JSON).

    ``tiles_per_cpu_s`` (tiles per CPU-second of the whole process, every thread)
    is the figure to compare on a shared machine; ``tiles_per_s`` is wall-clock.
    ``cpu_share`` gives each stage's part of the process's CPU time (the stages'
    own threads; ``other``: what no stage counts, such as opening the scene and
    GDAL's worker threads).
    """

    device: str
    size: int
    classes: int
    batch_size: int
    overlap: int
    confidence: bool
    probabilities: bool
    tiles: int
    seconds: float
    tiles_per_s: float
    host_tiles_per_s: float
    stages_ms_per_tile: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    peak_device_mb: float | None = None
    engine: str = "numpy"
    arrays: str = "numpy"
    cpu_seconds: float = 0.0
    tiles_per_cpu_s: float = 0.0
    cpu_share: dict[str, float] = field(default_factory=dict)
    #: the COGs' creation options over alosmap's defaults (``--co``; empty: none)
    creation: dict[str, str] = field(default_factory=dict)


def run_ceiling(
    size: int,
    workdir: Path,
    *,
    task: str = "lulc",
    device: str = "cpu",
    batch_size: int = 8,
    overlap: int | None = None,
    confidence: bool = False,
    probabilities: bool = False,
    arrays: str | None = None,
    engine: str | None = None,
) -> CeilingResult:
    """Time ``predict_scene`` with :class:`NullRuntime` on a ``size²`` scene.

    The scene is written into ``workdir`` (reused when it is there), after a warm-up
    run on a small scene (imports, caches). The timed run gives the throughput and,
    on the CPU, the stages; on a GPU a second, synchronised run gives them.

    Args:
        size: side of the generated scene (px).
        workdir: a folder for the scene and the maps.
        task: whose spec (classes, tile size) to imitate: ``lulc`` (K = 9) or
            ``water`` (one output).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: tiles per batch.
        overlap: tile overlap (px); default ``predict``'s (a quarter of the tile).
        confidence: also write the confidence map.
        probabilities: also write the probabilities.
        arrays: what the null model returns: ``numpy`` (as ONNX Runtime on the
            CPU: the host path, no PyTorch) or ``torch`` tensors (as PyTorch: the
            torch CPU path, and any GPU). Default: numpy on the CPU.
        engine: ``numpy`` or ``torch`` (the device engine, also on the CPU).

    Raises:
        BackendUnavailableError: a CUDA device PyTorch does not see.
        ValueError: NumPy arrays or the NumPy engine on a GPU.
    """
    from alosmap.predict.bench import peak_rss_mb, write_bench_scene
    from alosmap.predict.blend import ENGINE_ENV
    from alosmap.predict.options import default_overlap
    from alosmap.predict.pipeline import default_model_path
    from alosmap.spec import load_spec

    device, arrays, engine = _path(device, arrays, engine)
    gpu = device.startswith("cuda")
    spec = load_spec(default_model_path(task))
    if overlap is None:
        overlap = default_overlap(spec.tile_size)
    rt = NullRuntime(spec, device, array_kind=arrays)
    kw: dict[str, Any] = dict(
        runtime=rt,
        overwrite=True,
        batch_size=batch_size,
        overlap=overlap,
        confidence=confidence,
        probabilities=probabilities,
    )
    with _engine(ENGINE_ENV, engine):
        warm = write_bench_scene(workdir / "ceiling_warmup.tif", 600)
        _stream(warm, workdir / "ceiling_warmup_map.tif", kw)
        scene = workdir / f"ceiling_{size}.tif"
        if not scene.exists():
            write_bench_scene(scene, size)
        mem = _DeviceMemory(device)
        c0 = time.process_time()
        res, clock = _stream(scene, workdir / "ceiling_map.tif", kw)
        cpu = time.process_time() - c0
        stages = res.stage_seconds
        if gpu:  # a second run that waits for the device after every stage
            profiled = _stream(scene, workdir / "ceiling_map.tif", kw, True)[0]
            stages = profiled.stage_seconds
    host = sum(stages[s] for s in HOST_STAGES)
    tiles = max(res.tiles_run, 1)
    share = {s: clock.cpu_seconds[s] / cpu for s in StageClock.STAGES} if cpu else {}
    share["other"] = max(0.0, 1.0 - sum(share.values()))
    return CeilingResult(
        device=device,
        size=size,
        classes=spec.num_outputs,
        batch_size=batch_size,
        overlap=overlap,
        confidence=confidence,
        probabilities=probabilities,
        tiles=res.tiles_run,
        seconds=res.seconds,
        tiles_per_s=res.tiles_run / res.seconds,
        host_tiles_per_s=res.tiles_run / host if host > 0 else float("inf"),
        stages_ms_per_tile={
            s: 1000.0 * stages.get(s, 0.0) / tiles for s in StageClock.STAGES
        },
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=mem.peak_mb(),
        engine=engine,
        arrays=arrays,
        cpu_seconds=cpu,
        tiles_per_cpu_s=res.tiles_run / cpu if cpu > 0 else float("inf"),
        cpu_share=share,
        creation=current_creation_options(),
    )


def _path(device: str, arrays: str | None, engine: str | None) -> tuple[str, str, str]:
    """The checked device, model output and engine of a ceiling run (defaults)."""
    from alosmap.predict.blend import engine_namespace
    from alosmap.runtime.base import check_device

    device = check_device(device)
    gpu = device.startswith("cuda")
    if gpu:
        from alosmap.runtime.base import require_torch_device

        require_torch_device(device)
    arrays = arrays or ("torch" if gpu else "numpy")
    engine = engine or ("torch" if gpu else "numpy")
    engine_namespace(device, engine)  # a NumPy engine on a GPU: ValueError
    return device, arrays, engine


@contextlib.contextmanager
def _engine(variable: str, engine: str) -> Iterator[None]:
    """The block with the environment variable ``variable`` set to ``engine``."""
    before = os.environ.get(variable)
    os.environ[variable] = engine
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before


def _stream(
    scene: Path, out: Path, kw: dict[str, Any], profile: bool = False
) -> tuple[Any, StageClock]:
    """``predict_scene`` (as stream + finish), with the run's stage clock."""
    from alosmap.predict.pipeline import stream_scene

    streamed = stream_scene(scene, out, profile=profile, **kw)
    return streamed.finish(), streamed.clock


class _DeviceMemory:
    """Peak memory PyTorch allocated on a CUDA device from now on (None on the CPU)."""

    def __init__(self, device: str) -> None:
        self.device = device
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)

    def peak_mb(self) -> float | None:
        if not self.device.startswith("cuda"):
            return None
        import torch

        return float(torch.cuda.max_memory_allocated(self.device)) / 2**20


def ceiling_report(result: CeilingResult) -> dict[str, Any]:
    """The JSON object ``alosmap bench --ceiling --json`` prints."""
    return {"ceiling": asdict(result)}


def format_ceiling(result: CeilingResult) -> str:
    """The ceiling as a few lines of text (the table ``alosmap bench`` prints)."""
    r = result
    extras = [
        n
        for n, on in (("confidence", r.confidence), ("probabilities", r.probabilities))
        if on
    ]
    lines = [
        f"pipeline ceiling: zero-cost model, {r.size}x{r.size} scene, K = "
        f"{r.classes}, batch {r.batch_size}, overlap {r.overlap}, device "
        f"{r.device}"
        + (f", with {' and '.join(extras)}" if extras else "")
        + (
            ", COG options " + " ".join(f"{k}={v}" for k, v in r.creation.items())
            if r.creation
            else ""
        ),
        f"{r.tiles} tiles in {r.seconds:.2f} s: {r.tiles_per_s:.0f} tiles/s; "
        f"host-side stages alone {r.host_tiles_per_s:.0f} tiles/s; peak RSS "
        f"{r.peak_rss_mb:.0f} MB"
        + (
            f", peak device {r.peak_device_mb:.0f} MB"
            if r.peak_device_mb is not None
            else ""
        ),
        "ms per tile by stage (threads overlap: the sum can exceed 1000/tiles/s):",
    ]
    lines.append(
        "  " + "  ".join(f"{s} {ms:.3f}" for s, ms in r.stages_ms_per_tile.items())
    )
    if r.cpu_seconds > 0:
        lines.append(
            f"{r.tiles_per_cpu_s:.0f} tiles per CPU-second ({r.cpu_seconds:.2f} CPU-s, "
            f"every thread; engine {r.engine}, model output {r.arrays}); share of "
            "the CPU time by stage:"
        )
        order = [s for s in SHARE_STAGES if s in r.cpu_share]
        order += [s for s in r.cpu_share if s not in order and s != "other"]
        lines.append(
            "  "
            + "  ".join(
                f"{s} {100 * r.cpu_share[s]:.1f} %"
                for s in [*order, "other"]
                if s == "other" or r.cpu_share[s] > 0
            )
        )
    return "\n".join(lines)


def _main(argv: list[str]) -> None:
    """Child entry point: ``python -m alosmap.predict.ceiling '<json kwargs>'``.

    Runs :func:`run_ceiling` in a process of its own (its peak RSS is the run's
    alone) and prints the result as JSON.
    """
    from alosmap._process import configure_process

    configure_process("predict")  # as the CLI does for predict
    kw = json.loads(argv[1])
    kw["workdir"] = Path(kw["workdir"])
    print(json.dumps(asdict(run_ceiling(**kw))))


__all__ = [
    "SHARE_STAGES",
    "CeilingResult",
    "NullRuntime",
    "ceiling_report",
    "format_ceiling",
    "null_probabilities",
    "run_ceiling",
]


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv)
