"""PNG quicklook of a prediction: the SAR scene beside the map, with a legend.

Both rasters are read decimated (at most ``max_size`` pixels on the longer side,
nearest neighbour, using overviews where the files have them), so a 12000 × 12000
scene needs no more memory than a small one. matplotlib (``pip install
'alosmap[plot]'``) draws it with the Agg canvas and its object-oriented API, so no
global backend is switched.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_write, check_overwrite
from alosmap._imports import lazy_import
from alosmap.classes import get_task
from alosmap.errors import InputRasterError, OutputPathError
from alosmap.spec import ModelSpec

__all__ = ["write_preview"]

#: dots per inch of the PNG (figure inches are pixel sizes / DPI).
_DPI = 100
_WHITE = np.array([255, 255, 255], dtype=np.uint8)


def _read_decimated(
    path: Path, band: int, max_size: int
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read ``band`` at most ``max_size`` pixels on a side; also its validity mask.

    Returns:
        ``(values [h, w], valid [h, w] bool, dataset profile info)``, the last being
        a dict with ``nodata``, ``tags``, ``colormap`` (or None) and ``dtype``.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    if not path.is_file():
        raise InputRasterError(f"input not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                if not 1 <= band <= ds.count:
                    raise InputRasterError(
                        f"{path.name} has {ds.count} band(s); band {band} requested"
                    )
                scale = max(ds.width, ds.height) / max_size
                shape = (
                    max(1, round(ds.height / max(scale, 1.0))),
                    max(1, round(ds.width / max(scale, 1.0))),
                )
                values = ds.read(band, out_shape=shape, resampling=Resampling.nearest)
                valid = (
                    ds.read_masks(band, out_shape=shape, resampling=Resampling.nearest)
                    > 0
                )
                try:
                    cmap = ds.colormap(band)
                except ValueError:
                    cmap = None
                info = {
                    "nodata": ds.nodata,
                    "tags": ds.tags(),
                    "colormap": cmap,
                    "dtype": ds.dtypes[band - 1],
                }
    except RasterioError as exc:
        raise InputRasterError(f"cannot read {path}: {exc}") from exc
    return values, valid, info


def _sar_rgb(
    values: np.ndarray,
    valid: np.ndarray,
    units: str,
    nodata: float | None,
    cf: float,
) -> np.ndarray:
    """σ0 in dB as a grey RGB image with a 2-98 % stretch; no data white."""
    from alosmap.radiometry import INPUT_UNITS, to_db

    a = values.astype(np.float64)
    valid = valid & np.isfinite(a)
    if nodata is not None and not np.isnan(nodata):
        valid &= a != nodata
    if units not in INPUT_UNITS:
        raise ValueError(f"input_units: expected dn, db or linear, got {units!r}")
    db = to_db(a, units, cf).astype(np.float32)
    valid &= np.isfinite(db)
    grey = np.zeros(db.shape, dtype=np.float64)
    if valid.any():
        lo, hi = np.percentile(db[valid], [2.0, 98.0])
        grey = np.clip((np.nan_to_num(db) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = np.repeat((grey * 255.0).round().astype(np.uint8)[..., None], 3, axis=2)
    rgb[~valid] = _WHITE
    return rgb


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
) -> Path:
    """Write a PNG quicklook: the SAR scene (σ0 dB) beside the map, with a legend.

    The scene is shown in grey with a 2-98 % stretch of its valid σ0 values; the map
    in its colour table's colours (the spec's class colours when it has none); no
    data is white in both. The title gives the scene file name and acquisition date
    (from its tags or L2.1 file name) when known. The file is written atomically.

    Args:
        png_path: output PNG.
        scene_path: the input SAR scene.
        map_path: the class map written for it (same grid).
        spec: the model spec (classes, calibration factor).
        band: 1-based band of the scene to show.
        max_size: longest side, in pixels, of each panel's decimated read.
        input_units: units of the scene values: ``dn``, ``db`` or ``linear``.
        nodata: no-data value of the scene; defaults to the file's own (or its mask).
        overwrite: replace an existing ``png_path``.

    Returns:
        ``png_path``.

    Raises:
        OutputExistsError: ``png_path`` exists and ``overwrite`` is False.
        InputRasterError: a raster is missing or unreadable.
        BackendUnavailableError: matplotlib is not installed.
    """
    from alosmap.io.raster import acquisition_date

    out = Path(png_path)
    check_overwrite([out], overwrite)
    if not out.parent.is_dir():
        raise OutputPathError(
            f"output directory {out.parent} does not exist; create it first"
        )
    if max_size < 16:
        raise ValueError(f"max_size: expected at least 16 pixels, got {max_size}")
    lazy_import("matplotlib")

    scene = Path(scene_path)
    sar, sar_valid, sar_info = _read_decimated(scene, band, max_size)
    codes, map_valid, map_info = _read_decimated(Path(map_path), 1, max_size)
    sar_nodata = nodata if nodata is not None else sar_info["nodata"]
    sar_img = _sar_rgb(
        sar,
        sar_valid,
        input_units,
        sar_nodata,
        spec.radiometry.calibration_factor_db,
    )
    colors = map_info["colormap"] or {c.code: (*c.color, 255) for c in spec.classes}
    map_img = _map_rgb(codes, map_valid, colors)

    title = scene.name
    when = acquisition_date(scene, sar_info["tags"])
    if when is not None:
        title += f"  ({when.isoformat()})"
    fig = _figure(title, sar_img, map_img, spec, colors)
    return atomic_write(
        out, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")
    )


def _figure(
    title: str,
    sar_img: np.ndarray,
    map_img: np.ndarray,
    spec: ModelSpec,
    colors: dict[int, tuple[int, ...]],
) -> Any:
    """The two panels side by side and the legend, on a matplotlib Agg figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    h, w = sar_img.shape[:2]
    legend_w, title_h = 260, 70
    fig = Figure(
        figsize=((2 * w + legend_w) / _DPI, (max(h, 250) + title_h) / _DPI),
        dpi=_DPI,
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=10)
    total_w = 2 * w + legend_w
    top = 1.0 - title_h / (max(h, 250) + title_h)
    for i, (img, label) in enumerate(
        (
            (sar_img, "σ0 HH (dB, 2–98 % stretch)"),
            (map_img, get_task(spec.task).title),
        )
    ):
        ax = fig.add_axes((i * w / total_w, 0.0, w / total_w, top * 0.94))
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    handles = []
    for c in sorted(spec.classes, key=lambda c: c.code):
        r, g, b = colors.get(c.code, c.color)[:3]
        rgb = (r / 255.0, g / 255.0, b / 255.0)
        handles.append(
            Patch(facecolor=rgb, edgecolor="0.3", label=f"{c.code} {c.name}")
        )
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(2 * w / total_w + 0.01, 0.5),
        fontsize=8,
        frameon=False,
        title="Classes",
    )
    return fig
