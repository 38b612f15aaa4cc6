"""Scenes and maps from anywhere GDAL reads: VRTs, ``/vsizip/``, ``/vsicurl/``, URLs.

The ``/vsicurl/`` tests serve files from a loopback HTTP server with range requests
(:func:`http_serve.http_server`), started by the test on ``127.0.0.1`` and stopped
at its end.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from http_serve import http_server

from alosmap.io.raster import gdal_path, is_virtual, open_raster, raster_stem


@pytest.fixture
def gdal_http_env(monkeypatch):
    """Fail fast instead of retrying; no directory listing requests."""
    for key, value in {
        "GDAL_HTTP_TIMEOUT": "20",
        "GDAL_HTTP_MAX_RETRY": "0",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(key, value)


def dn_scene(make_geotiff, name="scene.tif", size=(96, 80), seed=0):
    """A small uint16 amplitude-DN scene (σ0 about -25..-5 dB), no data 0."""
    rng = np.random.default_rng(seed)
    dn = rng.uniform(1200, 9000, size).astype(np.uint16)
    dn[:4, :4] = 0
    return make_geotiff(dn, name)


def write_vrt(path: Path, source: Path) -> Path:
    """A VRT of band 1 of ``source`` (written by hand: no gdalbuildvrt needed)."""
    with rasterio.open(source) as ds:
        w, h, t = ds.width, ds.height, ds.transform
        crs, dtype, nodata = ds.crs.to_wkt(), ds.dtypes[0], ds.nodata
    gt = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    vrt_type = {"uint16": "UInt16", "uint8": "Byte", "float32": "Float32"}[dtype]
    path.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">\n'
        f"  <SRS>{crs.replace('&', '&amp;').replace('<', '&lt;')}</SRS>\n"
        f"  <GeoTransform>{gt}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="{vrt_type}" band="1">\n'
        f"    <NoDataValue>{nodata:g}</NoDataValue>\n"
        "    <SimpleSource>\n"
        f'      <SourceFilename relativeToVRT="1">{source.name}</SourceFilename>\n'
        "      <SourceBand>1</SourceBand>\n"
        "    </SimpleSource>\n"
        "  </VRTRasterBand>\n"
        "</VRTDataset>\n"
    )
    return path


# ----------------------------------------------------------------- path handling
@pytest.mark.parametrize(
    ("given", "gdal", "stem"),
    [
        ("https://h.org/a/x.tif", "/vsicurl/https://h.org/a/x.tif", "x"),
        (Path("https://h.org/a/x.tif"), "/vsicurl/https://h.org/a/x.tif", "x"),
        (
            "http://127.0.0.1:8/x.tif?sig=1",
            "/vsicurl/http://127.0.0.1:8/x.tif?sig=1",
            "x",
        ),
        ("s3://bucket/k/x.tif", "/vsis3/bucket/k/x.tif", "x"),
        (Path("s3://bucket/k/x.tif"), "/vsis3/bucket/k/x.tif", "x"),
        ("gs://bucket/x.tif", "/vsigs/bucket/x.tif", "x"),
        ("/vsicurl/https://h.org/x.tif", "/vsicurl/https://h.org/x.tif", "x"),
        (Path("/vsicurl/https://h.org/x.tif"), "/vsicurl/https://h.org/x.tif", "x"),
        ("/vsizip/d/a.zip/in/x.tif", "/vsizip/d/a.zip/in/x.tif", "x"),
        ("/vsis3/bucket/x.tif", "/vsis3/bucket/x.tif", "x"),
        # pathlib collapses // : an absolute archive, a nested /vsicurl/ URL
        (Path("/vsizip//tmp/a.zip/x.tif"), "/vsizip//tmp/a.zip/x.tif", "x"),
        (
            Path("/vsizip//vsicurl/https://h.org/a.zip/x.tif"),
            "/vsizip//vsicurl/https://h.org/a.zip/x.tif",
            "x",
        ),
    ],
)
def test_gdal_path_of_urls_and_virtual_paths(given, gdal, stem):
    assert is_virtual(given)
    assert gdal_path(given) == gdal
    assert raster_stem(given) == stem


def test_local_paths_are_left_alone(tmp_path):
    for p in (tmp_path / "x.tif", "rel/x.vrt", "C:x.tif"):
        assert not is_virtual(p)
        assert gdal_path(p) == os.fspath(p)
    assert raster_stem(tmp_path / "IMG-HH-x.tif") == "IMG-HH-x"


def test_open_raster_reads_zip_and_says_what_is_wrong(make_geotiff, tmp_path):
    from alosmap.errors import InputRasterError

    tif = dn_scene(make_geotiff)
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as z:
        z.write(tif, "inner/scene.tif")
    with open_raster(f"/vsizip/{tmp_path / 's.zip'}/inner/scene.tif") as ds:
        assert ds.shape == (96, 80)
    with pytest.raises(InputRasterError, match="cannot read /vsizip/"):
        open_raster(f"/vsizip/{tmp_path / 's.zip'}/inner/nope.tif")
    with pytest.raises(InputRasterError, match="not found"):
        open_raster(tmp_path / "missing.tif")


# ----------------------------------------------------------------- through the CLI
def _same_map(a, b):
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert da.transform == db.transform and da.crs == db.crs
        assert np.array_equal(da.read(1), db.read(1))


def test_predict_vsizip_and_vrt_scenes(
    cli, make_geotiff, tiny_lulc_model, tmp_path, monkeypatch
):
    tif = dn_scene(make_geotiff)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("-q", "predict", tif, "-m", tiny_lulc_model, "-o", "ref.tif")
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as z:
        z.write(tif, "zipped.tif")
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    monkeypatch.chdir(out_dir)
    zipped = f"/vsizip/{tmp_path / 'scenes.zip'}/zipped.tif"
    code, out, err = cli("-q", "predict", zipped, "-m", tiny_lulc_model)
    assert code == 0, err
    # default output: <stem>_<task>.tif in the current directory
    assert out.splitlines() == [str(out_dir / "zipped_lulc.tif")]
    _same_map(tmp_path / "ref.tif", out_dir / "zipped_lulc.tif")
    vrt = write_vrt(tmp_path / "scene.vrt", tif)
    code, out, err = cli("-q", "predict", vrt, "-m", tiny_lulc_model)
    assert code == 0, err
    _same_map(tmp_path / "ref.tif", out_dir / "scene_lulc.tif")


def test_preview_of_a_zipped_scene(cli, make_geotiff, tiny_water_model, tmp_path):
    pytest.importorskip("matplotlib")
    tif = dn_scene(make_geotiff)
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as z:
        z.write(tif, "zipped.tif")
    zipped = f"/vsizip/{tmp_path / 'scenes.zip'}/zipped.tif"
    out, png = tmp_path / "w.tif", tmp_path / "w.png"
    code, _, err = cli(
        "-q", "water", zipped, "-m", tiny_water_model, "-o", out, "--preview", png
    )  # fmt: skip
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_of_a_zipped_map(cli, make_geotiff, tmp_path):
    from alosmap.classes import LULC9_CLASSES

    codes = np.array([c.code for c in LULC9_CLASSES], np.uint8)
    m = make_geotiff(np.resize(codes, (40, 50)), "m.tif", tags={"ALOSMAP_TASK": "lulc"})
    with zipfile.ZipFile(tmp_path / "maps.zip", "w") as z:
        z.write(m, "m.tif")
    code, out, err = cli(
        "stats", f"/vsizip/{tmp_path / 'maps.zip'}/m.tif", "--format", "csv"
    )
    assert code == 0, err
    assert out == cli("stats", m, "--format", "csv")[1]


def test_batch_and_evaluate_read_zipped_inputs(
    cli, make_geotiff, tiny_lulc_model, tmp_path
):
    tif = dn_scene(make_geotiff)
    zipped_dir = tmp_path / "zipped"
    zipped_dir.mkdir()
    with zipfile.ZipFile(zipped_dir / "scenes.zip", "w") as z:
        z.write(tif, "zipped.tif")
    scene = f"/vsizip/{zipped_dir / 'scenes.zip'}/zipped.tif"
    code, _, err = cli(
        "-q", "batch", scene, "-m", tiny_lulc_model, "-o", tmp_path / "maps",
        "--no-stac",
    )  # fmt: skip
    assert code == 0, err
    ref = tmp_path / "ref.tif"
    code, _, err = cli("-q", "predict", tif, "-m", tiny_lulc_model, "-o", ref)
    assert code == 0, err
    _same_map(tmp_path / "maps" / "zipped_lulc.tif", ref)
    with zipfile.ZipFile(zipped_dir / "maps.zip", "w") as z:
        z.write(tmp_path / "maps" / "zipped_lulc.tif", "m.tif")
    zipped_map = f"/vsizip/{zipped_dir / 'maps.zip'}/m.tif"
    code, _, err = cli(
        "evaluate", zipped_map, ref, "-o", tmp_path / "report.json"
    )  # fmt: skip
    assert code == 0, err
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"]["overall_accuracy"] == pytest.approx(1.0)


def test_vsicurl_scene_and_map(
    cli, make_geotiff, tiny_lulc_model, tmp_path, monkeypatch, gdal_http_env
):
    served = tmp_path / "www"
    served.mkdir()
    tif = dn_scene(make_geotiff, "remote.tif")
    tif.rename(served / "remote.tif")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with http_server(served) as base:
        code, out, err = cli(
            "-q", "predict", f"/vsicurl/{base}/remote.tif", "-m", tiny_lulc_model
        )
        assert code == 0, err
        assert out.splitlines() == [str(work / "remote_lulc.tif")]
        # a plain URL is read through /vsicurl/ too; the output is named the same
        code, out, err = cli(
            "-q", "predict", f"{base}/remote.tif", "-m", tiny_lulc_model,
            "-o", "url.tif",
        )  # fmt: skip
        assert code == 0, err
        _same_map(work / "remote_lulc.tif", work / "url.tif")
        (work / "remote_lulc.tif").rename(served / "remote_lulc.tif")
        code, out, err = cli(
            "stats", f"/vsicurl/{base}/remote_lulc.tif", "--format", "csv"
        )
        assert code == 0, err
        local = cli("stats", work / "url.tif", "--format", "csv")
        assert local[0] == 0 and out == local[1]
        # a file the server does not have: one error line, exit 1
        code, out, err = cli("-q", "predict", f"/vsicurl/{base}/gone.tif")
        assert code == 1 and "alosmap: error:" in err and "gone.tif" in err
        assert len(err.strip().splitlines()) == 1, err
