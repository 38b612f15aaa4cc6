"""The public API: the README's Python example runs, names are exported lazily."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import rasterio
from conftest import REPO, SAMPLE_SCENES

PUBLIC = {
    "predict_scene",
    "PredictResult",
    "InferenceOptions",
    "load_model",
    "ModelSpec",
    "AlosmapError",
}


def _readme_example() -> str:
    """The README's Python example: its one ``python`` block that maps a scene."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [
        b
        for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
        if "predict_scene(" in b
    ]
    assert len(blocks) == 1, "expected one Python example of predict_scene in README"
    return blocks[0]


@pytest.mark.skipif(not SAMPLE_SCENES, reason="sample_data missing")
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = _readme_example()
    assert "from alosmap import" in code and "InferenceOptions" in code
    shutil.copy(SAMPLE_SCENES[0], tmp_path / "scene.tif")
    shutil.copy(
        REPO / "alosmap" / "weights" / "lulc.safetensors",
        tmp_path / "model.safetensors",
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert res.output.resolve() == tmp_path / "map.tif"
    assert res.tiles_run > 0 and res.valid_pixels > 0
    with rasterio.open(tmp_path / "map.tif") as ds:
        assert ds.count == 1  # a class map is one band
    assert res.confidence.resolve() == tmp_path / "map_confidence.tif"  # confidence
    assert res.confidence.is_file()
    assert str(res.tiles_run) in capsys.readouterr().out


def test_public_names():
    import alosmap
    from alosmap.errors import AlosmapError
    from alosmap.predict.options import InferenceOptions
    from alosmap.predict.pipeline import PredictResult, load_model, predict_scene
    from alosmap.spec import ModelSpec

    assert set(alosmap.__all__) >= PUBLIC
    assert set(dir(alosmap)) >= PUBLIC
    assert alosmap.predict_scene is predict_scene
    assert alosmap.PredictResult is PredictResult
    assert alosmap.InferenceOptions is InferenceOptions
    assert alosmap.load_model is load_model
    assert alosmap.ModelSpec is ModelSpec
    assert alosmap.AlosmapError is AlosmapError
    with pytest.raises(AttributeError):
        alosmap.no_such_name  # noqa: B018


def test_import_is_light():
    """``import alosmap`` (and reading its API names) loads no torch, no rasterio."""
    code = (
        "import sys, alosmap\n"
        "heavy = [m for m in ('torch', 'rasterio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_model_is_reused_across_scenes(tmp_path, small_scene, tiny_lulc_model):
    from alosmap import InferenceOptions, load_model, predict_scene

    options = InferenceOptions(model=tiny_lulc_model, overlap=32)
    model = load_model(options=options)
    try:
        a = predict_scene(small_scene, tmp_path / "a.tif", options, runtime=model)
        b = predict_scene(small_scene, tmp_path / "b.tif", runtime=model, overlap=32)
    finally:
        model.close()
    with rasterio.open(a.output) as da, rasterio.open(b.output) as db:
        assert (da.read(1) == db.read(1)).all()


def test_a_streamed_scene_finishes_in_another_thread_as_predict_does(
    tmp_path, small_scene, tiny_lulc_model
):
    """stream_scene + finish (batch mode finishes scenes in a background thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from alosmap.predict.pipeline import predict_scene, stream_scene

    kw = dict(model=tiny_lulc_model, overlap=32, confidence=True)
    ref = predict_scene(small_scene, tmp_path / "a.tif", **kw)
    streamed = stream_scene(small_scene, tmp_path / "b.tif", **kw)
    # every row is written, but nothing is at the output paths before finish()
    assert not (tmp_path / "b.tif").exists()
    assert not (tmp_path / "b_confidence.tif").exists()
    with ThreadPoolExecutor(1) as pool:
        res = pool.submit(streamed.finish).result()
    assert res.output == tmp_path / "b.tif"
    assert res.class_pixels == ref.class_pixels
    assert res.tiles_run == ref.tiles_run
    for name in ("{}.tif", "{}_confidence.tif"):
        a, b = tmp_path / name.format("a"), tmp_path / name.format("b")
        with rasterio.open(a) as da, rasterio.open(b) as db:
            assert (da.read() == db.read()).all()
            assert db.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_an_aborted_streamed_scene_leaves_nothing(
    tmp_path, small_scene, tiny_lulc_model
):
    from alosmap.predict.pipeline import stream_scene

    out = tmp_path / "out"
    out.mkdir()
    streamed = stream_scene(
        small_scene, out / "m.tif", model=tiny_lulc_model, probabilities=True
    )
    assert any(out.iterdir())  # the hidden temporary files
    streamed.abort()
    streamed.abort()  # idempotent
    assert list(out.iterdir()) == []


def test_options_are_validated_once_in_python_terms(tmp_path, small_scene):
    from alosmap import AlosmapError, InferenceOptions, predict_scene

    with pytest.raises(AlosmapError, match=r"^overlap 300: must be in 0\.\.255$"):
        InferenceOptions(tile=256, overlap=300)
    with pytest.raises(ValueError, match=r"^batch_size 0: must be >= 1$"):
        InferenceOptions(batch_size=0)
    with pytest.raises(AlosmapError, match=r"^overlap 256: must be in 0\.\.\d+$"):
        predict_scene(small_scene, tmp_path / "m.tif", overlap=256)
    with pytest.raises(TypeError, match="unknown inference option"):
        predict_scene(small_scene, tmp_path / "m.tif", overlapp=32)
    opts = InferenceOptions(confidence=True)
    assert opts.replace(overlap=0).overlap == 0 and opts.overlap is None
    # unset: a quarter of the model's tile, resolved against the model
    from alosmap.arch import get_preset
    from alosmap.spec import default_spec

    for tile, overlap in ((256, 64), (64, 16)):
        spec = default_spec("lulc", get_preset("tiny").replace(img_size=tile))
        assert opts.for_model(spec, "m").overlap == overlap
        assert opts.replace(overlap=8).for_model(spec, "m").overlap == 8
    assert list(tmp_path.iterdir()) == []
