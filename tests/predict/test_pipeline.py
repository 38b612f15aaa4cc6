"""predict_scene end to end: georeferencing, no data, blending, determinism, COG."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from conftest import SAMPLE_SCENES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rio_cogeo.cogeo import cog_validate

from alosmap.arch import get_preset
from alosmap.errors import InputRasterError, OutputExistsError, SpecMismatchError
from alosmap.io.scene import Scene
from alosmap.predict.pipeline import predict_scene
from alosmap.radiometry import normalize
from alosmap.spec import default_spec


def _read(path, band=1):
    with rasterio.open(path) as ds:
        return ds.read(band), ds.profile, ds.tags()


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


@pytest.mark.skipif(not SAMPLE_SCENES, reason="sample_data missing")
def test_sample_scene_georeferencing_nodata_and_cog(tmp_path, tiny_lulc_model):
    scene = SAMPLE_SCENES[0]
    out = tmp_path / "map.tif"
    res = predict_scene(scene, out, model=tiny_lulc_model, confidence=True)
    assert res.output == out
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        dn = src.read(1)
        classes = dst.read(1)
        assert dst.count == 1
        assert dst.nodata == 0
        assert dst.colormap(1)[5][:3] == (20, 120, 50)
    nodata = dn == 0
    assert nodata.any() and (~nodata).any()
    # no data preserved exactly: nodata in = nodata out, every valid pixel has a class
    np.testing.assert_array_equal(classes == 0, nodata)
    assert set(np.unique(classes[~nodata])) <= set(range(1, 10))
    assert res.confidence == tmp_path / "map_confidence.tif"
    conf = _read(res.confidence)[0]
    assert conf[~nodata].min() >= 12 and conf[~nodata].max() <= 100
    assert np.all(conf[nodata] == 255)
    for path in (out, res.confidence):
        ok, errors, warns = cog_validate(path, quiet=True)
        assert ok and not warns, errors + warns
    assert res.valid_pixels == int((~nodata).sum())
    assert res.tiles_run <= res.tiles_total


def test_result_independent_of_batch_size(tmp_path, small_scene, tiny_lulc_model):
    maps = []
    for b in (1, 3, 8):
        out = tmp_path / f"b{b}.tif"
        predict_scene(
            small_scene, out, model=tiny_lulc_model, batch_size=b, probabilities=True
        )
        maps.append((_read(out)[0], _read(tmp_path / f"b{b}_probabilities.tif")[0]))
    for classes, probs in maps[1:]:
        np.testing.assert_array_equal(classes, maps[0][0])
        np.testing.assert_array_equal(probs, maps[0][1])


def test_water_map_encoding(tmp_path, small_scene, tiny_water_model):
    out = tmp_path / "water.tif"
    predict_scene(small_scene, out, model=tiny_water_model, confidence=True)
    with rasterio.open(small_scene) as src:
        nodata = src.read(1) == 0
    classes, profile, tags = _read(out)
    assert profile["nodata"] == 255
    np.testing.assert_array_equal(classes == 255, nodata)
    assert set(np.unique(classes[~nodata])) <= {0, 1}
    conf = _read(tmp_path / "water_confidence.tif")[0]
    assert conf[~nodata].min() >= 50
    assert tags["ALOSMAP_TASK"] == "water"


def test_scene_smaller_than_a_tile(tmp_path, make_geotiff, tiny_lulc_model):
    rng = np.random.default_rng(0)
    dn = rng.integers(500, 4000, size=(37, 91), dtype=np.uint16)
    dn[:3, :5] = 0
    scene = make_geotiff(dn)
    out = tmp_path / "m.tif"
    predict_scene(scene, out, model=tiny_lulc_model)
    classes = _read(out)[0]
    assert classes.shape == (37, 91)
    np.testing.assert_array_equal(classes == 0, dn == 0)


def test_all_nodata_tiles_are_skipped(tmp_path, make_geotiff, tiny_lulc_model):
    rng = np.random.default_rng(1)
    dn = rng.integers(500, 4000, size=(600, 600), dtype=np.uint16)
    dn[:, :300] = 0  # left half empty
    out = tmp_path / "m.tif"
    res = predict_scene(make_geotiff(dn), out, model=tiny_lulc_model, overlap=32)
    assert res.tiles_total == 9
    assert res.tiles_run == 6  # the left column of windows is all no data
    classes = _read(out)[0]
    np.testing.assert_array_equal(classes == 0, dn == 0)


# --------------------------------------------------------------------------------------
# tiled == untiled for a translation-equivariant model
# --------------------------------------------------------------------------------------


class ConvRuntime:
    """A pure-convolution model (receptive field 7 px): translation equivariant."""

    name = "conv"
    device = "cpu"

    def __init__(self, tile: int = 64, k: int = 9):
        self.spec = default_spec("lulc", get_preset("tiny", img_size=tile))
        g = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(8, k, 3, padding=1),
        ).double()
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
        self.path = "conv"

    @torch.inference_mode()
    def run(self, batch):
        return torch.softmax(self.net(batch.double()), dim=1).float()

    def close(self):
        pass

    def untiled(self, x):
        return self.run(torch.from_numpy(x)[None, None])[0].numpy()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    h=st.integers(min_value=40, max_value=230),
    w=st.integers(min_value=40, max_value=230),
    overlap=st.sampled_from([12, 16, 24, 40]),
)
def test_tiled_equals_untiled_for_equivariant_model(
    tmp_path_factory, make_geotiff, h, w, overlap
):
    rt = ConvRuntime(tile=64)
    rng = np.random.default_rng(h * 1000 + w)
    dn = rng.integers(300, 6000, size=(h, w), dtype=np.uint16)
    dn[: h // 5, : w // 4] = 0  # a no-data corner
    scene = make_geotiff(dn, name=f"s{h}x{w}.tif")
    out = tmp_path_factory.mktemp("eq") / "m.tif"
    predict_scene(
        scene, out, runtime=rt, overlap=overlap, batch_size=4, probabilities=True
    )
    classes = _read(out)[0]
    with Scene(scene, rt.spec.radiometry) as sc:
        db, valid = sc.read_strip(0, h)
    probs = rt.untiled(normalize(db, rt.spec.radiometry, valid))
    ref = np.where(valid, probs.argmax(0) + 1, 0)
    m = 3  # receptive-field radius: stay away from the scene border
    inner = (slice(m, h - m), slice(m, w - m))
    np.testing.assert_array_equal(classes[inner], ref[inner])
    blended = _read(out.with_name("m_probabilities.tif"))[0]
    expect = np.rint(probs[0] * 100)
    np.testing.assert_array_equal(
        blended[inner][valid[inner]], expect[inner][valid[inner]]
    )


# --------------------------------------------------------------------------------------
# failure modes leave nothing behind
# --------------------------------------------------------------------------------------


class ExplodingRuntime(ConvRuntime):
    def __init__(self, after: int, exc: type[BaseException]):
        super().__init__(tile=64)
        self.after, self.exc, self.calls = after, exc, 0

    def run(self, batch):
        self.calls += 1
        if self.calls > self.after:
            raise self.exc("boom")
        return super().run(batch)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupt_leaves_no_output(tmp_path, make_geotiff, exc):
    dn = np.full((300, 300), 2000, dtype=np.uint16)
    scene = make_geotiff(dn)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(exc):
        predict_scene(
            scene,
            outdir / "m.tif",
            runtime=ExplodingRuntime(2, exc),
            overlap=16,
            batch_size=2,
            probabilities=True,
        )
    assert list(outdir.iterdir()) == []


def test_existing_output_is_kept(tmp_path, small_scene, tiny_lulc_model):
    out = tmp_path / "m.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        predict_scene(small_scene, out, model=tiny_lulc_model)
    assert out.read_bytes() == b"precious"
    predict_scene(small_scene, out, model=tiny_lulc_model, overwrite=True)
    assert out.read_bytes()[:2] in (b"II", b"MM")


def test_model_must_fit(tmp_path, small_scene, tiny_water_model):
    with pytest.raises(SpecMismatchError, match="water model"):
        predict_scene(
            small_scene, tmp_path / "m.tif", task="lulc", model=tiny_water_model
        )
    with pytest.raises(SpecMismatchError, match="--tile 512"):
        predict_scene(small_scene, tmp_path / "m.tif", model=tiny_water_model, tile=512)
    assert list(tmp_path.iterdir()) == []


def test_input_units(tmp_path, make_geotiff, tiny_lulc_model):
    rng = np.random.default_rng(2)
    dn = rng.integers(500, 4000, size=(200, 200)).astype(np.uint16)
    db = (20 * np.log10(dn.astype(np.float64)) - 83.0).astype(np.float32)
    lin = (10 ** (db / 10)).astype(np.float32)
    maps = {}
    for units, arr, nodata in (("dn", dn, 0), ("db", db, None), ("linear", lin, None)):
        scene = make_geotiff(arr, name=f"{units}.tif", nodata=nodata)
        out = tmp_path / f"{units}_map.tif"
        predict_scene(scene, out, model=tiny_lulc_model, probabilities=True)
        with rasterio.open(out) as ds:
            assert units in ds.tags()["ALOSMAP_PARAMS"]
        maps[units] = _read(tmp_path / f"{units}_map_probabilities.tif")[0]
    # the same σ0 in three encodings gives the same probabilities (±1 %)
    assert np.abs(maps["db"].astype(int) - maps["dn"]).max() <= 1
    assert np.abs(maps["linear"].astype(int) - maps["dn"]).max() <= 1
    # declared units that contradict the values are refused
    with pytest.raises(InputRasterError, match=r"implausible|negative|linear"):
        predict_scene(
            make_geotiff(db, name="x.tif", nodata=None),
            tmp_path / "x_map.tif",  # not the scene itself: that is refused first
            model=tiny_lulc_model,
            input_units="dn",
        )


def test_nan_and_inf_are_no_data(tmp_path, make_geotiff, tiny_lulc_model, recwarn):
    rng = np.random.default_rng(3)
    db = rng.normal(-10, 4, size=(120, 150)).astype(np.float32)
    db[10:20, 10:30] = np.nan
    db[50, 50] = np.inf
    scene = make_geotiff(db, nodata=None)
    out = tmp_path / "m.tif"
    predict_scene(scene, out, model=tiny_lulc_model)
    classes = _read(out)[0]
    assert np.all(classes[10:20, 10:30] == 0) and classes[50, 50] == 0
    assert (classes > 0).sum() == classes.size - 200 - 1


def test_all_nodata_scene_refused(tmp_path, make_geotiff, tiny_lulc_model):
    scene = make_geotiff(np.zeros((64, 64), dtype=np.uint16))
    outdir = tmp_path / "o"
    outdir.mkdir()
    with pytest.raises(InputRasterError, match=r"no valid pixels|no data"):
        predict_scene(scene, outdir / "m.tif", model=tiny_lulc_model)
    assert list(outdir.iterdir()) == []


def test_onnx_backend_matches_torch(tmp_path, small_scene, tiny_lulc_model):
    pytest.importorskip("onnxruntime")
    from alosmap.export.onnx import export_onnx
    from alosmap.spec import SPEC_KEY, load_model

    model, spec = load_model(tiny_lulc_model)
    onnx_path = export_onnx(
        model, tmp_path / "m.onnx", metadata={SPEC_KEY: spec.to_json()}
    )
    a = tmp_path / "torch.tif"
    b = tmp_path / "onnx.tif"
    predict_scene(small_scene, a, model=tiny_lulc_model, backend="torch")
    predict_scene(small_scene, b, model=onnx_path, backend="auto")
    ca, cb = _read(a)[0], _read(b)[0]
    assert (ca == cb).mean() >= 0.999


def test_ctrl_c_while_the_threads_start_stops_the_reader_first(
    monkeypatch, tmp_path, small_scene, tiny_lulc_model
):
    """A Ctrl-C that lands while the writer thread starts (seen in batch mode,
    where it crashed the process once the scene closed under the running reader):
    the reader has stopped before the error leaves, and no file is left."""
    import threading

    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "alosmap-writer":
            raise KeyboardInterrupt  # the signal, at that very instant
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        predict_scene(small_scene, out / "m.tif", model=tiny_lulc_model)
    assert not [t for t in threading.enumerate() if t.name == "alosmap-reader"]
    assert list(out.iterdir()) == []


def test_stopping_names_a_thread_that_is_slow_to_end(
    monkeypatch, tmp_path, make_geotiff, caplog
):
    """Ctrl-C while the reader waits on a slow read: the wait is announced (once),
    the interrupt still leaves, nothing is left; a normal end announces nothing.

    Driven by events: the read of the second strip hangs until the notice is
    logged, and the model raises only once the reader is inside that read."""
    import logging
    import threading
    import time

    from alosmap.io.writer import MapWriter
    from alosmap.predict import pipeline
    from alosmap.predict.tiles import StripSource

    monkeypatch.setattr(pipeline, "_JOIN_NOTICE_S", 0.05)
    real_read, real_write = StripSource.read, MapWriter.write_rows
    in_read, release = threading.Event(), threading.Event()
    reads = []

    def hanging_read(self, row):
        reads.append(row)
        if len(reads) > 1:  # a network read that hangs until the notice is out
            in_read.set()
            release.wait(timeout=120)
        return real_read(self, row)

    def slow_write(self, *args, **kw):
        time.sleep(0.1)  # the writer draining its last rows at the end
        return real_write(self, *args, **kw)

    class Released(logging.Handler):
        def emit(self, record):
            if "waiting for" in record.getMessage():
                release.set()

    class InterruptInRead(ConvRuntime):
        def run(self, batch):
            assert in_read.wait(timeout=120)
            raise KeyboardInterrupt

    scene = make_geotiff(np.full((300, 300), 2000, dtype=np.uint16))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(MapWriter, "write_rows", slow_write)
    kw = dict(overlap=16, batch_size=2)
    predict_scene(scene, out / "ok.tif", runtime=ConvRuntime(tile=64), **kw)
    assert "waiting for" not in caplog.text

    monkeypatch.setattr(StripSource, "read", hanging_read)
    handler = Released()
    logging.getLogger("alosmap").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_scene(scene, out / "m.tif", runtime=InterruptInRead(tile=64), **kw)
    finally:
        logging.getLogger("alosmap").removeHandler(handler)
        release.set()
    notices = [r for r in caplog.records if "waiting for" in r.getMessage()]
    assert [r.getMessage() for r in notices] == [
        "waiting for the reader thread to end its current read before stopping"
    ]
    assert all(p.name.startswith("ok") for p in out.iterdir())  # none of m.tif


@pytest.mark.parametrize("height", [304, 310])  # the grid ends evenly; a pair
def test_a_strip_is_let_go_before_the_reader_may_read_another(
    monkeypatch, tmp_path, make_geotiff, height
):
    """When the main thread frees a strip's slot (the reader may then read one
    more), nothing holds that strip any more: at most two strips (tile rows × the
    scene's width each) are alive, not three. The pair's upper strip is held for the
    lower one, and let go with it."""
    import weakref

    from alosmap.predict import pipeline

    real_open, real_init = pipeline._Feeder._open, pipeline._Feeder.__init__
    opened: list[tuple[int, weakref.ref]] = []
    released: list[tuple[int, list[int]]] = []
    pairs = []

    def open_(self, strip):
        assert strip.values is not None
        opened.append((strip.row, weakref.ref(strip.values)))
        return real_open(self, strip)

    class Slots:  # the feeder's side of the reader's semaphore
        def __init__(self, slots):
            self.slots = slots

        def release(self):
            alive = [row for row, ref in opened if ref() is not None]
            released.append((opened[-1][0], alive))
            self.slots.release()

    def init(self, *args):
        real_init(self, *args[:-1], Slots(args[-1]))
        pairs.append(self.acc.pair)

    monkeypatch.setattr(pipeline._Feeder, "_open", open_)
    monkeypatch.setattr(pipeline._Feeder, "__init__", init)
    rng = np.random.default_rng(3)
    scene = make_geotiff(rng.integers(500, 5000, (height, 300), dtype=np.uint16))
    predict_scene(
        scene,
        tmp_path / "m.tif",
        runtime=ConvRuntime(tile=64),
        overlap=16,
        batch_size=2,
    )
    (pair,) = pairs
    assert (pair is not None) == (height == 310)
    assert len(released) == len(opened) >= 6
    for row, alive in released:
        # the pair's upper strip is held for the lower one; nothing else
        assert alive == ([row] if pair is not None and row == pair[0] else []), row
