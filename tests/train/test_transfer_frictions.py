"""Frictions of transfer and own-data work, each as a user met it.

* ``finetune --init-from`` a 256-px model on a dataset of 64-px patches: the model is
  rebuilt for 64-px tiles (its spec says so, ``predict`` uses them); a patch size its
  windows cannot tile is one line listing the sizes that fit;
* ``train adapt`` reports the input statistics before and after, and warns when the
  scenes look like the ones to be mapped rather than training-like data;
* help texts name no sensor where a command takes any raster;
* ``build-dataset --image-pattern '{key}_S1Hand.tif' --label-pattern
  '{key}_LabelHand.tif'`` pairs by the shared key;
* ``alosmap evaluate`` averages over the classes present in the reference;
* DataLoader workers default to the CPUs this process may use;
* a raster without CRS is one line of alosmap's, not raw Python warnings.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import write_raster, write_training_data
from rasterio.crs import CRS
from train_runs import FAST_CLI
from typer.testing import CliRunner

from alosmap.arch import get_preset
from alosmap.cli.main import app
from alosmap.errors import SpecError
from alosmap.spec import load_spec

runner = CliRunner()

#: The tiles the tiny preset's windows (8, 8, 8, 8) can be built for.
TINY_SIZES = [32, 64, 128, 256, 512, 768, 1024]


def _invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def _one_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def model256(tmp_path_factory):
    """An untrained tiny water model of 256-px tiles."""
    out = tmp_path_factory.mktemp("m") / "m256.safetensors"
    res = _invoke("train", "init", "--preset", "tiny", "--task", "water", "-o", out)
    assert res.exit_code == 0, res.output
    return out


# ---------------------------------------------------------------- 1. tile sizes
def test_tile_sizes_of_a_preset():
    tiny = get_preset("tiny")
    assert tiny.valid_tile_sizes() == TINY_SIZES
    assert tiny.with_tile_size(64).stage_windows() == (8, 8, 4, 2)
    with pytest.raises(SpecError, match=r"valid tile sizes .*: 32, 64, 128, 256"):
        tiny.with_tile_size(96)  # stage 2: a 12×12 grid, window 8
    paper = get_preset("paper")
    assert paper.valid_tile_sizes(1024) == [32, 64, 128, 256, 512, 768, 1024]


def test_weights_of_256_px_tiles_load_into_the_64_px_model():
    """Same keys; a clamped window keeps the biases of the offsets that remain."""
    from alosmap.models import build_model

    torch.manual_seed(0)
    big = build_model(get_preset("tiny", num_classes=1)).eval()
    small = build_model(get_preset("tiny", num_classes=1, img_size=64)).eval()
    small.load_state_dict(big.state_dict())  # strict
    for stage, w in ((2, 4), (3, 2)):  # windows 8 → 4 and 8 → 2
        a = big.encoder.layers[stage].blocks[0].attn.position_bias()[0]
        b = small.encoder.layers[stage].blocks[0].attn.position_bias()[0]
        sub = torch.tensor([r * 8 + c for r in range(w) for c in range(w)])
        torch.testing.assert_close(b, a[:, sub][:, :, sub], rtol=0, atol=0)
    x = torch.randn(2, 1, 64, 64)
    assert small(x).shape == (2, 1, 64, 64)


def test_init_from_a_256_px_model_on_64_px_patches(
    model256, tmp_path, cli, make_geotiff
):
    data = write_training_data(tmp_path / "d64", splits=(("train", 4), ("val", 2)))
    out = tmp_path / "run"
    code, _, err = cli("train", "finetune", "--data", data, "--task", "water",
                       "--init-from", model256, "-o", out, "--epochs", "1",
                       "--batch-size", "4", *FAST_CLI)  # fmt: skip
    assert code == 0, err
    assert "use 64-px tiles" in err
    model = out / "model.safetensors"
    spec = load_spec(model)
    assert spec.tile_size == 64 and spec.arch.img_size == 64
    dn = np.random.default_rng(0).integers(500, 6000, (100, 150)).astype(np.uint16)
    scene = make_geotiff(dn, "scene.tif")
    code, _, err = cli("predict", scene, "--model", model, "-o", tmp_path / "m.tif")
    assert code == 0, err
    with rasterio.open(tmp_path / "m.tif") as m:
        assert json.loads(m.tags()["ALOSMAP_PARAMS"])["tile"] == 64
        assert (m.width, m.height) == (150, 100)


def test_a_patch_size_the_windows_do_not_tile_is_one_line(model256, tmp_path, cli):
    data = write_training_data(
        tmp_path / "d72", splits=(("train", 2), ("val", 2)), size=72
    )
    code, _, err = cli("train", "finetune", "--data", data, "--task", "water",
                       "--init-from", model256, "-o", tmp_path / "run",
                       "--epochs", "1", *FAST_CLI)  # fmt: skip
    assert code == 1
    line = _one_error(err)
    assert "72-px patches do not fit" in line
    assert ", ".join(map(str, TINY_SIZES)) in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 2. adapt
@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "m64.safetensors"
    res = _invoke("train", "init", "--preset", "tiny", "--tile-size", "64",
                  "--task", "water", "-o", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _db_scene(make_geotiff, name, db):
    return make_geotiff(db.astype(np.float32), name, nodata=np.nan)


def test_adapt_reports_statistics_before_and_after(model64, make_geotiff, tmp_path):
    rad = load_spec(model64).radiometry
    rng = np.random.default_rng(1)
    like = _db_scene(
        make_geotiff, "like.tif", rng.normal(rad.mean_db, rad.std_db, (128, 128))
    )
    out = tmp_path / "a.safetensors"
    res = _invoke("train", "adapt", model64, "--images", like, "-o", out,
                  "--max-tiles", "4", "--batch-size", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    new = load_spec(out).radiometry
    assert (
        f"before (the model's) mean {rad.mean_db:.3f}, std {rad.std_db:.3f}"
        in res.stderr
    )
    assert f"after (adapted) mean {new.mean_db:.3f}, std {new.std_db:.3f}" in (
        res.stderr
    )
    assert "warning:" not in res.stderr  # training-like statistics


def test_adapt_warns_on_scenes_unlike_the_training_data(
    model64, make_geotiff, tmp_path
):
    from alosmap.train.adapt import AdaptOptions, adapt

    rng = np.random.default_rng(2)
    flood = np.where(rng.random((128, 128)) < 0.5, -22.0, -8.0)
    flood += rng.normal(0.0, 2.0, flood.shape)
    scene = _db_scene(make_geotiff, "flood.tif", flood)
    lines: list[str] = []
    result = adapt(
        model64,
        [scene],
        tmp_path / "a.safetensors",
        options=AdaptOptions(batchnorm=False),
        log=lines.append,
    )
    assert len(result.warnings) == 1
    warning = next(ln for ln in lines if ln.startswith("warning:"))
    assert "differ from the model's" in warning
    assert "25 % water" in warning and "representative unlabelled scenes" in warning
    assert result.scene_mean_db == pytest.approx(result.spec.radiometry.mean_db)
    # the CLI says it too, and --no-norm reports the kept statistics
    res = _invoke("train", "adapt", model64, "--images", scene, "-o",
                  tmp_path / "b.safetensors", "--no-norm", "--max-tiles", "2",
                  "--batch-size", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "after: kept (--no-norm)" in res.stderr
    assert "warning: the scenes' σ0 statistics differ" in res.stderr


def test_adapt_help_says_when_to_adapt_and_names_no_sensor_for_the_band():
    res = _invoke("train", "adapt", "--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "holding HH" not in text and "HH band" not in text
    assert "finetune --init-from" in text
    build = " ".join(_invoke("train", "build-dataset", "--help").output.split())
    assert "holding HH" not in build and "HH band" not in build


# ---------------------------------------------------------------- 4. pairing
def _pair_files(make_geotiff, tmp_path):
    rng = np.random.default_rng(3)
    images, labels = tmp_path / "S1Hand", tmp_path / "LabelHand"
    images.mkdir()
    labels.mkdir()
    for key in ("Bolivia_1", "Ghana_7"):
        db = rng.normal(-12.0, 3.0, (64, 64)).astype(np.float32)
        make_geotiff(db, f"S1Hand/{key}_S1Hand.tif", nodata=np.nan)
        lab = (db < -12.0).astype(np.uint8)
        make_geotiff(lab, f"LabelHand/{key}_LabelHand.tif", nodata=255)
    return images, labels


def test_image_and_label_patterns_pair_by_key(make_geotiff, tmp_path):
    from alosmap.train.dataset.pairs import match_pairs
    from alosmap.train.errors import DatasetBuildError

    images, labels = _pair_files(make_geotiff, tmp_path)
    (images / "notes_S1.tif").write_bytes(b"")  # not matching: not an image
    pairs = match_pairs([images], labels, "{key}_LabelHand.tif", "{key}_S1Hand.tif")
    assert [(p.image.name, p.label.name) for p in pairs] == [
        ("Bolivia_1_S1Hand.tif", "Bolivia_1_LabelHand.tif"),
        ("Ghana_7_S1Hand.tif", "Ghana_7_LabelHand.tif"),
    ]
    with pytest.raises(DatasetBuildError, match="needs --image-pattern"):
        match_pairs([images], labels, "{key}_LabelHand.tif")
    with pytest.raises(DatasetBuildError, match="does not match --image-pattern"):
        match_pairs([images / "notes_S1.tif"], labels, "{key}.tif", "{key}_S1Hand.tif")


def test_build_dataset_with_image_pattern(make_geotiff, tmp_path, cli):
    images, labels = _pair_files(make_geotiff, tmp_path)
    out = tmp_path / "data"
    code, _, err = cli("train", "build-dataset", "--images", images, "--labels", labels,
                       "--image-pattern", "{key}_S1Hand.tif", "--label-pattern",
                       "{key}_LabelHand.tif", "--legend", "water-binary",
                       "--patch-size", "32", "--split-by", "random",
                       "-o", out)  # fmt: skip
    assert code == 0, err
    build = json.loads((out / "dataset.json").read_text())["build"]
    assert build["image_pattern"] == "{key}_S1Hand.tif"
    assert [p["label"].rsplit("/", 1)[-1] for p in build["pairs"]] == [
        "Bolivia_1_LabelHand.tif",
        "Ghana_7_LabelHand.tif",
    ]


# ---------------------------------------------------------------- 5. evaluate
def test_evaluate_means_over_the_classes_in_the_reference(tmp_path, cli):
    crs, t = CRS.from_epsg(4326), Affine(1 / 12000, 0, 139.5, 0, -1 / 12000, 35.5)
    ref = np.ones((40, 60), np.uint8)  # JAXA: water, built-up, cropland only
    ref[:, 20:40], ref[:, 40:] = 2, 4
    pred = np.array([0, 1, 2, 0, 3], np.uint8)[ref]  # LULC codes: 1, 2, 3
    pred[:10, 20:40] = 7  # part of built-up mapped as Solar panel (not in the ref)
    r = write_raster(tmp_path / "LC_ref.tif", ref, crs=crs, transform=t, nodata=0)
    m = write_raster(tmp_path / "m.tif", pred, crs=crs, transform=t, nodata=0,
                     tags={"ALOSMAP_TASK": "lulc"})  # fmt: skip
    outs = [tmp_path / "r.json", tmp_path / "r.csv"]
    code, text, err = cli("evaluate", m, r, "-o", outs[0], "-o", outs[1])
    assert code == 0, err
    met = json.loads(outs[0].read_text())["metrics"]
    built_iou = 600 / 800  # 200 of 800 built-up pixels mapped as Solar panel
    assert met["miou"] == pytest.approx((1.0 + built_iou + 1.0) / 3)
    assert met["miou_classes"] == 3 and met["absent_from_reference"] == [
        c for c in met["per_class"] if c not in ("Water", "Built-up", "Cropland")
    ]
    assert met["per_class"]["Solar panel"] == {
        "iou": 0.0, "accuracy": None, "support": 0, "predicted": 200,
        "in_reference": False,
    }  # fmt: skip
    assert "means over the 3 classes present in the reference" in text
    assert "Solar panel*" in text
    rows = list(csv.DictReader(io.StringIO(outs[1].read_text())))
    assert rows[-1]["iou"] == repr(met["miou"])
    assert {r["class"]: r["in_reference"] for r in rows[:3]} == dict.fromkeys(
        ("Water", "Built-up", "Cropland"), "yes"
    )
    assert rows[6]["class"] == "Solar panel" and rows[6]["in_reference"] == "no"


# ---------------------------------------------------------------- 6. workers
def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch):
    import os

    from alosmap.train import defaults
    from alosmap.train.finetune import FinetuneConfig
    from alosmap.train.requests import RunOptions

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert defaults.available_cpus() == 1
    assert defaults.data_workers() == 1 and defaults.data_workers(3) == 1
    assert defaults.data_workers(0) == 0
    opts = RunOptions(True, None, "cpu", False, 0, True, None).options()
    assert opts["workers"] == 1
    cfg = FinetuneConfig(data=Path("d"), task="water", out_dir=Path("o"))
    assert cfg.workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(6)))
    assert defaults.data_workers() == defaults.MAX_WORKERS == 4


# ---------------------------------------------------------------- 7. no CRS
def test_a_raster_without_crs_is_one_line_of_ours(tmp_path, cli):
    rng = np.random.default_rng(4)
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    db = rng.normal(-12.0, 3.0, (64, 64)).astype(np.float32)
    for d, a, nodata in ((images, db, np.nan), (labels, (db < -12).astype("u1"), 255)):
        with (
            warnings.catch_warnings(action="ignore"),
            rasterio.open(d / "a.tif", "w", driver="GTiff", width=64, height=64,
                          count=1, dtype=a.dtype, nodata=nodata) as ds,
        ):  # fmt: skip
            ds.write(a, 1)
    code, _, err = cli("train", "build-dataset", "--images", images, "--labels", labels,
                       "--legend", "water-binary", "--patch-size", "32",
                       "--split-by", "random", "-o", tmp_path / "data")  # fmt: skip
    assert code == 0, err
    # neither rasterio's NotGeoreferencedWarning nor the reader's "the map will be
    # written ... without georeferencing" (AlosmapWarning)
    assert "Warning" not in err and "py.warnings" not in err, err
    lines = [ln for ln in err.splitlines() if "without a CRS" in ln]
    assert len(lines) == 1 and "read pixel for pixel" in lines[0], err
