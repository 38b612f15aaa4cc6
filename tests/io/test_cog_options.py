"""Creation options of the map COGs: checked against GDAL's list, used by MapWriter."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from alosmap.arch import get_preset
from alosmap.io.cog_options import (
    CreationOptionError,
    creation_options,
    current_creation_options,
    driver_options,
    parse_creation_options,
)
from alosmap.io.writer import MapWriter, cog_build_options
from alosmap.spec import default_spec


@pytest.fixture(scope="module")
def spec():
    return default_spec("lulc", get_preset("tiny"), name="test-lulc")


def _write(path, spec, **kw):
    codes = np.tile(np.arange(1, 10, dtype=np.uint8), (300, 70))[:, :600]
    conf = np.full(codes.shape, 80, np.uint8)
    with MapWriter(
        path,
        width=600,
        height=300,
        crs=CRS.from_epsg(32654),
        transform=Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0),
        spec=spec,
        confidence=True,
        **kw,
    ) as w:
        w.write_rows(0, codes, confidence=conf)
        w.finalize()
    return path


def test_gdal_list_is_read_from_rasterio_gdal():
    specs = driver_options("COG")
    assert specs is not None
    assert {"COMPRESS", "LEVEL", "BLOCKSIZE", "PREDICTOR"} <= set(specs)
    assert {"DEFLATE", "LZW"} <= specs["COMPRESS"].values
    assert specs["BLOCKSIZE"].type == "int" and specs["BLOCKSIZE"].min == 128


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (["COMPRESS=BROTLI"], "not one of"),
        (["LEVEL=23", "COMPRESS=ZSTD"], "ZSTD levels are 1-22"),
        (["COMPRESS=LZW", "LEVEL=3"], "takes no level"),
        (["LEVEL=1", "level=2"], "given twice"),
        (["OVERVIEW_RESAMPLING=AVERAGE"], "set by alosmap"),
        (["SPARSE_OK=maybe"], "YES or NO"),
        (["=1"], "KEY=VALUE"),
    ],
)
def test_bad_options_say_what_is_wrong(items, words):
    with pytest.raises(CreationOptionError, match=words):
        parse_creation_options(items)


def test_writer_applies_options_to_every_file(tmp_path, spec):
    out = _write(tmp_path / "m.tif", spec, creation_options={"COMPRESS": "LZW"})
    for path in (out, tmp_path / "m_confidence.tif"):
        with rasterio.open(path) as ds:
            assert ds.compression.name.upper() == "LZW"
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    with rasterio.open(out) as ds:  # the codes survive
        assert set(np.unique(ds.read(1))) == set(range(1, 10))


def test_block_sets_options_of_writers_opened_in_it(tmp_path, spec):
    assert current_creation_options() == {}
    with creation_options(["BLOCKSIZE=256"]):
        with creation_options(["COMPRESS=ZSTD"]):
            assert current_creation_options() == {
                "BLOCKSIZE": "256",
                "COMPRESS": "ZSTD",
            }
            out = _write(tmp_path / "a.tif", spec)
        assert current_creation_options() == {"BLOCKSIZE": "256"}
    assert current_creation_options() == {}
    with rasterio.open(out) as ds:
        assert ds.compression.name.upper() == "ZSTD" and ds.block_shapes[0] == (
            256,
            256,
        )
    with rasterio.open(_write(tmp_path / "b.tif", spec)) as ds:  # defaults again
        assert ds.compression.name.upper() == "DEFLATE"
        assert ds.block_shapes[0] == (512, 512)


def test_level_is_deflates_unless_another_codec():
    assert cog_build_options(6, False, "NEAREST")["LEVEL"] == 6
    assert "LEVEL" not in cog_build_options(6, False, "NEAREST", {"COMPRESS": "ZSTD"})
    zstd9 = cog_build_options(6, False, "NEAREST", {"COMPRESS": "ZSTD", "LEVEL": "9"})
    assert zstd9["LEVEL"] == "9" and zstd9["OVERVIEW_RESAMPLING"] == "NEAREST"
