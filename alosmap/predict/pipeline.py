"""``predict_scene``: stream a whole scene through the model into a map GeoTIFF.

Data flow (three threads, bounded queues; tensors stay on the model's device from
the strip's upload to the finished uint8 rows)::

    reader thread   full-width strips of ``tile`` rows (GDAL decodes with the GIL
                    released) → validity → the windows with data; on the CPU also
                    σ0 dB and normalisation (:mod:`alosmap.predict.tiles`)
    main thread     strip → device (pinned memory, asynchronous) → σ0 dB and
                    normalisation there (GPU) → windows cut into a reused
                    ``[batch, 1, tile, tile]`` device tensor → runtime → probabilities
                    on the device → StripAccumulator on the device (weighted blend,
                    argmax/threshold, confidence, percent: :mod:`alosmap.predict.blend`)
                    → uint8 rows copied back asynchronously
    writer thread   waits for each copy → MapWriter (temporary GeoTIFF) → COG, atomic
                    rename

On a GPU the work is queued on one CUDA stream, so copies, model and blend of
successive batches overlap with the host's reading and writing while their order
stays fixed. Memory is bounded by one band (``tile`` rows × scene width × classes,
on the device) and one strip in flight, never the whole scene. Results are fed to
the accumulator in window order, so the map does not depend on batch size, thread
timing or device. Where the time goes is in ``PredictResult.stage_seconds``
(:class:`~alosmap.predict.stages.StageClock`). How a scene is mapped is described
by one :class:`~alosmap.predict.options.InferenceOptions`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from alosmap._fileio import check_overwrite
from alosmap._progress import Progress, progress_bar
from alosmap.classes import TASKS
from alosmap.errors import InputRasterError, ModelFileError, SpecMismatchError
from alosmap.predict.area import MapArea, count_masked, map_area
from alosmap.predict.blend import Rows, StripAccumulator, pipeline_engine
from alosmap.predict.options import (
    InferenceOptions,
    ResolvedOptions,
    warn_bundled_model,
)
from alosmap.predict.stages import StageClock, device_sync
from alosmap.predict.tiles import DeviceStrip, HostStrip, StripSource
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, axis_starts

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.io.scene import Scene, SceneInfo
    from alosmap.io.writer import MapWriter
    from alosmap.runtime.base import Runtime

logger = logging.getLogger(__name__)

#: Where the bundled default models live (``<task>.onnx``, and ``<task>.safetensors``
#: for PyTorch: ``--backend torch``, training and export start from it).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_STOP = object()


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
        stage_seconds: seconds per pipeline stage
            (:class:`~alosmap.predict.stages.StageClock`; threads overlap, so they
            add up to more than ``seconds``).
        layover_pixels: pixels with data that a mosaic tile's mask marks as
            layover, mapped as no data (None: the scene had no such mask).
        shadow_pixels: the same for shadow.
        backscatter: the scene's backscatter (``sigma0``, ``gamma0``, ``unknown``).
        date_range: first and last acquisition date (mosaic tiles), else None.
        class_names: the legend's name of each output code.
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
    stage_seconds: dict[str, float] = field(default_factory=dict)
    layover_pixels: int | None = None
    shadow_pixels: int | None = None
    backscatter: str = "unknown"
    date_range: tuple[date, date] | None = None
    class_names: dict[int, str] = field(default_factory=dict)

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
    layover_pixels: int | None = None
    shadow_pixels: int | None = None


def default_model_path(task: str, backend: str = "auto") -> Path:
    """The bundled default model of ``task`` (``.onnx``; ``.safetensors`` for torch).

    The ``.onnx`` file runs on ONNX Runtime, without PyTorch; ``backend="torch"``
    gets the ``.safetensors`` model it was exported from.

    Raises:
        ModelFileError: when this installation carries no bundled model for the task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    suffix = ".safetensors" if backend == "torch" else ".onnx"
    path = WEIGHTS_DIR / f"{task}{suffix}"
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
    return options.model_path or default_model_path(
        options.task or "lulc", options.backend
    )


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
    profile: bool = False,
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
        profile: on a GPU, wait for the device at the end of every stage, so that
            ``stage_seconds`` says where the time goes (slower; no effect on the
            CPU, where stages are always timed as they run).
        **overrides: :class:`InferenceOptions` fields (``model=``, ``overlap=``,
            ``confidence=``, ...) that replace those of ``options``.

    Returns:
        A :class:`PredictResult`.

    Raises:
        AlosmapError: for bad options, inputs, model files or outputs (nothing is
            left behind).
        TypeError: an override that is not an inference option.
    """
    return stream_scene(
        scene,
        output,
        options,
        runtime=runtime,
        progress=progress,
        preview=preview,
        profile=profile,
        **overrides,
    ).finish()


def stream_scene(
    scene: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: InferenceOptions | None = None,
    *,
    runtime: Runtime | None = None,
    progress: bool = False,
    preview: str | os.PathLike[str] | None = None,
    profile: bool = False,
    **overrides: Any,
) -> StreamedScene:
    """The model's part of :func:`predict_scene`: every row of the maps written.

    Returns a :class:`StreamedScene`, whose :meth:`~StreamedScene.finish` builds the
    COGs, the styles and the preview (host work only) and returns the
    :class:`PredictResult`; until then nothing is at the output paths. Batch mode
    finishes one scene while the model maps the next. Arguments and errors as
    :func:`predict_scene`'s.
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
        # the whole scene's window grid; an area of interest selects from it
        area = map_area(whole, opts, spec.legend.nodata)
        info = whole.info if area.is_whole else whole.crop(area.window).info
        if runtime is None:
            warn_bundled_model(asked, whole.tags)
        warn_backscatter(spec, info)
        writer = _map_writer(out_path, info, spec, opts, model_path, runtime, scene)
        try:
            rt = runtime if runtime is not None else load_model(model_path, opts)
            clock = StageClock(device_sync(str(rt.device)) if profile else None)
            try:
                stats = _run(whole, area, rt, spec, writer, opts, progress, clock)
            finally:
                if runtime is None:
                    rt.close()
        except BaseException:
            writer.abort()  # a failed run leaves nothing behind
            raise
    return StreamedScene(writer, spec, opts, info, stats, clock, preview_path, t_start)


@dataclass
class StreamedScene:
    """A scene whose map rows are all written (:func:`stream_scene`).

    Call :meth:`finish` (the COGs, styles, preview: what makes the files appear)
    or :meth:`abort` (nothing is left); either may run in another thread.
    """

    writer: MapWriter
    spec: ModelSpec
    opts: InferenceOptions
    info: SceneInfo
    stats: _RunStats
    clock: StageClock
    preview: Path | None
    t_start: float

    def finish(self) -> PredictResult:
        """Build the COGs and the preview; the outputs appear; the run's result.

        Raises:
            AlosmapError: the outputs cannot be written (nothing is left behind).
        """
        writer, spec, opts, info = self.writer, self.spec, self.opts, self.info
        with self.clock.stage("cog"):
            final = writer.finalize()  # on failure it leaves nothing behind
        logger.info(
            "seconds by stage: %s",
            ", ".join(f"{k} {v:.2f}" for k, v in self.clock.seconds.items() if v > 0),
        )
        if self.preview is not None:
            try:
                conf = writer.conf_path if opts.confidence else None
                _write_preview(self.preview, final, spec, info, opts.overwrite, conf)
            except BaseException:
                _remove_outputs(writer)  # a failed run leaves no outputs
                raise
        stats = self.stats
        return PredictResult(
            output=final,
            task=spec.task,
            probabilities=Path(writer.prob_path) if opts.probabilities else None,
            confidence=Path(writer.conf_path) if opts.confidence else None,
            preview=self.preview,
            tiles_total=stats.tiles_total,
            tiles_run=stats.tiles_run,
            seconds=time.perf_counter() - self.t_start,
            model_seconds=stats.model_seconds,
            class_pixels={c: int(n) for c, n in enumerate(stats.class_pixels) if n},
            valid_pixels=int(stats.class_pixels.sum()),
            stage_seconds=dict(self.clock.seconds),
            layover_pixels=stats.layover_pixels,
            shadow_pixels=stats.shadow_pixels,
            backscatter=info.backscatter,
            date_range=info.date_range,
            class_names={c.code: c.name for c in spec.legend.classes},
        )

    def abort(self) -> None:
        """Discard the scene's outputs (nothing is left). Idempotent."""
        self.writer.abort()


def backscatter_warning(spec: ModelSpec, info: SceneInfo) -> str | None:
    """The line that says a model of σ0 runs on γ0 (or the reverse), else None.

    Unknown on either side gives no warning.
    """
    want, have = spec.radiometry.backscatter, info.backscatter
    if "unknown" in (want, have) or want == have:
        return None
    return (
        f"model {spec.name!r} was trained on {want} backscatter but "
        f"{Path(info.path).name} is {have} ({info.backscatter_source}): expect "
        f"biased classes, on slopes most; map it with a model trained on {have}"
    )


def warn_backscatter(spec: ModelSpec, info: SceneInfo) -> None:
    """Log :func:`backscatter_warning` when there is one."""
    message = backscatter_warning(spec, info)
    if message is not None:
        logger.warning("%s", message)


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
    from alosmap.predict.preview import preview_format

    preview_format(preview)  # a suffix it can write, before any work
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
    scene: str | os.PathLike[str] | None = None,
) -> MapWriter:
    """The map writer, with the tags that say what produced the map.

    Provenance: the model's name (``ALOSMAP_MODEL``, from the writer), file name
    and SHA-256 (``ALOSMAP_MODEL_FILE``, ``ALOSMAP_MODEL_SHA256``: hashed once per
    opened runtime, :func:`_model_sha256`), the input as given (``scene``, URL
    included: ``SOURCE_INPUT``) and, in ``ALOSMAP_PARAMS``, every option that
    changes the map (tile, overlap, precision, backend, device, ``compile``,
    band, units and where they came from, the area of interest) plus the batch
    size and the outputs asked for.
    """
    from alosmap.io.writer import MapWriter
    from alosmap.runtime.base import resolve_backend

    if runtime is not None:
        backend, device = runtime.name, str(runtime.device)
    else:
        backend, device = resolve_backend(model_path, opts.backend), opts.device
    params: dict[str, Any] = {
        "tile": opts.tile,
        "overlap": opts.overlap,
        "batch_size": opts.batch_size,
        "backend": backend,
        "device": device,
        # unset: the backend's default, torch fp32, ONNX / TensorRT the file's own
        "precision": opts.precision
        or getattr(runtime, "precision", None)
        or ("fp32" if backend == "torch" else "model file's"),
        "compile": bool(opts.compile),
        "input_units": info.units,
        "input_units_source": info.units_source,
        "band": info.band,
        "confidence": bool(opts.confidence),
        "probabilities": bool(opts.probabilities),
    }
    if opts.bbox is not None:
        params.update(bbox=list(opts.bbox), bbox_crs=opts.bbox_crs)
    elif opts.aoi is not None:  # read already: the map's area comes from it
        from alosmap._fileio import sha256_file

        params.update(aoi=os.fspath(opts.aoi), aoi_sha256=sha256_file(opts.aoi))
    sha = _model_sha256(model_path, runtime)
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
        params=params,
        source_scene=scene if scene is not None else info.path,
        tags={
            "ALOSMAP_MODEL_FILE": model_path.name,
            **({"ALOSMAP_MODEL_SHA256": sha} if sha else {}),
            **({"ACQUISITION_DATE": info.date.isoformat()} if info.date else {}),
            **scene_tags(info),
        },
        overwrite=opts.overwrite,
    )


#: SHA-256 of the model file of each opened runtime, hashed on the runtime's first
#: map (batch mode maps many scenes with one runtime: one hash, not one per scene).
_RUNTIME_SHA256: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _model_sha256(model_path: Path, runtime: Runtime | None) -> str | None:
    """SHA-256 (hex) of the model file; None without a file (an in-memory runtime).

    Without a runtime the model is opened for this one scene, and hashed with it.
    """
    from alosmap._fileio import sha256_file

    if runtime is not None:
        try:
            return _RUNTIME_SHA256[runtime]
        except KeyError:
            pass
        except TypeError:  # a runtime that cannot be a weak key: hash each time
            runtime = None
    path = getattr(runtime, "path", None) or model_path
    if not Path(path).is_file():
        return None
    digest = sha256_file(path)
    if runtime is not None:
        _RUNTIME_SHA256[runtime] = digest
    return digest


def scene_tags(info: SceneInfo) -> dict[str, str]:
    """Provenance tags of what the scene is: backscatter, acquisition date range.

    ``SOURCE_BACKSCATTER`` (``sigma0``, ``gamma0``, ``unknown``) always; for mosaic
    tiles ``ACQUISITION_START_DATE`` and ``ACQUISITION_END_DATE`` (ISO dates),
    ``ACQUISITION_DATES_SOURCE`` (date file, xml metadata or file name year) and
    ``SOURCE_MASK`` (the mask file's name, when one was used).
    """
    tags = {"SOURCE_BACKSCATTER": info.backscatter}
    if info.date_range is not None:
        first, last = info.date_range
        tags["ACQUISITION_START_DATE"] = first.isoformat()
        tags["ACQUISITION_END_DATE"] = last.isoformat()
        tags["ACQUISITION_DATES_SOURCE"] = info.date_source or ""
    if info.mask is not None:
        tags["SOURCE_MASK"] = info.mask.name
    return tags


# --------------------------------------------------------------------------------------
# the streaming run
# --------------------------------------------------------------------------------------


#: Strips held at once: the one the main thread cuts windows from and the one the
#: reader prepares (a strip is tile rows × scene width: memory grows with width).
_STRIPS_IN_FLIGHT = 2
#: Seconds a reader or writer thread may take to stop before a warning names it.
_JOIN_NOTICE_S = 2.0


def _reader(
    source: StripSource,
    out: queue.Queue[object],
    stop: threading.Event,
    clock: StageClock,
    slots: threading.Semaphore,
) -> None:
    """Reader thread: put every strip on ``out`` (host work), then ``_STOP``.

    A strip is read only once a slot is free (the main thread frees one when it has
    cut a strip's windows), so at most :data:`_STRIPS_IN_FLIGHT` strips exist.
    """
    try:
        for row in source.rows:
            while not slots.acquire(timeout=0.2):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            strip = source.read(row)
            for stage, seconds in strip.seconds.items():
                clock.add(stage, seconds, strip.cpu_seconds.get(stage, 0.0))
            _put(out, strip, stop)
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
    writer: MapWriter,
    area: MapArea,
    jobs: queue.Queue[object],
    errors: list[BaseException],
    clock: StageClock,
) -> None:
    """Writer thread: the frame's finished rows, cropped to the map, into ``writer``."""
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        if errors:
            continue  # drain after a failure
        try:
            rows = cast(Rows, job)
            if rows.ready is not None:  # rows copied back from a GPU
                with clock.stage("d2h"):
                    rows.wait()
            with clock.stage("write"):
                out = area.crop(rows)
                if out is not None:
                    writer.write_rows(
                        out.row, out.classes, out.confidence, out.probabilities
                    )
        except BaseException as exc:
            errors.append(exc)


def _strips(q: queue.Queue[object]) -> Iterator[HostStrip]:
    """The reader's strips, until its ``_STOP`` (its exception raised here).

    The generator keeps no reference to a strip it has handed over (a strip is
    tile rows × scene width: see :meth:`_Feeder._feed`).
    """
    while True:
        item = [q.get()]
        if item[0] is _STOP:
            return
        if isinstance(item[0], BaseException):
            raise cast(BaseException, item.pop())
        assert isinstance(item[0], HostStrip)
        yield cast(HostStrip, item.pop())


def _progress_bar(total: int, scene: Path, progress: bool) -> Progress:
    return progress_bar(total, scene.name[:40], progress, unit="tile")


def _run(
    whole: Scene,
    area: MapArea,
    rt: Runtime,
    spec: ModelSpec,
    writer: MapWriter,
    opts: ResolvedOptions,
    progress: bool,
    clock: StageClock,
) -> _RunStats:
    """Stream the area's windows: reader → device (here) → accumulator → writer.

    The writer thread crops the finished rows to the map (:class:`MapArea`).
    """
    # the frame: the scene window that holds the area's windows (all of a whole scene)
    sc = whole if area.is_whole else whole.crop(area.frame)
    info = sc.info
    tile, overlap = opts.tile, opts.overlap
    device = str(rt.device)
    engine = pipeline_engine()  # numpy on the CPU, torch on a GPU
    total = area.part.windows
    # few strips in flight: a strip is width × tile values (memory grows with width)
    jobs: queue.Queue[object] = queue.Queue(maxsize=4)
    write_errors: list[BaseException] = []

    def emit(rows: Rows) -> None:
        if write_errors:
            raise write_errors[0]
        jobs.put(rows)

    acc = StripAccumulator(
        info.width,
        info.height,
        tile,
        overlap,
        spec,
        emit,
        want_confidence=opts.confidence,
        want_probabilities=opts.probabilities,
        device=device,
        engine=engine,
        starts=(area.part.rows, area.part.cols),
    )
    # the accumulator's pair of strips is read together (StripSource.read)
    source = StripSource(
        sc, spec.radiometry, tile, overlap, device, area.part, engine, acc.pair
    )
    strips: queue.Queue[object] = queue.Queue(maxsize=_STRIPS_IN_FLIGHT)
    slots = threading.Semaphore(_STRIPS_IN_FLIGHT)
    stop = threading.Event()
    reader = threading.Thread(
        target=_reader,
        args=(source, strips, stop, clock, slots),
        name="alosmap-reader",
        daemon=True,
    )
    wthread = threading.Thread(
        target=_writer_loop,
        args=(writer, area, jobs, write_errors, clock),
        name="alosmap-writer",
        daemon=True,
    )
    bar = _progress_bar(total, Path(info.path), progress)
    # every model call has one shape, a function of the scene (see _Feeder)
    rows = axis_starts(whole.info.height, tile, overlap)
    cols = axis_starts(whole.info.width, tile, overlap)
    batch = min(opts.batch_size, len(rows) * len(cols))
    feeder = _Feeder(rt, acc, source, batch, area.part.end, bar, clock, slots)
    stopping = True  # until the scene has streamed: a failure or Ctrl-C
    try:
        # started inside the try: a Ctrl-C while a thread starts still stops both
        reader.start()
        wthread.start()
        feeder.feed(_strips(strips))
        stopping = False
    finally:
        stop.set()
        jobs.put(_STOP)
        # both threads end before the scene and the writer close under them
        _join_threads(wthread, reader, stopping=stopping)
        bar.close()
    if write_errors:
        raise write_errors[0]
    pixels = writer.class_pixels
    if pixels.sum() == 0:
        raise InputRasterError(f"{info.path}: every pixel is no data; nothing to map")
    if sc.inf_pixels:
        logger.warning(
            "%d pixel(s) of %s were ±inf and are treated as no data",
            sc.inf_pixels,
            Path(info.path).name,
        )
    stats = _RunStats(total, feeder.run, clock.seconds["model"], pixels)
    if info.mask is not None:  # a mosaic tile's layover/shadow mask
        stats.layover_pixels, stats.shadow_pixels = (
            (sc.layover_pixels, sc.shadow_pixels)
            if area.is_whole
            else count_masked(whole, area)
        )
    return stats


def _join_threads(*threads: threading.Thread, stopping: bool = False) -> None:
    """Wait until every started thread has ended, whatever Ctrl-C says meanwhile.

    The reader and writer threads use the scene's and the writer's GDAL datasets,
    which close right after: leaving one running there crashes the process (seen:
    a segmentation fault after Ctrl-C). They stop at their next strip or row, so
    the wait is short; a Ctrl-C during it is raised once they have. When
    ``stopping`` (a failure or Ctrl-C, not the writer draining its last rows), a
    thread still busy after :data:`_JOIN_NOTICE_S` (a read from a slow or hung
    network file) is named in a warning, once, so that the wait is not silent.
    """
    interrupted = False
    for t in threads:
        noticed = not stopping
        while t.ident is not None and t.is_alive():
            try:
                t.join(None if noticed else _JOIN_NOTICE_S)
            except KeyboardInterrupt:
                interrupted = True
            if not noticed and t.is_alive():
                noticed = True
                logger.warning(
                    "waiting for the %s thread to end its current %s before stopping",
                    t.name.removeprefix("alosmap-"),
                    "write" if "writer" in t.name else "read",
                )
    if interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (then back to the current).

    Nothing to do where PyTorch is not loaded (the host path of ONNX Runtime).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


class _Feeder:
    """The main thread's loop: strips → device → batches → model → accumulator.

    Windows go through in the accumulator's order (grid order, the last two bands
    interleaved where they come as a pair: :attr:`StripAccumulator.order`; the
    pair's upper strip waits for the lower), so the map does not depend on the
    batch size.
    The batch is a ``[batch_size, 1, tile, tile]`` tensor on the model's device,
    reused (its padding, only for scenes smaller than a tile, stays zero). Every
    model call gets the whole tensor, the last one too (its unused slots hold
    earlier windows, whose results are dropped): a runtime may round a window's
    probabilities differently in batches of another size (measured: the torch
    CPU runtime in a batch of 1 vs 8, up to 4e-8), and so a window's result does
    not depend on how many windows the run has (an area of interest, the last
    batch). ``batch_size`` is a function of the scene: the option, or the
    scene's number of windows when it has fewer.

    Args:
        end: the frame row where the last window ends (the rows below, a frame's
            margin, are never finished).
    """

    def __init__(
        self,
        rt: Runtime,
        acc: StripAccumulator,
        source: StripSource,
        batch_size: int,
        end: int,
        bar: Progress,
        clock: StageClock,
        slots: threading.Semaphore,
    ) -> None:
        self.rt, self.acc, self.source = rt, acc, source
        self.end = end
        self.slots = slots
        self.bar, self.clock = bar, clock
        self.tile = source.tile
        xp = acc.xp
        self.buf = xp.zeros(
            (batch_size, 1, self.tile, self.tile), dtype=xp.float32, device=acc.device
        )
        # the batch as the runtime takes it: the same memory, viewed (a torch
        # runtime on the host engine's NumPy batch, or the reverse)
        self.batch = _runtime_view(self.buf, getattr(rt, "array_kind", "torch"))
        self.pending: list[Tile] = []
        self.run = 0
        torch = sys.modules.get("torch")
        self._model_threads = torch.get_num_threads() if torch is not None else 0

    def feed(self, strips: Iterator[HostStrip]) -> None:
        """Run every strip's windows, the last partial batch too, and finish the map.

        On the CPU the pipeline's own tensor operations (cutting, blending,
        finishing) run on one thread, and the model on the runtime's threads:
        per-window operations gain nothing from more threads, and lose badly to
        OpenMP's waiting when the reader, the writer or other processes keep
        the cores busy (measured: blending a window took 1.6 ms on two threads of
        a busy 2-core machine, 0.29 ms on one).
        """
        torch = sys.modules.get("torch")
        threads = self._model_threads
        if torch is not None and not self.acc.gpu:
            torch.set_num_threads(1)
        try:
            self._feed(strips)
            with self.clock.stage("finish", device=True):
                self.acc.flush(self.end)
        finally:
            if torch is not None:
                torch.set_num_threads(threads)

    def _feed(self, strips: Iterator[HostStrip]) -> None:
        height, width = self.acc.height, self.acc.width
        th, tw = min(self.tile, height), min(self.tile, width)
        pair = self.acc.pair
        upper: DeviceStrip | None = None  # the pair's upper strip, held for the lower
        for strip in strips:
            dev: DeviceStrip | None = None
            windows: list[tuple[DeviceStrip, int]] = []
            try:
                dev = self._open(strip)
                if dev is None:
                    continue
                if pair is not None and strip.row == pair[0]:
                    upper = dev
                    continue
                windows = [(dev, c) for c in dev.cols]
                if pair is not None and upper is not None and strip.row == pair[1]:
                    windows, upper = self._pair_windows(upper, dev), None
                self._cut(windows, th, tw)
            finally:
                # the reader may read the next strip: this one is let go first (its
                # windows are in the batch), else three strips would be alive at once
                del strip, dev, windows
                self.slots.release()
        if upper is not None:  # the lower strip had no data
            self._cut([(upper, c) for c in upper.cols], th, tw)
        self._infer()

    def _open(self, strip: HostStrip) -> DeviceStrip | None:
        """The strip on the device, its band opened (None: a strip without data)."""
        self.bar.update(strip.skipped)
        if not strip.cols:
            self.acc.open_band(strip.row, None)
            return None
        dev = self.source.to_device(strip, self.clock)
        self.acc.open_band(strip.row, dev.valid)
        return dev

    def _pair_windows(
        self, upper: DeviceStrip, lower: DeviceStrip
    ) -> list[tuple[DeviceStrip, int]]:
        """The windows with data of the accumulator's pair, in its order."""
        have = {(s.row, c): s for s in (upper, lower) for c in s.cols}
        return [(have[w], w[1]) for w in self.acc.pair_order if w in have]

    def _cut(self, windows: list[tuple[DeviceStrip, int]], th: int, tw: int) -> None:
        """Cut windows ``(strip, col)`` into the batch, running each full batch."""
        for dev, col in windows:
            with self.clock.stage("cut", device=True):
                self.buf[len(self.pending), 0, :th, :tw] = dev.x[:, col : col + tw]
            self.pending.append(Tile(dev.row, col, th, tw))
            if len(self.pending) == len(self.buf):
                self._infer()

    def _infer(self) -> None:
        """Run the pending windows and blend their probabilities."""
        n = len(self.pending)
        if not n:
            return
        clock, acc = self.clock, self.acc
        with clock.stage("model", device=True), _threads(self._model_threads):
            # the full batch (see the class); probabilities as the engine's arrays
            probs = acc.asarray(self.rt.run(self.batch))
        expected = (len(self.buf), acc.k, self.tile, self.tile)
        if tuple(probs.shape) != expected:
            raise SpecMismatchError(
                f"the runtime returned {tuple(probs.shape)}, expected {expected}"
            )
        for i, t in enumerate(self.pending):
            if t.row > acc.base:  # a new band: the rows above are final
                with clock.stage("finish", device=True):
                    acc.flush(t.row)
            with clock.stage("blend", device=True):
                acc.add(t, probs[i])
        self.run += n
        self.bar.update(n)
        self.pending.clear()


def _runtime_view(buf: Any, kind: str) -> Any:
    """The batch buffer ``buf`` as a runtime of ``kind`` takes it (same memory).

    ``kind`` is the runtime's ``array_kind``: ``numpy`` (ONNX Runtime on the CPU)
    or ``torch``. A NumPy buffer (the host engine) is viewed as a CPU tensor for a
    torch runtime, a CPU tensor as NumPy for a NumPy runtime.
    """
    if kind == "numpy" and not isinstance(buf, np.ndarray):
        return buf.numpy()
    if kind != "numpy" and isinstance(buf, np.ndarray):
        import torch

        return torch.from_numpy(buf)
    return buf


__all__ = [
    "PredictResult",
    "StreamedScene",
    "StripAccumulator",
    "backscatter_warning",
    "default_model_path",
    "load_model",
    "model_file",
    "predict_scene",
    "stream_scene",
]
