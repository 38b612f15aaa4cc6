"""Sliding-window geometry and blend weights (pure functions: no I/O, no torch).

The window grid is **edge-aligned**: windows step by ``tile - overlap`` from the
top-left corner, and the last window of each row/column is shifted inward so it ends
exactly at the raster edge (no invented pixels). A raster smaller than a tile gets one
window that is padded at read time and cropped afterwards.

Overlapping windows are blended with a separable weight that is highest in the tile
centre and ramps down (raised cosine) across the ``overlap`` margin, so there are no
seams. Weights are strictly positive, so every pixel — including the raster border,
covered by a single window's ramp — gets a defined value; dividing by the accumulated
weight makes the blend exact: blending identical tiles returns the tile.

Overlap rule of thumb (TorchGeo's ``GridGeoSampler``): about the model's effective
receptive field; for the UPerNet-Swin models 1/4 of the tile (64 px at 256) is ample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Smallest blend weight (at the outermost pixel of a ramp).
MIN_WEIGHT = 1e-3


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


@lru_cache(maxsize=16)
def _ramp(tile: int, overlap: int) -> np.ndarray:
    w = np.ones(tile, dtype=np.float64)
    n = min(overlap, tile // 2)
    if n > 0:
        # raised cosine rising to exactly 1 across the (at most half-tile) margin
        t = np.arange(1, n + 1, dtype=np.float64) / n
        ramp = MIN_WEIGHT + (1 - MIN_WEIGHT) * 0.5 * (1 - np.cos(np.pi * t))
        w[:n] = ramp
        w[tile - n :] = np.minimum(w[tile - n :], ramp[::-1])
    w.setflags(write=False)
    return w


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """2-D blend weights ``[tile, tile]``: float32 in (0, 1], maximal in the centre."""
    _check(tile, tile, overlap)
    r = _ramp(tile, overlap)
    return np.outer(r, r).astype(np.float32)


def _check(length: int, tile: int, overlap: int) -> None:
    if length < 1:
        raise ValueError(f"raster size must be positive, got {length}")
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
