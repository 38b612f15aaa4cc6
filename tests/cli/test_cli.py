"""The command line: help everywhere, exit codes, fast start without torch."""

import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from alosmap import __version__
from alosmap.cli.main import app

runner = CliRunner()


def _alosmap(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "alosmap", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _walk(group, prefix=()):
    yield prefix
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _walk(cmd, (*prefix, name))


def test_help_everywhere():
    root = typer.main.get_command(app)
    paths = list(_walk(root))
    for group in (("train",), ("export",), ("synth",), ("info",)):
        assert group in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output
        # every option has help text
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help, f"{' '.join(path)} {param.name} has no help"


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"alosmap {__version__}"


def test_help_does_not_import_torch_and_is_fast():
    code = (
        "import sys, time; t = time.perf_counter();"
        "from alosmap.cli.main import app;"
        "from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0;"
        "heavy = [m for m in ('torch', 'timm', 'rasterio', 'onnxruntime', 'numpy')"
        " if m in sys.modules];"
        "print(heavy, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    heavy, _ = out.rsplit("]", 1)
    assert heavy + "]" == "[]", out


def test_exit_codes():
    t0 = time.perf_counter()
    res = _alosmap("--help")
    assert res.returncode == 0 and "info" in res.stdout
    assert time.perf_counter() - t0 < 60  # generous: only catches pathological imports
    assert _alosmap("no-such-command").returncode == 2
    # without a path, info lists this machine's backends (see tests/test_runtime.py)
    assert _alosmap("info").returncode == 0
    assert _alosmap("info", "/no/such/file.tif").returncode == 2


def test_error_is_one_line_exit_1(tmp_path):
    junk = tmp_path / "scene.tif"
    junk.write_bytes(b"II*\x00 this is not really a tiff")
    res = _alosmap("info", str(junk))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), res.stderr
    assert "Traceback" not in res.stderr
    bad_model = tmp_path / "m.safetensors"
    bad_model.write_bytes(b"\x00")
    res = _alosmap("info", str(bad_model))
    assert res.returncode == 1 and "too short" in res.stderr


@pytest.mark.parametrize("task", ["lulc", "water"])
def test_init_info_export_round_trip(tmp_path, task):
    pytest.importorskip("onnxruntime")
    model = tmp_path / f"{task}.safetensors"
    res = runner.invoke(
        app, ["train", "init", "--preset", "tiny", "--task", task, "-o", str(model)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["info", str(model)])
    assert res.exit_code == 0 and f"task        {task}" in res.output
    onnx_path = tmp_path / f"{task}.onnx"
    res = runner.invoke(app, ["export", "onnx", str(model), "-o", str(onnx_path)])
    assert res.exit_code == 0, res.output
    assert "parity: max |Δprob|" in res.output
    res = runner.invoke(app, ["info", "--json", str(onnx_path)])
    assert res.exit_code == 0 and f'"task": "{task}"' in res.output
    # existing output is kept without --overwrite
    res = runner.invoke(app, ["train", "init", "--preset", "tiny", "-o", str(model)])
    assert res.exit_code != 0


def test_info_describes_a_scene():
    import json

    from conftest import SAMPLE_SCENES

    if not SAMPLE_SCENES:
        pytest.skip("sample_data missing")
    res = runner.invoke(app, ["info", "--json", str(SAMPLE_SCENES[0])])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout[res.stdout.index("{") :])
    assert d["crs"] == "EPSG:32654"
    assert d["size"] == "1280 x 1280 px"
    assert d["nodata"] == 0
    assert d["units_guess"] == "dn"
    assert d["acquisition_date"] == "2022-09-12"
    assert d["footprint_wgs84"].startswith("POLYGON ((139.")
    assert 0.6 < d["valid_fraction"] < 0.9
