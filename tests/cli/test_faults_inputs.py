"""Bad inputs through the command line: one clear line, the right exit code, no debris.

Each case of this fault matrix gives exactly one line on stderr
(``alosmap: error: ...``; GDAL's and PROJ's own ``ERROR 1:`` lines count too, so
stderr is captured at the file-descriptor level), exit 2 for a usage error and 1 for
a runtime failure, nothing left behind and the inputs unchanged.

The HTTP servers run in a child process (this file, run as a script), on
``127.0.0.1`` only: rasterio holds the GIL while GDAL opens a dataset, so a server
thread of the test's own process could not answer. The child prints its port once
it listens; the test waits for that line, never for a time.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from http_serve import http_server

#: the grid of the scenes here (UTM 54N, 10 m pixels)
UTM54 = "EPSG:32654"
TRANSFORM = Affine(10.0, 0.0, 350000.0, 0.0, -10.0, 3910000.0)


@pytest.fixture
def cli_fd(monkeypatch, capfd):
    """Run ``alosmap ARGS…`` in this process; (code, stdout, stderr) at fd level."""
    from alosmap.cli.main import run

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["alosmap", *map(str, args)])
        capfd.readouterr()  # nothing of before
        try:
            run()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        out, err = capfd.readouterr()
        return code, out, err

    return invoke


def _one_line(err: str) -> str:
    """The only line on stderr: alosmap's error, nothing from GDAL, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alosmap: error: "), err
    assert "See previous exception" not in lines[0], err
    return lines[0]


def _digest(*paths: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _scene(path: Path, dn: np.ndarray, transform: Affine = TRANSFORM) -> Path:
    """A uint16 DN GeoTIFF (no data 0, synthetic: no bundled-model warning)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=dn.shape[1],
        height=dn.shape[0],
        count=1,
        dtype="uint16",
        nodata=0,
        crs=UTM54,
        transform=transform,
    ) as ds:
        ds.write(dn, 1)
        ds.update_tags(SYNTHETIC="true")
    return path


def _dn(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1500, 9000, size=shape, dtype=np.uint16)


def _vrt(path: Path, size: int, sources: list[tuple[str, int, int, int, int]]) -> Path:
    """A ``size²`` uint16 VRT (no data 0) of sources ``(file, col, row, w, h)``."""
    t = TRANSFORM
    crs = rasterio.crs.CRS.from_string(UTM54).to_wkt()
    parts = [
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
        f"  <SRS>{crs.replace('&', '&amp;').replace('<', '&lt;')}</SRS>",
        f"  <GeoTransform>{t.c!r}, {t.a!r}, 0, {t.f!r}, 0, {t.e!r}</GeoTransform>",
        '  <Metadata><MDI key="SYNTHETIC">true</MDI></Metadata>',
        '  <VRTRasterBand dataType="UInt16" band="1">',
        "    <NoDataValue>0</NoDataValue>",
    ]
    for name, col, row, w, h in sources:
        parts += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="1">{name}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/>',
            "    </SimpleSource>",
        ]
    parts += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------- 1. batch --aoi

AOIS = {
    "not JSON": ("{not json", "cannot read AOI"),
    "empty file": ("", "is empty"),
    "no features": (
        json.dumps({"type": "FeatureCollection", "features": []}),
        "holds no geometry",
    ),
    "a point": (
        json.dumps({"type": "Point", "coordinates": [139.5, 35.5]}),
        "Polygon or MultiPolygon",
    ),
}


@pytest.mark.parametrize("case", list(AOIS))
def test_batch_refuses_a_bad_aoi_before_any_scene(
    case, cli_fd, tiny_lulc_model, tmp_path, monkeypatch
):
    """A bad ``--aoi`` stopped nothing: every scene was opened and failed alike
    ("3 of 3 scenes failed", exit 1). It is a usage error at the start."""
    import alosmap.io.scene

    scenes = [_scene(tmp_path / f"IMG-HH-{i}.tif", _dn((64, 64), i)) for i in range(3)]
    text, says = AOIS[case]
    aoi = tmp_path / "area.geojson"
    aoi.write_text(text)
    before = _digest(*scenes, aoi)
    opened = []

    def no_scene(*args, **kwargs):
        opened.append(args)
        raise AssertionError("a scene was opened")

    monkeypatch.setattr(alosmap.io.scene, "open_raster", no_scene)
    out = tmp_path / "out"
    code, _, err = cli_fd(
        "batch", *scenes, "-o", out, "-m", tiny_lulc_model, "--aoi", aoi, "--no-stac"
    )
    line = _one_line(err)
    assert code == 2, err
    assert "area.geojson" in line and says in line, line
    assert opened == [] and not out.exists()
    assert _digest(*scenes, aoi) == before


# ------------------------------------------------------- 2. a huge, mostly empty VRT


def test_a_huge_vrt_with_data_in_a_corner_is_mapped(cli_fd, tiny_lulc_model, tmp_path):
    """A 10⁶ × 10⁶ px VRT with a small source in its top-left corner: the sample
    (a spread of blocks, then a decimated read) missed the source's data and
    predict said "no valid pixels". Now the sample's miss sends the check to the
    VRT's sources, so the scene opens and its corner is mapped (``--bbox``: the
    map covers that window only; mapping 10¹² px is not the point)."""
    from alosmap.errors import InputRasterError
    from alosmap.io.scene import Scene
    from alosmap.radiometry import Radiometry

    corner = np.zeros((300, 300), np.uint16)
    corner[:100, 200:] = _dn((100, 100))  # data in the source's top-right corner
    _scene(tmp_path / "corner.tif", corner)
    huge = _vrt(tmp_path / "huge.vrt", 10**6, [("corner.tif", 0, 0, 300, 300)])
    with Scene(huge, Radiometry()) as sc:  # the pre-check, directly
        assert (sc.info.width, sc.info.height) == (10**6, 10**6)
        assert sc.units == "dn" and sc.units_source == "guessed from the values"
    # nothing but no data is still refused (after reading the source, not 10¹² px)
    _scene(tmp_path / "zeros.tif", np.zeros((300, 300), np.uint16))
    empty = _vrt(tmp_path / "empty.vrt", 10**6, [("zeros.tif", 0, 0, 300, 300)])
    with pytest.raises(InputRasterError, match="no valid pixels"):
        Scene(empty, Radiometry())

    before = _digest(huge, tmp_path / "corner.tif")
    out = tmp_path / "map.tif"
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    code, stdout, err = cli_fd(
        "-q", "predict", huge, "-m", tiny_lulc_model, "-o", out,
        "--bbox", f"{x0},{y0 - 3000},{x0 + 3000},{y0}", "--bbox-crs", UTM54,
    )  # fmt: skip
    assert code == 0, err
    assert stdout.split() == [str(out)]
    with rasterio.open(out) as ds:
        codes = ds.read(1)
        assert ds.transform == TRANSFORM and codes.shape == (300, 300)
    assert ((codes != 0) == (corner != 0)).all()  # exactly the corner's data
    assert _digest(huge, tmp_path / "corner.tif") == before


# ----------------------------------------------- 3. reads that fail: name the cause


@pytest.fixture
def gdal_http_env(monkeypatch):
    """Fail fast instead of retrying; no directory listings; no proxy."""
    for key, value in {
        "GDAL_HTTP_TIMEOUT": "30",
        "GDAL_HTTP_MAX_RETRY": "0",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(key, value)


READS = {
    # (what, what the line says)
    "VRT source missing": ("gone.tif", "No such file"),
    "VRT source missing mid-scene": ("gone.tif", "No such file"),
    "server without Range": ("remote.tif", "HTTP Range requests"),
    "server dies mid-read": ("remote.tif", "network"),
}


@pytest.mark.parametrize("case", list(READS))
def test_failed_reads_name_the_source_and_the_cause(
    case, cli_fd, tiny_lulc_model, tmp_path, monkeypatch, gdal_http_env
):
    """A missing VRT source or a server that dies said "Read failed. See previous
    exception for details."; a server without Range support said only GDAL's
    "Range downloading not supported by this server!". Now the line names the
    source and GDAL's cause (or that GDAL needs HTTP Range requests)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = work / "map.tif"
    args = ["predict", "-m", tiny_lulc_model, "-o", out]
    names, says = READS[case]
    if case.startswith("VRT"):
        _scene(tmp_path / "here.tif", _dn((600, 600)))
        if case == "VRT source missing":  # found by the first look at the pixels
            vrt = _vrt(tmp_path / "s.vrt", 600, [("gone.tif", 0, 0, 600, 600)])
            extra = []
        else:  # a 5000² VRT: the sample reads here.tif only; a strip fails later
            vrt = _vrt(
                tmp_path / "s.vrt",
                5000,
                [("here.tif", 0, 0, 600, 600), ("gone.tif", 1500, 1500, 100, 100)],
            )
            x0, y0 = TRANSFORM.c, TRANSFORM.f
            extra = ["--bbox", f"{x0},{y0 - 17000},{x0 + 17000},{y0}"]
            extra += ["--bbox-crs", UTM54]
        before = _digest(vrt, tmp_path / "here.tif")
        code, _, err = cli_fd(*args, vrt, *extra)
        assert _digest(vrt, tmp_path / "here.tif") == before
    else:
        served = tmp_path / "www"
        served.mkdir()
        remote = _scene(served / "remote.tif", _dn((1024, 1024)))
        before = _digest(remote)
        mode = "no-range" if "Range" in case else "dies"
        with http_server(served, mode) as base:
            code, _, err = cli_fd(*args, f"{base}/remote.tif")
        assert _digest(remote) == before
    line = _one_line(err)
    assert code == 1, err
    assert names in line and says in line, line
    assert list(work.iterdir()) == []  # nothing left behind


# ---------------------------------------- 4. options that cannot work: usage errors

OPTIONS = {
    "unknown --bbox-crs code": (
        ["--bbox", "1,2,3,4", "--bbox-crs", "EPSG:999999"],
        "--bbox-crs",
    ),
    "--bbox-crs not a CRS": (["--bbox", "1,2,3,4", "--bbox-crs", "foo"], "not a CRS"),
    "latitude beyond 90": (["--bbox", "10,95,11,96"], "latitude 95"),
    "--overlap 999": (["--overlap", "999"], "0..255"),
    "--tile 7": (["--tile", "7"], "256"),
}
COMMANDS = ("predict", "water", "batch")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(OPTIONS))
def test_options_that_cannot_work_are_usage_errors(
    case, command, cli_fd, tiny_lulc_model, tiny_water_model, tmp_path
):
    """An unknown --bbox-crs exited 1 with PROJ's "ERROR 1: PROJ: ..." line before
    alosmap's; a latitude beyond ±90, --overlap 999 and --tile 7 exited 1 (runtime
    failures). They are usage errors: exit 2, one line with the valid range."""
    scene = _scene(tmp_path / "IMG-HH-0.tif", _dn((64, 64)))
    before = _digest(scene)
    model = tiny_water_model if command == "water" else tiny_lulc_model
    out = tmp_path / ("out" if command == "batch" else "map.tif")
    extra, says = OPTIONS[case]
    code, _, err = cli_fd(command, scene, "-m", model, "-o", out, *extra)
    line = _one_line(err)
    assert code == 2, err
    assert says in line, line
    if "overlap" in case:
        assert "--overlap 999" in line, line
    assert not out.exists() and _digest(scene) == before


def test_bench_overlap_beyond_the_tile_is_a_usage_error(cli_fd):
    """``bench --ceiling --overlap 999`` wrote its scenes and failed in predict
    (exit 1); without --ceiling a bad overlap was timed or ignored."""
    code, out, err = cli_fd("bench", "--ceiling", "--overlap", "999", "--size", "64")
    assert code == 2 and out == ""
    assert "--overlap 999: must be in 0..255" in _one_line(err)
    code, out, err = cli_fd("bench", "--overlap", "256", "--size", "0")
    assert code == 2 and out == ""
    assert "--overlap 256: must be in 0..255" in _one_line(err)
