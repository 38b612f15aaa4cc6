"""Label checks: classes whose backscatter contradicts the radar, and the way out.

The chips are flood chips as a user would label them from optical images: open
water at about −18 dB and land at about −8 dB (σ0, float32 dB, one band, UTM), with
0/1 water labels (255: no label) on the same grid. In two of five scenes the
"water" labels cover flooded fields instead (−10 and −8.5 dB): the check must flag
exactly those two, and leaving them out (``--exclude-scene`` or the manifest's
``exclude`` column) must clear the flags.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import UTM54, write_raster

from alosmap.train.dataset.label_checks import (
    BIN_DB,
    LOW_DB,
    NBINS,
    check_dataset,
    check_histograms,
)

H, W, P = 64, 128, 64  # chip rows, columns; patch side: two patches per chip
WATER_DB, LAND_DB, NOISE_DB = -18.0, -8.0, 1.5
#: The scenes and the σ0 of what their "water" labels cover (s1, s3: fields).
SCENES = {"s0": WATER_DB, "s1": -10.0, "s2": WATER_DB, "s3": -8.5, "s4": WATER_DB}
BAD = ["s1", "s3"]


def _chip(
    root: Path,
    name: str,
    water_db: float,
    *,
    seed: int,
    water_cols: tuple[int, int] = (40, 100),
    labelled_rows: int = H,
) -> tuple[Path, Path]:
    """Image ``chips/<name>.tif`` and labels ``labels/<name>.tif``.

    Water (label 1) on ``water_cols``, land (0) elsewhere; the right patch
    (columns 64-127) is labelled on its first ``labelled_rows`` rows only.
    """
    rng = np.random.default_rng(seed)
    water = np.zeros((H, W), bool)
    water[:, slice(*water_cols)] = True
    db = np.where(water, water_db, LAND_DB) + rng.normal(0.0, NOISE_DB, (H, W))
    labels = water.astype(np.uint8)
    labels[labelled_rows:, P:] = 255
    grid = {
        "crs": UTM54,
        "transform": Affine(10.0, 0.0, 350_000.0 + 5_000.0 * seed, 0.0, -10.0, 3.9e6),
    }
    for d in ("chips", "labels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    image = write_raster(
        root / "chips" / f"{name}.tif",
        db.astype(np.float32),
        nodata=float("nan"),
        tags={"UNITS": "dB"},
        **grid,
    )
    label = write_raster(root / "labels" / f"{name}.tif", labels, nodata=255, **grid)
    return image, label


def _manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    path = root / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _flood_chips(root: Path, exclude: tuple[str, ...] = ()) -> Path:
    """The five scenes of the module docs and their manifest."""
    rows = []
    for i, (scene, water_db) in enumerate(SCENES.items()):
        image, label = _chip(root, scene, water_db, seed=i)
        row = {
            "image": f"chips/{image.name}",
            "label": f"labels/{label.name}",
            "scene": scene,
        }
        if exclude:
            row["exclude"] = "yes" if scene in exclude else ""
        rows.append(row)
    return _manifest(root, rows)


def _build(manifest: Path, out: Path, *extra: object) -> list[object]:
    return [
        *("train", "build-dataset", "--manifest", manifest, "--legend"),
        *("water-binary", "--input-units", "db", "--patch-size", P, "-o", out),
        *extra,
    ]


def _meta(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def flood_dataset(tmp_path_factory):
    """The five scenes built into a dataset (once for the module's tests)."""
    from alosmap.classes import load_legend
    from alosmap.train.dataset.general import GeneralConfig, build_general
    from alosmap.train.dataset.images import ImageOptions
    from alosmap.train.dataset.pairs import read_pairs_manifest

    root = tmp_path_factory.mktemp("flood")
    out = root / "ds"
    build_general(
        read_pairs_manifest(_flood_chips(root)),
        load_legend("water-binary"),
        out,
        GeneralConfig(patch_size=P),
        image=ImageOptions(input_units="db"),
    )
    return root, out


# ------------------------------------------------------------------ the check
def test_check_flags_exactly_the_scenes_whose_water_is_land(flood_dataset):
    _, out = flood_dataset
    check = check_dataset(out)
    assert check.flagged_scenes == BAD
    rows = {(r.class_name, r.scene): r for r in check.rows}
    for scene, water_db in SCENES.items():
        water, land = rows["Water", scene], rows["Not water", scene]
        assert water.median_db == pytest.approx(water_db, abs=0.3)
        assert land.median_db == pytest.approx(LAND_DB, abs=0.3)
        # quartiles of N(m, 1.5 dB): m ∓ 1.01 dB
        assert water.q3_db - water.q1_db == pytest.approx(2.02, abs=0.3)
        assert water.pixels == 64 * 60 and land.pixels == 64 * 68
        assert not land.flags and abs(land.z) < 1
    # departs: 8 and 9.5 dB from the −18 dB of the scenes, z with the 1 dB floor
    assert rows["Water", "s1"].flags == ("departs",)
    assert rows["Water", "s1"].z == pytest.approx(8.0, abs=0.4)
    # s3's water (−8.5 dB) lies inside land's quartiles, outside water's own
    assert rows["Water", "s3"].flags == ("departs", "overlaps")
    assert {(f.scene, f.rule) for f in check.flags} == {
        ("s1", "departs"),
        ("s3", "departs"),
        ("s3", "overlaps"),
    }
    water = next(c for c in check.classes if c.class_name == "Water")
    assert water.scenes == 5 and water.sd_db == 1.0  # MAD ≈ 0: the floor
    assert water.median_db == pytest.approx(WATER_DB, abs=0.3)


def test_build_summary_shows_the_check_and_the_way_out(flood_dataset):
    _, out = flood_dataset
    meta = _meta(out)
    lc = meta["summary"]["label_check"]
    assert lc["flagged_scenes"] == BAD
    assert lc["rule"]["z_limit"] == 3.5 and lc["rule"]["mad_floor_db"] == 1.0
    assert "--exclude-scene s1 --exclude-scene s3" in lc["way_out"]
    assert any(
        n.startswith("label check: in 2 scene(s)") for n in meta["summary"]["notes"]
    )
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert "label check: σ0 (dB) of each class per scene" in text
    flagged = [ln.split()[1] for ln in text.splitlines() if ln.startswith("  ! ")]
    assert flagged == BAD  # Water rows of s1 and s3 marked, nothing else
    assert "way out: if these labels are wrong, rebuild with --exclude-scene s1" in text
    # class pixels per split and dropped (nothing dropped here)
    px = meta["summary"]["class_pixels"]
    assert sum(px["train"]) + sum(px["val"]) + sum(px["test"]) == 5 * H * W
    assert px["dropped_label_nodata"] == [0, 0] == px["dropped_sar_nodata"]
    assert "class pixels (SAR-valid)" in text


def test_rule_floor_and_minimum_scenes():
    """The rule on histograms: the MAD floor, the 3.5 limit, too few scenes."""

    def hist(medians: list[float], n: int = 1000) -> np.ndarray:
        h = np.zeros((len(medians), 1, NBINS), np.int64)
        rng = np.random.default_rng(0)
        for i, m in enumerate(medians):
            b = np.floor((rng.normal(m, 1.0, n) - LOW_DB) / BIN_DB).astype(int)
            h[i, 0] = np.bincount(b, minlength=NBINS)
        return h

    def flagged(medians: list[float]) -> list[str]:
        scenes = [f"s{i}" for i in range(len(medians))]
        check = check_histograms(hist(medians), scenes, ["Water"], "w")
        return check.flagged_scenes

    # near-identical scenes: the 1 dB floor, so 2 dB off is no flag, 4.5 dB is
    assert flagged([-18.0, -18.05, -17.95, -20.0]) == []
    assert flagged([-18.0, -18.05, -17.95, -22.5]) == ["s3"]
    # scenes that naturally disagree widen the limit (robust SD 1.48 · MAD)
    assert flagged([-15.0, -18.0, -21.0, -16.5, -19.5, -24.0]) == []
    # two scenes cannot say which one is wrong: not judged
    check = check_histograms(hist([-18.0, -9.0]), ["a", "b"], ["Water"], "w")
    assert not check.flags and all(r.z is None for r in check.rows)
    assert "not judged" in check.format()


# ---------------------------------------------------------------- the way out
def test_exclude_scene_and_exclude_column_remove_them(tmp_path, cli):
    manifest = _flood_chips(tmp_path)
    out = tmp_path / "a"
    code, _, err = cli(*_build(manifest, out, "--exclude-scene", "s1"),
                       "--exclude-scene", "s3")  # fmt: skip
    assert code == 0, err
    meta = _meta(out)
    assert meta["summary"]["label_check"]["flagged_scenes"] == []
    with (out / "manifest.csv").open(encoding="utf-8") as f:
        assert {r["scene"] for r in csv.DictReader(f)} == {"s0", "s2", "s4"}
    excluded = meta["build"]["excluded"]
    assert [(e["scene"], e["by"]) for e in excluded] == [
        ("s1", "--exclude-scene"),
        ("s3", "--exclude-scene"),
    ]
    assert [p["scene"] for p in meta["build"]["pairs"]] == ["s0", "s2", "s4"]
    assert meta["build"]["exclude_scenes"] == ["s1", "s3"]
    assert "excluded: 2 pair(s), not used" in (out / "summary.txt").read_text()
    # the manifest's exclude column does the same
    manifest = _flood_chips(tmp_path / "m", exclude=tuple(BAD))
    code, _, err = cli(*_build(manifest, tmp_path / "b"))
    assert code == 0, err
    meta = _meta(tmp_path / "b")
    assert meta["summary"]["label_check"]["flagged_scenes"] == []
    assert [e["by"] for e in meta["build"]["excluded"]] == ["manifest", "manifest"]
    # a scene that does not exist: one line naming the scenes
    code, _, err = cli(*_build(manifest, tmp_path / "c", "--exclude-scene", "s9"))
    assert code == 1 and "--exclude-scene 's9'" in err
    assert "the scenes are s0, s1, s2, s3, s4" in err
    assert not (tmp_path / "c").exists()
    # an exclude cell that is not yes/no
    text = manifest.read_text().replace("yes", "maybe", 1)
    manifest.write_text(text)
    code, _, err = cli(*_build(manifest, tmp_path / "d"))
    assert code == 1 and "exclude 'maybe'" in err


# -------------------------------------------------------------------- inspect
def test_inspect_prints_the_table_and_draws_the_figure(flood_dataset, cli):
    pytest.importorskip("matplotlib")
    root, out = flood_dataset
    png = root / "check.png"
    code, stdout, err = cli("train", "inspect", out, "-o", png)
    assert code == 1, err  # a check that flags exits 1, its report printed
    assert "label check" in stdout and "  ! s1" in stdout and "  ! s3" in stdout
    assert "flags (2 scene(s)):" in stdout and "--exclude-scene s3" in stdout
    assert png.read_bytes().startswith(b"\x89PNG")
    code, _, err = cli("train", "inspect", out, "-o", png)
    assert code == 1 and "--overwrite" in err
    code, stdout, err = cli("train", "inspect", out, "--json")
    assert code == 1, err
    assert json.loads(stdout)["flagged_scenes"] == BAD
    code, _, err = cli("train", "inspect", out, "-o", root / "check.jpg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_inspect_a_dataset_of_jaxa_codes(make_training_data, cli):
    data = make_training_data()  # one scene: the numbers, nothing judged
    code, stdout, err = cli("train", "inspect", data, "--task", "water")
    assert code == 0, err
    assert "Water" in stdout and "synthetic" in stdout and "flags: none" in stdout
    code, stdout, err = cli("train", "inspect", data)  # lulc by default
    assert code == 0 and "Built-up" in stdout


# ---------------------------------------------------------- vanished classes
def test_class_without_training_pixels_is_refused_unless_allowed(tmp_path, cli):
    # water only in the right patches, labelled on 25 of their 64 rows (39 %)
    rows = []
    for i in range(3):
        image, label = _chip(
            tmp_path, f"c{i}", WATER_DB, seed=i, water_cols=(80, W), labelled_rows=25
        )
        rows.append({"image": f"chips/{image.name}", "label": f"labels/{label.name}"})
    manifest = _manifest(tmp_path, rows)
    args = [*_build(manifest, tmp_path / "a"), "--split", "1/0/0", "--split-by"]
    code, out, err = cli(*args, "random", "--min-labelled", "0.5")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert "class 1 'Water'" in lines[0] and "lower --min-labelled" in lines[0]
    assert "dropped 3,600 px by --min-labelled 0.5" in lines[0]  # 3 × 25 × 48
    assert "--allow-missing-classes" in lines[0]
    assert not (tmp_path / "a").exists()
    # allowed: a warning, and the summary says where the class went
    code, _, err = cli(*args, "random", "--min-labelled", "0.5",
                       "--allow-missing-classes")  # fmt: skip
    assert code == 0 and "WARNING" in err and "no model learns it" in err
    px = _meta(tmp_path / "a")["summary"]["class_pixels"]
    assert px["train"] == [3 * 64 * 64, 0]
    assert px["dropped_label_nodata"] == [3 * 25 * 16, 3 * 25 * 48]
    assert "← no training pixels" in (tmp_path / "a" / "summary.txt").read_text()
    # a lower --min-labelled keeps them
    code, _, err = cli(*_build(manifest, tmp_path / "b"), "--split", "1/0/0",
                       "--split-by", "random", "--min-labelled", "0.3")  # fmt: skip
    assert code == 0, err
    assert _meta(tmp_path / "b")["summary"]["class_pixels"]["train"][1] == 3600
