"""One engine, host and device: the same maps through NumPy and through torch.

The host engine (NumPy: the reader converts strips, blend and finish in NumPy) and
the device engine (torch tensors: raw strips to the device, radiometry, blend and
finish there; run here on the CPU through ``$ALOSMAP_ENGINE=torch``) map the same
scene. With the same probabilities (the zero-cost model) the maps are bit for bit
the same; with a small model run by PyTorch on the device engine and by ONNX
Runtime (its export) on the host engine, classes agree away from ties and the
confidence and probabilities within one point.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import _model_file

from alosmap.predict.blend import ENGINE_ENV
from alosmap.predict.ceiling import NullRuntime
from alosmap.predict.pipeline import predict_scene
from alosmap.spec import load_spec


def _scene(make_geotiff, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    db = -14 + 5 * np.sin(np.arange(w) / 9.0)[None] + rng.normal(0, 2, (h, w))
    dn = np.clip(np.rint(10 ** ((db + 83.0) / 20.0)), 1, 65535).astype(np.uint16)
    dn[h // 3 : h // 2, : w // 2] = 0  # no data: windows skipped, holes
    return make_geotiff(dn, name=f"e{h}x{w}_{seed}.tif")


def _maps(out: Path) -> dict[str, np.ndarray]:
    maps = {}
    for key, path in (
        ("classes", out),
        ("confidence", out.with_name(out.stem + "_confidence.tif")),
        ("probabilities", out.with_name(out.stem + "_probabilities.tif")),
    ):
        with rasterio.open(path) as ds:
            maps[key] = ds.read()
    return maps


def _predict(monkeypatch, engine: str, scene: Path, out: Path, **kw) -> None:
    monkeypatch.setenv(ENGINE_ENV, engine)
    predict_scene(
        scene, out, overlap=16, batch_size=3, confidence=True, probabilities=True, **kw
    )


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("engine-models")
    return {t: _model_file(d, t, img_size=64) for t in ("lulc", "water")}


@pytest.mark.parametrize("task", ["lulc", "water"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_engines_give_identical_maps_for_the_same_probabilities(
    tmp_path, make_geotiff, monkeypatch, small_models, task, kind
):
    """Zero-cost model (NumPy out as ONNX Runtime, or tensors as PyTorch)."""
    scene = _scene(make_geotiff, 203, 177, seed=5)
    spec = load_spec(small_models[task])
    maps = {}
    for engine in ("numpy", "torch"):
        out = tmp_path / f"{engine}.tif"
        rt = NullRuntime(spec, array_kind=kind)
        _predict(monkeypatch, engine, scene, out, runtime=rt)
        maps[engine] = _maps(out)
    for key in maps["numpy"]:
        np.testing.assert_array_equal(maps["numpy"][key], maps["torch"][key])
    assert len(np.unique(maps["numpy"]["classes"])) >= 2


@pytest.mark.slow  # the ONNX export: 30-60 s on a loaded 2-core machine
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_torch_on_the_device_engine_and_onnx_on_the_host_engine_agree(
    tmp_path, make_geotiff, monkeypatch, small_models, task
):
    """The same small model: PyTorch + torch engine vs its ONNX export + NumPy."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from alosmap.export.onnx import export_onnx_file

    onnx_path = tmp_path / f"{task}.onnx"
    export_onnx_file(small_models[task], onnx_path, check=False)
    scene = _scene(make_geotiff, 190, 230, seed=11)
    a, b = tmp_path / "torch.tif", tmp_path / "onnx.tif"
    _predict(monkeypatch, "torch", scene, a, model=small_models[task])
    _predict(monkeypatch, "numpy", scene, b, model=onnx_path)
    dev, host = _maps(a), _maps(b)
    nodata = load_spec(small_models[task]).legend.nodata
    np.testing.assert_array_equal(dev["classes"] == nodata, host["classes"] == nodata)
    p = dev["probabilities"].astype(int)
    if p.shape[0] == 1:
        gap = np.abs(2 * p[0] - 100)  # distance from the threshold (0.5), doubled
    else:
        s = np.sort(p, axis=0)
        gap = s[-1] - s[-2]
    differ = dev["classes"][0] != host["classes"][0]
    assert not (differ & (gap > 1)).any(), "a class differs away from a tie"
    for key in ("confidence", "probabilities"):
        d = np.abs(dev[key].astype(int) - host[key].astype(int))
        assert d.max() <= 1, key


def test_host_path_with_numpy_runtime_imports_no_torch(tmp_path, make_geotiff):
    """predict_scene on the host engine with a NumPy runtime loads no PyTorch."""
    scene = _scene(make_geotiff, 150, 140, seed=2)
    code = (
        "import sys\n"
        "from alosmap.predict.ceiling import NullRuntime\n"
        "from alosmap.predict.pipeline import default_model_path, predict_scene\n"
        "from alosmap.spec import load_spec\n"
        "rt = NullRuntime(load_spec(default_model_path('lulc')), array_kind='numpy')\n"
        f"r = predict_scene({str(scene)!r}, {str(tmp_path / 'm.tif')!r}, runtime=rt,"
        " confidence=True, probabilities=True)\n"
        "assert r.valid_pixels > 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
