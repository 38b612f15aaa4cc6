"""``build-dataset``: label-guided sampling, patches, splits, statistics, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import REPO, SAMPLE_SCENES, SHARED_DATA, nearest_onto
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from alosmap.classes import JAXA_TO_LULC9, JAXA_TO_WATER, jaxa_to_training
from alosmap.errors import InputRasterError, OutputExistsError
from alosmap.radiometry import dn_to_db
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.dataset.jaxa import (
    BuildConfig,
    DatasetBuildError,
    build_dataset,
    count_classes,
    parse_months,
    parse_split,
    sample_anchors,
)
from alosmap.train.dataset.record import FORMAT, MANIFEST_FIELDS, RECORD_KEYS

SAMPLE = REPO / "sample_data"
TILE = SAMPLE / "LC_N35E139.tif"
JAXA_TILES = sorted((SHARED_DATA / "jaxa_hrlulc_v2312").glob("LC_N*E*.tif"))
P = 256
CONFIG = BuildConfig(anchors=300, seed=0)  # months: pretrain 10, 11; finetune 9


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "data"
    result = build_dataset(SAMPLE_SCENES, SAMPLE, out, CONFIG)
    return result, TrainingData(out)


def _scene(name):
    return next(s for s in SAMPLE_SCENES if s.name == name)


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith((name, f".{name}"))]


# ------------------------------------------------------------- sample data
def test_layout_and_loaders(built):
    result, data = built
    assert result.path.is_dir()
    for name in ("dataset.json", "manifest.csv", "sar_db.npy", "labels.npy"):
        assert (result.path / name).is_file()
    assert (result.path / "summary.txt").read_text() == result.summary_text
    assert data.meta["format"] == FORMAT and data.patch_size == P
    n = len(data.records)
    assert data.sar.shape == (n, P, P) and data.sar.dtype == np.float16
    assert data.labels.shape == (n, P, P) and data.labels.dtype == np.uint8
    assert data.labels.max() <= 14
    assert [r.index for r in data.records] == list(range(n))
    for task, k in (("lulc", 9), ("water", 2)):
        ds = PatchDataset(data, "train", task, return_db=True)
        x, y, db = ds[0]
        assert tuple(x.shape) == (1, P, P) and tuple(y.shape) == (P, P)
        assert tuple(db.shape) == (1, P, P)
        assert int(y[y != 255].max()) < k
    assert len(PatchDataset(data, "pretrain")) > 0
    assert not _leftovers(result.path.parent, ".data.tmp")


def test_summary_has_the_label_check(built):
    """The label check of `alosmap train inspect` runs on the paper's build too:
    LULC-9 classes per scene of the labelled patches, in summary.txt and json."""
    from alosmap.train.dataset.label_checks import check_dataset

    result, data = built
    check = result.summary["label_check"]
    assert check == check_dataset(data).to_dict()  # the same as `inspect`
    assert check["legend"] == "lulc"
    assert [c["class_name"] for c in check["classes"]] == list(
        data.legend("lulc").names
    )
    labelled = {r.scene for r in data.records if r.split != "pretrain"}
    assert {r["scene"] for r in check["rows"]} == labelled
    assert "label check:" in result.summary_text
    assert data.meta["summary"]["label_check"] == check


def test_months_go_to_their_splits(built):
    _, data = built
    splits = {}
    for r in data.records:
        splits.setdefault(r.scene, set()).add(r.split)
    sep = _scene("IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif").name
    assert splits[sep] <= {"train", "val", "test"} and "train" in splits[sep]
    for s in SAMPLE_SCENES:
        if s.name != sep:
            assert splits[s.name] == {"pretrain"}
    n = {k: len(data.indices(k)) for k in ("train", "val", "test")}
    total = sum(n.values())
    assert n["train"] == round(0.7 * total)
    assert n["val"] == round(0.15 * total)
    assert data.meta["summary"]["patches"]["train"] == n["train"]


def test_patches_hold_an_anchor_and_sit_on_the_grid(built):
    result, data = built
    anchors = np.load(result.path / "anchors.npy")
    assert len(anchors) == CONFIG.anchors
    by_scene = {}
    for r in data.records:
        by_scene.setdefault(r.scene, []).append(r)
    for name, recs in by_scene.items():
        with rasterio.open(_scene(name)) as ds:
            xs, ys = warp_transform("EPSG:4326", ds.crs, anchors["lon"], anchors["lat"])
            cols, rows = ~ds.transform @ (np.array(xs), np.array(ys))
            h, w = ds.height, ds.width
        cells = {(r.row, r.col) for r in recs}
        assert len(cells) == len(recs)  # no patch twice
        for r in recs:
            assert r.row % P == 0 and r.col % P == 0  # aligned, so non-overlapping
            assert r.row + P <= h and r.col + P <= w
            inside = (
                (rows >= r.row)
                & (rows < r.row + P)
                & (cols >= r.col)
                & (cols < r.col + P)
            )
            assert inside.any(), (name, r.row, r.col)


def test_sar_and_labels_match_an_independent_read(built):
    _, data = built
    for i in np.linspace(0, len(data.records) - 1, 5).astype(int):
        r = data.records[i]
        with rasterio.open(_scene(r.scene)) as ds:
            dn = ds.read(1, window=Window(r.col, r.row, P, P))
            transform = ds.transform @ Affine.translation(r.col, r.row)
            crs = ds.crs
        sar = dn_to_db(dn).astype(np.float16)
        # float32 (builder) vs float64 (dn_to_db) before rounding: ≤ 1 float16 ulp
        np.testing.assert_allclose(data.sar[i], sar, atol=0.016, equal_nan=True)
        with rasterio.open(TILE) as tile:
            expected = nearest_onto(tile, (P, P), transform, crs)
        np.testing.assert_array_equal(data.labels[i], expected)
        valid = np.isfinite(sar)
        assert r.valid_fraction == pytest.approx(valid.mean(), abs=1e-4)
        assert r.histogram == np.bincount(expected[valid], minlength=15).tolist()


def test_normalisation_and_class_counts_from_train_only(built):
    _, data = built
    idx = data.indices("train")
    db = np.asarray(data.sar[idx], dtype=np.float64)
    v = db[np.isfinite(db)].clip(-40, 20)
    assert data.mean_db == pytest.approx(v.mean(), rel=1e-9)
    assert data.std_db == pytest.approx(v.std(), rel=1e-6)
    labels = np.asarray(data.labels[idx])
    valid = np.isfinite(np.asarray(data.sar[idx]))
    for task, k in (("lulc", 9), ("water", 2)):
        y = jaxa_to_training(labels[valid], task)
        direct = np.bincount(y[y != 255], minlength=k)[:k].tolist()
        assert data.class_counts(task) == direct
    hist = np.array([data.records[i].histogram for i in idx]).sum(axis=0)
    lulc = np.zeros(9, int)
    np.add.at(lulc, JAXA_TO_LULC9[1:15], hist[1:15])
    water = np.zeros(2, int)
    np.add.at(water, JAXA_TO_WATER[1:15], hist[1:15])
    assert data.class_counts("lulc") == lulc.tolist()
    assert data.class_counts("water") == water.tolist()


def test_inverse_frequency_upweights_rare_classes(built):
    result, data = built
    anchors = np.load(result.path / "anchors.npy")
    counts = np.array(data.meta["summary"]["tile_pixel_counts"])
    pixel_share = counts[1:] / counts[1:].sum()
    anchor_share = np.bincount(anchors["code"], minlength=15)[1:] / len(anchors)
    for code, factor in ((12, 10), (14, 10), (10, 3)):  # solar, greenhouse, bare
        assert anchor_share[code - 1] > factor * pixel_share[code - 1]
    assert anchor_share[0] < pixel_share[0]  # water: down-weighted
    # every present class gets about the same number of anchors (300 / 14 ≈ 21)
    assert np.all(anchor_share[pixel_share > 0] > 0.02)


def test_same_seed_same_dataset(built, tmp_path):
    result, data = built
    other = build_dataset(SAMPLE_SCENES, SAMPLE, tmp_path / "again", CONFIG)
    again = TrainingData(other.path)
    np.testing.assert_array_equal(np.asarray(again.sar), np.asarray(data.sar))
    np.testing.assert_array_equal(np.asarray(again.labels), np.asarray(data.labels))
    assert (other.path / "manifest.csv").read_bytes() == (
        result.path / "manifest.csv"
    ).read_bytes()
    assert (other.path / "anchors.npy").read_bytes() == (
        result.path / "anchors.npy"
    ).read_bytes()


def test_anchors_do_not_depend_on_the_window_height():
    counts = count_classes([TILE], block_rows=3000)
    np.testing.assert_array_equal(counts, count_classes([TILE], block_rows=777))
    a = sample_anchors([TILE], counts, 50, np.random.default_rng(3), block_rows=3000)
    b = sample_anchors([TILE], counts, 50, np.random.default_rng(3), block_rows=777)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad input
def _scene_tif(make_geotiff, name, *, x0, y0, data=None, tags=None):
    """A 256 × 256 UTM 54N scene at 8 m (DN 3000 ≈ −13.5 dB unless ``data``)."""
    a = np.full((P, P), 3000, np.uint16) if data is None else data
    return make_geotiff(
        a, name, transform=Affine(8.0, 0, x0, 0, -8.0, y0), tags=tags or {}
    )


SEP = {"ACQUISITION_DATE": "2022-09-12"}


@pytest.mark.parametrize(
    "case",
    [
        "missing_scene",
        "missing_tile_dir",
        "no_tiles",
        "no_overlap",
        "no_date",
        "no_anchor_in_any_patch",
        "all_dropped",
        "output_exists",
        "overwrite_non_dataset",
    ],
)
def test_bad_input_leaves_nothing(case, tmp_path, make_geotiff):
    scenes, tiles, config = list(SAMPLE_SCENES), SAMPLE, CONFIG
    out = tmp_path / "out"
    error: type[Exception] = InputRasterError
    overwrite = False
    if case == "missing_scene":
        scenes = [tmp_path / "nope.tif"]
    elif case == "missing_tile_dir":
        tiles = tmp_path / "no_such_dir"
    elif case == "no_tiles":
        tiles = tmp_path / "empty"
        tiles.mkdir()
    elif case == "no_overlap":
        tiles = tmp_path / "far"
        tiles.mkdir()
        make_geotiff(
            np.ones((100, 100), np.uint8),
            "far/LC_N10E100.tif",
            crs="EPSG:4326",
            transform=Affine(1 / 12000, 0, 100, 0, -1 / 12000, 11),
        )
    elif case == "no_date":
        scenes = [_scene_tif(make_geotiff, "scene.tif", x0=358160, y0=3907432)]
    elif case == "no_anchor_in_any_patch":
        # inside the tile (N35.8°) but far north of its labelled area
        scenes = [_scene_tif(make_geotiff, "n.tif", x0=350000, y0=3962000, tags=SEP)]
        error = DatasetBuildError
    elif case == "all_dropped":
        a = np.zeros((P, P), np.uint16)
        a[:20, :20] = 3000  # 0.6 % valid SAR
        scenes = [
            _scene_tif(make_geotiff, "s.tif", x0=358160, y0=3907432, data=a, tags=SEP)
        ]
        config = BuildConfig(anchors=5000)
        error = DatasetBuildError
    elif case == "output_exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        error = OutputExistsError
    elif case == "overwrite_non_dataset":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        error, overwrite = OutputExistsError, True
    with pytest.raises(error) as info:
        build_dataset(scenes, tiles, out, config, overwrite=overwrite)
    assert "\n" not in str(info.value)
    if case in ("output_exists", "overwrite_non_dataset"):
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    else:
        assert not _leftovers(tmp_path, "out")


@pytest.mark.parametrize(
    "make",
    [
        lambda: parse_split("0.5/0.5/0.2"),
        lambda: parse_split("0.7/0.3"),
        lambda: parse_split("0.7/0.4/-0.1"),
        lambda: parse_split("0/0/0"),
        lambda: parse_split("a/b/c"),
        lambda: parse_months("13"),
        lambda: parse_months("0,9"),
        lambda: parse_months("sep"),
        lambda: BuildConfig(split=(0.9, 0.2, -0.1)),
        lambda: BuildConfig(pretrain_months=(0,)),
        lambda: BuildConfig(pretrain_months=(9, 10), finetune_months=(9,)),
        lambda: BuildConfig(max_nodata=1.0),
        lambda: BuildConfig(anchors=0),
    ],
)
def test_bad_parameters(make):
    with pytest.raises(DatasetBuildError):
        make()


def test_parsers():
    assert parse_split("0.7/0.15/0.15") == (0.7, 0.15, 0.15)
    assert parse_split("0/0/1") == (0.0, 0.0, 1.0)
    assert parse_months("11, 10") == (10, 11)
    assert parse_months("") == ()


def test_overwrite_replaces_a_dataset(built, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "dataset.json").write_text("{}")
    config = BuildConfig(anchors=30, seed=1)
    build_dataset(SAMPLE_SCENES, SAMPLE, out, config, overwrite=True)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["build"]["seed"] == 1 and meta["build"]["anchors"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_cli_prints_the_path_and_maps_errors(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "alosmap", "train", "build-dataset"]
    common = ["--sar", str(SAMPLE), "--lulc", str(SAMPLE), "--anchors", "30"]
    r = subprocess.run(
        [*args, *common, "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "class share" in r.stderr and "pretrain" in r.stderr
    r = subprocess.run(
        [*args, *common, "-o", str(tmp_path / "x"), "--split", "0.5/0.5/0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "--split" in r.stderr
    assert not _leftovers(tmp_path, "x")


def _stub_build(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` (a dataset build) by a stub; return its configs."""
    import types

    configs: list = []

    def build(*args, **kwargs):
        configs.append(args[3])  # (images, labels or legend, output, config)
        return types.SimpleNamespace(summary_text="", path=args[2])

    monkeypatch.setattr(module, name, build)
    return configs


def test_cli_defaults_are_build_config_defaults(tmp_path, cli, monkeypatch):
    """Left out, every option of the paper's path gives BuildConfig's default."""
    from alosmap.train.dataset import jaxa as module

    configs = _stub_build(monkeypatch, module, "build_dataset")
    common = ["train", "build-dataset", "--sar", SAMPLE, "--lulc", SAMPLE]
    code, _, err = cli(*common, "-o", tmp_path / "a")
    assert code == 0, err
    code, _, err = cli(*common, "--min-valid", "0.75", "-o", tmp_path / "b")
    assert code == 0, err
    assert configs == [BuildConfig(), BuildConfig(max_nodata=0.25)]


def test_help_shows_the_defaults_of_the_library():
    """`build-dataset --help` states BuildConfig's and DEFAULT_SPLIT's values."""
    import typer

    from alosmap.cli.train import app
    from alosmap.train.defaults import DEFAULT_SPLIT, MIN_SCENES_FOR_SCENE_SPLIT

    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands["build-dataset"].params}
    d = BuildConfig()
    assert d.split == DEFAULT_SPLIT
    stated = {
        "anchors": f"(default and the paper: {d.anchors:,})",
        "pretrain_months": f"(default {','.join(map(str, d.pretrain_months))})",
        "finetune_months": f"(default {','.join(map(str, d.finetune_months))})",
        "split": f"(default {'/'.join(f'{v:g}' for v in DEFAULT_SPLIT)};",
        "split_by": f"default scene with ≥ {MIN_SCENES_FOR_SCENE_SPLIT} scenes",
        "min_valid": f"(default {1 - d.max_nodata:g};",
        "max_nodata": f"(default {d.max_nodata:g};",
    }
    for name, text in stated.items():
        assert text in params[name].help, (name, params[name].help)
        assert params[name].default is None  # given or not is checked
    shown = {"patch_size": d.patch_size, "min_labelled": d.min_label_fraction}
    for name, value in {**shown, "seed": d.seed}.items():
        assert params[name].default == value, name
        assert params[name].show_default, name


# ------------------------------------------------------------ real JAXA tiles
@pytest.mark.realdata
@pytest.mark.skipif(not JAXA_TILES, reason="real JAXA tiles not in ../shared/data")
@pytest.mark.slow
def test_real_jaxa_tiles_count_and_anchor():
    per_tile = [count_classes([t], block_rows=2000) for t in JAXA_TILES]
    for c in per_tile:
        assert c.sum() == 12000 * 12000
        assert 0.84 <= c[1] / c.sum() <= 0.945  # coastal tiles: mostly water
    counts = np.sum(per_tile, axis=0)
    assert counts.sum() == len(JAXA_TILES) * 12000**2
    assert counts[1] == counts[1:].max()
    n = 1400
    anchors = sample_anchors(
        JAXA_TILES, counts, n, np.random.default_rng(0), block_rows=2000
    )
    per_class = np.bincount(anchors["code"], minlength=15)[1:]
    present = counts[1:] > 0
    assert per_class[~present].sum() == 0
    # equal expected share per present class (binomial: 100 ± 10 for 14 classes)
    assert np.all(np.abs(per_class[present] - n / present.sum()) < 45)
    # anchors land on pixels of their class
    rng = np.random.default_rng(1)
    for a in anchors[rng.choice(n, 25, replace=False)]:
        tile = next(
            t
            for t in JAXA_TILES
            if (b := rasterio.open(t).bounds).left <= a["lon"] < b.right
            and b.bottom < a["lat"] <= b.top
        )
        with rasterio.open(tile) as ds:
            row, col = ds.index(a["lon"], a["lat"])
            value = ds.read(1, window=Window(col, row, 1, 1))[0, 0]
        assert value == a["code"]


# ------------------------------------------------ the paper's path stays as it was
def _files(path: Path) -> dict[str, bytes]:
    """The dataset's files, with its own name (in dataset.json, summary.txt) masked."""
    own = (f'"path": "{path.name}"', f"alosmap dataset {path.name} ")
    masked = ('"path": "<DATASET>"', "alosmap dataset <DATASET> ")
    out = {}
    for p in sorted(path.iterdir()):
        data = p.read_bytes()
        for a, b in zip(own, masked, strict=True):
            data = data.replace(a.encode(), b.encode())
        out[p.name] = data
    return out


PAPER_KEYS = {"format", *RECORD_KEYS}


def test_paper_path_options_at_their_defaults_keep_the_bytes(built, tmp_path, cli):
    result, _ = built
    common = ["train", "build-dataset", "--sar", SAMPLE, "--lulc", SAMPLE]
    code, _, err = cli(*common, "--anchors", 300, "-o", tmp_path / "a")
    assert code == 0, err
    a = _files(tmp_path / "a")
    assert a == _files(result.path)  # the CLI and the library, byte for byte
    assert sorted(a) == [
        "anchors.npy",
        "dataset.json",
        "labels.npy",
        "manifest.csv",
        "sar_db.npy",
        "summary.txt",
    ]
    meta = json.loads(a["dataset.json"])
    assert set(meta) == PAPER_KEYS  # the one record of both sources
    assert meta["labels"] == "jaxa" and meta["legend"]["name"] == "jaxa"
    assert a["manifest.csv"].splitlines()[0].decode() == ",".join(MANIFEST_FIELDS)
    # every new option at its default value (or the same rule): the same files;
    # the image options are recorded in build.image
    explicit = [
        *("--legend", "jaxa-lulc9", "--split-by", "month", "--split", "0.7/0.15/0.15"),
        *("--pretrain-months", "10,11", "--finetune-months", "9", "--anchors", 300),
        *("--min-valid", "0.5", "--min-labelled", "0.5", "--input-units", "auto"),
        *("--band", 1),
    ]
    code, _, err = cli(*common, *explicit, "-o", tmp_path / "b")
    assert code == 0, err
    b = _files(tmp_path / "b")
    assert {k: v for k, v in b.items() if k != "dataset.json"} == {
        k: v for k, v in a.items() if k != "dataset.json"
    }
    meta_b = json.loads(b["dataset.json"])
    assert meta_b["build"].pop("image") == {
        "band": 1,
        "input_units": "auto",
        "nodata": None,
    }
    assert meta["build"].pop("image") == {
        "band": None,
        "input_units": "auto",
        "nodata": None,
    }
    assert meta_b == meta
    # what finetune puts in the model spec: what the scenes hold (ALOS-2 DN)
    alos2 = {
        "band": 1,
        "units": "dn",
        "calibration_factor_db": -83.0,
        "backscatter": "sigma0",
    }
    assert TrainingData(tmp_path / "a").image_radiometry == alos2
    assert TrainingData(tmp_path / "b").image_radiometry == alos2
    assert TrainingData(tmp_path / "a").radiometry.units == "dn"


@pytest.mark.parametrize(
    "args",
    [
        ("--stride", "128"),
        ("--label-nodata", "-1"),
        ("--split-by", "scene"),
        ("--legend", "water-binary"),
        ("--label-pattern", "{stem}.tif"),
    ],
)
def test_paper_path_refuses_options_of_own_data(args, tmp_path, cli):
    code, _, err = cli(
        "train",
        "build-dataset",
        "--sar",
        SAMPLE,
        "--lulc",
        SAMPLE,
        "-o",
        tmp_path / "x",
        *args,
    )
    assert code == 1 and args[0] in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_zero_fractions_and_statistics_without_a_train_split(tmp_path):
    # all finetuning patches to test: statistics from the pretrain split, noted
    config = BuildConfig(anchors=300, seed=0, split=(0.0, 0.0, 1.0))
    result = build_dataset(SAMPLE_SCENES, SAMPLE, tmp_path / "a", config)
    meta = json.loads((result.path / "dataset.json").read_text())
    assert result.summary["patches"]["train"] == result.summary["patches"]["val"] == 0
    assert result.summary["patches"]["test"] > 0
    assert meta["normalization"]["split"] == "pretrain"
    assert np.isfinite(meta["normalization"]["mean_db"])
    assert any("pretrain split" in n for n in result.summary["notes"])
    # no pretraining months either: null statistics, never NaN
    config = BuildConfig(anchors=300, split=(0, 0, 1), pretrain_months=())
    result = build_dataset(SAMPLE_SCENES, SAMPLE, tmp_path / "b", config)
    text = (result.path / "dataset.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["normalization"]["mean_db"] is None
    assert "not train one" in result.summary_text
    data = TrainingData(result.path)
    assert not data.has_statistics and len(PatchDataset(data, "test")) > 0
