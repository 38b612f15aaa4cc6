"""No data lost: outputs never replace inputs, locations checked first, full disks.

Through the real entry point (``alosmap ...`` via the ``cli`` fixture) for the
commands that write models, exports, synthetic data, datasets and training runs
(the map writers have their own tests).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_SCENES, dead_pid

from alosmap._fileio import temp_path

SAMPLE = REPO / "sample_data"


def _one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, err)


def _stale(final: Path, kind: str = "tmp") -> Path:
    """A temporary of ``final`` named as a killed run (a dead pid) leaves it."""
    live = temp_path(final, kind).name  # .<name>.<kind>-<our pid>-<hex>
    return final.with_name(live.replace(f"-{os.getpid()}-", f"-{dead_pid()}-"))


@pytest.fixture
def model_copy(tiny_lulc_model, tmp_path):
    dst = tmp_path / "model.safetensors"
    shutil.copyfile(tiny_lulc_model, dst)
    return dst


# ----------------------------------------------------------- output == input
def test_export_onnx_refuses_a_hard_link_of_the_model(cli, model_copy):
    before = model_copy.read_bytes()
    link = model_copy.with_name("linked.onnx")
    os.link(model_copy, link)
    code, out, err = cli("export", "onnx", model_copy, "-o", link, "--overwrite")
    assert code == 1 and out == ""
    _one_error_line(err, str(link), "input", "--overwrite")
    assert model_copy.read_bytes() == before and link.read_bytes() == before


def test_export_onnx_refuses_a_symlink_to_the_parity_scene(cli, model_copy, tmp_path):
    scene = tmp_path / "scene.tif"
    shutil.copyfile(SAMPLE_SCENES[0], scene)
    before = scene.read_bytes()
    link = tmp_path / "out.onnx"
    link.symlink_to(scene)
    code, _, err = cli(
        "export", "onnx", model_copy, "-o", link, "--parity-scene", scene, "--overwrite"
    )
    assert code == 1
    _one_error_line(err, "input")
    assert link.is_symlink() and scene.read_bytes() == before


def test_export_tensorrt_refuses_the_onnx_file(cli, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not read: the output check comes first")
    engine = tmp_path / "m.engine"
    os.link(onnx_file, engine)
    code, _, err = cli("export", "tensorrt", onnx_file, "-o", engine, "--overwrite")
    assert code == 1
    _one_error_line(err, "input")
    assert onnx_file.read_bytes().startswith(b"not read")


def _build_args(sar: Path, out: Path) -> list[object]:
    return [
        "train", "build-dataset", "--sar", sar, "--lulc", SAMPLE,
        "--anchors", "30", "-o", out, "--overwrite",
    ]  # fmt: skip


def test_build_dataset_refuses_a_directory_holding_an_input(cli, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    scene = scenes / SAMPLE_SCENES[0].name
    shutil.copyfile(SAMPLE_SCENES[0], scene)
    (scenes / "dataset.json").write_text("{}")  # looks like a dataset
    code, _, err = cli(*_build_args(scene, scenes))
    assert code == 1
    _one_error_line(err, "holds the input", "--overwrite")
    assert scene.is_file() and sorted(p.name for p in scenes.iterdir()) == sorted(
        [scene.name, "dataset.json"]
    )


def test_build_dataset_refuses_a_symlink_to_the_label_directory(cli, tmp_path):
    link = tmp_path / "out"
    link.symlink_to(SAMPLE, target_is_directory=True)
    code, _, err = cli(*_build_args(SAMPLE_SCENES[0], link))
    assert code == 1
    _one_error_line(err, "input")
    assert link.is_symlink() and (SAMPLE / "LC_N35E139.tif").is_file()


def test_pretrain_refuses_the_dataset_directory(cli, make_training_data, tmp_path):
    data = make_training_data(splits=(("pretrain", 4), ("train", 4)))
    link = tmp_path / "run"
    link.symlink_to(data, target_is_directory=True)
    before = sorted(p.name for p in data.iterdir())
    args = ["--data", data, "-o", link, "--preset", "tiny", "--epochs", "1"]
    code, _, err = cli("train", "pretrain", *args)
    assert code == 1
    _one_error_line(err, "input")
    assert sorted(p.name for p in data.iterdir()) == before


def test_finetune_refuses_to_write_over_the_pretrained_file(
    cli, make_training_data, tmp_path
):
    data = make_training_data()
    run = tmp_path / "run"
    run.mkdir()
    encoder = run / "model.safetensors"
    encoder.write_bytes(b"an encoder the run would replace")
    args = ["--data", data, "--task", "lulc", "-o", run, "--pretrained", encoder]
    code, _, err = cli("train", "finetune", *args, "--preset", "tiny")
    assert code == 1
    _one_error_line(err, "input")
    assert encoder.read_bytes() == b"an encoder the run would replace"


def test_train_evaluate_refuses_to_write_over_the_model(cli, model_copy, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    model = out / "report.json"
    os.link(model_copy, model)
    args = ["--model", model, "--data", tmp_path, "-o", out]
    code, _, err = cli("train", "evaluate", *args)
    assert code == 1
    _one_error_line(err, "input")
    assert model.read_bytes() == model_copy.read_bytes()


def _water_map(make_geotiff):
    import numpy as np

    codes = np.zeros((32, 40), np.uint8)
    codes[:, :10] = 1
    return make_geotiff(codes, "water.tif", tags={"ALOSMAP_TASK": "water"})


def test_evaluate_refuses_to_write_a_report_over_the_aoi(cli, make_geotiff, tmp_path):
    import json

    m = _water_map(make_geotiff)
    aoi = tmp_path / "aoi.json"
    aoi.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    before = aoi.read_bytes()
    code, out, err = cli("evaluate", m, m, "--aoi", aoi, "-o", aoi, "--overwrite")
    assert code == 1 and out == ""
    _one_error_line(err, "input")
    assert aoi.read_bytes() == before


def test_vectorize_refuses_a_hard_link_of_the_map(cli, make_geotiff, tmp_path):
    m = _water_map(make_geotiff)
    link = tmp_path / "link.geojson"
    os.link(m, link)
    before = m.read_bytes()
    code, out, err = cli("vectorize", m, "-o", link, "--overwrite")
    assert code == 1 and out == ""
    _one_error_line(err, "input")
    assert m.read_bytes() == before


def test_save_model_refuses_an_input(model_copy, tmp_path):
    from alosmap.errors import OutputPathError
    from alosmap.spec import load_model, save_model

    net, spec = load_model(model_copy)
    link = tmp_path / "link.safetensors"
    link.symlink_to(model_copy)
    with pytest.raises(OutputPathError, match="input"):
        save_model(net, spec, link, overwrite=True, inputs=[model_copy])
    assert link.is_symlink()


# ------------------------------------------ output locations checked first
@pytest.mark.parametrize(
    "args",
    [
        ("export", "onnx", "{model}", "-o", "{missing}/m.onnx"),
        ("export", "onnx", "{model}", "-o", "{file}/m.onnx"),
        ("export", "tensorrt", "{model}", "-o", "{missing}/m.engine"),
        ("train", "init", "--preset", "tiny", "-o", "{missing}/m.safetensors"),
        ("synth", "scene", "{file}/sub/dir", "--size", "64"),
        ("synth", "sample-data", "{file}/sub"),
        ("train", "build-dataset", "--sar", "{scene}", "--lulc", "{sample}",
         "-o", "{missing}/data"),
        ("train", "pretrain", "--data", "{missing}", "-o", "{file}/run"),
        ("train", "finetune", "--data", "{missing}", "--task", "lulc",
         "-o", "{file}/run"),
    ],
)  # fmt: skip
def test_output_location_is_checked_before_any_work(cli, model_copy, tmp_path, args):
    file = tmp_path / "plain-file"
    file.write_text("x")
    names = {
        "model": model_copy,
        "missing": tmp_path / "missing",
        "file": file,
        "scene": SAMPLE_SCENES[0],
        "sample": SAMPLE,
    }
    code, out, err = cli(*(a.format(**names) for a in args))
    assert code == 1 and out == ""
    _one_error_line(err, "output")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "plain-file",
    ]


# ------------------------------------------------------------------ disk full
@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 1 MiB tmpfs."""
    return mount_tmpfs("1m")


def test_disk_full_is_one_line_and_leaves_nothing(cli, tiny_disk):
    code, out, err = cli("synth", "scene", tiny_disk, "--size", "1024")
    assert code == 1 and out == ""
    _one_error_line(err, "disk full while writing", "nothing was written")
    assert list(tiny_disk.iterdir()) == []


def test_disk_full_in_an_export_leaves_nothing(cli, model_copy, tiny_disk):
    out_file = tiny_disk / "m.onnx"
    code, out, err = cli("export", "onnx", model_copy, "-o", out_file, "--no-check")
    assert code == 1 and out == ""
    _one_error_line(err, "disk full while writing", "nothing was written")
    assert list(tiny_disk.iterdir()) == []


# ---------------------------------------------------------- stale temporaries
def test_synth_removes_what_a_killed_run_left(cli, tmp_path):
    code, out, err = cli("synth", "scene", tmp_path, "--size", "64")
    assert code == 0, err
    scene = Path(out.splitlines()[0])
    stale = _stale(scene)
    stale.write_bytes(b"half a scene")
    live = temp_path(scene)  # this process is alive: its temporaries stay
    live.write_bytes(b"someone else's")
    code, _, err = cli("synth", "scene", tmp_path, "--size", "64", "--overwrite")
    assert code == 0, err
    assert not stale.exists() and live.exists()


def test_export_onnx_removes_what_a_killed_run_left(cli, model_copy, tmp_path):
    out_file = tmp_path / "m.onnx"
    stale = _stale(out_file)
    stale.write_bytes(b"half an export")
    code, _, err = cli("export", "onnx", model_copy, "-o", out_file, "--no-check")
    assert code == 0, err
    assert not stale.exists() and out_file.is_file()


def test_build_dataset_removes_a_killed_runs_directory(cli, tmp_path):
    out = tmp_path / "data"
    stale = _stale(out)
    (stale / "patches").mkdir(parents=True)
    (stale / "patches" / "sar_db.npy").write_bytes(b"half a dataset")
    code, _, err = cli(*_build_args(SAMPLE, out))
    assert code == 0, err
    assert not stale.exists() and (out / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_train_init_removes_what_a_killed_save_left(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    stale = _stale(model)
    stale.write_bytes(b"half a model")
    code, out, err = cli("train", "init", "--preset", "tiny", "-o", model)
    assert code == 0, err
    assert out.strip() == str(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_training_run_removes_what_a_killed_run_left(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [_stale(run / "last.pt"), _stale(run / "log.csv")]
    for path in stale:
        path.write_bytes(b"half written")
    args = ["--data", tmp_path / "no-data", "-o", run, "--preset", "tiny"]
    code, _, err = cli("train", "pretrain", *args)
    assert code == 1  # the dataset is missing; the run directory was cleaned first
    _one_error_line(err)
    assert not any(p.exists() for p in stale)


# ------------------------------------------------------------ help and shells
def test_completion_is_offered(cli):
    code, out, _ = cli("--help")
    assert code == 0
    assert "--install-completion" in out and "--show-completion" in out
