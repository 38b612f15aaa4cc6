"""`alosmap stats`: exact pixel areas (ellipsoid for lon/lat grids), AOI, formats."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS
from scipy.integrate import quad

from alosmap.national.stats import class_areas, pixel_areas

JAXA_TILE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "jaxa_hrlulc_v2312"
    / "LC_N34E139.tif"
)
WGS84 = CRS.from_epsg(4326)
UTM54 = CRS.from_epsg(32654)
A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
D = 1 / 12000  # JAXA pixel, degrees


def cell_area_by_integration(lat0: float, lat1: float, dlon_deg: float) -> float:
    """Area of a lon/lat cell on WGS 84: ∫ M(φ)·N(φ)·cos φ dφ · Δλ.

    M and N are the meridional and prime-vertical radii of curvature; this is the
    surface element of the ellipsoid, integrated numerically (independent of the
    closed form used by alosmap).
    """

    def element(phi):
        w2 = 1 - E2 * math.sin(phi) ** 2
        m = A * (1 - E2) / w2**1.5
        n = A / math.sqrt(w2)
        return m * n * math.cos(phi)

    val, _ = quad(
        element, math.radians(lat0), math.radians(lat1), epsabs=0, epsrel=1e-13
    )
    return val * math.radians(dlon_deg)


def write(path, array, *, crs=WGS84, transform=None, nodata=0, tags=None):
    a = np.asarray(array, dtype=np.uint8)
    return write_raster(path, a, crs=crs, transform=transform, nodata=nodata, tags=tags)


def lulc(path, codes, **kw):
    return write(path, codes, tags={"ALOSMAP_TASK": "lulc"}, **kw)


def one_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_geographic_areas_match_hand_computation(tmp_path, lat):
    # 3 rows x 4 columns of 1/12000° pixels whose top edge is at `lat` + 3 px
    codes = np.array([[1, 1, 5, 0], [5, 5, 5, 2], [9, 1, 0, 0]])
    t = Affine(D, 0, 139.0, 0, -D, lat + 3 * D)
    s = class_areas(lulc(tmp_path / "m.tif", codes, transform=t))
    rows = [
        cell_area_by_integration(lat + (2 - r) * D, lat + (3 - r) * D, D)
        for r in range(3)
    ]
    if lat == 0.0:  # by hand: a·Δλ (9.2766 m) x M(0)·Δφ = a(1-e²)·Δφ (9.2145 m)
        by_hand = A * math.radians(D) * A * (1 - E2) * math.radians(D)
        assert rows[2] == pytest.approx(by_hand, rel=1e-8)
        assert by_hand == pytest.approx(85.4797, abs=1e-4)
    by_code = {c.code: c for c in s.classes}
    for code in (1, 2, 5, 9):
        expected = sum(
            rows[r] * int((codes[r] == code).sum()) for r in range(codes.shape[0])
        )
        assert by_code[code].area_m2 == pytest.approx(expected, rel=1e-9)
        assert by_code[code].pixels == int((codes == code).sum())
    # the classes add up to the mapped area; mapped + no data = the whole grid
    assert s.mapped_m2 == pytest.approx(sum(c.area_m2 for c in s.classes), rel=1e-12)
    assert s.mapped_m2 + s.nodata_m2 == pytest.approx(4 * sum(rows), rel=1e-9)
    assert s.nodata_pixels == 3
    # cross-check with PROJ's geodesic polygon area when pyproj is there
    pyproj = pytest.importorskip("pyproj")
    geod = pyproj.Geod(ellps="WGS84")
    area, _ = geod.polygon_area_perimeter(
        [139.0, 139.0 + 4 * D, 139.0 + 4 * D, 139.0],
        [lat, lat, lat + 3 * D, lat + 3 * D],
    )
    assert s.mapped_m2 + s.nodata_m2 == pytest.approx(abs(area), rel=1e-7)


def test_pixel_area_shrinks_with_latitude_and_whole_earth():
    # one row per degree band from pole to pole: the WGS 84 ellipsoid's area
    areas = pixel_areas(WGS84, Affine(1.0, 0, -180, 0, -1.0, 90), 180)
    total = 360 * areas.rows.sum()
    assert total / 1e6 == pytest.approx(510065621.724, rel=1e-11)
    assert np.all(np.diff(areas.rows[:90]) > 0)  # growing towards the equator
    assert areas.rows[0] == pytest.approx(areas.rows[-1], rel=1e-12)  # symmetric


def test_projected_areas_and_units(tmp_path):
    codes = np.zeros((20, 30), np.uint8)
    codes[2:12, 3:8] = 1
    codes[15:, :] = 5
    utm = Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)
    s = class_areas(lulc(tmp_path / "u.tif", codes, crs=UTM54, transform=utm))
    by = {c.code: c for c in s.classes}
    assert by[1].area_m2 == 50 * 100.0 and by[5].area_m2 == 150 * 100.0
    assert s.nodata_pixels == 600 - 200
    # a CRS in US survey feet: 10 ft pixels
    feet = Affine(10.0, 0, 6000000.0, 0, -10.0, 2000000.0)
    s = class_areas(
        lulc(tmp_path / "ft.tif", codes, crs=CRS.from_epsg(2227), transform=feet)
    )
    foot = 1200 / 3937  # US survey foot in metres
    assert s.classes[0].area_m2 == pytest.approx(50 * (10 * foot) ** 2, rel=1e-12)


def test_aoi_and_formats(tmp_path, cli):
    codes = np.full((40, 50), 5, np.uint8)
    codes[:, 25:] = 1
    codes[:5] = 0
    utm = Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)
    m = lulc(tmp_path / "m.tif", codes, crs=UTM54, transform=utm)
    # AOI: columns 20-29, rows 0-9 (pixel edges), in UTM with a legacy crs member
    x0, x1, y0, y1 = 350200.0, 350300.0, 3910000.0, 3909900.0
    aoi = tmp_path / "aoi.geojson"
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    urn = "urn:ogc:def:crs:EPSG::32654"
    aoi.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "crs": {"type": "name", "properties": {"name": urn}},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    )
    code, out, err = cli("stats", m, "--aoi", aoi, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    by = {c["code"]: c for c in d["classes"]}
    # rows 0-4 no data; rows 5-9: 5 forest + 5 water columns
    assert by[5]["pixels"] == 25 and by[1]["pixels"] == 25
    assert by[5]["area_km2"] == pytest.approx(25 * 100 / 1e6)
    assert d["nodata_pixels"] == 50
    assert by[1]["percent"] == pytest.approx(50.0)
    # CSV file by suffix, table on stdout
    out_csv = tmp_path / "s.csv"
    code, out, err = cli("stats", m, "-o", out_csv)
    assert code == 0 and out.strip() == str(out_csv)
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [r["class"] for r in rows[-2:]] == ["mapped", "no data"]
    assert int(rows[-2]["pixels"]) == int((codes > 0).sum())
    assert float(rows[-2]["area_km2"]) == pytest.approx(
        sum(float(r["area_km2"]) for r in rows[:-2])
    )
    code, out, err = cli("stats", m)
    assert code == 0 and "Forest" in out and "mapped (total)" in out
    # existing output kept without --overwrite
    code, _, err = cli("stats", m, "-o", out_csv, "--format", "json")
    assert code == 1 and "--overwrite" in one_error(err)
    assert out_csv.read_text().startswith("code,class")


def test_jaxa_legend_and_bad_inputs(tmp_path, cli):
    rng = np.random.default_rng(0)
    jaxa = rng.integers(0, 15, (30, 30)).astype(np.uint8)
    t = Affine(D, 0, 139.5, 0, -D, 35.5)
    tile = write(tmp_path / "LC.tif", jaxa, transform=t)
    code, _, err = cli("stats", tile)
    assert code == 1 and "--task" in one_error(err)
    code, out, err = cli("stats", tile, "--task", "jaxa", "-f", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 14 + 2 and rows[5]["class"].startswith("DBF")
    assert [int(r["pixels"]) for r in rows[:14]] == np.bincount(
        jaxa.ravel(), minlength=15
    )[1:].tolist()
    # values outside the legend
    code, _, err = cli("stats", tile, "--task", "lulc")
    assert code == 1 and "outside the LULC-9" in one_error(err)
    # no CRS
    nocrs = lulc(tmp_path / "nocrs.tif", jaxa % 10, crs=None, transform=t)
    code, _, err = cli("stats", nocrs)
    assert code == 1 and "no CRS" in one_error(err)
    # AOI outside the map, and one between pixel centres
    far = tmp_path / "far.geojson"
    far.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
        )
    )
    code, _, err = cli("stats", tile, "--task", "jaxa", "--aoi", far)
    assert code == 1 and "does not overlap the map" in one_error(err)
    lon, lat = 139.5 + 0.1 * D, 35.5 - 0.1 * D  # a corner of the first pixel
    tiny = tmp_path / "tiny.geojson"
    ring = [[lon, lat], [lon + 0.2 * D, lat], [lon, lat - 0.2 * D], [lon, lat]]
    tiny.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    code, _, err = cli("stats", tile, "--task", "jaxa", "--aoi", tiny)
    assert code == 1 and "covers no pixel centre" in one_error(err)


@pytest.mark.realdata
@pytest.mark.skipif(not JAXA_TILE.exists(), reason=f"{JAXA_TILE} not found")
def test_real_tile_inside_an_aoi(tmp_path):
    # 0.01° x 0.01° square on pixel edges: 120 x 120 real JAXA pixels
    lon0, lat0 = 139.81, 34.94
    aoi = tmp_path / "a.geojson"
    ring = [[lon0, lat0], [lon0 + 0.01, lat0], [lon0 + 0.01, lat0 + 0.01],
            [lon0, lat0 + 0.01], [lon0, lat0]]  # fmt: skip
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    s = class_areas(JAXA_TILE, legend="jaxa", aoi=aoi)
    assert s.mapped_pixels + s.nodata_pixels == 120 * 120
    with rasterio.open(JAXA_TILE) as ds:
        r0 = round((ds.transform.f - (lat0 + 0.01)) / -ds.transform.e)
        c0 = round((lon0 - ds.transform.c) / ds.transform.a)
        block = ds.read(1, window=((r0, r0 + 120), (c0, c0 + 120)))
    counts = np.bincount(block.ravel(), minlength=15)
    assert [c.pixels for c in s.classes] == counts[1:15].tolist()
    whole = cell_area_by_integration(lat0, lat0 + 0.01, 0.01)
    assert s.mapped_m2 + s.nodata_m2 == pytest.approx(whole, rel=1e-6)


def test_geopackage_aoi_in_its_own_crs(tmp_path):
    raw = pytest.importorskip("pyogrio.raw")
    import shapely

    codes = np.full((40, 50), 5, np.uint8)
    codes[:, 25:] = 1
    utm = Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)
    m = lulc(tmp_path / "m.tif", codes, crs=UTM54, transform=utm)
    # columns 20-29, rows 10-29 on pixel edges: 10 forest + 10 water columns
    square = shapely.box(350200.0, 3909700.0, 350300.0, 3909900.0)
    gpkg = tmp_path / "aoi.gpkg"
    raw.write(
        gpkg,
        geometry=np.array([shapely.to_wkb(square)], dtype=object),
        field_data=[np.array([1])],
        fields=["id"],
        driver="GPKG",
        geometry_type="Polygon",
        crs=UTM54.to_wkt(),
    )
    s = class_areas(m, aoi=gpkg)
    by = {c.code: c.pixels for c in s.classes}
    assert by[5] == by[1] == 100 and s.nodata_pixels == 0


def test_old_two_band_map_and_confidence_files(tmp_path, cli):
    """Maps of the previous release (band 2 = confidence) are still read."""
    codes = np.array([[1, 1, 5, 0], [5, 5, 5, 2]], np.uint8)
    conf = np.array([[90, 80, 70, 0], [60, 50, 40, 30]], np.uint8)
    t = Affine(D, 0, 139.0, 0, -D, 35.0)
    old = write_raster(
        tmp_path / "old.tif",
        np.stack([codes, conf]),
        crs=WGS84,
        transform=t,
        nodata=0,
        tags={"ALOSMAP_TASK": "lulc", "ALOSMAP_PRODUCT": "map"},
    )
    new = lulc(tmp_path / "new.tif", codes, transform=t)
    a, b = class_areas(old), class_areas(new)
    assert [(c.code, c.pixels) for c in a.classes] == [
        (c.code, c.pixels) for c in b.classes
    ]
    # a confidence file is not a class map
    c = write_raster(
        tmp_path / "new_confidence.tif",
        conf,
        crs=WGS84,
        transform=t,
        nodata=255,
        tags={"ALOSMAP_TASK": "lulc", "ALOSMAP_PRODUCT": "confidence"},
    )
    code, _, err = cli("stats", c)
    assert code == 1 and "confidence file, not a class map" in one_error(err)
    # -o may not be the map (a hard link named .csv), whatever --overwrite says
    link = tmp_path / "link.csv"
    link.hardlink_to(new)
    before = new.read_bytes()
    code, _, err = cli("stats", new, "-o", link, "--overwrite")
    assert code == 1 and "is the input" in one_error(err)
    assert new.read_bytes() == before
