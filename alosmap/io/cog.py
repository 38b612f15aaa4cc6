"""Checking that a GeoTIFF is a valid Cloud-Optimized GeoTIFF (COG).

:func:`validate_cog` reads the file's layout through rasterio/GDAL and reports what
breaks the COG rules (tiling, overviews, order of image file directories and tile
data), after GDAL's ``validate_cloud_optimized_geotiff.py``. Maps written by
:class:`~alosmap.io.writer.MapWriter` pass it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

__all__ = ["validate_cog"]


def validate_cog(path: str | os.PathLike[str]) -> tuple[bool, list[str]]:
    """Check that a GeoTIFF is a valid Cloud-Optimized GeoTIFF.

    Checks with rasterio/GDAL, after GDAL's ``validate_cloud_optimized_geotiff.py``:
    tiled (square tiles, a multiple of 16); overviews present when the image is larger
    than 512 pixels on a side; image file directories before the tile data, full
    resolution first, then overviews from largest to smallest; tile data of the
    smallest overview first and of the full resolution last; the full-resolution
    tiles in row-major order; and GDAL's ``LAYOUT=COG`` structural metadata (written
    by the COG driver; a file without it is reported with a warning).

    Args:
        path: the file to check.

    Returns:
        ``(valid, messages)``: ``valid`` is False when any ``"error: ..."`` message
        is present; ``"warning: ..."`` messages do not make the file invalid.
    """
    errors: list[str] = []
    warns: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                _check_cog(ds, errors, warns)
    except (RasterioError, OSError) as exc:
        errors.append(f"cannot open {path}: {exc}")
    messages = [f"error: {m}" for m in errors] + [f"warning: {m}" for m in warns]
    return not errors, messages


def _check_cog(ds: Any, errors: list[str], warns: list[str]) -> None:
    if ds.driver != "GTiff":
        errors.append(f"driver is {ds.driver}, not GTiff")
        return
    by, bx = ds.block_shapes[0]
    if not ds.profile.get("tiled") or bx != by or bx % 16:
        errors.append(f"not tiled with square tiles (blocks {bx} x {by})")
        return
    overviews = ds.overviews(1)
    if max(ds.width, ds.height) > 512 and not overviews:
        errors.append(
            f"no overviews although the image is {ds.width} x {ds.height} "
            "(> 512 pixels on a side)"
        )
    if ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "").upper() != "COG":
        warns.append(
            "no LAYOUT=COG structural metadata (not written by GDAL's COG driver)"
        )
    levels: list[int | None] = [None, *range(len(overviews))]

    def item(name: str, ovr: int | None) -> int | None:
        value = ds.get_tag_item(name, "TIFF", bidx=1, ovr=ovr)
        return int(value) if value not in (None, "") else None

    raw_ifds = [item("IFD_OFFSET", lvl) for lvl in levels]
    data = [item("BLOCK_OFFSET_0_0", lvl) for lvl in levels]
    known = [d for d in data if d]  # 0 / None: empty (sparse) first tile
    ifds = [v for v in raw_ifds if v is not None]
    if len(ifds) != len(raw_ifds):
        warns.append("cannot read IFD offsets; IFD ordering not checked")
    else:
        if ifds != sorted(ifds):
            errors.append(
                "image file directories are not ordered full resolution first, "
                "then overviews from largest to smallest"
            )
        if known and max(ifds) > min(known):
            errors.append("image file directories are not all before the tile data")
    if len(known) == len(data) and known != sorted(known, reverse=True):
        errors.append(
            "tile data is not ordered smallest overview first, full resolution last"
        )
    # Row-major order of the full-resolution tiles (sampled along the first column
    # and first row, as GDAL's validator does).
    rows = -(-ds.height // by)
    cols = -(-ds.width // bx)
    offsets = [item(f"BLOCK_OFFSET_{c}_0", None) for c in range(min(cols, 4))]
    offsets += [item(f"BLOCK_OFFSET_0_{r}", None) for r in range(1, min(rows, 4))]
    seen = [o for o in offsets if o]
    if seen != sorted(seen):
        errors.append("full-resolution tiles are not in row-major order")
