"""An area of interest (``--bbox``, ``--aoi``) for predict, water and batch.

The map covers the AOI's pixel window of the scene (the pixels whose centre is
inside the AOI), on the scene's grid; pixels outside the AOI are no data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

#: the scene grid of tests/conftest.py's ``make_geotiff`` (UTM 54N, 10 m pixels)
DEFAULT_TRANSFORM = Affine(10.0, 0.0, 350000.0, 0.0, -10.0, 3910000.0)
H, W = 300, 280
PX = 10.0
X0, Y0 = DEFAULT_TRANSFORM.c, DEFAULT_TRANSFORM.f


@pytest.fixture
def scene(make_geotiff):
    rng = np.random.default_rng(3)
    dn = rng.integers(1500, 9000, size=(H, W), dtype=np.uint16)
    return make_geotiff(dn, tags={"SYNTHETIC": "true"})


def _one_error_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs, ds.nodata


def _centres(transform, h, w):
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xs, ys = transform @ (cols, rows)
    return np.asarray(xs), np.asarray(ys)


def _assert_on_scene_grid(transform):
    """The map's grid is the scene's, shifted by whole pixels."""
    assert (transform.a, transform.b, transform.d, transform.e) == (PX, 0, 0, -PX)
    col = (transform.c - X0) / PX
    row = (Y0 - transform.f) / PX
    assert col == int(col) and row == int(row), transform
    return int(row), int(col)


def test_bbox_in_scene_crs_maps_its_pixel_window(cli, scene, tiny_lulc_model, tmp_path):
    # edges mid-pixel: the window holds the pixels whose centre is inside
    bbox = (X0 + 403, Y0 - 1402, X0 + 1601, Y0 - 404)
    out = tmp_path / "map.tif"
    code, _, err = cli(
        "-q", "predict", scene, "-m", tiny_lulc_model, "-o", out,
        "--bbox", ",".join(map(str, bbox)), "--bbox-crs", "EPSG:32654",
    )  # fmt: skip
    assert code == 0, err
    codes, transform, crs, nodata = _read(out)
    assert crs.to_epsg() == 32654
    assert transform == Affine(PX, 0, X0 + 400, 0, -PX, Y0 - 400)
    assert codes.shape == (100, 120)  # rows 40..139, cols 40..159
    assert nodata == 0 and (codes != 0).all()


def test_preview_of_an_aoi_map_shows_the_same_window(
    cli, scene, tiny_lulc_model, tmp_path
):
    pytest.importorskip("matplotlib")
    from alosmap.predict.preview import _read_decimated, _window_in

    bbox = (X0 + 403, Y0 - 1402, X0 + 1601, Y0 - 404)
    out, png = tmp_path / "map.tif", tmp_path / "map.png"
    code, _, err = cli(
        "-q", "predict", scene, "-m", tiny_lulc_model, "-o", out, "--preview", png,
        "--bbox", ",".join(map(str, bbox)), "--bbox-crs", "EPSG:32654",
    )  # fmt: skip
    assert code == 0, err
    assert png.is_file()
    # the SAR panel is read from the map's window of the scene (rows 40.., cols 40..)
    grid = _read_decimated(out, 1, 1024)
    window = _window_in(Path(scene), grid)
    assert (window.row_off, window.col_off, window.height, window.width) == (
        40, 40, 100, 120,
    )  # fmt: skip
    sar = _read_decimated(Path(scene), 1, 1024, window=window)
    assert sar.values.shape == grid.values.shape and sar.transform == grid.transform


def test_bbox_in_lonlat_masks_outside_pixels(cli, scene, tiny_lulc_model, tmp_path):
    from rasterio.warp import transform as warp
    from rasterio.warp import transform_bounds

    inner = (X0 + 500, Y0 - 2500, X0 + 2300, Y0 - 700)
    bbox = [round(v, 7) for v in transform_bounds("EPSG:32654", "EPSG:4326", *inner)]
    out = tmp_path / "map.tif"
    code, _, err = cli(
        "-q", "predict", scene, "-m", tiny_lulc_model, "-o", out,
        "--bbox", ",".join(f"{v:.7f}" for v in bbox),
    )  # fmt: skip
    assert code == 0, err
    codes, transform, _, _ = _read(out)
    row, col = _assert_on_scene_grid(transform)
    h, w = codes.shape
    assert row >= 0 and col >= 0 and row + h <= H and col + w <= W
    xs, ys = _centres(transform, h, w)
    lon, lat = warp("EPSG:32654", "EPSG:4326", xs.ravel(), ys.ravel())
    lon, lat = np.reshape(lon, xs.shape), np.reshape(lat, xs.shape)
    inside = (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])
    # pixel centres within ~1 cm of an edge may fall either side (reprojection)
    edge = 1e-7
    near = (
        (np.abs(lon - bbox[0]) < edge)
        | (np.abs(lon - bbox[2]) < edge)
        | (np.abs(lat - bbox[1]) < edge)
        | (np.abs(lat - bbox[3]) < edge)
    )
    np.testing.assert_array_equal((codes != 0)[~near], inside[~near])
    # the window is tight: every edge row and column has a pixel inside
    assert inside[0].any() and inside[-1].any()
    assert inside[:, 0].any() and inside[:, -1].any()
    assert not inside.all()  # the box is not aligned with the UTM grid


def test_polygon_aoi_outside_is_no_data(cli, scene, tiny_water_model, tmp_path):
    tri = shapely.Polygon(
        [(X0 + 100, Y0 - 100), (X0 + 2500, Y0 - 300), (X0 + 900, Y0 - 2900)]
    )
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32654"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(tri),
                    }
                ],
            }
        )
    )
    out = tmp_path / "water.tif"
    code, _, err = cli(
        "-q", "water", scene, "-m", tiny_water_model, "-o", out, "--aoi", aoi
    )
    assert code == 0, err
    codes, transform, _, nodata = _read(out)
    assert nodata == 255
    row, col = _assert_on_scene_grid(transform)
    xs, ys = _centres(transform, *codes.shape)
    inside = shapely.contains_xy(tri, xs, ys)
    np.testing.assert_array_equal(codes != 255, inside)
    assert (row, col) == (10, 10)  # the triangle's top-left pixel
    # the window is tight around the pixels whose centre is inside
    assert inside[0].any() and inside[-1].any()
    assert inside[:, 0].any() and inside[:, -1].any()


def test_aoi_missing_the_scene_is_one_line(cli, scene, tiny_lulc_model, tmp_path):
    out = tmp_path / "map.tif"
    code, _, err = cli(
        "predict", scene, "-m", tiny_lulc_model, "-o", out,
        "--bbox", "10,10,11,11",
    )  # fmt: skip
    assert code == 1
    assert "does not overlap the scene" in _one_error_line(err)
    assert not out.exists()
    code, _, err = cli(
        "predict", scene, "-m", tiny_lulc_model, "-o", out,
        "--bbox", "1,2,3,4", "--bbox-crs", "EPSG:99999",
    )  # fmt: skip
    # an unknown CRS is a usage error, said once (no "ERROR 1: PROJ" line of GDAL)
    assert code == 2 and "--bbox-crs" in _one_error_line(err)
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_aoi_usage_errors_exit_2(cli, scene, tiny_lulc_model, tmp_path):
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
        )
    )
    out = tmp_path / "map.tif"
    base = ("predict", scene, "-m", tiny_lulc_model, "-o", out)
    code, _, err = cli(*base, "--aoi", aoi, "--bbox", "1,2,3,4")
    assert code == 2 and "at most one area of interest" in err
    for bad in ("1,2,3", "3,2,1,4", "a,b,c,d"):
        code, _, err = cli(*base, f"--bbox={bad}")
        assert code == 2, (bad, err)
        assert "--bbox" in err
    assert not out.exists()


def test_options_validate_and_fingerprint_the_aoi(tiny_lulc_model, tmp_path):
    from alosmap.errors import InferenceOptionError
    from alosmap.predict.options import InferenceOptions
    from alosmap.spec import load_spec

    spec = load_spec(tiny_lulc_model)
    opts = InferenceOptions(bbox="1,2,3,4", bbox_crs="EPSG:32654")
    assert opts.bbox == (1.0, 2.0, 3.0, 4.0)
    fp = opts.for_model(spec, "m").fingerprint("sha")
    assert fp["bbox"] == [1.0, 2.0, 3.0, 4.0] and fp["bbox_crs"] == "EPSG:32654"
    plain = InferenceOptions().for_model(spec, "m").fingerprint("sha")
    assert not {"bbox", "bbox_crs", "aoi_sha256"} & set(plain)
    aoi = tmp_path / "a.geojson"
    aoi.write_text("{}")
    fp = InferenceOptions(aoi=aoi).for_model(spec, "m").fingerprint("sha")
    assert len(fp["aoi_sha256"]) == 64
    with pytest.raises(InferenceOptionError, match="at most one"):
        InferenceOptions(bbox=(1, 2, 3, 4), aoi=aoi)
    with pytest.raises(InferenceOptionError, match="minx < maxx"):
        InferenceOptions(bbox=(3, 2, 1, 4))


def test_batch_maps_each_scenes_window(cli, make_geotiff, tiny_lulc_model, tmp_path):
    rng = np.random.default_rng(4)
    shifted = Affine(PX, 0, X0 + 1000, 0, -PX, Y0)
    scenes = [
        make_geotiff(
            rng.integers(1500, 9000, size=(H, W), dtype=np.uint16),
            name=f"IMG-HH-{i}.tif",
            transform=t,
            tags={"SYNTHETIC": "true"},
        )
        for i, t in enumerate([DEFAULT_TRANSFORM, shifted])
    ]
    out = tmp_path / "batch"
    bbox = f"{X0 + 1200},{Y0 - 1000},{X0 + 2600},{Y0 - 200}"
    args = ("-q", "batch", *scenes, "-o", out, "-m", tiny_lulc_model, "--no-stac")
    code, _, err = cli(*args, "--bbox", bbox, "--bbox-crs", "EPSG:32654")
    assert code == 0, err
    maps = sorted(out.glob("IMG-HH-*_lulc.tif"))
    assert len(maps) == 2
    for path in maps:
        codes, transform, _, _ = _read(path)
        assert transform == Affine(PX, 0, X0 + 1200, 0, -PX, Y0 - 200), path
        assert codes.shape == (80, 140) and (codes != 0).all()
    # a rerun without the AOI does not reuse the AOI's maps
    code, _, err = cli(*args)
    assert code == 1 and "bbox" in _one_error_line(err)
