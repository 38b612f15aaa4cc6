"""Opening rasters and reading their metadata: acquisition date and time, summary.

The scene readers (:mod:`alosmap.io.scene`), the dataset builder, the previews and
the national-scale tools (batch records, mosaic merge order) take the acquisition
date of a scene from here: the ``ACQUISITION_DATE``/``ACQUISITION_DATETIME``/
``TIFFTAG_DATETIME`` tags, else the date in an ALOS-2 Level 2.1 file name.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from alosmap.errors import InputRasterError

#: ALOS-2 Level 2.1 file name: ``IMG-<pol>-ALOS2<orbit:5><frame:4>-<YYMMDD>-``
#: ``<mode:3><look L|R><level>`` then processing, projection and orbit direction
#: letters, e.g. ``IMG-HH-ALOS2237752900-181018-UBSR2.1GUD.tif``.
L21_NAME = re.compile(
    r"IMG-(?P<pol>HH|HV|VH|VV)-ALOS2(?P<orbit>\d{5})(?P<frame>\d{4})-"
    r"(?P<date>\d{6})-(?P<mode>[A-Z]{3})(?P<look>[LR])(?P<level>\d\.\d)"
    r"(?P<proc>[GR_])(?P<proj>[UPML_])(?P<dir>[AD])"
)
_DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITION_DATETIME", "TIFFTAG_DATETIME")


def open_raster(path: str | os.PathLike[str]) -> rasterio.io.DatasetReader:
    """Open a raster; every failure becomes an :class:`InputRasterError`."""
    p = Path(path)
    if not p.exists():
        raise InputRasterError(f"input not found: {p}")
    if p.is_dir():
        raise InputRasterError(f"input is a directory, not a raster: {p}")
    try:
        return rasterio.open(p)
    except (RasterioError, OSError) as exc:
        raise InputRasterError(f"cannot read {p} as a raster: {exc}") from exc


def acquisition_date(path: str | os.PathLike[str], tags: dict[str, str]) -> date | None:
    """Acquisition date from the metadata tags, else from an L2.1 file name."""
    for key in _DATE_TAGS:
        value = tags.get(key)
        if value:
            m = re.match(r"(\d{4})[-:]?(\d{2})[-:]?(\d{2})", value)
            if m:
                try:
                    return date(int(m[1]), int(m[2]), int(m[3]))
                except ValueError:
                    pass
    m = L21_NAME.search(Path(path).name)
    if m:
        d = m["date"]
        try:
            return date(2000 + int(d[:2]), int(d[2:4]), int(d[4:]))
        except ValueError:
            return None
    return None


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (a trailing ``Z`` allowed); one without a zone is UTC.

    Raises:
        ValueError: ``text`` is not ISO 8601.
    """
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def acquisition_datetime(
    path: str | os.PathLike[str], tags: dict[str, str]
) -> datetime | None:
    """Acquisition time from the tags, else from an ALOS-2 L2.1 file name (UTC).

    ``ACQUISITION_DATETIME`` (ISO 8601) gives the time of day; a date alone
    (``ACQUISITION_DATE`` or the ``YYMMDD`` of the file name) gives midnight UTC.
    """
    text = tags.get("ACQUISITION_DATETIME", "")
    if text:
        with contextlib.suppress(ValueError):
            return parse_utc(text)
    d = acquisition_date(path, tags)
    if d is None:
        return None
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def describe_raster(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a raster: size, bands, CRS, pixel size, no-data, units guess, date.

    Reads only a decimated overview of the first band for the units guess.
    """
    from alosmap.radiometry import guess_units

    with open_raster(path) as ds:
        tags = ds.tags()
        t = ds.transform
        out: dict[str, Any] = {
            "path": str(path),
            "driver": ds.driver,
            "size": f"{ds.width} x {ds.height} px",
            "bands": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs.to_string() if ds.crs else None,
            "pixel_size": (abs(t.a), abs(t.e)) if ds.crs else None,
            "bounds": tuple(round(v, 6) for v in ds.bounds),
            "nodata": ds.nodata,
            "band_descriptions": [d for d in ds.descriptions],
        }
        f = max(1, max(ds.width, ds.height) // 1024)
        h, w = max(1, ds.height // f), max(1, ds.width // f)
        try:
            sample = ds.read(
                1, out_shape=(h, w), window=Window(0, 0, ds.width, ds.height)
            )
        except (RasterioError, OSError) as exc:
            raise InputRasterError(f"cannot read pixels of {path}: {exc}") from exc
        valid = (
            np.isfinite(sample)
            if sample.dtype.kind == "f"
            else np.ones_like(sample, dtype=bool)
        )
        if ds.nodata is not None:
            valid &= sample != ds.nodata
        out["valid_fraction"] = round(float(valid.mean()), 4)
        out["units_guess"] = (
            guess_units(sample[valid], ds.dtypes[0]) if valid.any() else None
        )
        d = acquisition_date(path, tags)
        out["acquisition_date"] = d.isoformat() if d else None
        if ds.crs is not None and valid.any():
            out["footprint_wgs84"] = _footprint_wkt(valid, ds, f)
    return out


def _footprint_wkt(valid: np.ndarray, ds: Any, factor: int) -> str:
    """Outline of the valid pixels (decimated mask) as WKT in EPSG:4326."""
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    h, w = valid.shape
    t = ds.transform @ ds.transform.scale(ds.width / w, ds.height / h)
    polys = [
        shape(geom)
        for geom, v in shapes(valid.astype(np.uint8), mask=valid, transform=t)
        if v == 1
    ]
    outline = unary_union(polys).convex_hull
    geom = transform_geom(ds.crs, "EPSG:4326", mapping(outline))
    from shapely import wkt

    return wkt.dumps(shape(geom).simplify(2e-4), rounding_precision=5)
