import math

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
        C.get_task("forest")


# ---------------------------------------------------------------- legends
def test_presets_are_legends_with_the_historical_lookups():
    assert C.LULC.metric == "miou" and C.WATER.metric == "iou_water"
    flood = C.Legend.from_dict(
        {"name": "flood", "binary": True, "classes": [{"code": 0, "name": "Dry"},
                                      {"code": 1, "name": "Flooded area"}]}
    )  # fmt: skip
    assert flood.binary and flood.metric == "iou_flooded_area"
    assert C.get_task("lulc") is C.LULC
    # jaxa-lulc9 reads JAXA codes exactly as the paper's lookup did
    codes = np.arange(256, dtype=np.uint8)
    ref = np.array([C._JAXA_LUTS["lulc"][c] for c in codes])
    idx = C.LULC.labels_to_index(codes)
    known = idx != C.UNKNOWN_LABEL
    assert (idx[known] == ref[known]).all()
    assert (ref[~known] == C.IGNORE_INDEX).all() and not known[15:].any()
    # water-binary: 0/1 labels, 255 no label; jaxa-water: JAXA codes
    assert C.LABEL_PRESETS["water-binary"].labels_to_index(
        np.array([0, 1, 255, 2], np.uint8)
    ).tolist() == [0, 1, 255, 254]
    assert C.LABEL_PRESETS["jaxa-water"].labels_to_index(
        np.array([0, 1, 2, 14], np.uint8)
    ).tolist() == [255, 1, 0, 0]
    assert C.WATER_BINARY.same_outputs(C.WATER)


def test_labels_to_index_any_dtype_nan_and_file_nodata():
    lg = C.WATER_BINARY
    a = np.array([0.0, 1.0, np.nan, -1.0, 0.5, 7.0], dtype=np.float32)
    assert lg.labels_to_index(a).tolist() == [0, 1, 255, 254, 254, 254]
    assert lg.labels_to_index(a, nodata=-1.0).tolist() == [0, 1, 255, 255, 254, 254]
    big = np.array([1000, 0, -1], dtype=np.int16)
    assert lg.with_ignore([-1]).labels_to_index(big).tolist() == [254, 0, 255]


def _reference_index(lg: C.Legend, a: np.ndarray) -> list[int]:
    """Training indices of ``a``, one pixel at a time (the lookup's definition)."""
    table = {v: C.IGNORE_INDEX for v in lg.ignore} | lg.label_values()
    out = []
    for x in a.ravel().tolist():
        if not math.isfinite(x):
            out.append(C.IGNORE_INDEX)
        elif float(x).is_integer():
            out.append(table.get(int(x), C.UNKNOWN_LABEL))
        else:
            out.append(C.UNKNOWN_LABEL)
    return out


WIDE = C.Legend(
    "wide",
    "Values beyond a byte",
    (
        C.ClassInfo(1, "Low", (0, 0, 255), (-5, 3)),
        C.ClassInfo(2, "Mid", (0, 255, 0), (255, 256, 300)),
        C.ClassInfo(3, "High", (255, 0, 0), (70000, 2**40)),
    ),
    nodata=0,
    ignore=(-9999, 0, 1000),
)


@pytest.mark.parametrize(
    "legend", [C.LULC, C.WATER_BINARY, WIDE], ids=lambda lg: lg.name
)
@pytest.mark.parametrize(
    "dtype", ["int8", "int16", "uint16", "int32", "int64", "float32", "float64"]
)
def test_general_lookup_matches_a_per_pixel_reference(legend, dtype):
    dt = np.dtype(dtype)
    pool = [-9999, -300, -5, -1, 0, 1, 3, 7, 14, 254, 255, 256, 300, 1000, 70000]
    pool += [2**40, -(2**40)]
    if dt.kind == "f":
        pool += [0.5, -2.5, 300.25, np.nan, np.inf, -np.inf]
    if dt.kind in "iu":
        info = np.iinfo(dt)
        pool = [v for v in pool if info.min <= v <= info.max] + [info.min, info.max]
    rng = np.random.default_rng(0)
    a = np.array(pool, dtype=dt)[rng.integers(0, len(pool), (7, 60))]
    got = legend.labels_to_index(a)
    assert got.dtype == np.uint8 and got.shape == a.shape
    assert got.ravel().tolist() == _reference_index(legend, a)


def test_legend_file_yaml_list_form(tmp_path):
    p = tmp_path / "my-legend.yaml"
    p.write_text(
        "name: landcover3\n"
        "ignore: [-1, 99]\n"
        "classes:\n"
        "  - {name: Water, values: [1], code: 10, color: '#0000ff'}\n"
        "  - {name: Vegetation, values: [2, 3], code: 20, color: [0, 200, 0]}\n"
        "  - {name: Urban, values: [4]}\n",
        encoding="utf-8",
    )
    lg = C.load_legend(p)
    assert lg.name == "landcover3" and not lg.binary and lg.nodata == 0
    assert lg.codes == [10, 20, 4] and lg.names == ["Water", "Vegetation", "Urban"]
    assert lg.classes[0].color == (0, 0, 255)
    lab = np.array([1, 2, 3, 4, -1, 99, 5], dtype=np.int32)
    assert lg.labels_to_index(lab).tolist() == [0, 1, 1, 2, 255, 255, 254]
    assert C.Legend.from_dict(lg.to_dict()) == lg
    # map codes → index (for reading maps)
    assert lg.lut()[[10, 20, 4, 0, 7]].tolist() == [0, 1, 2, 255, 254]


def test_legend_file_json_mapping_form_and_defaults(tmp_path):
    p = tmp_path / "flood.json"
    p.write_text('{"binary": true, "classes": {"0": "Dry", "1": "Flooded"}}')
    lg = C.load_legend(p)
    assert lg.name == "flood" and lg.binary and lg.num_outputs == 1
    assert lg.codes == [0, 1] and lg.nodata == 255  # 0 is a class
    assert lg.positive.name == "Flooded"
    assert C.load_legend("water-binary") is C.WATER_BINARY


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("classes: [{name: A}]", "2 to"),
        ("classes: [{name: A, values: [1]}, {name: B, values: [1], code: 2}]", "both"),
        ("classes: [{name: A}, {name: a}]", "unique"),
        ("binary: true\nclasses: [{name: A}, {name: B}, {name: C}]", "exactly 2"),
        (
            "nodata: 1\nclasses: [{name: A, values: [1]}, {name: B, values: [2]}]",
            "no-data",
        ),
        ("classes: [{name: A, color: red}, {name: B}]", "colour"),
        ("classes: [{name: A, valus: [1]}, {name: B}]", "unknown key"),
        ("colours: []", "unknown key"),
        ("name: water\nclasses: [{name: A}, {name: B}]", "bundled water"),
        ("name: 3x\nclasses: [{name: A}, {name: B}]", "start with a letter"),
        ("classes: [{name: A, values: [0.5]}, {name: B}]", "integer"),
        ("ignore: [1]\nclasses: [{name: A, values: [1]}, {name: B}]", "ignored"),
        ("[1, 2]", "object"),
        ("classes: [unclosed", "YAML"),
    ],
)
def test_bad_legend_files_say_why(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(C.LegendError, match=match):
        C.load_legend(p)


def test_unknown_legend_name():
    with pytest.raises(C.LegendError, match="neither a preset"):
        C.load_legend("no-such-preset")
