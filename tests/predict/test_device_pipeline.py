"""The pipeline end to end against the NumPy path of before the device engine.

Each scene is mapped by ``predict_scene`` (on the CPU the host engine; the device
engine, torch tensors, where ``$ALOSMAP_ENGINE`` says so and on a GPU) and by a
reference built from the host pieces: the tiles exactly as
``iter_scene_tiles`` cuts them on the host, the same model, and the NumPy blend of
:mod:`blend_reference`. Maps must agree up to ties (see there); no data exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from blend_reference import ReferenceBlend, check_against_reference
from conftest import _model_file

from alosmap.io.scene import Scene
from alosmap.predict.blend import ENGINE_ENV, ENGINES
from alosmap.predict.ceiling import NullRuntime, null_probabilities
from alosmap.predict.options import DEFAULT_OVERLAP
from alosmap.predict.pipeline import load_model, predict_scene
from alosmap.predict.tiles import iter_scene_tiles
from alosmap.spec import load_spec
from alosmap.tiling import tile_weights

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _tiny_model(directory: Path, task: str, tile: int = 64) -> Path:
    return _model_file(directory, task, img_size=tile)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dev-models")
    return {t: _tiny_model(d, t) for t in ("lulc", "water")}


def _read_maps(out: Path, *, conf: bool, prob: bool) -> dict[str, np.ndarray | None]:
    def band(p: Path) -> np.ndarray:
        with rasterio.open(p) as ds:
            return ds.read()

    maps: dict[str, np.ndarray | None] = {"classes": band(out)[0]}
    maps["confidence"] = (
        band(out.with_name(out.stem + "_confidence.tif"))[0] if conf else None
    )
    maps["probabilities"] = (
        band(out.with_name(out.stem + "_probabilities.tif")) if prob else None
    )
    return maps


def _reference(scene: Path, model: Path, overlap: int) -> tuple:
    """The NumPy path: host tiles, the same model, the NumPy blend."""
    rt = load_model(model)
    spec = rt.spec
    with Scene(scene, spec.radiometry) as sc:
        h, w = sc.info.height, sc.info.width
        _, valid = sc.read_raw(0, h)
    ref = ReferenceBlend(h, w, spec.num_outputs)
    for t, x in iter_scene_tiles(scene, spec, overlap=overlap):
        with torch.inference_mode():
            p = rt.run(torch.from_numpy(x[None, None]))[0].float().cpu().numpy()
        ref.add(t, p, tile_weights(t, h, w, spec.tile_size, overlap))
    rt.close()
    return spec, ref, valid


def _scene(make_geotiff, h: int, w: int, seed: int, **holes: slice) -> Path:
    rng = np.random.default_rng(seed)
    db = -14 + 5 * np.sin(np.arange(w) / 9.0)[None] + rng.normal(0, 2, (h, w))
    dn = np.clip(np.rint(10 ** ((db + 83.0) / 20.0)), 1, 65535).astype(np.uint16)
    if "rows" in holes:
        dn[holes["rows"]] = 0  # whole bands of windows without data
    if "cols" in holes:
        dn[:, holes["cols"]] = 0
    return make_geotiff(dn, name=f"s{h}x{w}_{seed}.tif")


@pytest.mark.parametrize(
    ("h", "w", "holes"),
    [
        (301, 257, {}),  # odd sizes
        (300, 200, {"rows": slice(60, 200)}),  # all-no-data bands
        (250, 260, {"cols": slice(70, 190)}),  # windows skipped inside bands
        (40, 50, {}),  # smaller than a tile
        (200, 1, {}),  # one pixel wide
    ],
)
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_device_path_matches_numpy_path(
    tmp_path, make_geotiff, models, h, w, holes, task
):
    scene = _scene(make_geotiff, h, w, seed=h + w, **holes)
    out = tmp_path / "m.tif"
    overlap = 16
    predict_scene(
        scene,
        out,
        model=models[task],
        overlap=overlap,
        batch_size=3,
        confidence=True,
        probabilities=True,
    )
    spec, ref, valid = _reference(scene, models[task], overlap)
    maps = _read_maps(out, conf=True, prob=True)
    check_against_reference(spec, maps, ref, valid)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="no sample_data/")
@pytest.mark.parametrize("engine", ENGINES)
def test_device_path_matches_numpy_path_on_a_sample_scene(
    tmp_path, tiny_lulc_model, monkeypatch, engine
):
    """A real-format sample scene (ALOS-2 L2.1 uint16 DN), default tiling.

    Both engines: the host's (NumPy) and the device's (torch tensors; raw strips,
    radiometry, blend and finish in torch), here on the CPU.
    """
    monkeypatch.setenv(ENGINE_ENV, engine)
    scene = sorted(SAMPLE.glob("IMG-HH-*.tif"))[0]
    out = tmp_path / "m.tif"
    predict_scene(scene, out, model=tiny_lulc_model, confidence=True)
    spec, ref, valid = _reference(scene, tiny_lulc_model, DEFAULT_OVERLAP)
    check_against_reference(spec, _read_maps(out, conf=True, prob=False), ref, valid)


def test_maps_identical_across_batch_sizes(tmp_path, make_geotiff, models):
    scene = _scene(make_geotiff, 230, 190, seed=4, rows=slice(0, 40))
    maps = []
    for b in (1, 3, 8, 16):
        out = tmp_path / f"b{b}.tif"
        predict_scene(
            scene, out, model=models["lulc"], overlap=16, batch_size=b, confidence=True
        )
        maps.append(_read_maps(out, conf=True, prob=False))
    for m in maps[1:]:
        np.testing.assert_array_equal(m["classes"], maps[0]["classes"])
        np.testing.assert_array_equal(m["confidence"], maps[0]["confidence"])


def test_maps_identical_across_thread_counts(tmp_path, make_geotiff):
    """Threads change neither the blend nor the order windows reach it.

    A zero-cost model whose output does not depend on the thread count isolates the
    pipeline (reader, writer and torch threads) from the model's own arithmetic.
    """
    scene = _scene(make_geotiff, 260, 300, seed=7, cols=slice(0, 30))
    spec = load_spec(_tiny_model(tmp_path, "lulc"))
    maps = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}.tif"
            predict_scene(
                scene, out, runtime=NullRuntime(spec), overlap=16, probabilities=True
            )
            maps.append(_read_maps(out, conf=False, prob=True))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(maps[0]["classes"], maps[1]["classes"])
    np.testing.assert_array_equal(maps[0]["probabilities"], maps[1]["probabilities"])


def test_null_probabilities_are_distributions():
    p = null_probabilities(9, 32)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    q = null_probabilities(1, 32)
    assert q.shape[1] == 1 and (q > 0).all() and (q < 1).all()
    # a map of several classes, not one class everywhere
    assert len(np.unique(p.argmax(axis=1))) >= 5


def _cuda() -> bool:
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_cuda_maps_match_the_numpy_path(tmp_path, make_geotiff, models, task):
    """On a GPU: strips uploaded raw, radiometry, blend and argmax there."""
    if not _cuda():
        pytest.skip("needs a CUDA GPU")
    scene = _scene(make_geotiff, 301, 257, seed=9, rows=slice(100, 180))
    out = tmp_path / "m.tif"
    res = predict_scene(
        scene,
        out,
        model=models[task],
        device="cuda",
        overlap=16,
        batch_size=5,
        confidence=True,
        probabilities=True,
    )
    assert res.stage_seconds["h2d"] > 0
    spec, ref, valid = _reference(scene, models[task], 16)
    check_against_reference(spec, _read_maps(out, conf=True, prob=True), ref, valid)


@pytest.mark.gpu
def test_cuda_ceiling_runs(tmp_path):
    if not _cuda():
        pytest.skip("needs a CUDA GPU")
    from alosmap.predict.ceiling import run_ceiling

    r = run_ceiling(1024, tmp_path, device="cuda", batch_size=16, probabilities=True)
    assert r.tiles == 25 and r.tiles_per_s > 0 and r.peak_device_mb > 0
    assert set(r.stages_ms_per_tile) >= {"read", "h2d", "blend", "finish", "cog"}
