"""Reading class maps back: class names from tags or the PAM sidecar."""

import numpy as np
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS

from alosmap.io.maps import class_names_from_file, sidecar_path

CRS_UTM = CRS.from_epsg(32654)
TRANSFORM = Affine(10.0, 0.0, 350_000.0, 0.0, -10.0, 3_910_000.0)


def test_class_names_fall_back_to_sidecar(tmp_path):
    p = tmp_path / "plain.tif"
    write_raster(
        p, np.zeros((4, 4), np.uint8), crs=CRS_UTM, transform=TRANSFORM, nodata=None
    )
    assert sidecar_path(p) == tmp_path / "plain.tif.aux.xml"
    sidecar_path(p).write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames>'
        "<Category></Category><Category>A &amp; B</Category>"
        "</CategoryNames></PAMRasterBand></PAMDataset>"
    )
    assert class_names_from_file(p) == {1: "A & B"}
