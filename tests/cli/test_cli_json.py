"""``--json`` of the commands that make something, and ``--co`` creation options.

Real runs on tiny GeoTIFFs: the document must be the whole of stdout, name files that
exist, and hold figures that agree with the files written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import UTM54, write_raster
from rasterio.transform import from_origin


def _doc(out: str) -> dict:
    """stdout as one JSON document (fails if anything else is printed)."""
    return json.loads(out)


def _counts(path) -> dict[int, int]:
    with rasterio.open(path) as ds:
        a = ds.read(1)
        nodata = ds.nodata
    codes, n = np.unique(a[a != nodata], return_counts=True)
    return {int(c): int(k) for c, k in zip(codes, n, strict=True)}


@pytest.fixture(scope="module")
def lulc_json(tmp_path_factory, small_scene, tiny_lulc_model):
    """One ``predict --json --confidence`` run: (stdout, stderr, output dir).

    Module-scoped (the tests below read its files), so run through the entry point
    with stdout and stderr redirected here rather than by the ``cli`` fixture.
    """
    import contextlib
    import io
    import logging
    import sys

    from alosmap.cli.main import run

    out_dir = tmp_path_factory.mktemp("json")
    args = [small_scene, "-m", tiny_lulc_model, "-o", out_dir / "m.tif"]
    argv, sys.argv = sys.argv, ["alosmap", "predict", *map(str, args)]
    sys.argv += ["--confidence", "--json"]
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            contextlib.suppress(SystemExit),
        ):
            run()
    finally:
        sys.argv = argv
        root.setLevel(level)
        root.handlers[:] = handlers
        logging.captureWarnings(False)
    return out.getvalue(), err.getvalue(), out_dir


def test_predict_json_agrees_with_the_map(lulc_json):
    out, err, out_dir = lulc_json
    doc = _doc(out)
    assert doc["command"] == "predict"
    assert doc["map"] == str(out_dir / "m.tif")
    files = [out_dir / "m.tif", out_dir / "m_confidence.tif"]
    assert doc["outputs"] == [str(p) for p in files]
    assert all((out_dir / p).exists() for p in doc["outputs"])
    counts = {c["code"]: c["pixels"] for c in doc["classes"]}
    assert counts == _counts(out_dir / "m.tif")
    assert doc["valid_pixels"] == sum(counts.values())
    assert sum(c["percent"] for c in doc["classes"]) == pytest.approx(100.0)
    assert 0 < doc["tiles"]["run"] <= doc["tiles"]["total"]
    assert doc["seconds"] > 0 and doc["warnings"] == []
    assert "tiles in" in err  # the summary stays on stderr


def test_water_json_agrees_with_the_map(cli, small_scene, tiny_water_model, tmp_path):
    m = tmp_path / "w.tif"
    code, out, err = cli(
        "water", small_scene, "-m", tiny_water_model, "-o", m, "--probabilities",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = _doc(out)
    assert doc["command"] == "water" and doc["map"] == str(m)
    assert doc["outputs"] == [str(m), str(tmp_path / "w_probabilities.tif")]
    assert all(Path(p).exists() for p in doc["outputs"])
    counts = {c["code"]: c["pixels"] for c in doc["classes"] if c["pixels"]}
    assert counts == _counts(m)


def test_stats_and_vectorize_json(cli, lulc_json, tmp_path):
    _, _, out_dir = lulc_json
    m = out_dir / "m.tif"
    code, out, err = cli("stats", m, "-o", tmp_path / "s.csv", "--json")
    assert code == 0, err
    doc = _doc(out)
    assert doc["outputs"] == [str(tmp_path / "s.csv")]
    assert (tmp_path / "s.csv").exists()
    areas = {c["code"]: c["pixels"] for c in doc["classes"] if c["pixels"]}
    assert areas == _counts(m)
    water = max(_counts(m), key=_counts(m).get)  # the most common class
    code, out, err = cli(
        "vectorize", m, "--class", water, "-o", tmp_path / "v.gpkg", "--json"
    )
    assert code == 0, err
    doc = _doc(out)
    assert doc["outputs"] == [str(tmp_path / "v.gpkg")] == [doc["output"]]
    raw = pytest.importorskip("pyogrio")
    info = raw.read_info(tmp_path / "v.gpkg")
    assert info["features"] == doc["polygons"] > 0
    assert "32654" in doc["crs"]


def test_evaluate_json_names_its_files(cli, lulc_json, tmp_path):
    _, _, out_dir = lulc_json
    m = out_dir / "m.tif"
    code, out, err = cli("evaluate", m, m, "-o", tmp_path / "r.csv", "--json")
    assert code == 0, err
    doc = _doc(out)
    assert doc["command"] == "evaluate" and doc["outputs"] == [str(tmp_path / "r.csv")]
    assert (tmp_path / "r.csv").exists()
    assert doc["metrics"]["overall_accuracy"] == pytest.approx(1.0)  # itself


def test_batch_json(cli, small_scene, tiny_water_model, tmp_path):
    out_dir = tmp_path / "b"
    code, out, err = cli(
        "-q", "batch", small_scene, "-m", tiny_water_model, "-o", out_dir,
        "--no-stac", "--json", "--co", "COMPRESS=ZSTD",
    )  # fmt: skip
    assert code == 0, err
    doc = _doc(out)
    assert doc["command"] == "batch" and len(doc["done"]) == 1 and not doc["failed"]
    (map_path,) = doc["outputs"]
    assert doc["output_dir"] == str(out_dir)
    for path in (map_path, map_path.replace(".tif", "_confidence.tif")):
        with rasterio.open(path) as ds:  # --co reaches the batch's maps
            assert ds.count == 1 and ds.compression.name.upper() == "ZSTD"
    assert doc["tiles"] > 0 and doc["km2"] > 0


@pytest.mark.slow  # a 12000² cell of the JAXA grid: about 12 s on 2 cores
def test_mosaic_json(cli, lulc_json, tmp_path):
    _, _, out_dir = lulc_json
    # a GeoTIFF that is not a map: left out with a warning, in the document even
    # with -q (which keeps it off stderr)
    maps = tmp_path / "maps"
    maps.mkdir()
    for name in ("m.tif", "m_confidence.tif"):
        (maps / name).symlink_to(out_dir / name)
    write_raster(
        maps / "other.tif",
        np.ones((8, 8), np.uint8),
        crs=UTM54,
        transform=from_origin(500000, 4000000, 10, 10),
        nodata=0,
    )
    code, out, err = cli(
        "-q", "mosaic", maps, "-o", tmp_path / "mo", "--json", "--co", "COMPRESS=LZW"
    )
    assert code == 0, err
    doc = _doc(out)
    assert [w for w in doc["warnings"] if "other.tif is not an alosmap map" in w]
    assert "other.tif" not in err
    assert doc["maps"] == [str(maps / "m.tif")]
    assert doc["outputs"][: len(doc["cells"])] == doc["cells"]
    for cell in doc["cells"]:
        name = cell.rsplit("/", 1)[-1]
        assert sum(_counts(cell).values()) == doc["valid_pixels"][name]
        assert rasterio.open(cell).compression.name.upper() == "LZW"
    assert all(tmp_path.joinpath(p).exists() for p in doc["outputs"])


# -- --co -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("COMPRESS=FOO", "not one of"),
        ("NOPE=1", "not a creation option"),
        ("LEVEL=30", "levels are 1-12"),
        ("COMPRESS=JPEG", "lossy"),
        ("BLOCKSIZE=100", "below the minimum"),
        ("BLOCKSIZE=200", "multiple of 16"),
        ("TARGET_SRS=EPSG:4326", "set by alosmap"),
        ("LEVEL", "KEY=VALUE"),
        ("LEVEL=x", "whole number"),
    ],
)
def test_bad_creation_option_is_one_line_exit_2(
    cli, small_scene, tiny_lulc_model, tmp_path, option, words
):
    code, out, err = cli(
        "predict", small_scene, "-m", tiny_lulc_model, "-o", tmp_path / "m.tif",
        "--co", option,
    )  # fmt: skip
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert out == "" and not list(tmp_path.iterdir())  # before any work


def test_creation_options_reach_every_map_file(
    cli, small_scene, tiny_water_model, tmp_path
):
    code, out, err = cli(
        "-q", "water", small_scene, "-m", tiny_water_model, "-o", tmp_path / "w.tif",
        "--confidence", "--co", "compress=zstd", "--co", "LEVEL=9",
        "--co", "BLOCKSIZE=256",
    )  # fmt: skip
    assert code == 0, err
    for path in out.splitlines():
        with rasterio.open(path) as ds:
            assert ds.compression.name.upper() == "ZSTD"
            assert ds.block_shapes[0] == (256, 256)
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_default_map_compression_is_deflate(
    cli, small_scene, tiny_water_model, tmp_path
):
    code, _, err = cli(
        "-q", "water", small_scene, "-m", tiny_water_model, "-o", tmp_path / "w.tif"
    )
    assert code == 0, err
    with rasterio.open(tmp_path / "w.tif") as ds:
        assert ds.compression.name.upper() == "DEFLATE"


def test_parse_creation_options_against_gdal_list():
    from alosmap.io.cog_options import driver_options, parse_creation_options

    specs = driver_options("COG")
    assert specs is not None and "DEFLATE" in specs["COMPRESS"].values
    assert parse_creation_options(["predictor=2", "level=1"]) == {
        "PREDICTOR": "2",
        "LEVEL": "1",
    }
    assert parse_creation_options({"COMPRESS": "lzw"}) == {"COMPRESS": "LZW"}


def test_synth_scene_json(cli, tmp_path):
    code, out, err = cli(
        "synth", "scene", tmp_path / "s", "--size", "64", "--scene-labels", "--json"
    )
    assert code == 0, err
    doc = _doc(out)
    assert doc["command"] == "synth scene" and doc["outputs"][0] == doc["scene"]
    assert doc["outputs"] == [doc["scene"], *doc["label_tiles"], doc["scene_labels"]]
    for path in doc["outputs"]:
        with rasterio.open(path) as ds:
            assert ds.count == 1


@pytest.mark.slow  # an ONNX export with its parity check: about 40 s on 2 cores
def test_export_onnx_json(cli, tiny_lulc_model, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    code, stdout, err = cli(
        "export", "onnx", tiny_lulc_model, "-o", out, "--parity-tiles", "2", "--json"
    )
    assert code == 0, err
    doc = _doc(stdout)
    assert doc["outputs"] == [str(out)] and doc["bytes"] == out.stat().st_size
    assert doc["parity"]["max_abs_prob_diff"] <= doc["tolerance"]
