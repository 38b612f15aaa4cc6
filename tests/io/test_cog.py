"""COG validation: files that break the layout rules are reported."""

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from alosmap.io.cog import validate_cog

W, H = 777, 513  # > 512 wide, so a COG needs overviews
CRS_UTM = CRS.from_epsg(32654)
TRANSFORM = Affine(10.0, 0.0, 350_000.0, 0.0, -10.0, 3_910_000.0)


def write_plain(path, **layout):
    """A GeoTIFF written by the GTiff driver (no overviews), ``layout`` options."""
    profile = dict(driver="GTiff", width=W, height=H, count=1, dtype="uint8")
    with rasterio.open(
        path, "w", **profile, crs=CRS_UTM, transform=TRANSFORM, **layout
    ) as ds:
        ds.write(np.ones((1, H, W), np.uint8))
    return path


def test_validate_cog_rejects_plain_geotiff(tmp_path):
    p = write_plain(tmp_path / "striped.tif")
    ok, messages = validate_cog(p)
    assert not ok and any("tiled" in m for m in messages)
    p2 = write_plain(tmp_path / "tiled.tif", tiled=True, blockxsize=256, blockysize=256)
    ok, messages = validate_cog(p2)
    assert not ok and any("overviews" in m for m in messages)
    ok, messages = validate_cog(tmp_path / "missing.tif")
    assert not ok
