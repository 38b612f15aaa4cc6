import numpy as np
import pytest

from alosmap import classes as C


def test_jaxa_legend_is_complete_and_ordered():
    assert [c.code for c in C.JAXA_CLASSES] == list(range(1, 15))
    names = {c.code: c.name for c in C.JAXA_CLASSES}
    assert names[1] == "Water bodies"
    assert names[12] == "Solar panel"
    assert names[13] == "Wetland"
    assert names[14] == "Greenhouse"


def test_lulc9_remap_merges_forests_and_paddy():
    codes = np.arange(0, 16, dtype=np.uint8)
    idx = C.jaxa_to_training(codes, "lulc")
    names = [c.name for c in C.LULC9_CLASSES]
    # no data and unknown codes are ignored
    assert idx[0] == C.IGNORE_INDEX and idx[15] == C.IGNORE_INDEX
    forest = names.index("Forest")
    for code in C.JAXA_FOREST_CODES:
        assert idx[code] == forest
    assert idx[3] == idx[4] == names.index("Cropland")
    for code, name in [
        (1, "Water"),
        (2, "Built-up"),
        (5, "Grassland"),
        (10, "Bare"),
        (12, "Solar panel"),
        (13, "Wetland"),
        (14, "Greenhouse"),
    ]:
        assert idx[code] == names.index(name)
    # every LULC-9 class is reachable
    assert set(idx[1:15].tolist()) == set(range(9))


def test_water_remap():
    codes = np.array([[0, 1, 2], [13, 3, 1]], dtype=np.uint8)
    out = C.jaxa_to_training(codes, "water")
    assert out.tolist() == [[255, 1, 0], [0, 0, 1]]


def test_lulc9_codes_on_disk():
    codes = np.array([0, 1, 6, 14], dtype=np.uint8)
    assert C.jaxa_to_lulc9_codes(codes).tolist() == [0, 1, 5, 9]


def test_colormap_and_unknown_task():
    cmap = C.colormap(C.LULC9_CLASSES)
    assert cmap[0] == (0, 0, 0, 0)
    assert cmap[1][3] == 255 and len(cmap) == 256
    with pytest.raises(ValueError, match="unknown task"):
        C.classes_for_task("forest")
