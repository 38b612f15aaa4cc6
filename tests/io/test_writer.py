import itertools
import json
import os
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import dead_pid
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rio_cogeo.cogeo import cog_validate

from alosmap._version import __version__
from alosmap.arch import get_preset
from alosmap.classes import LULC9_CLASSES, LULC_NODATA, WATER_NODATA, colormap
from alosmap.errors import AlosmapError, OutputExistsError
from alosmap.io.maps import class_names_from_file, sidecar_path
from alosmap.io.style import style_path
from alosmap.io.writer import (
    CONFIDENCE_NODATA,
    PROBABILITY_NODATA,
    MapWriter,
    OutputPathError,
    confidence_path,
    encode_probabilities,
    probabilities_path,
)
from alosmap.spec import default_spec

W, H = 777, 513  # odd size, > 512 wide so that the COG gets one overview level
CRS_UTM = CRS.from_epsg(32654)
TRANSFORM = Affine(10.0, 0.0, 350_000.0, 0.0, -10.0, 3_910_000.0)


@pytest.fixture(scope="module")
def lulc_spec():
    return default_spec("lulc", get_preset("tiny"), name="test-lulc")


@pytest.fixture(scope="module")
def water_spec():
    return default_spec("water", get_preset("tiny"), name="test-water")


def lulc_grid(seed=0):
    """Codes 1-9 in 16-px blocks, no data (0) in the top-left triangle."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(1, 10, size=(H // 16 + 1, W // 16 + 1), dtype=np.uint8)
    codes = np.kron(blocks, np.ones((16, 16), np.uint8))[:H, :W]
    rr, cc = np.mgrid[:H, :W]
    codes[rr + cc < 200] = LULC_NODATA
    return codes


def lulc_probs(codes, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random((9, H, W), dtype=np.float32)
    p /= p.sum(0)
    return p


def write_strips(writer, codes, conf=None, probs=None, step=100, rows=None):
    for r0 in range(0, H, step) if rows is None else rows:
        r1 = min(r0 + step, H)
        writer.write_rows(
            r0,
            codes[r0:r1],
            None if conf is None else conf[r0:r1],
            None if probs is None else probs[:, r0:r1],
        )


def validate_cog(path):
    """rio-cogeo's verdict: ``(valid, errors + warnings)``."""
    ok, errors, warns = cog_validate(path, quiet=True)
    return ok, errors + warns


def listing(d):
    return sorted(os.listdir(d))


def make_writer(tmp_path, spec, name="map.tif", **kw):
    kw.setdefault("crs", CRS_UTM)
    kw.setdefault("transform", TRANSFORM)
    return MapWriter(tmp_path / name, width=W, height=H, spec=spec, **kw)


@pytest.fixture(scope="module")
def lulc_outputs(tmp_path_factory, lulc_spec):
    """A finished LULC map with confidence and probabilities (built once)."""
    d = tmp_path_factory.mktemp("lulc")
    codes = lulc_grid()
    p = lulc_probs(codes)
    conf = encode_probabilities(p.max(0))
    pu8 = encode_probabilities(p)
    with make_writer(
        d,
        lulc_spec,
        name="scene_lulc.tif",
        confidence=True,
        probabilities=True,
        tags={"EXTRA": "yes", "NUMBERS": [1, 2]},
        params={"tile": 256, "overlap": 64},
        source_scene="/data/IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif",
    ) as mw:
        # strips out of tile alignment, in increasing order
        write_strips(mw, codes, conf, pu8, step=97)
        path = mw.finalize()
    return d, path, codes, conf, pu8


def test_outputs_are_exactly_the_expected_files(lulc_outputs):
    d, path, *_ = lulc_outputs
    assert path == d / "scene_lulc.tif"
    assert listing(d) == [
        "scene_lulc.qml",
        "scene_lulc.tif",
        "scene_lulc.tif.aux.xml",
        "scene_lulc_confidence.qml",
        "scene_lulc_confidence.tif",
        "scene_lulc_probabilities.qml",
        "scene_lulc_probabilities.tif",
    ]


def test_georeferencing_and_values_round_trip(lulc_outputs):
    _, path, codes, conf, _ = lulc_outputs
    with rasterio.open(path) as ds:
        # a class map is one band (confidence goes to its own file)
        assert (ds.width, ds.height, ds.count) == (W, H, 1)
        assert ds.crs == CRS_UTM
        assert ds.transform == TRANSFORM
        assert ds.dtypes == ("uint8",)
        assert ds.nodata == LULC_NODATA
        assert ds.descriptions == ("class",)
        assert ds.colorinterp == (ColorInterp.palette,)
        np.testing.assert_array_equal(ds.read(1), codes)
        mask = ds.read_masks(1)
        np.testing.assert_array_equal(mask == 0, codes == LULC_NODATA)
    with rasterio.open(confidence_path(path)) as ds:
        assert (ds.count, ds.dtypes, ds.nodata) == (1, ("uint8",), CONFIDENCE_NODATA)
        assert ds.descriptions == ("confidence",)
        assert ds.units == ("%",)
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM
        assert ds.tags()["ALOSMAP_PRODUCT"] == "confidence"
        expected_conf = np.where(codes == LULC_NODATA, CONFIDENCE_NODATA, conf)
        np.testing.assert_array_equal(ds.read(1), expected_conf)
        np.testing.assert_array_equal(ds.read_masks(1), mask)
    assert validate_cog(confidence_path(path))[0]


def test_confidence_is_percent_and_never_nodata_where_valid(lulc_outputs):
    _, path, codes, *_ = lulc_outputs
    with rasterio.open(confidence_path(path)) as ds:
        c = ds.read(1)
    valid = codes != LULC_NODATA
    assert c[valid].min() >= 11  # max of 9 probabilities >= 1/9
    assert c[valid].max() <= 100


def test_colour_table_and_class_names(lulc_outputs, lulc_spec):
    _, path, *_ = lulc_outputs
    with rasterio.open(path) as ds:
        cmap = ds.colormap(1)
        tags = ds.tags()
        band_tags = ds.tags(1)
    expected = colormap(lulc_spec.classes)
    for c in LULC9_CLASSES:
        assert cmap[c.code] == expected[c.code]
    assert cmap[0][3] == 0  # no data transparent
    # the sidecar's RGBA table: only the legend's codes are opaque
    assert [i for i in range(256) if cmap[i][3]] == list(range(1, 10))
    names = {c.code: c.name for c in LULC9_CLASSES}
    assert {int(k): v for k, v in json.loads(tags["CLASS_NAMES"]).items()} == names
    assert band_tags["CLASS_5"] == "Forest"
    assert class_names_from_file(path) == names


def test_pam_sidecar_has_category_names(lulc_outputs):
    _, path, *_ = lulc_outputs
    root = ET.parse(sidecar_path(path)).getroot()
    cats = [c.text or "" for c in root.find("PAMRasterBand[@band='1']/CategoryNames")]
    assert cats == ["", *[c.name for c in LULC9_CLASSES]]
    entries = root.findall("PAMRasterBand[@band='1']/ColorTable/Entry")
    assert len(entries) == 256
    assert [i for i, e in enumerate(entries) if e.get("c4") != "0"] == list(
        range(1, 10)
    )


def test_qml_styles_list_exactly_the_legend(lulc_outputs):
    _, path, *_ = lulc_outputs
    root = ET.parse(style_path(path)).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label")) for e in entries] == [
        (c.code, c.name) for c in LULC9_CLASSES
    ]
    assert entries[4].get("color") == "#{:02x}{:02x}{:02x}".format(
        *LULC9_CLASSES[4].color
    )
    for extra in (confidence_path(path), probabilities_path(path)):
        r = ET.parse(style_path(extra)).getroot().find("pipe/rasterrenderer")
        assert r.get("type") == "singlebandpseudocolor"


def test_provenance_tags(lulc_outputs, lulc_spec):
    _, path, *_ = lulc_outputs
    for p in (path, probabilities_path(path)):
        with rasterio.open(p) as ds:
            tags = ds.tags()
        assert tags["ALOSMAP_VERSION"] == __version__
        assert tags["ALOSMAP_MODEL"] == "test-lulc"
        assert tags["ALOSMAP_TASK"] == "lulc"
        assert json.loads(tags["ALOSMAP_SPEC"]) == json.loads(lulc_spec.to_json())
        assert json.loads(tags["ALOSMAP_PARAMS"]) == {"tile": 256, "overlap": 64}
        assert tags["SOURCE_SCENE"] == "IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif"
        assert tags["EXTRA"] == "yes"
        assert json.loads(tags["NUMBERS"]) == [1, 2]
    with rasterio.open(probabilities_path(path)) as ds:
        assert ds.tags()["ALOSMAP_PRODUCT"] == "probabilities"


def test_is_valid_cog_with_nearest_overviews(lulc_outputs):
    _, path, codes, *_ = lulc_outputs
    ok, messages = validate_cog(path)
    assert ok, messages
    assert messages == []
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.compression.name.lower() == "deflate"
        assert ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) == [2]
        ovr = ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
        # nearest: overview pixels are values of the full-resolution pixels
        np.testing.assert_array_equal(ovr, codes[::2, ::2][: H // 2, : W // 2])


def test_percent_files_use_the_predictor_and_stay_lossless(lulc_outputs):
    """Confidence and probabilities: DEFLATE with the predictor, values kept."""
    _, path, _, conf, pu8 = lulc_outputs
    for p, expected in ((confidence_path(path), conf), (probabilities_path(path), pu8)):
        ok, messages = validate_cog(p)
        assert ok, messages
        with rasterio.open(p) as ds:
            assert ds.compression.name.lower() == "deflate"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
            data = ds.read()
            nodata = ds.nodata
        want = expected if expected.ndim == 3 else expected[None]
        keep = data != nodata
        np.testing.assert_array_equal(data[keep], want[keep])


def test_checkerboard_overview_never_averages(tmp_path, lulc_spec):
    rr, cc = np.mgrid[:H, :W]
    codes = np.where((rr + cc) % 2 == 0, 1, 3).astype(np.uint8)
    with make_writer(tmp_path, lulc_spec, confidence=True) as mw:
        conf = np.full((H, W), 60, np.uint8)
        write_strips(mw, codes, conf, step=H)
        path = mw.finalize()
    with rasterio.open(path) as ds:
        for factor in ds.overviews(1):
            ovr = ds.read(
                1, out_shape=(-(-ds.height // factor), -(-ds.width // factor))
            )
            assert set(np.unique(ovr)) <= {1, 3}


def test_probabilities_file_layout(lulc_outputs):
    _, path, codes, _, pu8 = lulc_outputs
    ppath = probabilities_path(path)
    assert ppath.name == "scene_lulc_probabilities.tif"
    ok, messages = validate_cog(ppath)
    assert ok, messages
    with rasterio.open(ppath) as ds:
        assert ds.count == 9
        assert ds.dtypes == ("uint8",) * 9
        assert ds.nodata == PROBABILITY_NODATA
        assert ds.descriptions == tuple(c.name for c in LULC9_CLASSES)
        assert ds.scales == (0.01,) * 9
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM
        assert ds.overviews(1) == [2]
        data = ds.read()
    nd = codes == LULC_NODATA
    assert (data[:, nd] == PROBABILITY_NODATA).all()
    np.testing.assert_array_equal(data[:, ~nd], pu8[:, ~nd])
    assert data[:, ~nd].max() <= 100


def test_probability_overviews_average(tmp_path, water_spec):
    codes = np.zeros((H, W), np.uint8)
    p = np.where(np.arange(W) % 2 == 0, 0, 100).astype(np.uint8)
    probs = np.broadcast_to(p, (1, H, W)).copy()
    conf = np.full((H, W), 100, np.uint8)
    with make_writer(tmp_path, water_spec, confidence=True, probabilities=True) as mw:
        write_strips(mw, codes, conf, probs, step=256)
        mw.finalize()
    with rasterio.open(probabilities_path(tmp_path / "map.tif")) as ds:
        assert ds.descriptions == ("Water",)
        ovr = ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
    assert set(np.unique(ovr[:, :-1])) == {50}


def test_water_map_encoding(tmp_path, water_spec):
    codes = np.zeros((H, W), np.uint8)
    codes[:, 300:400] = 1
    codes[:50] = WATER_NODATA
    conf = np.full((H, W), 90, np.uint8)
    conf[:50] = 17  # must be replaced with no data where the class is no data
    with make_writer(tmp_path, water_spec, confidence=True) as mw:
        write_strips(mw, codes, conf, step=200)
        path = mw.finalize()
    with rasterio.open(path) as ds:
        assert ds.nodata == WATER_NODATA
        assert ds.count == 1
        np.testing.assert_array_equal(ds.read(1), codes)
        assert ds.colormap(1)[1] == (0, 92, 230, 255)
        assert [i for i, c in ds.colormap(1).items() if c[3]] == [0, 1]
    with rasterio.open(confidence_path(path)) as ds:
        c = ds.read(1)
        assert (c[:50] == CONFIDENCE_NODATA).all() and (c[50:] == 90).all()
    assert class_names_from_file(path) == {0: "Not water", 1: "Water"}
    assert validate_cog(path)[0]


def test_rows_in_any_order(tmp_path, lulc_spec):
    codes = lulc_grid(3)
    with make_writer(tmp_path, lulc_spec) as mw:
        write_strips(
            mw, codes, step=60, rows=[480, 0, 240, 60, 420, 120, 360, 180, 300]
        )
        path = mw.finalize()
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), codes)


class _WriteLog:
    """A temporary dataset that records the row windows GDAL is asked to write."""

    def __init__(self, ds, log):
        self._ds, self._log = ds, log

    def write(self, array, *args, window, **kw):
        self._log.append((window.row_off, window.height))
        return self._ds.write(array, *args, window=window, **kw)

    def __getattr__(self, name):
        return getattr(self._ds, name)


def test_strips_reach_gdal_as_whole_rows_of_blocks(tmp_path, lulc_spec):
    """Any strips, any order: GDAL only ever gets whole rows of 512-row blocks.

    (A partly written block stays in GDAL's cache or, when the cache is full, is
    written, read back and compressed again for every strip.)
    """
    h = 1300  # block rows 0-512, 512-1024, 1024-1300 (the last one short)
    rng = np.random.default_rng(5)
    codes = rng.integers(1, 10, size=(h, W), dtype=np.uint8)
    conf = rng.integers(0, 101, size=(h, W), dtype=np.uint8)
    probs = rng.integers(0, 101, size=(9, h, W), dtype=np.uint8)
    cuts = [0, 1, 8, 200, 512, 1024, 1030, 1299, h]  # 512-1024: one whole block row
    strips = list(itertools.pairwise(cuts))
    rng.shuffle(strips)
    log: list[tuple[int, int]] = []
    mw = MapWriter(
        tmp_path / "map.tif",
        width=W,
        height=h,
        spec=lulc_spec,
        crs=CRS_UTM,
        transform=TRANSFORM,
        confidence=True,
        probabilities=True,
    )
    with mw:
        for out in mw._files.values():
            out.ds = _WriteLog(out.ds, log)
        for r0, r1 in strips:
            mw.write_rows(r0, codes[r0:r1], conf[r0:r1], probs[:, r0:r1])
        path = mw.finalize()
    assert log and all(r % 512 == 0 and (r + n) in (r + 512, h) for r, n in log)
    assert sorted(set(log)) == [(0, 512), (512, 512), (1024, h - 1024)]
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(1), codes)
    with rasterio.open(confidence_path(path)) as ds:
        np.testing.assert_array_equal(ds.read(1), conf)
    with rasterio.open(probabilities_path(path)) as ds:
        np.testing.assert_array_equal(ds.read(), probs)


def test_crs_none(tmp_path, lulc_spec):
    codes = lulc_grid(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        with make_writer(
            tmp_path, lulc_spec, crs=None, transform=Affine.identity()
        ) as mw:
            write_strips(mw, codes)
            path = mw.finalize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            assert ds.crs is None
            assert ds.transform == Affine.identity()
            np.testing.assert_array_equal(ds.read(1), codes)
    assert validate_cog(path)[0]


def test_missing_rows_raise_and_leave_nothing(tmp_path, lulc_spec):
    codes = lulc_grid()
    mw = make_writer(tmp_path, lulc_spec, probabilities=True)
    missing = r"rows 100-199, 300-512 were never written"
    with pytest.raises(AlosmapError, match=missing), mw:
        write_strips(mw, codes, probs=np.zeros((9, H, W), np.uint8), rows=[0, 200])
        assert len(listing(tmp_path)) == 2  # the two hidden temporaries
        mw.finalize()
    assert listing(tmp_path) == []


def test_exception_inside_with_leaves_nothing(tmp_path, lulc_spec):
    codes = lulc_grid()
    with (
        pytest.raises(KeyboardInterrupt),
        make_writer(tmp_path, lulc_spec, confidence=True, probabilities=True) as mw,
    ):
        write_strips(
            mw,
            codes,
            np.full((H, W), 50, np.uint8),
            np.zeros((9, H, W), np.uint8),
            rows=[0],
        )
        raise KeyboardInterrupt
    assert listing(tmp_path) == []
    mw.abort()  # idempotent
    with pytest.raises(AlosmapError, match="aborted"):
        mw.write_rows(100, codes[100:200])


def test_leaving_with_without_finalize_discards(tmp_path, lulc_spec):
    with make_writer(tmp_path, lulc_spec) as mw:
        write_strips(mw, lulc_grid())
    assert listing(tmp_path) == []


def test_abort_keeps_existing_output(tmp_path, lulc_spec):
    (tmp_path / "map.tif").write_bytes(b"old")
    mw = make_writer(tmp_path, lulc_spec, overwrite=True)
    write_strips(mw, lulc_grid())
    mw.abort()
    assert listing(tmp_path) == ["map.tif"]
    assert (tmp_path / "map.tif").read_bytes() == b"old"


def test_existing_output_raises_before_writing(tmp_path, lulc_spec):
    (tmp_path / "map.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        make_writer(tmp_path, lulc_spec)
    assert listing(tmp_path) == ["map.tif"]
    (tmp_path / "map.tif").unlink()
    (tmp_path / "map_probabilities.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=r"map_probabilities\.tif"):
        make_writer(tmp_path, lulc_spec, probabilities=True)
    assert listing(tmp_path) == ["map_probabilities.tif"]


def test_overwrite_replaces_outputs_and_stale_sidecars(tmp_path, lulc_spec):
    for name in ("map.tif", "map.tif.aux.xml", "map_probabilities.tif.aux.xml"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "map_probabilities.tif").write_bytes(b"old")
    codes = lulc_grid()
    with make_writer(tmp_path, lulc_spec, probabilities=True, overwrite=True) as mw:
        write_strips(mw, codes, probs=np.full((9, H, W), 11, np.uint8))
        mw.finalize()
    assert listing(tmp_path) == [
        "map.qml",
        "map.tif",
        "map.tif.aux.xml",
        "map_probabilities.qml",
        "map_probabilities.tif",
    ]
    with rasterio.open(tmp_path / "map.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), codes)
    assert class_names_from_file(tmp_path / "map.tif")[1] == "Water"


def test_missing_directory(tmp_path, lulc_spec):
    with pytest.raises(OutputPathError, match="does not exist"):
        make_writer(tmp_path / "nope", lulc_spec)


def test_unwritable_directory(tmp_path, lulc_spec):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        if os.access(d, os.W_OK):
            pytest.skip("running as root: chmod does not restrict writing")
        with pytest.raises(OutputPathError, match="not writable"):
            make_writer(d, lulc_spec)
    finally:
        d.chmod(0o700)


def test_unwritable_directory_message(tmp_path, lulc_spec, monkeypatch):
    # the same check where chmod cannot be used (root): os.access says no
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if p == tmp_path else real_access(p, mode)
    )
    with pytest.raises(OutputPathError, match="not writable"):
        make_writer(tmp_path, lulc_spec)
    assert listing(tmp_path) == []


def test_bad_suffix(tmp_path, lulc_spec):
    with pytest.raises(OutputPathError, match=r"\.tif"):
        make_writer(tmp_path, lulc_spec, name="map.png")


def test_write_rows_validation(tmp_path, lulc_spec):
    codes = lulc_grid()
    with make_writer(tmp_path, lulc_spec, confidence=True) as mw:
        conf = np.full((10, W), 50, np.uint8)
        with pytest.raises(ValueError, match="confidence=True"):
            mw.write_rows(0, codes[:10])
        with pytest.raises(ValueError, match="shape"):
            mw.write_rows(0, codes[:10, :-1], conf)
        with pytest.raises(ValueError, match="uint8"):
            mw.write_rows(0, codes[:10].astype(np.int32), conf)
        with pytest.raises(ValueError, match="outside"):
            mw.write_rows(H - 5, codes[:10], conf)
        with pytest.raises(ValueError, match="code 12"):
            mw.write_rows(0, np.full((10, W), 12, np.uint8), conf)
        with pytest.raises(ValueError, match="percent"):
            mw.write_rows(0, codes[:10], np.full((10, W), 101, np.uint8))
        with pytest.raises(ValueError, match="without it"):
            mw.write_rows(0, codes[:10], conf, np.zeros((9, 10, W), np.uint8))
        mw.write_rows(0, codes[:10], conf)
        with pytest.raises(ValueError, match="already written"):
            mw.write_rows(5, codes[5:15], conf)


def test_encode_probabilities():
    p = np.array([0.0, 0.004, 0.005, 0.125, 0.5, 0.994, 0.995, 1.0, np.nan, 1.2])
    np.testing.assert_array_equal(
        encode_probabilities(p), [0, 0, 1, 13, 50, 99, 100, 100, 255, 100]
    )
    assert encode_probabilities(np.zeros((2, 3, 4))).dtype == np.uint8


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, lulc_spec):
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"scene")
    os.link(scene, tmp_path / "link.tif")
    for name, kw in (
        ("scene.tif", {}),
        ("link.tif", {}),
        ("scene.tif", {"confidence": True}),
    ):
        with pytest.raises(OutputPathError, match="is the input"):
            make_writer(
                tmp_path, lulc_spec, name=name, overwrite=True, inputs=[scene], **kw
            )
    (tmp_path / "m_confidence.tif").symlink_to(scene)
    with pytest.raises(OutputPathError, match="is the input"):
        make_writer(
            tmp_path,
            lulc_spec,
            name="m.tif",
            confidence=True,
            overwrite=True,
            inputs=[scene],
        )
    assert scene.read_bytes() == b"scene"


def test_leftovers_of_a_killed_run_are_removed_on_open(tmp_path, lulc_spec):
    pid = dead_pid()
    stale = [
        tmp_path / f".map.tif.tmp-{pid}-abcd1234",
        tmp_path / f".map.tif.cog-{pid}-abcd1234.ovr.tmp",
        tmp_path / f".map_confidence.tif.tmp-{pid}-00ff00ff",
        tmp_path / f".map.qml.tmp-{pid}-00ff00ffxyz.tmp",
    ]
    live = tmp_path / f".map.tif.tmp-{os.getpid()}-live0000"
    for f in [*stale, live]:
        f.write_bytes(b"x")
    with make_writer(tmp_path, lulc_spec, confidence=True) as mw:
        assert not any(f.exists() for f in stale)
        assert live.exists()  # a live process's temporary stays
        write_strips(mw, lulc_grid(), np.full((H, W), 50, np.uint8))
        mw.finalize()


def test_a_users_legend_decides_codes_no_data_and_probability_bands(tmp_path):
    """A model's own legend: classes in model order 30, 10, 20 (not code order)."""
    from alosmap.classes import ClassInfo, Legend

    legend = Legend(
        "landcover3",
        "Land cover",
        (
            ClassInfo(30, "Settlement", (200, 50, 50), (3,)),
            ClassInfo(10, "Open water", (31, 95, 191), (1,)),
            ClassInfo(20, "Vegetation", (40, 160, 60), (2,)),
        ),
        nodata=7,
    )
    spec = default_spec(legend, get_preset("tiny"), name="test-own")
    codes = np.array([[10, 20, 30, 7]] * 4, np.uint8)
    prob = np.full((3, 4, 4), 30, np.uint8)
    out = tmp_path / "m.tif"
    with MapWriter(
        out,
        width=4,
        height=4,
        crs=CRS_UTM,
        transform=TRANSFORM,
        spec=spec,
        probabilities=True,
    ) as w:
        with pytest.raises(
            ValueError, match=r"code 1 is not a class .*\[7, 10, 20, 30\]"
        ):
            w.write_rows(0, np.ones((4, 4), np.uint8))
        w.write_rows(0, codes, probabilities=prob)
        w.finalize()
    with rasterio.open(out) as ds:
        assert ds.nodata == 7 and ds.read(1).tolist() == codes.tolist()
        assert ds.colormap(1)[30] == (200, 50, 50, 255)
    with rasterio.open(probabilities_path(out)) as ds:
        # one band per model output, in the model's order
        assert ds.descriptions == ("Settlement", "Open water", "Vegetation")
        assert ds.read(1)[0, 3] == PROBABILITY_NODATA  # where the map is no data
    assert class_names_from_file(out) == {
        10: "Open water",
        20: "Vegetation",
        30: "Settlement",
    }
    labels = [e.get("label") for e in ET.parse(style_path(out)).iter("paletteEntry")]
    assert labels == ["Open water", "Vegetation", "Settlement"]


def test_disk_full_while_building_the_cogs_leaves_nothing(mount_tmpfs, lulc_spec):
    """Rows written, then no room left for the COGs: "disk full", no file left."""
    import shutil

    disk = mount_tmpfs("4m")
    codes = lulc_grid()
    p = lulc_probs(codes)
    mw = make_writer(disk, lulc_spec, confidence=True, probabilities=True)
    with mw:
        write_strips(mw, codes, encode_probabilities(p.max(0)), encode_probabilities(p))
        # the rows are in the temporary files; leave too little for the COGs
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 40_000))
        with pytest.raises(OutputPathError, match="disk full"):
            mw.finalize()
    assert listing(disk) == ["filler"]


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (7, 1001), (300, 301)])
def test_count_bytes_is_bincount(monkeypatch, shape):
    from alosmap.io import writer

    monkeypatch.setattr(writer, "_COUNT_CHUNK", 6)  # many chunks, odd remainders
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, size=shape).astype(np.uint8)
    want = np.bincount(a.reshape(-1), minlength=256)
    np.testing.assert_array_equal(writer.count_bytes(a), want)
    if a.ndim == 2 and a.shape[1] > 2:  # a view that is not contiguous
        v = a[:, 1:-1]
        want = np.bincount(v.reshape(-1), minlength=256)
        np.testing.assert_array_equal(writer.count_bytes(v), want)
