import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alosmap.tiling import (
    Tile,
    axis_cores,
    axis_starts,
    blend_weights,
    cut_tiles,
    discard_margin,
    grid_part,
    tile_weights,
    window_grid,
)

sizes = st.integers(min_value=1, max_value=700)
tiles = st.sampled_from([24, 32, 64, 256])


@st.composite
def grids(draw):
    tile = draw(tiles)
    overlap = draw(st.integers(min_value=0, max_value=tile - 1))
    return draw(sizes), draw(sizes), tile, overlap


@settings(max_examples=300, deadline=None)
@given(grids())
def test_windows_cover_raster_inside_bounds(args):
    h, w, tile, overlap = args
    cover = np.zeros((h, w), dtype=np.int32)
    for row in window_grid(h, w, tile, overlap):
        for t in row:
            assert t.row >= 0 and t.col >= 0
            assert t.row + t.height <= h and t.col + t.width <= w
            assert t.height == min(tile, h) and t.width == min(tile, w)
            cover[t.slices] += 1
    assert cover.min() >= 1


@settings(max_examples=300, deadline=None)
@given(sizes, tiles, st.data())
def test_axis_starts_edge_aligned_and_strided(length, tile, data):
    overlap = data.draw(st.integers(min_value=0, max_value=tile - 1))
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length > tile:
        assert starts[-1] + tile == length
        gaps = np.diff(starts)
        # every step is at most the stride, so neighbours overlap by >= overlap
        assert gaps.max() <= tile - overlap
    else:
        assert starts == [0]


def _blend(h, w, tile, overlap, values):
    acc = np.zeros((h, w))
    wsum = np.zeros((h, w))
    for row in window_grid(h, w, tile, overlap):
        for t in row:
            wt = tile_weights(t, h, w, tile, overlap).astype(np.float64)
            acc[t.slices] += values(t) * wt
            wsum[t.slices] += wt
    return acc, wsum


@settings(max_examples=200, deadline=None)
@given(grids())
def test_weights_positive_everywhere_and_constant_blend_is_exact(args):
    h, w, tile, overlap = args
    acc, wsum = _blend(h, w, tile, overlap, lambda t: 7.5)
    assert wsum.min() > 0  # every pixel gets a defined value
    np.testing.assert_allclose(acc / wsum, 7.5, rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(grids())
def test_blend_ignores_tile_edge_margins(args):
    """Values a window holds within the discard margin of an interior edge get no
    weight: poison them and the blend is unaffected."""
    h, w, tile, overlap = args
    m = discard_margin(overlap)

    def poisoned(t):
        v = np.ones((t.height, t.width))
        if m:
            if t.row > 0:
                v[:m] = 1e6
            if t.row + t.height < h:
                v[-m:] = 1e6
            if t.col > 0:
                v[:, :m] = 1e6
            if t.col + t.width < w:
                v[:, -m:] = 1e6
        return v

    acc, wsum = _blend(h, w, tile, overlap, poisoned)
    np.testing.assert_allclose(acc / wsum, 1.0, rtol=1e-9)


@settings(max_examples=100, deadline=None)
@given(tiles, st.data())
def test_blend_weights_shape_range_symmetry(tile, data):
    overlap = data.draw(st.integers(min_value=0, max_value=tile - 1))
    wt = blend_weights(tile, overlap)
    assert wt.shape == (tile, tile) and wt.dtype == np.float32
    assert wt.min() >= 0 and wt.max() > 0
    if 2 * (overlap - discard_margin(overlap)) < tile:
        assert wt.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(wt, wt.T)
    np.testing.assert_array_equal(wt, wt[::-1, ::-1])
    c = tile // 2
    assert wt[c, c] == wt.max()
    # border sides are not ramped
    full = blend_weights(
        tile, overlap, top=False, bottom=False, left=False, right=False
    )
    assert np.all(full == 1)


def test_known_grid():
    assert axis_starts(600, 256, 64) == [0, 192, 344]
    assert axis_starts(256, 256, 64) == [0]
    assert axis_starts(100, 256, 0) == [0]
    assert axis_starts(512, 256, 0) == [0, 256]


@pytest.mark.parametrize("bad", [(0, 256, 0), (10, 0, 0), (10, 16, 16), (10, 16, -1)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        axis_starts(*bad)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(min_value=1, max_value=90),
    w=st.integers(min_value=1, max_value=200),
    tile=st.sampled_from([16, 32, 64]),
    data=st.data(),
)
def test_cut_tiles_pads_and_skips_empty_windows(h, w, tile, data):
    overlap = data.draw(st.integers(min_value=0, max_value=tile - 1))
    rng = np.random.default_rng(h * 1000 + w)
    th = min(tile, h)
    strip = rng.standard_normal((th, w)).astype(np.float32)
    valid = rng.random((th, w)) < 0.5
    valid[:, : w // 3] = False  # empty windows on the left
    cols = axis_starts(w, tile, overlap)
    tiles, skipped = cut_tiles(strip, valid, 7, cols, tile)
    assert skipped + len(tiles) == len(cols)
    tw = min(tile, w)
    for t, arr in tiles:
        assert (t.row, t.height, t.width) == (7, th, tw)
        assert arr.shape == (tile, tile) and arr.dtype == np.float32
        np.testing.assert_array_equal(arr[:th, :tw], strip[:, t.col : t.col + tw])
        assert not arr[th:].any() and not arr[:, tw:].any()
        assert valid[:, t.col : t.col + tw].any()
    kept = {t.col for t, _ in tiles}
    for col in set(cols) - kept:
        assert not valid[:, col : col + tw].any()


@settings(max_examples=200, deadline=None)
@given(grids(), st.data())
def test_a_part_of_the_grid_blends_as_the_whole_grid(args, data):
    """The windows an area takes, blended in their frame, give the area's pixels
    the whole grid's weights; every window left out gives them weight 0."""
    h, w, tile, overlap = args
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    area = Tile(
        r0, c0, data.draw(st.integers(1, h - r0)), data.draw(st.integers(1, w - c0))
    )
    part = grid_part(h, w, tile, overlap, area)
    f, a = part.frame, part.area
    assert (f.row + a.row, f.col + a.col, a.height, a.width) == (
        area.row, area.col, area.height, area.width,
    )  # fmt: skip
    rows = {r + f.row for r in part.rows}
    cols = {c + f.col for c in part.cols}
    assert rows <= set(axis_starts(h, tile, overlap))
    assert cols <= set(axis_starts(w, tile, overlap))
    assert part.end == max(part.rows) + min(tile, h) <= f.height
    got = np.zeros((f.height, f.width))
    for r in part.rows:
        for c in part.cols:
            t = Tile(r, c, min(tile, h), min(tile, w))
            got[t.slices] += tile_weights(t, f.height, f.width, tile, overlap)
    whole = np.zeros((h, w))
    for t in (t for row in window_grid(h, w, tile, overlap) for t in row):
        wt = tile_weights(t, h, w, tile, overlap)
        whole[t.slices] += wt
        if t.row not in rows or t.col not in cols:  # left out: weight 0 there
            inside = wt[
                max(area.row - t.row, 0) : max(area.row + area.height - t.row, 0),
                max(area.col - t.col, 0) : max(area.col + area.width - t.col, 0),
            ]
            assert not inside.any()
    np.testing.assert_array_equal(
        got[a.row : a.row + a.height, a.col : a.col + a.width], whole[area.slices]
    )
    assert whole[area.slices].min() > 0


def _axis_weights(starts, length, tile, overlap):
    """Each start's 1-D blend weights along the axis, on the whole axis."""
    out = {}
    for s in starts:
        t = Tile(0, s, 1, min(tile, length))
        w = np.zeros(length)
        w[s : s + t.width] = tile_weights(t, 1, length, tile, overlap)[0]
        out[s] = w
    return out


@settings(max_examples=300, deadline=None)
@given(sizes, tiles, st.data())
def test_axis_cores_are_where_a_window_alone_sets_the_blend(length, tile, data):
    """A core is exactly the run of a window's pixels with weight 1 where every
    other window has weight 0 (the whole run: every such pixel is in a core)."""
    overlap = data.draw(st.integers(0, tile - 1))
    starts = axis_starts(length, tile, overlap)
    if data.draw(st.booleans()) and len(starts) > 2:  # a part's windows
        i = data.draw(st.integers(0, len(starts) - 2))
        starts = starts[i : i + data.draw(st.integers(1, len(starts) - i))]
    weights = _axis_weights(starts, length, tile, overlap)
    cores = axis_cores(starts, length, tile, overlap)
    assert set(cores) == set(starts)
    for s, w in weights.items():
        others = sum((v > 0).astype(int) for t, v in weights.items() if t != s)
        mine = (w == 1.0) & (others == 0)
        a, b = cores[s]
        got = np.zeros(length, dtype=bool)
        got[s + a : s + b] = True
        np.testing.assert_array_equal(got, mine)  # one contiguous run, all of it
    for a, b in cores.values():
        assert 0 <= a <= b <= min(tile, length)


def test_axis_cores_of_a_regular_grid_and_of_a_last_window_close_behind():
    # 256 / 64: weight 1 on [48, 208) of a window, the neighbours reach 16 px in
    cores = axis_cores(axis_starts(6000, 256, 64), 6000, 256, 64)
    assert cores[0] == (0, 208)  # the raster's edge: weight 1 from the border
    assert cores[192] == (48, 208)
    assert cores[5744] == (64, 256)  # the last window, 176 px after the one before
    # a last window 32 px after the one before covers its whole core
    cores = axis_cores(axis_starts(12000, 256, 64), 12000, 256, 64)
    assert cores[11712] == (0, 0)
