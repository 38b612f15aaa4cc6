"""The accumulator (one engine: NumPy on the host, torch tensors on the device).

:class:`blend_reference.ReferenceBlend` is the pipeline's blend as it was before it
moved to the device: either engine must give the same maps up to float summation
order (:func:`blend_reference.check_against_reference`), and the two engines the
same maps bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from blend_reference import ReferenceBlend, check_against_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from alosmap.predict.blend import ENGINES, Rows, StripAccumulator, top_class_numpy
from alosmap.predict.options import DEFAULT_OVERLAP
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, axis_starts, tile_weights

TILE = 32


def _spec(task: str) -> ModelSpec:
    from alosmap.predict.pipeline import default_model_path
    from alosmap.spec import load_spec

    return load_spec(default_model_path(task))


def _run(
    spec: ModelSpec,
    height: int,
    width: int,
    overlap: int,
    valid: np.ndarray,
    *,
    seed: int = 0,
    conf: bool = True,
    prob: bool = True,
    engine: str = "torch",
    tile: int = TILE,
) -> tuple[dict[str, np.ndarray], ReferenceBlend, np.ndarray]:
    """Feed one scene's windows to the engine and the reference; the engine's maps."""
    rng = np.random.default_rng(seed)
    k = spec.num_outputs
    out = {
        "classes": np.full((height, width), 77, np.uint8),
        "confidence": np.full((height, width), 77, np.uint8),
        "probabilities": np.full((k, height, width), 77, np.uint8),
    }
    rows_seen: list[int] = []

    def emit(r: Rows) -> None:
        r.wait()
        n = r.classes.shape[0]
        rows_seen.extend(range(r.row, r.row + n))
        out["classes"][r.row : r.row + n] = r.classes
        if conf:
            out["confidence"][r.row : r.row + n] = r.confidence
        if prob:
            out["probabilities"][:, r.row : r.row + n] = r.probabilities

    acc = StripAccumulator(
        width,
        height,
        tile,
        overlap,
        spec,
        emit,
        want_confidence=conf,
        want_probabilities=prob,
        engine=engine,
    )
    ref = ReferenceBlend(height, width, k)
    th, tw = min(tile, height), min(tile, width)
    used = np.zeros((height, width), bool)
    opened: set[int] = set()
    for row, col in acc.order:  # the pair (if any) interleaved, as the pipeline
        _open_bands(acc, valid, row, opened)
        if not valid[row : row + th, col : col + tw].any():
            continue  # the pipeline skips windows without data
        t = Tile(row, col, th, tw)
        logits = rng.normal(0, 3, size=(k, tile, tile)).astype(np.float32)
        if k == 1:
            p = 1 / (1 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(0))
            p = e / e.sum(0)
        p = p.astype(np.float32)
        acc.add(t, acc.asarray(p))
        ref.add(t, p, tile_weights(t, height, width, tile, overlap))
        used[t.slices] = True
    acc.finish()
    assert sorted(rows_seen) == list(range(height)), "every row emitted once"
    return out, ref, used


def _open_bands(
    acc: StripAccumulator, valid: np.ndarray, row: int, opened: set[int]
) -> None:
    """Open the bands up to ``row`` not yet open, as the pipeline's strips come
    (both bands of the accumulator's pair before its first window)."""
    if acc.pair is not None and row in acc.pair:
        row = acc.pair[1]
    for r in acc.starts[0]:
        if r <= row and r not in opened:
            opened.add(r)
            band = valid[r : r + min(acc.tile, acc.height)]
            acc.open_band(r, band if band.any() else None)


@pytest.mark.parametrize(
    ("height", "width", "overlap"),
    [
        (100, 77, DEFAULT_OVERLAP // 8),  # odd sizes, the last windows shifted in
        (20, 50, 8),  # shorter than a tile
        (45, 1, 8),  # one pixel wide
        (1, 40, 8),  # one pixel high
        (90, 90, 0),  # no overlap
        (90, 70, 24),  # overlap over half a tile: rows shift through a copy
        (32, 32, 8),  # exactly one tile
        (57, 100, 8),  # last windows 1 px from the one before: cores vanish
        (100, 57, 8),
    ],
)
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_blend_matches_reference_and_engines_agree(
    height: int, width: int, overlap: int, task: str
) -> None:
    spec = _spec(task)
    rng = np.random.default_rng(height * 1000 + width)
    valid = rng.random((height, width)) > 0.05
    maps = {}
    for engine in ENGINES:
        maps[engine], ref, _ = _run(spec, height, width, overlap, valid, engine=engine)
        check_against_reference(spec, maps[engine], ref, valid)
    for key in ("classes", "confidence", "probabilities"):  # bit for bit
        np.testing.assert_array_equal(maps["numpy"][key], maps["torch"][key])


@pytest.mark.parametrize("task", ["lulc", "water"])
@pytest.mark.parametrize(("conf", "prob"), [(False, False), (True, False)])
def test_engines_agree_with_fewer_outputs(task: str, conf: bool, prob: bool) -> None:
    """Classes only (no division by the weights), or with the confidence."""
    spec = _spec(task)
    valid = np.ones((130, 110), bool)
    valid[40:50, 20:90] = False
    a, ref, _ = _run(spec, 130, 110, 8, valid, conf=conf, prob=prob, engine="numpy")
    b, _, _ = _run(spec, 130, 110, 8, valid, conf=conf, prob=prob, engine="torch")
    check_against_reference(
        spec,
        {"classes": a["classes"], "confidence": a["confidence"] if conf else None},
        ref,
        valid,
    )
    np.testing.assert_array_equal(a["classes"], b["classes"])
    np.testing.assert_array_equal(a["confidence"], b["confidence"])


def test_host_engine_imports_no_torch() -> None:
    """The host engine and its radiometry run without PyTorch (a lean install)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import numpy as np\n"
        "from alosmap.predict.blend import StripAccumulator\n"
        "from alosmap.radiometry import Radiometry, model_input\n"
        "from alosmap.predict.pipeline import default_model_path\n"
        "from alosmap.spec import load_spec\n"
        "from alosmap.tiling import Tile\n"
        "rows = []\n"
        "spec = load_spec(default_model_path('water'))\n"
        "acc = StripAccumulator(40, 32, 32, 8, spec, rows.append,"
        " want_confidence=True, want_probabilities=True)\n"
        "acc.open_band(0, np.ones((32, 40), bool))\n"
        "raw = np.full((32, 40), 3000, np.uint16)\n"
        "x = model_input(raw, raw > 0, Radiometry(), 'dn', -83.0)\n"
        "p = np.full((1, 32, 32), 0.7, np.float32)\n"
        "acc.add(Tile(0, 0, 32, 32), p)\n"
        "acc.add(Tile(0, 8, 32, 32), p)\n"
        "acc.finish()\n"
        "assert rows and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_data_bands_and_skipped_windows_stay_no_data() -> None:
    """Whole bands without data, windows skipped inside a band, holes: all match."""
    spec = _spec("lulc")
    h, w = 150, 130
    valid = np.ones((h, w), bool)
    valid[30:95] = False  # whole bands of windows without data
    valid[:, 40:90] = False  # windows skipped in the middle of the other bands
    valid[120:, 100:] = False  # trailing windows skipped
    valid[5:9, 5:9] = False  # a hole
    out, ref, used = _run(spec, h, w, 8, valid)
    assert not used.all(), "the scene must skip windows for this test"
    check_against_reference(spec, out, ref, valid)


def test_batch_of_windows_independent_of_call_pattern() -> None:
    """Blending a batch tensor window by window equals blending views of it."""
    spec = _spec("lulc")
    valid = np.ones((70, 70), bool)
    a, _, _ = _run(spec, 70, 70, 8, valid, seed=3)
    b, _, _ = _run(spec, 70, 70, 8, valid, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "holes",
    [
        [(30, 60, 20, 70)],  # whole windows without data in the middle
        [(0, 100, 0, 40)],  # the left columns: bands start with missing windows
        [(0, 100, 60, 100)],  # the right columns: bands end with missing windows
        [(20, 60, 0, 100)],  # a whole band without data (its windows never come)
        [(0, 30, 0, 100), (70, 100, 30, 60)],  # the first band, a hole below
    ],
)
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_windows_without_data_leave_no_stale_pixels(
    holes: list[tuple[int, int, int, int]], task: str
) -> None:
    # the pipeline skips windows without data: the cores and seams they would
    # have finished must come out as no data, the rest as the reference blend
    spec = _spec(task)
    valid = np.ones((100, 100), bool)
    for r0, r1, c0, c1 in holes:
        valid[r0:r1, c0:c1] = False
    maps = {}
    for engine in ENGINES:
        maps[engine], ref, _ = _run(spec, 100, 100, 8, valid, engine=engine)
        check_against_reference(spec, maps[engine], ref, valid)
    for name in maps["numpy"]:
        np.testing.assert_array_equal(maps["numpy"][name], maps["torch"][name])


def test_a_window_off_the_grid_is_refused() -> None:
    acc = StripAccumulator(100, 100, TILE, 8, _spec("lulc"), lambda r: None)
    acc.open_band(0, np.ones((TILE, 100), bool))
    with pytest.raises(ValueError, match="not one of the accumulator's grid"):
        acc.add(Tile(0, 5, TILE, TILE), np.zeros((9, TILE, TILE), np.float32))


def test_top_class_numpy_is_argmax_with_first_index_on_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(9, 70, 33)).astype(np.float32)  # many ties
    top, idx = top_class_numpy(a)
    np.testing.assert_array_equal(idx, a.argmax(0))
    np.testing.assert_array_equal(top, a.max(0))


def test_top_class_of_cpu_tensors_is_what_a_gpu_computes() -> None:
    """On CPU tensors top_class runs the NumPy loop (torch's max over dim 0 is
    scalar code there); it must give what ``max(dim=0)``, the GPU's kernel, gives:
    the first index on ties, the codes of it, on a strided view too."""
    torch = pytest.importorskip("torch")
    from alosmap._xp import top_class

    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.integers(0, 4, size=(9, 80, 40)).astype(np.float32))
    view = a[:, 5:70, 3:]  # as a window's core: rows and columns of a block
    codes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 10], dtype=torch.uint8)
    for acc, c in ((a, None), (view, codes)):
        top, code = top_class(acc, c)
        want_top, want_idx = acc.max(dim=0)
        assert isinstance(top, torch.Tensor) and code.dtype == torch.uint8
        assert torch.equal(top, want_top)
        want = want_idx.to(torch.uint8) if c is None else c[want_idx]
        assert torch.equal(code, want)


def test_emitted_rows_have_data_exactly_where_valid() -> None:
    spec = _spec("lulc")
    valid = np.ones((50, 40), bool)
    valid[:10] = False
    counts: list[np.ndarray] = []

    def emit(r: Rows) -> None:
        counts.append(np.bincount(r.classes.ravel(), minlength=256))

    acc = StripAccumulator(40, 50, TILE, 8, spec, emit)
    for row in axis_starts(50, TILE, 8):
        acc.open_band(row, valid[row : row + TILE])
        for col in axis_starts(40, TILE, 8):
            probs = np.full((spec.num_outputs, TILE, TILE), 0.01, np.float32)
            probs[2] = 0.92
            acc.add(Tile(row, col, TILE, TILE), probs)
    acc.finish()
    pixels = np.sum(counts, axis=0)
    assert pixels[spec.legend.nodata] == (~valid).sum()
    assert pixels[spec.classes[2].code] == valid.sum()
    assert pixels.sum() == valid.size


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 90),
    st.integers(1, 90),
    st.sampled_from([8, 16, 24]),
    st.data(),
)
def test_any_grid_blends_as_the_reference(height, width, tile, data):
    """Cores, seams and held rows give the reference blend on any grid (overlaps
    from none to nearly a tile, windows without a core, holes without data), and
    the two engines the same bits."""
    overlap = data.draw(st.integers(0, tile - 1))
    task = data.draw(st.sampled_from(["lulc", "water"]))
    spec = _spec(task)
    rng = np.random.default_rng(height * 131 + width)
    valid = rng.random((height, width)) > 0.05
    for _ in range(data.draw(st.integers(0, 2))):  # holes: windows that never come
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        valid[r0 : r0 + tile * 2, c0 : c0 + tile * 2] = False
    maps = {}
    for engine in ENGINES:
        maps[engine], ref, _ = _run(
            spec, height, width, overlap, valid, engine=engine, tile=tile
        )
        check_against_reference(spec, maps[engine], ref, valid)
    for name in maps["numpy"]:
        np.testing.assert_array_equal(maps["numpy"][name], maps["torch"][name])


#: A grid whose last window starts 4 rows after the one before (tile 32, overlap
#: 8): the band before it has no core rows, and the two come as a pair.
PAIR_H, PAIR_W = 108, 150


@pytest.mark.parametrize(
    "holes",
    [
        [],
        [(0, PAIR_H, 60, 100)],  # windows of both bands of the pair skipped
        [(72, 104, 0, PAIR_W)],  # the upper band without data, the lower with
        [(76, PAIR_H, 0, PAIR_W)],  # the lower band without data
        [(70, PAIR_H, 0, 50)],  # the pair's first windows skipped
        [(70, PAIR_H, 100, PAIR_W)],  # and its last
        [(0, 80, 0, PAIR_W)],  # no band before the pair has data
    ],
)
@pytest.mark.parametrize("task", ["lulc", "water"])
def test_the_last_two_bands_as_a_pair_blend_as_the_reference(
    holes: list[tuple[int, int, int, int]], task: str
) -> None:
    spec = _spec(task)
    acc = StripAccumulator(PAIR_W, PAIR_H, TILE, 8, spec, lambda r: None)
    assert acc.pair == (72, 76)
    valid = np.ones((PAIR_H, PAIR_W), bool)
    for r0, r1, c0, c1 in holes:
        valid[r0:r1, c0:c1] = False
    maps = {}
    for engine in ENGINES:
        maps[engine], ref, _ = _run(spec, PAIR_H, PAIR_W, 8, valid, engine=engine)
        check_against_reference(spec, maps[engine], ref, valid)
    for name in maps["numpy"]:
        np.testing.assert_array_equal(maps["numpy"][name], maps["torch"][name])


def test_the_pair_holds_no_more_full_width_rows_than_an_even_grid() -> None:
    """12000² (last window 32 rows after the one before) holds the rows of
    11968² (the grid ends evenly) full width, and the pair's own rows in a
    ring a few windows wide: not all 224 weighted rows of its upper band."""
    spec = _spec("lulc")
    even = StripAccumulator(11968, 11968, 256, 64, spec, lambda r: None)
    tail = StripAccumulator(12000, 12000, 256, 64, spec, lambda r: None)
    assert even.pair is None and tail.pair == (11712, 11744)
    assert tail.acc.shape == (9, even.srows, 12000)
    ring = tail.racc.shape
    assert ring[2] <= 3 * 256 and ring[1] < 224


def test_a_pair_window_out_of_its_order_is_refused() -> None:
    """Grid order would hold the pair's rows full width: refused, not wrong."""
    acc = StripAccumulator(PAIR_W, PAIR_H, TILE, 8, _spec("lulc"), lambda r: None)
    upper, lower = acc.pair or (0, 0)
    for r in acc.starts[0]:
        acc.open_band(r, np.ones((TILE, PAIR_W), bool))
    p = np.full((9, TILE, TILE), 1 / 9, np.float32)
    for row in acc.starts[0]:
        for col in acc.starts[1]:
            t = Tile(row, col, TILE, TILE)
            if row == lower and (upper, acc.starts[1][-1]) in acc.order[-3:]:
                with pytest.raises(ValueError, match="came after a window"):
                    acc.add(t, p)
                return
            acc.add(t, p)
    pytest.fail("the grid order was taken")
