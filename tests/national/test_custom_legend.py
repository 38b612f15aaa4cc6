"""Custom legends end to end (issue 14): everything after the model uses its legend.

Two tiny untrained models (conftest's tiny architecture, 128 px tiles) carry users'
legends, read from legend files: ``landcover3`` (codes 10/20/30, names, colours,
0 = no data) and a binary ``flood`` legend (0 dry / 1 flooded, 255 = no data;
label value -1 = no label). Their classifier is scaled and its bias centred on the
test scene, so that more than one class shows up. ``alosmap predict`` maps a small
synthetic scene with each; the maps, their GDAL colour table and categories
(``gdalinfo -json``, else rasterio and the PAM sidecar), QGIS style, ``alosmap
info``, ``stats``, ``vectorize``, ``evaluate`` (labels in the user's values),
``mosaic`` and ``batch`` (+ STAC) are then checked against the legends. (QGIS
itself opens these maps in tests/io/test_qgis.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import tiny_model, write_map, write_raster

from alosmap.classes import Legend, load_legend

LANDCOVER3 = """\
name: landcover3
title: Land cover, 3 classes
nodata: 0
ignore: [-1]
classes:
  - {name: Open water, values: [1], code: 10, color: "#1f5fbf"}
  - {name: Vegetation, values: [2], code: 20, color: [40, 160, 60]}
  - {name: Settlement, values: [3], code: 30, color: "#c83232"}
"""
FLOOD = """\
name: flood
binary: true
nodata: 255
ignore: [-1]
classes:
  - {name: Dry, values: [0], code: 0, color: "#ebebe1"}
  - {name: Flooded, values: [1], code: 1, color: [0, 92, 230]}
"""
LEGENDS = {"landcover3": LANDCOVER3, "flood": FLOOD}
TILE = 128


def alosmap(*args: object) -> int:
    """Run ``alosmap ARGS…`` through the real entry point; return the exit code."""
    from alosmap.cli.main import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["alosmap", *map(str, args)])
        try:
            run()
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


def one_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _varied_model(directory: Path, legend: Legend, scene: Path) -> Path:
    """A tiny untrained model of ``legend`` whose classes vary over ``scene``.

    The classifier is scaled up and its bias set so that every output's mean
    logit on the scene's first tile is zero.
    """
    import torch

    from alosmap.radiometry import dn_to_db, normalize
    from alosmap.spec import save_model

    model, spec = tiny_model(legend, TILE, name=f"tiny-{legend.name}")
    with rasterio.open(scene) as ds:
        db = dn_to_db(ds.read(1)[:TILE, :TILE])
    x = normalize(db, spec.radiometry, np.isfinite(db))
    head = model.head.conv_seg
    with torch.no_grad():
        head.weight.mul_(20.0)
        mean = model(torch.from_numpy(x)[None, None]).mean(dim=(0, 2, 3))
        head.bias.sub_(mean)
    return save_model(model, spec, directory / f"{legend.name}.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Legend files, models, the scene and the maps ``alosmap predict`` made."""
    from alosmap.synthetic import generate_scene

    d = tmp_path_factory.mktemp("custom_legend")
    scene = generate_scene(
        d / "scene", seed=5, width=256, height=192, write_label_tiles=False
    ).path
    out: dict[str, dict[str, object]] = {}
    for name, text in LEGENDS.items():
        path = d / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        legend = load_legend(path)
        model = _varied_model(d, legend, scene)
        map_path = d / f"scene_{name}.tif"
        extra = ["--probabilities"] if legend.binary else []
        code = alosmap(
            "predict", scene, "-m", model, "-o", map_path, "--confidence", *extra
        )
        assert code == 0
        out[name] = {"file": path, "legend": legend, "model": model, "map": map_path}
    return {"dir": d, "scene": scene, **out}


def read_map(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile


def _qml_entries(path: Path) -> list[tuple[int, str, str]]:
    root = ET.parse(path).getroot()
    return [
        (int(e.get("value")), e.get("label"), e.get("color"))
        for e in root.iter("paletteEntry")
    ]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@pytest.mark.parametrize("name", list(LEGENDS))
def test_map_carries_the_legend(setup, name):
    from alosmap.io.maps import class_names_from_file, legend_of_file
    from alosmap.io.style import style_path

    legend: Legend = setup[name]["legend"]
    path = setup[name]["map"]
    values, profile = read_map(path)
    present = {int(v) for v in np.unique(values)} - {legend.nodata}
    assert profile["nodata"] == legend.nodata
    assert present <= set(legend.codes) and len(present) >= 2, present
    assert (values == legend.nodata).any()  # the scene's no-data corners
    with rasterio.open(path) as ds:
        tags, cmap = ds.tags(), ds.colormap(1)
    assert tags["ALOSMAP_TASK"] == name
    assert json.loads(tags["CLASS_NAMES"]) == {
        str(c.code): c.name for c in legend.classes
    }
    for c in legend.classes:
        assert cmap[c.code] == (*c.color, 255)
    # the one reader of map legends gives the model's legend back
    back = legend_of_file(path)
    assert back is not None and back.to_dict() == legend.to_dict()
    # GDAL: categories and the RGBA colour table (no data transparent)
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is not None:
        r = subprocess.run(
            [gdalinfo, "-json", str(path)], capture_output=True, text=True, check=True
        )
        band = json.loads(r.stdout)["bands"][0]
        assert band["noDataValue"] == legend.nodata
        entries = band["colorTable"]["entries"]
        for c in legend.classes:
            assert band["categories"][c.code] == c.name
            assert entries[c.code] == [*c.color, 255]
        assert entries[legend.nodata][3] == 0
    else:  # the PAM sidecar GDAL reads
        assert class_names_from_file(path) == {c.code: c.name for c in legend.classes}
    # QGIS style: exactly the legend's codes, names and colours
    assert _qml_entries(style_path(path)) == [
        (c.code, c.name, _hex(c.color))
        for c in sorted(legend.classes, key=lambda c: c.code)
    ]


def test_binary_probabilities_are_of_the_positive_class(setup):
    legend: Legend = setup["flood"]["legend"]
    prob = setup["flood"]["map"].with_name("scene_flood_probabilities.tif")
    values, _ = read_map(setup["flood"]["map"])
    with rasterio.open(prob) as ds:
        assert ds.count == 1 and ds.descriptions == (legend.positive.name,)
        p = ds.read(1)
    valid = values != legend.nodata
    # the map's positive class is where the probability reaches the threshold
    # (a percent of 50 may be either side of 0.5)
    assert (values[valid & (p > 50)] == 1).all() and (p[valid] > 50).any()
    assert (values[valid & (p < 50)] == 0).all() and (p[valid] < 50).any()


def test_inference_options_take_a_models_own_task(setup):
    from alosmap.errors import InferenceOptionError, SpecMismatchError
    from alosmap.predict.options import InferenceOptions
    from alosmap.spec import load_spec

    model = setup["flood"]["model"]
    spec = load_spec(model)
    with pytest.raises(InferenceOptionError, match=r"'flood'.*--model"):
        InferenceOptions(task="flood")  # no bundled flood model
    opts = InferenceOptions(model=model).for_model(spec, model.name)
    assert (opts.task, opts.tile) == ("flood", TILE)
    named = InferenceOptions(task="flood", model=model)
    assert named.for_model(spec, model.name).task == "flood"
    with pytest.raises(SpecMismatchError, match="is a flood model, not water"):
        InferenceOptions(task="water", model=model).for_model(spec, model.name)


def test_info_shows_the_legend(setup, cli):
    code, out, err = cli("info", setup["flood"]["model"])
    assert code == 0, err
    assert "legend      flood:" in out and "binary" in out and "no data 255" in out
    assert "1=Flooded (labels 1)" in out and "ignored label values -1" in out
    code, out, _ = cli("info", "--json", setup["landcover3"]["model"])
    legend: Legend = setup["landcover3"]["legend"]
    assert code == 0 and json.loads(out)["legend"] == legend.to_dict()


@pytest.mark.parametrize("name", list(LEGENDS))
def test_stats_names_the_classes(setup, cli, name):
    legend: Legend = setup[name]["legend"]
    values, _ = read_map(setup[name]["map"])
    code, out, err = cli("stats", setup[name]["map"], "-f", "json")
    assert code == 0, err
    res = json.loads(out)
    assert res["legend"] == name
    assert [(c["code"], c["name"]) for c in res["classes"]] == [
        (c.code, c.name) for c in legend.classes
    ]
    assert [c["pixels"] for c in res["classes"]] == [
        int((values == c.code).sum()) for c in legend.classes
    ]
    assert res["nodata_pixels"] == int((values == legend.nodata).sum())


def test_vectorize_traces_the_positive_class(setup, cli, tmp_path):
    code, _, err = cli("vectorize", setup["flood"]["map"], "-o", tmp_path / "f.geojson")
    assert code == 0, err
    feats = json.loads((tmp_path / "f.geojson").read_text())["features"]
    assert feats and {f["properties"]["class"] for f in feats} == {"Flooded"}
    # landcover3 has no water class to default to: name one
    code, _, err = cli(
        "vectorize", setup["landcover3"]["map"], "-o", tmp_path / "l.geojson"
    )
    assert code == 1 and "--class" in one_error(err)
    values, _ = read_map(setup["landcover3"]["map"])
    present = sorted(set(np.unique(values).tolist()) - {0})
    code, _, err = cli(
        "vectorize",
        setup["landcover3"]["map"],
        "-o",
        tmp_path / "l.geojson",
        "--class",
        str(present[0]),
    )
    assert code == 0, err
    feats = json.loads((tmp_path / "l.geojson").read_text())["features"]
    assert {f["properties"]["code"] for f in feats} == {present[0]}


def _label_reference(setup, name, path, seed=0):
    """The map in the legend's label values, 10 % relabelled at random, 5 % -1.

    Returns:
        The reference file and the confusion matrix counted here (rows = the
        reference's class, columns = the map's; pixels with data in both).
    """
    legend: Legend = setup[name]["legend"]
    values, profile = read_map(setup[name]["map"])
    k = len(legend.classes)
    index = {c.code: i for i, c in enumerate(legend.classes)}
    label_of = [c.label_values[0] for c in legend.classes]
    rng = np.random.default_rng(seed)
    mapped = values != legend.nodata
    truth = np.zeros(values.shape, np.int64)
    truth[mapped] = [index[v] for v in values[mapped].tolist()]
    flip = rng.random(values.shape) < 0.1
    truth[flip] = rng.integers(0, k, int(flip.sum()))
    labels = np.array(label_of, np.int16)[truth]
    unlabelled = (rng.random(values.shape) < 0.05) | ~mapped
    labels[unlabelled] = -1
    ok = mapped & ~unlabelled
    pred = np.zeros(values.shape, np.int64)
    pred[mapped] = [index[v] for v in values[mapped].tolist()]
    expected = np.zeros((k, k), np.int64)
    np.add.at(expected, (truth[ok], pred[ok]), 1)
    ref = write_raster(
        path,
        labels,
        crs=profile["crs"],
        transform=profile["transform"],
        nodata=None,
    )
    return ref, expected


@pytest.mark.parametrize("name", list(LEGENDS))
def test_evaluate_against_labels_in_the_users_values(setup, cli, tmp_path, name):
    ref, expected = _label_reference(setup, name, tmp_path / "labels.tif")
    legend_file = setup[name]["file"]
    code, out, err = cli(
        "evaluate",
        setup[name]["map"],
        ref,
        "--reference-legend",
        legend_file,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert np.array_equal(np.array(report["confusion_matrix"]), expected)
    assert report["classes"] == setup[name]["legend"].names
    assert report["reference_legend"] == str(legend_file)
    assert report["binary"] == (name == "flood")
    if name == "flood":
        tp, fp, fn = expected[1, 1], expected[0, 1], expected[1, 0]
        assert report["metrics"]["iou_water"] == pytest.approx(tp / (tp + fp + fn))
    else:
        assert 0.0 < report["metrics"]["overall_accuracy"] < 1.0
    # the text table names the positive class of a binary legend
    code, out, err = cli(
        "evaluate", setup[name]["map"], ref, "--reference-legend", legend_file
    )
    assert code == 0, err
    assert ("IoU_Flooded" in out) == (name == "flood")
    # without --reference-legend a raw raster is not guessed at
    code, out, err = cli("evaluate", setup[name]["map"], ref)
    line = one_error(err)
    assert code == 1 and out == ""
    assert "--reference-legend" in line and "legend file" in line


def test_evaluate_map_against_itself_and_bad_legend_file(setup, cli, tmp_path):
    code, out, err = cli(
        "evaluate", setup["landcover3"]["map"], setup["landcover3"]["map"], "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["reference_legend"] == "landcover3"
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() > 0 and np.array_equal(cm, np.diag(np.diag(cm)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: 3\n")
    m = setup["landcover3"]["map"]
    code, _, err = cli("evaluate", m, m, "--reference-legend", bad)
    assert code == 1 and "--reference-legend" in one_error(err)


def _water_map(path: Path, codes: np.ndarray) -> Path:
    """A water map of the bundled legend, written by the real writer."""
    from alosmap.arch import get_preset
    from alosmap.spec import default_spec

    spec = default_spec("water", get_preset("tiny"), name="test-water")
    return write_map(path, codes.astype(np.uint8), spec)


def test_zero_one_reference_is_not_read_as_jaxa(cli, tmp_path):
    """Friction 2: a raw 0/1 water raster is refused, not read as JAXA codes."""
    rng = np.random.default_rng(3)
    water = (rng.random((40, 60)) < 0.3).astype(np.uint8)
    codes = np.where(rng.random(water.shape) < 0.1, 1 - water, water)
    codes[:5] = 255  # map no data
    m = _water_map(tmp_path / "w.tif", codes)
    with rasterio.open(m) as ds:
        crs, transform = ds.crs, ds.transform
    ref = write_raster(
        tmp_path / "ref01.tif", water, crs=crs, transform=transform, nodata=None
    )
    code, out, err = cli("evaluate", m, ref)
    line = one_error(err)
    assert code == 1 and out == ""
    mapped = codes != 255
    share0 = 100 * (water[mapped] == 0).mean()
    assert f"0 ({share0:.1f} %)" in line and "1 (" in line
    assert "--reference-legend" in line and "water-binary" in line
    code, out, err = cli("evaluate", m, ref, "--reference-legend", "water-binary")
    assert code == 0, err
    expected = np.zeros((2, 2), np.int64)
    np.add.at(expected, (water[mapped], codes[mapped]), 1)
    code, out, _ = cli(
        "evaluate", m, ref, "--reference-legend", "water-binary", "--json"
    )
    report = json.loads(out)
    assert np.array_equal(np.array(report["confusion_matrix"]), expected)
    assert report["reference_legend"] == "water-binary"
    # named as JAXA after all, it is read as JAXA codes (0 = no data)
    code, out, _ = cli("evaluate", m, ref, "--reference-legend", "jaxa", "--json")
    assert code == 0
    cm = np.array(json.loads(out)["confusion_matrix"])
    assert cm[1].sum() == int((water[mapped] == 1).sum()) and cm[0].sum() == 0


@pytest.mark.slow
def test_mosaic_keeps_the_legend_and_refuses_mixed_legends(setup, cli, tmp_path):
    from alosmap.io.maps import class_names_from_file, legend_of_file
    from alosmap.io.style import style_path

    legend: Legend = setup["landcover3"]["legend"]
    out = tmp_path / "mos"
    code, stdout, err = cli(
        "mosaic", setup["landcover3"]["map"], "-o", out, "--merge", "latest"
    )
    assert code == 0, err
    cells = sorted(out.glob("LANDCOVER3_*[0-9].tif"))
    assert len(cells) == 1 and str(cells[0]) in stdout
    vrt = out / "landcover3.vrt"
    for path in (cells[0], vrt):
        back = legend_of_file(path)
        assert back is not None and back.to_dict() == legend.to_dict()
        assert class_names_from_file(path) == {c.code: c.name for c in legend.classes}
        assert [e[:2] for e in _qml_entries(style_path(path))] == [
            (c.code, c.name) for c in legend.classes
        ]
        with rasterio.open(path) as ds:
            assert ds.nodata == legend.nodata
            assert ds.colormap(1)[20] == (40, 160, 60, 255)
    values, _ = read_map(setup["landcover3"]["map"])
    with rasterio.open(cells[0]) as ds:
        cell = ds.read(1)
    present = set(np.unique(values).tolist()) - {0}
    assert set(np.unique(cell).tolist()) - {0} == present
    # maps of two legends are never mixed: refused, nothing written
    code, _, err = cli(
        "mosaic", setup["landcover3"]["map"], setup["flood"]["map"], "-o", out / "x"
    )
    line = one_error(err)
    assert code == 1 and "different tasks and legends" in line
    assert "flood: scene_flood.tif" in line and "--task landcover3" in line
    assert not (out / "x").exists()


def test_mosaic_refuses_one_task_name_with_two_legends(tmp_path):
    """Two legends both named "flood" (other classes) are not mixed either."""
    from affine import Affine

    from alosmap.arch import get_preset
    from alosmap.errors import MosaicInputError
    from alosmap.national.mosaic import find_maps
    from alosmap.spec import default_spec

    other = FLOOD.replace("Flooded", "Inundated")
    for i, text in enumerate((FLOOD, other)):
        (tmp_path / f"l{i}.yaml").write_text(text)
        spec = default_spec(load_legend(tmp_path / f"l{i}.yaml"), get_preset("tiny"))
        write_map(
            tmp_path / f"m{i}.tif",
            np.ones((4, 4), np.uint8),
            spec,
            crs="EPSG:4326",
            transform=Affine(1 / 120, 0, 139 + i / 60, 0, -1 / 120, 35.5),
        )
    assert [m.task for m in find_maps([tmp_path / "m0.tif"])] == ["flood"]
    with pytest.raises(MosaicInputError, match=r"different legends.*Inundated"):
        find_maps([tmp_path])


@pytest.mark.slow
def test_batch_records_and_stac_use_the_legend(setup, cli, tmp_path):
    legend: Legend = setup["flood"]["legend"]
    out = tmp_path / "batch"
    code, _, err = cli(
        "batch", setup["scene"], "-o", out, "-m", setup["flood"]["model"]
    )
    assert code == 0, err
    map_path = out / f"{setup['scene'].stem}_flood.tif"
    assert map_path.is_file()
    values, _ = read_map(map_path)
    (rec_path,) = (out / "_alosmap" / "records").glob("*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["task"] == "flood" and rec["legend"] == legend.to_dict()
    assert {c["code"]: c["name"] for c in rec["classes"]} == {
        c.code: c.name for c in legend.classes if (values == c.code).any()
    }
    if not (out / "stac").exists():
        pytest.skip("pystac is not installed: no STAC catalog")
    coll = json.loads((out / "stac" / "alosmap-flood" / "collection.json").read_text())
    classes = coll["summaries"]["classification:classes"]
    assert [(c["value"], c["description"]) for c in classes] == [
        (0, "Dry"),
        (1, "Flooded"),
        (255, "No data"),
    ]
    assert "'flood'" in coll["description"] and "1 Flooded" in coll["description"]
    (item_path,) = (out / "stac" / "alosmap-flood").glob("*/*.json")
    item = json.loads(item_path.read_text())
    asset = item["assets"]["map"]
    assert [c["color_hint"] for c in asset["classification:classes"][:2]] == [
        "EBEBE1",
        "005CE6",
    ]
