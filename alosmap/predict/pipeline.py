"""``predict_scene``: stream a whole scene through the model into a map GeoTIFF.

Data flow (three threads, bounded queues)::

    reader thread   full-width strips of ``tile`` rows → σ0 dB → validity → normalise
                    → the strip's windows (all-no-data windows are skipped)
                    (:mod:`alosmap.predict.tiles`)
    main thread     batches of tiles → runtime (torch / ONNX Runtime) → probabilities
                    → StripAccumulator (weighted blend of overlapping windows,
                    :mod:`alosmap.predict.blend`)
    writer thread   finished rows → MapWriter (temporary GeoTIFF) → COG, atomic rename

Memory is bounded by one strip (``tile`` rows × scene width × classes), never the whole
scene. Results are fed to the accumulator in window order, so the map does not depend
on batch size or thread timing. How a scene is mapped is described by one
:class:`~alosmap.predict.options.InferenceOptions`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from alosmap._fileio import check_overwrite
from alosmap._progress import Progress, progress_bar
from alosmap.classes import TASKS
from alosmap.errors import InputRasterError, ModelFileError, SpecMismatchError
from alosmap.predict.blend import StripAccumulator
from alosmap.predict.options import InferenceOptions, warn_bundled_model
from alosmap.predict.tiles import StripTiles, iter_strip_tiles
from alosmap.radiometry import Radiometry
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.io.scene import Scene, SceneInfo
    from alosmap.io.writer import MapWriter
    from alosmap.runtime.base import Runtime

logger = logging.getLogger(__name__)

#: Where the bundled default models live (``<task>.safetensors``).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_STOP = object()
#: Finished rows for the writer: ``(row0, classes, confidence, probabilities)``.
_Rows = tuple[int, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


@dataclass
class PredictResult:
    """What :func:`predict_scene` produced and how long it took.

    Attributes:
        output: the map GeoTIFF.
        task: the model's task.
        probabilities: the per-class probability GeoTIFF, when requested.
        confidence: the confidence GeoTIFF (percent), when requested.
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
    confidence: Path | None = None

    @property
    def files(self) -> list[Path]:
        """The data files written: map, confidence, probabilities, preview."""
        return [
            p
            for p in (self.output, self.confidence, self.probabilities, self.preview)
            if p is not None
        ]

    @property
    def tiles_per_second(self) -> float:
        """End-to-end throughput (tiles run per wall-clock second)."""
        return self.tiles_run / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _RunStats:
    """What the streaming run measured."""

    tiles_total: int
    tiles_run: int
    model_seconds: float
    class_pixels: np.ndarray


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


def default_output_path(scene: str | os.PathLike[str], task: str) -> Path:
    """``<scene stem>_<task>.tif`` in the current directory (also for URLs)."""
    from alosmap.io.raster import raster_stem

    return Path.cwd() / f"{raster_stem(scene)}_{task}.tif"


def model_file(options: InferenceOptions) -> Path:
    """The options' model file, or the bundled model of their task (``lulc``)."""
    return options.model_path or default_model_path(options.task or "lulc")


def load_model(
    model: str | os.PathLike[str] | None = None,
    options: InferenceOptions | None = None,
    **overrides: Any,
) -> Runtime:
    """Open a model file into a runtime, for mapping many scenes with one model.

    Pass the runtime to :func:`predict_scene` (``runtime=``); close it when done.

    Args:
        model: ``.safetensors``, ``.onnx`` or TensorRT ``.engine`` model file;
            default the options' model, else the bundled model of their task.
        options: backend, device, precision, threads, ``compile`` and batch size.
        **overrides: :class:`InferenceOptions` fields that replace ``options``'.

    Raises:
        ModelFileError: unknown or unreadable model file, or a backend/file mismatch.
        BackendUnavailableError: the backend or the device is not available here.
        BackendOptionError: a precision, device or ``compile`` the backend cannot
            honour.
    """
    from alosmap.runtime import load_runtime

    opts = (options or InferenceOptions()).replace(**overrides)
    return load_runtime(
        Path(model) if model is not None else model_file(opts),
        backend=opts.backend,
        device=opts.device,
        threads=opts.threads,
        precision=opts.precision,
        compile=opts.compile,
        batch_size=opts.batch_size,
    )


def predict_scene(
    scene: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: InferenceOptions | None = None,
    *,
    runtime: Runtime | None = None,
    progress: bool = False,
    preview: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> PredictResult:
    """Map a whole scene with a model; write a COG map (and optional extras).

    Args:
        scene: the SAR scene (ALOS-2 L2.1 GeoTIFF or any single-band raster).
        output: the map to write (``.tif``); default ``<scene stem>_<task>.tif`` in
            the current directory.
        options: how to map (model, task, tiling, runtime, extra outputs, input
            units); default :class:`InferenceOptions` ``()``.
        runtime: an already opened runtime (:func:`load_model`; reused across
            scenes by batch mode); the options' model, backend, device, threads and
            ``compile`` are then not used.
        progress: draw a progress bar on stderr.
        preview: also write a PNG quicklook here.
        **overrides: :class:`InferenceOptions` fields (``model=``, ``overlap=``,
            ``confidence=``, ...) that replace those of ``options``.

    Returns:
        A :class:`PredictResult`.

    Raises:
        AlosmapError: for bad options, inputs, model files or outputs (nothing is
            left behind).
        TypeError: an override that is not an inference option.
    """
    from alosmap.io.scene import Scene

    t_start = time.perf_counter()
    asked = (options or InferenceOptions()).replace(**overrides)
    scene_path = Path(scene)
    model_path, spec = _model_spec(asked, runtime)
    opts = asked.for_model(spec, model_path.name)
    out_path = (
        Path(output) if output is not None else default_output_path(scene, spec.task)
    )
    preview_path = Path(preview) if preview is not None else None
    _check_outputs(out_path, preview_path, scene_path, opts)

    with Scene(
        scene, spec.radiometry, band=opts.band, input_units=opts.input_units
    ) as whole:
        sc = _area_of_interest(whole, opts)
        if runtime is None:
            warn_bundled_model(asked, sc.tags)
        writer = _map_writer(out_path, sc.info, spec, opts, model_path, runtime)
        with writer:
            rt = runtime if runtime is not None else load_model(model_path, opts)
            try:
                stats = _run(sc, rt, spec, writer, opts, progress)
            finally:
                if runtime is None:
                    rt.close()
            if sc.inf_pixels:
                logger.warning(
                    "%d pixel(s) of %s were ±inf and are treated as no data",
                    sc.inf_pixels,
                    scene_path.name,
                )
            final = writer.finalize()
        info = sc.info
    if preview_path is not None:
        try:
            conf = writer.conf_path if opts.confidence else None
            _write_preview(preview_path, final, spec, info, opts.overwrite, conf)
        except BaseException:
            _remove_outputs(writer)  # a failed run leaves no outputs
            raise
    return PredictResult(
        output=final,
        task=spec.task,
        probabilities=Path(writer.prob_path) if opts.probabilities else None,
        confidence=Path(writer.conf_path) if opts.confidence else None,
        preview=preview_path,
        tiles_total=stats.tiles_total,
        tiles_run=stats.tiles_run,
        seconds=time.perf_counter() - t_start,
        model_seconds=stats.model_seconds,
        class_pixels={c: int(n) for c, n in enumerate(stats.class_pixels) if n},
        valid_pixels=int(stats.class_pixels.sum()),
    )


def _area_of_interest(scene: Scene, opts: InferenceOptions) -> Scene:
    """The scene seen through the AOI's pixel window (the scene without an AOI).

    Raises:
        AoiError: an unreadable AOI, a bad ``bbox_crs``, a scene without CRS, or
            an AOI that covers no pixel of the scene.
    """
    if opts.bbox is None and opts.aoi is None:
        return scene
    from alosmap.national.aoi import aoi_window, bbox_aoi, read_aoi

    if opts.bbox is not None:
        aoi = bbox_aoi(
            cast(tuple[float, float, float, float], opts.bbox), opts.bbox_crs
        )
    else:
        aoi = read_aoi(cast(Path, opts.aoi))
    info = scene.info
    area = aoi_window(aoi, info.crs, info.transform, info.width, info.height)
    logger.info("area of interest %s: scene window %s", aoi.path, area.window)
    return scene.crop(area.window, inside=area.mask)


def _check_outputs(
    out_path: Path, preview: Path | None, scene: Path, opts: InferenceOptions
) -> None:
    """Check every output location before any work.

    The map, confidence and probabilities files are checked again by the
    :class:`~alosmap.io.writer.MapWriter`; the preview is only written at the end,
    so its directory, its existence and matplotlib are checked here.

    Raises:
        OutputPathError: an output is the input scene (whatever ``overwrite``
            says), the preview is one of the maps, or its directory is missing.
        OutputExistsError: the preview exists and ``overwrite`` is False.
        BackendUnavailableError: ``preview`` without matplotlib.
    """
    from alosmap._fileio import check_not_input
    from alosmap.io.writer import output_paths

    outs = output_paths(
        out_path, confidence=opts.confidence, probabilities=opts.probabilities
    )
    check_not_input([*outs, *([preview] if preview else [])], [scene])
    if preview is None:
        return
    from alosmap._fileio import check_output_place, remove_stale_temps, same_file
    from alosmap._imports import lazy_import
    from alosmap.errors import OutputPathError

    if any(same_file(preview, o) for o in outs):
        raise OutputPathError(f"--preview {preview} is one of the map files")
    check_output_place(preview)
    if preview.is_dir():
        raise OutputPathError(f"--preview {preview} is a directory, not a file")
    check_overwrite([preview], opts.overwrite)
    lazy_import("matplotlib")
    remove_stale_temps(preview)  # a killed run's half-written PNG


def _remove_outputs(writer: MapWriter) -> None:
    """Remove the files a finished writer put in place (map, extras, sidecars)."""
    import contextlib

    from alosmap.io.maps import sidecar_path
    from alosmap.io.style import style_path
    from alosmap.io.writer import output_paths

    files = output_paths(
        writer.path, confidence=writer.confidence, probabilities=writer.probabilities
    )
    for p in files:
        for f in (p, sidecar_path(p), style_path(p)):
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)


def _model_spec(
    opts: InferenceOptions, runtime: Runtime | None
) -> tuple[Path, ModelSpec]:
    """The model file and its spec (of ``runtime`` when one is given)."""
    if runtime is not None:
        return Path(getattr(runtime, "path", None) or "runtime"), runtime.spec
    from alosmap.runtime.base import resolve_backend
    from alosmap.spec import load_spec

    model_path = model_file(opts)
    # the backend first: "TensorRT is not installed" is a more useful first error
    # for an .engine than a missing spec sidecar
    resolve_backend(model_path, opts.backend)
    return model_path, load_spec(model_path)


def _write_preview(
    path: Path,
    final: Path,
    spec: ModelSpec,
    info: SceneInfo,
    overwrite: bool,
    confidence: Path | None = None,
) -> None:
    """The PNG quicklook of the scene beside its finished map (and confidence)."""
    from alosmap.predict.preview import write_preview

    write_preview(
        path,
        info.path,
        final,
        spec,
        band=info.band,
        input_units=info.units,
        nodata=info.nodata,
        overwrite=overwrite,
        confidence_path=confidence,
    )


def _map_writer(
    out_path: Path,
    info: SceneInfo,
    spec: ModelSpec,
    opts: InferenceOptions,
    model_path: Path,
    runtime: Runtime | None,
) -> MapWriter:
    """The map writer, with the tags that say what produced the map."""
    from alosmap.io.writer import MapWriter

    params = {
        "tile": opts.tile,
        "overlap": opts.overlap,
        "batch_size": opts.batch_size,
        "backend": opts.backend,
        "device": opts.device,
        "precision": opts.precision or getattr(runtime, "precision", None),
        "input_units": info.units,
        "input_units_source": info.units_source,
        "band": info.band,
    }
    return MapWriter(
        out_path,
        width=info.width,
        height=info.height,
        crs=info.crs,
        transform=info.transform,
        spec=spec,
        confidence=opts.confidence,
        probabilities=opts.probabilities,
        inputs=[info.path],
        tags={
            "ALOSMAP_MODEL": model_path.name,
            "ALOSMAP_PARAMS": json.dumps(params, sort_keys=True),
            "SOURCE_SCENE": info.path.name,
            **({"ACQUISITION_DATE": info.date.isoformat()} if info.date else {}),
        },
        overwrite=opts.overwrite,
    )


# --------------------------------------------------------------------------------------
# the streaming run
# --------------------------------------------------------------------------------------


def _reader(
    scene: Scene,
    radiometry: Radiometry,
    tile: int,
    overlap: int,
    out: queue.Queue[object],
    stop: threading.Event,
) -> None:
    """Reader thread: put every strip's tiles on ``out``, then ``_STOP``."""
    try:
        for strip in iter_strip_tiles(scene, radiometry, tile, overlap):
            if stop.is_set():
                return
            _put(out, strip, stop)
            if stop.is_set():
                return
        _put(out, _STOP, stop)
    except BaseException as exc:  # handed to the main thread
        _put(out, exc, stop)


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if stop.is_set():
                return


def _writer_loop(
    writer: MapWriter, jobs: queue.Queue[object], errors: list[BaseException]
) -> None:
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        if errors:
            continue  # drain after a failure
        try:
            writer.write_rows(*cast(_Rows, job))
        except BaseException as exc:
            errors.append(exc)


def _strips(q: queue.Queue[object]) -> Iterator[StripTiles]:
    while True:
        item = q.get()
        if item is _STOP:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, StripTiles)
        yield item


def _progress_bar(total: int, scene: Path, progress: bool) -> Progress:
    return progress_bar(total, scene.name[:40], progress, unit="tile")


def _run(
    sc: Scene,
    rt: Runtime,
    spec: ModelSpec,
    writer: MapWriter,
    opts: InferenceOptions,
    progress: bool,
) -> _RunStats:
    """Stream the scene: reader thread → model (here) → accumulator → writer thread."""
    from alosmap.tiling import axis_starts

    info = sc.info
    tile = opts.tile or spec.tile_size
    total = len(axis_starts(info.height, tile, opts.overlap)) * len(
        axis_starts(info.width, tile, opts.overlap)
    )
    jobs: queue.Queue[object] = queue.Queue(maxsize=4)
    write_errors: list[BaseException] = []

    def emit(
        r0: int, classes: np.ndarray, conf: np.ndarray | None, probs: np.ndarray | None
    ) -> None:
        if write_errors:
            raise write_errors[0]
        jobs.put((r0, classes, conf, probs))

    acc = StripAccumulator(
        info.width,
        info.height,
        tile,
        opts.overlap,
        spec,
        emit,
        want_confidence=opts.confidence,
        want_probabilities=opts.probabilities,
    )
    strips: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(sc, spec.radiometry, tile, opts.overlap, strips, stop),
        name="alosmap-reader",
        daemon=True,
    )
    wthread = threading.Thread(
        target=_writer_loop,
        args=(writer, jobs, write_errors),
        name="alosmap-writer",
        daemon=True,
    )
    bar = _progress_bar(total, Path(info.path), progress)
    reader.start()
    wthread.start()
    try:
        run, model_s = _feed(_strips(strips), rt, acc, opts.batch_size, bar)
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
    return _RunStats(total, run, model_s, acc.class_pixels)


def _feed(
    strips: Iterator[StripTiles],
    rt: Runtime,
    acc: StripAccumulator,
    batch_size: int,
    bar: Progress,
) -> tuple[int, float]:
    """Run the strips' tiles through the model in batches, in window order.

    Returns:
        ``(tiles run, seconds inside the runtime)``.
    """
    pending: list[tuple[Tile, np.ndarray]] = []
    run = 0
    model_s = 0.0

    def flush_batch() -> None:
        nonlocal model_s, run
        if not pending:
            return
        model_s += _infer(rt, pending, acc)
        run += len(pending)
        bar.update(len(pending))
        pending.clear()

    for strip in strips:
        acc.open_band(strip.row, strip.valid)
        bar.update(strip.skipped)
        for item in strip.tiles:
            pending.append(item)
            if len(pending) >= batch_size:
                flush_batch()
    flush_batch()
    return run, model_s


def _infer(
    rt: Runtime, pending: list[tuple[Tile, np.ndarray]], acc: StripAccumulator
) -> float:
    """Run one batch and blend its windows; return the seconds inside the runtime."""
    batch = np.stack([a for _, a in pending])[:, None]
    t0 = time.perf_counter()
    probs = rt.run(batch)
    seconds = time.perf_counter() - t0
    expected = (len(pending), acc.k, acc.tile, acc.tile)
    if probs.shape != expected:
        raise SpecMismatchError(
            f"the runtime returned {probs.shape}, expected {expected}"
        )
    for (t, _), p in zip(pending, probs, strict=True):
        acc.add(t, p)
    return seconds


__all__ = [
    "PredictResult",
    "StripAccumulator",
    "default_model_path",
    "load_model",
    "model_file",
    "predict_scene",
]
