"""`alosmap predict` / `alosmap water` through the real entry point: exit codes,
one-line errors and no output left behind on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from conftest import dead_pid


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _one_error_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _predict_m(cli, scene, model, outdir, *extra):
    """``alosmap -q predict SCENE -m MODEL -o OUTDIR/m.tif EXTRA...``."""
    return cli("-q", "predict", scene, "-m", model, "-o", outdir / "m.tif", *extra)


def test_predict_and_water_succeed(
    cli, small_scene, tiny_lulc_model, tiny_water_model, outdir
):
    code, out, err = cli(
        "-q",
        "predict",
        small_scene,
        "-m",
        tiny_lulc_model,
        "-o",
        outdir / "lulc.tif",
        "--confidence",
    )
    assert code == 0, err
    # every data file written, one per line: the map, then its confidence file
    assert out.splitlines() == [
        str(outdir / "lulc.tif"),
        str(outdir / "lulc_confidence.tif"),
    ]
    assert err == ""  # -q: no progress bar, no summary
    code, out, err = cli(
        "water", small_scene, "-m", tiny_water_model, "-o", outdir / "water.tif"
    )
    assert code == 0, err
    assert "tiles in" in err  # the summary line goes to stderr
    with rasterio.open(outdir / "water.tif") as ds:
        assert ds.nodata == 255
    # task follows the model when not given
    code, out, err = cli(
        "-q", "predict", small_scene, "-m", tiny_water_model, "-o", outdir / "w2.tif"
    )
    assert code == 0, err


def test_usage_errors_exit_2(cli, small_scene, tiny_lulc_model, outdir):
    assert cli("predict")[0] == 2
    # a missing input file is not a usage error: one line, exit 1 (README's rule)
    assert cli("predict", outdir / "missing.tif")[0] == 1
    assert cli("predict", small_scene, "--task", "forest")[0] == 2
    assert cli("predict", small_scene, "--batch-size", "0")[0] == 2
    assert cli("predict", small_scene, "--backend", "tpu")[0] == 2
    assert list(outdir.iterdir()) == []


def _bad_inputs(tmp_path, make_geotiff, small_scene):
    rng = np.random.default_rng(0)
    dn = rng.integers(500, 4000, size=(64, 64), dtype=np.uint16)
    txt = tmp_path / "notes.tif"
    txt.write_text("this is not a raster\n")
    trunc = tmp_path / "truncated.tif"
    data = small_scene.read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    return {
        "not a raster": (txt, [], "cannot read"),
        "truncated": (trunc, [], "truncated|cannot read"),
        "multi-band": (make_geotiff(np.stack([dn, dn]), name="two.tif"), [], "--band"),
        "bad band": (make_geotiff(dn, name="one.tif"), ["--band", "3"], "band"),
        "all no data": (
            make_geotiff(np.zeros((64, 64), np.uint16), name="empty.tif"),
            [],
            "no valid pixels",
        ),
        "all NaN": (
            make_geotiff(
                np.full((64, 64), np.nan, np.float32), name="nan.tif", nodata=None
            ),
            [],
            "no valid pixels",
        ),
        "implausible dB": (
            make_geotiff(dn, name="dn_as_db.tif"),
            ["--input-units", "db"],
            "implausible",
        ),
        "negative DN": (
            make_geotiff(
                -np.abs(rng.normal(10, 3, (64, 64))).astype(np.float32),
                name="neg.tif",
                nodata=None,
            ),
            ["--input-units", "dn"],
            "negative",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not a raster",
        "truncated",
        "multi-band",
        "bad band",
        "all no data",
        "all NaN",
        "implausible dB",
        "negative DN",
    ],
)
def test_bad_scene_one_line_exit_1_no_output(
    cli, case, tmp_path, make_geotiff, small_scene, tiny_lulc_model, outdir
):
    scene, extra, pattern = _bad_inputs(tmp_path, make_geotiff, small_scene)[case]
    code, out, err = cli(
        "predict", scene, "-m", tiny_lulc_model, "-o", outdir / "m.tif", *extra
    )
    assert code == 1, (case, err)
    line = _one_error_line(err)
    assert any(p in line for p in pattern.split("|")), line
    assert out == ""
    assert list(outdir.iterdir()) == [], case


def test_model_spec_mismatch(cli, small_scene, tiny_water_model, outdir):
    code, _, err = cli(
        "predict",
        small_scene,
        "--task",
        "lulc",
        "-m",
        tiny_water_model,
        "-o",
        outdir / "m.tif",
    )
    assert code == 1 and "water model" in _one_error_line(err)
    code, _, err = cli(
        "water",
        small_scene,
        "-m",
        tiny_water_model,
        "--tile",
        "512",
        "-o",
        outdir / "m.tif",
    )
    assert code == 2 and "--tile 512" in _one_error_line(err)  # a usage error
    not_model = outdir.parent / "weights.safetensors"
    not_model.write_bytes(b"\x00" * 16)
    code, _, err = cli("predict", small_scene, "-m", not_model, "-o", outdir / "m.tif")
    assert code == 1
    _one_error_line(err)
    assert list(outdir.iterdir()) == []


def test_output_path_problems(cli, small_scene, tiny_lulc_model, outdir):
    existing = outdir / "m.tif"
    existing.write_bytes(b"keep me")
    predict_existing = ("predict", small_scene, "-m", tiny_lulc_model, "-o", existing)
    code, _, err = cli(*predict_existing)
    assert code == 1 and "--overwrite" in _one_error_line(err)
    assert existing.read_bytes() == b"keep me"
    code, _, err = cli(
        "predict",
        small_scene,
        "-m",
        tiny_lulc_model,
        "-o",
        outdir / "no" / "such" / "dir.tif",
    )
    assert code == 1
    _one_error_line(err)
    code, _, err = cli("-q", *predict_existing, "--overwrite")
    assert code == 0, err
    assert existing.read_bytes()[:2] in (b"II", b"MM")


def test_no_crs_warns_and_writes_ungeoreferenced(
    cli, make_geotiff, tiny_lulc_model, outdir
):
    rng = np.random.default_rng(4)
    dn = rng.integers(500, 4000, size=(80, 90), dtype=np.uint16)
    scene = make_geotiff(dn, name="nocrs.tif", crs=None)
    code, _, err = cli("predict", scene, "-m", tiny_lulc_model, "-o", outdir / "m.tif")
    assert code == 0, err
    # the warning reaches the user once, in the log on stderr
    assert sum("has no CRS" in line for line in err.splitlines()) == 1, err
    with rasterio.open(outdir / "m.tif") as ds:
        assert ds.crs is None
        assert ds.shape == (80, 90)


def test_cli_defaults_are_the_library_defaults():
    """predict, water and batch declare the library defaults (batch: confidence)."""
    import inspect

    from alosmap.cli.batch import batch
    from alosmap.cli.options import plain
    from alosmap.cli.predict import predict, water
    from alosmap.national.batch import BATCH_DEFAULTS
    from alosmap.predict.options import InferenceOptions, option_names

    for command, defaults in (
        (predict, InferenceOptions()),
        (water, InferenceOptions(task="water")),
        (batch, BATCH_DEFAULTS),
    ):
        params = inspect.signature(command).parameters
        for name in option_names():
            if name in params:
                expected = getattr(defaults, name)
                assert plain(params[name].default) == expected, (command, name)
    assert "task" not in inspect.signature(water).parameters


def test_stdout_lists_every_written_file_and_styles_are_beside(
    cli, small_scene, tiny_lulc_model, outdir
):
    pytest.importorskip("matplotlib")
    code, out, err = _predict_m(
        cli,
        small_scene,
        tiny_lulc_model,
        outdir,
        "--confidence",
        "--probabilities",
        "--preview",
        outdir / "m.png",
    )
    assert code == 0, err
    files = ["m.tif", "m_confidence.tif", "m_probabilities.tif", "m.png"]
    assert out.splitlines() == [str(outdir / f) for f in files]
    assert sorted(p.name for p in outdir.iterdir()) == sorted(
        [
            *files,
            "m.qml",
            "m.tif.aux.xml",
            "m_confidence.qml",
            "m_probabilities.qml",
        ]
    )


@pytest.mark.parametrize("how", ["same path", "hard link", "symlink", "confidence"])
def test_output_that_is_the_input_is_refused_even_with_overwrite(
    cli, small_scene, tiny_lulc_model, tiny_water_model, tmp_path, how
):
    d = tmp_path / "scenes"
    d.mkdir()
    scene = d / "scene.tif"
    scene.write_bytes(small_scene.read_bytes())
    before = scene.read_bytes()
    out, extra = scene, []
    if how == "hard link":
        out = d / "link.tif"
        out.hardlink_to(scene)
    elif how == "symlink":
        out = d / "sym.tif"
        out.symlink_to(scene)
    elif how == "confidence":
        out = d / "m.tif"
        (d / "m_confidence.tif").hardlink_to(scene)
        extra = ["--confidence"]
    for command, model in (("predict", tiny_lulc_model), ("water", tiny_water_model)):
        code, stdout, err = cli(
            command, scene, "-m", model, "-o", out, "--overwrite", *extra
        )
        assert code == 1, err
        assert "is the input" in _one_error_line(err)
        assert stdout == ""
    assert scene.read_bytes() == before
    assert not list(d.glob(".*"))  # no temporaries either


def test_preview_is_refused_before_the_run(
    cli, small_scene, tiny_lulc_model, outdir, monkeypatch
):
    base = ("predict", small_scene, "-m", tiny_lulc_model, "-o", outdir / "m.tif")
    # a preview into a missing directory: refused before mapping, no map left
    code, _, err = cli(*base, "--preview", outdir / "nope" / "m.png")
    assert code == 1 and "does not exist" in _one_error_line(err)
    assert "tiles in" not in err  # the mapping run never started
    assert list(outdir.iterdir()) == []
    # the preview is the scene (a GeoTIFF named .png: previews must end so)
    png_scene = outdir.parent / "scene.png"
    png_scene.write_bytes(small_scene.read_bytes())
    before = png_scene.read_bytes()
    png_base = ("predict", png_scene, "-m", tiny_lulc_model, "-o", outdir / "m.tif")
    code, _, err = cli(*png_base, "--preview", png_scene, "--overwrite")
    assert code == 1 and "is the input" in _one_error_line(err)
    assert png_scene.read_bytes() == before
    # matplotlib missing: said first, not after a full mapping run
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = cli(*base, "--preview", outdir / "m.png")
    assert code == 1 and "matplotlib" in _one_error_line(err)
    assert "tiles in" not in err
    assert list(outdir.iterdir()) == []


def test_leftovers_of_a_killed_predict_are_removed_by_the_next(
    cli, small_scene, tiny_lulc_model, outdir
):
    pid = dead_pid()
    stale = [
        outdir / f".m.tif.tmp-{pid}-0123abcd",
        outdir / f".m.tif.cog-{pid}-0123abcd.ovr.tmp",
        outdir / f".m_confidence.tif.cog-{pid}-0123abcd",
    ]
    for f in stale:
        f.write_bytes(b"x" * 100)
    code, _, err = _predict_m(cli, small_scene, tiny_lulc_model, outdir, "--confidence")
    assert code == 0, err
    assert not [p.name for p in outdir.iterdir() if p.name.startswith(".")]


@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 2 MiB tmpfs."""
    return mount_tmpfs("2m")


def test_disk_full_is_one_line_and_leaves_nothing(
    cli, make_geotiff, tiny_lulc_model, tiny_disk
):
    rng = np.random.default_rng(7)
    dn = rng.integers(500, 4000, size=(1100, 1100), dtype=np.uint16)
    scene = make_geotiff(dn, name="big.tif")
    # leave about 200 kB of the 2 MiB: less than the outputs need
    filler = tiny_disk / "filler"
    free = shutil.disk_usage(tiny_disk).free
    filler.write_bytes(b"\0" * (free - 200_000))
    code, out, err = cli(
        "-q",
        "predict",
        scene,
        "-m",
        tiny_lulc_model,
        "-o",
        tiny_disk / "m.tif",
        "--confidence",
        "--probabilities",
        "--tile",
        "256",
        "--overlap",
        "0",
    )
    assert code == 1
    line = _one_error_line(err)
    assert "disk full while writing" in line, err
    assert out == ""
    assert [p.name for p in tiny_disk.iterdir()] == ["filler"]
