"""The part of a scene a run maps: the whole scene or an area of interest.

A map of a part is the part of the map. The window grid is the whole scene's
(:func:`~alosmap.tiling.window_grid` of its size, the tile and the overlap); an area
of interest (``--bbox``, ``--aoi``) only selects the windows whose non-zero blend
weight reaches its pixels (:func:`~alosmap.tiling.grid_part`), and the finished rows
are cropped to it. The model sees the same windows with the same input as in a
whole-scene run (pixels outside the area are not masked before the model), and
each pixel of the area gets the same windows with the same weights in the same
order: its class, confidence and probabilities are the whole-scene map's.

:class:`MapArea` says which windows to read (the frame: a window of the scene the
pipeline reads and blends in) and turns the frame's finished rows into the map's:
rows and columns of the area only, pixels outside an AOI's polygons set to no data
(the writer counts the pixels per class as it checks the codes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from rasterio.windows import Window

from alosmap.predict.blend import PERCENT_NODATA, Rows
from alosmap.tiling import GridPart, Tile, grid_part

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.io.scene import Scene
    from alosmap.predict.options import ResolvedOptions

logger = logging.getLogger(__name__)

#: ``inside(window)``: ``True``, ``False`` or a bool array of the window's pixels
#: (scene pixels) inside the area of interest.
Inside = Callable[[Window], "np.ndarray | bool"]


@dataclass
class MapArea:
    """The windows a run maps and the crop of its finished rows to the map.

    Attributes:
        part: the windows of the scene's grid, the frame they are blended in and
            the area in it.
        inside: the AOI's polygons on the scene's grid (None: the whole window).
        nodata: the map's no-data code.
    """

    part: GridPart
    inside: Inside | None
    nodata: int

    @property
    def is_whole(self) -> bool:
        """Whether the map is the whole scene (the frame, no AOI polygons)."""
        p = self.part
        return self.inside is None and p.area == Tile(
            0, 0, p.frame.height, p.frame.width
        )

    @property
    def frame(self) -> Window:
        """The scene window the run reads and blends in."""
        f = self.part.frame
        return Window(f.col, f.row, f.width, f.height)

    @property
    def window(self) -> Window:
        """The map's window of the scene."""
        f, a = self.part.frame, self.part.area
        return Window(f.col + a.col, f.row + a.row, a.width, a.height)

    def crop(self, rows: Rows) -> Rows | None:
        """The map's part of the frame's finished ``rows`` (None: none of it).

        The rows must hold their values (:meth:`Rows.wait`).
        """
        a, f = self.part.area, self.part.frame
        n = rows.classes.shape[0]
        lo, hi = max(rows.row, a.row), min(rows.row + n, a.row + a.height)
        if lo >= hi:
            return None
        rs, cs = slice(lo - rows.row, hi - rows.row), slice(a.col, a.col + a.width)
        out = Rows(
            lo - a.row,
            rows.classes[rs, cs],
            None if rows.confidence is None else rows.confidence[rs, cs],
            None if rows.probabilities is None else rows.probabilities[:, rs, cs],
        )
        if self.inside is not None:
            inside = self.inside(Window(f.col + a.col, f.row + lo, a.width, hi - lo))
            if inside is not True:
                _mask_outside(out, inside, self.nodata)
        return out


def _mask_outside(rows: Rows, inside: np.ndarray | bool, nodata: int) -> None:
    """Set the pixels outside the AOI to no data (copies of the cropped arrays)."""
    outside = np.logical_not(inside)
    rows.classes = np.where(outside, np.uint8(nodata), rows.classes)
    if rows.confidence is not None:
        rows.confidence = np.where(outside, np.uint8(PERCENT_NODATA), rows.confidence)
    if rows.probabilities is not None:
        rows.probabilities = np.where(
            outside[None], np.uint8(PERCENT_NODATA), rows.probabilities
        )


def map_area(scene: Scene, opts: ResolvedOptions, nodata: int) -> MapArea:
    """The part of ``scene`` the options map: the whole scene or their AOI.

    Raises:
        AoiError: an unreadable AOI, a bad ``bbox_crs``, a scene without CRS, or
            an AOI that covers no pixel of the scene.
    """
    info = scene.info
    window: Tile = Tile(0, 0, info.height, info.width)
    inside: Inside | None = None
    if opts.bbox is not None or opts.aoi is not None:
        from alosmap.io.aoi import aoi_window, bbox_aoi, read_aoi

        if opts.bbox is not None:
            aoi = bbox_aoi(
                cast(tuple[float, float, float, float], opts.bbox), opts.bbox_crs
            )
        else:
            aoi = read_aoi(cast(Path, opts.aoi))
        area = aoi_window(aoi, info.crs, info.transform, info.width, info.height)
        logger.info("area of interest %s: scene window %s", aoi.path, area.window)
        w = area.window
        window = Tile(int(w.row_off), int(w.col_off), int(w.height), int(w.width))
        inside = area.mask
    part = grid_part(info.height, info.width, opts.tile, opts.overlap, window)
    return MapArea(part, inside, nodata)


def count_masked(scene: Scene, area: MapArea) -> tuple[int, int]:
    """Layover and shadow pixels with data in the map's area (a mosaic tile's mask).

    The run reads the frame, a little more than the area; this reads the area's
    pixels of the mask again (mosaic tiles are small), inside the AOI only.
    """
    view = scene.crop(area.window, inside=area.inside)
    step = 1024
    for row in range(0, view.info.height, step):
        view.read_raw(row, step)
    return view.layover_pixels, view.shadow_pixels


__all__ = ["Inside", "MapArea", "count_masked", "map_area"]
