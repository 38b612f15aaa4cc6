"""Writing prediction outputs: class maps, confidence and probabilities as COGs.

The prediction pipeline hands finished row strips to a :class:`MapWriter`, which
writes them into a hidden temporary tiled GeoTIFF beside the output and, once every
row is there, turns it into a Cloud-Optimized GeoTIFF (GDAL's COG driver) and moves
it into place with :func:`os.replace`. A file at the output path is therefore always
complete; an interrupted run leaves nothing behind (and an existing output that was
to be overwritten stays untouched until the new one is complete).

Output encoding
---------------

**LULC map** (``--task lulc``): band 1 ``class``, uint8 class codes 1-9
(Water, Built-up, Cropland, Grassland, Forest, Bare, Solar panel, Wetland,
Greenhouse), 0 = no data (GeoTIFF nodata tag 0).

**Water map** (``--task water``): band 1 ``class``, uint8 1 = water, 0 = not water,
255 = no data (nodata tag 255).

Both carry a GDAL colour table (the class colours; unused codes transparent) and the
class names, stored three ways because GeoTIFF has no internal place for GDAL
category names (GDAL 3.10 writes them to a PAM ``.aux.xml`` sidecar even from
``CreateCopy``):

* band 1 metadata items ``CLASS_<code>=<name>`` and the dataset metadata item
  ``CLASS_NAMES``, a JSON object ``{"<code>": "<name>"}`` (both inside the TIFF);
* a PAM sidecar ``<map>.tif.aux.xml`` with ``<CategoryNames>`` (index = pixel
  value, empty names for unused codes), so that ``gdalinfo`` lists the categories
  and QGIS labels the *Paletted/Unique values* legend. The sidecar is optional: the
  map is complete without it.

**Confidence** (``confidence=True``): band 2 ``confidence`` of the same file, uint8
maximum class probability in percent (0-100; at least 11 for valid LULC pixels,
since the largest of 9 probabilities is ≥ 1/9, and at least 50 for water). Where
band 1 is no data, band 2 holds the same no-data value (0 for LULC, 255 for water),
so the no-data value never collides with a valid confidence. The overviews of
band 2 are built with the same resampling as band 1 (nearest), so an overview pixel's
confidence belongs to that pixel's class.

**Probabilities** (``probabilities=True``): a separate file
``<stem>_probabilities.tif`` beside the map with K bands (LULC: 9, one per class in
code order; water: 1, the water probability), uint8 percent 0-100, 255 = no data,
band descriptions = class names, scale 0.01 (so ``value * scale`` is a probability),
overviews by AVERAGE. Percentages come from :func:`encode_probabilities` (round half
up).

Every file carries provenance metadata: ``ALOSMAP_VERSION``, ``ALOSMAP_MODEL``
(model name), ``ALOSMAP_SPEC`` (model spec JSON), ``ALOSMAP_PARAMS`` (JSON of the run
parameters), ``ALOSMAP_TASK``, ``ALOSMAP_PRODUCT`` (``map`` or ``probabilities``),
``SOURCE_SCENE`` (file name of the input scene) and any caller tags.

Georeferencing (CRS, transform, size) is the input scene's. A scene without a CRS
gives a map without one, with the scene's transform as rasterio reported it.

Layout: COG, 512 × 512 tiles, DEFLATE (level 6; predictor 2 for probabilities), internal
overviews down to one tile, resampled NEAREST for maps (never averaging class codes)
and AVERAGE for probabilities; BigTIFF when needed. DEFLATE rather than ZSTD
(which the bundled GDAL supports) because every GeoTIFF reader understands it.

Reading maps back (legend, class names) is :mod:`alosmap.io.maps`; checking the COG
layout is :func:`alosmap.io.cog.validate_cog`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from alosmap._fileio import atomic_write_bytes, check_overwrite, temp_path
from alosmap._version import __version__
from alosmap.classes import ClassInfo, colormap, get_task
from alosmap.errors import AlosmapError, OutputPathError
from alosmap.io.maps import sidecar_path
from alosmap.spec import ModelSpec

logger = logging.getLogger(__name__)

__all__ = [
    "BLOCKSIZE",
    "COMPRESS",
    "PROBABILITY_NODATA",
    "MapWriter",
    "OutputPathError",
    "encode_probabilities",
    "probabilities_path",
]

#: Tile size of the COGs (pixels).
BLOCKSIZE = 512
#: Compression of the COGs.
COMPRESS = "DEFLATE"
#: No-data value of the probabilities file.
PROBABILITY_NODATA = 255
#: Suffixes accepted for map files.
_SUFFIXES = (".tif", ".tiff")
#: Temporary tiled GeoTIFF the strips go into: fast compression, same tiling.
_TMP_PROFILE: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": BLOCKSIZE,
    "blockysize": BLOCKSIZE,
    "compress": "deflate",
    "zlevel": 1,
    "bigtiff": "if_safer",
}


def probabilities_path(path: str | os.PathLike[str]) -> Path:
    """Path of the probabilities file written beside map ``path``.

    ``out/scene_lulc.tif`` -> ``out/scene_lulc_probabilities.tif`` (the suffix of
    ``path`` is kept).
    """
    p = Path(path)
    return p.with_name(f"{p.stem}_probabilities{p.suffix}")


def encode_probabilities(p: np.ndarray) -> np.ndarray:
    """Encode probabilities as uint8 percent, rounding half up.

    ``floor(100 * p + 0.5)`` clipped to 0-100, so 0.125 -> 13 and 0.005 -> 1;
    NaN (no data) becomes :data:`PROBABILITY_NODATA` (255).

    Args:
        p: probabilities in [0, 1], any shape (e.g. ``[K, H, W]``, or the maximum
            over classes ``[H, W]`` for the confidence band).

    Returns:
        uint8 array of the same shape.
    """
    a = np.asarray(p, dtype=np.float32)
    nan = np.isnan(a)
    pct = np.floor(np.clip(np.where(nan, 0.0, a), 0.0, 1.0) * 100.0 + 0.5)
    out = pct.astype(np.uint8)
    out[nan] = PROBABILITY_NODATA
    return out


def _json_tag(value: Any) -> str:
    """A metadata value as text: strings as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _class_names(classes: tuple[ClassInfo, ...]) -> dict[int, str]:
    return {c.code: c.name for c in sorted(classes, key=lambda c: c.code)}


def _missing_ranges(written: np.ndarray) -> str:
    """Describe the unwritten rows as ``a-b, c`` ranges (first few only)."""
    rows = np.flatnonzero(~written)
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate([rows[:1], rows[breaks + 1]])
    ends = np.concatenate([rows[breaks], rows[-1:]])
    parts = [
        f"{s}" if s == e else f"{s}-{e}" for s, e in zip(starts, ends, strict=True)
    ]
    more = f" and {len(parts) - 5} more ranges" if len(parts) > 5 else ""
    return ", ".join(parts[:5]) + more


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _pam_xml(names: Mapping[int, str]) -> bytes:
    """PAM ``.aux.xml`` document with the category names of band 1."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for code in range(max(names) + 1 if names else 0):
        ET.SubElement(cats, "Category").text = names.get(code, "")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


class MapWriter:
    """Write a class map (and optional confidence and probabilities) strip by strip.

    Strips go into hidden temporary GeoTIFFs in the output directory
    (``.<name>.tmp-<random>``); :meth:`finalize` builds the COGs and moves them into
    place. Use it as a context manager: an exception (including
    ``KeyboardInterrupt``) inside the ``with`` block removes every temporary file,
    and leaving the block without :meth:`finalize` discards the output too::

        with MapWriter(out, width=w, height=h, crs=crs, transform=t, spec=spec) as mw:
            for row0, classes in strips:
                mw.write_rows(row0, classes)
            mw.finalize()

    Calls are serialised by a lock, so one writer thread may write while another
    thread calls :meth:`abort`.

    Args:
        path: output map (``.tif``/``.tiff``); its directory must exist.
        width: columns of the scene.
        height: rows of the scene.
        crs: CRS of the scene, or None for a scene without one.
        transform: affine transform of the scene.
        spec: the model's spec (task, classes).
        confidence: add band 2 with the confidence (percent).
        probabilities: also write ``<stem>_probabilities.tif``.
        tags: extra dataset metadata (non-string values are stored as JSON).
        overwrite: replace existing outputs (only once the new ones are complete).
        params: run parameters, stored as JSON in ``ALOSMAP_PARAMS``.
        source_scene: the input scene; its file name goes in ``SOURCE_SCENE``.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
        OutputPathError: the directory is missing or not writable, the path is a
            directory or its suffix is not ``.tif``/``.tiff``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        crs: Any,
        transform: Affine,
        spec: ModelSpec,
        confidence: bool = False,
        probabilities: bool = False,
        tags: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        params: Mapping[str, Any] | None = None,
        source_scene: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self.spec = spec
        self.confidence = bool(confidence)
        self.probabilities = bool(probabilities)
        self.nodata = get_task(spec.task).nodata
        self.num_probability_bands = spec.num_outputs
        if self.width < 1 or self.height < 1:
            raise ValueError(
                f"width and height must be >= 1, got {self.width} x {self.height}"
            )
        self._check_paths(overwrite)

        self._lock = threading.Lock()
        self._written = np.zeros(self.height, dtype=bool)
        self._state = "open"  # open -> finalized | aborted
        self._temps: list[Path] = []
        self._valid_codes = np.zeros(256, dtype=bool)
        self._valid_codes[[c.code for c in spec.classes]] = True
        self._valid_codes[self.nodata] = True

        names = _class_names(spec.classes)
        self._names = names
        base = {
            "ALOSMAP_VERSION": __version__,
            "ALOSMAP_MODEL": spec.name,
            "ALOSMAP_SPEC": spec.to_json(),
            "ALOSMAP_PARAMS": _json_tag(dict(params or {})),
            "ALOSMAP_TASK": spec.task,
            "SOURCE_SCENE": Path(source_scene).name if source_scene else "",
        }
        extra = {str(k): _json_tag(v) for k, v in (tags or {}).items()}
        self._map_tags = {
            **base,
            "ALOSMAP_PRODUCT": "map",
            "CLASS_NAMES": json.dumps({str(k): v for k, v in names.items()}),
            **extra,
        }
        self._prob_tags = {**base, "ALOSMAP_PRODUCT": "probabilities", **extra}

        georef = {"crs": crs, "transform": transform}
        self._ds: rasterio.io.DatasetWriter | None = None
        self._prob_ds: rasterio.io.DatasetWriter | None = None
        try:
            self._tmp_map = self._temp_path(self.path, "tmp")
            self._ds = self._open_temp(
                self._tmp_map,
                count=2 if self.confidence else 1,
                nodata=self.nodata,
                **georef,
            )
            self._describe_map(self._ds)
            if self.probabilities:
                self._tmp_prob = self._temp_path(self.prob_path, "tmp")
                self._prob_ds = self._open_temp(
                    self._tmp_prob,
                    count=self.num_probability_bands,
                    nodata=PROBABILITY_NODATA,
                    **georef,
                )
                self._describe_probabilities(self._prob_ds)
        except BaseException:
            self._cleanup()
            raise

    # -- set-up -----------------------------------------------------------------

    @property
    def prob_path(self) -> Path:
        """Path of the probabilities file (written only with ``probabilities=True``)."""
        return probabilities_path(self.path)

    def _outputs(self) -> list[Path]:
        return [self.path, *([self.prob_path] if self.probabilities else [])]

    def _check_paths(self, overwrite: bool) -> None:
        if self.path.suffix.lower() not in _SUFFIXES:
            raise OutputPathError(
                f"output {self.path} must end in .tif or .tiff (a GeoTIFF), "
                f"got {self.path.suffix or 'no suffix'!r}"
            )
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputPathError(
                f"output directory {parent} does not exist; create it first"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(
                f"output directory {parent} is not writable; choose another output"
            )
        for p in self._outputs():
            if p.is_dir():
                raise OutputPathError(f"output {p} is a directory, not a file")
        check_overwrite(self._outputs(), overwrite)

    def _temp_path(self, final: Path, kind: str) -> Path:
        """A fresh hidden name beside ``final``, remembered for clean-up."""
        while True:
            p = temp_path(final, kind)
            if not p.exists():
                self._temps.append(p)
                return p

    def _open_temp(
        self, path: Path, *, count: int, nodata: int, crs: Any, transform: Affine
    ) -> rasterio.io.DatasetWriter:
        profile = dict(
            _TMP_PROFILE,
            width=self.width,
            height=self.height,
            count=count,
            dtype="uint8",
            nodata=nodata,
            crs=crs,
            transform=transform,
        )
        with warnings.catch_warnings():
            if crs is None:
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                return rasterio.open(path, "w", **profile)
            except (RasterioError, OSError) as exc:
                raise OutputPathError(
                    f"cannot create a temporary GeoTIFF in {path.parent}: {exc}"
                ) from exc

    def _describe_map(self, ds: rasterio.io.DatasetWriter) -> None:
        ds.update_tags(**self._map_tags)
        ds.set_band_description(1, "class")
        ds.write_colormap(1, colormap(self.spec.classes))
        ds.update_tags(1, **{f"CLASS_{k}": v for k, v in self._names.items()})
        if self.confidence:
            ds.set_band_description(2, "confidence")
            ds.set_band_unit(2, "%")

    def _describe_probabilities(self, ds: rasterio.io.DatasetWriter) -> None:
        ds.update_tags(**self._prob_tags)
        if get_task(self.spec.task).binary:
            water = [c for c in self.spec.classes if c.code == 1]
            descriptions = [water[0].name if water else "Water"]
        else:
            descriptions = [c.name for c in sorted(self.spec.classes, key=_code)]
        for i, name in enumerate(descriptions, start=1):
            ds.set_band_description(i, name)
        ds.scales = (0.01,) * ds.count
        ds.offsets = (0.0,) * ds.count

    # -- writing ----------------------------------------------------------------

    def write_rows(
        self,
        row0: int,
        classes: np.ndarray,
        confidence: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
    ) -> None:
        """Write a full-width strip of rows starting at ``row0``.

        Each row must be written exactly once; strips may come in any order. Where
        ``classes`` is no data, the confidence and probabilities are written as no
        data whatever their values.

        Args:
            row0: first row of the strip.
            classes: uint8 ``[h, width]`` class codes or the map's no-data value.
            confidence: uint8 ``[h, width]`` percent; required iff ``confidence``.
            probabilities: uint8 ``[K, h, width]`` percent; required iff
                ``probabilities`` (see :func:`encode_probabilities`).

        Raises:
            ValueError: wrong shape, dtype, row range or class code, a missing or
                unexpected array, or rows written twice.
            AlosmapError: the writer was finalized or aborted.
        """
        if self._state != "open":
            raise AlosmapError(f"map writer for {self.path} is {self._state}")
        classes = np.asarray(classes)
        if classes.ndim != 2 or classes.shape[1] != self.width:
            raise ValueError(
                f"classes: expected shape [h, {self.width}], got {classes.shape}"
            )
        h = classes.shape[0]
        row0 = int(row0)
        if row0 < 0 or row0 + h > self.height:
            raise ValueError(
                f"rows {row0}..{row0 + h - 1} are outside the raster "
                f"(0..{self.height - 1})"
            )
        nodata_mask = self._check_classes(classes)
        conf = self._check_band(
            "confidence", confidence, self.confidence, (h, self.width)
        )
        prob = self._check_band(
            "probabilities",
            probabilities,
            self.probabilities,
            (self.num_probability_bands, h, self.width),
        )
        if h == 0:
            return
        if conf is not None:
            if np.any((conf > 100) & (conf != self.nodata)):
                raise ValueError(
                    "confidence: expected percent 0..100 (or the no-data value "
                    f"{self.nodata}), got values up to {int(conf.max())}"
                )
            conf = np.where(nodata_mask, np.uint8(self.nodata), conf)
        if prob is not None:
            prob = np.where(nodata_mask[None], np.uint8(PROBABILITY_NODATA), prob)
        window = Window(0, row0, self.width, h)
        with self._lock:
            if self._state != "open" or self._ds is None:
                raise AlosmapError(f"map writer for {self.path} is {self._state}")
            if self._written[row0 : row0 + h].any():
                raise ValueError(
                    f"rows {row0}..{row0 + h - 1}: some were already written "
                    "(each row must be written exactly once)"
                )
            self._ds.write(classes, 1, window=window)
            if conf is not None:
                self._ds.write(conf, 2, window=window)
            if prob is not None and self._prob_ds is not None:
                self._prob_ds.write(prob, window=window)
            self._written[row0 : row0 + h] = True

    def _check_classes(self, classes: np.ndarray) -> np.ndarray:
        if classes.dtype != np.uint8:
            raise ValueError(f"classes: expected uint8 codes, got {classes.dtype}")
        bad = ~self._valid_codes[classes]
        if bad.any():
            valid = np.flatnonzero(self._valid_codes).tolist()
            raise ValueError(
                f"classes: code {int(classes[bad][0])} is not a class of the "
                f"{self.spec.task} map; valid codes (incl. no data): {valid}"
            )
        return np.asarray(classes == self.nodata)

    @staticmethod
    def _check_band(
        name: str, array: np.ndarray | None, wanted: bool, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        if array is None:
            if wanted:
                raise ValueError(f"{name}: the writer was created with {name}=True")
            return None
        if not wanted:
            raise ValueError(f"{name}: given, but the writer was created without it")
        a = np.asarray(array)
        if a.shape != shape or a.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected uint8 of shape {list(shape)}, "
                f"got {a.dtype} of shape {list(a.shape)}"
            )
        return a

    # -- finishing --------------------------------------------------------------

    def finalize(self) -> Path:
        """Build the COGs, move them into place and write the category sidecar.

        Returns:
            The map path.

        Raises:
            AlosmapError: rows are missing (nothing is left on disk), or the writer
                was aborted.
        """
        with self._lock:
            if self._state == "finalized":
                return self.path
            if self._state != "open":
                raise AlosmapError(f"map writer for {self.path} was aborted")
            try:
                if not self._written.all():
                    raise AlosmapError(
                        f"cannot finalize {self.path}: rows "
                        f"{_missing_ranges(self._written)} were never written "
                        f"({int((~self._written).sum())} of {self.height} missing)"
                    )
                self._close_datasets()
                builds = [(self._tmp_map, self.path, "NEAREST", False)]
                if self.probabilities:
                    builds.append((self._tmp_prob, self.prob_path, "AVERAGE", True))
                cogs = [
                    (self._build_cog(src, final, rs, pred), final)
                    for src, final, rs, pred in builds
                ]
                # Replace the probabilities first: the map appearing marks the
                # end of the run.
                for cog, final in reversed(cogs):
                    os.replace(cog, final)
                    self._temps.remove(cog)
                    if final != self.path:  # stale statistics of an old file
                        _unlink(sidecar_path(final))
                self._state = "finalized"
                self._write_sidecar()
            except BaseException:
                if self._state != "finalized":
                    self._state = "aborted"
                self._cleanup()
                raise
            self._cleanup()
        logger.info("wrote %s", self.path)
        return self.path

    def _build_cog(self, src: Path, final: Path, resampling: str, pred: bool) -> Path:
        dst = self._temp_path(final, "cog")
        options = {
            "COMPRESS": COMPRESS,
            "LEVEL": 6,
            "PREDICTOR": "YES" if pred else "NO",
            "BLOCKSIZE": BLOCKSIZE,
            "OVERVIEWS": "AUTO",
            "OVERVIEW_RESAMPLING": resampling,
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": "ALL_CPUS",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                rasterio.shutil.copy(src, dst, driver="COG", **options)
            except (RasterioError, OSError) as exc:
                raise AlosmapError(f"cannot write {final}: {exc}") from exc
        if self.confidence and final == self.path:
            _unmark_alpha(dst)
        return dst

    def _write_sidecar(self) -> None:
        """Atomically write ``<map>.aux.xml`` with the category names."""
        final = sidecar_path(self.path)
        try:
            atomic_write_bytes(final, _pam_xml(self._names))
        except OSError as exc:  # the map is complete without it
            logger.warning("could not write %s: %s", final, exc)

    def _close_datasets(self) -> None:
        for ds in (self._ds, self._prob_ds):
            if ds is not None and not ds.closed:
                ds.close()
        self._ds = self._prob_ds = None

    def _cleanup(self) -> None:
        """Close datasets and remove every temporary file (and GDAL's by-products)."""
        with contextlib.suppress(Exception):
            self._close_datasets()
        for tmp in self._temps:
            _unlink(tmp)
            # GDAL may leave "<tmp>.aux.xml" or the COG driver's "<tmp>.ovr.tmp".
            for extra in tmp.parent.glob(f"{tmp.name}.*"):
                _unlink(extra)
        self._temps.clear()

    def abort(self) -> None:
        """Discard the output: remove every temporary file. Idempotent.

        A finalized output is kept.
        """
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
            self._cleanup()

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._state == "open":
            logger.warning("%s: leaving the writer without finalize()", self.path)
        self.abort()


_EXTRASAMPLES = 338
_SHORT = 3


def _unmark_alpha(path: Path) -> None:
    """Mark the extra sample of every image in a TIFF as unspecified, not alpha.

    GDAL's GTiff ``CreateCopy`` (which the COG driver uses) writes band 2 of a
    paletted two-band image as an alpha channel (``ExtraSamples`` = 2), whatever
    the source says, and GIS software would then draw the confidence band as
    transparency. The one-value ``ExtraSamples`` entry is stored inside each image
    file directory, so it is rewritten in place (0 = unspecified): no byte moves and
    the COG layout stays valid.
    """
    with open(path, "r+b") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None:
            raise AlosmapError(f"{path} is not a TIFF file")
        (version,) = struct.unpack(order + "H", head[2:4])
        # Classic TIFF: u32 offsets, u16 entry count, 12-byte entries
        # (tag u16, type u16, count u32, value u32); BigTIFF: u64, u64, 20 bytes.
        big = version == 43
        off, n_fmt, n_size, entry, value_pos = (
            ("Q", "Q", 8, 20, 12) if big else ("I", "H", 2, 12, 8)
        )
        off_size = struct.calcsize(off)
        (ifd,) = struct.unpack(order + off, head[8:16] if big else head[4:8])
        seen: set[int] = set()
        while ifd and ifd not in seen and len(seen) < 1024:
            seen.add(ifd)
            f.seek(ifd)
            (n,) = struct.unpack(order + n_fmt, f.read(n_size))
            table = f.read(n * entry)
            for i in range(n):
                e = table[i * entry : (i + 1) * entry]
                tag, typ = struct.unpack(order + "HH", e[:4])
                (count,) = struct.unpack(order + off, e[4:value_pos])
                value = struct.unpack(order + "H", e[value_pos : value_pos + 2])[0]
                if tag == _EXTRASAMPLES and typ == _SHORT and count == 1 and value:
                    f.seek(ifd + n_size + i * entry + value_pos)
                    f.write(struct.pack(order + "H", 0))
            f.seek(ifd + n_size + n * entry)
            (ifd,) = struct.unpack(order + off, f.read(off_size))


def _code(c: ClassInfo) -> int:
    return c.code
