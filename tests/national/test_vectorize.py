"""`alosmap vectorize`: whole, valid water polygons that rasterise back to the map."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import shapely
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from shapely.geometry import shape

from alosmap.national.stats import class_areas
from alosmap.national.vectorize import vectorize_map

UTM54 = CRS.from_epsg(32654)
WGS84 = CRS.from_epsg(4326)
UTM_T = Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)


def write(path, array, *, crs=UTM54, transform=UTM_T, nodata=255, task="water"):
    a = np.asarray(array, dtype=np.uint8)
    tags = {"ALOSMAP_TASK": task} if task else None
    return write_raster(path, a, crs=crs, transform=transform, nodata=nodata, tags=tags)


@pytest.fixture
def water(tmp_path):
    """A 40 x 50 water map: a 3x3 pond, a 2x2 pond, one pixel, two pixels touching
    at a corner, a ring lake with an island, and no data in a corner."""
    a = np.zeros((40, 50), np.uint8)
    a[2:5, 2:5] = 1  # 9 px
    a[10:12, 2:4] = 1  # 4 px
    a[20, 2] = 1  # 1 px
    a[30, 30] = a[31, 31] = 1  # corner contact: two polygons (4-connectivity)
    a[5:15, 20:30] = 1
    a[8:11, 23:26] = 0  # island: a hole of 9 px in a 100 px square
    a[35:, 45:] = 255  # no data
    return write(tmp_path / "w.tif", a), a


def features(path):
    return json.loads(path.read_text())["features"]


def burn(geoms, shape_, transform):
    return rasterize(
        [(g, 1) for g in geoms], out_shape=shape_, transform=transform, dtype="uint8"
    )


def one_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_polygons_in_map_crs_rasterise_back(tmp_path, water):
    path, a = water
    out = tmp_path / "w.geojson"
    res = vectorize_map(path, out, crs="map")
    feats = features(out)
    assert res.polygons == len(feats) == 6
    geoms = [shape(f["geometry"]) for f in feats]
    assert all(g.is_valid and g.geom_type == "Polygon" for g in geoms)
    areas = sorted(f["properties"]["area_m2"] for f in feats)
    assert areas == [100.0, 100.0, 100.0, 400.0, 900.0, 9100.0]
    lake = max(geoms, key=lambda g: g.area)
    assert len(lake.interiors) == 1 and lake.area == 9100.0
    assert burn(geoms, a.shape, UTM_T).tolist() == (a == 1).astype(np.uint8).tolist()
    assert res.area_m2 == 100.0 * int((a == 1).sum())
    doc = json.loads(out.read_text())
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32654"
    assert feats[0]["properties"]["class"] == "Water"


def test_default_geojson_is_wgs84_and_valid(tmp_path, water, cli):
    path, a = water
    out = tmp_path / "w.geojson"
    code, stdout, err = cli("vectorize", path, "-o", out)
    assert code == 0, err
    assert stdout.strip() == str(out) and "6 polygons" in err
    doc = json.loads(out.read_text())
    assert "crs" not in doc  # RFC 7946: WGS 84 lon/lat
    geoms = [shape(f["geometry"]) for f in doc["features"]]
    assert all(g.is_valid for g in geoms)
    x0, y0, x1, y1 = shapely.union_all(geoms).bounds
    assert 139.3 < x0 < x1 < 139.4 and 35.3 < y0 < y1 < 35.4
    # exterior rings counter-clockwise (RFC 7946 right-hand rule)
    assert all(shapely.Polygon(g.exterior).exterior.is_ccw for g in geoms)
    # back to UTM: the same pixels (coordinates rounded to 1e-7° ~ 1 cm)
    back = [shape(transform_geom(WGS84, UTM54, f["geometry"])) for f in doc["features"]]
    assert burn(back, a.shape, UTM_T).tolist() == (a == 1).astype(np.uint8).tolist()
    # an existing output is kept without --overwrite
    before = out.read_text()
    code, _, err = cli("vectorize", path, "-o", out, "--min-area", "500")
    assert code == 1 and "--overwrite" in one_error(err)
    assert out.read_text() == before


def test_min_area_and_simplify(tmp_path, water):
    path, _ = water
    out = tmp_path / "big.geojson"
    res = vectorize_map(path, out, min_area_m2=450, crs="map")
    # 100, 100, 100 and 400 m² polygons dropped; the pond and the lake stay
    assert (res.polygons, res.dropped) == (2, 4)
    assert sorted(f["properties"]["area_m2"] for f in features(out)) == [900, 9100]
    # a round pond, simplified by one pixel: fewer vertices, still valid
    yy, xx = np.mgrid[0:60, 0:60]
    disk = (((yy - 30) ** 2 + (xx - 30) ** 2) < 20**2).astype(np.uint8)
    p = write(tmp_path / "disk.tif", disk)
    exact = vectorize_map(p, tmp_path / "a.geojson", crs="map")
    simple = vectorize_map(p, tmp_path / "b.geojson", crs="map", simplify=1.0)
    ge = shape(features(exact.path)[0]["geometry"])
    gs = shape(features(simple.path)[0]["geometry"])
    assert gs.is_valid and len(gs.exterior.coords) < len(ge.exterior.coords) / 2
    assert gs.area == pytest.approx(ge.area, rel=0.05)
    # the area attribute stays the pixels' area
    assert features(simple.path)[0]["properties"]["area_m2"] == disk.sum() * 100


def test_tall_river_is_one_polygon(tmp_path):
    # taller than one 2 Mpx block strip: no seams, one polygon
    a = np.zeros((2600, 900), np.uint8)
    a[:, 400:403] = 1
    a[1300, 403:700] = 1  # a tributary
    res = vectorize_map(write(tmp_path / "r.tif", a), tmp_path / "r.geojson", crs="map")
    assert res.polygons == 1
    g = shape(features(res.path)[0]["geometry"])
    assert g.area == 100.0 * int(a.sum())
    # the temporary class mask is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.geojson", "r.tif"]


def test_geographic_map_areas_match_stats(tmp_path):
    d = 1 / 12000
    a = np.zeros((60, 80), np.uint8)
    a[5:50, 10:30] = 1
    a[20:25, 50:79] = 1
    t = Affine(d, 0, 140.0, 0, -d, 60.0)
    p = write(tmp_path / "g.tif", a, crs=WGS84, transform=t)
    res = vectorize_map(p, tmp_path / "g.geojson")
    stats = class_areas(p)
    water_m2 = next(c.area_m2 for c in stats.classes if c.name == "Water")
    assert res.polygons == 2
    assert res.area_m2 == pytest.approx(water_m2, rel=1e-9)
    assert sum(f["properties"]["area_m2"] for f in features(res.path)) == (
        pytest.approx(water_m2, abs=0.01)
    )


def test_gpkg_output(tmp_path, water, cli):
    raw = pytest.importorskip("pyogrio.raw")
    path, _ = water
    out = tmp_path / "w.gpkg"
    code, _, err = cli("vectorize", path, "-o", out, "--min-area", "450")
    assert code == 0, err
    meta, _, wkb, fields = raw.read(out)
    assert "32654" in meta["crs"]  # auto: the map's CRS for GeoPackage
    geoms = shapely.from_wkb(wkb)
    assert len(geoms) == 2 and all(g.is_valid for g in geoms)
    assert sorted(fields[list(meta["fields"]).index("area_m2")]) == [900.0, 9100.0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_gpkg_without_pyogrio_says_how_to_install(tmp_path, water, cli, monkeypatch):
    path, _ = water
    monkeypatch.setitem(sys.modules, "pyogrio", None)
    monkeypatch.setitem(sys.modules, "pyogrio.raw", None)
    out = tmp_path / "w.gpkg"
    code, _, err = cli("vectorize", path, "-o", out)
    assert code == 1 and "alosmap[vector]" in one_error(err)
    assert not out.exists()


def test_other_classes_and_bad_inputs(tmp_path, cli):
    lulc = np.full((20, 20), 5, np.uint8)
    lulc[5:10, 5:10] = 1
    lulc[0, 0] = 0
    p = write(tmp_path / "l.tif", lulc, nodata=0, task="lulc")
    res = vectorize_map(p, tmp_path / "f.geojson", class_="forest", crs="map")
    g = shape(features(res.path)[0]["geometry"])
    assert res.polygons == 1 and g.area == 100.0 * int((lulc == 5).sum())
    assert len(g.interiors) == 1  # the water square is a hole in the forest
    code, _, err = cli("vectorize", p, "-o", tmp_path / "x.geojson", "--class", "Sea")
    assert code == 1 and "1=Water" in one_error(err)
    code, _, err = cli("vectorize", p, "-o", tmp_path / "x.shp")
    assert code == 1 and ".geojson" in one_error(err)
    nocrs = write(tmp_path / "n.tif", lulc, crs=None, nodata=0, task="lulc")
    code, _, err = cli("vectorize", nocrs, "-o", tmp_path / "n.geojson")
    assert code == 1 and "--crs map" in one_error(err)
    code, _, err = cli("vectorize", nocrs, "-o", tmp_path / "n.geojson", "--crs", "map")
    assert code == 0, err
    assert not (tmp_path / "x.geojson").exists()
    # no water at all: an empty collection, not an error
    dry = write(tmp_path / "dry.tif", np.zeros((10, 10), np.uint8))
    res = vectorize_map(dry, tmp_path / "dry.geojson")
    assert res.polygons == 0 and features(res.path) == []


def _ogrinfo(path):
    """``ogrinfo -so -al`` of the system's GDAL (stdout + stderr), or None."""
    import shutil
    import subprocess

    exe = shutil.which("ogrinfo")
    if exe is None:
        return None
    run = subprocess.run(
        [exe, "-so", "-al", str(path)], capture_output=True, text=True, check=True
    )
    return run.stdout + run.stderr


def _gdal_messages(path):
    """What GDAL (pyogrio's) says while opening ``path``: warnings and errors."""
    import ctypes

    pytest.importorskip("pyogrio")
    import pyogrio.raw

    from alosmap._process import loaded_libraries

    pyogrio.read_info(path)  # loads pyogrio's libgdal
    libs = loaded_libraries("libgdal")
    messages: list[str] = []
    handler_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)

    def collect(level, number, text):
        messages.append(f"{level}: {(text or b'').decode()}")

    handler = handler_t(collect)
    stacks = []
    for lib_path in libs:
        lib = ctypes.CDLL(lib_path)
        lib.CPLPushErrorHandler.argtypes = [handler_t]
        lib.CPLPushErrorHandler(handler)
        stacks.append(lib)
    try:
        pyogrio.read_info(path)
        pyogrio.raw.read(path)
    finally:
        for lib in stacks:
            lib.CPLPopErrorHandler()
    return messages


def test_gpkg_is_polygons_in_map_crs_without_driver_warnings(tmp_path, water, cli):
    raw = pytest.importorskip("pyogrio.raw")
    path, _ = water
    out = tmp_path / "w.gpkg"
    code, _, err = cli("vectorize", path, "-o", out)
    assert code == 0, err
    meta, _, wkb, _ = raw.read(out)
    assert meta["geometry_type"] == "Polygon"  # not MultiPolygon
    assert {g.geom_type for g in shapely.from_wkb(wkb)} == {"Polygon"}
    assert CRS.from_user_input(meta["crs"]) == UTM54  # the map's CRS
    assert _gdal_messages(out) == []
    text = _ogrinfo(out)
    if text is not None:  # GDAL 3.6 warns of GeoPackage 1.4 files
        assert "Geometry: Polygon" in text and "32654" in text
        assert "Warning" not in text and "ERROR" not in text, text


def test_geojson_is_wgs84_and_crs_chooses_any(tmp_path, water, cli):
    path, a = water
    out = tmp_path / "w.geojson"
    code, _, err = cli("vectorize", path, "-o", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert "crs" not in doc  # RFC 7946: WGS 84 lon/lat
    lon, lat = np.array(shape(doc["features"][0]["geometry"]).exterior.coords).T
    assert ((lon > 135) & (lon < 141) & (lat > 34)).all()
    assert {f["geometry"]["type"] for f in doc["features"]} == {"Polygon"}
    # any CRS: GeoPackage in Web Mercator, polygons burn back onto the map's pixels
    raw = pytest.importorskip("pyogrio.raw")
    merc = tmp_path / "m.gpkg"
    code, _, err = cli("vectorize", path, "-o", merc, "--crs", "EPSG:3857")
    assert code == 0, err
    meta, _, wkb, _ = raw.read(merc)
    assert CRS.from_user_input(meta["crs"]) == CRS.from_epsg(3857)
    geoms = [
        transform_geom("EPSG:3857", UTM54, shapely.geometry.mapping(g))
        for g in shapely.from_wkb(wkb)
    ]
    burnt = burn(geoms, a.shape, UTM_T)
    assert (burnt == (a == 1)).mean() > 0.99  # reprojected edges: a few pixels
    if (text := _ogrinfo(merc)) is not None:
        assert "Geometry: Polygon" in text and "Warning" not in text, text
    code, _, err = cli("vectorize", path, "-o", tmp_path / "x.gpkg", "--crs", "EPSG:0")
    assert code == 2 and "--crs" in err and not (tmp_path / "x.gpkg").exists()


def test_help_says_which_crs_by_format(cli):
    code, out, _ = cli("vectorize", "--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    assert "GeoJSON in WGS 84" in text and "GeoPackage in the map's CRS" in text
