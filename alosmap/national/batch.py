"""Map many scenes: resumable, sharded across ranks and array jobs, fault tolerant.

:func:`run_batch` maps every scene with :func:`~alosmap.predict.pipeline.predict_scene`,
opening the model once per process, into ``OUT_DIR/<scene stem>_<task>.tif`` (with
``<scene stem>_<task>_confidence.tif`` beside it by default, which ``alosmap mosaic
--merge confidence`` uses). A scene's host-only tail (building its COGs, the preview,
hashing the map for its record) runs in a background thread while the model maps the
next scene, so a GPU is not left idle between scenes; at most one scene is finishing
at a time.

Resume
------
Each finished scene gets a record ``OUT_DIR/_alosmap/records/<scene stem>_<task>.json``
(format ``alosmap-batch-record/1``), written atomically *after* the map is in place.
It holds what produced the map (model file name and SHA-256, alosmap version, the
options), the map's size, modification time and SHA-256, and what the STAC catalog
needs (footprint, acquisition time, the model's legend, classes and their pixel
counts, km²). A scene is skipped when its record matches the current run, i.e. the
same task, model SHA-256 and output-changing options (tile, overlap, input units,
band, confidence, probabilities), and the map is still there with the recorded size
and modification time (and its confidence, probabilities and preview files are
there). Batch size,
backend, device and threads are recorded but do not force a re-run, nor does a newer
alosmap version. Records of earlier releases (maps with the confidence as band 2,
no ``confidence`` entry) are read as they are: their maps count as done.

A scene interrupted mid-way (crash, Ctrl-C, killed job) leaves no map at the output
path: the map writer builds it in a hidden temporary file and renames it into place
once complete. With no record it is redone from scratch, and its leftover hidden
temporary files (those of no live process) are removed when its map writer opens. A
map with no record (e.g. killed between the rename and the record) is redone too. A
scene whose outputs would be one of the batch's scenes stops the batch before any
work, whatever ``--overwrite`` says. A record from *another* model or other
options stops the batch before any work, unless ``--overwrite`` is given: the
existing maps are then remapped (each replaced only once its new map is complete).

Sharding
--------
The scene list (SCENES and/or a manifest, duplicates removed) is sorted by output
name; scene ``k`` belongs to shard ``k mod N``. Under ``torchrun`` the ranks
(``RANK``, ``WORLD_SIZE`` from the environment; the model runs on
``cuda:LOCAL_RANK`` for ``--device cuda``) are the shards; an array job passes
``--shard i/n``; both together make ``n × WORLD_SIZE`` shards, shard ``i·WORLD_SIZE +
RANK``. Every process computes the same list, so every scene is mapped exactly once
and no process writes another's files. Under torchrun a gloo process group (CPU,
whatever the device) gathers the ranks' results at the end, so that rank 0 writes one
report and catalog and prints one summary; every rank exits with the same code.

Failures
--------
A scene that fails (missing or unreadable file, every pixel no data, …) is logged,
listed in the run's report with its error, and the batch goes on; the exit code is 1
when any scene failed. The report ``OUT_DIR/_alosmap/reports/<UTC time>[-shard-i-of-
n].json`` (format ``alosmap-batch-report/1``) counts done / skipped / failed scenes
(with the errors), km² mapped and tiles per second.

Catalog
-------
With pystac installed (``pip install 'alosmap[stac]'``) a STAC catalog of every
recorded map is written to ``OUT_DIR/stac/catalog.json`` (see
:mod:`alosmap.national.stac`) from the records, so it also lists maps of earlier
runs and other shards. Separate array-job shards each rewrite it from the records
present when they finish (and again if more appeared meanwhile), so the last shard
to finish leaves it complete.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alosmap._dist import DistInfo, dist_info
from alosmap._fileio import atomic_write_bytes, sha256_file
from alosmap._version import __version__
from alosmap.classes import Legend
from alosmap.errors import BackendUnavailableError, BatchError
from alosmap.io.raster import is_virtual, raster_stem
from alosmap.predict.options import OPTIONAL_FINGERPRINT_FIELDS, InferenceOptions

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.predict.pipeline import PredictResult, StreamedScene
    from alosmap.runtime.base import Runtime

logger = logging.getLogger(__name__)

RECORD_FORMAT = "alosmap-batch-record/1"
REPORT_FORMAT = "alosmap-batch-report/1"
#: Batch bookkeeping inside OUT_DIR.
STATE_DIR = "_alosmap"


# -- scene lists, shards --------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        """Check ``0 <= index < count``."""
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: expected i/n with 0 <= i < n"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"`` (e.g. ``"3/10"``, 0-based), as ``--shard`` takes it.

        Raises:
            ValueError: for anything else.
        """
        parts = text.strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"{text!r}: expected i/n, e.g. 0/4 (0 <= i < n)")
        return cls(int(parts[0]), int(parts[1]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def effective_shard(shard: Shard | None, rank: int = 0, world_size: int = 1) -> Shard:
    """Combine an array-job shard ``i/n`` with the torchrun rank.

    The result is shard ``i·W + rank`` of ``n·W`` (``W`` = world size).
    """
    s = shard or Shard(0, 1)
    return Shard(s.index * world_size + rank, s.count * world_size)


def expand_scenes(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Scene paths, with glob patterns (``*``, ``?``, ``[``, ``**``) expanded.

    A pattern is expanded only when no file has that very name; a pattern that
    matches nothing is kept as it is (and reported as a missing scene), so a
    quoted ``'data/**/IMG-HH-*.tif'`` works where the shell's expansion would be
    too long.
    """
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if is_virtual(text):  # GDAL opens it; nothing to expand
            out.append(Path(text))
            continue
        if not os.path.exists(text) and any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if matches:
                out += [Path(m) for m in matches if os.path.isfile(m)]
                continue
        out.append(Path(text))
    return out


def read_manifest(path: str | os.PathLike[str]) -> list[Path]:
    """Scene paths of a manifest: one per line; blank lines and ``#`` comments skipped.

    Relative paths are relative to the manifest's directory. Missing files are kept
    (batch reports them as failed scenes).

    Raises:
        BatchError: the manifest cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read manifest {p}: {exc}") from exc
    out = []
    for line in text.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        scene = Path(item).expanduser()
        keep = scene.is_absolute() or is_virtual(item)
        out.append(scene if keep else p.parent / scene)
    return out


@dataclass(frozen=True)
class Job:
    """One scene of the batch.

    Attributes:
        scene: the input scene.
        output: its map, ``OUT_DIR/<scene stem>_<task>.tif``.
    """

    scene: Path
    output: Path

    @property
    def key(self) -> str:
        """Identifier of the scene's map (its file stem); names its record."""
        return self.output.stem


def plan_jobs(
    scenes: Iterable[str | os.PathLike[str]], out_dir: Path, task: str
) -> list[Job]:
    """One job per distinct scene, sorted by output name (the sharding order).

    Raises:
        BatchError: no scenes, or two different scenes with the same file stem
            (their maps would collide).
    """
    by_key: dict[str, Job] = {}
    for s in scenes:
        scene = Path(s)
        job = Job(scene, out_dir / f"{raster_stem(s)}_{task}.tif")
        seen = by_key.get(job.key)
        if seen is None:
            by_key[job.key] = job
        elif _same_file(seen.scene, scene):
            logger.info("%s is listed twice; mapped once", scene)
        else:
            raise BatchError(
                f"{seen.scene} and {scene} would both write {job.output.name}; "
                "rename one or map them into different output directories"
            )
    if not by_key:
        raise BatchError("no scenes to map: give SCENES and/or --manifest FILE")
    return [by_key[k] for k in sorted(by_key)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return str(a) == str(b)


def shard_jobs(jobs: Sequence[Job], shard: Shard) -> list[Job]:
    """The jobs of ``shard``: job ``k`` belongs to shard ``k mod count``."""
    return [j for k, j in enumerate(jobs) if k % shard.count == shard.index]


# -- records ------------------------------------------------------------------------


def state_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``OUT_DIR/_alosmap``: records and reports."""
    return Path(out_dir) / STATE_DIR


def record_path(out_dir: str | os.PathLike[str], key: str) -> Path:
    """The record of map ``key`` (``<scene stem>_<task>``)."""
    return state_dir(out_dir) / "records" / f"{key}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when missing or unreadable (then the scene is redone)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("unreadable record %s (%s); its scene is redone", path, exc)
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == RECORD_FORMAT else None


def read_records(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every valid record in ``OUT_DIR`` whose map still exists, sorted by key."""
    folder = state_dir(out_dir) / "records"
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = read_record(p)
        if rec is not None and (Path(out_dir) / rec.get("output", "")).is_file():
            out.append(rec)
    return out


def _output_stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _mismatch(rec: dict[str, Any], fingerprint: dict[str, Any]) -> list[str]:
    """Names of the fingerprint fields in which ``rec`` differs.

    The area-of-interest fields count also when only the record has them (a map
    of an AOI is not the map of the whole scene).
    """
    old = rec.get("fingerprint", {})
    keys = [*fingerprint, *(k for k in OPTIONAL_FINGERPRINT_FIELDS if k in old)]
    return [k for k in dict.fromkeys(keys) if old.get(k) != fingerprint.get(k)]


def _is_done(rec: dict[str, Any] | None, job: Job, fingerprint: dict[str, Any]) -> bool:
    """Whether ``rec`` shows the job finished with this fingerprint, map intact."""
    if rec is None or _mismatch(rec, fingerprint):
        return False
    stat = _output_stat(job.output)
    if stat is None or list(stat) != [rec.get("size"), rec.get("mtime_ns")]:
        return False
    extra = [
        str(rec[k]) for k in ("confidence", "probabilities", "preview") if rec.get(k)
    ]
    return all((job.output.parent / name).is_file() for name in extra)


def _job_outputs(job: Job, options: InferenceOptions, previews: bool) -> list[Path]:
    """The files a job writes: map, confidence, probabilities, preview."""
    from alosmap.io.writer import output_paths

    return [
        *output_paths(
            job.output,
            confidence=options.confidence,
            probabilities=options.probabilities,
        ),
        *([job.output.with_suffix(".png")] if previews else []),
    ]


def _refuse_inputs_as_outputs(
    jobs: Sequence[Job], options: InferenceOptions, previews: bool
) -> None:
    """Stop before any work when an output of the batch is one of its scenes.

    Raises:
        OutputPathError: whatever ``overwrite`` says.
    """
    from alosmap._fileio import check_not_input

    scenes = [j.scene for j in jobs if j.scene.exists()]
    outputs = [p for j in jobs for p in _job_outputs(j, options, previews)]
    check_not_input([p for p in outputs if p.exists()], scenes)


# -- the batch ------------------------------------------------------------------------


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch` (merged over ranks on rank 0 under torchrun).

    Attributes:
        out_dir: the output directory.
        task: the task mapped.
        done: keys of the scenes mapped in this run.
        skipped: keys of the scenes already done.
        failed: ``(scene, error)`` of the scenes that failed.
        outputs: maps of the done and skipped scenes.
        km2: area mapped in this run (valid pixels, km²).
        tiles: tiles run through the model in this run.
        seconds: wall-clock time (the slowest rank's).
        report: the report written (None on ranks other than 0).
        catalog: the STAC catalog written, if any.
        primary: whether this process reports (rank 0).
        world_size: processes of the torchrun job.
        notes: things the user should hear about (e.g. no catalog without pystac).
    """

    out_dir: Path
    task: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    km2: float = 0.0
    tiles: int = 0
    seconds: float = 0.0
    report: Path | None = None
    catalog: Path | None = None
    primary: bool = True
    world_size: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def tiles_per_second(self) -> float:
        """Tiles run per wall-clock second (0 when nothing ran)."""
        return self.tiles / self.seconds if self.seconds > 0 and self.tiles else 0.0

    def summary(self) -> str:
        """One line: done / skipped / failed, km², tiles/s, time."""
        return (
            f"batch: {len(self.done)} done, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed; {self.km2:,.1f} km² mapped, "
            f"{self.tiles} tiles in {self.seconds:.1f} s "
            f"({self.tiles_per_second:.2f} tiles/s)"
        )


#: The inference options of a batch unless told otherwise: with the confidence band,
#: which ``alosmap mosaic --merge confidence`` needs.
BATCH_DEFAULTS = InferenceOptions(confidence=True)
#: The options a record lists under ``options``, as given (``tile`` None = the
#: model's), with the device this rank ran on.
RECORD_OPTIONS = (
    "tile",
    "overlap",
    "batch_size",
    "backend",
    "device",
    "confidence",
    "probabilities",
    "input_units",
    "band",
)


@dataclass(frozen=True)
class _Plan:
    """What this process maps and with what (every rank computes the same plan).

    Attributes:
        out: the output directory.
        options: the inference options, checked against the model (task and tile
            filled) and with this rank's device.
        model_path: the model file.
        model_sha: its SHA-256.
        fingerprint: the output-changing options every record must match.
        record_options: the options as given, written into each record.
        jobs: every scene of the batch, in sharding order.
        records: the existing record of each job (None when missing).
        shard: this process's shard (array job and torchrun rank combined).
        dist: this process's place in a torchrun job.
        previews: also write PNG quicklooks.
        legend: the model's legend (class names of the records, STAC classes).
    """

    out: Path
    options: InferenceOptions
    model_path: Path
    model_sha: str
    fingerprint: dict[str, Any]
    record_options: dict[str, Any]
    jobs: list[Job]
    records: dict[str, dict[str, Any] | None]
    shard: Shard
    dist: DistInfo
    previews: bool
    legend: Legend

    @property
    def task(self) -> str:
        """The task mapped (the model's)."""
        return str(self.fingerprint["task"])


def run_batch(
    scenes: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: InferenceOptions | None = None,
    *,
    shard: Shard | None = None,
    previews: bool = False,
    stac: bool = True,
    progress: bool = False,
    **overrides: Any,
) -> BatchResult:
    """Map many scenes into ``out_dir``; see the module docstring for the rules.

    Args:
        scenes: scene files (missing ones are reported as failed scenes).
        out_dir: output directory (created if missing).
        options: how to map; default :data:`BATCH_DEFAULTS` (the
            :class:`~alosmap.predict.options.InferenceOptions` defaults with the
            confidence band, which ``mosaic --merge confidence`` needs). A ``cuda``
            device becomes ``cuda:LOCAL_RANK`` under torchrun; ``overwrite`` remaps
            scenes recorded with another model or options; ``precision`` is part of
            the fingerprint, since it changes the maps.
        shard: this array job's shard (combined with the torchrun rank).
        previews: also write ``<map stem>.png`` quicklooks.
        stac: write the STAC catalog (when pystac is installed).
        progress: draw the overall progress bar on stderr (rank 0 only).
        **overrides: :class:`~alosmap.predict.options.InferenceOptions` fields
            (``model=``, ``overlap=``, ...) that replace those of ``options``.

    Returns:
        A :class:`BatchResult`; scenes that failed are in ``failed``.

    Raises:
        BatchError: the batch cannot start (no scenes, clashing names, records of
            another model or options without ``overwrite``).
        AlosmapError: bad options, a bad torchrun environment, or the model cannot
            be loaded.
    """
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    opts = (options if options is not None else BATCH_DEFAULTS).replace(**overrides)
    plan = _plan(scenes, Path(out_dir), opts, shard, previews)
    gathered, owned = _init_group(plan.dist.world_size)
    (state_dir(plan.out) / "records").mkdir(parents=True, exist_ok=True)
    res = BatchResult(
        out_dir=plan.out,
        task=plan.task,
        primary=plan.dist.primary,
        world_size=plan.dist.world_size,
    )
    _map_all(plan, res, progress)
    res.seconds = time.perf_counter() - t0
    try:
        _finish(res, gathered, plan, started, stac)
    finally:
        if owned:
            import torch.distributed as dist

            dist.destroy_process_group()
    return res


def _plan(
    scenes: Iterable[str | os.PathLike[str]],
    out: Path,
    opts: InferenceOptions,
    shard: Shard | None,
    previews: bool,
) -> _Plan:
    """Check the model, the options and the records; plan this process's share.

    Raises:
        BatchError: see :func:`run_batch`.
        AoiError: the area of interest is unusable (before any scene is opened).
    """
    from alosmap.io.aoi import read_area
    from alosmap.predict.pipeline import model_file
    from alosmap.spec import load_spec

    dist = dist_info()
    if out.exists() and not out.is_dir():
        raise BatchError(f"-o {out}: exists and is not a directory")
    model_path = model_file(opts)
    spec = load_spec(model_path)
    # checked here once rather than failing every scene alike
    resolved = opts.for_model(spec, model_path.name)
    bbox = opts.bbox if isinstance(opts.bbox, tuple) else None
    read_area(bbox, opts.bbox_crs, opts.aoi)  # a bad area fails here, not per scene
    model_sha = sha256_file(model_path)
    fingerprint = resolved.fingerprint(model_sha)
    jobs = plan_jobs(scenes, out, spec.task)
    _refuse_inputs_as_outputs(jobs, resolved, previews)
    if previews:  # said once, before any work, not after every scene
        from alosmap._imports import lazy_import

        lazy_import("matplotlib")
    eff = effective_shard(shard, dist.rank, dist.world_size)
    records = {j.key: read_record(record_path(out, j.key)) for j in jobs}
    _refuse_stale(records, fingerprint, out, opts.overwrite)
    device = opts.device
    if device.startswith("cuda") and ":" not in device and dist.distributed:
        device = f"cuda:{dist.local_rank}"
    return _Plan(
        out=out,
        options=resolved.replace(device=device),
        model_path=model_path,
        model_sha=model_sha,
        fingerprint=fingerprint,
        record_options={
            **{k: getattr(opts, k) for k in RECORD_OPTIONS},
            "device": device,
        },
        jobs=jobs,
        records=records,
        shard=eff,
        dist=dist,
        previews=previews,
        legend=spec.legend,
    )


def _refuse_stale(
    records: dict[str, dict[str, Any] | None],
    fingerprint: dict[str, Any],
    out: Path,
    overwrite: bool,
) -> None:
    """Stop before any work when records of another model or options are there.

    Raises:
        BatchError: unless ``overwrite``, naming the first stale scene's changes.
    """
    stale = {
        k: _mismatch(r, fingerprint)
        for k, r in records.items()
        if r is not None and _mismatch(r, fingerprint)
    }
    if not stale or overwrite:
        return
    k = sorted(stale)[0]
    old = records[k]["fingerprint"]  # type: ignore[index]
    diff = ", ".join(
        f"{f} {_short(old.get(f))} -> {_short(fingerprint.get(f))}" for f in stale[k]
    )
    raise BatchError(
        f"{len(stale)} scene(s) in {out} were mapped with another model or other "
        f"options (e.g. {k}: {diff}); pass --overwrite to remap them, or choose "
        "another output directory (nothing was changed)"
    )


def _map_all(plan: _Plan, res: BatchResult, progress: bool) -> None:
    """Map this process's scenes that are not done yet; count them into ``res``."""
    from alosmap._progress import progress_bar
    from alosmap.predict.pipeline import load_model

    mine = shard_jobs(plan.jobs, plan.shard)
    todo = []
    for job in mine:
        if _is_done(plan.records[job.key], job, plan.fingerprint):
            res.skipped.append(job.key)
            res.outputs.append(job.output)
        else:
            todo.append(job)
    if res.skipped:
        logger.info("%d scene(s) already done; skipped", len(res.skipped))
    bar = progress_bar(
        len(mine),
        f"batch {plan.shard}" if plan.shard.count > 1 else "batch",
        progress and plan.dist.primary,
        unit="scene",
    )
    bar.update(len(res.skipped))
    runtime = None
    finishing: tuple[Job, Future[dict[str, Any]]] | None = None

    def collect() -> None:  # the scene finishing in the background, once it has
        nonlocal finishing
        if finishing is not None:
            job, future = finishing
            finishing = None
            _count(res, job, future)
            bar.update(1)

    pool = ThreadPoolExecutor(1, thread_name_prefix="alosmap-finish")
    try:
        if todo:
            runtime = load_model(plan.model_path, plan.options)
        for job in todo:
            bar.set_postfix(scene=job.scene.name[:40], refresh=False)
            try:
                assert runtime is not None
                streamed = _stream_one(job, runtime, plan)
            except Exception as exc:  # one bad scene is reported, not fatal
                collect()
                _failed(res, job, exc)
                bar.update(1)
                continue
            try:
                collect()  # one scene finishing at a time
            except BaseException:  # Ctrl-C while waiting: this scene leaves nothing
                streamed.abort()
                raise
            finishing = (job, pool.submit(_finish_one, job, streamed, runtime, plan))
        collect()
    finally:
        pool.shutdown(wait=True)  # a scene being finished ends before we return
        bar.close()
        if runtime is not None:
            runtime.close()


def _count(res: BatchResult, job: Job, future: Future[dict[str, Any]]) -> None:
    """Count a scene's outcome into ``res`` (waits for it to finish)."""
    try:
        rec = future.result()
    except Exception as exc:  # one bad scene is reported, not fatal
        _failed(res, job, exc)
        return
    res.done.append(job.key)
    res.outputs.append(job.output)
    res.km2 += rec["area_km2"]
    res.tiles += rec["tiles_run"]


def _failed(res: BatchResult, job: Job, exc: BaseException) -> None:
    """Count a failed scene; a full disk stops the batch (every next scene would fail).

    Raises:
        DiskFullError: ``exc`` again, when it says the disk is full (so does
            an ``OSError`` of a full disk).
    """
    from alosmap._fileio import is_disk_full
    from alosmap.errors import DiskFullError

    if isinstance(exc, DiskFullError) or is_disk_full(exc):
        raise exc
    msg = _one_line(exc)
    logger.warning("%s failed: %s", job.scene, msg)
    res.failed.append((str(job.scene), msg))


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    from alosmap.errors import AlosmapError

    return text if isinstance(exc, AlosmapError) else f"{type(exc).__name__}: {text}"


def _stream_one(job: Job, runtime: Runtime, plan: _Plan) -> StreamedScene:
    """Run the model over one scene: every row of its maps written, none in place."""
    from alosmap.errors import InputRasterError
    from alosmap.predict.pipeline import stream_scene

    if not is_virtual(job.scene) and not job.scene.is_file():
        raise InputRasterError(f"scene not found: {job.scene}")
    preview = job.output.with_suffix(".png") if plan.previews else None
    return stream_scene(
        job.scene,
        job.output,
        plan.options,
        runtime=runtime,
        preview=preview,
        progress=False,
        overwrite=True,
    )


def _finish_one(
    job: Job, streamed: StreamedScene, runtime: Runtime, plan: _Plan
) -> dict[str, Any]:
    """Put one streamed scene's outputs in place and write its record; the record."""
    result = streamed.finish()
    rec = _record(job, result, runtime, plan)
    atomic_write_bytes(
        record_path(job.output.parent, job.key),
        (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode(),
    )
    return rec


def _record(
    job: Job, result: PredictResult, runtime: Runtime, plan: _Plan
) -> dict[str, Any]:
    """The record of a finished scene (see the module docstring)."""
    import rasterio

    from alosmap.io.raster import (
        acquisition_datetime,
        describe_raster,
        gdal_path,
        open_raster,
    )

    out = job.output
    with open_raster(job.scene) as ds:
        scene_tags = ds.tags()
    virtual = is_virtual(job.scene)
    with rasterio.open(out) as ds:
        crs = ds.crs
        transform = ds.transform
        shape = [ds.height, ds.width]
        # the date the scene supplied (a mosaic tile's from its date file)
        scene_date = ds.tags().get("ACQUISITION_DATE")
    if scene_date:
        scene_tags.setdefault("ACQUISITION_DATE", scene_date)
    acquired = acquisition_datetime(job.scene.name, scene_tags)
    footprint = None
    with contextlib.suppress(Exception):  # optional: the map is complete without it
        wkt = describe_raster(out).get("footprint_wgs84")
        if wkt:
            from shapely import wkt as shapely_wkt
            from shapely.geometry import mapping

            footprint = mapping(shapely_wkt.loads(wkt))
    area_km2 = _mapped_km2(out) if crs is not None else float("nan")
    names = {c.code: c.name for c in plan.legend.classes}
    size, mtime_ns = _output_stat(out) or (0, 0)
    extras = {}
    if result.confidence is not None:
        extras["confidence"] = result.confidence.name
    if result.probabilities is not None:
        extras["probabilities"] = result.probabilities.name
    if result.preview is not None:
        extras["preview"] = result.preview.name
    return {
        "format": RECORD_FORMAT,
        "key": job.key,
        "scene": gdal_path(job.scene) if virtual else str(job.scene.resolve()),
        "scene_name": job.scene.name,
        "scene_size": None if virtual else job.scene.stat().st_size,
        "output": out.name,
        **extras,
        "size": size,
        "mtime_ns": mtime_ns,
        "sha256": sha256_file(out),
        "task": plan.task,
        "legend": plan.legend.to_dict(),
        "model": Path(getattr(runtime, "path", None) or "").name,
        "model_sha256": plan.model_sha,
        "model_name": runtime.spec.name,
        "alosmap_version": __version__,
        "fingerprint": plan.fingerprint,
        "options": dict(plan.record_options),
        "acquired": acquired.isoformat() if acquired else None,
        "crs": crs.to_string() if crs else None,
        "transform": list(transform)[:6],
        "shape": shape,
        "footprint": footprint,
        "classes": [
            {"code": c, "name": names.get(c, str(c)), "pixels": n}
            for c, n in sorted(result.class_pixels.items())
        ],
        "valid_pixels": result.valid_pixels,
        "area_km2": round(area_km2, 6),
        "tiles_total": result.tiles_total,
        "tiles_run": result.tiles_run,
        "seconds": round(result.seconds, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rank": plan.dist.rank,
        "host": socket.gethostname(),
    }


def _mapped_km2(path: Path) -> float:
    """The mapped area of a map in km², as ``alosmap stats`` says.

    Exact per row on the ellipsoid for geographic grids
    (:func:`~alosmap.national.stats.class_areas`, the one owner of pixel areas).
    """
    from alosmap.national.stats import class_areas

    return class_areas(path).mapped_m2 / 1e6


# -- end of the run: gather, report, catalog ----------------------------------------


def _init_group(world: int) -> tuple[bool, bool]:
    """Join a gloo process group under torchrun, for the final gather.

    Returns:
        ``(active, owned)``: whether a process group is there to gather over, and
        whether this call created it (and so must destroy it).
    """
    if world < 2 or "MASTER_ADDR" not in os.environ:
        return False, False
    import torch.distributed as dist

    if not dist.is_available():
        return False, False
    if dist.is_initialized():
        return True, False  # the caller's group: used, not destroyed
    # Ranks may finish hours apart (torchrun stops the others if one dies), so the
    # gather at the end must not time out.
    dist.init_process_group("gloo", timeout=timedelta(days=7))
    return True, True


def _finish(
    res: BatchResult, gathered: bool, plan: _Plan, started: datetime, stac: bool
) -> None:
    """Merge the ranks' results; rank 0 writes the report and the catalog."""
    if gathered:
        _gather(res)
    if res.primary:
        res.done.sort()
        res.skipped.sort()
        res.failed.sort()
        res.outputs.sort()
        res.report = _write_report(res, plan, started)
        if stac:
            res.catalog = _write_catalog_until_stable(res)
    if gathered:
        import torch.distributed as dist

        dist.barrier()  # the others wait for rank 0's report and catalog


def _gather(res: BatchResult) -> None:
    """Merge every rank's results into ``res`` (every rank calls it)."""
    import torch.distributed as dist

    mine = {
        "done": res.done,
        "skipped": res.skipped,
        "failed": res.failed,
        "outputs": [str(p) for p in res.outputs],
        "km2": res.km2,
        "tiles": res.tiles,
        "seconds": res.seconds,
    }
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    res.done = [k for p in parts for k in p["done"]]
    res.skipped = [k for p in parts for k in p["skipped"]]
    res.failed = [(str(s), str(e)) for p in parts for s, e in p["failed"]]
    res.outputs = [Path(o) for p in parts for o in p["outputs"]]
    res.km2 = sum(p["km2"] for p in parts)
    res.tiles = sum(p["tiles"] for p in parts)
    res.seconds = max(p["seconds"] for p in parts)


def _write_report(res: BatchResult, plan: _Plan, started: datetime) -> Path:
    shard = plan.shard
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    world = res.world_size
    array = Shard(shard.index // world, shard.count // world)
    suffix = f"-shard-{array.index}-of-{array.count}" if array.count > 1 else ""
    folder = state_dir(res.out_dir) / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}{suffix}.json"
    report = {
        "format": REPORT_FORMAT,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "alosmap_version": __version__,
        "out_dir": str(res.out_dir.resolve()),
        "task": res.task,
        "model": plan.model_path.name,
        "model_sha256": plan.model_sha,
        "fingerprint": plan.fingerprint,
        "shard": str(array) if array.count > 1 else None,
        "world_size": world,
        "done": len(res.done),
        "skipped": len(res.skipped),
        "failed": len(res.failed),
        "km2_mapped": round(res.km2, 3),
        "tiles": res.tiles,
        "seconds": round(res.seconds, 3),
        "tiles_per_second": round(res.tiles_per_second, 3),
        "failures": [{"scene": s, "error": e} for s, e in res.failed],
        "mapped": res.done,
        "skipped_scenes": res.skipped,
    }
    atomic_write_bytes(path, (json.dumps(report, indent=1) + "\n").encode())
    return path


def _write_catalog_until_stable(res: BatchResult) -> Path | None:
    """Write the STAC catalog from the records; again while records keep arriving."""
    from alosmap.national.stac import write_catalog

    last: list[str] | None = None
    path = None
    for _ in range(10):
        records = read_records(res.out_dir)
        state = [f"{r['key']}:{r.get('mtime_ns')}" for r in records]
        if state == last:
            break
        try:
            path = write_catalog(res.out_dir, records)
        except BackendUnavailableError:
            res.notes.append(
                "no STAC catalog: it needs pystac (pip install 'alosmap[stac]')"
            )
            return None
        last = state
    return path


__all__ = [
    "BatchResult",
    "Job",
    "Shard",
    "effective_shard",
    "expand_scenes",
    "plan_jobs",
    "read_manifest",
    "read_records",
    "record_path",
    "run_batch",
    "shard_jobs",
]
