"""Where the prediction pipeline spends its time: seconds per stage.

:class:`StageClock` is filled by the reader thread, the main thread and the writer
thread of :func:`~alosmap.predict.pipeline.predict_scene`; ``alosmap bench
--ceiling`` prints it per tile.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class StageClock:
    """Seconds spent per pipeline stage, summed over the threads that run them.

    Stages: ``read`` (decode a strip), ``radiometry`` (DN → dB → normalised),
    ``h2d`` (strip to the model's device), ``cut`` (windows into the batch),
    ``model``, ``blend``, ``finish`` (argmax, confidence, percent), ``d2h`` (the
    writer waiting for rows from the device), ``write`` (rows into the temporary
    GeoTIFFs), ``cog`` (building the COGs). On a GPU, work is queued, not done,
    when a stage returns, unless ``sync`` is set: then the device is synchronised
    at the end of every device stage (per-stage figures for a profile; slower).

    ``seconds`` is wall-clock time; ``cpu_seconds`` is the CPU time of the thread
    that ran the stage (:func:`time.thread_time`): on a loaded machine, or with
    the reader, main and writer threads sharing one core, a stage's wall time
    includes the time the other threads ran, its CPU time does not.

    Args:
        sync: a function that waits for the device (None: do not wait).
    """

    STAGES = (
        "read",
        "radiometry",
        "h2d",
        "cut",
        "model",
        "blend",
        "finish",
        "d2h",
        "write",
        "cog",
    )

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.cpu_seconds = dict.fromkeys(self.STAGES, 0.0)
        self._sync = sync
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        """Add ``seconds`` (wall) and ``cpu_seconds`` (thread CPU) to ``stage``."""
        with self._lock:
            self.seconds[stage] += seconds
            self.cpu_seconds[stage] += cpu_seconds

    @contextlib.contextmanager
    def stage(self, name: str, device: bool = False) -> Iterator[None]:
        """Time the block as ``name`` (``device``: synchronise first when profiling)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            if device and self._sync is not None:
                self._sync()
            self.add(name, time.perf_counter() - t0, time.thread_time() - c0)


def device_sync(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` of a CUDA device (None for the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return lambda: torch.cuda.synchronize(device)


__all__ = ["StageClock", "device_sync"]
