"""A scene's model-input tiles, read exactly as ``predict`` reads them.

The pipeline, export parity checks and the benchmark all feed a model the same way:
full-width strips of ``tile`` rows (:meth:`~alosmap.io.scene.Scene.read_strip`: σ0 in
dB and validity), normalised with the model's radiometry
(:func:`~alosmap.radiometry.normalize`), cut into zero-padded ``tile × tile`` windows
on the edge-aligned grid (:func:`~alosmap.tiling.cut_tiles`), windows without valid
pixels skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alosmap.predict.options import DEFAULT_OVERLAP
from alosmap.radiometry import Radiometry, normalize
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, axis_starts, cut_tiles

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.io.scene import Scene


@dataclass
class StripTiles:
    """The windows of one strip (the windows whose top row is ``row``).

    Attributes:
        row: raster row of the strip.
        valid: validity of the strip's pixels; None when none is valid.
        tiles: ``(Tile, [tile, tile] float32)`` of the windows with valid pixels.
        skipped: windows of the strip without a valid pixel.
    """

    row: int
    valid: np.ndarray | None
    tiles: list[tuple[Tile, np.ndarray]]
    skipped: int


def read_strip_tiles(
    scene: Scene, radiometry: Radiometry, row: int, tile: int, cols: Sequence[int]
) -> StripTiles:
    """Read, normalise and cut the strip of windows starting at ``row``.

    Args:
        scene: the opened scene.
        radiometry: the model's radiometry (clip range, mean and std).
        row: first row of the strip (a start of :func:`~alosmap.tiling.axis_starts`).
        tile: the model's tile size.
        cols: window start columns.
    """
    db, valid = scene.read_strip(row, min(tile, scene.info.height))
    if not valid.any():
        return StripTiles(row, None, [], len(cols))
    x = normalize(db, radiometry, valid)
    tiles, skipped = cut_tiles(x, valid, row, cols, tile)
    return StripTiles(row, valid, tiles, skipped)


def iter_strip_tiles(
    scene: Scene, radiometry: Radiometry, tile: int, overlap: int
) -> Iterator[StripTiles]:
    """Every strip of the scene's window grid, top to bottom.

    Args:
        scene: the opened scene.
        radiometry: the model's radiometry.
        tile: the model's tile size.
        overlap: pixels shared by neighbouring windows (``0 <= overlap < tile``).
    """
    info = scene.info
    cols = axis_starts(info.width, tile, overlap)
    for row in axis_starts(info.height, tile, overlap):
        yield read_strip_tiles(scene, radiometry, row, tile, cols)


def iter_scene_tiles(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    overlap: int = DEFAULT_OVERLAP,
    band: int | None = None,
    input_units: str = "auto",
) -> Iterator[tuple[Tile, np.ndarray]]:
    """The normalised model tiles of a scene file, in the pipeline's order.

    Args:
        path: the scene (any raster ``predict`` accepts).
        spec: the model spec (tile size, radiometry).
        overlap: pixels shared by neighbouring windows (``0 <= overlap < tile``).
        band: 1-based band of a multi-band scene.
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.

    Yields:
        ``(Tile, array)``: the window and its ``[tile, tile]`` float32 model input
        (0 at no data and in the padding); windows without valid pixels are left
        out.

    Raises:
        InputRasterError: the scene cannot be read.
    """
    from alosmap.io.scene import Scene

    with Scene(path, spec.radiometry, band=band, input_units=input_units) as scene:
        for strip in iter_strip_tiles(scene, spec.radiometry, spec.tile_size, overlap):
            yield from strip.tiles


__all__ = ["StripTiles", "iter_scene_tiles", "iter_strip_tiles", "read_strip_tiles"]
