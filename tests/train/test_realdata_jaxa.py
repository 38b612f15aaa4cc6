"""The real JAXA HRLULC v23.12 tiles in ../shared/data read with our class table."""

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from alosmap import classes as C

DATA = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "jaxa_hrlulc_v2312"
)
TILES = sorted(DATA.glob("LC_N*E*.tif")) if DATA.is_dir() else []

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not TILES, reason=f"real JAXA tiles not found in {DATA}"),
]


@pytest.mark.parametrize("tile", TILES, ids=lambda p: p.name)
def test_real_tile_grid_and_codes(tile):
    m = re.fullmatch(r"LC_N(\d{2})E(\d{3})\.tif", tile.name)
    assert m, tile.name
    lat, lon = int(m[1]), int(m[2])
    with rasterio.open(tile) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8"
        assert ds.width == ds.height == 12000
        assert ds.crs.to_epsg() == 4326
        assert ds.nodata == C.JAXA_NODATA
        t = ds.transform
        assert t.a == pytest.approx(1 / 12000, rel=1e-9)
        assert t.e == pytest.approx(-1 / 12000, rel=1e-9)
        # named by the south-west corner
        assert ds.bounds.left == pytest.approx(lon, abs=1e-9)
        assert ds.bounds.bottom == pytest.approx(lat, abs=1e-9)
        # read a block (never the whole tile) from the middle
        block = ds.read(1, window=Window(0, 6000, 12000, 500))
    values = set(np.unique(block).tolist())
    assert values <= set(range(0, 15)), values - set(range(15))
    lulc = C.jaxa_to_training(block, "lulc")
    water = C.jaxa_to_training(block, "water")
    valid = block != C.JAXA_NODATA
    assert np.all((lulc != C.IGNORE_INDEX) == valid)
    assert np.all((water == 1) == (block == 1))
    assert set(np.unique(lulc[valid]).tolist()) <= set(range(9))


def test_real_national_500m_map_codes():
    path = DATA / "JAXA_HRLULC_Japan_v23.12_500m.tif"
    if not path.exists():
        pytest.skip("500 m national map absent")
    with rasterio.open(path) as ds:
        arr = ds.read(1)
    counts = np.bincount(arr.ravel(), minlength=256)
    assert counts[15:].sum() == 0
    land = counts[2:15].sum()
    forest = counts[list(C.JAXA_FOREST_CODES)].sum() / land
    # data/README.md: forest is ~71 % of Japan's land
    assert 0.6 < forest < 0.8
    # every one of the 14 classes occurs somewhere in Japan
    assert all(counts[c] > 0 for c in range(1, 15))
