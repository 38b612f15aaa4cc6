"""A map of a part is the part of the map.

The window grid is the whole scene's; an area of interest selects windows from it
and crops. Maps of areas (bounding boxes and polygons, deep inside, at the scene's
edges, touching the last edge-aligned window, over no data) equal the whole-scene
map on every pixel of the area: class codes, confidence and probabilities alike.
Batch size and threads change the model's float rounding at most: classes stay.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from conftest import DEFAULT_TRANSFORM

from alosmap.predict.pipeline import predict_scene

PX = 10.0
X0, Y0 = DEFAULT_TRANSFORM.c, DEFAULT_TRANSFORM.f
#: 600 × 520 with 256-pixel tiles, overlap 64: window rows 0, 192, 344 and columns
#: 0, 192, 264 (the last of each edge-aligned), the top-left window all no data
H, W = 600, 520


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic ALOS-2-like scene (land covers the demo model tells apart)."""
    holes = [
        (slice(None, 260), slice(None, 258)),  # the first window: no valid pixel
        (slice(400, 470), slice(100, 380)),  # a no-data strip across windows
    ]
    return write_scene(tmp_path_factory.mktemp("part"), 7, H, W, holes)


def write_scene(out, seed: int, height: int, width: int, holes) -> Path:
    """A synthetic scene in ``out`` with no data in ``holes`` (``(rows, cols)``)."""
    from conftest import UTM54, write_raster

    from alosmap.synthetic import generate_scene

    made = generate_scene(
        out, seed=seed, width=width, height=height, write_label_tiles=False
    )
    with rasterio.open(made.path) as ds:
        dn, tags = ds.read(1), ds.tags()
    for hole in holes:
        dn[hole] = 0
    return write_raster(
        out / "scene.tif",
        dn,
        crs=UTM54,
        transform=DEFAULT_TRANSFORM,
        nodata=0,
        tags={**tags, "SYNTHETIC": "true"},
    )


@pytest.fixture(scope="module")
def model():
    """The bundled demo model: trained on synthetic scenes, so its classes follow
    the land cover, and they change when the window grid moves (the tiny test
    models give one class everywhere, whatever the grid)."""
    from alosmap.predict.pipeline import WEIGHTS_DIR

    path = WEIGHTS_DIR / "lulc.safetensors"
    if not path.is_file():
        pytest.skip("no bundled lulc model in this installation")
    return path


def _bbox(row, col, h, w):
    """A bbox (scene CRS) whose pixel window is rows row.., cols col.."""
    return (
        X0 + col * PX + 1,
        Y0 - (row + h) * PX + 1,
        X0 + (col + w) * PX - 1,
        Y0 - row * PX - 1,
    )


def _bands(path):
    """Classes, confidence and probabilities of a map, and its window of the scene."""
    with rasterio.open(path) as ds:
        classes = ds.read(1)
        t = ds.transform
        row, col = round((Y0 - t.f) / PX), round((t.c - X0) / PX)
    conf = path.with_name(path.stem + "_confidence.tif")
    prob = path.with_name(path.stem + "_probabilities.tif")
    with rasterio.open(conf) as ds:
        confidence = ds.read(1)
    with rasterio.open(prob) as ds:
        probabilities = ds.read()
    return (row, col), classes, confidence, probabilities


@pytest.fixture(scope="module")
def whole(scene, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "whole.tif"
    res = predict_scene(
        scene,
        out,
        model=model,
        confidence=True,
        probabilities=True,
        threads=1,
    )
    assert res.tiles_total == 9 and res.tiles_run == 8  # the no-data window skipped
    bands = _bands(out)
    assert len(np.unique(bands[1])) >= 4  # no data and three classes at least
    return bands


def _map(scene, model, out, **kw):
    res = predict_scene(
        scene, out, model=model, confidence=True, probabilities=True, threads=1, **kw
    )
    return res, _bands(out)


def _assert_cut_out(whole, part, inside=None):
    """``part`` is ``whole`` on the part's pixels (``inside``: else no data)."""
    _, classes, conf, prob = whole
    (row, col), pc, pconf, pprob = part
    h, w = pc.shape
    rows, cols = slice(row, row + h), slice(col, col + w)
    if inside is None:
        inside = np.ones((h, w), bool)
    np.testing.assert_array_equal(pc[inside], classes[rows, cols][inside])
    np.testing.assert_array_equal(pconf[inside], conf[rows, cols][inside])
    np.testing.assert_array_equal(pprob[:, inside], prob[:, rows, cols][:, inside])
    assert (pc[~inside] == 0).all() and (pconf[~inside] == 255).all()


#: areas as pixel windows (row, col, height, width) of the scene
AREAS = {
    # deep inside, where three rows of windows meet
    "inside": (150, 170, 140, 160),
    # at the bottom-right corner: the last (edge-aligned) windows only
    "corner": (520, 440, 80, 80),
    # along the left edge, over both no-data regions
    "edge": (200, 0, 320, 90),
    # one pixel where four windows blend
    "pixel": (350, 200, 1, 1),
}


@pytest.mark.parametrize("name", sorted(AREAS))
def test_area_map_is_the_whole_map_there(scene, model, whole, tmp_path, name):
    row, col, h, w = AREAS[name]
    res, part = _map(
        scene,
        model,
        tmp_path / "part.tif",
        bbox=_bbox(row, col, h, w),
        bbox_crs="EPSG:32654",
    )
    assert part[0] == (row, col) and part[1].shape == (h, w)
    _assert_cut_out(whole, part)
    assert res.tiles_run < 8  # only the windows the area needs
    assert res.valid_pixels == int((part[1] != 0).sum())


def test_neighbouring_areas_agree_on_shared_pixels(scene, model, whole, tmp_path):
    # two areas that overlap in a band of 30 columns across a window seam
    a, b = (
        _map(
            scene,
            model,
            tmp_path / f"{name}.tif",
            bbox=_bbox(*window),
            bbox_crs="EPSG:32654",
        )[1]
        for name, window in (("a", (100, 60, 300, 190)), ("b", (100, 220, 300, 250)))
    )
    for part in (a, b):
        _assert_cut_out(whole, part)
    shared = (slice(None), slice(220 - 60, 250 - 60)), (slice(None), slice(0, 30))
    for i in (1, 2):
        np.testing.assert_array_equal(a[i][shared[0]], b[i][shared[1]])


def test_polygon_area_is_the_whole_map_inside(scene, model, whole, tmp_path):
    # a quadrilateral from the no-data corner to the bottom edge
    tri = shapely.Polygon(
        [
            # off the pixel centres' lattice: no centre on an edge
            (X0 + 1003, Y0 - 107),
            (X0 + 5101, Y0 - 2993),
            (X0 + 3007, Y0 - 6000),
            (X0 + 1501, Y0 - 6000),
        ]
    )
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "Feature",
                "crs": {"type": "name", "properties": {"name": "EPSG:32654"}},
                "properties": {},
                "geometry": shapely.geometry.mapping(tri),
            }
        )
    )
    _, part = _map(scene, model, tmp_path / "tri.tif", aoi=aoi)
    (row, col), classes = part[0], part[1]
    assert row + classes.shape[0] == H  # it reaches the bottom edge
    cols, rows = np.meshgrid(np.arange(classes.shape[1]), np.arange(classes.shape[0]))
    xs = X0 + (col + cols + 0.5) * PX
    ys = Y0 - (row + rows + 0.5) * PX
    inside = shapely.contains_xy(tri, xs, ys)
    assert inside.any() and not inside.all()
    _assert_cut_out(whole, part, inside)


def test_batch_size_and_threads_keep_the_classes(scene, model, whole, tmp_path):
    _, classes, conf, _ = whole
    for i, kw in enumerate(({"batch_size": 1}, {"batch_size": 3}, {"threads": 2})):
        out = tmp_path / f"m{i}.tif"
        kw = {"threads": 1, **kw}
        predict_scene(scene, out, model=model, confidence=True, **kw)
        _, c, cf, _ = _bands_no_prob(out)
        np.testing.assert_array_equal(c, classes, err_msg=str(kw))
        # the model's rounding may differ in the last bits: a percent at most
        assert np.abs(cf.astype(int) - conf).max() <= 1, kw


def _bands_no_prob(path):
    with rasterio.open(path) as ds:
        classes = ds.read(1)
    with rasterio.open(path.with_name(path.stem + "_confidence.tif")) as ds:
        conf = ds.read(1)
    return None, classes, conf, None


def test_batch_shards_and_a_resumed_run_map_the_same_pixels(
    scene, model, whole, tmp_path
):
    import shutil

    from alosmap.national.batch import Shard, record_path, run_batch

    scenes = [tmp_path / "IMG-HH-a.tif", tmp_path / "IMG-HH-b.tif"]
    for s in scenes:
        shutil.copyfile(scene, s)
    out = tmp_path / "out"
    row, col, h, w = AREAS["inside"]
    kw = dict(
        model=model,
        stac=False,
        threads=1,
        probabilities=True,
        bbox=_bbox(row, col, h, w),
        bbox_crs="EPSG:32654",
    )
    for i in range(2):  # one scene per shard
        res = run_batch(scenes, out, shard=Shard(i, 2), **kw)
        assert len(res.done) == 1 and not res.failed
    maps = sorted(out.glob("IMG-HH-*_lulc.tif"))
    assert len(maps) == 2
    for path in maps:
        _assert_cut_out(whole, _bands(path))
    # a resumed run redoes the scene whose record is gone: the same map again
    record_path(out, maps[0].stem).unlink()
    res = run_batch(scenes, out, **kw)
    assert res.done == [maps[0].stem] and len(res.skipped) == 1
    _assert_cut_out(whole, _bands(maps[0]))


def test_a_grid_restarted_at_the_area_would_change_the_map(
    scene, model, whole, tmp_path
):
    """Why the grid is the scene's: the area cut out as a scene of its own (its
    window grid starting at its corner, what ``--bbox`` once did) maps otherwise."""
    from affine import Affine
    from conftest import UTM54, write_raster

    row, col, h, w = AREAS["inside"]
    with rasterio.open(scene) as ds:
        dn, tags = ds.read(1, window=((row, row + h), (col, col + w))), ds.tags()
    cut = write_raster(
        tmp_path / "cut.tif",
        dn,
        crs=UTM54,
        transform=DEFAULT_TRANSFORM @ Affine.translation(col, row),
        nodata=0,
        tags=tags,
    )
    own = _map(cut, model, tmp_path / "own.tif")[1]
    classes = whole[1][row : row + h, col : col + w]
    assert own[0] == (row, col)
    conf = whole[2][row : row + h, col : col + w]
    # measured: 1.5 % of the classes, 54 % of the confidence values differ
    assert (own[1] != classes).mean() > 0.005
    assert (own[2] != conf).mean() > 0.1


def test_layover_and_shadow_are_counted_in_the_area(tmp_path, tiny_lulc_model):
    """A mosaic tile's masked pixels are counted where the map is, not in the
    larger frame of windows the run reads."""
    from affine import Affine
    from conftest import write_raster
    from rasterio.crs import CRS

    px = 0.8 / 3600
    t = Affine(px, 0.0, -161.0, 0.0, -px, 23.0)
    rng = np.random.default_rng(2)
    hh = rng.integers(2000, 9000, size=(300, 300)).astype(np.uint16)
    mask = np.full((300, 300), 255, np.uint8)
    mask[100:140, 0:300] = 100  # layover across the whole width
    mask[:, 200:210] = 150  # shadow down the whole height
    for name, arr, nodata in (("sl_HH", hh, 1), ("mask", mask, 0)):
        write_raster(
            tmp_path / f"N23W161_20_{name}_F02DAR.tif",
            arr,
            crs=CRS.from_epsg(4326),
            transform=t,
            nodata=nodata,
        )
    row, col, h, w = 50, 20, 120, 150  # rows 50-169, columns 20-169: no shadow
    bbox = (
        -161.0 + (col + 0.1) * px,
        23.0 - (row + h - 0.1) * px,
        -161.0 + (col + w - 0.1) * px,
        23.0 - (row + 0.1) * px,
    )
    res = predict_scene(
        tmp_path / "N23W161_20_sl_HH_F02DAR.tif",
        tmp_path / "map.tif",
        model=tiny_lulc_model,
        threads=1,
        bbox=bbox,
    )
    with rasterio.open(res.output) as ds:
        assert (ds.height, ds.width) == (h, w)
    assert (res.layover_pixels, res.shadow_pixels) == (40 * w, 0)
    assert res.valid_pixels == h * w - 40 * w
