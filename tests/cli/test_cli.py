"""The command line: help everywhere, exit codes, fast start without torch."""

import os
import subprocess
import sys

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


_LAZY_PROBE = (
    "import sys\n"
    "sys.argv = ['alosmap', *{args!r}]\n"
    "from alosmap.cli.main import run\n"
    "try:\n"
    "    run()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "mods = ('alosmap.cli.train', 'alosmap.cli.export', 'alosmap.train',"
    " 'alosmap.export', 'torch')\n"
    "print('LOADED', code, [m for m in mods if m in sys.modules])\n"
)


def _loaded_after(*args):
    """Exit code of `alosmap ARGS` and the heavy/lazy modules it imported."""
    out = subprocess.run(
        [sys.executable, "-c", _LAZY_PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    line = out[out.rindex("LOADED ") :].split(" ", 2)
    return int(line[1]), line[2].strip()


@pytest.mark.parametrize(
    "args",
    [("--help",), ("predict", "--help"), ("predict", "/no/such/scene.tif")],
)
def test_train_and_export_are_mounted_lazily(args):
    code, loaded = _loaded_after(*args)
    assert code == (1 if "/no/such/scene.tif" in args else 0)  # a missing file: 1
    assert loaded == "[]", (args, loaded)


def test_predict_runs_without_timm_torchvision_or_dynamo(
    tiny_lulc_model, small_scene, tmp_path
):
    """The model is built from alosmap's own Swin modules: none of the ≈ 1.5 s of
    modules timm imports (torchvision, torch._dynamo) load for a torch-backend run."""
    probe = (
        "import sys\n"
        f"sys.argv = ['alosmap', 'predict', {str(small_scene)!r}, '-o',"
        f" {str(tmp_path / 'm.tif')!r}, '--model', {str(tiny_lulc_model)!r}]\n"
        "from alosmap.cli.main import run\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "mods = ('timm', 'torchvision', 'torch._dynamo')\n"
        "print('LOADED', [m for m in mods if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "m.tif").is_file()
    assert out.stdout.rstrip().endswith("LOADED []"), out.stdout


def test_lazy_sub_app_loads_when_run():
    code, loaded = _loaded_after("export", "onnx", "--help")
    assert code == 0 and "alosmap.cli.export" in loaded
    assert "alosmap.cli.train" not in loaded


def _eager_app():
    """The app with train and export mounted by `add_typer`, as they were before."""
    import copy

    from alosmap.cli.export import app as export_app
    from alosmap.cli.main import PlainFlagsGroup
    from alosmap.cli.train import app as train_app

    eager = copy.copy(app)
    eager.info = copy.copy(app.info)
    eager.info.cls = PlainFlagsGroup  # the root's help, without the lazy mounting
    eager.registered_groups = list(app.registered_groups)
    eager.add_typer(train_app, name="train")
    eager.add_typer(export_app, name="export")
    return eager


def test_lazy_mount_shows_what_add_typer_shows():
    from alosmap.cli.main import LAZY_APPS

    eager = _eager_app()
    root = typer.main.get_command(eager)
    paths = list(_walk(root))
    assert {("train",), ("export",), ("export", "onnx")} <= set(paths)
    env = {"COLUMNS": "100", "TERM": "dumb"}
    for path in paths:
        want = runner.invoke(eager, [*path, "--help"], env=env)
        got = runner.invoke(app, [*path, "--help"], env=env)
        assert (got.exit_code, got.output) == (want.exit_code, want.output), path
    for args in (["train"], ["trian"], ["export", "nope"]):
        want = runner.invoke(eager, args, env=env)
        got = runner.invoke(app, args, env=env)
        assert (got.exit_code, got.output) == (want.exit_code, want.output), args
    # the one-line help listed without importing equals the sub-app's own
    for name, lazy in LAZY_APPS.items():
        assert root.commands[name].help == lazy.help


def test_exit_codes():
    res = _alosmap("--help")  # its imports: test_help_does_not_import_torch_and_is_fast
    assert res.returncode == 0 and "info" in res.stdout
    assert _alosmap("no-such-command").returncode == 2
    # without a path, info lists this machine's backends (see tests/test_runtime.py)
    assert _alosmap("info").returncode == 0
    assert _alosmap("info", "/no/such/file.tif").returncode == 1  # missing file: 1


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
@pytest.mark.slow
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


def test_missing_input_files_exit_1_usage_errors_exit_2(
    cli, tmp_path, small_scene, tiny_lulc_model
):
    """Anything about the input files is 1 (one error line); bad syntax is 2."""
    gone = tmp_path / "gone.tif"
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    cases = [
        (("predict", gone), "scene not found"),
        (("water", gone), "scene not found"),
        (("predict", a_dir), "scene is a directory"),
        (("predict", small_scene, "-m", tmp_path / "m.safetensors"), "model file"),
        (("stats", gone), "map not found"),
        (("stats", small_scene, "--aoi", tmp_path / "a.geojson"), "AOI file"),
        (("vectorize", gone), "map not found"),
        (("evaluate", gone, small_scene), "map not found"),
        (("info", gone), "input not found"),
    ]
    for args, says in cases:
        code, _, err = cli(*args)
        lines = err.strip().splitlines()
        assert code == 1, (args, err)
        assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), err
        assert says in lines[0] and "Traceback" not in err, (args, err)
    usage = [
        ("predict", small_scene, "--no-such-option"),
        ("predict", small_scene, "--tile", "0"),
        ("predict",),
        ("stats", small_scene, "--format", "xlsx"),
    ]
    for args in usage:
        assert cli(*args)[0] == 2, args


def test_unreadable_input_exits_1(cli, tmp_path, small_scene):
    import os
    import shutil

    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    locked = tmp_path / "locked.tif"
    shutil.copy(small_scene, locked)
    locked.chmod(0)
    code, _, err = cli("stats", locked)
    assert code == 1 and "not readable" in err


@pytest.mark.parametrize(
    ("command", "mb"),
    [("predict", "16"), ("water", "16"), ("batch", "16"), ("stats", "64")],
)
def test_gdal_cache_per_command_and_the_environment_wins(cli, monkeypatch, command, mb):
    """Mapping commands get a small GDAL block cache, the others 64 MB."""
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    code, _, err = cli(command, "--help")
    assert code == 0, err
    assert os.environ["GDAL_CACHEMAX"] == mb
    monkeypatch.setenv("GDAL_CACHEMAX", "300")
    cli(command, "--help")
    assert os.environ["GDAL_CACHEMAX"] == "300"
