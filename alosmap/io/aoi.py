"""Areas of interest: reading polygons, putting them on a raster grid, masking blocks.

Used by ``predict``/``water``/``batch`` (``--bbox``, ``--aoi``: the map's window of a
scene, :mod:`alosmap.predict.area`) and by ``evaluate`` and ``stats``; it lives in
:mod:`alosmap.io`, below both.

An AOI file holds one or more polygons; ``evaluate`` and ``stats`` keep the pixels
whose **centre** lies inside their union (GDAL's rasterisation rule without
``all_touched``), so a pixel is counted once even where polygons of neighbouring
AOIs share an edge.

Formats:

* **GeoJSON** (``.geojson``/``.json``), read with the standard library: a
  FeatureCollection, a Feature or a bare geometry. Coordinates are WGS 84
  longitude/latitude (RFC 7946); a legacy ``"crs"`` member (GeoJSON 2008, as GDAL
  writes for other CRSs) is honoured.
* Anything else GDAL/OGR reads (GeoPackage, Shapefile, …) through pyogrio
  (``pip install 'alosmap[vector]'``), in the file's own CRS.

Polygons and multipolygons only: points and lines have no area. Invalid polygons
(self-intersections) are repaired with ``make_valid``. The AOI is densified
(edges of at most 0.01° or 1 km) before it is reprojected onto the map's CRS, so
long straight edges follow the curve they describe.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from alosmap.errors import AlosmapWarning, AoiError
from alosmap.io.maps import MapInfo

logger = logging.getLogger(__name__)

__all__ = [
    "WGS84",
    "Aoi",
    "AoiMask",
    "AoiWindow",
    "aoi_on_grid",
    "aoi_window",
    "aoi_windows",
    "bbox_aoi",
    "map_aoi_mask",
    "parse_crs",
    "read_aoi",
    "read_area",
]

#: CRS of GeoJSON without a ``crs`` member (RFC 7946): WGS 84 lon/lat.
WGS84 = CRS.from_epsg(4326)
_GEOJSON_SUFFIXES = (".geojson", ".json")
_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Aoi:
    """Polygons read from a file.

    Attributes:
        path: the file.
        geometry: union of its polygons (a shapely Polygon or MultiPolygon).
        crs: CRS of the coordinates.
    """

    path: Path
    geometry: BaseGeometry
    crs: CRS


def read_aoi(path: str | os.PathLike[str]) -> Aoi:
    """Read the polygons of an AOI file (see the module docs for formats).

    Raises:
        AoiError: missing or unreadable file, no polygons, non-polygon geometries,
            GeoJSON whose coordinates are not longitude/latitude.
    """
    p = Path(path)
    if not p.is_file():
        raise AoiError(f"AOI file not found: {p}")
    if p.suffix.lower() in _GEOJSON_SUFFIXES:
        geoms, crs = _read_geojson(p)
    else:
        geoms, crs = _read_ogr(p)
    if not geoms:
        raise AoiError(f"AOI {p} holds no geometry")
    kinds = sorted({g.geom_type for g in geoms} - set(_POLYGONAL))
    if kinds:
        raise AoiError(
            f"AOI {p} holds {', '.join(kinds)} geometries; an AOI must be "
            "Polygon or MultiPolygon"
        )
    fixed = []
    for g in geoms:
        if not g.is_valid:
            logger.warning("AOI %s: invalid polygon repaired (make_valid)", p)
            g = _polygonal(shapely.make_valid(g))
        fixed.append(g)
    geometry = shapely.union_all(fixed)
    if geometry.is_empty or geometry.area == 0:
        raise AoiError(f"AOI {p} has no area")
    _check_lonlat(
        geometry,
        crs,
        f"AOI {p}",
        "GeoJSON must be WGS 84 (RFC 7946): reproject it, or name its CRS in a "
        '"crs" member',
    )
    return Aoi(path=p, geometry=geometry, crs=crs)


def _check_lonlat(geometry: BaseGeometry, crs: CRS, what: str, hint: str) -> None:
    """Refuse coordinates out of the lon/lat range in a geographic CRS."""
    if crs.is_geographic:
        x0, y0, x1, y1 = geometry.bounds
        if x0 < -180.5 or x1 > 360.5 or y0 < -90.5 or y1 > 90.5:
            raise AoiError(
                f"{what} has coordinates up to ({x1:g}, {y1:g}), which are not "
                f"longitude/latitude; {hint}"
            )


def parse_crs(text: Any) -> CRS:
    """A CRS from anything :meth:`rasterio.crs.CRS.from_user_input` reads, quietly.

    GDAL/PROJ print an unknown code (``ERROR 1: PROJ: ... crs not found``) on
    stderr unless an error handler is installed: :class:`rasterio.Env` installs
    one, so the only report is the exception.

    Raises:
        rasterio.errors.CRSError: ``text`` is not a CRS.
    """
    import rasterio

    if isinstance(text, CRS):
        return text
    with rasterio.Env():
        return CRS.from_user_input(text)


def bbox_aoi(bbox: tuple[float, float, float, float], crs: str | CRS) -> Aoi:
    """A bounding box ``(minx, miny, maxx, maxy)`` in ``crs`` as an AOI.

    Its ``path`` is the option that gave it (``--bbox minx,miny,maxx,maxy``), for
    messages. In a geographic CRS, x is the longitude (-180..360) and y the
    latitude (-90..90).

    Raises:
        AoiError: ``crs`` is not a CRS, or lon/lat values out of range.
    """
    try:
        the_crs = parse_crs(crs)
    except Exception as exc:  # CRSError
        raise AoiError(f"--bbox-crs {crs!r}: not a CRS ({exc})") from exc
    label = "--bbox " + ",".join(f"{v:g}" for v in bbox)
    if the_crs.is_geographic:
        x0, y0, x1, y1 = bbox
        for name, value, low, high in (
            ("longitude", x0, -180, 360),
            ("longitude", x1, -180, 360),
            ("latitude", y0, -90, 90),
            ("latitude", y1, -90, 90),
        ):
            if not low <= value <= high:
                raise AoiError(
                    f"{label}: {name} {value:g} is outside {low}..{high} (the "
                    f"--bbox-crs {crs} is longitude/latitude; give --bbox-crs for "
                    "other CRSs)"
                )
    geometry = box(*bbox)
    return Aoi(path=Path(label), geometry=geometry, crs=the_crs)


def read_area(
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str | CRS,
    aoi: str | os.PathLike[str] | None,
) -> Aoi | None:
    """The area of interest of ``--bbox``/``--bbox-crs`` or ``--aoi`` (None: none).

    ``predict`` reads it with each scene; ``batch`` and the command line read it
    once more before any scene, so that a bad area stops them at the start.

    Raises:
        AoiError: see :func:`bbox_aoi` and :func:`read_aoi`.
    """
    if bbox is not None:
        return bbox_aoi(bbox, bbox_crs)
    if aoi is not None:
        return read_aoi(aoi)
    return None


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a geometry (``make_valid`` may add lines)."""
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in _POLYGONAL]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _read_geojson(path: Path) -> tuple[list[BaseGeometry], CRS]:
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise AoiError(f"AOI {path} is empty: expected GeoJSON polygons")
        obj = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AoiError(f"cannot read AOI {path} as GeoJSON: {exc}") from exc
    if not isinstance(obj, dict) or "type" not in obj:
        raise AoiError(f"AOI {path} is JSON but not GeoJSON (no 'type')")
    crs = WGS84
    member = obj.get("crs")
    if member is not None:
        try:
            crs = parse_crs(member["properties"]["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AoiError(f"AOI {path}: unreadable 'crs' member {member!r}") from exc
    raw: list[Any]
    kind = obj["type"]
    if kind == "FeatureCollection":
        raw = [f.get("geometry") for f in obj.get("features") or []]
    elif kind == "Feature":
        raw = [obj.get("geometry")]
    else:
        raw = [obj]
    geoms = []
    for g in raw:
        if g is None:
            continue
        try:
            geoms.append(shape(g))
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            shapely.errors.GEOSException,
        ) as exc:
            raise AoiError(f"AOI {path}: invalid GeoJSON geometry ({exc})") from exc
    return geoms, crs


def _read_ogr(path: Path) -> tuple[list[BaseGeometry], CRS]:
    try:
        import pyogrio.raw
    except ImportError as exc:
        raise AoiError(
            f"reading AOI {path} ({path.suffix or 'no suffix'}) needs pyogrio: "
            "pip install 'alosmap[vector]'; or give the AOI as GeoJSON"
        ) from exc
    try:
        meta, _fids, wkb, _fields = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:  # pyogrio raises many types (DataSourceError, ...)
        raise AoiError(f"cannot read AOI {path}: {exc}") from exc
    if wkb is None:
        return [], WGS84
    geoms = [g for g in shapely.from_wkb(wkb) if g is not None and not g.is_empty]
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    if crs is None:
        warnings.warn(
            f"AOI {path} has no CRS; assuming WGS 84 longitude/latitude",
            AlosmapWarning,
            stacklevel=2,
        )
        crs = WGS84
    return geoms, crs


def aoi_on_grid(
    aoi: Aoi, crs: CRS | None, footprint: BaseGeometry, what: str = "map"
) -> BaseGeometry:
    """The AOI reprojected onto a raster's CRS, checked to overlap the raster.

    Args:
        aoi: the AOI.
        crs: the raster's CRS.
        footprint: the raster's outline in ``crs``.
        what: what the raster is, for messages (``map``, ``scene``).

    Raises:
        AoiError: the raster has no CRS, or the AOI does not overlap it.
    """
    if crs is None:
        raise AoiError(
            f"the {what} has no CRS, so AOI {aoi.path} cannot be placed on it; "
            "assign a CRS first (gdal_edit.py -a_srs)"
        )
    geom = aoi.geometry
    if aoi.crs != crs:
        from rasterio.warp import transform_geom

        step = 0.01 if aoi.crs.is_geographic else 1000.0
        dense = shapely.segmentize(geom, step)
        try:
            geom = shape(transform_geom(aoi.crs, crs, mapping(dense)))
        except Exception as exc:  # rasterio raises CRSError, CPLE_* ...
            raise AoiError(
                f"cannot reproject AOI {aoi.path} to the {what}'s CRS: {exc}"
            ) from exc
        if not geom.is_valid:
            geom = _polygonal(shapely.make_valid(geom))
    if not geom.intersects(footprint):
        x0, y0, x1, y1 = geom.bounds
        m0, n0, m1, n1 = footprint.bounds
        raise AoiError(
            f"AOI {aoi.path} does not overlap the {what}: AOI bounds "
            f"({x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}), {what} bounds "
            f"({m0:.6g}, {n0:.6g}, {m1:.6g}, {n1:.6g}) in {crs.to_string()}"
        )
    return geom


class AoiMask:
    """Masks of an AOI (already in the raster's CRS) for windows of a raster.

    Args:
        geometry: the AOI in the raster's CRS.
        transform: the raster's transform.
    """

    def __init__(self, geometry: BaseGeometry, transform: Affine) -> None:
        self.geometry = geometry
        self.transform = transform
        shapely.prepare(geometry)

    def __call__(self, window: Window) -> np.ndarray | bool:
        """``True`` where a pixel centre of ``window`` is inside the AOI.

        Returns:
            ``True`` when the whole window is inside, ``False`` when it is all
            outside, else a bool array ``[rows, cols]``.
        """
        from rasterio.features import geometry_mask

        t = self.transform @ Affine.translation(window.col_off, window.row_off)
        h, w = int(window.height), int(window.width)
        corners = [t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)]
        outline = shapely.Polygon(corners)
        if not self.geometry.intersects(outline):
            return False
        if self.geometry.contains(outline):
            return True
        clipped = self.geometry.intersection(box(*outline.bounds))
        if clipped.is_empty:
            return False
        return geometry_mask([clipped], out_shape=(h, w), transform=t, invert=True)


@dataclass(frozen=True)
class AoiWindow:
    """An AOI on a raster's grid: its pixel window and the mask of its pixels.

    Attributes:
        window: the smallest window holding every pixel whose centre is inside
            the AOI (whole pixels of the raster, inside the raster).
        mask: the AOI's mask on the raster's grid (windows in raster pixels).
    """

    window: Window
    mask: AoiMask


def aoi_window(
    aoi: Aoi,
    crs: CRS | None,
    transform: Affine,
    width: int,
    height: int,
    what: str = "scene",
) -> AoiWindow:
    """The pixel window and mask of an AOI on a ``width × height`` raster grid.

    Raises:
        AoiError: the raster has no CRS, or the AOI covers no pixel centre of it.
    """
    import math

    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    footprint = shapely.Polygon([transform @ c for c in corners])
    geom = aoi_on_grid(aoi, crs, footprint, what)
    mask = AoiMask(geom, transform)
    x0, y0, x1, y1 = geom.intersection(footprint).bounds
    inv = ~transform
    pix = [inv @ c for c in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    cols, rows = [p[0] for p in pix], [p[1] for p in pix]
    c0, c1 = max(0, math.floor(min(cols))), min(width, math.ceil(max(cols)))
    r0, r1 = max(0, math.floor(min(rows))), min(height, math.ceil(max(rows)))
    row_in = np.zeros(max(0, r1 - r0), dtype=bool)
    col_in = np.zeros(max(0, c1 - c0), dtype=bool)
    for r in range(r0, r1, 1024):  # strips bound the memory of the masks
        inside = mask(Window(c0, r, c1 - c0, min(1024, r1 - r)))
        if inside is False:
            continue
        if inside is True:
            row_in[r - r0 : r - r0 + min(1024, r1 - r)] = True
            col_in[:] = True
            continue
        row_in[r - r0 : r - r0 + inside.shape[0]] |= inside.any(axis=1)
        col_in |= inside.any(axis=0)
    if not row_in.any():
        raise AoiError(f"AOI {aoi.path} covers no pixel centre of the {what}")
    ri, ci = np.flatnonzero(row_in), np.flatnonzero(col_in)
    window = Window(
        c0 + int(ci[0]),
        r0 + int(ri[0]),
        int(ci[-1] - ci[0]) + 1,
        int(ri[-1] - ri[0]) + 1,
    )
    return AoiWindow(window=window, mask=mask)


def map_aoi_mask(aoi: str | os.PathLike[str] | None, info: MapInfo) -> AoiMask | None:
    """The mask of AOI file ``aoi`` on the grid of map ``info``; None without one.

    Raises:
        AoiError: unreadable AOI, a map without CRS, or an AOI that misses the map.
    """
    if aoi is None:
        return None
    region = read_aoi(aoi)
    return AoiMask(aoi_on_grid(region, info.crs, info.footprint()), info.transform)


def aoi_windows(
    info: MapInfo, mask: AoiMask | None
) -> Iterator[tuple[Window, np.ndarray | bool]]:
    """The map's strips (:meth:`MapInfo.windows`) that reach into the AOI.

    Yields:
        ``(window, inside)``: ``inside`` is ``True`` (whole strip inside, or no
        AOI) or a bool array ``[rows, cols]`` of the pixels inside.
    """
    for win in info.windows():
        inside = True if mask is None else mask(win)
        if inside is False:
            continue
        yield win, inside
