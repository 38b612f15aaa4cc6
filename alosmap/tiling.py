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
