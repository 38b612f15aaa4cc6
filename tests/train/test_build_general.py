"""``build-dataset`` from the user's own (image, label) pairs, through the real CLI.

The chips here are deliberately not ALOS-2: 2-band float32 σ0 in dB (VV, VH) with
NaN no data on UTM 33N, no acquisition date, and 0/1 water labels with −1 for "no
label" on a geographic (EPSG:4326) grid of another resolution.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import SHARED_DATA, write_raster
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from test_build_dataset import _stub_build

from alosmap.classes import IGNORE_INDEX, load_legend
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.errors import DatasetFormatError

UTM33 = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)
SIZE = 64  # chip side (pixels, 10 m)
P = 32  # patch side of the tests
WATER_DB, LAND_DB = (-21.0, -28.0), (-8.0, -14.0)  # (VV, VH)


def _water_mask(i: int, size: int = SIZE) -> np.ndarray:
    """Chip ``i``'s water: a diagonal river of varying width."""
    r, c = np.mgrid[0:size, 0:size]
    return np.abs(r - c - (i % 3) * 6) < 8 + 2 * i


def _chip_transform(i: int) -> Affine:
    return Affine(10.0, 0.0, 400_000.0 + 2_000.0 * i, 0.0, -10.0, 4_500_000.0)


def _labels_on_wgs84(i: int, *, nodata_value: int, values=(0, 1)) -> tuple:
    """0/1 labels of chip ``i`` on an EPSG:4326 grid (~7 m) around it; −1 outside.

    The bottom 8 rows of the chip are not labelled (``nodata_value``).
    """
    t = _chip_transform(i)
    w, s, e, n = transform_bounds(
        UTM33, WGS84, t.c, t.f - 10 * SIZE, t.c + 10 * SIZE, t.f
    )
    res = 0.00008
    w, n = w - 4 * res, n + 4 * res
    width = int((e - w) / res) + 8
    height = int((n - s) / res) + 8
    lt = Affine(res, 0.0, w, 0.0, -res, n)
    rows, cols = np.mgrid[0:height, 0:width]
    lon = lt.c + (cols + 0.5) * res
    lat = lt.f - (rows + 0.5) * res
    x, y = warp_transform(WGS84, UTM33, lon.ravel(), lat.ravel())
    cc = np.floor((np.asarray(x) - t.c) / 10.0).astype(int).reshape(lon.shape)
    rr = np.floor((t.f - np.asarray(y)) / 10.0).astype(int).reshape(lon.shape)
    inside = (rr >= 0) & (rr < SIZE - 8) & (cc >= 0) & (cc < SIZE)
    water = _water_mask(i)
    lab = np.full(lon.shape, nodata_value, np.int16)
    lab[inside] = np.where(water[rr[inside], cc[inside]], values[1], values[0]).astype(
        np.int16
    )
    return lab, lt


def make_chips(
    root: Path,
    n: int = 5,
    *,
    tag_nodata: bool = False,
    label_values=(0, 1),
    nodata_value: int = -1,
) -> tuple[Path, Path]:
    """``n`` chips in ``root/chips`` and their labels in ``root/labels``.

    Images: ``chip_<i>.tif`` (2 bands VV, VH, float32 dB, NaN no data in the first
    6 rows). Labels: ``chip_<i>_label.tif`` (int16; the −1 no-data value declared
    as the raster's no-data only with ``tag_nodata``).
    """
    chips, labels = root / "chips", root / "labels"
    chips.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        water = _water_mask(i)
        bands = []
        for b in range(2):
            db = np.where(water, WATER_DB[b], LAND_DB[b]) + rng.normal(
                0, 1.5, water.shape
            )
            db[:6] = np.nan
            bands.append(db.astype(np.float32))
        write_raster(
            chips / f"chip_{i}.tif",
            np.stack(bands),
            crs=UTM33,
            transform=_chip_transform(i),
            nodata=float("nan"),
        )
        lab, lt = _labels_on_wgs84(i, nodata_value=nodata_value, values=label_values)
        write_raster(
            labels / f"chip_{i}_label.tif",
            lab,
            crs=WGS84,
            transform=lt,
            nodata=nodata_value if tag_nodata else None,
        )
    return chips, labels


def _args(chips: Path, labels: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "build-dataset",
        "--images",
        str(chips),
        "--labels",
        str(labels),
        "--label-pattern",
        "{stem}_label.tif",
        "--patch-size",
        str(P),
        "-o",
        str(out),
        *extra,
    ]


def _water_args(
    chips: Path, labels: Path, out: Path, *extra: str, band: int = 1
) -> list[str]:
    """:func:`_args` for the 0/1 chips read as water (``band``, ``water-binary``)."""
    legend = ("--legend", "water-binary")
    return _args(chips, labels, out, "--band", str(band), *legend, *extra)


def _manifest_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    """``build-dataset --manifest`` of the 0/1 chips read as water."""
    return [
        "train",
        "build-dataset",
        "--manifest",
        str(manifest),
        "--legend",
        "water-binary",
        "--band",
        "1",
        "--patch-size",
        str(P),
        "-o",
        str(out),
        *extra,
    ]


def _manifest_rows(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------- end to end
def test_chips_to_dataset_with_label_nodata_option(tmp_path, cli):
    chips, labels = make_chips(tmp_path)
    out = tmp_path / "ds"
    code, stdout, err = cli(
        *_water_args(chips, labels, out),
        "--label-nodata",
        "-1",
    )
    assert code == 0, err
    assert stdout.strip() == str(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == "index"
    assert meta["legend"]["name"] == "water" and -1 in meta["legend"]["ignore"]
    assert meta["radiometry"] == {
        "band": 1,
        "units": "db",
        "calibration_factor_db": -83.0,
        "backscatter": "unknown",
    }
    assert not (out / "anchors.npy").exists()
    # 5 chips ≥ 3 scenes: split by scene, no chip in two splits
    assert meta["build"]["split_rule"] == "scene"
    rows = _manifest_rows(out)
    per_chip: dict[str, set[str]] = {}
    for r in rows:
        per_chip.setdefault(r["image"], set()).add(r["split"])
    assert len(per_chip) == 5 and all(len(s) == 1 for s in per_chip.values())
    assert {s for v in per_chip.values() for s in v} == {"train", "val", "test"}
    # 4 patches per chip (64 / 32), the top one keeps its 6 NaN rows (81 % valid)
    assert len(rows) == 20
    assert "class share" in err and "split: default: scene (5 scene(s)" in err


def test_dataset_reads_back_as_legend_indices(tmp_path, cli):
    chips, labels = make_chips(tmp_path)
    out = tmp_path / "ds"
    code, _, err = cli(
        *_water_args(chips, labels, out, band=2),
        "--label-nodata",
        "-1",
        "--split-by",
        "random",
    )
    assert code == 0, err
    data = TrainingData(out)
    assert data.own_legend is not None and data.own_legend.binary
    assert data.legend(None).name == "water"
    assert data.radiometry.units == "db" and data.radiometry.band == 2
    ds = PatchDataset(data, "train", None)
    assert len(ds) > 0 and ds.legend.name == "water"
    with rasterio.open(chips / "chip_0.tif") as src:
        vh = src.read(2)
    checked = 0
    for i, rec in enumerate(data.records):
        if rec.extra["image"] != "../chips/chip_0.tif":  # relative to the dataset
            continue
        r, c = rec.row, rec.col
        stored = np.asarray(data.sar[i], np.float32)
        want = vh[r : r + P, c : c + P]
        np.testing.assert_array_equal(np.isnan(stored), np.isnan(want))
        np.testing.assert_allclose(
            stored[~np.isnan(want)], want[~np.isnan(want)], atol=0.02
        )
        y = np.asarray(data.labels[i])
        assert set(np.unique(y)) <= {0, 1, IGNORE_INDEX}
        truth = _water_mask(0)[r : r + P, c : c + P].astype(np.uint8)
        rows_ = np.arange(r, r + P)[:, None] + np.zeros((1, P), int)
        labelled = rows_ < SIZE - 8  # the label rasters leave the bottom 8 rows out
        assert np.all(y[~labelled] == IGNORE_INDEX)
        agree = (y[labelled] == truth[labelled]).mean()
        assert agree > 0.98, agree  # nearest resampling of a ~7 m grid: edges only
        checked += 1
    assert checked == 4
    # PatchDataset gives the same indices, IGNORE where the SAR is no data
    split = data.indices("train")
    x, y = ds[0]
    stored = np.asarray(data.labels[split[0]])
    nan = np.isnan(np.asarray(data.sar[split[0]], np.float32))
    np.testing.assert_array_equal(y.numpy()[~nan], stored[~nan])
    assert np.all(y.numpy()[nan] == IGNORE_INDEX)
    assert np.isfinite(x.numpy()).all()
    counts = data.class_counts("water")
    assert len(counts) == 2 and sum(counts) > 0


def test_label_nodata_from_the_raster_tag(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=2, tag_nodata=True)
    out = tmp_path / "ds"
    code, _, err = cli(*_water_args(chips, labels, out))
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["build"]["split_rule"] == "random"  # 2 scenes < 3
    assert -1 not in meta["legend"]["ignore"]
    values = {v["value"]: v["meaning"] for v in meta["summary"]["label_values"]}
    assert values[-1] == "no label (raster no-data)"
    # two chips cannot fill three splits by scene: said in the summary
    code, _, err = cli(
        *_water_args(chips, labels, tmp_path / "s", "--split-by", "scene")
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert meta["summary"]["patches"] == {"train": 4, "val": 4, "test": 0}
    assert any(n.startswith("no test patches") for n in meta["summary"]["notes"])


def test_unknown_label_values_are_refused_with_a_table(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=3)
    out = tmp_path / "ds"
    code, stdout, err = cli(*_water_args(chips, labels, out))
    assert code == 1 and stdout == ""
    table, _, error = err.rpartition("alosmap: error: ")
    assert "value" in table and "pixels" in table and "share %" in table
    row = next(line for line in table.splitlines() if line.split()[:1] == ["-1"])
    assert "NOT IN THE LEGEND" in row and row.split()[3] == "3"  # in all 3 files
    assert "class 1: Water" in table and "class 0: Not water" in table
    assert error.count("\n") == 1 and "-1 (" in error and "--label-nodata" in error
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]


def test_jaxa_preset_on_binary_labels_is_refused(tmp_path, cli):
    # 0/1 water masks with 15 for "no label" are not JAXA codes: 15 is refused
    chips, labels = make_chips(tmp_path, n=1, nodata_value=15)
    out = tmp_path / "ds"
    code, _, err = cli(
        *_args(chips, labels, out, "--band", "1", "--legend", "jaxa-lulc9")
    )
    assert code == 1 and "15 (" in err and "NOT IN THE LEGEND" in err
    assert not out.exists()


def test_custom_yaml_legend_merges_values(tmp_path, cli):
    # labels 0 land, 1 water, 2 on the river's centre line: "flooded" merges 2 and 7
    chips, labels = make_chips(tmp_path, n=3, tag_nodata=True, label_values=(0, 2))
    cols = None
    for i in range(3):  # value 1 (open water) and 7 (flooded too) on some columns
        path = labels / f"chip_{i}_label.tif"
        with rasterio.open(path, "r+") as ds:
            a = ds.read(1)
            cols = np.arange(a.shape[1])[None, :]
            a[(a == 2) & (cols % 3 == 0)] = 1
            a[(a == 0) & (cols % 5 == 1)] = 7
            ds.write(a, 1)
    legend = tmp_path / "flood.yaml"
    legend.write_text(
        "name: flood\n"
        "ignore: [-1]\n"
        "classes:\n"
        "  - {name: Dry, values: [0], color: '#d2b48c'}\n"
        "  - {name: Open water, values: [1], color: [0, 0, 255]}\n"
        "  - {name: Flooded, values: [2, 7], code: 2, color: [0, 200, 200]}\n"
    )
    out = tmp_path / "ds"
    code, _, err = cli(
        *_args(chips, labels, out, "--band", "1", "--legend", str(legend))
    )
    assert code == 0, err
    data = TrainingData(out)
    lg = data.legend()
    assert lg.name == "flood" and lg.names == ["Dry", "Open water", "Flooded"]
    assert lg == load_legend(legend)
    y = np.asarray(data.labels)
    assert set(np.unique(y)) <= {0, 1, 2, IGNORE_INDEX}
    assert (y == 1).any() and (y == 2).any()
    # value 7 (dry land of the water mask) is class 2 too
    flooded_dry = 0
    for i, rec in enumerate(data.records):
        chip = int(Path(rec.extra["image"]).stem.split("_")[1])
        dry = ~_water_mask(chip)[rec.row : rec.row + P, rec.col : rec.col + P]
        flooded_dry += int(((y[i] == 2) & dry).sum())
    assert flooded_dry > 0.1 * (y == 2).sum()
    assert len(data.class_counts("flood")) == 3
    ds = PatchDataset(data, "test", "flood")
    assert len(ds) > 0
    with pytest.raises(DatasetFormatError, match="flood"):
        PatchDataset(data, "train", "lulc")


def test_all_test_split_has_no_statistics(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=3)
    out = tmp_path / "ds"
    code, _, err = cli(
        *_water_args(chips, labels, out),
        "--label-nodata",
        "-1",
        "--split",
        "0/0/1",
    )
    assert code == 0, err
    text = (out / "dataset.json").read_text()
    assert "NaN" not in text
    meta = json.loads(text)
    assert meta["normalization"]["mean_db"] is None
    assert meta["normalization"]["std_db"] is None
    assert meta["summary"]["patches"] == {"train": 0, "val": 0, "test": 12}
    assert "can evaluate a model but not train one" in (out / "summary.txt").read_text()
    data = TrainingData(out)
    assert not data.has_statistics
    with pytest.raises(DatasetFormatError, match="not train"):
        _ = data.radiometry
    ds = PatchDataset(data, "test", None, return_db=True)
    x, y, db = ds[0]
    assert set(np.unique(y.numpy())) <= {0, 1, IGNORE_INDEX}
    assert np.isnan(x.numpy()).all() and np.isfinite(db.numpy()).any()


# -------------------------------------------------------------------- splits
def _pair_row(i: int, **columns: str) -> dict[str, str]:
    """The input-manifest row of chip ``i`` (paths relative to the CSV)."""
    return {
        "image": f"chips/chip_{i}.tif",
        "label": f"labels/chip_{i}_label.tif",
        **columns,
    }


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_manifest_with_split_column_and_relative_paths(tmp_path, cli):
    make_chips(tmp_path, n=4, tag_nodata=True)
    wanted = ["train", "train", "val", "test"]
    manifest = _write_manifest(
        tmp_path / "pairs.csv",
        [
            _pair_row(i, split=s, date=f"2023-0{i + 1}-15", scene=f"area{i // 2}")
            for i, s in enumerate(wanted)
        ],
    )
    out = tmp_path / "ds"
    code, _, err = cli(*_manifest_args(manifest, out))
    assert code == 0, err
    rows = _manifest_rows(out)
    for r in rows:
        i = int(Path(r["image"]).stem.split("_")[1])
        assert r["split"] == wanted[i]
        assert r["date"] == f"2023-0{i + 1}-15" and r["scene"] == f"area{i // 2}"
        # named relative to the dataset (no path of the machine that built it)
        assert (out / r["image"]).is_file() and (out / r["label"]).is_file()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["build"]["split_rule"] == "manifest"
    # a split column and --split-by contradict each other
    code, _, err = cli(*_manifest_args(manifest, tmp_path / "x", "--split-by", "scene"))
    assert code == 1 and "split column" in err


def test_manifest_weight_column(tmp_path, cli):
    """``weight``: each pair's patches carry it; 0 leaves the pair out; others
    (negative, not finite, not a number) are refused with the row."""
    from alosmap.train.distributed import WeightedSampler, train_sampler

    make_chips(tmp_path, n=4, tag_nodata=True)
    weights = ["2", "0", "", "0.5"]
    rows = [
        _pair_row(i, split="val" if i == 3 else "train", weight=w)
        for i, w in enumerate(weights)
    ]
    manifest = _write_manifest(tmp_path / "pairs.csv", rows)
    out = tmp_path / "ds"
    code, _, err = cli(*_manifest_args(manifest, out))
    assert code == 0, err
    got = {Path(r["image"]).name: r["weight"] for r in _manifest_rows(out)}
    assert got and set(got.values()) <= {"2", "1", "0.5"}
    assert got["chip_0.tif"] == "2" and got["chip_2.tif"] == "1"
    assert "chip_1.tif" not in got
    meta = json.loads((out / "dataset.json").read_text())
    assert [e["by"] for e in meta["build"]["excluded"]] == ["weight 0"]
    assert [p["weight"] for p in meta["build"]["pairs"]] == [2.0, 1.0, 0.5]
    assert "weight" in (out / "summary.txt").read_text().splitlines()[2]
    data = TrainingData(out)
    w = data.weights("train")
    names = [Path(r.extra["image"]).name for r in data.records if r.split == "train"]
    assert w.tolist() == [2.0 if n == "chip_0.tif" else 1.0 for n in names]
    # training draws ∝ weight; equal weights (the paper's datasets): each once
    assert isinstance(
        train_sampler(PatchDataset(data, "train", None), 1, 0, 0), WeightedSampler
    )
    data.records = [r for r in data.records if r.weight == 1.0 or r.split != "train"]
    plain = train_sampler(PatchDataset(data, "train", None), 1, 0, 0)
    assert not isinstance(plain, WeightedSampler) and len(plain) == len(plain.dataset)
    # chip_0's patches twice as often as chip_2's
    sampler = WeightedSampler(np.repeat(w, 200), num_replicas=1, rank=0, seed=3)
    drawn = np.repeat(np.array(names), 200)[list(sampler)]
    ratio = (drawn == "chip_0.tif").mean() / (drawn == "chip_2.tif").mean()
    n0, n2 = names.count("chip_0.tif"), names.count("chip_2.tif")
    assert abs(ratio / (2.0 * n0 / n2) - 1.0) < 0.1
    assert list(sampler) == list(sampler)  # seeded per epoch
    sampler.set_epoch(1)
    assert list(sampler) != list(WeightedSampler(np.repeat(w, 200), 1, 0, 3))
    for bad in ("-1", "nan", "inf", "heavy"):
        rows[0]["weight"] = bad
        _write_manifest(tmp_path / "bad.csv", rows)
        code, _, err = cli(*_manifest_args(tmp_path / "bad.csv", tmp_path / bad))
        assert code == 1 and "row 2: weight" in err and "≥ 0" in err, (bad, err)


def test_split_by_scene_hits_the_fractions_with_whole_chips(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=10, tag_nodata=True)
    out = tmp_path / "ds"
    code, _, err = cli(
        *_water_args(chips, labels, out),
        "--split-by",
        "scene",
        "--split",
        "0.6/0.2/0.2",
        "--seed",
        "3",
    )
    assert code == 0, err
    rows = _manifest_rows(out)
    chips_of = {
        s: {r["scene"] for r in rows if r["split"] == s}
        for s in ("train", "val", "test")
    }
    assert not (chips_of["train"] & chips_of["val"]) and not (
        chips_of["val"] & chips_of["test"]
    )
    assert not (chips_of["train"] & chips_of["test"])
    # every chip gives 4 patches: 6 / 2 / 2 chips exactly
    assert [len(chips_of[s]) for s in ("train", "val", "test")] == [6, 2, 2]


def test_split_file_and_month_split(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=3, tag_nodata=True)
    split_file = tmp_path / "splits.txt"
    split_file.write_text(
        "# chip -> split\nchip_0 train\nchip_1.tif,val\nchip_2 test\n"
    )
    out = tmp_path / "ds"
    code, _, err = cli(
        *_water_args(chips, labels, out, "--split-file", str(split_file))
    )
    assert code == 0, err
    got = {r["scene"]: r["split"] for r in _manifest_rows(out)}
    assert got == {"chip_0.tif": "train", "chip_1.tif": "val", "chip_2.tif": "test"}
    # no dates anywhere: a month split is refused, naming what is missing
    code, _, err = cli(
        *_water_args(chips, labels, tmp_path / "m", "--split-by", "month")
    )
    assert code == 1 and "date" in err and "chip_0.tif" in err


# ------------------------------------------------------------ images, patches
def test_band_is_required_for_multiband_images(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=1, tag_nodata=True)
    code, _, err = cli(
        *_args(chips, labels, tmp_path / "ds", "--legend", "water-binary")
    )
    assert code == 1 and "--band" in err
    code, _, err = cli(
        *_args(
            chips, labels, tmp_path / "ds", "--legend", "water-binary", "--band", "3"
        )
    )
    assert code == 1 and "--band 3" in err


def test_input_units_linear_and_nodata(tmp_path, cli):
    root = tmp_path / "lin"
    chips, labels = make_chips(root, n=1, tag_nodata=True)
    with rasterio.open(chips / "chip_0.tif") as ds:
        db = ds.read(1)
    power = np.where(np.isnan(db), -9999.0, 10.0 ** (db / 10.0)).astype(np.float32)
    write_raster(
        chips / "chip_0.tif",
        power,
        crs=UTM33,
        transform=_chip_transform(0),
        nodata=None,
    )
    out = tmp_path / "ds"
    base = _args(
        chips, labels, out, "--legend", "water-binary", "--input-units", "linear"
    )
    # without --nodata, −9999 reads as (impossible) negative power
    code, _, err = cli(*base)
    assert code == 1 and "negative values" in err
    code, _, err = cli(*base, "--nodata", "-9999")
    assert code == 0, err
    data = TrainingData(out)
    assert data.meta["radiometry"]["units"] == "linear"
    for i, rec in enumerate(data.records):
        want = db[rec.row : rec.row + P, rec.col : rec.col + P]
        got = np.asarray(data.sar[i], np.float32)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(
            got[~np.isnan(want)], want[~np.isnan(want)], atol=0.02
        )


def test_stride_and_patch_rules(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=1, tag_nodata=True)

    def build(name, *extra):
        code, _, err = cli(*_water_args(chips, labels, tmp_path / name, *extra))
        meta = (
            json.loads((tmp_path / name / "dataset.json").read_text())
            if code == 0
            else {}
        )
        return code, err, meta.get("summary")

    code, err, summary = build("a", "--stride", "16", "--min-labelled", "0")
    assert code == 0, err
    assert summary["candidates"] == 9  # (64 − 32) / 16 + 1 = 3 per side
    assert summary["dropped"] == {"sar_nodata": 0, "label_nodata": 0}
    # the top patches have 6 NaN rows of 32 (81 % valid SAR), the bottom ones
    # labels on 24 of 32 rows (75 % of the valid pixels)
    code, err, summary = build("b", "--min-valid", "0.85")
    assert code == 0, err
    assert summary["dropped"] == {"sar_nodata": 2, "label_nodata": 0}
    code, err, summary = build("c", "--max-nodata", "0.15")
    assert code == 0, err
    assert summary["dropped"] == {"sar_nodata": 2, "label_nodata": 0}
    code, err, summary = build("d", "--min-labelled", "0.8")
    assert code == 0, err
    assert summary["dropped"] == {"sar_nodata": 0, "label_nodata": 2}
    code, err, _ = build("e", "--min-valid", "0.9", "--max-nodata", "0.5")
    assert code == 1 and "disagree" in err


def test_cli_defaults_are_general_config_defaults(tmp_path, cli, monkeypatch):
    """Left out, the shared options (from BuildConfig) give GeneralConfig's
    defaults: the two paths' dataclasses agree."""
    from alosmap.train.dataset import general as module

    configs = _stub_build(monkeypatch, module, "build_general")
    chips, labels = make_chips(tmp_path, n=1)
    args = [
        *("train", "build-dataset", "--images", chips, "--labels", labels),
        *("--label-pattern", "{stem}_label.tif", "--legend", "water-binary"),
    ]
    code, _, err = cli(*args, "-o", tmp_path / "a")
    assert code == 0, err
    code, _, err = cli(*args, "--max-nodata", "0.25", "-o", tmp_path / "b")
    assert code == 0, err
    assert configs == [module.GeneralConfig(), module.GeneralConfig(min_valid=0.75)]
    assert configs[0].fractions == module.DEFAULT_SPLIT


def test_paper_only_options_are_refused_on_own_data(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=1, tag_nodata=True)
    out = tmp_path / "ds"
    code, _, err = cli(
        *_water_args(chips, labels, out),
        "--anchors",
        "10",
    )
    assert code == 1 and "--anchors" in err
    code, _, err = cli(*_args(chips, labels, out, "--band", "1"))
    assert code == 1 and "--legend is needed" in err
    assert not out.exists()


def test_month_split_from_manifest_dates_and_sar_as_images(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=4, tag_nodata=True)
    months = ["2023-01-10", "2023-01-20", "2023-02-05", "2023-03-01"]
    manifest = _write_manifest(
        tmp_path / "pairs.csv",
        [_pair_row(i, date=d) for i, d in enumerate(months)],
    )
    out = tmp_path / "ds"
    code, _, err = cli(*_manifest_args(manifest, out, "--split-by", "month"))
    assert code == 0, err
    by_month: dict[str, set[str]] = {}
    for r in _manifest_rows(out):
        by_month.setdefault(r["date"][:7], set()).add(r["split"])
    assert sorted(by_month) == ["2023-01", "2023-02", "2023-03"]
    assert all(len(s) == 1 for s in by_month.values())  # a month in one split
    assert {s for v in by_month.values() for s in v} == {"train", "val", "test"}
    # --sar works as the images of --labels; --manifest with --labels does not
    args = _water_args(chips, labels, tmp_path / "s")
    assert args[2] == "--images"
    code, _, err = cli(*args[:2], "--sar", *args[3:])
    assert code == 0, err
    code, _, err = cli(
        *_water_args(chips, labels, tmp_path / "x"), "--manifest", manifest
    )
    assert code == 1 and "not both" in err


# ------------------------------------------------------- a real ALOS-2 mosaic tile
MOSAIC_DIR = SHARED_DATA / "alos2_mosaic_N23W161_2020"
MOSAIC_HH = MOSAIC_DIR / "N23W161_20_sl_HH_F02DAR.tif"


@pytest.mark.realdata
@pytest.mark.skipif(not MOSAIC_HH.is_file(), reason="real mosaic tile not in ../shared")
def test_real_mosaic_tile_directory(tmp_path, cli):
    # labels: 0/1 stripes on a 100 m UTM 4N grid over the tile's data (−1 no label)
    utm4 = CRS.from_epsg(32604)
    w, s, e, n = transform_bounds(WGS84, utm4, -160.75, 22.0, -160.05, 22.13)
    t = Affine(100.0, 0.0, w, 0.0, -100.0, n)
    width, height = int((e - w) / 100) + 1, int((n - s) / 100) + 1
    lab = ((np.arange(width)[None, :] // 7) % 2).repeat(height, 0).astype(np.int16)
    lab[:, :3] = -1
    labels = tmp_path / "labels"
    labels.mkdir()
    write_raster(labels / MOSAIC_HH.name, lab, crs=utm4, transform=t, nodata=-1)
    out = tmp_path / "ds"
    code, _, err = cli(
        "train",
        "build-dataset",
        "--images",
        MOSAIC_DIR,
        "--labels",
        labels,
        "--legend",
        "water-binary",
        "-o",
        out,
    )
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    # the directory's HV, date and incidence files are not images
    pairs = meta["build"]["pairs"]  # no absolute path of this machine
    assert [Path(p["image"]).name for p in pairs] == [MOSAIC_HH.name]
    assert not any(os.path.isabs(p["image"]) for p in pairs)
    assert meta["radiometry"] == {
        "band": 1,
        "units": "dn",
        "calibration_factor_db": -83.0,
        "backscatter": "gamma0",
    }
    data = TrainingData(out)
    assert len(data.records) >= 5  # the tile holds data in rows 3950-4499 only
    assert data.records[0].date == "2020-09-09"  # from the tile's date file
    with rasterio.open(MOSAIC_HH) as src:
        for i, rec in enumerate(data.records[:5]):
            window = ((rec.row, rec.row + 256), (rec.col, rec.col + 256))
            dn = src.read(1, window=window).astype(np.float64)
            stored = np.asarray(data.sar[i], np.float32)
            np.testing.assert_array_equal(np.isnan(stored), dn <= 1)  # DN 1: no data
            ok = dn > 1
            want = 20 * np.log10(dn[ok]) - 83.0
            np.testing.assert_allclose(stored[ok], want, atol=0.02)
