"""Water (or any class) polygons from a class map (``alosmap vectorize``).

Polygons come from GDAL's polygonizer (``GDALPolygonize`` through
:func:`rasterio.features.shapes`) run on the **whole map at once**, so no polygon
is cut at block seams and none needs merging. The polygonizer reads the raster
scanline by scanline, from a temporary 1/0 mask of the wanted class written block by
block beside the output (compressed, a few hundred kB for a 12000² map, removed
afterwards), so the raster is never held in memory: memory grows with the polygons
found, not with the map.
Pixels join polygons through their edges (4-connectivity), so polygons are valid:
pixels touching only at a corner make two polygons.

Geometry is traced in pixel coordinates (exact integers), where it is filtered and
simplified, then transformed to the map's CRS and, when asked, to WGS 84:

* ``min_area_m2`` drops polygons smaller than that (holes are not filled). Areas are
  those of the pixels making up each polygon: exact ellipsoidal areas on lon/lat
  grids (:func:`alosmap.national.stats.equal_area_xy`), grid-plane areas on
  projected ones.
* ``simplify`` is a Douglas-Peucker tolerance **in pixels** (the same meaning on
  every grid; 1 = one pixel), topology-preserving per polygon.
* Output geometries are made valid after reprojection and coordinate rounding
  (1e-7° ≈ 1 cm for WGS 84, 1 mm for metre CRSs), with exterior rings
  counter-clockwise (RFC 7946).

Formats: GeoJSON (written with the standard library; RFC 7946 wants WGS 84
lon/lat, its default; in another CRS a legacy ``"crs"`` member names it, which
GDAL and QGIS read) and GeoPackage through pyogrio (``pip install
'alosmap[vector]'``; the map's CRS by default, a Polygon layer, GeoPackage 1.2 so
that GDAL before 3.7 reads it without a warning). ``crs`` (``--crs``) puts either in
WGS 84, the map's CRS or any CRS. Every feature is one Polygon (with its holes) and
has ``id``, ``class``, ``code`` and ``area_m2``; a polygon that reprojection or
rounding splits becomes one feature per part, its area shared out by the parts'
areas.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS

from alosmap._fileio import (
    atomic_path,
    atomic_write,
    check_not_input,
    check_output_place,
    check_overwrite,
)
from alosmap.errors import (
    BackendUnavailableError,
    InputRasterError,
    OutputPathError,
)
from alosmap.io.maps import LEGENDS, MapInfo, legend_text, open_map
from alosmap.io.raster import open_raster
from alosmap.national.stats import ellipsoid_of, equal_area_xy

__all__ = [
    "VECTOR_FORMATS",
    "VectorizeResult",
    "output_crs",
    "output_format",
    "vectorize_map",
]

#: Output suffix → format.
VECTOR_FORMATS = {".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg"}
#: Coordinate rounding of the output: degrees, and metres (or other CRS units).
_GRID_DEGREES = 1e-7
_GRID_UNITS = 1e-3


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize_map` wrote.

    Attributes:
        path: the output file.
        polygons: features written.
        dropped: polygons removed by ``min_area_m2``.
        area_m2: total area of the written polygons (their pixels), m².
        crs: CRS of the output coordinates (``None``: the map had none).
    """

    path: Path
    polygons: int
    dropped: int
    area_m2: float
    crs: str | None


def output_format(path: str | os.PathLike[str]) -> str:
    """``geojson`` or ``gpkg`` from the suffix of ``path``.

    Raises:
        OutputPathError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VECTOR_FORMATS:
        raise OutputPathError(
            f"cannot tell the vector format of {path}; use a "
            f"{', '.join(VECTOR_FORMATS)} file name"
        )
    return VECTOR_FORMATS[suffix]


def _pyogrio() -> Any:
    try:
        import pyogrio.raw
    except ImportError as exc:
        raise BackendUnavailableError(
            f"GeoPackage output needs pyogrio ({exc}); install it with: pip install "
            "'alosmap[vector]' (or write .geojson)"
        ) from exc
    return pyogrio.raw


def _resolve_class(info: MapInfo, wanted: str | int | None) -> tuple[int, str]:
    """(code, name) of the class to trace.

    By default the positive class of a binary legend (Water of a water map),
    else the legend's water class (a name starting with "water": LULC, JAXA).
    """
    legend = info.legend
    classes = legend.classes
    choices = ", ".join(f"{c.code}={c.name}" for c in classes)
    if wanted is None:
        water = (c for c in classes if c.name.lower().startswith("water"))
        default = legend.positive if legend.binary else next(water, None)
        if default is None:
            raise InputRasterError(
                f"the {legend_text(legend)} legend of {info.path} has no water "
                f"class; name the class to trace with --class ({choices})"
            )
        return default.code, default.name
    for c in classes:
        if str(wanted).strip().lower() in (str(c.code), c.name.lower()):
            return c.code, c.name
    raise InputRasterError(
        f"class {wanted!r} is not in the {legend_text(legend)} legend of "
        f"{info.path}; choose one of {choices}"
    )


def _trace(info: MapInfo, code: int, workdir: Path) -> np.ndarray:
    """Polygons of ``code`` in pixel coordinates (array of shapely Polygons).

    A 1/0 mask of the class is first written block by block to a temporary
    tiled GeoTIFF in ``workdir`` (DEFLATE level 1: a few hundred kB for a 12000²
    map); GDAL then traces it with the mask as its own validity mask, so only
    the class's polygons are built. (A VRT lookup table instead of the file was
    measured 3x slower: GDAL evaluates it again on every scanline read.)
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.features import shapes
    from shapely.geometry import shape

    fd, name = tempfile.mkstemp(prefix=".alosmap-mask-", suffix=".tif", dir=workdir)
    os.close(fd)
    tmp = Path(name)
    profile = {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "zlevel": 1,
        "bigtiff": "if_safer",
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with (
                open_raster(info.path) as src,
                rasterio.open(tmp, "w", **profile) as m,
            ):
                for win in info.windows():
                    values = src.read(1, window=win)
                    m.write((values == code).view(np.uint8), 1, window=win)
            with rasterio.open(tmp) as m:
                band = rasterio.band(m, 1)
                polys = [shape(g) for g, _ in shapes(band, mask=band, connectivity=4)]
    finally:
        tmp.unlink(missing_ok=True)
    return np.array(polys, dtype=object)


def _areas_m2(info: MapInfo, polys: np.ndarray) -> np.ndarray:
    """Area of each pixel-coordinate polygon in m² (see the module docs)."""
    crs, t = info.crs, info.transform
    if len(polys) == 0:
        return np.zeros(0)
    if crs is not None and crs.is_geographic and not (t.b or t.d):
        deg = np.degrees(crs.units_factor[1])
        ell = ellipsoid_of(crs)

        def to_equal_area(xy: np.ndarray) -> np.ndarray:
            lon = (t.c + t.a * xy[:, 0]) * deg
            lat = (t.f + t.e * xy[:, 1]) * deg
            return np.column_stack(equal_area_xy(lon, lat, ell))

        return shapely.area(shapely.transform(polys, to_equal_area))
    metres = 1.0
    if crs is not None and crs.is_projected:
        metres = crs.linear_units_factor[1]
    return shapely.area(polys) * abs(t.a * t.e - t.b * t.d) * metres**2


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Make geometries valid and keep their polygonal parts (empties dropped)."""
    out = []
    for g in geoms:
        if not g.is_valid:
            g = shapely.make_valid(g)
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            parts = [
                p for p in getattr(g, "geoms", []) if p.geom_type.endswith("Polygon")
            ]
            g = shapely.union_all(parts) if parts else shapely.Polygon()
        out.append(g)
    return np.array(out, dtype=object)


def vectorize_map(
    map_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    legend: str | None = None,
    class_: str | int | None = None,
    min_area_m2: float = 0.0,
    simplify: float = 0.0,
    crs: str = "auto",
    overwrite: bool = False,
) -> VectorizeResult:
    """Write the polygons of one class of a map (water by default).

    Args:
        map_path: a class map of alosmap (water, LULC, a model's own legend), or
            a JAXA tile (``legend``).
        output: ``.geojson``/``.json`` or ``.gpkg`` file.
        legend: the map's legend when it has no ``ALOSMAP_TASK`` tag.
        class_: class name or code to trace; default the positive class of a
            binary legend (Water), else the legend's water class.
        min_area_m2: drop polygons smaller than this (m²).
        simplify: Douglas-Peucker tolerance in pixels (0 = exact pixel outlines).
        crs: ``auto`` (WGS 84 for GeoJSON, the map's CRS for GeoPackage),
            ``wgs84``, ``map``, or any CRS rasterio reads (``EPSG:3857``, WKT).
        overwrite: replace an existing output.

    Raises:
        OutputPathError: unknown suffix or missing directory.
        OutputExistsError: the output exists and ``overwrite`` is false.
        BackendUnavailableError: GeoPackage without pyogrio.
        InputRasterError: bad map, unknown class, another CRS asked for a map
            without one.
        ValueError: ``crs`` is not a CRS.
    """
    out = Path(output)
    fmt = output_format(out)
    check_not_input([out], [map_path])
    _check_output(out, fmt, overwrite)
    target = crs if crs != "auto" else ("wgs84" if fmt == "geojson" else "map")
    wanted = None if target == "map" else output_crs(target)
    info = open_map(map_path, legend, allowed=tuple(LEGENDS))
    code, name = _resolve_class(info, class_)
    if wanted is not None and info.crs is None:
        raise InputRasterError(
            f"map {info.path} has no CRS, so polygons cannot be put in "
            f"{'WGS 84' if target == 'wgs84' else target}; use --crs map "
            "(coordinates in the map's transform units)"
        )
    polys = _trace(info, code, out.parent)
    areas = _areas_m2(info, polys)
    keep = areas >= min_area_m2 if min_area_m2 > 0 else np.ones(len(polys), bool)
    dropped = int((~keep).sum())
    polys, areas = polys[keep], areas[keep]
    reproject = wanted is not None and wanted != info.crs
    out_crs = wanted if wanted is not None else info.crs
    polys, areas = _output_geometry(
        polys, areas, info, simplify, (info.crs, out_crs) if reproject else None
    )
    props = [
        {"id": i + 1, "class": name, "code": code, "area_m2": round(float(a), 3)}
        for i, a in enumerate(areas)
    ]
    if fmt == "geojson":
        rfc7946 = out_crs is not None and out_crs == CRS.from_epsg(4326)
        text = _geojson(polys, props, None if rfc7946 else out_crs)
        atomic_write(
            out, lambda p: p.write_text(text, encoding="utf-8"), replace=overwrite
        )
    else:
        _write_gpkg(out, polys, props, out_crs, replace=overwrite)
    return VectorizeResult(
        path=out,
        polygons=len(polys),
        dropped=dropped,
        area_m2=float(np.sum(areas)),
        crs=None if out_crs is None else out_crs.to_string(),
    )


def output_crs(text: str) -> CRS:
    """The CRS of ``--crs`` (``wgs84`` or any CRS rasterio reads).

    Raises:
        ValueError: not a CRS.
    """
    if text.strip().lower() == "wgs84":
        return CRS.from_epsg(4326)
    try:
        return CRS.from_user_input(text)
    except Exception as exc:  # rasterio's CRSError
        raise ValueError(f"--crs {text!r}: not a CRS ({exc})") from exc


def _check_output(out: Path, fmt: str, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) or an unusable directory.

    Also checks that pyogrio is there for a GeoPackage, before any work.
    """
    check_overwrite([out], overwrite)
    check_output_place(out)
    if fmt == "gpkg":
        _pyogrio()


def _output_geometry(
    polys: np.ndarray,
    areas: np.ndarray,
    info: MapInfo,
    simplify: float,
    reproject: tuple[CRS, CRS] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-coordinate polygons as output Polygons, with their areas.

    Simplified (``simplify`` pixels), put in the map's CRS, reprojected
    ``(from, to)`` when given, then rounded on the grid of the output CRS, made
    valid and oriented (RFC 7946). Polygons that vanish are dropped, with their
    areas; one that splits becomes its parts (:func:`_explode`).
    """
    if not len(polys):
        return polys, areas
    if simplify > 0:
        polys = shapely.simplify(polys, simplify, preserve_topology=True)
    t = info.transform
    polys = shapely.transform(
        polys,
        lambda xy: np.column_stack(
            (
                t.c + t.a * xy[:, 0] + t.b * xy[:, 1],
                t.f + t.d * xy[:, 0] + t.e * xy[:, 1],
            )
        ),
    )
    out_crs = reproject[1] if reproject else info.crs
    if reproject is not None:
        polys = _reproject(polys, *reproject)
    geographic = out_crs is not None and out_crs.is_geographic
    grid = _GRID_DEGREES if geographic else _GRID_UNITS
    polys = _polygonal(polys)
    polys = shapely.set_precision(polys, grid)
    polys = _polygonal(polys)
    ok = ~shapely.is_empty(polys)
    polys, areas = _explode(polys[ok], areas[ok])
    return shapely.orient_polygons(polys), areas


def _explode(polys: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MultiPolygons as their Polygons; each part's area its share of the whole."""
    if all(g.geom_type == "Polygon" for g in polys):
        return polys, areas
    parts: list[Any] = []
    shares: list[float] = []
    for g, area in zip(polys, areas, strict=True):
        pieces = list(getattr(g, "geoms", [g]))
        sizes = shapely.area(np.array(pieces, dtype=object))
        total = float(sizes.sum())
        parts += pieces
        shares += [area * (s / total if total else 1 / len(pieces)) for s in sizes]
    return np.array(parts, dtype=object), np.array(shares)


def _reproject(polys: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Reproject every vertex of the polygons from ``src`` to ``dst`` in one call."""
    from rasterio.warp import transform as warp_transform

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = warp_transform(src, dst, xy[:, 0], xy[:, 1])
        return np.column_stack((x, y))

    return shapely.transform(polys, fn)


def _geojson(polys: np.ndarray, props: list[dict[str, Any]], crs: CRS | None) -> str:
    """A FeatureCollection as text (one feature per line)."""
    head: dict[str, Any] = {"type": "FeatureCollection"}
    if crs is not None:
        head["crs"] = {"type": "name", "properties": {"name": _crs_name(crs)}}
    features = [
        f'{{"type": "Feature", "id": {p["id"]}, "properties": {json.dumps(p)}, '
        f'"geometry": {shapely.to_geojson(g)}}}'
        for g, p in zip(polys, props, strict=True)
    ]
    body = ",\n".join(features)
    return json.dumps(head)[:-1] + f', "features": [\n{body}\n]}}\n'


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()


def _write_gpkg(
    out: Path,
    polys: np.ndarray,
    props: list[dict[str, Any]],
    crs: CRS | None,
    *,
    replace: bool,
) -> None:
    """Write a GeoPackage (Polygon layer named after the file) atomically.

    GeoPackage 1.2: what GDAL before 3.7 writes, and reads without a warning (it
    warns of 1.4, the default of later GDALs).

    ``replace``: whether a file that appeared meanwhile may be replaced.
    """
    raw = _pyogrio()
    fields = ["id", "class", "code", "area_m2"]
    data = [
        np.array([p["id"] for p in props], dtype=np.int64),
        np.array([p["class"] for p in props], dtype=object),
        np.array([p["code"] for p in props], dtype=np.int32),
        np.array([p["area_m2"] for p in props], dtype=np.float64),
    ]
    wkb = np.array([shapely.to_wkb(g) for g in polys], dtype=object)

    # GDAL wants the .gpkg suffix, so the temporary file gets one too
    with atomic_path(out, suffix=".gpkg", replace=replace) as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        raw.write(
            tmp,
            geometry=wkb,
            field_data=data,
            fields=fields,
            layer=out.stem,
            driver="GPKG",
            geometry_type="Polygon",
            crs=None if crs is None else crs.to_wkt(),
            dataset_options={"VERSION": "1.2"},
        )
