"""Mosaic per-scene maps onto the JAXA 1° grid: one COG per cell plus a VRT.

:func:`mosaic_maps` takes the maps written by ``alosmap predict``/``batch`` (any
CRS: each map is reprojected from its own CRS) and writes

* one Cloud-Optimized GeoTIFF per 1° × 1° cell of the JAXA grid
  (:mod:`alosmap.grid`: EPSG:4326, 12000 × 12000 pixels of 1/12000°, origin on the
  cell's north-west corner), named like JAXA's tiles by the south-west corner:
  ``LC_N35E139.tif`` for LULC maps (so they line up pixel for pixel, and name for
  name, with JAXA's LULC tiles), ``WATER_N35E139.tif`` for water maps and
  ``<TASK>_N35E139.tif`` for maps of a model with its own legend (``FLOOD_...``);
* ``lulc.vrt`` (``water.vrt``, ``<task>.vrt``), a GDAL VRT over every cell written;
* ``stac/``, a STAC catalog: the cells as items of the collection
  ``alosmap-<task>-mosaic``, the VRTs as its assets (with pystac installed;
  :func:`alosmap.national.stac.write_mosaic_catalog`).

A mosaic takes maps of one legend (the legend of the models that made them, from
each map's ``ALOSMAP_SPEC`` tag): maps of different legends are never mixed.
Cells get the encoding of the per-scene maps (:mod:`alosmap.io.writer`): one band
of the legend's codes with its no-data code (LULC codes 1-9 with 0 = no data; water
1/0 with 255 = no data), the colour table, class names and QGIS style, and a
``LC_N35E139_confidence.tif`` beside each cell (percent, 255 = no data) when every
input map has a confidence; the VRT gets its ``.qml`` and, with confidence,
``lulc_confidence.vrt`` covers the confidence cells.
Pixels of a cell that no map covers stay no data; cells no map has a valid pixel in
are not written.

Resampling is nearest neighbour (class codes are never averaged): a mosaic pixel
takes the map pixel under its centre (to within :data:`WARP_TOLERANCE` of a pixel,
GDAL's coordinate approximation), and its class and confidence come from the same
map pixel.

Merge rules, where maps overlap (maps are ordered by acquisition time, from the
``ACQUISITION_DATETIME``/``ACQUISITION_DATE`` tags or the ALOS-2 file name of the
source scene, then by file name; a map without a date counts as the oldest):

* ``confidence`` (default): the pixel of the map with the highest confidence
  (its ``<map>_confidence.tif``) wins; ties go to the later acquisition. Needs a
  confidence for every map. Maps of earlier releases, with the confidence as band 2
  of the map, are read too (for one release).
* ``latest``: the most recent acquisition with data wins.
* ``first``: the earliest acquisition with data wins.

Memory is bounded: cells are processed one at a time and each cell in bands of
``block_rows`` rows (1024 by default). For every band, each map that overlaps it is
warped onto the cell's grid (a GDAL ``WarpedVRT`` read over the map's rows and
columns of the band only; GDAL reads just the source window it needs) and merged,
oldest map first, into one class (and confidence) strip, which the
:class:`~alosmap.io.writer.MapWriter` writes to a temporary GeoTIFF; the COG is built
from it at the end of the cell and moved into place atomically. Peak memory is a few
strips of ``block_rows × 12000`` bytes plus GDAL's caches, whatever the number of
maps or cells.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_write_bytes, check_not_input, check_overwrite
from alosmap.classes import LULC, WATER, Legend
from alosmap.errors import MosaicInputError, OutputPathError
from alosmap.grid import JAXA_CRS, JAXA_PIXELS_PER_DEGREE, Cell, cells_for_bounds
from alosmap.io.raster import acquisition_datetime

logger = logging.getLogger(__name__)

#: Merge rules for overlapping maps.
MERGE_RULES = ("confidence", "latest", "first")
#: Cell file name prefix of the bundled tasks (``LC_N35E139.tif`` as JAXA's LULC
#: tiles); other legends use their name in capitals (:func:`cell_prefix`).
CELL_PREFIX = {LULC.name: "LC", WATER.name: "WATER"}
#: Rows of a cell processed at a time.
DEFAULT_BLOCK_ROWS = 1024
#: Error allowed in GDAL's approximate coordinate transformation (source pixels).
#: GDAL's default (0.125, also rasterio's ``reproject``) put mosaic pixels up to
#: 0.1 px off the exact source pixel (measured, UTM 54 -> EPSG:4326 at 35° N); at
#: 0.001 px each pixel takes the source pixel under its centre except within 1/1000
#: of a pixel of its edge, for about twice the (small) warp time.
WARP_TOLERANCE = 1e-3
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class SourceMap:
    """A per-scene map, as :func:`find_maps` found it.

    Attributes:
        path: the map GeoTIFF.
        task: ``lulc``, ``water`` or a user's legend name (``ALOSMAP_TASK`` tag).
        nodata: its no-data value.
        confidence: the file holding its confidence (percent): the
            ``<map>_confidence.tif`` beside it, or the map itself for a map of an
            earlier release (band 2); None without one.
        confidence_band: the band of ``confidence`` (1, or 2 for an old map).
        bounds_wgs84: ``(west, south, east, north)`` in degrees.
        acquired: acquisition time of the source scene, if known.
        spec_json: the model spec (``ALOSMAP_SPEC`` tag).
        model: the model name (``ALOSMAP_MODEL`` tag).
        source_scene: the source scene's file name (``SOURCE_SCENE`` tag).
        legend: its legend (:func:`alosmap.io.maps.map_legend`).
    """

    path: Path
    task: str
    nodata: int
    confidence: Path | None
    bounds_wgs84: tuple[float, float, float, float]
    acquired: datetime | None
    spec_json: str
    model: str
    source_scene: str
    confidence_band: int = 1
    legend: Legend = LULC

    @property
    def files(self) -> list[Path]:
        """The map and its confidence file (the files a mosaic reads)."""
        return [self.path, *([self.confidence] if self.confidence else [])]

    @property
    def order(self) -> tuple[datetime, str]:
        """Sort key: acquisition time (unknown = oldest), then file name."""
        return (self.acquired or _OLDEST, self.path.name)


@dataclass
class MosaicResult:
    """What :func:`mosaic_maps` wrote.

    Attributes:
        cells: the cell COGs, north to south, west to east.
        vrt: the VRT over all cells.
        maps: the maps that went in, oldest first.
        task: their task.
        merge: the merge rule used.
        seconds: wall-clock time.
        valid_pixels: pixels with data per cell file name.
        confidence: the cells' confidence files (empty without confidence).
        confidence_vrt: the VRT over them (None without confidence).
        catalog: the STAC catalog of the mosaic (``stac/catalog.json``:
            :func:`alosmap.national.stac.write_mosaic_catalog`); None without
            pystac.
    """

    cells: list[Path]
    vrt: Path
    maps: list[SourceMap]
    task: str
    merge: str
    seconds: float
    valid_pixels: dict[str, int] = field(default_factory=dict)
    confidence: list[Path] = field(default_factory=list)
    confidence_vrt: Path | None = None
    catalog: Path | None = None

    @property
    def files(self) -> list[Path]:
        """Every data file written: cells, VRT, confidence cells, confidence VRT."""
        conf_vrt = [self.confidence_vrt] if self.confidence_vrt else []
        return [*self.cells, self.vrt, *self.confidence, *conf_vrt]


def _read_map(path: Path) -> SourceMap | None:
    """Describe an alosmap map; None for a GeoTIFF that is not one."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.warp import transform_bounds

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            product = tags.get("ALOSMAP_PRODUCT", "map")
            if "ALOSMAP_TASK" not in tags or product != "map":
                return None
            legend = _legend_of(path, tags)
            if ds.crs is None:
                raise MosaicInputError(
                    f"{path} has no CRS, so it cannot be placed on the grid; "
                    "re-map its scene from a georeferenced file"
                )
            bounds = transform_bounds(ds.crs, JAXA_CRS, *ds.bounds, densify_pts=21)
            desc = ds.descriptions
            old_band = ds.count >= 2 and (desc[1] or "").lower() == "confidence"
            nodata = int(ds.nodata) if ds.nodata is not None else -1
        confidence, conf_band = (path, 2) if old_band else (_confidence_of(path), 1)
    except (RasterioError, OSError) as exc:
        raise MosaicInputError(f"cannot read map {path}: {exc}") from exc
    source = tags.get("SOURCE_SCENE", "")
    if nodata < 0:
        raise MosaicInputError(f"{path} has no no-data value; it is not an alosmap map")
    return SourceMap(
        path=path,
        task=legend.name,
        legend=legend,
        nodata=nodata,
        confidence=confidence,
        confidence_band=conf_band,
        bounds_wgs84=tuple(float(v) for v in bounds),  # type: ignore[arg-type]
        acquired=acquisition_datetime(source or path.name, tags),
        spec_json=tags.get("ALOSMAP_SPEC", ""),
        model=tags.get("ALOSMAP_MODEL", ""),
        source_scene=source,
    )


def _legend_of(path: Path, tags: dict[str, str]) -> Legend:
    """The legend of a map (its spec's, or a bundled task's).

    Raises:
        MosaicInputError: a task alosmap does not know and no readable spec.
    """
    from alosmap.errors import InputRasterError
    from alosmap.io.maps import map_legend

    try:
        legend = map_legend(tags, str(path))
    except InputRasterError as exc:
        raise MosaicInputError(str(exc)) from exc
    assert legend is not None  # tags hold ALOSMAP_TASK
    return legend


def _confidence_of(path: Path) -> Path | None:
    """The ``<map>_confidence.tif`` written beside ``path``, if there is one."""
    import rasterio

    from alosmap.io.writer import confidence_path

    conf = confidence_path(path)
    if not conf.is_file():
        return None
    with rasterio.open(conf) as ds:
        if ds.tags().get("ALOSMAP_PRODUCT") != "confidence":
            return None
    return conf


def find_maps(
    inputs: Sequence[str | os.PathLike[str]], task: str | None = None
) -> list[SourceMap]:
    """Find the alosmap maps in ``inputs`` (directories are scanned, not recursed).

    In a directory every ``*.tif``/``*.tiff`` whose tags say it is an alosmap map
    (``ALOSMAP_TASK``, product ``map``) is taken; probability files, mosaics,
    hidden temporary files and other GeoTIFFs are passed over (the last with a
    warning). A file named explicitly must be a map.

    Args:
        inputs: map files and/or directories holding them (e.g. a batch OUT_DIR).
        task: keep only maps of this task (legend name); without it all maps must
            share one legend.

    Returns:
        The maps, oldest acquisition first.

    Raises:
        MosaicInputError: no maps, unreadable maps, maps of several legends without
            ``task``, maps of one task name with different legends, or a named file
            that is not a map.
    """
    found: dict[Path, SourceMap] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in (".tif", ".tiff")
                and not f.name.startswith(".")
                and f.is_file()
            )
            for f in files:
                info = _read_map(f)
                if info is None:
                    if not _is_alosmap_by_product(f):
                        logger.warning("%s is not an alosmap map; left out", f)
                    continue
                found.setdefault(f.resolve(), info)
        elif p.is_file():
            info = _read_map(p)
            if info is None:
                raise MosaicInputError(
                    f"{p} is not an alosmap map (no ALOSMAP_TASK tag, or a "
                    "probabilities file or mosaic); pass maps written by "
                    "`alosmap predict` or `alosmap batch`"
                )
            found.setdefault(p.resolve(), info)
        else:
            raise MosaicInputError(f"input not found: {p}")
    maps = _one_task(list(found.values()), task, inputs)
    _check_one_legend(maps)
    return sorted(maps, key=lambda m: m.order)


def _one_task(
    maps: list[SourceMap],
    task: str | None,
    inputs: Sequence[str | os.PathLike[str]],
) -> list[SourceMap]:
    """The maps of ``task``, or all of them when they share one task."""
    where = ", ".join(str(Path(i)) for i in inputs)
    if not maps:
        raise MosaicInputError(f"no alosmap maps in {where}")
    tasks = sorted({m.task for m in maps})
    if task is None and len(tasks) > 1:
        listing = "; ".join(
            f"{t}: {_names([m for m in maps if m.task == t])}" for t in tasks
        )
        raise MosaicInputError(
            f"{where} holds maps of different tasks and legends ({listing}); a "
            "mosaic takes one legend: pass --task "
            + " or --task ".join(tasks)
            + " (nothing was written)"
        )
    if task is not None:
        maps = [m for m in maps if m.task == task]
        if not maps:
            raise MosaicInputError(
                f"no {task} maps in {where} (found {', '.join(tasks)} maps)"
            )
    return maps


def _legend_key(lg: Legend) -> tuple[Any, ...]:
    """What maps must share to be mosaicked together: codes, names, no data."""
    return (lg.name, lg.binary, lg.nodata, tuple((c.code, c.name) for c in lg.classes))


def _check_one_legend(maps: Sequence[SourceMap]) -> None:
    """Maps of one task name made with different legends are not mixed.

    Raises:
        MosaicInputError: naming a map of each legend.
    """
    keys: dict[tuple[Any, ...], list[SourceMap]] = {}
    for m in maps:
        keys.setdefault(_legend_key(m.legend), []).append(m)
    if len(keys) < 2:
        return
    listing = "; ".join(
        f"{_names(group)}: "
        + ", ".join(f"{c.code}={c.name}" for c in group[0].legend.classes)
        + f", no data {group[0].legend.nodata}"
        for group in keys.values()
    )
    raise MosaicInputError(
        f"the {maps[0].task} maps were made with different legends ({listing}); a "
        "mosaic takes maps of one legend: mosaic each legend's maps separately "
        "(nothing was written)"
    )


def cell_prefix(task: str) -> str:
    """File name prefix of a task's cells: ``LC``, ``WATER`` or the task in capitals."""
    return CELL_PREFIX.get(task, task.upper())


def _is_alosmap_by_product(path: Path) -> bool:
    """True for alosmap files that are not maps (probabilities, mosaic cells)."""
    import rasterio

    with rasterio.open(path) as ds:
        return "ALOSMAP_PRODUCT" in ds.tags()


def _names(maps: Sequence[SourceMap], limit: int = 3) -> str:
    names = [m.path.name for m in maps]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plan_cells(
    maps: Sequence[SourceMap], pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE
) -> list[tuple[Cell, list[SourceMap]]]:
    """The cells the maps touch, each with its maps (oldest first).

    Cells are sorted north to south, then west to east.
    """
    per_cell: dict[tuple[int, int], list[SourceMap]] = {}
    for m in maps:
        for lat, lon in cells_for_bounds(m.bounds_wgs84, pixels_per_degree):
            per_cell.setdefault((lat, lon), []).append(m)
    keys = sorted(per_cell, key=lambda k: (-k[0], k[1]))
    return [
        (Cell(lat, lon, pixels_per_degree), sorted(per_cell[(lat, lon)], key=_order))
        for lat, lon in keys
    ]


def _order(m: SourceMap) -> tuple[datetime, str]:
    return m.order


def merge_into(
    classes: np.ndarray,
    conf: np.ndarray | None,
    new_classes: np.ndarray,
    new_conf: np.ndarray | None,
    nodata: int,
    rule: str,
) -> None:
    """Merge one map's pixels into the mosaic strip, in place.

    Maps must be merged oldest first: ``latest`` lets each map overwrite,
    ``first`` fills only empty pixels, ``confidence`` takes a pixel whose
    confidence is at least the current one (so ties go to the later map).

    Args:
        classes: mosaic class codes ``[H, W]`` (uint8), no data = ``nodata``.
        conf: mosaic confidence ``[H, W]`` (percent), or None.
        new_classes: the map's class codes ``[H, W]``.
        new_conf: the map's confidence ``[H, W]``, or None.
        nodata: no-data value of class codes and confidence.
        rule: ``confidence``, ``latest`` or ``first``.
    """
    valid = new_classes != nodata
    if rule == "latest":
        take = valid
    elif rule == "first":
        take = valid & (classes == nodata)
    elif rule == "confidence":
        if conf is None or new_conf is None:
            raise MosaicInputError("--merge confidence needs the confidence band")
        take = valid & ((classes == nodata) | (new_conf >= conf))
    else:
        raise ValueError(f"unknown merge rule {rule!r}; choose one of {MERGE_RULES}")
    classes[take] = new_classes[take]
    if conf is not None and new_conf is not None:
        conf[take] = new_conf[take]


def mosaic_maps(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    merge: str = "confidence",
    task: str | None = None,
    overwrite: bool = False,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE,
    progress: bool = False,
) -> MosaicResult:
    """Mosaic per-scene maps onto the JAXA grid (one COG per 1° cell, plus a VRT).

    Args:
        inputs: maps and/or directories of maps (e.g. a batch OUT_DIR).
        out_dir: directory for the cells and the VRT (created if missing).
        merge: ``confidence``, ``latest`` or ``first`` (see the module docstring).
        task: mosaic only the maps of this task (needed when both are present).
        overwrite: replace existing cells and VRT.
        block_rows: rows of a cell processed at a time (bounds memory).
        pixels_per_degree: grid resolution; 12000 is JAXA's (tests use less).
        progress: draw a progress bar on stderr.

    Returns:
        A :class:`MosaicResult`.

    Raises:
        MosaicInputError: see :func:`find_maps`; or ``merge=confidence`` with maps
            lacking the confidence band.
        OutputExistsError: outputs exist and ``overwrite`` is False.
    """
    from alosmap.io.writer import confidence_path

    t0 = time.perf_counter()
    if merge not in MERGE_RULES:
        raise MosaicInputError(
            f"--merge {merge!r}: choose one of {', '.join(MERGE_RULES)}"
        )
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    maps = find_maps(inputs, task)
    task = maps[0].task
    with_conf = _check_confidence(maps, merge)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"-o {out}: exists and is not a directory")
    plan = plan_cells(maps, pixels_per_degree)
    vrt_path = out / f"{task}.vrt"
    outputs = _outputs(out, [cell for cell, _ in plan], task, with_conf)
    check_not_input(outputs, [f for m in maps for f in m.files])
    check_overwrite(outputs, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    run = _MosaicRun(
        spec=_mosaic_spec(maps),
        merge=merge,
        with_conf=with_conf,
        block_rows=block_rows,
        pixels_per_degree=pixels_per_degree,
        overwrite=overwrite,
        models=", ".join(sorted({m.model for m in maps if m.model})),
    )
    written = list(_write_cells(plan, out, cell_prefix(task), run, progress))
    if not written:
        raise MosaicInputError(
            "no map has a valid pixel on the grid; nothing was written"
        )
    _write_vrts(vrt_path, [(cell, path) for cell, path, _ in written], run)
    result = MosaicResult(
        cells=[path for _, path, _ in written],
        vrt=vrt_path,
        maps=list(maps),
        task=task,
        merge=merge,
        seconds=time.perf_counter() - t0,
        valid_pixels={path.name: n for _, path, n in written},
        confidence=[confidence_path(p) for _, p, _ in written] if with_conf else [],
        confidence_vrt=confidence_path(vrt_path) if with_conf else None,
    )
    result.catalog = _write_catalog(result)
    return result


def _write_catalog(result: MosaicResult) -> Path | None:
    """The mosaic's STAC catalog (``stac/`` beside the cells); None without pystac."""
    from alosmap.errors import BackendUnavailableError
    from alosmap.national.stac import write_mosaic_catalog

    try:
        return write_mosaic_catalog(result)
    except BackendUnavailableError as exc:
        logger.warning("no STAC catalog of the mosaic: %s", exc)
        return None


def _outputs(
    out: Path, cells: Sequence[Cell], task: str, with_conf: bool
) -> list[Path]:
    """Every data file the mosaic may write (cells, their confidence, the VRTs)."""
    from alosmap.io.writer import confidence_path

    vrt = out / f"{task}.vrt"
    paths = [out / cell.name(cell_prefix(task)) for cell in cells] + [vrt]
    if with_conf:
        paths += [confidence_path(p) for p in paths]
    return paths


def _write_vrts(
    vrt_path: Path, cells: list[tuple[Cell, Path]], run: _MosaicRun
) -> None:
    """The VRT over the cells (and over their confidence files), with styles."""
    from alosmap.io.style import write_class_styles, write_percent_style
    from alosmap.io.writer import confidence_path

    legend = run.spec.legend
    write_vrt(
        vrt_path,
        cells,
        legend=legend,
        spec_json=run.spec.to_json(),
        pixels_per_degree=run.pixels_per_degree,
    )
    write_class_styles(vrt_path, legend.classes, legend.nodata, pam=False)
    if run.with_conf:
        conf_vrt = confidence_path(vrt_path)
        write_vrt(
            conf_vrt,
            [(cell, confidence_path(path)) for cell, path in cells],
            legend=legend,
            confidence=True,
            pixels_per_degree=run.pixels_per_degree,
        )
        write_percent_style(conf_vrt)


def _check_confidence(maps: Sequence[SourceMap], merge: str) -> bool:
    """Whether every map has a confidence (required by ``merge=confidence``).

    Also warns about maps without an acquisition date (they count as the oldest).
    """
    missing = [m for m in maps if not m.confidence]
    if merge == "confidence" and missing:
        raise MosaicInputError(
            f"--merge confidence needs the confidence of every map "
            f"(<map>_confidence.tif), but {len(missing)} of {len(maps)} lack it "
            f"({_names(missing)}); map them with --confidence (batch does by "
            "default) or use --merge latest"
        )
    undated = [m for m in maps if m.acquired is None]
    if undated and len(maps) > 1:
        logger.warning(
            "no acquisition date for %s; counted as the oldest", _names(undated)
        )
    return not missing


@dataclass(frozen=True)
class _MosaicRun:
    """Settings shared by every cell of one mosaic.

    Attributes:
        spec: the model spec the cells carry (:func:`_mosaic_spec`).
        merge: the merge rule.
        with_conf: whether the cells get a confidence file.
        block_rows: rows of a cell processed at a time.
        pixels_per_degree: grid resolution.
        overwrite: replace existing cells.
        models: names of the models that made the maps, for the tags.
    """

    spec: Any
    merge: str
    with_conf: bool
    block_rows: int
    pixels_per_degree: int
    overwrite: bool
    models: str

    def cell_tags(self, maps: Sequence[SourceMap]) -> dict[str, str]:
        """Dataset metadata of a cell made from ``maps``."""
        return {
            "ALOSMAP_PRODUCT": "mosaic",
            "ALOSMAP_MODEL": self.models,
            "MOSAIC_MERGE": self.merge,
            "MOSAIC_GRID": f"JAXA 1 degree, {self.pixels_per_degree} px per degree",
            "SOURCE_SCENE": json.dumps([m.source_scene for m in maps]),
            "SOURCE_MAPS": json.dumps([m.path.name for m in maps]),
        }


def _write_cells(
    plan: Sequence[tuple[Cell, list[SourceMap]]],
    out: Path,
    prefix: str,
    run: _MosaicRun,
    progress: bool,
) -> Iterator[tuple[Cell, Path, int]]:
    """Write the planned cells; yield ``(cell, file, valid pixels)`` of each written.

    Cells without a valid pixel are not written (nor yielded).
    """
    from alosmap._progress import progress_bar

    blocks_per_cell = math.ceil(run.pixels_per_degree / run.block_rows)
    bar = progress_bar(len(plan) * blocks_per_cell, "mosaic", progress, unit="block")
    try:
        for cell, cell_maps in plan:
            path = out / cell.name(prefix)
            n = _mosaic_cell(cell, cell_maps, path, run, bar)
            if n:
                yield cell, path, n
            else:
                logger.info("%s: no valid pixel from any map; not written", path.name)
    finally:
        bar.close()


def _mosaic_spec(maps: Sequence[SourceMap]) -> Any:
    """The model spec the mosaic's cells carry: that of the most recent map."""
    from alosmap.errors import SpecError
    from alosmap.spec import ModelSpec

    for m in reversed(maps):
        if m.spec_json:
            try:
                return ModelSpec.from_json(m.spec_json)
            except (SpecError, ValueError) as exc:
                logger.debug("%s: unreadable ALOSMAP_SPEC (%s)", m.path, exc)
    raise MosaicInputError(
        f"none of the maps carries a readable model spec (ALOSMAP_SPEC tag), e.g. "
        f"{maps[0].path}; mosaic maps written by `alosmap predict` or `batch`"
    )


def _pixel_span(
    lo: float, hi: float, origin: float, n: int, size: int
) -> tuple[int, int]:
    """Pixels ``[a, b)`` of a cell axis that ``lo..hi`` degrees reach (1 px margin)."""
    a = max(0, math.floor((lo - origin) * n) - 1)
    b = min(size, math.ceil((hi - origin) * n) + 1)
    return a, max(a, b)


def _mosaic_cell(
    cell: Cell,
    maps: Sequence[SourceMap],
    path: Path,
    run: _MosaicRun,
    bar: Any,
) -> int:
    """Write one cell; return its count of valid pixels (0: nothing written)."""
    from alosmap.io.writer import MapWriter

    n = cell.size
    nodata = maps[0].nodata
    warps = _CellWarps(cell, nodata)
    valid_total = 0
    writer = MapWriter(
        path,
        width=n,
        height=n,
        crs=JAXA_CRS,
        transform=cell.transform,
        spec=run.spec,
        confidence=run.with_conf,
        tags=run.cell_tags(maps),
        overwrite=run.overwrite,
    )
    try:
        with writer:
            for r0 in range(0, n, run.block_rows):
                classes, conf = _merge_rows(cell, maps, r0, run, warps, nodata)
                valid_total += int(np.count_nonzero(classes != nodata))
                writer.write_rows(r0, classes, conf)
                bar.update(1)
            if valid_total == 0:
                writer.abort()
                return 0
            writer.finalize()
    finally:
        warps.close()
    return valid_total


class _CellWarps:
    """The maps (and confidence files) warped onto one cell's grid, opened on use.

    Args:
        cell: the cell.
        nodata: no-data value of the maps (and of their warped reads).
    """

    def __init__(self, cell: Cell, nodata: int) -> None:
        self.cell = cell
        self.nodata = nodata
        self._opened: list[Any] = []
        self._warped: dict[Path, Any] = {}

    def __call__(self, path: Path, nodata: int | None = None) -> Any:
        """``path`` as a ``WarpedVRT`` on the cell's grid (nearest neighbour).

        Args:
            path: a map or confidence file.
            nodata: its no-data value (default: the maps').
        """
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        if path not in self._warped:
            ds = rasterio.open(path)
            self._opened.append(ds)
            self._warped[path] = WarpedVRT(
                ds,
                crs=JAXA_CRS,
                transform=self.cell.transform,
                width=self.cell.size,
                height=self.cell.size,
                resampling=Resampling.nearest,
                nodata=self.nodata if nodata is None else nodata,
                tolerance=WARP_TOLERANCE,
            )
            self._opened.append(self._warped[path])
        return self._warped[path]

    def close(self) -> None:
        """Close every dataset opened, last first."""
        for ds in reversed(self._opened):
            ds.close()


def _merge_rows(
    cell: Cell,
    maps: Sequence[SourceMap],
    r0: int,
    run: _MosaicRun,
    warps: _CellWarps,
    nodata: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Classes (and confidence) of the cell's rows from ``r0``, maps merged in order.

    Returns:
        uint8 ``[h, size]`` class codes and confidence (None without confidence),
        for the ``h = min(block_rows, size - r0)`` rows.
    """
    from rasterio.windows import Window

    from alosmap.io.writer import CONFIDENCE_NODATA

    n = cell.size
    west, _, _, north = cell.bounds
    h = min(run.block_rows, n - r0)
    classes = np.full((h, n), nodata, dtype=np.uint8)
    conf = np.full((h, n), CONFIDENCE_NODATA, np.uint8) if run.with_conf else None
    for m in maps:  # oldest first
        w, s, e, nn = m.bounds_wgs84
        # rows and columns of this block the map can reach
        a, b = _pixel_span(north - nn, north - s, r0 / n, n, h)
        c0, c1 = _pixel_span(w, e, west, n, n)
        if a >= b or c0 >= c1:
            continue
        window = Window(c0, r0 + a, c1 - c0, b - a)
        new_conf = None
        if run.with_conf and m.confidence is not None:
            # an old map's band 2 shares the map's no data; a confidence file's is 255
            conf_nodata = nodata if m.confidence_band == 2 else CONFIDENCE_NODATA
            src = warps(m.confidence, conf_nodata)
            new_conf = src.read(m.confidence_band, window=window)
        merge_into(
            classes[a:b, c0:c1],
            conf[a:b, c0:c1] if conf is not None else None,
            warps(m.path).read(1, window=window),
            new_conf,
            nodata,
            run.merge,
        )
    return classes, conf


# -- VRT --------------------------------------------------------------------------


def write_vrt(
    path: str | os.PathLike[str],
    cells: Sequence[tuple[Cell, Path]],
    *,
    legend: Legend,
    confidence: bool = False,
    pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE,
    spec_json: str = "",
) -> Path:
    """Write a GDAL VRT mosaic over grid cells (atomically).

    The VRT spans the bounding box of the cells on the same grid; areas no cell
    covers read as no data. Its one band carries the colour table (only the
    legend's codes opaque) and class names; with ``confidence`` the files are the
    cells' confidence files (percent, 255 = no data). Its metadata hold the task
    (``ALOSMAP_TASK``) and, when given, the model spec (``ALOSMAP_SPEC``: with it
    the legend, so that readers of the VRT find a user's legend). Cell paths are
    stored relative to the VRT when they sit in its directory tree.

    Args:
        path: the ``.vrt`` file.
        cells: ``(cell, file)`` pairs; every file is a ``cell.size``² GeoTIFF.
        legend: the cells' legend (codes, names, colours, no-data value).
        confidence: the files are confidence files, not class maps.
        pixels_per_degree: grid resolution of the cells.
        spec_json: the model spec of the cells (their ``ALOSMAP_SPEC`` tag).

    Returns:
        ``path``.
    """
    if not cells:
        raise ValueError("write_vrt: no cells")
    out = Path(path)
    n = pixels_per_degree
    west = min(c.lon for c, _ in cells)
    east = max(c.lon for c, _ in cells) + 1
    south = min(c.lat for c, _ in cells)
    north = max(c.lat for c, _ in cells) + 1
    names = {str(c.code): c.name for c in legend.classes}
    root = _vrt_dataset((east - west) * n, (north - south) * n, west, north, n)
    meta = ET.SubElement(root, "Metadata")
    for key, value in (
        ("ALOSMAP_TASK", legend.name),
        ("ALOSMAP_PRODUCT", "confidence" if confidence else "mosaic"),
        *([("ALOSMAP_SPEC", spec_json)] if spec_json else []),
        *([] if confidence else [("CLASS_NAMES", json.dumps(names))]),
    ):
        ET.SubElement(meta, "MDI", key=key).text = value
    band = _vrt_band(root, "confidence" if confidence else "class", legend, names)
    for cell, file in sorted(cells, key=lambda cf: (-cf[0].lat, cf[0].lon)):
        src = ET.SubElement(band, "SimpleSource")
        _vrt_source(src, Path(file), out.parent, 1, n)
        ET.SubElement(
            src,
            "DstRect",
            xOff=str((cell.lon - west) * n),
            yOff=str((north - cell.lat - 1) * n),
            xSize=str(n),
            ySize=str(n),
        )
    ET.indent(root)
    atomic_write_bytes(out, ET.tostring(root, encoding="utf-8") + b"\n")
    return out


def _vrt_dataset(width: int, height: int, west: int, north: int, n: int) -> ET.Element:
    """The ``VRTDataset`` element: size, CRS and geotransform (``n`` px/degree)."""
    from rasterio.crs import CRS

    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="2,1").text = CRS.from_string(
        JAXA_CRS
    ).to_wkt()
    px = 1.0 / n
    ET.SubElement(
        root, "GeoTransform"
    ).text = f"{west!r}, {px!r}, 0.0, {float(north)!r}, 0.0, {-px!r}"
    return root


def _vrt_band(
    root: ET.Element, desc: str, task: Legend, names: dict[str, str]
) -> ET.Element:
    """The ``VRTRasterBand``; a class band gets category names and colour table."""
    from alosmap.io.style import colour_table
    from alosmap.io.writer import CONFIDENCE_NODATA

    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "Description").text = desc
    if desc == "confidence":
        ET.SubElement(band, "NoDataValue").text = str(CONFIDENCE_NODATA)
        ET.SubElement(band, "ColorInterp").text = "Gray"
        return band
    ET.SubElement(band, "NoDataValue").text = str(task.nodata)
    ET.SubElement(band, "ColorInterp").text = "Palette"
    cats = ET.SubElement(band, "CategoryNames")
    codes = {int(k): v for k, v in names.items() if int(k) != task.nodata}
    for code in range(max(codes) + 1):
        ET.SubElement(cats, "Category").text = codes.get(code, "")
    table = ET.SubElement(band, "ColorTable")
    for _, (r, g, b, a) in sorted(colour_table(task.classes).items()):
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    return band


def _vrt_source(src: ET.Element, file: Path, vrt_dir: Path, bidx: int, n: int) -> None:
    """File, band, properties and source window of a cell's ``SimpleSource``."""
    from alosmap.io.writer import BLOCKSIZE

    rel = _relative(file, vrt_dir)
    ET.SubElement(src, "SourceFilename", relativeToVRT="1" if rel else "0").text = (
        rel or str(file.resolve())
    )
    ET.SubElement(src, "SourceBand").text = str(bidx)
    ET.SubElement(
        src,
        "SourceProperties",
        RasterXSize=str(n),
        RasterYSize=str(n),
        DataType="Byte",
        BlockXSize=str(min(BLOCKSIZE, n)),
        BlockYSize=str(min(BLOCKSIZE, n)),
    )
    ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(n), ySize=str(n))


def _relative(file: Path, base: Path) -> str | None:
    """``file`` relative to ``base`` (POSIX separators), or None if outside it."""
    try:
        return file.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None


__all__ = [
    "CELL_PREFIX",
    "MERGE_RULES",
    "MosaicInputError",
    "MosaicResult",
    "SourceMap",
    "cell_prefix",
    "find_maps",
    "merge_into",
    "mosaic_maps",
    "plan_cells",
    "write_vrt",
]
