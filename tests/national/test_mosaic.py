"""`alosmap mosaic`: maps onto the JAXA 1° grid, merge rules, mixed CRSs, bad input.

The merge rules are checked exactly on small hand-made maps on a coarse grid
(120 px per degree, same semantics as JAXA's 12000); the sample scenes are mapped
with a tiny model and mosaicked on the real JAXA grid, and compared with an
independent reprojection of each map.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import REPO, SAMPLE_SCENES, write_raster
from conftest import write_map as write_spec_map
from rio_cogeo.cogeo import cog_validate

from alosmap.arch import get_preset
from alosmap.errors import MosaicInputError, OutputExistsError
from alosmap.grid import (
    cell_name,
    cell_transform,
    cells_for_bounds,
    parse_cell_name,
)
from alosmap.io.maps import class_names_from_file
from alosmap.io.style import style_path
from alosmap.io.writer import confidence_path
from alosmap.national.batch import run_batch
from alosmap.national.mosaic import find_maps, mosaic_maps
from alosmap.spec import default_spec

JAXA_TILE = REPO / "sample_data" / "LC_N35E139.tif"
PPD = 120  # coarse grid for the hand-made maps: 1/120° pixels, 120 × 120 cells


def write_map(path, classes, conf, *, transform, date, crs="EPSG:4326", task="lulc"):
    """A per-scene map as predict writes it (MapWriter, provenance tags)."""
    spec = default_spec(task, get_preset("tiny"), name=f"test-{task}")
    return write_spec_map(
        path,
        np.asarray(classes, np.uint8),
        spec,
        crs=crs,
        transform=transform,
        confidence=None if conf is None else np.asarray(conf, np.uint8),
        tags={"ACQUISITION_DATE": date, "SOURCE_SCENE": f"{path.stem}_scene.tif"},
    )


def map_files(d):
    """The maps in ``d`` (not their confidence files), sorted by name."""
    return sorted(p for p in d.glob("*.tif") if not p.stem.endswith("_confidence"))


def read_both(path):
    """``[2, H, W]``: a map's classes and its confidence (from its own file)."""
    with rasterio.open(path) as ds:
        cls = ds.read(1)
    with rasterio.open(confidence_path(path)) as ds:
        return np.stack([cls, ds.read(1)])


def px(lon0, lat0):
    """Transform of a map on the coarse grid with its corner at (lon0, lat0)."""
    return Affine(1 / PPD, 0, lon0, 0, -1 / PPD, lat0)


def small_map(path, code=3, conf=80, *, lon=139, date="2022-01-01"):
    """A 4 × 4 LULC map of one class (confidence ``conf`` unless None) at 35.5° N."""
    return write_map(
        path,
        np.full((4, 4), code),
        None if conf is None else np.full((4, 4), conf),
        transform=px(lon, 35.5),
        date=date,
    )


# -- the grid -------------------------------------------------------------------------


def test_jaxa_grid_matches_the_jaxa_tile():
    with rasterio.open(JAXA_TILE) as ds:
        assert ds.transform == cell_transform(35, 139)
        assert ds.crs.to_epsg() == 4326
        assert ds.shape == (12000, 12000)
    assert cell_name(35, 139) == JAXA_TILE.name
    assert cell_name(-1, -71, prefix="WATER") == "WATER_S01W071.tif"
    assert parse_cell_name("LC_N35E139.tif") == (35, 139)
    assert parse_cell_name("WATER_S01W071.tif") == (-1, -71)
    with pytest.raises(ValueError):
        parse_cell_name("N35E139.tif")
    # a box ending exactly on a cell edge does not pull in the neighbour
    assert cells_for_bounds((139.2, 35.1, 140.0, 36.0)) == [(35, 139)]
    # north to south, then west to east
    assert cells_for_bounds((138.5, 34.5, 139.5, 35.5)) == [
        (35, 138),
        (35, 139),
        (34, 138),
        (34, 139),
    ]


# -- merge rules, exactly -------------------------------------------------------------


@pytest.fixture
def overlapping_maps(tmp_path):
    """Two maps on the coarse grid overlapping by 6 columns.

    Old map (2022-09-01, file name sorts last): class 5, 10 × 12 px from 139.0°E,
    35.5°N, confidence 60 | 50 | 40 in columns 0-7 | 8-9 | 10-11. New map
    (2022-10-01): class 2, confidence 50, 10 × 12 px from 139.05°E, with a no-data
    gap in its row 0, columns 0-2.
    """
    return _overlapping_maps(tmp_path / "maps", write_old=write_map)


def _overlapping_maps(d, *, write_old):
    """Write the two maps of :func:`overlapping_maps` into ``d``; the old one with
    ``write_old`` (the current layout, or the two-band layout of earlier releases)."""
    d.mkdir()
    old_conf = np.full((10, 12), 60, np.uint8)
    old_conf[:, 8:10] = 50
    old_conf[:, 10:] = 40
    write_old(
        d / "z_old.tif",
        np.full((10, 12), 5),
        old_conf,
        transform=px(139.0, 35.5),
        date="2022-09-01",
    )
    new = np.full((10, 12), 2, np.uint8)
    new_conf = np.full((10, 12), 50, np.uint8)
    new[0, :3] = new_conf[0, :3] = 0
    write_map(
        d / "a_new.tif", new, new_conf, transform=px(139.05, 35.5), date="2022-10-01"
    )
    return d


EXPECTED = {
    # columns 0..17 of cell rows 61..69 (row 60 has the new map's gap at 6..8)
    "confidence": [5] * 8 + [2] * 10,
    "latest": [5] * 6 + [2] * 12,
    "first": [5] * 12 + [2] * 6,
}


@pytest.mark.parametrize("rule", ["confidence", "latest", "first"])
def test_merge_rules(overlapping_maps, tmp_path, rule):
    out = tmp_path / f"mosaic_{rule}"
    res = mosaic_maps(
        [overlapping_maps], out, merge=rule, pixels_per_degree=PPD, block_rows=7
    )
    assert [p.name for p in res.cells] == ["LC_N35E139.tif"]
    with rasterio.open(res.cells[0]) as ds:
        assert ds.transform == cell_transform(35, 139, PPD)
        assert ds.shape == (PPD, PPD)
        assert ds.count == 1
    cls, conf = read_both(res.cells[0])
    # rows 60-69 (35.5° -> 35.4167°), columns 0-17 (139.0° -> 139.15°) have data
    assert (cls[:60] == 0).all() and (cls[70:] == 0).all() and (cls[:, 18:] == 0).all()
    for r in range(61, 70):
        assert cls[r, :18].tolist() == EXPECTED[rule], (rule, r)
    # the new map's gap (row 60, columns 6-8) shows the old map under every rule
    assert cls[60, 6:9].tolist() == [5, 5, 5]
    # the confidence comes with the winning pixel
    old_conf = [60] * 8 + [50] * 2 + [40] * 2
    for c in range(18):
        want = old_conf[c] if cls[65, c] == 5 else 50
        assert conf[65, c] == want, (rule, c)
    assert res.valid_pixels == {"LC_N35E139.tif": 10 * 18}


def test_confidence_rule_needs_band_2(tmp_path):
    small_map(tmp_path / "a.tif", 3, None)
    small_map(tmp_path / "b.tif", 4, 70, lon=139.01, date="2022-02-01")
    with pytest.raises(MosaicInputError, match=r"confidence.*a\.tif.*--merge latest"):
        mosaic_maps([tmp_path], tmp_path / "m", pixels_per_degree=PPD)
    assert not (tmp_path / "m").exists()
    res = mosaic_maps([tmp_path], tmp_path / "m", merge="latest", pixels_per_degree=PPD)
    with rasterio.open(res.cells[0]) as ds:
        assert ds.count == 1
        cls = ds.read(1)
    # no confidence file when not every map has one
    assert not confidence_path(res.cells[0]).exists() and res.confidence == []
    assert cls[60, 0] == 3 and cls[60, 1] == 4  # latest wins where they overlap


# -- bad input ------------------------------------------------------------------------


def test_maps_of_different_tasks(tmp_path, cli):
    d = tmp_path / "out"
    d.mkdir()
    small_map(d / "s1_lulc.tif")
    water = np.array([[1, 1, 0, 0]] * 4)
    write_map(
        d / "s1_water.tif",
        water,
        np.full((4, 4), 90),
        transform=px(139, 35.5),
        date="2022-01-01",
        task="water",
    )
    before = sorted(p.name for p in d.iterdir())
    code, _, err = cli("mosaic", d, "-o", tmp_path / "mos")
    lines = [ln for ln in err.splitlines() if ln.startswith("alosmap: error:")]
    assert code == 1 and len(lines) == 1, err
    assert "lulc: s1_lulc.tif" in lines[0] and "water: s1_water.tif" in lines[0]
    assert "--task" in lines[0]
    assert not (tmp_path / "mos").exists()
    assert sorted(p.name for p in d.iterdir()) == before  # nothing lost
    # one task at a time works, water cells are named WATER_...
    with pytest.raises(MosaicInputError, match="no water maps"):
        find_maps([d / "s1_lulc.tif"], task="water")
    res = mosaic_maps([d], tmp_path / "mos", task="water", pixels_per_degree=PPD)
    assert [p.name for p in res.cells] == ["WATER_N35E139.tif"]
    assert res.vrt.name == "water.vrt"
    with rasterio.open(res.cells[0]) as ds:
        assert ds.nodata == 255
        assert ds.read(1)[60, :4].tolist() == [1, 1, 0, 0]
        assert ds.read(1)[0, 0] == 255
    assert class_names_from_file(res.cells[0]) == {0: "Not water", 1: "Water"}


def test_existing_outputs_and_non_maps(tmp_path, cli):
    d = tmp_path / "out"
    d.mkdir()
    small_map(d / "s_lulc.tif")
    # a GeoTIFF that is not an alosmap map sits in the directory: left out
    write_raster(
        d / "other.tif",
        np.ones((2, 2), np.uint8),
        crs="EPSG:4326",
        transform=px(139, 35.5),
        nodata=None,
    )
    res = mosaic_maps([d], tmp_path / "mos", pixels_per_degree=PPD)
    assert [m.path.name for m in res.maps] == ["s_lulc.tif"]
    stamp = res.cells[0].stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        mosaic_maps([d], tmp_path / "mos", pixels_per_degree=PPD)
    assert res.cells[0].stat().st_mtime_ns == stamp
    # a named file must be a map; an empty directory has none
    with pytest.raises(MosaicInputError, match="not an alosmap map"):
        find_maps([d / "other.tif"])
    (tmp_path / "empty").mkdir()
    code, _, err = cli("mosaic", tmp_path / "empty", "-o", tmp_path / "m2")
    assert code == 1 and "no alosmap maps" in err
    assert cli("mosaic", tmp_path / "missing", "-o", tmp_path / "m3")[0] == 1
    assert cli("mosaic", d, "-o", tmp_path / "m4", "--merge", "best")[0] == 2


# -- real scenes: the JAXA grid, mixed CRSs -----------------------------------------


def reference(maps, transform, shape, margin=0.002, step=1):
    """Exact nearest neighbour of every map at the centres of a lat/lon grid.

    Pixel centres go through PROJ point by point (no GDAL warper) to each map's
    pixel coordinates; the maps (oldest first) are merged by highest confidence,
    ties to the later one. Also returns, per map, its ``[2, H, W]`` values, and a
    mask of the pixels within ``margin`` px of some map pixel's edge, where GDAL's
    coordinate approximation (1/1000 px) may pick the neighbour. With ``step`` > 1
    only every ``step``-th row and column is computed (compare with
    ``array[::step, ::step]``).
    """
    from rasterio.warp import transform as transform_points

    rows, cols = np.mgrid[0 : shape[0] : step, 0 : shape[1] : step]
    shape = rows.shape
    lon = transform.c + (cols + 0.5) * transform.a
    lat = transform.f + (rows + 0.5) * transform.e
    cls = np.zeros(shape, np.uint8)
    conf = np.full(shape, 255, np.uint8)  # the confidence files' no data
    edge = np.zeros(shape, bool)
    per_map = []
    for path in maps:
        src = read_both(path)
        with rasterio.open(path) as ds:
            st, crs = ds.transform, ds.crs
        x, y = transform_points("EPSG:4326", crs, lon.ravel(), lat.ravel())
        fc = ((np.asarray(x) - st.c) / st.a).reshape(shape)
        fr = ((np.asarray(y) - st.f) / st.e).reshape(shape)
        ci, ri = np.floor(fc).astype(int), np.floor(fr).astype(int)
        inside = (ci >= 0) & (ci < src.shape[2]) & (ri >= 0) & (ri < src.shape[1])
        vals = np.zeros((2, *shape), np.uint8)
        vals[:, inside] = src[:, ri[inside], ci[inside]]
        edge |= inside & (
            (np.abs(fc - np.round(fc)) < margin) | (np.abs(fr - np.round(fr)) < margin)
        )
        valid = vals[0] != 0
        take = valid & ((cls == 0) | (vals[1] >= conf))
        cls[take], conf[take] = vals[0][take], vals[1][take]
        per_map.append(vals)
    return cls, conf, per_map, edge


@pytest.fixture(scope="module")
def sample_maps(tmp_path_factory):
    """The three sample scenes mapped by a tiny model with varied output.

    An untrained tiny model predicts one class with one confidence everywhere;
    scaling its classifier weights makes classes and confidences follow the input
    (confidence 17-32 %, five classes), so the merge rule has something to decide.
    """
    import torch

    from alosmap.models import build_model
    from alosmap.spec import Radiometry, save_model

    tmp = tmp_path_factory.mktemp("sample")
    spec = default_spec(
        "lulc",
        get_preset("tiny", img_size=256),
        radiometry=Radiometry(mean_db=-12.0, std_db=7.0),
        name="tiny-varied-test",
    )
    torch.manual_seed(1)
    model = build_model(spec.arch).eval()
    with torch.no_grad():
        model.head.conv_seg.weight.mul_(50.0)
    path = save_model(model, spec, tmp / "varied.safetensors")
    res = run_batch(
        SAMPLE_SCENES, tmp / "maps", model=path, overlap=0, stac=False, threads=2
    )
    assert len(res.done) == 3 and not res.failed
    return tmp / "maps"


def test_sample_scenes_on_the_jaxa_grid(sample_maps, tmp_path, cli):
    mos = tmp_path / "mosaic"
    code, out, err = cli("-q", "mosaic", sample_maps, "-o", mos)
    assert code == 0, err
    cell = mos / "LC_N35E139.tif"
    assert out.split() == [
        str(cell),
        str(mos / "lulc.vrt"),
        str(mos / "LC_N35E139_confidence.tif"),
        str(mos / "lulc_confidence.vrt"),
    ]
    for f in ("LC_N35E139.qml", "lulc.qml", "LC_N35E139_confidence.qml"):
        assert (mos / f).is_file()
    maps = map_files(sample_maps)  # file names sort by date here
    # the maps' area, with a margin: rows 7000-9199, columns 4000-7999
    win = rasterio.windows.Window(4000, 7000, 4000, 2200)
    with rasterio.open(JAXA_TILE) as jaxa, rasterio.open(cell) as ds:
        # exactly on JAXA's grid: same CRS, origin, pixel size and size
        assert ds.crs == jaxa.crs and ds.transform == jaxa.transform
        assert ds.shape == jaxa.shape == (12000, 12000)
        assert ds.transform.a == 1 / 12000
        assert (ds.transform.c, ds.transform.f) == (139, 36)
        assert ds.descriptions == ("class",)
        assert json.loads(ds.tags()["SOURCE_MAPS"]) == [p.name for p in maps]
        assert ds.colormap(1)[5][:3] == (20, 120, 50)
        cls = ds.read(1, window=win)
        total_valid = sum(
            int(np.count_nonzero(ds.read(1, window=w))) for _, w in ds.block_windows(1)
        )
        with rasterio.open(mos / "lulc.vrt") as vrt:
            assert vrt.transform == ds.transform and vrt.count == 1
            assert (vrt.read(1, window=win) == cls).all()
            assert [i for i, c in vrt.colormap(1).items() if c[3]] == list(range(1, 10))
    with rasterio.open(confidence_path(cell)) as ds:
        assert ds.nodata == 255 and ds.descriptions == ("confidence",)
        conf = ds.read(1, window=win)
    with rasterio.open(mos / "lulc_confidence.vrt") as vrt:
        assert (vrt.read(1, window=win) == conf).all()
    for f in (cell, confidence_path(cell)):
        ok, errors, warns = cog_validate(f, quiet=True)
        assert ok and not warns, errors + warns
    assert total_valid == np.count_nonzero(cls)  # nothing outside the maps' area

    # every 2nd row and column against an exact nearest-neighbour reference
    step = 2
    ref_cls, ref_conf, per_map, edge = reference(
        maps,
        cell_transform(35, 139) * Affine.translation(4000, 7000),
        cls.shape,
        step=step,
    )
    cls, conf = cls[::step, ::step], conf[::step, ::step]
    assert edge.mean() < 0.01
    sure = ~edge
    assert (cls[sure] == ref_cls[sure]).all() and (conf[sure] == ref_conf[sure]).all()
    # scenes 1 and 2 overlap (about 70 %), and there the rule decides: the older
    # map wins where it is more confident, the later one where it is at least as
    # confident
    old, new, third = per_map
    both = sure & (old[0] != 0) & (new[0] != 0) & (third[0] == 0)
    assert both.sum() > 100_000
    old_wins = both & (old[1] > new[1])
    new_wins = both & (old[1] <= new[1])
    assert old_wins.sum() > 10_000 and new_wins.sum() > 10_000
    assert (cls[old_wins] == old[0][old_wins]).all()
    assert (conf[old_wins] == old[1][old_wins]).all()
    assert (cls[new_wins] == new[0][new_wins]).all()
    assert (conf[new_wins] == new[1][new_wins]).all()
    assert (cls[old_wins] != new[0][old_wins]).any()  # not simply "latest"


def test_mixed_crs_scenes_across_a_cell_edge(tmp_path, tiny_lulc_model):
    from alosmap.synthetic import generate_scene

    scenes = [
        generate_scene(
            tmp_path / "scenes",
            seed=seed,
            width=320,
            height=320,
            center_lon=lon,
            center_lat=35.3,
            date=date,
            write_label_tiles=False,
        ).path
        for seed, lon, date in ((1, 137.992, "2022-09-12"), (2, 138.008, "2022-10-10"))
    ]
    crss = set()
    for s in scenes:
        with rasterio.open(s) as ds:
            crss.add(ds.crs.to_epsg())
    assert crss == {32653, 32654}  # UTM zones 53 and 54
    res = run_batch(scenes, tmp_path / "maps", model=tiny_lulc_model, stac=False)
    assert len(res.done) == 2
    ppd = 1200
    mos = mosaic_maps([tmp_path / "maps"], tmp_path / "mos", pixels_per_degree=ppd)
    assert [p.name for p in mos.cells] == ["LC_N35E137.tif", "LC_N35E138.tif"]
    maps = map_files(tmp_path / "maps")
    for cell in mos.cells:
        lat, lon = parse_cell_name(cell.name)
        with rasterio.open(cell) as ds:
            assert ds.transform == cell_transform(lat, lon, ppd)
        got = read_both(cell)
        ref_cls, ref_conf, per_map, edge = reference(
            maps, cell_transform(lat, lon, ppd), (ppd, ppd)
        )
        sure = ~edge
        assert (got[0][sure] == ref_cls[sure]).all()
        assert (got[1][sure] == ref_conf[sure]).all()
        assert all((m[0] != 0).any() for m in per_map)  # both maps reach both cells
    with rasterio.open(mos.vrt) as vrt:
        assert vrt.shape == (ppd, 2 * ppd)
        assert vrt.transform == cell_transform(35, 137, ppd)
        west, east = vrt.read(
            1, window=rasterio.windows.Window(ppd - 50, 0, 100, ppd)
        ).T[[49, 50]]
    # both UTM maps reach the 138° meridian: data on both sides of it
    assert west.any() and east.any()


def write_old_two_band_map(path, classes, conf, *, transform, date):
    """A map as alosmap wrote it before confidence files: band 2 = confidence."""
    spec = default_spec("lulc", get_preset("tiny"), name="test-lulc")
    conf = np.where(np.asarray(classes) == 0, 0, conf)
    write_raster(
        path,
        np.stack([np.asarray(classes, np.uint8), np.asarray(conf, np.uint8)]),
        crs="EPSG:4326",
        transform=transform,
        nodata=0,
        tags={
            "ALOSMAP_TASK": "lulc",
            "ALOSMAP_PRODUCT": "map",
            "ALOSMAP_SPEC": spec.to_json(),
            "ALOSMAP_MODEL": "old",
            "ACQUISITION_DATE": date,
            "SOURCE_SCENE": f"{path.stem}_scene.tif",
        },
    )
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = ("class", "confidence")
    return path


def test_old_two_band_maps_still_mosaic_by_confidence(tmp_path, cli):
    """Maps of the previous release (band 2 = confidence) mix with new ones."""
    d = _overlapping_maps(tmp_path / "maps", write_old=write_old_two_band_map)
    maps = find_maps([d])
    assert [(m.path.name, m.confidence_band) for m in maps] == [
        ("z_old.tif", 2),
        ("a_new.tif", 1),
    ]
    assert maps[1].confidence == d / "a_new_confidence.tif"
    code, _, err = cli("-q", "mosaic", d, "-o", tmp_path / "mos")
    assert code == 0, err
    res = mosaic_maps([d], tmp_path / "mos2", pixels_per_degree=PPD, block_rows=7)
    cls, conf = read_both(res.cells[0])
    for r in range(61, 70):
        assert cls[r, :18].tolist() == EXPECTED["confidence"], r
    assert conf[65, :8].tolist() == [60] * 8 and conf[65, 8:18].tolist() == [50] * 10
    assert conf[0, 0] == 255 and cls[0, 0] == 0


def test_output_that_is_an_input_is_refused(tmp_path, cli):
    d = tmp_path / "maps"
    d.mkdir()
    small_map(d / "s_lulc.tif")
    # a cell name that is one of the input maps (same directory in and out)
    small_map(d / "LC_N35E139.tif", lon=139.01, date="2022-02-01")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    code, _, err = cli("mosaic", d, "-o", d, "--overwrite")
    assert code == 1 and "is the input" in err, err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_cells_and_vrt_carry_qgis_styles(tmp_path):
    import xml.etree.ElementTree as ET

    small_map(tmp_path / "a.tif")
    res = mosaic_maps([tmp_path / "a.tif"], tmp_path / "m", pixels_per_degree=PPD)
    for f in (res.cells[0], res.vrt):
        renderer = ET.parse(style_path(f)).getroot().find("pipe/rasterrenderer")
        assert renderer.get("type") == "paletted"
        values = [int(e.get("value")) for e in renderer.iter("paletteEntry")]
        assert values == list(range(1, 10))
    conf_style = ET.parse(style_path(res.confidence_vrt)).getroot()
    assert conf_style.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"
