"""The grid's last two bands as a pair, through the whole pipeline.

Where the edge-aligned last window starts a few rows after the one before, the
accumulator takes those two bands as a pair (interleaved windows, their rows held
a few windows wide, :class:`~alosmap.predict.blend.StripAccumulator`) and the
reader reads them together (:class:`~alosmap.predict.tiles.StripSource`). Every
pixel still gets its windows in grid order: the maps are the bytes of the two bands
taken one after the other, and an area's map is still the whole map there.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_map_of_part import _assert_cut_out, _bands, _bbox, write_scene

from alosmap.predict.blend import StripAccumulator
from alosmap.predict.pipeline import predict_scene

#: window rows 0, 192, 208 (tile 256, overlap 64): the band at 192 has no core
#: rows, so 192 and 208 come as a pair; columns 0, 192, 384, 576, 644
H, W = 464, 900


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    holes = [
        (slice(190, None), slice(None, 260)),  # the pair's first windows: no data
        (slice(300, 420), slice(420, 520)),  # a hole across the pair's windows
    ]
    return write_scene(tmp_path_factory.mktemp("pair"), 3, H, W, holes)


def _no_pair(monkeypatch) -> None:
    """Accumulators that take every band alone (grid order), as before pairs."""
    init = StripAccumulator._init_pair

    def init_pair(self):
        init(self)
        self.pair, self.pair_order, self._pair_pos = None, [], {}
        self.out_rows = self.rows

    monkeypatch.setattr(StripAccumulator, "_init_pair", init_pair)


def _predict(scene, out, **kw):
    predict_scene(scene, out, confidence=True, probabilities=True, threads=1, **kw)
    return _bands(out)


def test_a_scene_whose_last_bands_pair_maps_as_band_by_band(
    scene, tmp_path, monkeypatch
):
    """The bundled model (ONNX Runtime) on the host engine: the same bytes."""
    pairs: list[tuple[int, int] | None] = []
    init = StripAccumulator._init_pair

    def init_pair(self):
        init(self)
        pairs.append(self.pair)

    monkeypatch.setattr(StripAccumulator, "_init_pair", init_pair)
    paired = _predict(scene, tmp_path / "paired.tif")
    with monkeypatch.context() as m:
        _no_pair(m)
        alone = _predict(scene, tmp_path / "alone.tif")  # the pair undone
    for a, b in zip(paired[1:], alone[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(paired[1])) >= 3  # no data and two classes at least
    # an area at the bottom: its own grid is the pair alone
    whole = paired
    row, col, h, w = 300, 380, 164, 300
    part = _predict(
        scene, tmp_path / "part.tif", bbox=_bbox(row, col, h, w), bbox_crs="EPSG:32654"
    )
    assert part[0] == (row, col)
    _assert_cut_out(whole, part)
    # the whole scene's and the area's accumulators (the area's frame starts a
    # row above its first window) took their last two bands as a pair
    assert pairs[0] == (192, 208) and pairs[-1] is not None and len(pairs) == 3


def _spec():
    from alosmap.predict.pipeline import default_model_path
    from alosmap.spec import load_spec

    return load_spec(default_model_path("lulc"))


def test_a_pair_of_strips_is_read_once_and_shared(scene):
    """The reader reads the pair's rows once; the lower strip views them."""
    from alosmap.io.scene import Scene
    from alosmap.predict.tiles import StripSource

    spec = _spec()
    with Scene(scene, spec.radiometry) as sc:
        alone = StripSource(sc, spec.radiometry, 256, 64)
        want = {r: alone.read(r) for r in alone.rows}
    with Scene(scene, spec.radiometry) as sc:
        paired = StripSource(sc, spec.radiometry, 256, 64, pair=(192, 208))
        got = {r: paired.read(r) for r in paired.rows}
    assert np.shares_memory(got[192].values, got[208].values)
    for r, strip in want.items():
        assert got[r].cols == strip.cols and got[r].skipped == strip.skipped
        np.testing.assert_array_equal(got[r].values, strip.values)
        np.testing.assert_array_equal(got[r].valid, strip.valid)
