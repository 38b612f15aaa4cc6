"""Opening a SAR scene for prediction: validation, units, no-data and strip reads.

A :class:`Scene` wraps one band of a raster and turns row strips of it into σ0 in dB
plus a validity mask. A pixel is **no data** when any of these says so:

* the file's no-data tag (e.g. ``0`` for ALOS-2 L2.1, ``1`` for the 25 m mosaic);
* DN ≤ 0 for amplitude DN, power ≤ 0 for linear power (σ0 undefined);
* NaN or ±inf (±inf is counted and reported as a warning);
* the GDAL mask band (internal/external mask or alpha), when the file has one;
* for a JAXA 25 m mosaic tile (``<tile>_<yy>_sl_HH_<version>.tif``,
  :mod:`alosmap.io.alos2_mosaic`): DN 1 (also without a no-data tag), and the
  values 0 (no data), 100 (layover) and 150 (shadow) of the tile's mask file, when
  it is beside the HH file (layover and shadow pixels are counted).

A scene also says what its backscatter is (``sigma0``, ``gamma0`` or ``unknown``:
a ``BACKSCATTER`` tag, a mosaic's ``.xml`` or name, an ALOS-2 L2.1 name) and when
it was acquired (a date, and for mosaic tiles the range of dates of the pixels).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from alosmap.errors import AlosmapWarning, InputRasterError
from alosmap.io import alos2_mosaic as mosaic
from alosmap.io.raster import (
    L21_NAME,
    acquisition_date,
    gdal_path,
    is_virtual,
    open_raster,
    read_error,
)
from alosmap.radiometry import (
    CALIBRATION_FACTOR_DB,
    INPUT_UNITS,
    Radiometry,
    guess_units,
    parse_backscatter,
    to_db,
)

logger = logging.getLogger(__name__)

_UNIT_TAGS = {
    "dn": "dn",
    "db": "db",
    "decibel": "db",
    "linear": "linear",
    "power": "linear",
}
#: Plausible σ0 range (dB) for the sanity check of declared/guessed units.
PLAUSIBLE_DB = (-80.0, 40.0)
#: Largest share of sampled values outside :data:`PLAUSIBLE_DB` a scene may have.
MAX_OUTSIDE = 0.05


def scene_date(path: str | os.PathLike[str], tags: dict[str, str]) -> date | None:
    """A scene's acquisition date without opening it as a :class:`Scene`.

    Its tags or ALOS-2 L2.1 name (:func:`~alosmap.io.raster.acquisition_date`),
    else, for a JAXA 25 m mosaic tile, the most common day of its date file (or
    the ``.xml``'s when that names one day): :attr:`SceneInfo.date` of the opened
    scene. None when neither says (a tile with only the year in its name).
    """
    found = acquisition_date(path, tags)
    if found is not None:
        return found
    files = mosaic.find_mosaic_files(path)
    if files is None:
        return None
    meta = mosaic.read_metadata(files.xml) if files.xml is not None else None
    return mosaic.mosaic_date_range(files, meta).typical


def _percent(share: float) -> str:
    """``0.071`` → ``"7 %"``; shares that round to 0 or 100 keep a decimal."""
    pct = 100 * share
    return f"{pct:.0f} %" if 1 <= pct <= 99 else f"{pct:.1f} %"


def _spread_starts(length: int, size: int, align: int, n: int) -> list[int]:
    """Up to ``n`` starts of ``size``-long windows spread over ``length``, aligned."""
    last = max(0, length - size)
    starts = {
        min(last, round(i * last / max(1, n - 1)) // align * align) for i in range(n)
    }
    return sorted(starts)


def _search_parts(win: Window, bh: int, bw: int) -> Iterator[Window]:
    """``win`` in reads along whole ``bh × bw`` blocks, each ≤ ~SEARCH_PIXELS.

    Row by row of blocks, left to right: a read that starts or ends inside
    ``win`` is cut at its edge.
    """
    c0, r0 = int(win.col_off), int(win.row_off)
    c1, r1 = c0 + int(win.width), r0 + int(win.height)
    rows = max(1, SEARCH_PIXELS // max(1, c1 - c0) // bh) * bh
    cols = max(bw, SEARCH_PIXELS // (rows * bw) * bw)
    for r in range(r0 - r0 % bh, r1, rows):
        for c in range(c0 - c0 % bw, c1, cols):
            top, left = max(r, r0), max(c, c0)
            h, w = min(r + rows, r1) - top, min(c + cols, c1) - left
            if h > 0 and w > 0:
                yield Window(left, top, w, h)


#: Files with more pixels (and no overviews) are sampled by blocks, not decimated.
FULL_SAMPLE_PIXELS = 4096 * 4096
#: About how many pixels a block sample reads.
SAMPLE_PIXELS = 2_000_000
#: Most pixels one read of the search for data reads (:meth:`Scene._find_data`).
SEARCH_PIXELS = 4 * 1024 * 1024
#: VRT sources whose destination is all that a VRT band holds (others, such as
#: ``KernelFilteredSource``, reach beyond it).
_VRT_SOURCES = ("SimpleSource", "ComplexSource", "AveragedSource")


@dataclass
class SceneInfo:
    """What the pipeline and the outputs need to know about a scene.

    ``date_range`` (first and last day) is known for mosaic tiles, with
    ``date_source`` saying where it comes from (``date file ...``, ``xml metadata``,
    ``file name year``); ``backscatter`` is ``sigma0``, ``gamma0`` or ``unknown``,
    with ``backscatter_source``; ``mask`` is the mosaic mask file used, if any.
    """

    path: Path
    width: int
    height: int
    band: int
    dtype: str
    crs: rasterio.crs.CRS | None
    transform: rasterio.Affine
    nodata: float | None
    units: str
    units_source: str
    masked: bool
    date: date | None
    date_range: tuple[datetime.date, datetime.date] | None = None
    date_source: str | None = None
    backscatter: str = "unknown"
    backscatter_source: str = ""
    mask: Path | None = None


class Scene:
    """One band of a scene, read in full-width strips as σ0 [dB] + validity mask.

    Args:
        path: the raster: a GeoTIFF, VRT or anything GDAL reads, also a GDAL
            virtual path (``/vsizip/``, ``/vsicurl/``, ``/vsis3/``) or a URL
            (``https://``, ``s3://``).
        radiometry: the model's radiometry (its calibration factor is the default;
            a ``CALIBRATION_FACTOR`` tag in the file wins).
        band: 1-based band; required when the file has several bands.
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.
        nodata: the no-data value, instead of the file's own (NaN allowed).

    Raises:
        InputRasterError: missing/unreadable file, truncated data, wrong band,
            implausible values for the units (more than 5 % of them outside
            -80..40 dB), nothing valid, uint8 or bool data without ``input_units``.
        SpecMismatchError: the scene does not fit the model.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        radiometry: Radiometry,
        *,
        band: int | None = None,
        input_units: str = "auto",
        nodata: float | None = None,
    ) -> None:
        self.path = Path(path)
        self._forced_nodata = None if nodata is None else float(nodata)
        #: what GDAL opens (URLs as ``/vsicurl/``, ``/vsis3/`` ...), named in messages
        self.source = gdal_path(path)
        self.radiometry = radiometry
        self.ds = open_raster(path, decode_threads=True)
        #: the mosaic tile's files (None: not a 25 m mosaic file name)
        self.mosaic = mosaic.find_mosaic_files(path)
        self._mask: mosaic.MosaicMask | None = None
        try:
            self._setup(band, input_units)
        except BaseException:
            self.close()
            raise
        self.inf_pixels = 0
        #: pixels with data in the scene (in the area) that the mosaic mask
        #: marks as layover / shadow (so no data), counted once per row read
        self.layover_pixels = 0
        self.shadow_pixels = 0
        self._counted = np.zeros(self.info.height, dtype=bool)
        #: offset (col, row) of :attr:`info`'s grid in the file (see :meth:`crop`)
        self._offset = (0, 0)
        self._inside: Callable[[Window], np.ndarray | bool] | None = None

    # ------------------------------------------------------------------ setup
    def _setup(self, band: int | None, input_units: str) -> None:
        ds = self.ds
        if ds.count < 1:
            raise InputRasterError(f"{self.source}: the raster has no bands")
        if band is None:
            if ds.count > 1:
                raise InputRasterError(
                    f"{self.source} has {ds.count} bands; choose the HH band with "
                    "--band N"
                )
            band = 1
        if not 1 <= band <= ds.count:
            raise InputRasterError(
                f"--band {band}: {self.source} has {ds.count} band(s) (1..{ds.count})"
            )
        self.band = band
        dtype = np.dtype(ds.dtypes[band - 1])
        if input_units == "auto" and (dtype.kind == "b" or dtype == np.uint8):
            raise InputRasterError(
                f"{self.source}: {dtype} data is not ALOS-2 amplitude DN (uint16); "
                "pass --input-units dn|db|linear if you are sure"
            )
        if dtype.kind not in "uif":
            raise InputRasterError(
                f"{self.source}: band {band} has data type {dtype}, not a real number"
            )
        if ds.crs is None:
            warnings.warn(
                f"{self.source} has no CRS: the map will be written on the same pixel "
                "grid without georeferencing",
                AlosmapWarning,
                stacklevel=3,
            )
        flags = ds.mask_flag_enums[band - 1]
        self.masked = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
        self.nodata = ds.nodatavals[band - 1]
        if self._forced_nodata is not None:
            self.nodata = self._forced_nodata
        elif (
            self.mosaic is not None and dtype.kind in "ui" and self.nodata in (None, 0)
        ):
            # JAXA's mosaics mark no data with DN 1, tag or no tag (DN 0 is invalid
            # anyway: σ0 is undefined)
            self.nodata = float(mosaic.DN_NODATA)
        sample = self._sample()
        units, source = self._units(input_units, dtype, sample)
        if not self._usable(sample, units).size:
            # a sample can miss data (a huge VRT with a small source, data in a
            # corner): "no valid pixels" only when the whole band says so
            found = self._find_data(units)
            if found.size:
                sample = found
                units, source = self._units(input_units, dtype, sample)
        self.units = units
        self.units_source = source
        self._check_plausible(sample, units)
        tags = ds.tags()
        #: the dataset's metadata tags (``SYNTHETIC``, ``UNITS``, dates ...)
        self.tags: dict[str, str] = dict(tags)
        meta = self._mosaic_setup()
        self.info = SceneInfo(
            path=self.path,
            width=ds.width,
            height=ds.height,
            band=band,
            dtype=str(dtype),
            crs=ds.crs,
            transform=ds.transform,
            nodata=self.nodata,
            units=units,
            units_source=source,
            masked=self.masked,
            date=acquisition_date(self.source, tags),
            mask=self._mask.path if self._mask is not None else None,
        )
        self._set_dates(meta)
        self._set_backscatter(meta)
        cf = tags.get("CALIBRATION_FACTOR")
        self.cf = self.radiometry.calibration_factor_db
        if cf is not None:
            try:
                self.cf = float(cf)
            except ValueError:
                logger.warning("ignoring unreadable CALIBRATION_FACTOR tag %r", cf)
        if units == "dn" and self.cf != CALIBRATION_FACTOR_DB:
            logger.info("calibration factor from the file: %s dB", self.cf)

    def _mosaic_setup(self) -> mosaic.MosaicMetadata | None:
        """Open a mosaic tile's mask and read its ``.xml`` (None: no ``.xml``).

        Raises:
            InputRasterError: the mask file is unusable (see
                :class:`~alosmap.io.alos2_mosaic.MosaicMask`).
        """
        files = self.mosaic
        if files is None:
            return None
        meta = mosaic.read_metadata(files.xml) if files.xml is not None else None
        if files.name.pol != "HH":
            logger.warning(
                "%s is the %s file of a mosaic tile; models map HH",
                self.path.name,
                files.name.pol,
            )
        if files.mask is not None:
            codes = meta.mask_codes if meta is not None else None
            self._mask = mosaic.MosaicMask(
                files.mask, self.ds.width, self.ds.height, codes
            )
            logger.info("mosaic mask %s: layover and shadow are no data", files.mask)
        elif is_virtual(self.path):
            logger.info("mosaic siblings are not looked up beside %s", self.source)
        else:
            logger.warning(
                "no mask file %s beside %s: layover and shadow are mapped",
                files.name.sibling("mask"),
                self.path.name,
            )
        return meta

    def _set_dates(self, meta: mosaic.MosaicMetadata | None) -> None:
        """A mosaic tile's date range (and its typical date, without a date tag).

        :func:`~alosmap.io.raster.acquisition_date` (for :attr:`info`'s date) may
        have asked already: :func:`~alosmap.io.alos2_mosaic.mosaic_date_range`
        caches the date file's range, so it is read, and a broken one reported,
        once.
        """
        if self.mosaic is None:
            return
        found = mosaic.mosaic_date_range(self.mosaic, meta)
        info = self.info
        info.date_range = (found.first, found.last)
        info.date_source = found.source
        if info.date is None:
            info.date = found.typical

    def _set_backscatter(self, meta: mosaic.MosaicMetadata | None) -> None:
        """``sigma0``/``gamma0``: a ``BACKSCATTER`` tag, the ``.xml``, the name."""
        info = self.info
        tag = self.ds.tags().get("BACKSCATTER") or self.ds.tags(self.band).get(
            "BACKSCATTER"
        )
        kind, source = parse_backscatter(tag), "BACKSCATTER tag"
        if tag and kind is None:
            logger.warning("ignoring unknown BACKSCATTER tag %r", tag)
        if kind is None and meta is not None and meta.backscatter:
            kind, source = meta.backscatter, "mosaic xml metadata"
        if kind is None and self.mosaic is not None:
            kind, source = "gamma0", "mosaic file name"
        if kind is None and L21_NAME.search(self.path.name):
            kind, source = "sigma0", "ALOS-2 L2.1 file name"
        info.backscatter = kind or "unknown"
        info.backscatter_source = source if kind else ""

    def _sample(self) -> np.ndarray:
        """Valid values of a sample of the band, for the units and plausibility checks.

        Up to :data:`FULL_SAMPLE_PIXELS`, or with overviews, a decimated read (≤ ~1024
        px a side). A larger file without overviews would be decoded whole for that
        (0.17 s at 6000², once more than the run itself decodes it), so its sample
        is a spread of whole blocks (:meth:`_block_sample`, ~2 % to 10 % of the file);
        the decimated read remains the fallback when those hold no valid value.
        A sample can miss small data in a huge raster: when it holds no usable
        value, :meth:`_find_data` searches the band before anything says "no valid
        pixels".
        """
        ds = self.ds
        try:
            arr = None
            if ds.width * ds.height > FULL_SAMPLE_PIXELS and not ds.overviews(
                self.band
            ):
                arr = self._block_sample()
            if arr is None or not self._valid_values(arr).size:
                f = max(1, max(ds.width, ds.height) // 1024)
                shape = (max(1, ds.height // f), max(1, ds.width // f))
                arr = ds.read(self.band, out_shape=shape, masked=False)
        except (RasterioError, OSError) as exc:
            raise InputRasterError(
                f"cannot read pixels of {self.source}: "
                f"{read_error(exc, self.source, ds.driver)}"
            ) from exc
        return self._valid_values(arr)

    @staticmethod
    def _usable(values: np.ndarray, units: str) -> np.ndarray:
        """The values σ0 is defined for: all in dB, the positive ones otherwise."""
        return values if units == "db" else values[values > 0]

    def _find_data(self, units: str) -> np.ndarray:
        """Valid values of the first part of the band that has some (none: empty).

        Called when the sample held none. A VRT whose band is nothing but its
        sources' rectangles (no data elsewhere) is searched in those rectangles
        (:meth:`_data_windows`), anything else block row by block row. Each read is
        at most :data:`SEARCH_PIXELS`; the search stops at the first one with a
        value that is valid in ``units``.

        Raises:
            InputRasterError: a read fails.
        """
        ds = self.ds
        windows = self._data_windows(units)
        logger.info(
            "%s: no valid value in a sample; searching %s for data",
            self.source,
            "the whole band" if windows is None else f"{len(windows)} VRT source(s)",
        )
        if windows is None:
            windows = [Window(0, 0, ds.width, ds.height)]
        bh, bw = (max(1, int(v)) for v in ds.block_shapes[self.band - 1])
        try:
            for win in windows:
                for part in _search_parts(win, bh, bw):
                    arr = ds.read(self.band, window=part)
                    found = self._usable(self._valid_values(arr), units)
                    if found.size:
                        return found
        except (RasterioError, OSError) as exc:
            raise InputRasterError(
                f"cannot read pixels of {self.source}: "
                f"{read_error(exc, self.source, ds.driver)}"
            ) from exc
        return np.empty(0)

    def _data_windows(self, units: str) -> list[Window] | None:
        """The windows of a VRT band where its data can be: its sources' rectangles.

        None when that is not known (not a VRT, a derived band, other kinds of
        source or sources without a destination rectangle) or when the band's
        pixels outside its sources (its no-data value, else 0) would be valid.
        """
        import xml.etree.ElementTree as ET

        ds = self.ds
        if ds.driver != "VRT":
            return None
        try:
            root = ET.fromstring(ds.tags(ns="xml:VRT").get("xml:VRT", ""))
        except ET.ParseError:
            return None
        band = next(
            (b for b in root.iter("VRTRasterBand") if b.get("band") == str(self.band)),
            None,
        )
        if band is None or band.get("subClass"):
            return None
        own = ds.nodatavals[self.band - 1]
        fill = 0.0 if own is None else float(own)
        empty_invalid = (self.nodata is not None and fill == self.nodata) or (
            units != "db" and fill <= 0
        )
        if not empty_invalid:
            return None
        windows = []
        for child in band:
            if not child.tag.endswith("Source"):
                continue
            rect = child.find("DstRect")
            if child.tag not in _VRT_SOURCES or rect is None:
                return None
            try:
                x, y, w, h = (
                    float(rect.get(k, "nan"))
                    for k in ("xOff", "yOff", "xSize", "ySize")
                )
            except ValueError:
                return None
            if not all(map(np.isfinite, (x, y, w, h))):
                return None
            c0, r0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
            c1 = min(ds.width, int(np.ceil(x + w)))
            r1 = min(ds.height, int(np.ceil(y + h)))
            if c1 > c0 and r1 > r0:
                windows.append(Window(c0, r0, c1 - c0, r1 - r0))
        return windows

    def _valid_values(self, arr: np.ndarray) -> np.ndarray:
        a = arr.astype(np.float64).ravel()
        keep = np.isfinite(a)
        if self.nodata is not None and not np.isnan(self.nodata):
            keep &= a != self.nodata
        return a[keep]

    def _block_sample(self) -> np.ndarray:
        """Values of whole blocks spread evenly over the band (about 2 M pixels)."""
        ds = self.ds
        bh, bw = (max(1, int(v)) for v in ds.block_shapes[self.band - 1])
        bh, bw = min(bh, ds.height), min(bw, ds.width)
        # whole blocks, and at least 64 rows of a strip-organised file
        wh = max(bh, min(64, ds.height))
        count = max(4, min(64, -(-SAMPLE_PIXELS // (wh * bw))))
        side = max(1, round(count**0.5)) if bw < ds.width else 1
        rows = _spread_starts(ds.height, wh, bh, count // side if side > 1 else count)
        cols = _spread_starts(ds.width, bw, bw, side)
        parts = [
            ds.read(self.band, window=Window(c, r, bw, wh)).ravel()
            for r in rows
            for c in cols
        ]
        return np.concatenate(parts)

    def _units(
        self, requested: str, dtype: np.dtype, sample: np.ndarray
    ) -> tuple[str, str]:
        if requested not in ("auto", *INPUT_UNITS):
            raise InputRasterError(
                f"--input-units {requested!r}: choose auto, {', '.join(INPUT_UNITS)}"
            )
        if requested != "auto":
            return requested, "--input-units"
        tag = self.ds.tags().get("UNITS") or self.ds.tags(self.band).get("UNITS")
        if tag and tag.strip().lower() in _UNIT_TAGS:
            return _UNIT_TAGS[tag.strip().lower()], "UNITS tag"
        if sample.size == 0:
            return ("dn" if dtype.kind in "ui" else "db"), "data type"
        return guess_units(sample, dtype), "guessed from the values"

    def _check_plausible(self, sample: np.ndarray, units: str) -> None:
        hint = "; if the units are wrong, set --input-units"
        if sample.size and units in ("dn", "linear") and (sample < 0).mean() > 0.01:
            what = "amplitude DN" if units == "dn" else "linear power"
            raise InputRasterError(
                f"{self.source}: negative values (min {sample.min():g}) cannot be "
                f"{what}{hint} db"
            )
        v = self._usable(sample, units)
        if v.size == 0:  # after the whole band was searched (_find_data)
            raise InputRasterError(
                f"{self.source}: no valid pixels (everything is no data"
                + (f" = {self.nodata:g}" if self.nodata is not None else "")
                + ")"
            )
        if units == "dn" and v.max() > 65535:
            raise InputRasterError(
                f"{self.source}: values up to {v.max():g} exceed the uint16 DN range"
                f"{hint}"
            )
        db = to_db(v, units, self.radiometry.calibration_factor_db)
        med = float(np.median(db))
        lo, hi = PLAUSIBLE_DB
        if units == "db" and float(np.mean(v >= 0)) > 0.95 and med < 10:
            raise InputRasterError(
                f"{self.source}: values are almost all in 0..{v.max():.3g}, which "
                f"looks like linear power rather than σ0 in dB{hint} linear"
            )
        if not lo <= med <= hi:
            raise InputRasterError(
                f"{self.source}: implausible σ0 for units {units!r} "
                f"(median {med:.1f} dB, expected {lo:g}..{hi:g} dB){hint}"
            )
        outside = float(np.mean((db < lo) | (db > hi)))
        if outside > MAX_OUTSIDE:
            raise InputRasterError(
                f"{self.source}: implausible σ0 for units {units!r}: "
                f"{_percent(outside)} of values outside {lo:g}..{hi:g} dB "
                f"(at most {MAX_OUTSIDE:.0%} may be){hint}"
            )

    # ------------------------------------------------------------------ reads
    def crop(
        self,
        window: Window,
        inside: Callable[[Window], np.ndarray | bool] | None = None,
    ) -> Scene:
        """This scene seen through a pixel window (an area of interest).

        The view shares the open file. Its :attr:`info` has the window's width,
        height and transform (the scene's grid shifted by whole pixels), and
        :meth:`read_strip` reads rows of the window.

        Args:
            window: whole-pixel window of the scene (inside it).
            inside: the area's mask: given a window in scene pixels, ``True``,
                ``False`` or a bool array of the pixels inside; pixels outside
                are no data.
        """
        col, row = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        if not (
            col >= 0
            and row >= 0
            and width >= 1
            and height >= 1
            and col + width <= self.ds.width
            and row + height <= self.ds.height
        ):
            raise ValueError(f"window {window} is not inside {self.source}")
        view = copy.copy(self)
        view._offset = (col, row)
        view._inside = inside
        view.inf_pixels = 0
        view.layover_pixels = view.shadow_pixels = 0
        view._counted = np.zeros(height, dtype=bool)
        view.info = dataclasses.replace(
            self.info,
            width=width,
            height=height,
            transform=self.ds.transform @ rasterio.Affine.translation(col, row),
        )
        return view

    def read_strip(self, row: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """σ0 [dB] (float32, NaN at no data) and validity (bool) of a full-width strip.

        Args:
            row: first row (of :attr:`info`'s grid: the window after :meth:`crop`).
            height: number of rows (clipped to the raster).
        """
        raw, valid = self.read_raw(row, height)
        x = raw.astype(np.float32, copy=False)
        db = (
            x.copy()
            if self.units == "db" and x is raw
            else to_db(x, self.units, self.cf)
        )
        db = db.astype(np.float32, copy=False)
        db[~valid] = np.nan
        return db, valid

    @property
    def block_rows(self) -> tuple[int, int]:
        """``(rows per block, row offset)`` of the band in the file.

        Reads that start and end at rows ``r`` with ``r + offset`` a multiple of the
        block height decode every block once.
        """
        return int(self.ds.block_shapes[self.band - 1][0]), self._offset[1]

    def read_raw(
        self,
        row: int,
        height: int,
        out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The file's values and validity (bool) of a full-width strip.

        Values keep the file's data type (integers for DN products: a quarter of the
        bytes of float32 to move), except float64, which becomes float32 (the
        pipeline's precision) before the checks below.

        Valid: not the no-data value, inside the mask and the area of interest,
        finite, positive unless the units are dB (so that
        :func:`~alosmap.radiometry.to_db` of every valid value is finite), and for
        a mosaic tile with a mask file, not no data, layover or shadow there (those
        are counted in :attr:`layover_pixels` and :attr:`shadow_pixels`).

        Args:
            row: first row (of :attr:`info`'s grid: the window after :meth:`crop`).
            height: number of rows (clipped to the raster).
            out: ``(values, validity)`` arrays of the rows' shape to read into
                instead of new ones (values of the file's data type, not float64);
                returned.

        Raises:
            InputRasterError: the rows cannot be read (truncated or corrupt file).
        """
        ds = self.ds
        col0, row0 = self._offset
        height = min(height, self.info.height - row)
        win = Window(col0, row0 + row, self.info.width, height)
        try:
            raw = ds.read(self.band, window=win, out=None if out is None else out[0])
            mask = ds.read_masks(self.band, window=win) if self.masked else None
        except (RasterioError, OSError) as exc:
            cause = read_error(
                exc, self.source, ds.driver, hint="truncated or corrupt file?"
            )
            raise InputRasterError(
                f"cannot read rows {row}..{row + height} of {self.source}: {cause}"
            ) from exc
        valid = np.empty(raw.shape, dtype=bool) if out is None else out[1]
        if self.nodata is None:
            valid[...] = True
        elif np.isnan(self.nodata):
            np.logical_not(np.isnan(raw, out=valid), out=valid)
        else:
            np.not_equal(raw, self.nodata, out=valid)
        if mask is not None:
            valid &= mask > 0
        if self._inside is not None:
            valid &= self._inside(win)
        if raw.dtype == np.float64:
            raw = raw.astype(np.float32)
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw)
            self.inf_pixels += int(np.isinf(raw[valid]).sum())
            valid &= finite
        # unsigned values other than the no-data 0 are positive already
        if self.units != "db" and not (raw.dtype.kind == "u" and self.nodata == 0):
            with np.errstate(invalid="ignore"):
                valid &= raw > 0
        if self._mask is not None:
            codes = self._mask.read(win)
            self._count_masked(row, valid, codes)
            valid &= ~self._mask.invalid(codes)
        return raw, valid

    def _count_masked(self, row: int, valid: np.ndarray, codes: np.ndarray) -> None:
        """Add the layover/shadow pixels with data of rows not counted yet."""
        assert self._mask is not None
        new = ~self._counted[row : row + len(valid)]
        if not new.any():
            return
        v, c = valid[new], codes[new]
        self.layover_pixels += int(
            np.count_nonzero(v & (c == self._mask.codes.layover))
        )
        self.shadow_pixels += int(np.count_nonzero(v & (c == self._mask.codes.shadow)))
        self._counted[row : row + len(valid)] = True

    def close(self) -> None:
        """Close the dataset (and a mosaic's mask file)."""
        self.ds.close()
        if self._mask is not None:
            self._mask.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
