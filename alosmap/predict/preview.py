"""PNG (or JPEG) quicklook of a prediction: the SAR scene beside the map, with a legend.

Both rasters are read decimated (at most ``max_size`` pixels on the longer side,
nearest neighbour, using overviews where the files have them), so a 12000 × 12000
scene needs no more memory than a small one. matplotlib (``pip install
'alosmap[plot]'``) draws it with the Agg canvas and its object-oriented API, so no
global backend is switched.

The picture: a title (scene file name and acquisition date), the SAR panel (σ0 in
dB, grey, 2-98 % stretch, with a dB colour bar), the map panel (the map's colours,
a scale bar) and, when a confidence file is given, a confidence panel (percent,
viridis, with its colour bar); a legend lists only the classes present in the map
with their share of the mapped area. Georeferenced scenes get latitude/longitude
ticks on the panel edges and a graticule; a scene without a CRS gets plain pixel
(column/row) axes and no scale bar. No data is white in every panel.

The file's suffix picks the format (:data:`PREVIEW_FORMATS`): ``.png``, or ``.jpg`` /
``.jpeg`` for a JPEG (smaller, slightly blurred class edges); another suffix is
refused before anything is drawn (:func:`preview_format`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_write, check_output_place, check_overwrite
from alosmap._imports import lazy_import
from alosmap.errors import InputRasterError, OutputPathError
from alosmap.spec import ModelSpec

__all__ = ["PREVIEW_FORMATS", "preview_format", "write_preview"]

#: The quicklook's format (matplotlib's name) by file suffix.
PREVIEW_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
#: JPEG quality (Pillow's 0-95 scale): class edges stay crisp enough to read.
_JPEG_QUALITY = 92

#: dots per inch of the PNG (a decimated panel pixel is one PNG pixel).
_DPI = 100
_WHITE = np.array([255, 255, 255], dtype=np.uint8)
#: font sizes (points) of the figure title, panel titles and tick / legend text.
_FONT_TITLE, _FONT_PANEL, _FONT_TICK = 12, 10.5, 9
#: figure margins and gaps in inches: left (latitude labels), gap between panels,
#: bottom (tick labels and colour bars), top (titles), legend column.
_LEFT, _GAP, _BOTTOM, _TOP, _LEGEND = 0.85, 0.2, 1.15, 0.75, 2.2
#: mean Earth radius (m) for the scale bar's great-circle distances.
_EARTH_RADIUS_M = 6_371_008.8
#: candidate graticule steps in degrees, largest first.
_DEG_STEPS = (
    10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001
)  # fmt: skip


@dataclass(frozen=True)
class _Raster:
    """One decimated band: values, validity mask and what the file says about it."""

    values: np.ndarray
    valid: np.ndarray
    nodata: float | None
    tags: dict[str, str]
    colormap: dict[int, tuple[int, ...]] | None
    crs: Any
    transform: Any
    full_shape: tuple[int, int]


def _open_quiet(path: Path) -> Any:
    """``rasterio.open`` (any path GDAL reads) without the not-georeferenced warning."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from alosmap.io.raster import gdal_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(gdal_path(path))


def _window_in(scene: Path, grid: _Raster) -> Any:
    """The window of ``scene`` that ``grid`` (a map on the scene's grid) covers.

    None when the map covers the whole scene (a map cropped to an area of interest
    covers a window of it, shifted by whole pixels).
    """
    from rasterio.windows import Window

    with _open_quiet(scene) as ds:
        if (ds.height, ds.width) == grid.full_shape or ds.crs != grid.crs:
            return None
        col = round((grid.transform.c - ds.transform.c) / ds.transform.a)
        row = round((grid.transform.f - ds.transform.f) / ds.transform.e)
    height, width = grid.full_shape
    return Window(col, row, width, height)


def _read_decimated(
    path: Path, band: int, max_size: int, window: Any = None
) -> _Raster:
    """Read ``band`` at most ``max_size`` pixels on a side, with its validity mask.

    Args:
        path: the raster (a file or any path GDAL reads).
        band: 1-based band.
        max_size: longest side of the result.
        window: a window of the raster to read instead of all of it.
    """
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError

    from alosmap.io.raster import is_virtual

    if not is_virtual(path) and not path.is_file():
        raise InputRasterError(f"input not found: {path}")
    try:
        with _open_quiet(path) as ds:
            if not 1 <= band <= ds.count:
                raise InputRasterError(
                    f"{path.name} has {ds.count} band(s); band {band} requested"
                )
            height = ds.height if window is None else int(window.height)
            width = ds.width if window is None else int(window.width)
            scale = max(1.0, max(width, height) / max_size)
            shape = (max(1, round(height / scale)), max(1, round(width / scale)))
            nearest = Resampling.nearest
            values = ds.read(band, window=window, out_shape=shape, resampling=nearest)
            masks = ds.read_masks(
                band, window=window, out_shape=shape, resampling=nearest
            )
            try:
                cmap = ds.colormap(band)
            except ValueError:
                cmap = None
            return _Raster(
                values=values,
                valid=masks > 0,
                nodata=ds.nodata,
                tags=ds.tags(),
                colormap=cmap,
                crs=ds.crs,
                transform=ds.transform
                if window is None
                else ds.window_transform(window),
                full_shape=(height, width),
            )
    except RasterioError as exc:
        raise InputRasterError(f"cannot read {path}: {exc}") from exc


def _class_counts(path: Path) -> np.ndarray:
    """Pixels per code (256 bins) of band 1 at full resolution, block by block.

    Every block is read, so a class of a few pixels that the decimated panel does
    not show still gets its legend entry; memory stays one block.
    """
    from rasterio.errors import RasterioError

    counts = np.zeros(256, dtype=np.int64)
    try:
        with _open_quiet(path) as ds:
            for _, window in ds.block_windows(1):
                codes = ds.read(1, window=window)
                valid = ds.read_masks(1, window=window) > 0
                counts += np.bincount(
                    codes[valid].astype(np.uint8).ravel(), minlength=256
                )[:256]
    except RasterioError as exc:
        raise InputRasterError(f"cannot read {path}: {exc}") from exc
    return counts


def _sar_db(raster: _Raster, units: str, nodata: float | None, cf: float) -> Any:
    """σ0 in dB as a masked array (invalid pixels masked)."""
    from alosmap.radiometry import INPUT_UNITS, to_db

    a = raster.values.astype(np.float64)
    valid = raster.valid & np.isfinite(a)
    if nodata is not None and not np.isnan(nodata):
        valid &= a != nodata
    if units not in INPUT_UNITS:
        raise ValueError(f"input_units: expected dn, db or linear, got {units!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.asarray(to_db(a, units, cf), dtype=np.float32)
    valid &= np.isfinite(db)
    return np.ma.masked_array(np.where(valid, db, 0.0), mask=~valid)


def _map_rgb(
    codes: np.ndarray, valid: np.ndarray, colors: dict[int, tuple[int, ...]]
) -> np.ndarray:
    """Class codes as RGB through a colour table; no data and unknown codes white."""
    lut = np.tile(_WHITE, (256, 1))
    for code, rgba in colors.items():
        if 0 <= code < 256 and (len(rgba) < 4 or rgba[3] > 0):
            lut[code] = rgba[:3]
    rgb = lut[codes.astype(np.uint8)]
    rgb[~valid] = _WHITE
    return rgb


def _polarisation(scene: Path, band: int) -> str:
    """``HH``/``HV``/``VV``/``VH`` from an ALOS-2 file name, else ``band N``."""
    m = re.search(r"(?:^|[-_])(HH|HV|VV|VH)(?:[-_.]|$)", scene.name, re.IGNORECASE)
    return m[1].upper() if m else f"band {band}"


def preview_format(path: str | os.PathLike[str]) -> str:
    """The format of a quicklook written to ``path``, from its suffix.

    Raises:
        OutputPathError: the suffix is not one of :data:`PREVIEW_FORMATS`.
    """
    fmt = PREVIEW_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        suffix = Path(path).suffix or "no suffix"
        raise OutputPathError(
            f"--preview {path}: {suffix} is not an image format alosmap writes; "
            "end it in .png, .jpg or .jpeg"
        )
    return fmt


def write_preview(
    png_path: str | os.PathLike[str],
    scene_path: str | os.PathLike[str],
    map_path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    band: int = 1,
    max_size: int = 1024,
    input_units: str = "dn",
    nodata: float | None = None,
    overwrite: bool = False,
    confidence_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a PNG (or JPEG) quicklook: the SAR scene (σ0 dB) beside the map.

    The scene is shown in grey with a 2-98 % stretch of its valid σ0 values and a
    dB colour bar; the map in its colour table's colours (the spec's class colours
    when it has none) with a scale bar; the confidence (when ``confidence_path`` is
    given) in percent. No data is white in every panel. The legend lists the
    classes present in the map (counted at full resolution) with their share of
    the mapped pixels. Georeferenced rasters get latitude/longitude edge ticks and
    a graticule; without a CRS the axes are pixel columns/rows. The title gives the
    scene file name and acquisition date (from its tags or L2.1 file name) when
    known. The file is written atomically; its suffix picks PNG or JPEG
    (:func:`preview_format`).

    Args:
        png_path: output PNG (``.png``) or JPEG (``.jpg``, ``.jpeg``).
        scene_path: the input SAR scene.
        map_path: the class map written for it (same grid).
        spec: the model spec (classes, calibration factor).
        band: 1-based band of the scene to show.
        max_size: longest side, in pixels, of each panel's decimated read.
        input_units: units of the scene values: ``dn``, ``db`` or ``linear``.
        nodata: no-data value of the scene; defaults to the file's own (or its mask).
        overwrite: replace an existing ``png_path``; without it, one that appears
            meanwhile (another run) is kept and nothing is written.
        confidence_path: the map's confidence file (band 1, percent 0-100, with its
            own no-data value), e.g. ``<map stem>_confidence.tif``; adds a panel.

    Returns:
        ``png_path``.

    Raises:
        OutputExistsError: ``png_path`` exists and ``overwrite`` is False.
        OutputPathError: the directory of ``png_path`` does not exist, or its
            suffix is not a format written here.
        InputRasterError: a raster is missing or unreadable.
        BackendUnavailableError: matplotlib is not installed.
    """
    from alosmap.io.scene import scene_date

    out = Path(png_path)
    fmt = preview_format(out)
    check_overwrite([out], overwrite)
    check_output_place(out)
    if max_size < 16:
        raise ValueError(f"max_size: expected at least 16 pixels, got {max_size}")
    lazy_import("matplotlib")

    scene = Path(scene_path)
    mp = _read_decimated(Path(map_path), 1, max_size)
    sar = _read_decimated(scene, band, max_size, window=_window_in(scene, mp))
    conf = None
    if confidence_path is not None:
        conf = _read_decimated(Path(confidence_path), 1, max_size)
    sar_db = _sar_db(
        sar,
        input_units,
        nodata if nodata is not None else sar.nodata,
        spec.radiometry.calibration_factor_db,
    )
    colors = mp.colormap or {c.code: (*c.color, 255) for c in spec.classes}
    title = scene.name
    when = scene_date(scene, sar.tags)  # a mosaic tile's from its date file
    if when is not None:
        title += f"  ({when.isoformat()})"
    panels = _Panels(
        sar_db=sar_db,
        sar_label=f"σ0 {_polarisation(scene, band)} [dB]",
        map_rgb=_map_rgb(mp.values, mp.valid, colors),
        map_label=spec.legend.title,
        confidence=_confidence(conf),
        geo=_geo_axes(mp.crs, mp.transform, mp.full_shape),
    )
    fig = _figure(title, panels, _legend_entries(spec, colors, Path(map_path)))
    jpeg = {"pil_kwargs": {"quality": _JPEG_QUALITY}} if fmt == "jpeg" else {}
    return atomic_write(
        out,
        lambda tmp: fig.savefig(
            tmp,
            format=fmt,
            dpi=_DPI,
            facecolor="white",
            bbox_inches="tight",
            pad_inches=0.08,
            **jpeg,
        ),
        replace=overwrite,
    )


def _confidence(conf: _Raster | None) -> Any:
    """The confidence band as a masked array of percent (None without one)."""
    if conf is None:
        return None
    values = conf.values.astype(np.float32)
    valid = conf.valid & np.isfinite(values)
    if conf.nodata is not None and not np.isnan(conf.nodata):
        valid &= values != conf.nodata
    return np.ma.masked_array(values, mask=~valid)


def _legend_entries(
    spec: ModelSpec, colors: dict[int, tuple[int, ...]], map_path: Path
) -> list[tuple[str, tuple[float, float, float]]]:
    """(label, RGB 0-1) of each legend class present in the map, in code order."""
    counts = _class_counts(map_path)
    total = int(counts.sum())
    entries = []
    for c in sorted(spec.classes, key=lambda c: c.code):
        n = int(counts[c.code]) if 0 <= c.code < 256 else 0
        if n == 0:
            continue
        r, g, b = colors.get(c.code, c.color)[:3]
        share = 100.0 * n / total
        pct = f"{share:.1f} %" if share >= 0.1 else "< 0.1 %"
        entries.append((f"{c.name}  ({pct})", (r / 255.0, g / 255.0, b / 255.0)))
    return entries


# -- coordinates ---------------------------------------------------------------------
@dataclass(frozen=True)
class _GeoAxes:
    """How panel axes are labelled.

    Panels are drawn in full-resolution pixel coordinates (``extent`` 0..width,
    height..0). With a CRS, ``lon``/``lat`` hold degrees on a coarse grid of pixel
    positions ``xs`` × ``ys`` and ``m_per_px`` the ground size of a pixel.
    """

    width: int
    height: int
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    m_per_px: float | None = None


def _geo_axes(crs: Any, transform: Any, shape: tuple[int, int]) -> _GeoAxes:
    """Longitude/latitude of a grid of pixel positions; plain pixels without CRS."""
    from rasterio.errors import RasterioError
    from rasterio.warp import transform as warp

    height, width = shape
    plain = _GeoAxes(width=width, height=height)
    if crs is None or transform is None or transform.is_identity:
        return plain
    xs = np.linspace(0.0, width, 41)
    ys = np.linspace(0.0, height, 41)
    cols, rows = np.meshgrid(xs, ys)
    t = transform
    wx = t.a * cols.ravel() + t.b * rows.ravel() + t.c
    wy = t.d * cols.ravel() + t.e * rows.ravel() + t.f
    try:
        lon, lat = warp(crs, "EPSG:4326", list(wx), list(wy))
    except (RasterioError, ValueError, OSError):
        return plain
    lon_a = np.asarray(lon, dtype=np.float64).reshape(cols.shape)
    lat_a = np.asarray(lat, dtype=np.float64).reshape(cols.shape)
    if not (np.isfinite(lon_a).all() and np.isfinite(lat_a).all()):
        return plain
    mid = len(ys) // 2
    dist = _haversine_m(lon_a[mid, 0], lat_a[mid, 0], lon_a[mid, -1], lat_a[mid, -1])
    return _GeoAxes(width, height, xs, ys, lon_a, lat_a, dist / max(width, 1))


def _haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _deg_levels(lo: float, hi: float, max_ticks: int) -> tuple[list[float], int]:
    """Round degree values in ``[lo, hi]`` and the decimals their labels need.

    The step is the finest of :data:`_DEG_STEPS` giving at most ``max_ticks`` values.
    """

    def count(step: float) -> int:
        return math.floor(hi / step) - math.ceil(lo / step) + 1

    step = _DEG_STEPS[0]
    for s in _DEG_STEPS:
        if count(s) > max_ticks:
            break
        step = s
    first = math.ceil(lo / step)
    levels = [round(k * step, 6) for k in range(first, math.floor(hi / step) + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return levels, decimals


def _deg_label(value: float, decimals: int, pos: str, neg: str) -> str:
    """``139.05°E`` style label."""
    hemi = pos if value >= 0 else neg
    return f"{abs(value):.{decimals}f}°{hemi}"


def _edge_ticks(
    coord: np.ndarray, along: np.ndarray, levels: list[float]
) -> list[tuple[float, float]]:
    """Pixel positions along an edge where ``coord`` (monotonic) equals a level."""
    if coord[0] > coord[-1]:
        coord, along = coord[::-1], along[::-1]
    if not np.all(np.diff(coord) > 0):
        return []
    return [
        (float(np.interp(v, coord, along)), v)
        for v in levels
        if coord[0] <= v <= coord[-1]
    ]


def _label_axes(
    ax: Any, geo: _GeoAxes, first: bool, panel_w_in: float, fs: float
) -> None:
    """Latitude/longitude ticks and graticule (or pixel axes) on one panel.

    ``fs`` is the tick font size (points); labels are kept about 1.5 label widths
    apart.
    """
    ax.tick_params(labelsize=fs, length=fs / 3, pad=fs / 4)
    label_w_in = 8 * 0.6 * fs / 72.0  # "139.45°E"
    max_ticks = max(2, int(panel_w_in / (1.5 * label_w_in)))
    if geo.lon is None or geo.lat is None or geo.xs is None or geo.ys is None:
        from matplotlib.ticker import MaxNLocator

        ax.set_xlabel("column (pixels)", fontsize=fs)
        if first:
            ax.set_ylabel("row (pixels)", fontsize=fs)
        else:
            ax.tick_params(labelleft=False)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=max_ticks, integer=True))
        return
    lon_levels, lon_dec = _deg_levels(
        float(geo.lon.min()), float(geo.lon.max()), max_ticks
    )
    lat_levels, lat_dec = _deg_levels(
        float(geo.lat.min()), float(geo.lat.max()), max_ticks
    )
    for field, levels in ((geo.lon, lon_levels), (geo.lat, lat_levels)):
        if levels:
            ax.contour(
                geo.xs, geo.ys, field, levels=levels,
                colors="k", linewidths=0.6, linestyles=":", alpha=0.45,
            )  # fmt: skip
    xt = _edge_ticks(geo.lon[-1, :], geo.xs, lon_levels)
    yt = _edge_ticks(geo.lat[:, 0], geo.ys, lat_levels)
    ax.set_xticks([p for p, _ in xt])
    ax.set_xticklabels([_deg_label(v, lon_dec, "E", "W") for _, v in xt])
    ax.set_yticks([p for p, _ in yt])
    if first:
        ax.set_yticklabels([_deg_label(v, lat_dec, "N", "S") for _, v in yt])
    else:
        ax.tick_params(labelleft=False)


def _scale_bar(ax: Any, geo: _GeoAxes, fs: float) -> None:
    """A scale bar (about a fifth of the panel) in the panel's lower right."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    if not geo.m_per_px or geo.m_per_px <= 0:
        return
    target_m = geo.m_per_px * geo.width / 5.0
    base = 10 ** math.floor(math.log10(target_m))
    length_m = max(m * base for m in (1, 2, 5) if m * base <= target_m)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    bar = AnchoredSizeBar(
        ax.transData,
        length_m / geo.m_per_px,
        label,
        "lower right",
        pad=0.35,
        borderpad=0.5,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=max(geo.height / 150.0, 1.0),
        fontproperties={"size": fs},
    )
    bar.patch.set_alpha(0.8)
    bar.patch.set_edgecolor("none")
    ax.add_artist(bar)


# -- figure --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Panels:
    """What the panels show."""

    sar_db: Any
    sar_label: str
    map_rgb: np.ndarray
    map_label: str
    confidence: Any
    geo: _GeoAxes


def _figure(
    title: str,
    panels: _Panels,
    legend: list[tuple[str, tuple[float, float, float]]],
) -> Any:
    """The panels side by side, their colour bars and the legend, on an Agg figure.

    Panels keep one decimated pixel per PNG pixel; fonts and margins grow with the
    panel size (up to twice) so the text stays readable when the PNG is viewed
    scaled to a screen.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = panels.map_rgb.shape[:2]
    n = 2 if panels.confidence is None else 3
    pw, ph = w / _DPI, h / _DPI
    k = min(2.0, max(1.0, max(pw, ph) / 4.0))
    fs = _FONT_TICK * k
    left, gap, bottom, top = _LEFT * k, _GAP * k, _BOTTOM * k, _TOP * k
    fig_w = left + n * pw + (n - 1) * gap + _LEGEND * k
    fig_h = bottom + ph + top
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=_FONT_TITLE * k, y=1.0 - 0.1 * k / fig_h, va="top")
    geo = panels.geo
    extent = (0.0, float(geo.width), float(geo.height), 0.0)

    def panel(i: int, label: str) -> Any:
        x0 = left + i * (pw + gap)
        ax = fig.add_axes((x0 / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h))
        _label_axes(ax, geo, i == 0, pw, fs)
        ax.set_xlim(0, geo.width)
        ax.set_ylim(geo.height, 0)
        ax.set_title(label, fontsize=_FONT_PANEL * k)
        return ax

    def colorbar(i: int, image: Any, label: str) -> None:
        x0 = left + i * (pw + gap) + 0.1 * pw
        box = (x0 / fig_w, 0.4 * k / fig_h, 0.8 * pw / fig_w, 0.13 * k / fig_h)
        cb = fig.colorbar(image, cax=fig.add_axes(box), orientation="horizontal")
        cb.set_label(label, fontsize=fs)
        cb.ax.tick_params(labelsize=fs, length=fs / 4, pad=1)

    ax = panel(0, f"SAR backscatter {panels.sar_label}")
    im = ax.imshow(panels.sar_db, cmap=_cmap("gray"), norm=_stretch(panels.sar_db),
                   extent=extent, interpolation="nearest")  # fmt: skip
    colorbar(0, im, panels.sar_label + " (2–98 % stretch)")
    ax = panel(1, panels.map_label)
    ax.imshow(panels.map_rgb, extent=extent, interpolation="nearest")
    _scale_bar(ax, geo, fs)
    if panels.confidence is not None:
        ax = panel(2, "Confidence")
        im = ax.imshow(panels.confidence, cmap=_cmap("viridis"), vmin=0, vmax=100,
                       extent=extent, interpolation="nearest")  # fmt: skip
        colorbar(2, im, "confidence [%]")
    x_legend = (left + n * pw + (n - 1) * gap + 0.15 * k) / fig_w
    _legend(fig, legend, x_legend, (bottom + ph) / fig_h, fs)
    return fig


def _cmap(name: str) -> Any:
    """A copy of a matplotlib colour map with masked (no data) pixels white."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")


def _stretch(db: Any) -> Any:
    """2-98 % stretch of the valid dB values as a matplotlib Normalize."""
    from matplotlib.colors import Normalize

    valid = db.compressed() if np.ma.isMaskedArray(db) else np.ravel(db)
    if valid.size == 0:
        return Normalize(vmin=-25.0, vmax=0.0)
    lo, hi = np.percentile(valid, [2.0, 98.0])
    return Normalize(vmin=float(lo), vmax=float(max(hi, lo + 1e-3)))


def _legend(
    fig: Any,
    entries: list[tuple[str, tuple[float, float, float]]],
    x: float,
    top: float,
    fs: float,
) -> None:
    """The classes present, in a column right of the panels."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=rgb, edgecolor="0.3", label=lbl) for lbl, rgb in entries]
    if not handles:
        handles = [Patch(facecolor="white", edgecolor="0.3", label="(no data only)")]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(x, top),
        fontsize=fs,
        title="Classes (share of mapped area)",
        title_fontsize=fs,
        frameon=False,
        borderaxespad=0.0,
        handlelength=1.4,
        alignment="left",
    )
