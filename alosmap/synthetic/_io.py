"""Atomic GeoTIFF writing and JAXA-style label tiles for the synthetic generators."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from alosmap._fileio import (
    atomic_path,
    check_overwrite,
    is_disk_full,
    remove_stale_temps,
    write_failed_for_space,
)
from alosmap.classes import JAXA_CLASSES, JAXA_NODATA, colormap
from alosmap.grid import cell_name, cells_for_bounds
from alosmap.synthetic._world import LABEL_PIXEL_DEG, LABEL_PIXELS_PER_DEG, LabelWorld

#: Creation options shared by every synthetic GeoTIFF (small and byte-stable).
GTIFF_OPTIONS: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    "predictor": 2,
    "interleave": "band",
}


@contextlib.contextmanager
def _disk_full_as_oserror(path: Path) -> Iterator[None]:
    """Report a GDAL write error on a (nearly) full disk as ``OSError(ENOSPC)``.

    GDAL reports a full disk as a generic write error, so the free space of the
    directory is asked too; the CLI prints an ENOSPC error as one line.
    """
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise
        if write_failed_for_space(exc, path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def write_geotiff(
    path: Path,
    array: np.ndarray,
    *,
    crs: str,
    transform: Affine,
    nodata: float,
    tags: Mapping[str, str],
    description: str,
    cmap: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write a one-band GeoTIFF atomically (tiled 256, DEFLATE, predictor 2).

    Args:
        path: output file.
        array: ``[rows, cols]`` pixels.
        crs: CRS, e.g. ``"EPSG:32654"``.
        transform: affine transform of the grid.
        nodata: no-data value.
        tags: dataset-level GeoTIFF metadata.
        description: band description.
        cmap: optional colour table (uint8 only).

    Returns:
        ``path``.
    """
    import rasterio

    profile = dict(
        GTIFF_OPTIONS,
        width=int(array.shape[1]),
        height=int(array.shape[0]),
        count=1,
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as tmp,
        _disk_full_as_oserror(tmp),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(array, 1)
        dst.update_tags(**dict(tags))
        dst.set_band_description(1, description)
        if cmap is not None:
            dst.write_colormap(1, dict(cmap))
    return path


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def all_or_nothing(paths: Iterable[Path]) -> Iterator[None]:
    """Outputs of one call: all of them, or none of those the call wrote.

    On entry the temporaries killed runs left beside ``paths`` are removed. When the
    block fails (a full disk, Ctrl-C), every path it created or replaced is removed
    again, so a half-written set never stays behind; files it did not touch stay.
    """
    before = {p: _identity(p) for p in paths}
    remove_stale_temps(*before)
    try:
        yield
    except BaseException:
        for p, ident in before.items():
            now = _identity(p)
            if now is not None and now != ident:
                p.unlink(missing_ok=True)
        raise


def tile_name(lat: int, lon: int) -> str:
    """JAXA tile name of the 1°×1° tile whose south-west corner is (lat, lon).

    Example: ``tile_name(35, 139) == "LC_N35E139.tif"`` (see
    :func:`alosmap.grid.cell_name`).
    """
    return cell_name(lat, lon)


def tiles_for_bounds(
    bounds: tuple[float, float, float, float],
) -> list[tuple[int, int]]:
    """South-west corners ``(lat, lon)`` of the 1° tiles that ``bounds`` touches.

    South to north, then west to east (see :func:`alosmap.grid.cells_for_bounds`).
    """
    return sorted(cells_for_bounds(bounds, LABEL_PIXELS_PER_DEG))


def write_label_tiles(
    world: LabelWorld,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``world`` as JAXA HRLULC-style tiles (one per 1° tile it touches).

    Each tile is a full 12000 × 12000 uint8 GeoTIFF on EPSG:4326 with 1/12000°
    pixels, named by its south-west corner (``LC_N35E139.tif``), no data 0 outside
    the world, with the JAXA colour table.

    Args:
        world: the label world.
        out_dir: output directory (created if needed).
        overwrite: replace existing tiles.

    Returns:
        Paths of the tiles written.

    Raises:
        OutputExistsError: a tile exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    tiles = tiles_for_bounds(world.bounds)
    paths = [out / tile_name(la, lo) for la, lo in tiles]
    check_overwrite(paths, overwrite)
    for (lat, lon), path in zip(tiles, paths, strict=True):
        _write_one_tile(world, lat, lon, path)
    return paths


def _write_one_tile(world: LabelWorld, lat: int, lon: int, path: Path) -> None:
    import rasterio
    from rasterio.windows import Window

    n = LABEL_PIXELS_PER_DEG
    t_row0 = (90 - (lat + 1)) * n  # global row of the tile's first row
    t_col0 = (lon + 180) * n
    transform = Affine(
        LABEL_PIXEL_DEG, 0.0, float(lon), 0.0, -LABEL_PIXEL_DEG, lat + 1.0
    )
    profile = dict(
        GTIFF_OPTIONS,
        width=n,
        height=n,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
        nodata=JAXA_NODATA,
    )
    rows, cols = world.shape
    wr0, wc0 = world.row0 - t_row0, world.col0 - t_col0  # world offset in the tile
    strip_h = 1024
    strip = np.zeros((strip_h, n), dtype=np.uint8)
    legend = "; ".join(f"{c.code}={c.name}" for c in JAXA_CLASSES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as tmp,
        _disk_full_as_oserror(tmp),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        for r in range(0, n, strip_h):
            h = min(strip_h, n - r)
            strip[:] = JAXA_NODATA
            a0, a1 = max(r, wr0), min(r + h, wr0 + rows)
            b0, b1 = max(0, wc0), min(n, wc0 + cols)
            if a0 < a1 and b0 < b1:
                strip[a0 - r : a1 - r, b0:b1] = world.labels[
                    a0 - wr0 : a1 - wr0, b0 - wc0 : b1 - wc0
                ]
            dst.write(strip[:h], 1, window=Window(0, r, n, h))
        dst.update_tags(
            SYNTHETIC="true",
            DESCRIPTION=(
                "Synthetic JAXA HRLULC-style land-use/land-cover labels made by "
                "alosmap.synthetic; not real JAXA data"
            ),
            LEGEND=f"JAXA HRLULC v23.12: 0=no data; {legend}",
            SEED=str(world.seed),
        )
        dst.set_band_description(1, "LULC (synthetic, JAXA HRLULC v23.12 codes)")
        dst.write_colormap(1, colormap(JAXA_CLASSES))
