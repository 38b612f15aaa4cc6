"""The real ALOS-2 PALSAR-2 25 m mosaic tile in ../shared/data runs end to end.

Sibling discovery, no data 1 and the date range of the tile are in
``test_alos2_mosaic.py``.
"""

from datetime import date

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA

from alosmap.io.scene import Scene
from alosmap.predict.pipeline import predict_scene
from alosmap.spec import load_spec

TILE = SHARED_DATA / "alos2_mosaic_N23W161_2020" / "N23W161_20_sl_HH_F02DAR.tif"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not TILE.exists(), reason=f"real ALOS-2 tile absent: {TILE}"),
]


def test_real_tile_radiometry(tiny_lulc_model):
    spec = load_spec(tiny_lulc_model)
    with Scene(TILE, spec.radiometry) as sc:
        assert sc.units == "dn" and sc.nodata == 1
        db, valid = sc.read_strip(3900, 300)
        dn = sc.ds.read(1, window=((3900, 4200), (0, sc.info.width)))
    # nodata = 1 (not 0) is honoured, and DN -> σ0 = 20·log10(DN) − 83
    np.testing.assert_array_equal(valid, dn > 1)
    i = np.flatnonzero(valid)[0]
    expect = 20 * np.log10(dn.ravel()[i]) - 83.0
    assert db.ravel()[i] == pytest.approx(expect, abs=1e-4)
    # real L-band HH over the Pacific/Hawaii: plausible σ0 (median of -30..0 dB)
    assert -30 < np.median(db[valid]) < 0


def test_real_tile_end_to_end(tmp_path, tiny_lulc_model, caplog):
    out = tmp_path / "map.tif"
    res = predict_scene(TILE, out, model=tiny_lulc_model, batch_size=16)
    with rasterio.open(TILE) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.shape == src.shape
        dn = src.read(1)
        classes = dst.read(1)
        tags = dst.tags()
    np.testing.assert_array_equal(classes == 0, dn == 1)
    assert res.tiles_run < res.tiles_total / 2  # the empty rows were skipped
    # the tile's siblings: γ0 from its .xml, the dates from its date file
    assert res.backscatter == "gamma0" and tags["SOURCE_BACKSCATTER"] == "gamma0"
    assert res.date_range == (date(2020, 9, 9), date(2020, 9, 9))
    assert tags["ACQUISITION_DATE"] == "2020-09-09"
    assert tags["ACQUISITION_START_DATE"] == tags["ACQUISITION_END_DATE"]
    assert tags["ACQUISITION_END_DATE"] == "2020-09-09"
    # no mask file comes with this copy of the tile: nothing masked, and said so
    assert res.layover_pixels is None and "SOURCE_MASK" not in tags
    assert "no mask file N23W161_20_mask_F02DAR.tif" in caplog.text
    # the test model's spec says σ0 (the default)
    assert "trained on sigma0 backscatter but" in caplog.text
