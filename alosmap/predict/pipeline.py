"""``predict_scene``: stream a whole scene through the model into a map GeoTIFF.

Data flow (three threads, bounded queues)::

    reader thread   full-width strips of ``tile`` rows → σ0 dB → validity → normalise
                    → the strip's windows (all-no-data windows are skipped)
    main thread     batches of tiles → runtime (torch / ONNX Runtime) → probabilities
                    → StripAccumulator (weighted blend of overlapping windows)
    writer thread   finished rows → MapWriter (temporary GeoTIFF) → COG, atomic rename

Memory is bounded by one strip (``tile`` rows × scene width × classes), never the whole
scene. Results are fed to the accumulator in window order, so the map does not depend
on batch size or thread timing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import LULC_NODATA, TASKS, WATER_NODATA
from alosmap.errors import (
    InputRasterError,
    ModelFileError,
    OutputExistsError,
    SpecMismatchError,
)
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, axis_starts, tile_weights

logger = logging.getLogger(__name__)

#: Where the bundled default models live (``<task>.safetensors``).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_OVERLAP = 64
DEFAULT_BATCH = 8
_STOP = object()


@dataclass
class PredictResult:
    """What :func:`predict_scene` produced and how long it took.

    Attributes:
        output: the map GeoTIFF.
        task: the model's task.
        probabilities: the per-class probability GeoTIFF, when requested.
        preview: the PNG quicklook, when requested.
        tiles_total: windows in the grid.
        tiles_run: windows sent to the model (the rest were all no data).
        seconds: wall-clock time of the whole run.
        model_seconds: time spent inside the runtime.
        class_pixels: pixel count per output code (no data excluded).
        valid_pixels: pixels with data.
    """

    output: Path
    task: str
    probabilities: Path | None
    preview: Path | None
    tiles_total: int
    tiles_run: int
    seconds: float
    model_seconds: float
    class_pixels: dict[int, int] = field(default_factory=dict)
    valid_pixels: int = 0

    @property
    def tiles_per_second(self) -> float:
        """End-to-end throughput (tiles run per wall-clock second)."""
        return self.tiles_run / self.seconds if self.seconds > 0 else float("nan")


def default_model_path(task: str) -> Path:
    """The bundled default model of ``task``.

    Raises:
        ModelFileError: when this installation carries no bundled model for the task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    path = WEIGHTS_DIR / f"{task}.safetensors"
    if not path.is_file():
        raise ModelFileError(
            f"no bundled {task} model in this installation ({path}); pass --model FILE"
        )
    return path


def default_output_path(scene: Path, task: str) -> Path:
    """``<scene stem>_<task>.tif`` in the current directory."""
    return Path.cwd() / f"{scene.stem}_{task}.tif"


# --------------------------------------------------------------------------------------
# blending accumulator
# --------------------------------------------------------------------------------------


class StripAccumulator:
    """Weighted blend of window probabilities over a rolling band of rows.

    Windows arrive in grid order (row band by row band). When the first window of the
    band starting at row ``y`` arrives, every row above ``y`` is final: it is turned
    into classes (and confidence/probabilities), handed to ``emit`` and dropped, so at
    most ``tile`` rows are held.

    Args:
        width, height: scene size.
        tile: window size.
        overlap: overlap of the window grid (for the blend weights).
        spec: model spec (task, classes, threshold).
        emit: called as ``emit(row0, classes, confidence, probabilities)`` with uint8
            arrays for each finished run of rows, in increasing row order.
        want_confidence, want_probabilities: which extra outputs to compute.
    """

    def __init__(
        self,
        width: int,
        height: int,
        tile: int,
        overlap: int,
        spec: ModelSpec,
        emit: Any,
        *,
        want_confidence: bool = False,
        want_probabilities: bool = False,
    ) -> None:
        self.width, self.height = width, height
        self.k = spec.num_outputs
        self.spec = spec
        self.emit = emit
        self.tile, self.overlap = tile, overlap
        self.rows = min(tile, height)
        self.acc = np.zeros((self.k, self.rows, width), dtype=np.float32)
        self.wsum = np.zeros((self.rows, width), dtype=np.float32)
        self.base = 0  # scene row of buffer row 0
        self.valid: dict[int, np.ndarray | None] = {}  # band start row -> validity
        self.want_confidence = want_confidence
        self.want_probabilities = want_probabilities
        self.nodata = WATER_NODATA if spec.task == "water" else LULC_NODATA
        self.codes = np.array([c.code for c in spec.classes], dtype=np.uint8)
        self.class_pixels = np.zeros(256, dtype=np.int64)

    def open_band(self, row: int, valid: np.ndarray | None) -> None:
        """Register the validity of the band starting at ``row`` (None = none valid)."""
        self.valid[row] = valid

    def add(self, t: Tile, probs: np.ndarray) -> None:
        """Blend one window's probabilities ``[K, tile, tile]`` (cropped to ``t``)."""
        if t.row > self.base:
            self.flush(t.row)
        r0 = t.row - self.base
        w = tile_weights(t, self.height, self.width, self.tile, self.overlap)
        sl = (slice(r0, r0 + t.height), slice(t.col, t.col + t.width))
        self.acc[(slice(None), *sl)] += probs[:, : t.height, : t.width] * w
        self.wsum[sl] += w

    def flush(self, upto: int) -> None:
        """Finish rows ``[base, upto)`` and hand them to ``emit``."""
        starts = sorted(r for r in self.valid if r < upto)
        for i, band_row in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else upto
            self._emit_rows(band_row, end, self.valid.pop(band_row))
        n = upto - self.base
        if n <= 0:
            return
        keep = self.rows - n
        if keep > 0:
            # move the still-open rows up, one row at a time: a single overlapping
            # slice assignment would make numpy copy the whole buffer first
            for r in range(keep):
                self.acc[:, r] = self.acc[:, r + n]
            self.wsum[:keep] = self.wsum[n:]
        self.acc[:, max(keep, 0) :] = 0
        self.wsum[max(keep, 0) :] = 0
        self.base = upto

    def finish(self) -> None:
        """Finish every remaining row."""
        self.flush(self.height)

    def _emit_rows(self, r0: int, r1: int, valid_band: np.ndarray | None) -> None:
        n = r1 - r0
        if n <= 0:
            return
        if valid_band is None:  # a band of windows that were all no data
            blank = np.full((n, self.width), self.nodata, dtype=np.uint8)
            conf = blank if self.want_confidence else None
            probs = (
                np.full((self.k, n, self.width), 255, dtype=np.uint8)
                if self.want_probabilities
                else None
            )
            self.emit(r0, blank, conf, probs)
            return
        b0 = r0 - self.base
        valid = valid_band[:n]
        wsum = self.wsum[b0 : b0 + n]
        valid = valid & (wsum > 0)
        acc = self.acc[:, b0 : b0 + n]
        inv = 1.0 / np.maximum(wsum, 1e-12)
        if self.k == 1:
            p = acc[0] * inv
            thr = self.spec.threshold if self.spec.threshold is not None else 0.5
            idx = (p >= thr).astype(np.uint8)
            top = np.maximum(p, 1.0 - p)
        else:
            # the weight sum is one positive number per pixel: classes and the top
            # probability need no [K, rows, width] division
            idx = acc.argmax(axis=0).astype(np.uint8)
            top = acc.max(axis=0) * inv
        classes = np.where(valid, self.codes[idx], self.nodata).astype(np.uint8)
        self.class_pixels += np.bincount(classes[valid], minlength=256)
        conf = None
        if self.want_confidence:
            conf = np.where(valid, _percent(top), self.nodata).astype(np.uint8)
        prob_out = None
        if self.want_probabilities:
            prob_out = np.where(valid[None], _percent(acc * inv), 255).astype(np.uint8)
        self.emit(r0, classes, conf, prob_out)


def _percent(p: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(p, 0.0, 1.0) * 100.0).astype(np.uint8)


# --------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------


@dataclass
class _Band:
    row: int
    valid: np.ndarray | None
    tiles: list[tuple[Tile, np.ndarray]]
    skipped: int


def _reader(
    scene: Any,
    spec: ModelSpec,
    tile: int,
    rows: list[int],
    cols: list[int],
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    from alosmap.io.scene import normalize

    try:
        th = min(tile, scene.info.height)
        tw = min(tile, scene.info.width)
        for row in rows:
            if stop.is_set():
                return
            db, valid = scene.read_strip(row, th)
            tiles: list[tuple[Tile, np.ndarray]] = []
            skipped = 0
            if valid.any():
                x = normalize(db, valid, spec)
                for col in cols:
                    v = valid[:, col : col + tw]
                    if not v.any():
                        skipped += 1
                        continue
                    arr = np.zeros((tile, tile), dtype=np.float32)
                    arr[:th, :tw] = x[:, col : col + tw]
                    tiles.append((Tile(row, col, th, tw), arr))
                band = _Band(row, valid, tiles, skipped)
            else:
                band = _Band(row, None, [], len(cols))
            _put(out, band, stop)
            if stop.is_set():
                return
        _put(out, _STOP, stop)
    except BaseException as exc:  # handed to the main thread
        _put(out, exc, stop)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if stop.is_set():
                return


def _writer_loop(writer: Any, jobs: queue.Queue, errors: list[BaseException]) -> None:
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        if errors:
            continue  # drain after a failure
        try:
            writer.write_rows(*job)
        except BaseException as exc:
            errors.append(exc)


def predict_scene(
    scene: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    task: str | None = None,
    model: str | os.PathLike[str] | None = None,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH,
    backend: str = "auto",
    device: str = "cpu",
    confidence: bool = False,
    probabilities: bool = False,
    preview: str | os.PathLike[str] | None = None,
    input_units: str = "auto",
    band: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    threads: int | None = None,
    runtime: Any = None,
    precision: str | None = None,
    compile: bool = False,
) -> PredictResult:
    """Map a whole scene with a model; write a COG map (and optional extras).

    Args:
        scene: the SAR scene (ALOS-2 L2.1 GeoTIFF or any single-band raster).
        output: the map to write (``.tif``); default ``<scene stem>_<task>.tif`` in
            the current directory.
        task: ``lulc`` or ``water``; default the model's task (``lulc`` without a
            model). Must match the model's task.
        model: ``.safetensors``, ``.onnx`` or TensorRT ``.engine`` model file;
            default the bundled model.
        tile: window size; must equal the model's tile size (default).
        overlap: pixels shared by neighbouring windows, blended smoothly.
        batch_size: tiles per model call (does not change the result).
        backend: ``auto`` (by the model file), ``torch``, ``onnx`` or ``tensorrt``
            (see :mod:`alosmap.runtime.base`).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        confidence: add a band with the top class probability (percent).
        probabilities: also write ``<output stem>_probabilities.tif``.
        preview: also write a PNG quicklook here.
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.
        band: 1-based band of a multi-band scene.
        overwrite: replace existing outputs.
        progress: draw a progress bar on stderr.
        threads: CPU threads for the runtime.
        runtime: an already opened runtime (reused across scenes by batch mode).
        precision: ``fp32``, ``bf16`` or ``fp16``; None for the backend's default
            (torch fp32, ONNX the file's, TensorRT the engine's).
        compile: ``torch.compile`` the model (torch backend only).

    Returns:
        A :class:`PredictResult`.

    Raises:
        AlosmapError: for bad inputs, model files or outputs (nothing is left behind).
    """
    from alosmap.io.scene import Scene
    from alosmap.io.writer import MapWriter
    from alosmap.runtime import load_runtime
    from alosmap.runtime.base import check_device, check_precision, resolve_backend

    t_start = time.perf_counter()
    scene_path = Path(scene)
    if task is not None and task not in TASKS:
        raise SpecMismatchError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if runtime is None:
        model_path = (
            Path(model) if model is not None else default_model_path(task or "lulc")
        )
        from alosmap.spec import load_spec

        # backend, device and precision first: "TensorRT is not installed" is a more
        # useful first error for an .engine than a missing spec sidecar
        resolve_backend(model_path, backend)
        check_device(device)
        check_precision(precision)
        spec = load_spec(model_path)
    else:
        model_path = Path(getattr(runtime, "path", "runtime"))
        spec = runtime.spec
    if task is not None and spec.task != task:
        raise SpecMismatchError(
            f"the model {model_path.name} is a {spec.task} model, not {task}; "
            f"pass a {task} model with --model"
        )
    tile = spec.tile_size if tile is None else tile
    if tile != spec.tile_size:
        raise SpecMismatchError(
            f"--tile {tile}: this model runs on {spec.tile_size}×{spec.tile_size} "
            "tiles (its position embedding is fixed); leave --tile unset"
        )
    if not 0 <= overlap < tile:
        raise SpecMismatchError(f"--overlap {overlap}: must be in 0..{tile - 1}")
    out_path = (
        Path(output)
        if output is not None
        else default_output_path(scene_path, spec.task)
    )
    preview_path = Path(preview) if preview is not None else None
    if preview_path is not None and preview_path.exists() and not overwrite:
        raise OutputExistsError(f"{preview_path} exists; use --overwrite to replace it")

    with Scene(scene_path, spec, band=band, input_units=input_units) as sc:
        info = sc.info
        params = {
            "tile": tile,
            "overlap": overlap,
            "batch_size": batch_size,
            "backend": backend,
            "device": device,
            "precision": precision or getattr(runtime, "precision", None),
            "input_units": info.units,
            "input_units_source": info.units_source,
            "band": info.band,
        }
        writer = MapWriter(
            out_path,
            width=info.width,
            height=info.height,
            crs=info.crs,
            transform=info.transform,
            spec=spec,
            confidence=confidence,
            probabilities=probabilities,
            tags={
                "ALOSMAP_MODEL": model_path.name,
                "ALOSMAP_PARAMS": json.dumps(params, sort_keys=True),
                "SOURCE_SCENE": scene_path.name,
                **({"ACQUISITION_DATE": info.date.isoformat()} if info.date else {}),
            },
            overwrite=overwrite,
        )
        with writer:
            rt = runtime or load_runtime(
                model_path,
                backend=backend,
                device=device,
                threads=threads,
                precision=precision,
                compile=compile,
                batch_size=batch_size,
            )
            result = _run(
                sc,
                rt,
                spec,
                writer,
                tile,
                overlap,
                batch_size,
                progress,
                confidence,
                probabilities,
            )
            if sc.inf_pixels:
                logger.warning(
                    "%d pixel(s) of %s were ±inf and are treated as no data",
                    sc.inf_pixels,
                    scene_path.name,
                )
            final = writer.finalize()
    probs_path = writer.prob_path if probabilities else None
    if preview_path is not None:
        from alosmap.predict.preview import write_preview

        write_preview(
            preview_path,
            scene_path,
            final,
            spec,
            band=info.band,
            input_units=info.units,
            nodata=info.nodata,
            overwrite=overwrite,
        )
    tiles_total, tiles_run, model_s, class_pixels = result
    return PredictResult(
        output=final,
        task=spec.task,
        probabilities=Path(probs_path) if probs_path else None,
        preview=preview_path,
        tiles_total=tiles_total,
        tiles_run=tiles_run,
        seconds=time.perf_counter() - t_start,
        model_seconds=model_s,
        class_pixels={c: int(n) for c, n in enumerate(class_pixels) if n},
        valid_pixels=int(class_pixels.sum()),
    )


def _run(
    sc: Any,
    rt: Any,
    spec: ModelSpec,
    writer: Any,
    tile: int,
    overlap: int,
    batch_size: int,
    progress: bool,
    confidence: bool,
    probabilities: bool,
) -> tuple[int, int, float, np.ndarray]:
    from tqdm import tqdm

    info = sc.info
    rows = axis_starts(info.height, tile, overlap)
    cols = axis_starts(info.width, tile, overlap)
    total = len(rows) * len(cols)

    jobs: queue.Queue = queue.Queue(maxsize=4)
    write_errors: list[BaseException] = []

    def emit(r0: int, classes: np.ndarray, conf: Any, probs: Any) -> None:
        if write_errors:
            raise write_errors[0]
        jobs.put((r0, classes, conf, probs))

    acc = StripAccumulator(
        info.width,
        info.height,
        tile,
        overlap,
        spec,
        emit,
        want_confidence=confidence,
        want_probabilities=probabilities,
    )
    bands: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(sc, spec, tile, rows, cols, bands, stop),
        name="alosmap-reader",
        daemon=True,
    )
    wthread = threading.Thread(
        target=_writer_loop,
        args=(writer, jobs, write_errors),
        name="alosmap-writer",
        daemon=True,
    )
    bar = tqdm(
        total=total,
        unit="tile",
        desc=Path(info.path).name[:40],
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    model_s = 0.0
    run = 0
    reader.start()
    wthread.start()
    try:
        pending: list[tuple[Tile, np.ndarray]] = []

        def flush_batch() -> None:
            nonlocal model_s, run
            if not pending:
                return
            batch = np.stack([a for _, a in pending])[:, None]
            t0 = time.perf_counter()
            probs = rt.run(batch)
            model_s += time.perf_counter() - t0
            if probs.shape != (len(pending), spec.num_outputs, tile, tile):
                raise SpecMismatchError(
                    f"the runtime returned {probs.shape}, expected "
                    f"{(len(pending), spec.num_outputs, tile, tile)}"
                )
            for (t, _), p in zip(pending, probs, strict=True):
                acc.add(t, p)
            run += len(pending)
            bar.update(len(pending))
            pending.clear()

        for band in _bands(bands):
            acc.open_band(band.row, band.valid)
            bar.update(band.skipped)
            for item in band.tiles:
                pending.append(item)
                if len(pending) >= batch_size:
                    flush_batch()
        flush_batch()
        acc.finish()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        jobs.put(_STOP)
        wthread.join()
        reader.join(timeout=5)
        bar.close()
    if write_errors:
        raise write_errors[0]
    if acc.class_pixels.sum() == 0:
        raise InputRasterError(f"{info.path}: every pixel is no data; nothing to map")
    return total, run, model_s, acc.class_pixels


def _bands(q: queue.Queue) -> Iterator[_Band]:
    while True:
        item = q.get()
        if item is _STOP:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


__all__ = [
    "PredictResult",
    "StripAccumulator",
    "default_model_path",
    "predict_scene",
]
