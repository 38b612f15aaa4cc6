"""Fault matrix, models and training: bad inputs and attacks through the CLI.

Each case gives one ``alosmap: error:`` line on stderr with the conventional exit
code, leaves nothing behind, changes no input and executes nothing it was given.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from alosmap.spec import SPEC_KEY, load_model, load_spec

REPO = Path(__file__).resolve().parents[2]
BUNDLED = sorted((REPO / "alosmap" / "weights").glob("*.safetensors"))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative name → SHA-256): what a run changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _absolute_paths(text: str, *places: Path) -> list[str]:
    """The folders of this machine (``places``, the repository) that ``text`` names."""
    roots = {str(p) for p in places} | {str(p.resolve()) for p in places}
    roots |= {str(REPO), "/tmp/", "/home/", "/root/", "/Users/"}
    return sorted(r for r in roots if len(r) > 1 and r in text)


# --- 1. ONNX external data outside the model's folder --------------------------------


@pytest.fixture(scope="module")
def tiny_onnx_file(tiny_lulc_model, tmp_path_factory) -> Path:
    """The tiny LULC model exported to ONNX (TorchScript exporter: fast)."""
    pytest.importorskip("onnxruntime")
    from alosmap.export.onnx import export_onnx

    net, spec = load_model(tiny_lulc_model)
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(
        net, out, metadata={SPEC_KEY: spec.to_json()}, exporter="torchscript"
    )


def _with_external_data(src: Path, folder: Path, location: str) -> Path:
    """``src`` with its largest initializer's data moved to ``location``.

    The bytes are written where ``location`` points (relative to ``folder``, or
    absolute), so only where they lie decides whether the model may run.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    data = numpy_helper.to_array(tensor).tobytes()
    target = Path(location) if os.path.isabs(location) else folder / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "model.onnx"
    onnx.save(model, str(out))
    return out


def test_onnx_external_data_outside_its_folder_is_refused(
    cli, tiny_onnx_file, small_scene, tmp_path
):
    import onnx

    # inside the model's folder: runs (the check refuses only what ONNX Runtime does)
    good = _with_external_data(tiny_onnx_file, tmp_path / "good", "weights.bin")
    code, out, err = cli("info", good)
    assert code == 0 and "backend     onnx: runs here on cpu" in out, err
    secret = tmp_path / "secret.bin"
    for location in ("../secret.bin", str(secret), "sub/../../secret.bin"):
        folder = tmp_path / f"bad{len(location)}"
        model = _with_external_data(tiny_onnx_file, folder, location)
        name = onnx.load(str(model), load_external_data=False).graph.initializer
        tensor = next(t.name for t in name if t.external_data)
        before = {**_tree(tmp_path)}
        code, out, err = cli("info", model)
        line = _one_error_line(err)
        assert code == 1 and out == "", (location, out)
        assert f"tensor {tensor!r}" in line and repr(location) in line, line
        assert "cannot run" in line
        # predict -m refuses it with the same line, before any work
        map_path = tmp_path / "map.tif"
        code, _, err2 = cli("predict", small_scene, "-m", model, "-o", map_path)
        assert code == 1 and _one_error_line(err2) == line
        assert _tree(tmp_path) == before  # nothing written, no input changed
    # a location that names no file: refused as ONNX Runtime would
    missing = _with_external_data(tiny_onnx_file, tmp_path / "gone", "w.bin")
    (tmp_path / "gone" / "w.bin").unlink()
    code, _, err = cli("info", missing)
    assert code == 1 and "'w.bin', no such file" in _one_error_line(err)


# --- 2. bench: nothing measured ------------------------------------------------------


def test_bench_with_no_variant_measured_exits_1(
    cli, tiny_onnx_file, tmp_path, monkeypatch
):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the bench's work folder
    fast = ["--size", "0", "--agree-tiles", "1", "--batches", "1"]
    fast += ["--batch-sizes", "1", "-m", tiny_onnx_file]
    # an fp32 graph cannot run fp16 on the CPU: every variant fails
    code, out, err = cli("bench", "--backends", "onnx-fp16", *fast)
    line = _one_error_line(err)
    assert code == 1 and out == "", out
    assert "no variant could be measured (onnx-fp16: --precision fp16" in line
    assert list(scratch.iterdir()) == []  # its work folder is gone
    # one variant measured: exit 0, the failed one reported in the table
    code, out, err = cli("bench", "--backends", "onnx,onnx-fp16", *fast)
    assert code == 0, err
    assert "alosmap: error" not in err
    assert any(
        ln.startswith("onnx-fp16") and " failed: " in ln for ln in out.splitlines()
    )
    assert list(scratch.iterdir()) == []


# --- 3. a bad --pretrained (or dataset) leaves no run folder -------------------------


class _Evil:
    """Unpickled, it would create the file it names: the attack to refuse."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bad_training_inputs_leave_no_run_folder(cli, make_training_data, tmp_path):
    import torch

    data = make_training_data(splits=(("pretrain", 8), ("train", 8), ("val", 4)))
    marker = tmp_path / "PWNED"
    evil, junk = tmp_path / "evil.pth", tmp_path / "junk.pth"
    torch.save({"model": {"w": _Evil(marker)}}, evil)
    junk.write_bytes(b"not a checkpoint, not a pickle\n")
    kept = tmp_path / "kept"  # a folder of the user's: stays, and stays empty
    kept.mkdir()
    fast = ["--preset", "tiny", "--epochs", "1", "--batch-size", "4"]
    fast += ["--workers", "0", "--device", "cpu"]
    before = _tree(tmp_path)
    for pretrained, why in (
        (evil, "cannot be loaded safely"),
        (junk, "not a readable"),
    ):
        for out in (tmp_path / "runs" / "new" / "ft", kept):
            code, _, err = cli(
                *("train", "finetune", "--data", data, "--task", "water", "-o", out),
                *("--pretrained", pretrained, *fast),
            )
            line = _one_error_line(err)
            assert code == 1 and why in line and pretrained.name in line, line
            assert not marker.exists()  # nothing was unpickled
            assert not (tmp_path / "runs").exists() and list(kept.iterdir()) == []
    assert _tree(tmp_path) == before  # no input changed
    # pretrain on a dataset whose patches were cut short: refused, nothing left
    sar = data / "sar_db.npy"
    sar.write_bytes(sar.read_bytes()[: sar.stat().st_size // 2])
    code, _, err = cli("train", "pretrain", "--data", data, "-o",
                       tmp_path / "runs" / "pre", *fast)  # fmt: skip
    assert code == 1 and "sar_db.npy: not a readable .npy" in _one_error_line(err)
    assert not (tmp_path / "runs").exists()
    # adapt: a scene that is no raster; nothing written
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"not a raster")
    model = tmp_path / "model.safetensors"
    code, _, err = cli("train", "init", "--preset", "tiny", "--tile-size", "64",
                       "--task", "water", "-o", model)  # fmt: skip
    assert code == 0, err
    code, _, err = cli("train", "adapt", model, "--images", scene,
                       "-o", kept / "adapted.safetensors")  # fmt: skip
    assert code == 1 and "scene.tif" in _one_error_line(err)
    assert list(kept.iterdir()) == []


# --- 4. a multi-band label raster ----------------------------------------------------


def _own_pairs(root: Path) -> tuple[Path, Path]:
    """A 64² σ0 dB image and a 3-band label raster on its grid (0/1 in bands 1-2).

    Band 1 is valid labels too (water-binary), so reading it silently would build.
    """
    from conftest import DEFAULT_TRANSFORM, UTM54, write_raster

    rng = np.random.default_rng(3)
    water = np.zeros((64, 64), bool)
    water[:, :24] = True
    db = np.where(water, -22.0, -8.0) + rng.normal(0, 1.0, water.shape)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    grid = {"crs": UTM54, "transform": DEFAULT_TRANSFORM}
    image = root / "images" / "scene.tif"
    write_raster(image, db.astype(np.float32), nodata=float("nan"), **grid)
    bands = np.stack([~water, water, np.zeros_like(water)]).astype(np.uint8)
    label = root / "labels" / "scene.tif"
    write_raster(label, bands, nodata=None, **grid)
    return image, label


def _build_args(root: Path, out: Path, *extra: object) -> list[object]:
    return [
        *("train", "build-dataset", "--images", root / "images"),
        *("--labels", root / "labels", "--legend", "water-binary"),
        *("--patch-size", "32", "--split", "0.5/0.5/0", "--split-by", "random"),
        *("-o", out, *extra),
    ]


def test_multiband_label_raster_needs_label_band(cli, tmp_path):
    _, label = _own_pairs(tmp_path)
    out = tmp_path / "ds"
    before = _tree(tmp_path)
    code, _, err = cli(*_build_args(tmp_path, out))
    line = _one_error_line(err)
    assert code == 1 and str(label) in line and "has 3 bands" in line, line
    assert "--label-band" in line
    code, _, err = cli(*_build_args(tmp_path, out, "--label-band", "4"))
    assert code == 1 and "--label-band 4, but" in _one_error_line(err)
    assert not out.exists() and _tree(tmp_path) == before
    # --label-band 2: the labels are band 2's (water on the left 24 columns)
    code, _, err = cli(*_build_args(tmp_path, out, "--label-band", "2"))
    assert code == 0, err
    from alosmap.train.data import TrainingData

    data = TrainingData(out)
    assert data.meta["build"]["label_band"] == 2
    for rec, y in zip(data.records, np.asarray(data.labels), strict=True):
        want = (np.arange(rec.col, rec.col + 32) < 24).astype(np.uint8)
        assert (y == want[None, :]).all()
    # the paper's path has no label band to choose
    code, _, err = cli(
        *("train", "build-dataset", "--sar", tmp_path / "images", "--lulc", tmp_path),
        *("--label-band", "2", "-o", tmp_path / "p"),
    )
    assert code == 1 and "--label-band does not apply" in _one_error_line(err)


# --- 5. no absolute path of the machine that made a file -----------------------------


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_models_name_no_absolute_path(path):
    from alosmap.spec import read_safetensors_metadata

    meta = read_safetensors_metadata(path)
    text = json.dumps(meta)
    assert not _absolute_paths(text), _absolute_paths(text)
    for key, value in load_spec(path).provenance.items():
        assert not os.path.isabs(value), (key, value)


def test_build_dataset_finetune_and_adapt_record_no_absolute_path(
    cli, make_training_data, small_scene, tmp_path
):
    from alosmap._fileio import sha256_file
    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.train.checkpoint import save_encoder

    # build-dataset from pairs given by absolute paths
    image, label = _own_pairs(tmp_path)
    ds = tmp_path / "ds"
    code, _, err = cli(*_build_args(tmp_path, ds, "--label-band", "2"))
    assert code == 0, err
    for name in ("dataset.json", "manifest.csv", "summary.txt"):
        text = (ds / name).read_text(encoding="utf-8")
        assert not _absolute_paths(text, tmp_path), (name, _absolute_paths(text))
    (pair,) = json.loads((ds / "dataset.json").read_text())["build"]["pairs"]
    assert (ds / pair["image"]).resolve() == image.resolve()
    assert pair["image_sha256"] == sha256_file(image)
    assert pair["label_sha256"] == sha256_file(label)
    # finetune from an encoder file
    data = make_training_data()
    arch = get_preset("tiny", img_size=64)
    encoder = save_encoder(
        build_model(arch).encoder, arch, tmp_path / "enc.safetensors"
    )
    run = tmp_path / "run"
    code, _, err = cli(
        *("train", "finetune", "--data", data, "--task", "water", "-o", run),
        *("--pretrained", encoder, "--preset", "tiny", "--epochs", "1"),
        *("--batch-size", "4", "--workers", "0", "--device", "cpu"),
    )
    assert code == 0, err
    model = run / "model.safetensors"
    p = load_spec(model).provenance
    assert not _absolute_paths(json.dumps(p), tmp_path), p
    assert p["data"] == data.name
    assert p["data_json_sha256"] == sha256_file(data / "dataset.json")
    assert p["pretrained"] == "enc.safetensors"
    assert p["pretrained_sha256"] == sha256_file(encoder)
    # adapt it to a scene given by its absolute path
    out = tmp_path / "adapted.safetensors"
    code, _, err = cli("train", "adapt", model, "--images", small_scene.resolve(),
                       "-o", out, "--max-tiles", "2", "--batch-size", "2")  # fmt: skip
    assert code == 0, err
    p = load_spec(out).provenance
    assert not _absolute_paths(json.dumps(p), tmp_path, small_scene.parent), p
    assert p["adapted_from"].startswith("model.safetensors (")
    assert p["adapted_from_sha256"] == sha256_file(model)
    assert p["adapt_scenes"] == small_scene.name
    assert p["adapt_scenes_sha256"] == sha256_file(small_scene)
