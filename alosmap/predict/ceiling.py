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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alosmap.predict.stages import StageClock
from alosmap.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

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
    """

    name = "null"
    precision: str | None = None
    path: Path | None = None
    threads: int | None = None

    def __init__(self, spec: ModelSpec, device: str = "cpu", seed: int = 0) -> None:
        import torch

        self.spec = spec
        self.device = device
        self._probs = torch.from_numpy(
            null_probabilities(spec.num_outputs, spec.tile_size, seed)
        ).to(device)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities for ``batch`` (a view of the precomputed tiles)."""
        n = int(batch.shape[0])
        if n > len(self._probs):  # once per larger batch size
            reps = -(-n // len(self._probs))
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


@dataclass
class CeilingResult:
    """What :func:`run_ceiling` measured (the ``ceiling`` object of the JSON)."""

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
) -> CeilingResult:
    """Time ``predict_scene`` with :class:`NullRuntime` on a ``size²`` scene.

    The scene is written into ``workdir`` (reused when it is there). One warm-up
    run on a small scene comes first (imports, caches). The timed run gives the
    throughput; on a GPU, a second run that waits for the device after every stage
    gives the per-stage figures (on the CPU the timed run gives them).

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

    Raises:
        BackendUnavailableError: a CUDA device PyTorch does not see.
    """
    from alosmap.predict.bench import peak_rss_mb, write_bench_scene
    from alosmap.predict.options import default_overlap
    from alosmap.predict.pipeline import default_model_path, predict_scene
    from alosmap.runtime.base import require_torch_device
    from alosmap.spec import load_spec

    device = require_torch_device(device)
    spec = load_spec(default_model_path(task))
    if overlap is None:
        overlap = default_overlap(spec.tile_size)
    rt = NullRuntime(spec, device)
    kw: dict[str, Any] = dict(
        runtime=rt,
        overwrite=True,
        batch_size=batch_size,
        overlap=overlap,
        confidence=confidence,
        probabilities=probabilities,
    )
    warm = write_bench_scene(workdir / "ceiling_warmup.tif", 600)
    predict_scene(warm, workdir / "ceiling_warmup_map.tif", **kw)
    scene = workdir / f"ceiling_{size}.tif"
    if not scene.exists():
        write_bench_scene(scene, size)
    mem = _DeviceMemory(device)
    res = predict_scene(scene, workdir / "ceiling_map.tif", **kw)
    stages = res.stage_seconds
    if device.startswith("cuda"):
        stages = predict_scene(
            scene, workdir / "ceiling_map.tif", profile=True, **kw
        ).stage_seconds
    host = sum(stages[s] for s in HOST_STAGES)
    tiles = max(res.tiles_run, 1)
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
    )


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
        f"{r.device}" + (f", with {' and '.join(extras)}" if extras else ""),
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
    return "\n".join(lines)


__all__ = [
    "CeilingResult",
    "NullRuntime",
    "ceiling_report",
    "format_ceiling",
    "null_probabilities",
    "run_ceiling",
]
