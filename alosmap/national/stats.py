"""Pixel areas on the ellipsoid and area per class of a map (``alosmap stats``).

**Geographic grids** (EPSG:4326 and other lon/lat CRSs, e.g. the JAXA 1/12000° grid):
a pixel spans longitudes λ₁…λ₂ and latitudes φ₁…φ₂, and its area on the ellipsoid
(semi-major axis ``a``, eccentricity ``e``, semi-minor axis ``b = a·√(1−e²)``) is
exactly

    A = a·(λ₂ − λ₁) · (Y(φ₂) − Y(φ₁)),
    Y(φ) = b²/(2a) · [ sin φ / (1 − e² sin² φ) + artanh(e sin φ) / e ],

i.e. the area between the equator and latitude φ per radian of longitude is
``a·Y(φ)`` (the authalic-latitude ``q(φ)`` function: ``Y = a·q/2``; Snyder, *Map
Projections: A Working Manual*, USGS PP 1395, 1987: ``q`` is eq. 3-12, the
cylindrical equal-area projection of the ellipsoid is in ch. 10; for a sphere
``Y = a·sin φ``). ``(a·λ, Y(φ))`` is the ellipsoidal Lambert cylindrical equal-area
projection, so the same function gives the exact area of any polygon whose edges
follow parallels and meridians, such as pixel outlines (:func:`equal_area_xy`).
Every pixel of a row has the same area, and it shrinks towards the poles (a
1/12000° pixel is 85.48 m² at the equator, 70.33 m² at 35° N, 43.17 m² at
60° N; the whole WGS 84 ellipsoid is 510,065,621.724 km²). The ellipsoid is read
from the CRS (WGS 84, GRS 80 for JGD2011, Bessel for Tokyo, …). Only north-up grids
(no rotation) are supported for geographic CRSs.

**Projected grids** (UTM, …): a pixel's area is ``|det(transform)|`` in CRS units²,
converted to m² with the CRS's linear unit (feet included). This is the area in the
projection plane; for UTM it differs from the ellipsoidal area by the squared scale
factor (−0.08 % on the central meridian to about +0.2 % at the zone edges);
equal-area projections are exact.

Counting is block-wise (full-width strips), so memory does not grow with the map.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from alosmap.errors import InputRasterError
from alosmap.io.maps import IGNORE, LEGENDS, open_map

__all__ = [
    "WGS84_ELLIPSOID",
    "AreaStats",
    "ClassArea",
    "Ellipsoid",
    "PixelAreas",
    "authalic_y",
    "class_areas",
    "ellipsoid_of",
    "equal_area_xy",
    "pixel_areas",
]


@dataclass(frozen=True)
class Ellipsoid:
    """A reference ellipsoid.

    Attributes:
        name: e.g. ``"WGS 84"``.
        a: semi-major axis in metres.
        inv_f: inverse flattening (0 for a sphere).
    """

    name: str
    a: float
    inv_f: float

    @property
    def f(self) -> float:
        """Flattening."""
        return 1.0 / self.inv_f if self.inv_f else 0.0

    @property
    def e2(self) -> float:
        """First eccentricity squared."""
        return self.f * (2.0 - self.f)

    @property
    def b(self) -> float:
        """Semi-minor axis in metres."""
        return self.a * (1.0 - self.f)


#: The WGS 84 ellipsoid (EPSG:7030).
WGS84_ELLIPSOID = Ellipsoid("WGS 84", 6378137.0, 298.257223563)

_ELLIPSOID_WKT = re.compile(
    r'(?:SPHEROID|ELLIPSOID)\["([^"]*)",\s*([0-9.eE+-]+),\s*([0-9.eE+-]+)'
)


def ellipsoid_of(crs: CRS) -> Ellipsoid:
    """The ellipsoid of a CRS, read from its WKT.

    Raises:
        InputRasterError: the WKT names no ellipsoid.
    """
    m = _ELLIPSOID_WKT.search(crs.to_wkt())
    if m is None:
        raise InputRasterError(f"CRS {crs.to_string()} names no ellipsoid")
    return Ellipsoid(m[1], float(m[2]), float(m[3]))


def authalic_y(lat_deg: Any, ellipsoid: Ellipsoid = WGS84_ELLIPSOID) -> np.ndarray:
    """``Y(φ)`` in metres: area from the equator to ``φ`` per radian of longitude / a.

    ``a · ΔλY`` is the exact ellipsoidal area of a lon/lat quadrangle (module docs).

    Args:
        lat_deg: latitudes in degrees (array-like).
        ellipsoid: the ellipsoid.
    """
    s = np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64)))
    a, b, e2 = ellipsoid.a, ellipsoid.b, ellipsoid.e2
    if e2 == 0.0:
        return a * s
    e = math.sqrt(e2)
    return b * b / (2.0 * a) * (s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e)


def equal_area_xy(
    lon_deg: Any, lat_deg: Any, ellipsoid: Ellipsoid = WGS84_ELLIPSOID
) -> tuple[np.ndarray, np.ndarray]:
    """Lambert cylindrical equal-area coordinates ``(a·λ, Y(φ))`` in metres.

    Planar areas in these coordinates are ellipsoidal areas: exact for polygons
    whose edges run along parallels and meridians (pixel outlines).
    """
    x = ellipsoid.a * np.radians(np.asarray(lon_deg, dtype=np.float64))
    return x, authalic_y(lat_deg, ellipsoid)


@dataclass(frozen=True)
class PixelAreas:
    """Pixel areas of a grid in m².

    Attributes:
        method: how they were computed, for reports.
        constant: the area of every pixel (projected grids), else ``None``.
        rows: the area of the pixels of each row (geographic grids), else ``None``.
    """

    method: str
    constant: float | None = None
    rows: np.ndarray | None = None

    def for_rows(self, r0: int, r1: int) -> np.ndarray:
        """Area of one pixel in each of rows ``r0 … r1-1``."""
        if self.rows is not None:
            return self.rows[r0:r1]
        return np.full(r1 - r0, self.constant, dtype=np.float64)


def pixel_areas(crs: CRS | None, transform: Affine, height: int) -> PixelAreas:
    """Exact pixel areas of a grid (see the module docs).

    Args:
        crs: the grid's CRS.
        transform: pixel → CRS coordinates.
        height: rows.

    Raises:
        InputRasterError: no CRS, a CRS without known units, or a rotated
            geographic grid.
    """
    if crs is None:
        raise InputRasterError(
            "the map has no CRS, so its pixel areas are unknown; assign one "
            "(gdal_edit.py -a_srs EPSG:...)"
        )
    t = transform
    if crs.is_geographic:
        if t.b != 0.0 or t.d != 0.0:
            raise InputRasterError(
                f"the map's geographic grid is rotated ({t}); per-pixel areas are "
                "implemented for north-up lon/lat grids only"
            )
        unit, rad = crs.units_factor
        deg = math.degrees(rad)  # degrees per CRS unit (1 for degrees)
        ell = ellipsoid_of(crs)
        edges = (t.f + t.e * np.arange(height + 1, dtype=np.float64)) * deg
        if np.abs(edges).max() > 90.0 + 1e-9:
            raise InputRasterError(
                f"the map's rows reach latitude {np.abs(edges).max():.6g}°, beyond "
                "the pole; is the transform right?"
            )
        edges = np.clip(edges, -90.0, 90.0)
        width_m = ell.a * abs(math.radians(t.a * deg))
        rows = width_m * np.abs(np.diff(authalic_y(edges, ell)))
        return PixelAreas(
            method=f"exact per row on the {ell.name} ellipsoid ({unit} grid)",
            rows=rows,
        )
    try:
        unit, metres = crs.linear_units_factor
    except Exception as exc:  # rasterio raises CRSError for engineering CRSs
        raise InputRasterError(
            f"cannot compute areas in CRS {crs.to_string()}: {exc}"
        ) from exc
    area = abs(t.a * t.e - t.b * t.d) * metres * metres
    return PixelAreas(
        method=f"projected plane of {crs.to_string()} ({unit}), {area:.6g} m² "
        "per pixel",
        constant=area,
    )


@dataclass(frozen=True)
class ClassArea:
    """Area of one class.

    Attributes:
        code: the value in the map.
        name: class name.
        pixels: pixel count.
        area_m2: area in m².
    """

    code: int
    name: str
    pixels: int
    area_m2: float


@dataclass
class AreaStats:
    """Area per class of a map, inside an AOI when one was given.

    Attributes:
        map: the map file.
        legend: its legend's name: ``lulc``, ``water``, ``jaxa`` or the legend of
            the model that made the map (``flood``, say).
        crs: the map's CRS as text.
        method: how pixel areas were computed.
        classes: one entry per legend class, in the legend's order.
        nodata_pixels: no-data pixels (inside the AOI), excluded from the classes.
        nodata_m2: their area.
        aoi: the AOI file, if any.
    """

    map: Path
    legend: str
    crs: str
    method: str
    classes: list[ClassArea] = field(default_factory=list)
    nodata_pixels: int = 0
    nodata_m2: float = 0.0
    aoi: Path | None = None

    @property
    def mapped_pixels(self) -> int:
        """Pixels with a class."""
        return sum(c.pixels for c in self.classes)

    @property
    def mapped_m2(self) -> float:
        """Area with a class in m² (the sum of the classes)."""
        return math.fsum(c.area_m2 for c in self.classes)

    def percent(self, c: ClassArea) -> float:
        """Share of ``c`` in the mapped area, in percent (NaN if nothing mapped)."""
        total = self.mapped_m2
        return 100.0 * c.area_m2 / total if total > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; areas in km²."""
        return {
            "map": str(self.map),
            "legend": self.legend,
            "aoi": None if self.aoi is None else str(self.aoi),
            "crs": self.crs,
            "area_method": self.method,
            "classes": [
                {
                    "code": c.code,
                    "name": c.name,
                    "pixels": c.pixels,
                    "area_km2": c.area_m2 / 1e6,
                    "percent": None if math.isnan(self.percent(c)) else self.percent(c),
                }
                for c in self.classes
            ],
            "mapped_pixels": self.mapped_pixels,
            "mapped_km2": self.mapped_m2 / 1e6,
            "nodata_pixels": self.nodata_pixels,
            "nodata_km2": self.nodata_m2 / 1e6,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """One row per class, then ``mapped`` (total) and ``no data`` rows."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["code", "class", "pixels", "area_km2", "percent"])
        for c in self.classes:
            p = self.percent(c)
            w.writerow(
                [c.code, c.name, c.pixels, repr(c.area_m2 / 1e6), _num(p, ".6f")]
            )
        total = self.mapped_m2
        w.writerow(
            [
                "",
                "mapped",
                self.mapped_pixels,
                repr(total / 1e6),
                "100.000000" if total > 0 else "",
            ]
        )
        w.writerow(["", "no data", self.nodata_pixels, repr(self.nodata_m2 / 1e6), ""])
        return buf.getvalue()

    def format_table(self) -> str:
        """Aligned text table with a title line."""
        where = f", inside {self.aoi.name}" if self.aoi else ""
        lines = [
            f"Area per class of {self.map.name} ({self.legend}{where})",
            f"{'class':<36} {'code':>4} {'pixels':>13} {'km²':>14} {'%':>7}",
        ]
        for c in self.classes:
            lines.append(
                f"{c.name:<36} {c.code:>4} {c.pixels:>13} {c.area_m2 / 1e6:>14.4f} "
                f"{_num(self.percent(c), '7.2f'):>7}"
            )
        lines.append(
            f"{'mapped (total)':<36} {'':>4} {self.mapped_pixels:>13} "
            f"{self.mapped_m2 / 1e6:>14.4f} {'100.00' if self.mapped_m2 else '':>7}"
        )
        lines.append(
            f"{'no data (excluded)':<36} {'':>4} {self.nodata_pixels:>13} "
            f"{self.nodata_m2 / 1e6:>14.4f}"
        )
        lines.append(f"(pixel areas: {self.method}; CRS {self.crs})")
        return "\n".join(lines)


def _num(v: float, spec: str) -> str:
    return "" if math.isnan(v) else format(v, spec)


def class_areas(
    path: str | os.PathLike[str],
    *,
    legend: str | None = None,
    aoi: str | os.PathLike[str] | None = None,
) -> AreaStats:
    """Area per class of a class map, optionally inside an AOI.

    Args:
        path: the map (a map of alosmap, whatever its legend: its tags say which,
            or a JAXA tile).
        legend: the map's legend when it has no ``ALOSMAP_TASK`` tag
            (``lulc``, ``water`` or ``jaxa``).
        aoi: polygon file (GeoJSON, or any OGR format with pyogrio); pixels whose
            centre is inside count.

    Raises:
        InputRasterError: unreadable map, no CRS, values outside the legend.
        AoiError: unreadable AOI, or one that covers no pixel of the map.
    """
    from alosmap.errors import AoiError
    from alosmap.io.aoi import aoi_windows, map_aoi_mask
    from alosmap.io.raster import open_raster

    info = open_map(path, legend, allowed=tuple(LEGENDS))
    areas = pixel_areas(info.crs, info.transform, info.height)
    mask = map_aoi_mask(aoi, info)
    k = len(info.legend.classes)
    nb = k + 2  # classes, no data, outside the AOI
    pixels = np.zeros(k + 1, dtype=np.int64)
    area = np.zeros(k + 1, dtype=np.float64)
    with open_raster(info.path) as ds:
        for win, inside in aoi_windows(info, mask):
            bucket = info.classify(ds.read(1, window=win))
            bucket[bucket == IGNORE] = k
            if inside is not True:
                bucket[~inside] = k + 1
            r0, h = int(win.row_off), int(win.height)
            if areas.constant is not None:
                counts = np.bincount(bucket.ravel(), minlength=nb)[: k + 1]
                pixels += counts
                area += counts * areas.constant
            else:
                rows = np.arange(h, dtype=np.int64)[:, None] * nb
                counts = np.bincount((rows + bucket).ravel(), minlength=h * nb)
                counts = counts.reshape(h, nb)[:, : k + 1]
                pixels += counts.sum(axis=0)
                area += counts.T.astype(np.float64) @ areas.for_rows(r0, r0 + h)
    if mask is not None and pixels.sum() == 0:
        raise AoiError(
            f"AOI {aoi} covers no pixel centre of {info.path}; it is smaller than "
            "a pixel or touches only the map's edge"
        )
    crs = info.crs
    return AreaStats(
        map=info.path,
        legend=info.legend.name,
        crs=crs.to_string() if crs is not None else "",
        method=areas.method,
        classes=[
            ClassArea(c.code, c.name, int(pixels[i]), float(area[i]))
            for i, c in enumerate(info.legend.classes)
        ],
        nodata_pixels=int(pixels[k]),
        nodata_m2=float(area[k]),
        aoi=None if aoi is None else Path(aoi),
    )
