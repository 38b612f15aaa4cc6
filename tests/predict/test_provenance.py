"""Provenance in every map: model name and SHA-256, version, input as given, options.

Real maps of a small synthetic scene by a tiny model; a URL input is served by the
loopback HTTP server of :mod:`http_serve`.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import rasterio
from http_serve import http_server

import alosmap._fileio
from alosmap._version import __version__
from alosmap.io.writer import input_as_given, provenance, source_name
from alosmap.predict.pipeline import load_model, predict_scene
from alosmap.spec import load_spec


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tags(path):
    with rasterio.open(path) as ds:
        return ds.tags()


def test_every_file_of_a_map_records_model_input_and_options(
    tmp_path, small_scene, tiny_lulc_model
):
    res = predict_scene(
        str(small_scene),
        tmp_path / "m.tif",
        model=tiny_lulc_model,
        confidence=True,
        probabilities=True,
        overlap=32,
        bbox=None,
    )
    spec = load_spec(tiny_lulc_model)
    for path in (res.output, res.confidence, res.probabilities):
        tags = _tags(path)
        assert tags["ALOSMAP_VERSION"] == __version__
        assert tags["ALOSMAP_MODEL"] == spec.name
        assert tags["ALOSMAP_MODEL_FILE"] == tiny_lulc_model.name
        assert tags["ALOSMAP_MODEL_SHA256"] == _sha256(tiny_lulc_model)
        assert tags["SOURCE_INPUT"] == str(small_scene)  # as given, whole
        assert tags["SOURCE_SCENE"] == small_scene.name
        params = json.loads(tags["ALOSMAP_PARAMS"])
        assert params["tile"] == 256 and params["overlap"] == 32
        assert params["backend"] == "torch" and params["device"] == "cpu"
        assert params["precision"] == "fp32" and params["compile"] is False
        assert params["band"] == 1
        assert params["input_units"] == "dn"
        assert params["confidence"] is True and params["probabilities"] is True
        assert "bbox" not in params and "aoi" not in params
    assert provenance(_tags(res.output))["ALOSMAP_PARAMS"]["overlap"] == 32


def test_an_area_of_interest_is_recorded(tmp_path, small_scene, tiny_water_model):
    with rasterio.open(small_scene) as ds:
        left, bottom = ds.bounds.left, ds.bounds.bottom
    bbox = (left + 500, bottom + 500, left + 2500, bottom + 2500)
    res = predict_scene(
        small_scene, tmp_path / "w.tif", model=tiny_water_model, bbox=bbox,
        bbox_crs="EPSG:32654",
    )  # fmt: skip
    params = json.loads(_tags(res.output)["ALOSMAP_PARAMS"])
    assert params["bbox"] == list(bbox) and params["bbox_crs"] == "EPSG:32654"


def test_a_url_input_is_recorded_whole_without_its_secrets(
    tmp_path, small_scene, tiny_water_model
):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(small_scene, served / "scene.tif")
    with http_server(served) as base:
        url = f"{base}/scene.tif?X-Amz-Signature=abc123&X-Amz-Date=20240101&v=2"
        res = predict_scene(url, tmp_path / "w.tif", model=tiny_water_model)
    tags = _tags(res.output)
    assert tags["SOURCE_INPUT"] == (
        f"{base}/scene.tif?X-Amz-Signature=REDACTED&X-Amz-Date=20240101&v=2"
    )
    assert tags["SOURCE_SCENE"] == "scene.tif"


@pytest.mark.parametrize(
    ("given", "recorded", "name"),
    [
        ("data/scene.tif", "data/scene.tif", "scene.tif"),
        ("/vsizip/a.zip/x/s.tif", "/vsizip/a.zip/x/s.tif", "s.tif"),
        ("/vsicurl/https://h/d/s.tif", "/vsicurl/https://h/d/s.tif", "s.tif"),
        ("s3://bucket/k/s.tif", "s3://bucket/k/s.tif", "s.tif"),
        (
            "https://me:pw@h/s.tif?token=t&page=2",
            "https://me:REDACTED@h/s.tif?token=REDACTED&page=2",
            "s.tif",
        ),
        (
            "https://h/s.tif?X-Amz-Credential=AK%2F1&X-Amz-Security-Token=x#frag",
            "https://h/s.tif?X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED"
            "#frag",
            "s.tif",
        ),
    ],
)
def test_input_as_given(given, recorded, name):
    assert input_as_given(given) == recorded
    assert source_name(given) == name


def test_model_hashed_once_per_runtime(
    tmp_path, small_scene, tiny_water_model, monkeypatch
):
    """Batch mode maps many scenes with one runtime: the model file is hashed once."""
    hashed = []
    real = alosmap._fileio.sha256_file

    def counting(path):
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(alosmap._fileio, "sha256_file", counting)
    rt = load_model(tiny_water_model)
    try:
        outs = [
            predict_scene(small_scene, tmp_path / f"w{i}.tif", runtime=rt).output
            for i in range(3)
        ]
    finally:
        rt.close()
    assert hashed.count(str(tiny_water_model)) == 1
    digests = {_tags(p)["ALOSMAP_MODEL_SHA256"] for p in outs}
    assert digests == {_sha256(tiny_water_model)}


def test_info_shows_the_provenance(cli, tmp_path, small_scene, tiny_water_model):
    out = predict_scene(small_scene, tmp_path / "w.tif", model=tiny_water_model).output
    code, text, err = cli("info", out)
    assert code == 0, err
    lines = [ln for ln in text.splitlines() if ln.startswith("provenance")]
    assert any(
        f"ALOSMAP_MODEL_SHA256: {_sha256(tiny_water_model)}" in ln for ln in lines
    )
    assert any(f"SOURCE_INPUT: {small_scene}" in ln for ln in lines)
    assert any(f"ALOSMAP_VERSION: {__version__}" in ln for ln in lines)
    code, text, err = cli("info", out, "--json")
    assert code == 0, err
    prov = json.loads(text)["provenance"]
    assert prov["ALOSMAP_MODEL_FILE"] == tiny_water_model.name
    assert prov["ALOSMAP_PARAMS"]["tile"] == 256
    # a raster that is not a map of alosmap has none
    code, text, err = cli("info", small_scene, "--json")
    assert code == 0 and json.loads(text)["provenance"] == {}
