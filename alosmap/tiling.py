"""Sliding-window geometry, tile cutting and blend weights (pure: no I/O, no torch).

The window grid is **edge-aligned**: windows step by ``tile - overlap`` from the
top-left corner, and the last window of each row/column is shifted inward so it ends
exactly at the raster edge (no invented pixels). A raster smaller than a tile gets one
window that is padded at read time and cropped afterwards.

Overlapping windows are blended with a separable weight that is 1 in the tile and
ramps down (raised cosine) across the ``overlap`` margin of every side that faces
another window. The outermost ``overlap // 4`` pixels of such a side get weight **0**:
predictions right at a tile edge (where the model saw padding instead of context) are
discarded, so a model whose receptive field fits in that margin gives exactly the map
it would give on the whole scene at once. Sides on the raster border keep weight 1 up
to the edge, so every pixel gets a defined value; dividing by the accumulated weight
makes the blend exact (blending identical tiles returns the tile).

Overlap rule of thumb (TorchGeo's ``GridGeoSampler``): about the model's effective
receptive field; for the UPerNet-Swin models 1/4 of the tile (64 px at 256) is ample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One window of the grid, in pixel coordinates of the raster.

    Attributes:
        row, col: top-left corner.
        height, width: size inside the raster (smaller than the tile size only when
            the raster itself is smaller than a tile).
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices into the raster."""
        return (
            slice(self.row, self.row + self.height),
            slice(self.col, self.col + self.width),
        )


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows along one axis (edge-aligned).

    Args:
        length: raster size along the axis (pixels, > 0).
        tile: window size (pixels, > 0).
        overlap: pixels shared by neighbouring windows (0 <= overlap < tile).

    Returns:
        Increasing offsets; the first is 0 and the last ends at ``length`` (or the
        single offset 0 when ``length <= tile``).
    """
    _check(length, tile, overlap)
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def window_grid(height: int, width: int, tile: int, overlap: int) -> list[list[Tile]]:
    """The grid of windows covering a ``height × width`` raster, row by row."""
    rows = axis_starts(height, tile, overlap)
    cols = axis_starts(width, tile, overlap)
    h, w = min(tile, height), min(tile, width)
    return [[Tile(r, c, h, w) for c in cols] for r in rows]


def default_overlap(tile: int) -> int:
    """Pixels shared by neighbouring windows unless told: a quarter of the tile.

    The one place that decides it (64 for 256-pixel tiles); options resolved
    against a model (:meth:`~alosmap.predict.options.InferenceOptions.for_model`)
    carry the result.
    """
    return tile // 4


def window_support(
    start: int, size: int, length: int, tile: int, overlap: int
) -> tuple[int, int]:
    """The pixels ``[lo, hi)`` of one axis where a window's blend weight is non-zero.

    Args:
        start: the window's start (one of :func:`axis_starts`).
        size: its size inside the raster (``min(tile, length)``).
        length: raster size along the axis.
        tile: window size.
        overlap: overlap of the grid.
    """
    ramp = _ramp(tile, overlap, start > 0, start + size < length)[:size]
    nonzero = np.flatnonzero(ramp)
    return start + int(nonzero[0]), start + int(nonzero[-1]) + 1


def axis_cores(
    starts: Sequence[int], length: int, tile: int, overlap: int
) -> dict[int, tuple[int, int]]:
    """Each window's **core** along one axis: where it alone sets the blend.

    The core of a window is the run ``[a, b)`` of its pixels (window coordinates)
    where its blend weight is exactly 1 and every other window of ``starts`` has
    weight 0: there the blended probabilities are the window's own, bit for bit
    (``p · 1 / 1``), so the map can be finished straight from them. Empty
    (``a == b``) where no such run exists.

    Args:
        starts: the window starts of the axis (:func:`axis_starts`, or a part's).
        length: the axis' size (the raster's or the frame's).
        tile: window size.
        overlap: overlap of the grid.
    """
    size = min(tile, length)
    count = np.zeros(length, dtype=np.int32)
    ramps = {}
    for s in starts:
        r = _ramp(tile, overlap, s > 0, s + size < length)[:size]
        ramps[s] = r
        count[s : s + size] += r > 0
    cores = {}
    for s, r in ramps.items():
        alone = np.flatnonzero((r == 1.0) & (count[s : s + size] == 1))
        contiguous = alone.size and int(alone[-1] - alone[0]) + 1 == alone.size
        cores[s] = (int(alone[0]), int(alone[-1]) + 1) if contiguous else (0, 0)
    return cores


def area_starts(length: int, tile: int, overlap: int, lo: int, hi: int) -> list[int]:
    """The window starts of an axis whose non-zero blend weight reaches ``[lo, hi)``.

    These are exactly the windows the whole raster's blend mixes into the pixels
    ``lo .. hi - 1``: the others give them weight 0.
    """
    size = min(tile, length)
    starts = []
    for s in axis_starts(length, tile, overlap):
        a, b = window_support(s, size, length, tile, overlap)
        if a < hi and lo < b:
            starts.append(s)
    return starts


@dataclass(frozen=True)
class GridPart:
    """The windows of a raster's grid that a rectangle of it needs, in a frame.

    A map of a part is the part of the map: the window grid is the whole raster's
    (:func:`window_grid`), and a part (an area of interest) takes the windows whose
    non-zero blend weight reaches it (:func:`area_starts`): every pixel of the part
    then gets the same windows with the same weights as in the whole raster's blend.

    The windows are blended in the **frame**: the rectangle they cover, widened by
    one pixel on every side that is not the raster's border. A window then touches
    the frame's border exactly where it touches the raster's, so blend weights
    computed in frame coordinates (:func:`tile_weights` of the frame's size) are the
    raster's. The widening pixel is covered by no window and never part of the area.

    Attributes:
        rows: window start rows, in frame coordinates.
        cols: window start columns, in frame coordinates.
        frame: the frame in raster coordinates (``height``/``width``: its size).
        area: the part in frame coordinates.
        end: frame row after the last window's last row (where blending ends).
    """

    rows: list[int]
    cols: list[int]
    frame: Tile
    area: Tile
    end: int

    @property
    def windows(self) -> int:
        """How many windows the part takes."""
        return len(self.rows) * len(self.cols)


def grid_part(height: int, width: int, tile: int, overlap: int, area: Tile) -> GridPart:
    """The windows of the ``height × width`` raster's grid that ``area`` needs.

    Args:
        height: raster height.
        width: raster width.
        tile: window size.
        overlap: overlap of the grid.
        area: the part, in raster pixels (inside the raster).

    Raises:
        ValueError: ``area`` is empty or not inside the raster.
    """
    if not (
        area.height >= 1
        and area.width >= 1
        and area.row >= 0
        and area.col >= 0
        and area.row + area.height <= height
        and area.col + area.width <= width
    ):
        raise ValueError(f"area {area} is not inside a {height} × {width} raster")
    rows = area_starts(height, tile, overlap, area.row, area.row + area.height)
    cols = area_starts(width, tile, overlap, area.col, area.col + area.width)
    th, tw = min(tile, height), min(tile, width)
    r0 = max(rows[0] - 1, 0)
    c0 = max(cols[0] - 1, 0)
    r1 = min(rows[-1] + th + 1, height)
    c1 = min(cols[-1] + tw + 1, width)
    return GridPart(
        rows=[r - r0 for r in rows],
        cols=[c - c0 for c in cols],
        frame=Tile(r0, c0, r1 - r0, c1 - c0),
        area=Tile(area.row - r0, area.col - c0, area.height, area.width),
        end=rows[-1] + th - r0,
    )


def cut_tiles(
    strip: np.ndarray, valid: np.ndarray, row: int, cols: Sequence[int], tile: int
) -> tuple[list[tuple[Tile, np.ndarray]], int]:
    """The model tiles of one strip of windows (the windows starting at ``row``).

    Each window ``strip[:, col : col + tile]`` becomes a zero-padded ``tile × tile``
    float32 array (padding only where the raster is smaller than a tile); windows
    without a single valid pixel are skipped.

    Args:
        strip: model input of the strip's rows, ``[min(tile, height), width]``
            (already normalised).
        valid: validity of the same pixels (bool, same shape).
        row: raster row of the strip's first row.
        cols: window start columns (:func:`axis_starts` of the width).
        tile: window size.

    Returns:
        ``(tiles, skipped)``: ``(Tile, array)`` pairs in column order, and how many
        windows were skipped as all no data.
    """
    th, tw = strip.shape[0], min(tile, strip.shape[1])
    tiles: list[tuple[Tile, np.ndarray]] = []
    skipped = 0
    for col in cols:
        if not valid[:, col : col + tw].any():
            skipped += 1
            continue
        arr = np.zeros((tile, tile), dtype=np.float32)
        arr[:th, :tw] = strip[:, col : col + tw]
        tiles.append((Tile(row, col, th, tw), arr))
    return tiles, skipped


def discard_margin(overlap: int) -> int:
    """Pixels at an interior tile edge whose predictions get weight 0."""
    return overlap // 4


@lru_cache(maxsize=64)
def _ramp(tile: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """1-D weights: ramps at the start and/or end of the tile (interior sides)."""
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        m = discard_margin(overlap)
        n = overlap - m  # ramp region [0, n): zeros for d < m, then a raised cosine
        d = np.arange(min(n, tile), dtype=np.float64)
        rise = 0.5 * (1 - np.cos(np.pi * (d - m + 1) / (n - m + 1)))
        ramp = np.where(d < m, 0.0, rise)
        if start:
            w[: ramp.size] = np.minimum(w[: ramp.size], ramp)
        if end:
            w[tile - ramp.size :] = np.minimum(w[tile - ramp.size :], ramp[::-1])
    w.setflags(write=False)
    return w


@lru_cache(maxsize=64)
def blend_weights(
    tile: int,
    overlap: int,
    *,
    top: bool = True,
    bottom: bool = True,
    left: bool = True,
    right: bool = True,
) -> np.ndarray:
    """2-D blend weights ``[tile, tile]``, float32 in [0, 1] (cached, read-only).

    Args:
        tile: tile size.
        overlap: overlap between neighbouring windows.
        top: whether the top side faces another window (ramped, with a zero
            margin) rather than the raster border (weight 1 up to the edge).
        bottom: the same for the bottom side.
        left: the same for the left side.
        right: the same for the right side.
    """
    _check(tile, tile, overlap)
    r = _ramp(tile, overlap, top, bottom)
    c = _ramp(tile, overlap, left, right)
    w = np.outer(r, c).astype(np.float32)
    w.setflags(write=False)  # cached and shared: never modified in place
    return w


def tile_weights(
    t: Tile, height: int, width: int, tile: int, overlap: int
) -> np.ndarray:
    """Blend weights of window ``t`` of a ``height × width`` raster (cropped to it)."""
    w = blend_weights(
        tile,
        overlap,
        top=t.row > 0,
        bottom=t.row + t.height < height,
        left=t.col > 0,
        right=t.col + t.width < width,
    )
    return w[: t.height, : t.width]


def _check(length: int, tile: int, overlap: int) -> None:
    if length < 1:
        raise ValueError(f"raster size must be positive, got {length}")
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
