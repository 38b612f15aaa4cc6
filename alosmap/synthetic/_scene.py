"""Synthetic ALOS-2 PALSAR-2 Level 2.1 HH scenes (UTM grid, amplitude DN).

Backscatter calibration (:data:`SIGMA0_DB`). The class statistics follow real
PALSAR-2 HH backscatter per land-cover class from De Alban, Connette, Oswald and Webb
(2018), "Combined Landsat and L-Band SAR Data Improves Land Cover Classification and
Change Detection in Dynamic Tropical Landscapes", Remote Sensing 10(2):306,
doi:10.3390/rs10020306 (CC BY 4.0): the JAXA PALSAR-2 25 m mosaic of 2015 over
Tanintharyi, Myanmar, HH mean ± standard deviation in dB over labelled sample pixels
(figures as quoted in alosmap issue 14):

    ============ =============== =========================================
    class        real (dB)       JAXA codes here
    ============ =============== =========================================
    water        −21.2 ± 3.0     1
    built-up     −0.6 ± 2.9      2
    paddy        −16.7 ± 2.8     3 (outside the rice season, October-April)
    bare         −11.9 ± 4.2     10
    forest       −7.6 ± 3.0      6, 7, 8, 9, 11 pooled
    shrub/grass  −7.9 ± 1.8      5
    ============ =============== =========================================

They are matched at the mosaic's scale: the intensity of 3 × 3 pixels of 8 m averaged
(24 m, about 27 looks) over blocks of one class, then mean and standard deviation of
the dB values; a generated scene is within ±1.5 dB (mostly ±0.5 dB) of every mean
and every spread (``tests/core/test_synthetic.py``). At the native 8 m pixel the dB
means are about 0.75 dB lower (log of 3-look speckle) and the spread is wider
(speckle). The spread at 24 m is √((0.9·s)² + 0.84² + 0.6² + d²): texture of class
std ``s``, 27-look speckle, the near-to-far-range ramp and the static detail ``d``
of streets and field parcels.

Japan-specific knowledge kept where the table says nothing or less: the five forest
types keep their order (ENF and EBF brightest, DNF darkest) around the table's pooled
forest; paddy follows Japan's rice calendar (flooded May-June −20 dB, rice stand
July-September −8.5 dB, the table's figure for harvested and fallow fields);
grassland is the table's shrub/grass about 0.3 dB darker (JAXA's class is mostly
pasture, meadow and lawn); cropland (−12 dB) and wetland (−16 dB) keep their means;
built-up keeps its street grid and corner reflectors, greenhouses and solar panels
keep their place below built-up (all three lowered by 3.7 dB). Classes without a
figure get the spread of the natural classes of the table (about 3 dB at 24 m).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from alosmap._fileio import check_overwrite
from alosmap.classes import JAXA_NODATA
from alosmap.radiometry import CALIBRATION_FACTOR_DB, DN_MAX, DN_MIN, DN_NODATA
from alosmap.synthetic._io import (
    all_or_nothing,
    tile_name,
    tiles_for_bounds,
    write_geotiff,
)
from alosmap.synthetic._io import write_label_tiles as _write_label_tiles
from alosmap.synthetic._noise import smooth_field
from alosmap.synthetic._world import (
    BAMBOO,
    BARE,
    BUILT,
    CROP,
    DBF,
    DNF,
    EBF,
    ENF,
    GRASS,
    GREENHOUSE,
    LABEL_PIXEL_DEG,
    PADDY,
    SOLAR,
    WATER,
    WETLAND,
    LabelWorld,
    SeaSide,
    generate_label_world,
)

#: ALOS-2 launch date; absolute orbit numbers count from it (207 orbits / 14 days).
ALOS2_LAUNCH = dt.date(2014, 5, 24)
_INCLINATION_DEG = 97.92

#: L2.1 file-name pattern of the synthetic scenes (the real products' naming).
SCENE_NAME_RE = re.compile(
    r"^IMG-HH-ALOS2(?P<orbit>\d{5})(?P<frame>\d{4})-(?P<yymmdd>\d{6})-"
    r"(?P<mode>[A-Z]{3})(?P<look>[LR])2\.1G(?P<proj>U)(?P<dir>[AD])\.tif$"
)

#: Class-wise L-band HH σ0: (mean dB, texture standard deviation dB). Paddy's mean
#: depends on the season (see :func:`class_sigma0`).
SIGMA0_DB: dict[int, tuple[float, float]] = {
    WATER: (-20.9, 3.3),
    BUILT: (-0.3, 0.8),
    PADDY: (-16.3, 2.4),
    CROP: (-12.0, 2.4),
    GRASS: (-8.2, 1.6),
    DBF: (-8.0, 3.1),
    DNF: (-8.5, 3.1),
    EBF: (-7.3, 3.1),
    ENF: (-7.0, 3.1),
    BARE: (-11.8, 4.5),
    BAMBOO: (-7.7, 3.1),
    SOLAR: (-6.7, 2.5),
    WETLAND: (-16.0, 3.1),
    GREENHOUSE: (-5.7, 2.5),
}
#: Paddy σ0 mean (dB) by month where it differs from :data:`SIGMA0_DB`.
PADDY_SEASON_DB: dict[int, float] = {5: -20.0, 6: -20.0, 7: -8.5, 8: -8.5, 9: -8.5}


def class_sigma0(month: int) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables (index = JAXA code) of mean σ0 and texture std in dB.

    Paddy fields change with the rice calendar: flooded and dark in May-June,
    bright from the rice stand in July-September and harvested or fallow from
    October to April (:data:`PADDY_SEASON_DB`).

    Args:
        month: acquisition month 1-12.

    Returns:
        ``(mean_db, std_db)``, float32 arrays of length 256 (0 for unknown codes).
    """
    mean = np.zeros(256, dtype=np.float32)
    std = np.zeros(256, dtype=np.float32)
    for code, (m, s) in SIGMA0_DB.items():
        mean[code], std[code] = m, s
    mean[PADDY] = PADDY_SEASON_DB.get(month, mean[PADDY])
    return mean, std


@dataclass(frozen=True)
class SceneGrid:
    """The UTM grid and swath footprint of one scene.

    Attributes:
        epsg: EPSG code of the UTM zone (326xx north, 327xx south).
        transform: north-up affine transform (metres).
        width: columns.
        height: rows.
        heading_deg: satellite track heading, degrees clockwise from north
            (ascending ≈ 350°, descending ≈ 190° at Japan's latitudes).
    """

    epsg: int
    transform: Affine
    width: int
    height: int
    heading_deg: float

    @property
    def crs(self) -> str:
        """CRS string, e.g. ``"EPSG:32654"``."""
        return f"EPSG:{self.epsg}"

    @property
    def pixel_size(self) -> float:
        """Pixel size in metres."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def _swath(self) -> tuple[float, float, float, float]:
        """Along-track unit vector (east, north) and swath length/width in pixels."""
        h = math.radians(self.heading_deg)
        ae, an = math.sin(h), math.cos(h)
        s, c = abs(math.sin(h)), abs(math.cos(h))
        den = c * c - s * s
        cross = (self.width * c - self.height * s) / den - 1.0
        along = (self.height * c - self.width * s) / den - 1.0
        return ae, an, along, cross

    def footprint_mask(self) -> np.ndarray:
        """Boolean ``[height, width]``: True inside the (rotated) swath footprint."""
        ae, an, along, cross = self._swath()
        dx = np.arange(self.width, dtype=np.float64)[None, :] + 0.5 - self.width / 2
        dn = -(np.arange(self.height, dtype=np.float64)[:, None] + 0.5) + (
            self.height / 2
        )
        a = dx * ae + dn * an
        x = dx * an - dn * ae
        return (np.abs(a) <= along / 2) & (np.abs(x) <= cross / 2)

    def footprint_corners(self) -> list[tuple[float, float]]:
        """Corners of the swath footprint in CRS coordinates (metres)."""
        ae, an, along, cross = self._swath()
        t = self.transform
        cx, cy = self.width / 2, self.height / 2
        out = []
        for sa, sx in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
            e = sa * along / 2 * ae + sx * cross / 2 * an
            n = sa * along / 2 * an - sx * cross / 2 * ae
            col, row = cx + e, cy - n
            out.append((t.c + col * t.a, t.f + row * t.e))
        return out

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the whole grid in degrees."""
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(
            self.crs, "EPSG:4326", *self.bounds, densify_pts=21
        )
        return (w, s, e, n)

    def lonlat_of(self, xs: list[float], ys: list[float]) -> list[tuple[float, float]]:
        """Convert CRS coordinates to (lon, lat)."""
        from rasterio.warp import transform

        lon, lat = transform(self.crs, "EPSG:4326", xs, ys)
        return list(zip(lon, lat, strict=True))


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone of a point (326zz north, 327zz south).

    Args:
        lon: longitude in degrees, [-180, 180).
        lat: latitude in degrees, [-80, 84].
    """
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def make_scene_grid(
    center_lon: float,
    center_lat: float,
    width: int,
    height: int,
    pixel_size: float,
    heading_deg: float = 190.0,
) -> SceneGrid:
    """UTM grid of a scene centred at (lon, lat), origin snapped to the pixel size.

    Args:
        center_lon: scene centre longitude in degrees.
        center_lat: scene centre latitude in degrees.
        width: columns.
        height: rows.
        pixel_size: pixel size in metres.
        heading_deg: track heading in degrees clockwise from north; the swath may
            be tilted at most 30° from the north-south axis.

    Returns:
        The grid.

    Raises:
        ValueError: for non-positive sizes, a latitude outside the UTM range or a
            heading whose swath would not fit.
    """
    _validate_geometry(center_lon, center_lat, width, height, pixel_size, heading_deg)
    from rasterio.warp import transform

    epsg = utm_epsg(center_lon, center_lat)
    (e,), (n,) = transform("EPSG:4326", f"EPSG:{epsg}", [center_lon], [center_lat])
    x0 = round((e - width * pixel_size / 2) / pixel_size) * pixel_size
    y0 = round((n + height * pixel_size / 2) / pixel_size) * pixel_size
    t = Affine(pixel_size, 0.0, x0, 0.0, -pixel_size, y0)
    return SceneGrid(epsg, t, int(width), int(height), float(heading_deg) % 360.0)


def _validate_geometry(
    lon: float, lat: float, width: int, height: int, pixel_size: float, heading: float
) -> None:
    if width < 16 or height < 16:
        raise ValueError(
            f"scene size must be at least 16×16 pixels, got {width}×{height}"
        )
    if width * height > 16384 * 16384:
        raise ValueError(f"scene of {width}×{height} pixels is too large")
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise ValueError(
            f"pixel_size must be a positive number of metres: {pixel_size}"
        )
    if not -180.0 <= lon < 180.0:
        raise ValueError(f"longitude must be within [-180, 180), got {lon}")
    if not -80.0 <= lat <= 84.0:
        raise ValueError(f"latitude must be within the UTM range [-80, 84], got {lat}")
    tilt = abs((heading + 90.0) % 180.0 - 90.0)
    if tilt > 30.0 or not math.isfinite(heading):
        raise ValueError(
            f"heading {heading}° tilts the swath {tilt:.0f}° from north-south; "
            "ALOS-2 headings are about 350° (ascending) or 190° (descending)"
        )
    if abs(width / height - 1) > 0.6 and tilt > 15.0:
        raise ValueError("an elongated scene needs a heading within 15° of north-south")


def parse_date(value: str | dt.date | dt.datetime) -> dt.datetime | dt.date:
    """Parse ``YYYY-MM-DD`` or an ISO datetime (``2022-09-12T02:42:00Z``).

    Raises:
        ValueError: when the text is not a date.
    """
    if isinstance(value, dt.datetime | dt.date):
        return value
    text = str(value).strip()
    try:
        if "T" in text or " " in text:
            d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if d.tzinfo is not None:
                d = d.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return d
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot parse date {value!r}; use YYYY-MM-DD, e.g. 2022-09-12"
        ) from None


def orbit_frame(date: dt.date, lat: float, ascending: bool) -> tuple[int, int]:
    """Plausible ALOS-2 absolute orbit and frame numbers for a date and latitude.

    Orbits count 207 per 14 days since launch (2014-05-24); frames are 20 × the
    argument of latitude in degrees (0-7199, rounded to 10), as in L2.1 names.
    """
    orbit = round((date - ALOS2_LAUNCH).days * 207 / 14) % 100000
    s = math.sin(math.radians(lat)) / math.sin(math.radians(_INCLINATION_DEG))
    u = math.degrees(math.asin(max(-1.0, min(1.0, s))))
    u = u if ascending else 180.0 - u
    frame = round(20.0 * (u % 360.0) / 10.0) * 10 % 7200
    return orbit, frame


def scene_file_name(
    date: dt.date, orbit: int, frame: int, ascending: bool, mode: str = "UBS"
) -> str:
    """L2.1-style name, e.g. ``IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif``."""
    return (
        f"IMG-HH-ALOS2{orbit:05d}{frame:04d}-{date:%y%m%d}-{mode}R2.1GU"
        f"{'A' if ascending else 'D'}.tif"
    )


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`generate_scene` wrote.

    Attributes:
        path: the scene GeoTIFF (uint16 amplitude DN, 0 = no data).
        label_tiles: JAXA-style label tiles written with it (may be empty).
        scene_labels: labels on the scene grid, if written.
        grid: the scene's UTM grid and footprint.
        acquisition: acquisition date and time (UTC, naive).
        orbit: absolute orbit number in the file name.
        frame: frame number in the file name.
        ascending: orbit direction.
        seed: seed of the backscatter simulation.
    """

    path: Path
    label_tiles: tuple[Path, ...]
    scene_labels: Path | None
    grid: SceneGrid
    acquisition: dt.datetime
    orbit: int
    frame: int
    ascending: bool
    seed: int

    @property
    def date(self) -> dt.date:
        """Acquisition date (UTC)."""
        return self.acquisition.date()


def labels_on_grid(
    world: LabelWorld, grid: SceneGrid, *, mask_footprint: bool = False
) -> np.ndarray:
    """Resample the world's labels (nearest) onto a scene grid.

    Args:
        world: the label world.
        grid: the scene grid.
        mask_footprint: set pixels outside the swath footprint to 0 (no data).

    Returns:
        uint8 JAXA codes ``[height, width]``; 0 where the world has no data.
    """
    labels = _reproject(world.labels, world, grid)
    if mask_footprint:
        labels[~grid.footprint_mask()] = JAXA_NODATA
    return labels


def _reproject(src: np.ndarray, world: LabelWorld, grid: SceneGrid) -> np.ndarray:
    from rasterio.warp import Resampling, reproject

    dst = np.zeros((grid.height, grid.width), dtype=src.dtype)
    reproject(
        source=src,
        destination=dst,
        src_transform=world.transform,
        src_crs="EPSG:4326",
        src_nodata=None,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=None,
        resampling=Resampling.nearest,
        num_threads=1,
    )
    return dst


def simulate_dn(
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    month: int,
    detail: np.ndarray | None = None,
    looks: float = 3.0,
    look_ramp: np.ndarray | None = None,
    cf: float = CALIBRATION_FACTOR_DB,
) -> np.ndarray:
    """Simulate L-band HH amplitude DN for a label map.

    σ0 [dB] = class mean + ``detail`` + class texture std × smooth texture field
    (+ ``look_ramp``); the intensity is multiplied by gamma-distributed speckle
    with ``looks`` looks (mean 1) and encoded as ``DN = sqrt(I · 10^(−cf/10))``,
    rounded and clipped to 1..65535. Pixels with label 0 get DN 0 (no data).

    Args:
        labels: uint8 JAXA codes ``[rows, cols]``.
        rng: random generator (texture and speckle).
        month: acquisition month (paddy seasonality).
        detail: static dB offsets ``[rows, cols]`` from the world, or None.
        looks: equivalent number of looks of the speckle (> 0).
        look_ramp: dB offsets ``[rows, cols]`` across the swath (incidence), or None.
        cf: calibration factor in dB.

    Returns:
        uint16 DN ``[rows, cols]``.
    """
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    mean, std = class_sigma0(month)
    fine = smooth_field(rng, shape, 3.0)
    mid = smooth_field(rng, shape, 10.0)
    broad = smooth_field(rng, shape, 150.0)
    is_water = labels == WATER
    tex = np.where(
        is_water,
        np.float32(0.3) * broad + np.float32(0.95) * mid,
        np.float32(0.6) * fine + np.float32(0.8) * mid,
    )
    db = mean[labels] + std[labels] * tex
    if detail is not None:
        db += detail
    if look_ramp is not None:
        db += look_ramp
    speckle = rng.gamma(looks, 1.0 / looks, size=shape).astype(np.float32)
    # DN² = σ0_linear · 10^(−cf/10) · speckle, computed in dB to stay in range.
    power_db = db - np.float32(cf)
    amp = np.sqrt(np.power(np.float32(10.0), power_db / np.float32(10.0)) * speckle)
    dn = np.clip(np.rint(amp), DN_MIN, DN_MAX).astype(np.uint16)
    dn[labels == JAXA_NODATA] = DN_NODATA
    return dn


def _look_ramp(grid: SceneGrid, total_db: float = 2.0) -> np.ndarray:
    """σ0 falls with incidence angle: −``total_db`` from near to far range."""
    h = math.radians(grid.heading_deg)
    # Right-looking: the range direction is the heading + 90°.
    le, ln = math.cos(h), -math.sin(h)
    dx = (np.arange(grid.width, dtype=np.float32)[None, :] - grid.width / 2) * le
    dn = -(np.arange(grid.height, dtype=np.float32)[:, None] - grid.height / 2) * ln
    span = abs(grid.width * le) + abs(grid.height * ln)
    return (-np.float32(total_db) * (dx + dn) / np.float32(span)).astype(np.float32)


def scene_focus_box(grid: SceneGrid) -> tuple[float, float, float, float]:
    """Lon/lat box of the central part of the footprint (inside it for any tilt)."""
    half = 0.35 * min(grid.width, grid.height) * grid.pixel_size
    t = grid.transform
    cx = t.c + t.a * grid.width / 2
    cy = t.f + t.e * grid.height / 2
    pts = grid.lonlat_of(
        [cx - half, cx + half, cx + half, cx - half],
        [cy - half, cy - half, cy + half, cy + half],
    )
    lons = [p[0] for p in pts]
    lats = [p[1] for p in pts]
    return (
        max(sorted(lons)[:2]),
        max(sorted(lats)[:2]),
        min(sorted(lons)[2:]),
        min(sorted(lats)[2:]),
    )


def world_bounds_for(grids: list[SceneGrid]) -> tuple[float, float, float, float]:
    """Lon/lat box covering every grid, with a 4-pixel margin."""
    boxes = [g.lonlat_bounds() for g in grids]
    m = 4 * LABEL_PIXEL_DEG
    return (
        min(b[0] for b in boxes) - m,
        min(b[1] for b in boxes) - m,
        max(b[2] for b in boxes) + m,
        max(b[3] for b in boxes) + m,
    )


def generate_scene(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    width: int = 1024,
    height: int | None = None,
    pixel_size: float = 8.0,
    center_lon: float = 139.45,
    center_lat: float = 35.30,
    date: str | dt.date | dt.datetime = "2022-09-12",
    heading_deg: float = 190.0,
    looks: float = 3.0,
    world: LabelWorld | None = None,
    sea_side: SeaSide = "south",
    sea_fraction: float = 0.3,
    min_class_pixels: int = 200,
    write_label_tiles: bool = True,
    write_scene_labels: bool = False,
    overwrite: bool = False,
) -> SyntheticScene:
    """Write one synthetic ALOS-2 L2.1 HH scene (and its JAXA-style label tile).

    The scene is a north-up UTM GeoTIFF (zone of ``center_lon``) of uint16
    amplitude DN (σ0 = 10·log10(DN²) − 83 dB, 0 = no data outside the tilted swath
    footprint), named like a real L2.1 product
    (``IMG-HH-ALOS2{orbit}{frame}-{YYMMDD}-UBSR2.1GU{A|D}.tif``) and tagged with the
    acquisition date and time, polarisation, units and calibration factor. Its
    ground truth is ``world`` resampled (nearest) onto the scene grid; without a
    world, one covering the scene is generated from ``seed``.

    Args:
        out_dir: output directory (created if needed).
        seed: random seed (the same arguments give byte-identical files).
        width: columns.
        height: rows; defaults to ``width``.
        pixel_size: pixel size in metres (ALOS-2 L2.1: about 3-10 m).
        center_lon: scene centre longitude in degrees.
        center_lat: scene centre latitude in degrees.
        date: acquisition date ``YYYY-MM-DD`` or ISO datetime (UTC). A date alone
            gets the ALOS-2 overpass time: local noon (descending) or midnight
            (ascending).
        heading_deg: track heading, degrees clockwise from north (190 descending,
            350 ascending).
        looks: equivalent number of looks of the speckle.
        world: ground truth to use (must cover the scene); None generates one.
        sea_side: where the sea is, for a generated world.
        sea_fraction: sea share of a generated world.
        min_class_pixels: for a generated world, minimum pixel count of every
            class in the central part of the scene.
        write_label_tiles: also write the world as JAXA-style label tile(s).
        write_scene_labels: also write the labels on the scene grid as
            ``LC-<scene name without IMG-HH->`` (uint8, 0 outside the footprint).
        overwrite: replace existing files.

    Returns:
        Paths and metadata of what was written.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
        ValueError: for invalid sizes, coordinates, dates or a world that does not
            cover the scene.
    """
    height = width if height is None else height
    scene = plan_scene(
        Path(out_dir),
        seed=seed,
        center=(center_lon, center_lat),
        size=(width, height),
        pixel_size=pixel_size,
        heading_deg=heading_deg,
        date=date,
    )
    world_box = world.bounds if world is not None else world_bounds_for([scene.grid])
    label_path, planned = _check_outputs(
        scene.path,
        world_box,
        label_tiles=write_label_tiles,
        scene_labels=write_scene_labels,
        overwrite=overwrite,
    )
    if world is None:
        world = generate_label_world(
            world_box,
            seed=seed,
            sea_side=sea_side,
            sea_fraction=sea_fraction,
            min_class_pixels=min_class_pixels,
            focus=[scene_focus_box(scene.grid)],
        )
    truth = _scene_truth(world, scene.grid)
    tiles: list[Path] = []
    with all_or_nothing(planned):
        _write_scene(scene, truth, world, looks)
        if write_label_tiles:
            tiles = _write_label_tiles(world, scene.path.parent, overwrite=overwrite)
        if label_path is not None:
            _write_scene_labels(label_path, truth, scene, world.seed)
    return dataclasses.replace(scene, label_tiles=tuple(tiles), scene_labels=label_path)


def plan_scene(
    out_dir: Path,
    *,
    seed: int,
    center: tuple[float, float],
    size: tuple[int, int],
    pixel_size: float,
    heading_deg: float,
    date: str | dt.date | dt.datetime,
) -> SyntheticScene:
    """Grid, acquisition, orbit, frame and file name of a scene (nothing written).

    Args:
        out_dir: the output folder.
        seed: seed of the backscatter simulation.
        center: scene centre ``(lon, lat)`` in degrees.
        size: ``(width, height)`` in pixels.
        pixel_size: pixel size in metres.
        heading_deg: track heading, degrees clockwise from north.
        date: acquisition date or datetime (see :func:`generate_scene`).

    Raises:
        ValueError: invalid geometry or date.
    """
    lon, lat = center
    grid = make_scene_grid(lon, lat, size[0], size[1], pixel_size, heading_deg)
    when = parse_date(date)
    if not isinstance(when, dt.datetime):
        when = _overpass_time(when, lon, ascending=_is_ascending(heading_deg))
    ascending = _is_ascending(heading_deg)
    orbit, frame = orbit_frame(when.date(), lat, ascending)
    name = scene_file_name(when.date(), orbit, frame, ascending)
    return SyntheticScene(
        path=out_dir / name,
        label_tiles=(),
        scene_labels=None,
        grid=grid,
        acquisition=when,
        orbit=orbit,
        frame=frame,
        ascending=ascending,
        seed=int(seed),
    )


def _write_scene(
    scene: SyntheticScene, truth: np.ndarray, world: LabelWorld, looks: float
) -> None:
    """Simulate the scene's DN over ``truth`` and write its GeoTIFF."""
    grid = scene.grid
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, 0x5CE7E]))
    dn = simulate_dn(
        truth,
        rng=rng,
        month=scene.acquisition.month,
        detail=_reproject(world.detail, world, grid),
        looks=looks,
        look_ramp=_look_ramp(grid),
    )
    write_geotiff(
        scene.path,
        dn,
        crs=grid.crs,
        transform=grid.transform,
        nodata=DN_NODATA,
        tags=_scene_tags(scene, looks, world.seed),
        description="HH",
    )


def _check_outputs(
    path: Path,
    world_box: tuple[float, float, float, float],
    *,
    label_tiles: bool,
    scene_labels: bool,
    overwrite: bool,
) -> tuple[Path | None, list[Path]]:
    """Refuse to replace any file the scene would write.

    Returns:
        The scene-label path (None when not written) and every planned output.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
    """
    out = path.parent
    label_path = out / ("LC-" + path.name[len("IMG-HH-") :]) if scene_labels else None
    tiles = [out / tile_name(la, lo) for la, lo in tiles_for_bounds(world_box)]
    planned = [path, *(tiles if label_tiles else [])]
    if label_path is not None:
        planned.append(label_path)
    check_overwrite(planned, overwrite)
    return label_path, planned


def _scene_truth(world: LabelWorld, grid: SceneGrid) -> np.ndarray:
    """The world's labels on the scene grid, no data outside the swath footprint.

    Raises:
        ValueError: the world does not cover the footprint.
    """
    labels = labels_on_grid(world, grid)
    footprint = grid.footprint_mask()
    if not labels[footprint].all():
        raise ValueError(
            "the label world does not cover the scene footprint; generate a world "
            f"covering {grid.lonlat_bounds()} (west, south, east, north)"
        )
    return np.where(footprint, labels, JAXA_NODATA)


def _scene_tags(scene: SyntheticScene, looks: float, label_seed: int) -> dict[str, str]:
    """GeoTIFF tags of a synthetic scene: acquisition, product and calibration."""
    when = scene.acquisition
    return {
        "ACQUISITION_DATE": f"{when:%Y-%m-%d}",
        "ACQUISITION_DATETIME": f"{when:%Y-%m-%dT%H:%M:%S}Z",
        "POLARIZATION": "HH",
        "UNITS": "DN",
        "CALIBRATION_FACTOR": f"{CALIBRATION_FACTOR_DB:.1f}",
        "CALIBRATION_FORMULA": "sigma0_dB = 10*log10(DN^2) + CALIBRATION_FACTOR",
        "SYNTHETIC": "true",
        "DESCRIPTION": (
            "Synthetic ALOS-2 PALSAR-2 L2.1-style HH amplitude made by "
            "alosmap.synthetic; not real ALOS-2 data"
        ),
        "SENSOR": "PALSAR-2 (simulated)",
        "PRODUCT_LEVEL": "2.1",
        "ORBIT": str(scene.orbit),
        "FRAME": str(scene.frame),
        "ORBIT_DIRECTION": "ASCENDING" if scene.ascending else "DESCENDING",
        "LOOK_DIRECTION": "RIGHT",
        "HEADING_DEG": f"{scene.grid.heading_deg:.2f}",
        "LOOKS": f"{looks:g}",
        "SEED": str(scene.seed),
        "LABEL_SEED": str(label_seed),
    }


def _write_scene_labels(
    path: Path, truth: np.ndarray, scene: SyntheticScene, label_seed: int
) -> None:
    """Write the ground truth on the scene grid (``LC-*.tif``, JAXA colours)."""
    from alosmap.classes import JAXA_CLASSES, colormap

    write_geotiff(
        path,
        truth.astype(np.uint8),
        crs=scene.grid.crs,
        transform=scene.grid.transform,
        nodata=JAXA_NODATA,
        tags={"SYNTHETIC": "true", "SCENE": scene.path.name, "SEED": str(label_seed)},
        description="LULC (synthetic, JAXA HRLULC v23.12 codes)",
        cmap=colormap(JAXA_CLASSES),
    )


def _is_ascending(heading_deg: float) -> bool:
    """Northward track (heading within 90° of north) means an ascending pass."""
    h = heading_deg % 360.0
    return h < 90.0 or h > 270.0


def _overpass_time(day: dt.date, lon: float, ascending: bool) -> dt.datetime:
    """UTC time on ``day`` of a pass at local solar noon (D) or midnight (A)."""
    local = 0.0 if ascending else 12.0
    seconds = round(((local - lon / 15.0) % 24.0) * 3600.0)
    # `day` is the UTC date (as in the file name); the time is kept on that date.
    return dt.datetime(day.year, day.month, day.day) + dt.timedelta(seconds=seconds)
