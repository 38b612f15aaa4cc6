"""The JAXA 1° × 1° tile grid of the HRLULC maps (EPSG:4326, 1/12000° pixels).

JAXA distributes its high-resolution LULC maps as 1° × 1° GeoTIFF tiles on WGS 84
latitude/longitude (EPSG:4326) with 12000 × 12000 pixels of (1/12000)° (≈ 10 m). A
tile is named by its **south-west** corner: ``LC_N35E139.tif`` covers latitudes
35°-36° N and longitudes 139°-140° E, so its raster origin (the north-west corner
of pixel (0, 0)) is (139° E, 36° N). ``alosmap mosaic`` writes its tiles on exactly
this grid, so that they line up pixel for pixel with JAXA's maps.

The functions take ``pixels_per_degree`` (12000 by default) so that tests can use a
coarser grid with the same semantics (integer-degree cells, origin on the north-west
corner).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from affine import Affine

#: Pixels per degree of the JAXA grid (a pixel is 1/12000°, about 10 m).
JAXA_PIXELS_PER_DEGREE = 12000
#: CRS of the JAXA grid.
JAXA_CRS = "EPSG:4326"

_NAME = re.compile(
    r"^(?P<prefix>[A-Za-z0-9]+)_(?P<ns>[NS])(?P<lat>\d{2})(?P<ew>[EW])"
    r"(?P<lon>\d{3})"
)


@dataclass(frozen=True)
class Cell:
    """One 1° × 1° cell of the grid, identified by its south-west corner.

    Attributes:
        lat: latitude of the south edge (integer degrees, -90..89).
        lon: longitude of the west edge (integer degrees, -180..179).
        pixels_per_degree: grid resolution (12000 for JAXA).
    """

    lat: int
    lon: int
    pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE

    @property
    def size(self) -> int:
        """Pixels on a side (the cell is square)."""
        return self.pixels_per_degree

    @property
    def transform(self) -> Affine:
        """Affine transform: origin at the north-west corner, 1/ppd° pixels."""
        return cell_transform(self.lat, self.lon, self.pixels_per_degree)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees."""
        return (float(self.lon), float(self.lat), self.lon + 1.0, self.lat + 1.0)

    def name(self, prefix: str = "LC", suffix: str = ".tif") -> str:
        """File name, e.g. ``LC_N35E139.tif`` (see :func:`cell_name`)."""
        return cell_name(self.lat, self.lon, prefix=prefix, suffix=suffix)


def cell_name(lat: int, lon: int, *, prefix: str = "LC", suffix: str = ".tif") -> str:
    """JAXA-style name of the cell whose south-west corner is ``(lat, lon)``.

    Example: ``cell_name(35, 139) == "LC_N35E139.tif"``,
    ``cell_name(-1, -71) == "LC_S01W071.tif"``.
    """
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{prefix}_{ns}{abs(lat):02d}{ew}{abs(lon):03d}{suffix}"


def parse_cell_name(name: str) -> tuple[int, int]:
    """South-west corner ``(lat, lon)`` of a JAXA-style tile name.

    Accepts anything that starts like ``LC_N35E139`` (any prefix, any suffix).

    Raises:
        ValueError: when the name is not a tile name.
    """
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a tile name like LC_N35E139.tif")
    lat = int(m["lat"]) * (1 if m["ns"] == "N" else -1)
    lon = int(m["lon"]) * (1 if m["ew"] == "E" else -1)
    return lat, lon


def cell_transform(
    lat: int, lon: int, pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE
) -> Affine:
    """Transform of a cell: ``(lon, lat + 1)`` north-west origin, 1/ppd° pixels."""
    px = 1.0 / pixels_per_degree
    return Affine(px, 0.0, float(lon), 0.0, -px, float(lat) + 1.0)


def cells_for_bounds(
    bounds: tuple[float, float, float, float],
    pixels_per_degree: int = JAXA_PIXELS_PER_DEGREE,
) -> list[tuple[int, int]]:
    """South-west corners ``(lat, lon)`` of the cells that ``bounds`` touches.

    Bounds are ``(west, south, east, north)`` in degrees. They are snapped to the
    pixel grid first, so a box that ends exactly on a cell edge (to within half a
    pixel) does not pull in the neighbour. Sorted north to south, then west to east.
    """
    west, south, east, north = bounds
    n = pixels_per_degree
    lat0 = max(-90, math.floor(round(south * n) / n))
    lat1 = min(90, math.ceil(round(north * n) / n))
    lon0 = max(-180, math.floor(round(west * n) / n))
    lon1 = min(180, math.ceil(round(east * n) / n))
    return [
        (la, lo) for la in range(lat1 - 1, lat0 - 1, -1) for lo in range(lon0, lon1)
    ]


__all__ = [
    "JAXA_CRS",
    "JAXA_PIXELS_PER_DEGREE",
    "Cell",
    "cell_name",
    "cell_transform",
    "cells_for_bounds",
    "parse_cell_name",
]
