"""Synthetic JAXA-style label "world" on the 1/12000° lat/lon grid of the JAXA tiles.

A :class:`LabelWorld` is a window of the global JAXA HRLULC grid (EPSG:4326, pixel
1/12000°, tiles of 12000 × 12000 named by their south-west corner) filled with JAXA
codes 1-14, plus a static backscatter-detail layer (street grids, field parcels,
panel rows) that the SAR simulator adds to the class means. Scenes are made by
resampling one world onto their own UTM grids, so overlapping scenes see the same
ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from affine import Affine
from scipy import ndimage

from alosmap.classes import JAXA_CLASSES, JAXA_NODATA
from alosmap.synthetic._noise import (
    blob,
    block_max,
    block_upsample,
    disk_offsets,
    fractal_field,
    hash_uniform,
    quantile,
)

#: Pixels per degree of the JAXA HRLULC grid.
LABEL_PIXELS_PER_DEG = 12000
#: Pixel size of the JAXA HRLULC grid in degrees.
LABEL_PIXEL_DEG = 1.0 / LABEL_PIXELS_PER_DEG
#: Metres per degree of latitude (mean, good enough for the synthetic geometry).
_M_PER_DEG_LAT = 110_950.0
_M_PER_DEG_LON_EQ = 111_320.0

SeaSide = Literal["north", "south", "east", "west", "none"]
_SEA_DIRECTIONS: dict[str, tuple[float, float]] = {
    "north": (0.0, 1.0),
    "south": (0.0, -1.0),
    "east": (1.0, 0.0),
    "west": (-1.0, 0.0),
}


def _code(prefix: str) -> int:
    """JAXA code of the class whose name starts with ``prefix`` (from classes.py)."""
    for c in JAXA_CLASSES:
        if c.name.startswith(prefix):
            return c.code
    raise KeyError(prefix)  # pragma: no cover - the legend is fixed


WATER = _code("Water")
BUILT = _code("Built-up")
PADDY = _code("Paddy")
CROP = _code("Cropland")
GRASS = _code("Grassland")
DBF = _code("DBF")
DNF = _code("DNF")
EBF = _code("EBF")
ENF = _code("ENF")
BARE = _code("Bare")
BAMBOO = _code("Bamboo")
SOLAR = _code("Solar")
WETLAND = _code("Wetland")
GREENHOUSE = _code("Greenhouse")
FOREST_CODES = (DBF, DNF, EBF, ENF, BAMBOO)
ALL_CODES = tuple(c.code for c in JAXA_CLASSES)

#: Target land-only shares (JAXA HRLULC over all of Japan, from the 500 m map).
LAND_SHARES: dict[int, float] = {
    BUILT: 0.081,
    PADDY: 0.055,
    CROP: 0.033,
    GRASS: 0.074,
    WETLAND: 0.026,
    BARE: 0.016,
    GREENHOUSE: 0.0033,
    SOLAR: 0.0017,
}
#: Shares within forest (Forest = 71 % of land in total).
FOREST_SHARES: dict[int, float] = {
    ENF: 0.42,
    DBF: 0.36,
    EBF: 0.14,
    DNF: 0.06,
    BAMBOO: 0.02,
}


@dataclass(frozen=True)
class LabelWorld:
    """A window of the global JAXA label grid filled with synthetic ground truth.

    Attributes:
        labels: uint8 JAXA codes ``[rows, cols]``; 0 = no data.
        detail: float32 static backscatter offsets in dB ``[rows, cols]`` (street
            grid, building blocks, field parcels, panel rows); 0 elsewhere.
        row0: global grid row of ``labels[0, 0]`` (row 0 is latitude 90°N).
        col0: global grid column of ``labels[0, 0]`` (column 0 is longitude 180°W).
        seed: seed the world was generated from.
    """

    labels: np.ndarray
    detail: np.ndarray
    row0: int
    col0: int
    seed: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the window."""
        return (int(self.labels.shape[0]), int(self.labels.shape[1]))

    @property
    def transform(self) -> Affine:
        """Affine transform of the window (EPSG:4326, north-up, 1/12000° pixels)."""
        return Affine(
            LABEL_PIXEL_DEG,
            0.0,
            (self.col0 - 180 * LABEL_PIXELS_PER_DEG) / LABEL_PIXELS_PER_DEG,
            0.0,
            -LABEL_PIXEL_DEG,
            (90 * LABEL_PIXELS_PER_DEG - self.row0) / LABEL_PIXELS_PER_DEG,
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees."""
        rows, cols = self.shape
        n = LABEL_PIXELS_PER_DEG
        return (
            (self.col0 - 180 * n) / n,
            (90 * n - self.row0 - rows) / n,
            (self.col0 + cols - 180 * n) / n,
            (90 * n - self.row0) / n,
        )

    def class_counts(self) -> dict[int, int]:
        """Pixel count of every JAXA code 1-14 (zeros included)."""
        counts = np.bincount(self.labels.ravel(), minlength=256)
        return {code: int(counts[code]) for code in ALL_CODES}


def _window_of(bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Global grid ``(row0, row1, col0, col1)`` covering ``bounds`` (snapped out)."""
    west, south, east, north = bounds
    n = LABEL_PIXELS_PER_DEG
    col0 = math.floor(round((west + 180.0) * n, 6))
    col1 = math.ceil(round((east + 180.0) * n, 6))
    row0 = math.floor(round((90.0 - north) * n, 6))
    row1 = math.ceil(round((90.0 - south) * n, 6))
    return row0, row1, col0, col1


def _check_bounds(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    if len(bounds) != 4:
        raise ValueError(f"bounds must be (west, south, east, north), got {bounds!r}")
    west, south, east, north = (float(b) for b in bounds)
    if not (-180.0 <= west < east <= 180.0 and -90.0 <= south < north <= 90.0):
        raise ValueError(
            "bounds must be (west, south, east, north) in degrees with west < east "
            f"and south < north, got {bounds!r}"
        )
    return west, south, east, north


def _check_world_options(
    sea_side: str, sea_fraction: float, min_class_pixels: int
) -> None:
    if not 0.0 <= sea_fraction <= 0.9:
        raise ValueError(f"sea_fraction must be within [0, 0.9], got {sea_fraction}")
    if sea_side not in (*_SEA_DIRECTIONS, "none"):
        raise ValueError(
            f"sea_side must be one of north, south, east, west, none; got {sea_side!r}"
        )
    if min_class_pixels < 0:
        raise ValueError(f"min_class_pixels must be ≥ 0, got {min_class_pixels}")


def generate_label_world(
    bounds: Sequence[float],
    *,
    seed: int,
    sea_side: SeaSide = "south",
    sea_fraction: float = 0.3,
    min_class_pixels: int = 200,
    focus: Sequence[Sequence[float]] | None = None,
) -> LabelWorld:
    """Generate synthetic JAXA-style ground truth for a lon/lat box.

    The map has a (noisy) coastline with sea on one side, lowlands by the coast and
    along rivers (built-up with street grids, paddy and cropland in parcels,
    greenhouse clusters, wetlands by the water, beaches), uplands of the five forest
    types with grassland clearings, quarries, a reservoir and solar farms, and
    meandering rivers 1-6 px wide that run to the sea. Land-only class shares follow
    the JAXA map of Japan (:data:`LAND_SHARES`; forest ≈ 71 %), so greenhouses and
    solar panels are rare; ``min_class_pixels`` then guarantees that every code 1-14
    is present at least that often in each ``focus`` box (rare is not absent).

    Args:
        bounds: ``(west, south, east, north)`` in degrees; snapped outwards to the
            1/12000° grid.
        seed: seed of the random generator (same seed and arguments → same world).
        sea_side: side of the box where the sea is, or ``"none"`` for no sea.
        sea_fraction: share of the box that is sea, in [0, 0.9].
        min_class_pixels: minimum pixel count of every class in every focus box;
            0 disables the guarantee.
        focus: boxes ``(west, south, east, north)`` in degrees, inside ``bounds``,
            where the minimum applies (e.g. the inner part of each scene footprint);
            None means the whole world.

    Returns:
        The world.

    Raises:
        ValueError: for bounds outside the globe, an empty box, a sea fraction
            outside [0, 0.9] or a negative ``min_class_pixels``.
    """
    box = _check_bounds(bounds)
    _check_world_options(sea_side, sea_fraction, min_class_pixels)
    row0, row1, col0, col1 = _window_of(box)
    shape = (row1 - row0, col1 - col0)
    if shape[0] * shape[1] > 16000 * 16000:
        raise ValueError(f"world of {shape[0]}×{shape[1]} pixels is too large")
    lat_mid = 0.5 * (box[1] + box[3])
    dy_m = _M_PER_DEG_LAT / LABEL_PIXELS_PER_DEG
    dx_m = _M_PER_DEG_LON_EQ * math.cos(math.radians(lat_mid)) / LABEL_PIXELS_PER_DEG
    px_m = 0.5 * (dx_m + dy_m)
    gen = _WorldBuilder(
        np.random.default_rng(np.random.SeedSequence([seed, 0x57A7])),
        shape,
        (row0, col0),
        (dy_m, dx_m),
        px_m,
    )
    gen.coast(sea_side, sea_fraction)
    gen.elevation()
    gen.rivers()
    gen.lakes()
    gen.zones()
    gen.wetlands()
    gen.bare()
    gen.solar_farms()
    gen.greenhouses()
    if min_class_pixels > 0:
        boxes = [_check_bounds(f) for f in focus] if focus else [box]
        for fb in boxes:
            r0, r1, c0, c1 = _window_of(fb)
            gen.ensure_classes(
                (r0 - row0, r1 - row0, c0 - col0, c1 - col0), min_class_pixels
            )
    gen.finish_detail()
    return LabelWorld(gen.labels, gen.detail, row0, col0, int(seed))


class _WorldBuilder:
    """Step-by-step construction of one world (internal; see generate_label_world)."""

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int],
        origin: tuple[int, int],
        pixel_m: tuple[float, float],
        px_m: float,
    ) -> None:
        self.rng = rng
        self.shape = shape
        self.origin = origin
        self.dy_m, self.dx_m = pixel_m
        self.px_m = px_m
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.detail = np.zeros(shape, dtype=np.float32)
        self.salt = int(rng.integers(0, 2**31))

    # -- helpers -----------------------------------------------------------------
    def field(self, scale_m: float, octaves: int = 2) -> np.ndarray:
        """Fractal field with correlation length ``scale_m`` metres."""
        return fractal_field(self.rng, self.shape, scale_m / self.px_m, octaves)

    def metric_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Local east/north coordinates in metres, ``[rows, 1]`` and ``[1, cols]``."""
        h, w = self.shape
        y = -(np.arange(h, dtype=np.float32)[:, None] - h / 2) * np.float32(self.dy_m)
        x = (np.arange(w, dtype=np.float32)[None, :] - w / 2) * np.float32(self.dx_m)
        return x, y

    def paint(
        self,
        r: int,
        c: int,
        mask: np.ndarray,
        code: int,
        allowed: np.ndarray | None = None,
        detail: float | None = None,
    ) -> int:
        """Paint ``mask`` centred at (r, c) with ``code`` where ``allowed[code]``.

        Returns the number of pixels painted.
        """
        h, w = self.shape
        mh, mw = mask.shape
        top, left = r - mh // 2, c - mw // 2
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + mh, h), min(left + mw, w)
        if r0 >= r1 or c0 >= c1:
            return 0
        m = mask[r0 - top : r1 - top, c0 - left : c1 - left]
        sub = self.labels[r0:r1, c0:c1]
        if allowed is not None:
            m = m & allowed[sub]
        sub[m] = code
        if detail is not None:
            self.detail[r0:r1, c0:c1][m] = detail
        return int(m.sum())

    def place_until(
        self,
        target: int,
        mask: np.ndarray,
        place: Callable[[tuple[int, int]], int],
        *,
        tries: int = 400,
        count: int = 0,
    ) -> int:
        """Call ``place`` at random ``mask`` pixels until ``target`` px are painted.

        Args:
            target: pixels wanted (``count`` already there).
            mask: where a placement may start.
            place: paints at a pixel and returns the pixels it painted.
            tries: most placements attempted.
            count: pixels painted before.

        Returns:
            The pixel count reached.
        """
        for _ in range(tries):
            if count >= target:
                break
            at = self.random_pixel(mask)
            if at is None:
                break
            count += place(at)
        return count

    def random_pixel(
        self, mask: np.ndarray, tries: int = 200
    ) -> tuple[int, int] | None:
        """A random pixel where ``mask`` is True (rejection sampling, then a scan)."""
        h, w = self.shape
        for _ in range(tries):
            r, c = int(self.rng.integers(0, h)), int(self.rng.integers(0, w))
            if mask[r, c]:
                return r, c
        idx = np.flatnonzero(mask[::4, ::4])
        if idx.size == 0:
            return None
        k = int(idx[self.rng.integers(0, idx.size)])
        w4 = mask[::4, ::4].shape[1]
        return (k // w4) * 4, (k % w4) * 4

    # -- steps -------------------------------------------------------------------
    def coast(self, sea_side: str, sea_fraction: float) -> None:
        """Sea on one side behind a fractal coastline; sets ``inland_m``."""
        x, y = self.metric_xy()
        h, w = self.shape
        extent = max(h * self.dy_m, w * self.dx_m)
        wiggle = np.float32(min(0.12 * extent, 1500.0)) * self.field(4000.0, 5)
        if sea_side == "none" or sea_fraction <= 0:
            self.sea = np.zeros(self.shape, dtype=bool)
            self.sea_dir = None
            self.inland_m = np.float32(3000.0) + wiggle
        else:
            nx, ny = _SEA_DIRECTIONS[sea_side]
            f = x * np.float32(nx) + y * np.float32(ny) + wiggle
            thr = quantile(f, 1.0 - sea_fraction)
            self.sea = f > thr
            self.sea_dir = (nx, ny)
            self.inland_m = np.float32(thr) - f
        self.labels[self.sea] = WATER

    def elevation(self) -> None:
        """Relief proxy: rises inland, plus hills; lowlands are near the coast."""
        inland_km = np.clip(self.inland_m, 0, None) / np.float32(1000.0)
        self.elev = np.float32(0.6) * np.minimum(
            inland_km, np.float32(6.0)
        ) + np.float32(0.95) * self.field(3000.0, 5)

    def rivers(self) -> None:
        """Meandering rivers 1-6 px wide from the uplands to the sea."""
        h, w = self.shape
        land = ~self.sea
        area_km2 = h * w * self.dx_m * self.dy_m / 1e6
        n = max(2, round(area_km2 / 30.0))
        upland = land & (self.elev > quantile(self.elev, 0.5, land))
        river = np.zeros(self.shape, dtype=bool)
        for i in range(n):
            start = self.random_pixel(upland if i % 3 else land)
            if start is None:
                break
            pts, wid = self._river_path(start, max_width=int(self.rng.integers(1, 7)))
            for wv in np.unique(wid):
                sel = pts[wid == wv]
                for dy, dx in disk_offsets(int(wv)):
                    rr = np.clip(sel[:, 0] + dy, 0, h - 1)
                    cc = np.clip(sel[:, 1] + dx, 0, w - 1)
                    river[rr, cc] = True
        self.river = river & land
        self.labels[self.river] = WATER
        # Valleys: rivers lower the relief around them (floodplains).
        f = 8
        sigma = 500.0 / (self.px_m * f)
        prox = ndimage.gaussian_filter(block_max(river, f), sigma, mode="constant")
        prox /= max(float(prox.max()), 1e-6)
        prox = block_upsample(prox, f, h, w)
        self.elev -= np.float32(1.2) * np.minimum(prox * 3, 1).astype(np.float32)

    def _river_path(
        self, start: tuple[int, int], max_width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel path of one river from ``start`` and its width at every point."""
        h, w = self.shape
        rng = self.rng
        if self.sea_dir is not None:
            base = math.atan2(-self.sea_dir[1], self.sea_dir[0])  # (row, col) angle
        else:
            base = rng.uniform(-math.pi, math.pi)
        steps = 3 * (h + w)
        wavelength = rng.uniform(40.0, 140.0)
        amp = rng.uniform(0.5, 1.0)
        phase = rng.uniform(0, 2 * math.pi)
        drift = np.cumsum(rng.normal(0.0, 0.04, steps))
        drift = np.clip(drift - np.linspace(0, drift[-1], steps), -0.9, 0.9)
        k = np.arange(steps)
        theta = base + amp * np.sin(2 * math.pi * k / wavelength + phase) + drift
        r = start[0] + np.cumsum(np.sin(theta))
        c = start[1] + np.cumsum(np.cos(theta))
        ri = np.rint(r).astype(np.intp)
        ci = np.rint(c).astype(np.intp)
        inside = (ri >= 0) & (ri < h) & (ci >= 0) & (ci < w)
        end = int(np.argmin(inside)) if not inside.all() else steps
        ri, ci = ri[:end], ci[:end]
        if ri.size:
            at_sea = self.sea[ri, ci]
            at_sea[:5] = False
            if at_sea.any():
                stop = int(np.argmax(at_sea)) + 3
                ri, ci = ri[:stop], ci[:stop]
        n = max(ri.size, 1)
        width = 1 + np.floor((max_width - 1) * np.sqrt(np.arange(ri.size) / n) + 0.5)
        return np.stack([ri, ci], axis=1), width.astype(np.intp)

    def lakes(self) -> None:
        """A reservoir or pond or two in the uplands."""
        land = ~self.sea & ~self.river
        area_km2 = self.shape[0] * self.shape[1] * self.dx_m * self.dy_m / 1e6
        for _ in range(int(self.rng.integers(0, 2 + int(area_km2 // 100)))):
            at = self.random_pixel(land & (self.elev > quantile(self.elev, 0.6, land)))
            if at is None:
                break
            ry, rx = self.rng.uniform(6, 30, size=2)
            self.paint(*at, blob(self.rng, ry, rx, 0.35), WATER)
        self.water = self.labels == WATER

    def zones(self) -> None:
        """Built-up, paddy, cropland, grassland and the five forests by score ranks."""
        lab = self.labels
        free = lab == JAXA_NODATA
        n_free = max(int(free.sum()), 1)
        e = self.elev
        # Built-up: lowlands near the coast, in clustered towns.
        s_urban = -e + np.float32(0.95) * self.field(1500.0, 4)
        built = free & (s_urban >= quantile(s_urban, 1 - 0.085, free))
        lab[built] = BUILT
        free &= ~built
        # Agriculture: the next-lowest land; paddy on the valley floors.
        s_agri = -e + np.float32(0.45) * self.field(1000.0, 3)
        share = 0.092 * n_free / max(int(free.sum()), 1)
        agri = free & (s_agri >= quantile(s_agri, 1 - share, free))
        s_paddy = e + np.float32(0.4) * self.field(600.0)
        paddy = agri & (s_paddy <= quantile(s_paddy, 0.62, agri))
        lab[paddy] = PADDY
        lab[agri & ~paddy] = CROP
        free &= ~agri
        # Grassland: clearings, pasture, golf courses.
        s_grass = self.field(700.0, 4)
        share = 0.078 * n_free / max(int(free.sum()), 1)
        grass = free & (s_grass >= quantile(s_grass, 1 - share, free))
        lab[grass] = GRASS
        forest = free & ~grass
        # Forest types: needle-leaf deciduous high up, evergreen broad-leaf by the
        # coast, bamboo groves at the lowland edge, plantations of ENF elsewhere.
        s_high = e + np.float32(0.3) * self.field(800.0, 1)
        dnf = forest & (s_high >= quantile(s_high, 1 - FOREST_SHARES[DNF], forest))
        lab[dnf] = DNF
        forest &= ~dnf
        s_warm = e - np.float32(0.5) * self.field(1500.0, 1)
        ebf = forest & (s_warm <= quantile(s_warm, FOREST_SHARES[EBF] / 0.94, forest))
        lab[ebf] = EBF
        forest &= ~ebf
        s_bamboo = self.field(200.0, 1) - np.float32(0.6) * e
        bam = forest & (s_bamboo >= quantile(s_bamboo, 1 - 0.02 / 0.8, forest))
        lab[bam] = BAMBOO
        forest &= ~bam
        s_plant = self.field(450.0, 2)
        enf = forest & (s_plant >= quantile(s_plant, 1 - 0.42 / 0.78, forest))
        lab[enf] = ENF
        lab[forest & ~enf] = DBF

    def wetlands(self) -> None:
        """Marshes by the sea, lakes and rivers, in the lowlands (not in towns)."""
        h, w = self.shape
        f = 4
        sigma = 120.0 / (self.px_m * f)
        prox = ndimage.gaussian_filter(block_max(self.water, f), sigma, mode="nearest")
        prox = block_upsample(prox, f, h, w)
        lab = self.labels
        cand = ~self.water & (lab != BUILT) & (prox > 0.02)
        n_land = int((~self.water).sum())
        if not cand.any():
            return
        score = (
            prox
            - np.float32(0.08) * self.elev
            + np.float32(0.12) * self.field(300.0, 2)
        )
        share = min(0.027 * n_land / max(int(cand.sum()), 1), 1.0)
        wet = cand & (score >= quantile(score, 1 - share, cand))
        lab[wet] = WETLAND

    def bare(self) -> None:
        """Beaches along the coast, quarries and construction sites."""
        lab = self.labels
        n_land = int((~self.water).sum())
        target = int(0.016 * n_land)
        if self.sea.any():
            shore = ndimage.binary_dilation(self.sea, iterations=3) & ~self.water
            beach = shore & (self.field(600.0, 1) > 0.3)
            lab[beach] = BARE
        allowed = np.zeros(256, dtype=bool)
        allowed[[GRASS, CROP, *FOREST_CODES]] = True

        def quarry(at: tuple[int, int]) -> int:
            ry, rx = self.rng.uniform(3, 25, size=2)
            return self.paint(*at, blob(self.rng, ry, rx, 0.3), BARE, allowed)

        start = int((lab == BARE).sum())
        self.place_until(target, ~self.water, quarry, tries=500, count=start)

    def solar_farms(self) -> None:
        """Solar farms: groups of regular rectangles on grass, crops and forest."""
        n_land = int((~self.water).sum())
        target = max(int(LAND_SHARES[SOLAR] * n_land), 1)
        allowed = np.zeros(256, dtype=bool)
        allowed[[GRASS, CROP, PADDY, *FOREST_CODES]] = True
        cand = allowed[self.labels]
        self.place_until(target, cand, lambda at: self._solar_farm(at, allowed))

    def _solar_farm(self, at: tuple[int, int], allowed: np.ndarray) -> int:
        rng = self.rng
        rows, cols = int(rng.integers(4, 16)), int(rng.integers(6, 26))
        n_rect = int(rng.integers(1, 5))
        painted = 0
        r, c = at
        for _ in range(n_rect):
            mask = np.ones((rows, cols), dtype=bool)
            painted += self.paint(
                r, c, mask, SOLAR, allowed, detail=float(rng.uniform(-3.0, 5.0))
            )
            if rng.random() < 0.5:
                c += cols + int(rng.integers(1, 4))
            else:
                r += rows + int(rng.integers(1, 4))
        return painted

    def greenhouses(self) -> None:
        """Clusters of small bright rectangles among the fields."""
        n_land = int((~self.water).sum())
        target = max(int(LAND_SHARES[GREENHOUSE] * n_land), 1)
        allowed = np.zeros(256, dtype=bool)
        allowed[[CROP, PADDY, GRASS]] = True
        cand = np.isin(self.labels, (CROP, PADDY))
        if not cand.any():
            cand = allowed[self.labels]
        self.place_until(target, cand, lambda at: self._greenhouse_cluster(at, allowed))

    def _greenhouse_cluster(self, at: tuple[int, int], allowed: np.ndarray) -> int:
        rng = self.rng
        gh, gw = int(rng.integers(2, 4)), int(rng.integers(4, 9))
        ny, nx = int(rng.integers(1, 5)), int(rng.integers(2, 6))
        painted = 0
        for i in range(ny):
            for j in range(nx):
                if rng.random() < 0.15:
                    continue
                r = at[0] + i * (gh + 1)
                c = at[1] + j * (gw + 1)
                mask = np.ones((gh, gw), dtype=bool)
                off = float(rng.uniform(-2.0, 4.0))
                painted += self.paint(r, c, mask, GREENHOUSE, allowed, detail=off)
        return painted

    def ensure_classes(self, window: tuple[int, int, int, int], min_px: int) -> None:
        """Inject patches so every class has ≥ ``min_px`` pixels in ``window``."""
        h, w = self.shape
        r0, r1, c0, c1 = window
        r0, r1 = max(r0, 0), min(r1, h)
        c0, c1 = max(c0, 0), min(c1, w)
        if r1 - r0 < 8 or c1 - c0 < 8:
            return
        rng = self.rng
        counts = np.bincount(self.labels[r0:r1, c0:c1].ravel(), minlength=256)
        for code in ALL_CODES:
            for _ in range(60):
                need = int(min_px) - int(counts[code])
                if need <= 0:
                    break
                # Only pixels of plentiful classes may be painted over.
                allowed = counts >= 3 * min_px + need
                allowed[code] = False
                allowed[JAXA_NODATA] = False
                r = int(rng.integers(r0, r1))
                c = int(rng.integers(c0, c1))
                if not allowed[self.labels[r, c]]:
                    continue
                if code == SOLAR:
                    side = max(math.sqrt(min(need, 400) * 1.1), 3.0)
                    sh = (max(int(side * 0.7), 3), max(int(side / 0.7), 3))
                    self.paint(
                        r, c, np.ones(sh, dtype=bool), code, allowed, rng.uniform(-3, 5)
                    )
                elif code == GREENHOUSE:
                    self._greenhouse_cluster((r, c), allowed)
                elif code == BUILT:
                    side = max(int(math.sqrt(min(need, 900) * 1.2)), 3)
                    self.paint(r, c, np.ones((side, side), dtype=bool), code, allowed)
                else:
                    rad = max(math.sqrt(min(need, 900) / math.pi) * 1.1, 1.5)
                    self.paint(r, c, blob(rng, rad, rad * 1.3, 0.25), code, allowed)
                counts = np.bincount(self.labels[r0:r1, c0:c1].ravel(), minlength=256)

    def finish_detail(self) -> None:
        """Static backscatter structure: streets and blocks, parcels; 0 elsewhere."""
        lab = self.labels
        keep = np.isin(lab, (SOLAR, GREENHOUSE))
        self.detail[~keep] = 0.0
        rng = self.rng
        # District angle and block size vary across the world.
        district = np.digitize(
            fractal_field(rng, self.shape, 2500.0 / self.px_m, 1), [-0.4, 0.4]
        ).astype(np.int64)
        angles = np.radians(rng.uniform(0.0, 90.0, size=3))
        spacing = rng.uniform(45.0, 110.0, size=3)
        built = lab == BUILT
        agri = (lab == PADDY) | (lab == CROP)
        rows, cols = np.nonzero(built | agri)
        if rows.size == 0:
            return
        d = district[rows, cols]
        # Global metric coordinates so the street grid does not depend on the window.
        y = (rows + self.origin[0]).astype(np.float64) * -self.dy_m
        x = (cols + self.origin[1]).astype(np.float64) * self.dx_m
        ca, sa = np.cos(angles[d]), np.sin(angles[d])
        u = x * ca + y * sa
        v = -x * sa + y * ca
        is_b = built[rows, cols]
        # Built-up: 8 m streets between blocks of random density; a few bright
        # corner reflectors (double bounce).
        s = spacing[d]
        street = (np.mod(u, s) < 8.0) | (np.mod(v, s) < 8.0)
        bu = np.floor(u / s).astype(np.int64)
        bv = np.floor(v / s).astype(np.int64)
        blk = hash_uniform(bu, bv, d, salt=self.salt)
        hot = hash_uniform(
            rows + self.origin[0], cols + self.origin[1], salt=self.salt ^ 0x2545F491
        )
        off_b = np.where(street, -15.0, -4.0 + 9.0 * blk + 6.0 * (hot < 0.05))
        # Fields: parcels of about 30 × 60 m, each in its own state.
        pu = np.floor(u / 30.0).astype(np.int64)
        pv = np.floor(v / 60.0).astype(np.int64)
        off_a = 5.0 * (hash_uniform(pu, pv, d, salt=self.salt + 1) - 0.5)
        self.detail[rows, cols] = np.where(is_b, off_b, off_a).astype(np.float32)
