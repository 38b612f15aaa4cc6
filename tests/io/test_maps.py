"""Reading class maps back: class names from tags or the PAM sidecar."""

import numpy as np
from affine import Affine
from conftest import LANDCOVER3, write_map, write_raster
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


def _custom_map(path, codes, legend, *, spec_tag=True):
    """A map of a model with ``legend`` (the real writer), or only its task tag."""
    from alosmap.arch import get_preset
    from alosmap.spec import default_spec

    if spec_tag:
        spec = default_spec(legend, get_preset("tiny"), name="test-own-legend")
        return write_map(path, codes, spec, crs=CRS_UTM, transform=TRANSFORM)
    return write_raster(
        path,
        codes,
        crs=CRS_UTM,
        transform=TRANSFORM,
        nodata=legend.nodata,
        tags={"ALOSMAP_TASK": legend.name},
    )


def test_a_maps_legend_comes_from_its_spec(tmp_path):
    """Maps of a model with its own legend are read with that legend."""
    import pytest

    from alosmap.errors import InputRasterError
    from alosmap.io.maps import legend_of_file, open_map

    legend = LANDCOVER3
    codes = np.array([[10, 20, 30, 0], [30, 30, 20, 10]], np.uint8)
    m = _custom_map(tmp_path / "m.tif", codes, legend)
    assert legend_of_file(m) == legend
    info = open_map(m)
    assert info.legend == legend and not info.labels
    assert info.classify(codes).tolist() == [[0, 1, 2, 255], [2, 2, 1, 0]]
    # stats/vectorize may name the legends of untagged files; a tagged map decides
    assert open_map(m, allowed=("lulc", "water", "jaxa")).legend == legend
    with pytest.raises(InputRasterError, match=r"is a landcover3 map .* lulc"):
        open_map(m, "lulc")
    with pytest.raises(InputRasterError, match=r"values \[40\] outside"):
        info.classify(np.array([[40]], np.uint8))
    # a task tag of an unknown legend without a spec cannot be read
    bare = _custom_map(tmp_path / "bare.tif", codes, legend, spec_tag=False)
    with pytest.raises(InputRasterError, match="ALOSMAP_TASK='landcover3'"):
        open_map(bare)


def test_named_legends_and_label_legends(tmp_path):
    """``LEGENDS`` names map codes; a Legend given with labels=True reads labels."""
    import pytest

    from alosmap.classes import JAXA, LULC, WATER, WATER_BINARY
    from alosmap.errors import InputRasterError
    from alosmap.io.maps import LEGENDS, legend_text, open_map

    assert LEGENDS == {"lulc": LULC, "water": WATER, "jaxa": JAXA}
    assert legend_text(LULC) == "LULC-9 (codes 1-9, 0 = no data)"
    assert legend_text(WATER) == "water (codes 0, 1, 255 = no data)"
    labels = np.array([[0, 1, 255, 1]], np.uint8)
    p = write_raster(
        tmp_path / "l.tif", labels, crs=CRS_UTM, transform=TRANSFORM, nodata=None
    )
    info = open_map(p, WATER_BINARY, labels=True, role="reference")
    assert info.labels and info.classify(labels).tolist() == [[0, 1, 255, 1]]
    as_jaxa = open_map(p, "jaxa", allowed=("jaxa",))
    assert as_jaxa.classify(labels[:, :2]).tolist() == [[255, 0]]  # 0 = no data
    with pytest.raises(InputRasterError, match=r"\[255\] outside the JAXA"):
        as_jaxa.classify(labels)
    # a label raster whose no-data value is a class's label value is refused
    q = write_raster(
        tmp_path / "q.tif", labels, crs=CRS_UTM, transform=TRANSFORM, nodata=0
    )
    with pytest.raises(InputRasterError, match="label value of 'Not water'"):
        open_map(q, WATER_BINARY, labels=True)
