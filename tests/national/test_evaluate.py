"""`alosmap evaluate`: a map against a JAXA LULC reference (or another map).

Maps and references are small GeoTIFFs written here; expected confusion matrices
are counted in the tests with the 14 -> 9 remap written out by hand.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from alosmap.errors import InputRasterError
from alosmap.national.evaluate import evaluate_map

JAXA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
JAXA_TILE = JAXA_DIR / "jaxa_hrlulc_v2312" / "LC_N34E139.tif"

#: JAXA code -> LULC-9 code, written out from the JAXA legend (README_JAXA.txt) and
#: the paper's merge: five forests -> Forest, paddy -> Cropland.
HAND_REMAP = {
    1: 1,  # water
    2: 2,  # built-up
    3: 3,  # paddy -> cropland
    4: 3,  # cropland
    5: 4,  # grassland
    6: 5,  # DBF -> forest
    7: 5,  # DNF
    8: 5,  # EBF
    9: 5,  # ENF
    10: 6,  # bare
    11: 5,  # bamboo -> forest
    12: 7,  # solar panel
    13: 8,  # wetland
    14: 9,  # greenhouse
}
UTM54 = CRS.from_epsg(32654)
WGS84 = CRS.from_epsg(4326)
JAXA_T = Affine(1 / 12000, 0, 139.5, 0, -1 / 12000, 35.5)  # on the JAXA grid
UTM_T = Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)


def hand_lulc(jaxa: np.ndarray) -> np.ndarray:
    out = np.zeros_like(jaxa)
    for j, code in HAND_REMAP.items():
        out[jaxa == j] = code
    return out


def write(path, array, *, crs=WGS84, transform=JAXA_T, nodata=0, tags=None):
    return write_raster(
        path, array, crs=crs, transform=transform, nodata=nodata, tags=tags
    )


def lulc_map(path, codes, **kw):
    return write(path, codes.astype(np.uint8), tags={"ALOSMAP_TASK": "lulc"}, **kw)


def water_map(path, values, **kw):
    return write(
        path, values.astype(np.uint8), nodata=255, tags={"ALOSMAP_TASK": "water"}, **kw
    )


@pytest.fixture
def jaxa_ref(tmp_path):
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 15, (90, 120)).astype(np.uint8)  # 0 = no data
    return write(tmp_path / "LC_ref.tif", ref), ref


def one_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_map_against_itself_gives_miou_1(tmp_path):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 10, (70, 50))
    m = lulc_map(tmp_path / "m.tif", codes, crs=UTM54, transform=UTM_T)
    r = evaluate_map(m, m)
    assert r["reference_legend"] == "lulc"
    assert r["metrics"]["miou"] == 1.0 and r["metrics"]["macc"] == 1.0
    cm = np.array(r["confusion_matrix"])
    valid = codes[codes > 0]
    assert np.array_equal(cm, np.diag(np.bincount(valid - 1, minlength=9)))
    assert r["pixels"]["compared"] == valid.size == r["pixels"]["map_valid"]


def test_jaxa_reference_confusion_matches_hand_count(tmp_path, jaxa_ref):
    ref_path, ref = jaxa_ref
    truth = hand_lulc(ref)
    pred = truth.copy()
    rng = np.random.default_rng(2)
    flip = rng.random(pred.shape) < 0.2
    pred[flip] = rng.integers(1, 10, int(flip.sum()))
    pred[:5, :] = 0  # map no data
    m = lulc_map(tmp_path / "m.tif", pred)
    r = evaluate_map(m, ref_path)
    ok = (truth > 0) & (pred > 0)
    expected = np.zeros((9, 9), np.int64)
    np.add.at(expected, (truth[ok] - 1, pred[ok] - 1), 1)
    cm = np.array(r["confusion_matrix"])
    assert np.array_equal(cm, expected)
    f = 4  # Forest index: hand IoU = TP / (row + column - TP)
    iou = expected[f, f] / (expected[f].sum() + expected[:, f].sum() - expected[f, f])
    assert r["metrics"]["per_class"]["Forest"]["iou"] == pytest.approx(iou)
    assert r["metrics"]["per_class"]["Forest"]["accuracy"] == pytest.approx(
        expected[f, f] / expected[f].sum()
    )
    assert r["pixels"] == {
        "map_valid": int((pred > 0).sum()),
        "no_reference": int(((pred > 0) & (truth == 0)).sum()),
        "compared": int(ok.sum()),
    }
    assert 0.5 < r["metrics"]["miou"] < 1.0


def test_water_map_precision_recall(tmp_path, jaxa_ref):
    ref_path, ref = jaxa_ref
    pred = (ref == 1).astype(np.uint8)
    pred[10:30, 10:40] = 1  # some false water
    pred[60:80, :] = 0  # some missed water
    pred[0:3] = 255  # no data
    r = evaluate_map(water_map(tmp_path / "w.tif", pred), ref_path)
    ok = (ref > 0) & (pred != 255)
    tp = int(((pred == 1) & (ref == 1) & ok).sum())
    fp = int(((pred == 1) & (ref != 1) & ok).sum())
    fn = int(((pred == 0) & (ref == 1) & ok).sum())
    m = r["metrics"]
    assert m["iou_water"] == pytest.approx(tp / (tp + fp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["pixels"] == int(ok.sum())


def test_reference_is_reprojected_onto_a_utm_map(tmp_path):
    # blocky JAXA reference (30 x 30 px blocks) on the lon/lat grid
    rng = np.random.default_rng(3)
    blocks = rng.integers(1, 15, (10, 12)).astype(np.uint8)
    ref = np.kron(blocks, np.ones((30, 30), np.uint8))
    t_ref = Affine(1 / 12000, 0, 139.49, 0, -1 / 12000, 35.316)
    ref_path = write(tmp_path / "LC.tif", ref, transform=t_ref)
    # UTM map: each pixel centre looked up in the reference by hand
    t_map = Affine(10.0, 0, 363000.0, 0, -10.0, 3909000.0)
    h, w = 80, 90
    rows, cols = np.mgrid[0:h, 0:w]
    x = t_map.c + (cols + 0.5) * t_map.a
    y = t_map.f + (rows + 0.5) * t_map.e
    lon, lat = warp_transform(UTM54, WGS84, x.ravel(), y.ravel())
    rr = np.floor((np.array(lat) - t_ref.f) / t_ref.e).astype(int).reshape(h, w)
    cc = np.floor((np.array(lon) - t_ref.c) / t_ref.a).astype(int).reshape(h, w)
    assert rr.min() >= 0 and cc.min() >= 0  # the map lies inside the reference
    assert rr.max() < ref.shape[0] and cc.max() < ref.shape[1]
    pred = hand_lulc(ref[rr, cc])
    m = lulc_map(tmp_path / "m.tif", pred, crs=UTM54, transform=t_map)
    r = evaluate_map(m, ref_path)
    assert r["pixels"]["compared"] == h * w
    # GDAL's approximate transformer (0.125 px) may flip pixels at block edges only
    assert r["metrics"]["overall_accuracy"] > 0.995
    assert r["metrics"]["miou"] > 0.98


def test_aoi_counts_pixel_centres_inside(tmp_path, cli):
    rng = np.random.default_rng(4)
    codes = rng.integers(1, 10, (60, 80))
    m = lulc_map(tmp_path / "m.tif", codes, crs=UTM54, transform=UTM_T)
    # AOI: columns 10-39, rows 20-49 of the map, on pixel edges, given in WGS 84
    xs = [UTM_T.c + 10 * 10, UTM_T.c + 40 * 10]
    ys = [UTM_T.f - 20 * 10, UTM_T.f - 50 * 10]
    ring = [(xs[0], ys[0]), (xs[1], ys[0]), (xs[1], ys[1]), (xs[0], ys[1])]
    lon, lat = warp_transform(UTM54, WGS84, *zip(*ring, strict=True))
    coords = [[*zip(lon, lat, strict=True), (lon[0], lat[0])]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": coords},
                    }
                ],
            }
        )
    )
    r = evaluate_map(m, m, aoi=aoi)
    sub = codes[20:50, 10:40]
    assert r["pixels"]["compared"] == sub.size == 900
    assert np.array_equal(
        np.diag(r["confusion_matrix"]), np.bincount(sub.ravel() - 1, minlength=9)
    )
    # the same AOI in UTM coordinates with a legacy "crs" member
    utm = tmp_path / "aoi_utm.geojson"
    utm.write_text(
        json.dumps(
            {
                "type": "Polygon",
                "crs": {"type": "name", "properties": {"name": "EPSG:32654"}},
                "coordinates": [[*ring, ring[0]]],
            }
        )
    )
    assert evaluate_map(m, m, aoi=utm)["confusion_matrix"] == r["confusion_matrix"]
    # ... but without it, projected coordinates are refused
    bare = tmp_path / "aoi_bare.geojson"
    bare.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    code, _, err = cli("evaluate", m, m, "--aoi", bare)
    assert code == 1 and "longitude/latitude" in one_error(err)


def test_cli_writes_json_csv_png(tmp_path, cli, jaxa_ref):
    ref_path, ref = jaxa_ref
    pred = hand_lulc(ref)
    pred[ref == 8] = 3  # EBF mapped as cropland
    m = lulc_map(tmp_path / "m.tif", pred)
    outs = [tmp_path / "r.json", tmp_path / "r.csv"]
    args = ["evaluate", m, ref_path, "-o", outs[0], "-o", outs[1]]
    have_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_mpl = False
    if have_mpl:
        outs.append(tmp_path / "cm.png")
        args += ["-o", outs[2]]
    code, out, err = cli(*args)
    assert code == 0, err
    assert "mIoU" in out and "IoU" in out and "Confusion matrix" in out
    report = json.loads(outs[0].read_text())
    cm = np.array(report["confusion_matrix"])
    rows = list(csv.DictReader(io.StringIO(outs[1].read_text())))
    assert [r["class"] for r in rows[:-1]] == report["classes"] and len(rows) == 10
    for i, row in enumerate(rows[:-1]):
        assert [int(row[f"map:{n}"]) for n in report["classes"]] == cm[i].tolist()
    assert float(rows[-1]["iou"]) == pytest.approx(report["metrics"]["miou"])
    forest = rows[4]
    assert float(forest["accuracy"]) == pytest.approx(
        cm[4, 4] / cm[4].sum()
    )  # EBF pixels went to cropland
    assert forest["precision"] == "1.0"
    if have_mpl:
        assert outs[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("evaluate", m, ref_path, "--json")
    assert code == 0 and json.loads(out)["confusion_matrix"] == cm.tolist()


def test_bad_inputs_give_one_line_and_keep_files(tmp_path, cli, jaxa_ref):
    ref_path, ref = jaxa_ref
    pred = hand_lulc(ref)
    m = lulc_map(tmp_path / "m.tif", pred)
    kept = tmp_path / "r.json"
    kept.write_text("old")
    # existing output without --overwrite: refused before any work
    code, _, err = cli("evaluate", m, ref_path, "-o", kept)
    assert code == 1 and "--overwrite" in one_error(err)
    assert kept.read_text() == "old"
    code, _, err = cli("evaluate", m, ref_path, "-o", kept, "--overwrite")
    assert code == 0, err
    assert json.loads(kept.read_text())["metrics"]["miou"] == 1.0
    new = tmp_path / "new.json"

    def fails(*args, says):
        code, out, err = cli("evaluate", *args, "-o", new)
        assert code == 1, (args, err)
        assert says in one_error(err), err
        assert not new.exists() and out == ""

    # a reference of an unknown legend
    odd = ref.copy()
    odd[0, :3] = (20, 200, 15)
    fails(m, write(tmp_path / "odd.tif", odd), says="[15, 20, 200]")
    # a float "reference"
    fails(m, write(tmp_path / "f.tif", ref.astype(np.float32)), says="float32")
    # a reference that does not overlap
    far = Affine(1 / 12000, 0, 141.0, 0, -1 / 12000, 38.0)
    fails(m, write(tmp_path / "far.tif", ref, transform=far), says="does not overlap")
    # an AOI that does not overlap
    aoi = tmp_path / "far.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "Polygon",
                "coordinates": [[[10, 10], [11, 10], [11, 11], [10, 11], [10, 10]]],
            }
        )
    )
    fails(m, ref_path, "--aoi", aoi, says="does not overlap the map")
    # AOI: unreadable, and not polygons
    junk = tmp_path / "junk.geojson"
    junk.write_text("{not json")
    fails(m, ref_path, "--aoi", junk, says="cannot read AOI")
    pts = tmp_path / "pts.geojson"
    pts.write_text(json.dumps({"type": "Point", "coordinates": [139.5, 35.5]}))
    fails(m, ref_path, "--aoi", pts, says="Polygon or MultiPolygon")
    # maps: no CRS, no task tag, unknown task, values outside LULC-9
    nocrs = write(tmp_path / "nocrs.tif", pred, crs=None, tags={"ALOSMAP_TASK": "lulc"})
    fails(nocrs, ref_path, says="no CRS")
    untagged = write(tmp_path / "untagged.tif", pred)
    fails(untagged, ref_path, says="--task lulc|water")
    code, _, err = cli("evaluate", untagged, ref_path, "--task", "lulc")
    assert code == 0, err
    forest = write(tmp_path / "forest.tif", pred, tags={"ALOSMAP_TASK": "forest"})
    fails(forest, ref_path, says="ALOSMAP_TASK='forest'")
    jaxa_codes = lulc_map(tmp_path / "jaxa_as_lulc.tif", ref)
    fails(jaxa_codes, ref_path, says="outside the LULC-9")
    # a water map cannot be a LULC reference
    w = water_map(tmp_path / "w.tif", (ref == 1))
    fails(m, w, says="cannot serve as a lulc reference")
    # unknown -o suffix: usage error, exit 2
    code, _, _ = cli("evaluate", m, ref_path, "-o", tmp_path / "r.xlsx")
    assert code == 2


def test_lulc_map_is_a_water_reference(tmp_path, jaxa_ref):
    ref_path, ref = jaxa_ref
    lulc = lulc_map(tmp_path / "m.tif", hand_lulc(ref))
    water = (ref == 1).astype(np.uint8)
    water[ref == 0] = 255
    w = water_map(tmp_path / "w.tif", water)
    r = evaluate_map(w, lulc)
    assert r["reference_legend"] == "lulc"
    assert r["metrics"]["iou_water"] == 1.0
    assert r["confusion_matrix"][1][1] == int((ref == 1).sum())
    with pytest.raises(InputRasterError, match=r"is a lulc map .* was given"):
        evaluate_map(w, lulc, reference_legend="water")
    with pytest.raises(InputRasterError, match="no-data 0, which is a class code"):
        evaluate_map(w, ref_path, reference_legend="water")


@pytest.mark.realdata
@pytest.mark.skipif(not JAXA_TILE.exists(), reason=f"{JAXA_TILE} not found")
def test_real_jaxa_tile_as_reference(tmp_path):
    win = Window(9700, 600, 400, 400)  # a coast with all 14 classes
    with rasterio.open(JAXA_TILE) as ds:
        jaxa = ds.read(1, window=win)
        t = ds.window_transform(win)
    assert set(np.unique(jaxa).tolist()) == set(range(1, 15))
    # a map on the tile's own grid: read directly, exact
    m = lulc_map(tmp_path / "m.tif", hand_lulc(jaxa), transform=t)
    r = evaluate_map(m, JAXA_TILE)
    assert r["metrics"]["miou"] == 1.0
    assert r["pixels"]["compared"] == jaxa.size
    w = water_map(tmp_path / "w.tif", (jaxa == 1), transform=t)
    rw = evaluate_map(w, JAXA_TILE)
    assert rw["metrics"]["iou_water"] == 1.0
    assert rw["confusion_matrix"][1][1] == int((jaxa == 1).sum())
    # a UTM map (10 m): the real tile is warped onto its grid
    from rasterio.warp import Resampling, reproject

    t_utm = Affine(10.0, 0, 391500.0, 0, -10.0, 3867800.0)
    utm = np.zeros((300, 250), np.uint8)
    reproject(
        jaxa,
        utm,
        src_transform=t,
        src_crs=WGS84,
        dst_transform=t_utm,
        dst_crs=UTM54,
        src_nodata=0,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    assert (utm > 0).mean() > 0.9  # the UTM map lies inside the window
    u = lulc_map(tmp_path / "u.tif", hand_lulc(utm), crs=UTM54, transform=t_utm)
    r = evaluate_map(u, JAXA_TILE)
    assert r["pixels"]["compared"] == int((utm > 0).sum())
    assert r["metrics"]["overall_accuracy"] > 0.99


def test_int16_reference_with_negative_nodata(tmp_path, jaxa_ref):
    ref_path, ref = jaxa_ref
    wide = ref.astype(np.int16)
    wide[ref == 0] = -1
    wide_path = write(tmp_path / "LC_int16.tif", wide, nodata=-1)
    m = lulc_map(tmp_path / "m.tif", hand_lulc(ref))
    a, b = evaluate_map(m, ref_path), evaluate_map(m, wide_path)
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert b["metrics"]["miou"] == 1.0
    wide[0, 0] = 300
    with pytest.raises(InputRasterError, match=r"\[300\]"):
        evaluate_map(m, write(tmp_path / "LC_bad.tif", wide, nodata=-1))


def _hand_kappa_f1(cm):
    """Cohen's kappa and per-class F1 of a confusion matrix, written out longhand."""
    n = cm.sum()
    p_o = sum(cm[k, k] for k in range(len(cm))) / n
    p_e = sum(cm[k, :].sum() * cm[:, k].sum() for k in range(len(cm))) / n**2
    f1 = []
    for k in range(len(cm)):
        tp, fp, fn = cm[k, k], cm[:, k].sum() - cm[k, k], cm[k, :].sum() - cm[k, k]
        f1.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None)
    return (p_o - p_e) / (1 - p_e), f1


def test_cli_reports_overall_accuracy_kappa_and_f1(tmp_path, cli, jaxa_ref):
    ref_path, ref = jaxa_ref
    pred = hand_lulc(ref)
    pred[ref == 8] = 3  # EBF mapped as cropland
    pred[ref == 12] = 2  # solar panels mapped as built-up: Solar panel F1 = 0
    m = lulc_map(tmp_path / "m.tif", pred)
    outs = [tmp_path / "r.json", tmp_path / "r.csv"]
    code, out, err = cli("evaluate", m, ref_path, "-o", outs[0], "-o", outs[1])
    assert code == 0, err
    report = json.loads(outs[0].read_text())
    cm = np.array(report["confusion_matrix"])
    kappa, f1 = _hand_kappa_f1(cm)
    met = report["metrics"]
    assert met["kappa"] == pytest.approx(kappa) and 0.5 < kappa < 1.0
    assert met["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert [met["f1_per_class"][n] for n in report["classes"]] == pytest.approx(f1)
    assert met["f1_per_class"]["Solar panel"] == 0.0
    assert met["mf1"] == pytest.approx(np.mean(f1))
    # the text table: an F1 row, overall accuracy and kappa
    f1_row = next(ln for ln in out.splitlines() if ln.startswith("F1 "))
    assert f"{100 * f1[0]:.2f}" in f1_row
    assert f"Cohen's kappa {kappa:.3f}" in out and "overall accuracy" in out
    rows = list(csv.DictReader(io.StringIO(outs[1].read_text())))
    assert [float(r["f1"]) for r in rows[:-1]] == pytest.approx(f1)
    assert float(rows[-1]["f1"]) == pytest.approx(met["mf1"])


def test_water_report_has_kappa_and_f1(tmp_path, jaxa_ref):
    from alosmap.national.evaluate import format_report

    ref_path, ref = jaxa_ref
    pred = (ref == 1).astype(np.uint8)
    pred[10:30, 10:40] = 1
    r = evaluate_map(water_map(tmp_path / "w.tif", pred), ref_path)
    kappa, f1 = _hand_kappa_f1(np.array(r["confusion_matrix"]))
    assert r["metrics"]["kappa"] == pytest.approx(kappa)
    assert list(r["metrics"]["f1_per_class"].values()) == pytest.approx(f1)
    text = format_report(r)
    assert "F1" in text and "OA" in text and f"Cohen's kappa {kappa:.3f}" in text


def test_confusion_png_colour_bar_is_in_percent(tmp_path, monkeypatch):
    """Cells and colour bar share one unit: percent of the true class's pixels."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from alosmap.report import plot_confusion

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (figures.append(self), save(self, *a, **k)),
    )
    plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    ax, cax = figures[-1].axes
    image = ax.get_images()[0]
    assert image.norm.vmin == 0.0 and image.norm.vmax == 100.0
    assert [t.get_text() for t in ax.texts] == ["75", "25", "0", "100"]
    assert "%" in cax.get_xlabel() + cax.get_ylabel()
