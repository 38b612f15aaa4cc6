"""Writing prediction outputs: class maps, confidence and probabilities as COGs.

The prediction pipeline hands finished row strips to a :class:`MapWriter`, which
writes them into a hidden temporary tiled GeoTIFF beside the output and, once every
row is there, turns it into a Cloud-Optimized GeoTIFF (GDAL's COG driver) and moves
it into place with :func:`os.replace`. A file at the output path is therefore always
complete; an interrupted run leaves nothing behind (and an existing output that was
to be overwritten stays untouched until the new one is complete). Without
``overwrite`` no file is replaced: one that appeared meanwhile (another run writing
the same output) stops the move and nothing of this run stays
(:class:`~alosmap.errors.OutputExistsError`).

Output encoding
---------------

A map is band 1 ``class``, uint8 class codes of the model's legend
(``spec.legend``: codes, names, colours and the no-data code, which is also the
GeoTIFF nodata tag). The bundled tasks' legends:

**LULC map** (``--task lulc``): codes 1-9 (Water, Built-up, Cropland, Grassland,
Forest, Bare, Solar panel, Wetland, Greenhouse), 0 = no data.

**Water map** (``--task water``): 1 = water, 0 = not water, 255 = no data.

A model trained with a user's legend writes that legend's codes (say 10/20/30 with
0 = no data, or a binary flood legend 0/1 with 255 = no data), names and colours.

Every map carries a GDAL colour table (the class colours), the class names and a
QGIS style, written beside the map by :mod:`alosmap.io.style`:

* band 1 metadata items ``CLASS_<code>=<name>`` and the dataset metadata item
  ``CLASS_NAMES``, a JSON object ``{"<code>": "<name>"}`` (both inside the TIFF);
* a PAM sidecar ``<map>.tif.aux.xml`` with ``<CategoryNames>`` (index = pixel
  value, empty names for unused codes) and an RGBA colour table in which only the
  legend's codes are opaque (a GeoTIFF colour table has no alpha: GDAL reads the
  TIFF's own table as opaque except the no-data entry, and prefers the sidecar's);
* ``<map stem>.qml``, a QGIS style with a paletted renderer listing exactly the
  legend's codes, names and colours, which QGIS loads by itself.

**Confidence** (``confidence=True``): a separate file ``<stem>_confidence.tif``
beside the map, one band ``confidence``, uint8 maximum class probability in percent
(0-100; at least 11 for valid LULC pixels, since the largest of 9 probabilities is
≥ 1/9, and at least 50 for a binary legend), no data :data:`CONFIDENCE_NODATA`
(255) wherever the map is no data, overviews NEAREST (an overview pixel's
confidence belongs to that pixel's class), a viridis ``<stem>_confidence.qml``.
Maps written before this layout carried the confidence as band 2 of the map;
readers accept those for one release.

**Probabilities** (``probabilities=True``): a separate file
``<stem>_probabilities.tif`` beside the map with K bands (one per class in the
legend's order, the model's outputs: code order for LULC's 9; a binary legend: 1,
the probability of its positive class ``legend.positive``, e.g. water), uint8
percent 0-100, 255 = no data, band descriptions = class names, scale 0.01 (so
``value * scale`` is a probability), overviews by AVERAGE, a viridis ``.qml`` of
band 1 over 0-1 (QGIS shows the scaled values). Percentages come from
:func:`encode_probabilities` (round half up).

Every file carries provenance metadata: ``ALOSMAP_VERSION``, ``ALOSMAP_MODEL``
(model name), ``ALOSMAP_SPEC`` (model spec JSON), ``ALOSMAP_PARAMS`` (JSON of the run
parameters), ``ALOSMAP_TASK``, ``ALOSMAP_PRODUCT`` (``map``, ``confidence`` or
``probabilities``), ``SOURCE_SCENE`` (file name of the input scene), ``SOURCE_INPUT``
(the input as given: a path, GDAL virtual path or URL in full, with any password or
signature in it replaced by ``REDACTED``: :func:`input_as_given`) and any caller tags
(the pipeline adds ``ALOSMAP_MODEL_FILE`` and ``ALOSMAP_MODEL_SHA256``, the model
file's name and SHA-256). :func:`provenance` reads them back.

Georeferencing (CRS, transform, size) is the input scene's. A scene without a CRS
gives a map without one, with the scene's transform as rasterio reported it.

Layout: COG, 512 × 512 tiles, DEFLATE, internal overviews down to one tile, resampled
NEAREST for maps (never averaging class codes) and AVERAGE for probabilities; BigTIFF
when needed. Maps: DEFLATE level 6, no predictor (small files: class maps compress
20-50×). Confidence and probabilities: level 3 with the horizontal predictor
(:data:`PERCENT_LEVEL`): their COG build was most of ``predict --probabilities``'s
time at level 6; level 3 builds 2-3× faster, and the predictor keeps the files close
to level 6's size (measured in :data:`PERCENT_LEVEL`'s comment). DEFLATE rather than
ZSTD (which the bundled GDAL supports) because every GeoTIFF reader understands it.
Creation options given by the user (``--co``; :mod:`alosmap.io.cog_options`) override
these for every file; with another ``COMPRESS``, GDAL's default level of that codec.

Safety: an output that is one of ``inputs`` is refused whatever ``overwrite`` says;
the leftovers of a killed run (hidden temporaries of these outputs, owned by no live
process) are removed when a writer opens; a full disk raises
:class:`~alosmap.errors.DiskFullError` ("disk full while writing ...", naming the
directory, its free space and what the outputs need) and leaves nothing behind.

Reading maps back (legend, class names) is :mod:`alosmap.io.maps`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from alosmap._fileio import (
    LOW_SPACE,
    appeared_meanwhile,
    check_not_input,
    check_output_place,
    check_overwrite,
    disk_full_error,
    make_readable,
    remove_stale_temps,
    rename_no_replace,
    temp_path,
    write_failed_for_space,
)
from alosmap._version import __version__
from alosmap.classes import ClassInfo, colormap
from alosmap.errors import AlosmapError, OutputPathError
from alosmap.io.cog_options import current_creation_options, parse_creation_options
from alosmap.io.maps import sidecar_path
from alosmap.io.style import class_qml, pam_xml, percent_qml, style_path
from alosmap.spec import ModelSpec

logger = logging.getLogger(__name__)

__all__ = [
    "BLOCKSIZE",
    "COMPRESS",
    "CONFIDENCE_NODATA",
    "MAP_LEVEL",
    "PERCENT_LEVEL",
    "PROBABILITY_NODATA",
    "PROBABILITY_SCALE",
    "PROVENANCE_TAGS",
    "MapWriter",
    "OutputPathError",
    "cog_build_options",
    "confidence_path",
    "encode_probabilities",
    "input_as_given",
    "output_paths",
    "probabilities_path",
    "provenance",
    "source_name",
]

#: Tile size of the COGs (pixels).
BLOCKSIZE = 512
#: Compression of the COGs.
COMPRESS = "DEFLATE"
#: DEFLATE level of the class maps (GDAL's default level). Chosen from the table of
#: ``scripts/compression_table.py`` (docs/creation-options.md): level 1 makes class
#: maps 29-59 % larger, level 9 costs 7-10× the CPU for at most 7 % less.
MAP_LEVEL = 6
#: DEFLATE level of the confidence and probabilities (with the horizontal predictor).
#: Measured with rasterio's GDAL on one core (``taskset -c 0``), COG with overviews:
#: the demo LULC model's outputs on a 1280² sample scene, probabilities 0.66 s and
#: 1.75 MB at level 6 vs 0.34 s and 1.99 MB at level 3, confidence (level 6 without
#: predictor before) 0.090 s and 460 kB vs 0.062 s and 422 kB; the zero-cost model's
#: smooth fields on 6000², probabilities 19.7 s (91 MB) vs 7.0 s (101 MB).
PERCENT_LEVEL = 3
#: No-data value of the probabilities file.
PROBABILITY_NODATA = 255
#: Scale of the probabilities bands (GDAL ``scale``: ``value * scale`` is a probability;
#: QGIS applies it before rendering, so their style's ramp runs over 0-1).
PROBABILITY_SCALE = 0.01
#: No-data value of the confidence file.
CONFIDENCE_NODATA = 255
#: Bytes counted at once (:func:`count_bytes`): bounds its temporaries (4 MB).
_COUNT_CHUNK = 1 << 20
#: Suffixes accepted for map files.
_SUFFIXES = (".tif", ".tiff")
#: Free bytes under which a full disk is assumed after writing without an error
#: (libtiff may fail to flush a tile without an error reaching Python).
_NO_SPACE = 64 << 10
#: GDAL configuration of the COG build. ``COG_TMP_COMPRESSION=NONE``: the overviews
#: the COG driver computes into a temporary file (a third of the map's pixels, then
#: copied into the COG) are not compressed there with ZSTD (its default level) only
#: to be decoded again. The COGs are the same bytes; the build took 15-27 % less CPU
#: for a real 6000² JAXA class map and 19-24 % less for nine probability bands
#: (one core, ``taskset -c 0``, 3-4 alternating rounds), for that file's size in
#: temporary disk: a third of a byte per pixel and band, deleted with the build.
_COG_BUILD_CONFIG = {"COG_TMP_COMPRESSION": "NONE"}
#: Temporary tiled GeoTIFF the strips go into: fast compression, same tiling.
_TMP_PROFILE: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": BLOCKSIZE,
    "blockysize": BLOCKSIZE,
    "bigtiff": "if_safer",
}
#: Compression of the temporary GeoTIFFs (never a user's file): ZSTD level 1 packs
#: maps as tightly as DEFLATE level 1 at a quarter of the time, and the COG build
#: decodes it faster (measured: 0.04 s vs 0.13 s to write a 6000² map, on one
#: core); DEFLATE where this GDAL has no ZSTD.
_TMP_COMPRESSION: tuple[dict[str, Any], ...] = (
    {"compress": "zstd", "zstd_level": 1},
    {"compress": "deflate", "zlevel": 1},
)


def cog_build_options(
    level: int,
    predictor: bool,
    resampling: str,
    creation: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The COG driver's options for one file: alosmap's layout, then ``creation``.

    Args:
        level: DEFLATE level (dropped when ``creation`` names another codec: GDAL's
            default level of that codec).
        predictor: the horizontal predictor.
        resampling: overview resampling (``NEAREST``, ``AVERAGE``).
        creation: checked user options (:mod:`alosmap.io.cog_options`), which win.
    """
    creation = dict(creation or {})
    options: dict[str, Any] = {
        "COMPRESS": COMPRESS,
        "LEVEL": level,
        "PREDICTOR": "YES" if predictor else "NO",
        "BLOCKSIZE": BLOCKSIZE,
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": resampling,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    if creation.get("COMPRESS", COMPRESS) != COMPRESS:
        del options["LEVEL"]
    return {**options, **creation}


def probabilities_path(path: str | os.PathLike[str]) -> Path:
    """Path of the probabilities file written beside map ``path``.

    ``out/scene_lulc.tif`` -> ``out/scene_lulc_probabilities.tif`` (the suffix of
    ``path`` is kept).
    """
    p = Path(path)
    return p.with_name(f"{p.stem}_probabilities{p.suffix}")


def confidence_path(path: str | os.PathLike[str]) -> Path:
    """Path of the confidence file written beside map ``path``.

    ``out/scene_lulc.tif`` -> ``out/scene_lulc_confidence.tif``.
    """
    p = Path(path)
    return p.with_name(f"{p.stem}_confidence{p.suffix}")


def output_paths(
    path: str | os.PathLike[str], *, confidence: bool, probabilities: bool
) -> list[Path]:
    """The data files a :class:`MapWriter` for ``path`` writes (map first)."""
    p = Path(path)
    return [
        p,
        *([confidence_path(p)] if confidence else []),
        *([probabilities_path(p)] if probabilities else []),
    ]


def encode_probabilities(p: np.ndarray) -> np.ndarray:
    """Encode probabilities as uint8 percent, rounding half up.

    ``floor(100 * p + 0.5)`` clipped to 0-100, so 0.125 -> 13 and 0.005 -> 1;
    NaN (no data) becomes :data:`PROBABILITY_NODATA` (255).

    Args:
        p: probabilities in [0, 1], any shape (e.g. ``[K, H, W]``, or the maximum
            over classes ``[H, W]`` for the confidence).

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


#: Provenance tags of a map, in the order :func:`provenance` lists them (JSON ones:
#: :data:`_JSON_TAGS`).
PROVENANCE_TAGS = (
    "ALOSMAP_VERSION",
    "ALOSMAP_PRODUCT",
    "ALOSMAP_TASK",
    "ALOSMAP_MODEL",
    "ALOSMAP_MODEL_FILE",
    "ALOSMAP_MODEL_SHA256",
    "SOURCE_INPUT",
    "SOURCE_SCENE",
    "ALOSMAP_PARAMS",
)
_JSON_TAGS = ("ALOSMAP_PARAMS",)
#: URL query parameters whose values are secrets (presigned URLs, API keys).
_SECRET_QUERY = re.compile(
    r"(?i)(^|[?&])([^=&]*(?:signature|token|secret|password|credential|key|sig)"
    r"[^=&]*)=([^&#]*)"
)
#: The password of ``scheme://user:password@host``.
_URL_PASSWORD = re.compile(r"(://[^/@:?#]*):([^/@?#]*)@")


def input_as_given(source: str | os.PathLike[str]) -> str:
    """The input as the user gave it, for ``SOURCE_INPUT``: secrets left out.

    A local path, a GDAL virtual path or a URL is kept in full (``https://host/
    dir/scene.tif``, ``/vsizip/archive.zip/scene.tif``), but a password in a URL
    (``https://user:pw@host``) and the values of query parameters that hold
    secrets (a presigned URL's ``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token``; ``token``, ``key``, ``sig`` ...) become ``REDACTED``:
    map files are shared, credentials must not travel with them.
    """
    text = os.fspath(source)
    text = _URL_PASSWORD.sub(r"\1:REDACTED@", text)
    return _SECRET_QUERY.sub(r"\1\2=REDACTED", text)


def source_name(source: str | os.PathLike[str]) -> str:
    """The file name of an input: of a URL's path (without its query), else its own."""
    text = os.fspath(source)
    if "://" in text:
        text = re.split(r"[?#]", text, maxsplit=1)[0]
    return Path(text).name


def provenance(tags: Mapping[str, str]) -> dict[str, Any]:
    """The provenance tags of a map (dataset tags), JSON ones decoded.

    Only the tags present, in :data:`PROVENANCE_TAGS` order; an undecodable JSON
    tag is given as its text.
    """
    out: dict[str, Any] = {}
    for key in PROVENANCE_TAGS:
        if key not in tags:
            continue
        value: Any = tags[key]
        if key in _JSON_TAGS:
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[key] = value
    return out


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


def count_bytes(a: np.ndarray) -> np.ndarray:
    """Occurrences of each value 0..255 in a uint8 array (``[256]`` int64).

    NumPy counts through an int64 copy of its input: the bytes are counted in
    pairs (as uint16, 65536 bins, then folded), half the copies, half the time.
    """
    flat = a.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    for i in range(0, flat.size, _COUNT_CHUNK):
        part = flat[i : i + _COUNT_CHUNK]
        if part.size % 2:
            counts[part[-1]] += 1
            part = part[:-1]
        pairs = np.bincount(part.view(np.uint16), minlength=1 << 16)
        pairs = pairs.reshape(256, 256)
        counts += pairs.sum(axis=0)  # one byte of each pair
        counts += pairs.sum(axis=1)  # the other
    return counts


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass
class _Output:
    """One file of the writer: final path, temporary GeoTIFF, how to build its COG."""

    final: Path
    tmp: Path
    ds: Any
    resampling: str
    level: int
    predictor: bool


class _BlockRows:
    """Strips gathered into whole rows of the temporary files' blocks.

    GDAL keeps a partly written block in its block cache until the rest of it
    arrives; when the cache cannot hold a row of blocks (a wide scene with
    probabilities: 9 bands × 512 rows × width), it writes the partial block,
    then reads it back, decompresses and compresses it again for the next strip.
    Handed over whole, each block is compressed and written once, whatever the
    cache, which then needs to hold no written rows at all.

    Each row must come once (:class:`MapWriter` checks it), so a count of the rows
    received tells when a block row is complete.

    Args:
        height: rows of the raster.
        block: rows of a block.
    """

    def __init__(self, height: int, block: int) -> None:
        self.height, self.block = height, block
        #: first row of an incomplete block row → one buffer per array
        self._open: dict[int, list[np.ndarray | None]] = {}
        #: first row of an incomplete block row → rows received
        self._rows: dict[int, int] = {}

    def add(
        self, row0: int, arrays: list[np.ndarray | None]
    ) -> Iterator[tuple[int, list[np.ndarray | None]]]:
        """``(first row, arrays)`` of every block row that ``arrays`` completes.

        ``arrays`` hold rows ``row0 ..`` on their second-to-last axis (None: an
        output not written); a block row the strip covers whole is passed on as
        views, the others are copied until their last rows arrive.
        """
        h = next(a for a in arrays if a is not None).shape[-2]
        for b0 in range(row0 - row0 % self.block, row0 + h, self.block):
            b1 = min(b0 + self.block, self.height)
            s0, s1 = max(row0, b0), min(row0 + h, b1)
            part = [
                None if a is None else a[..., s0 - row0 : s1 - row0, :] for a in arrays
            ]
            if (s0, s1) == (b0, b1):
                yield b0, part
                continue
            bufs = self._open.get(b0) or self._new(b0, b1 - b0, part)
            for buf, src in zip(bufs, part, strict=True):
                if buf is not None and src is not None:
                    buf[..., s0 - b0 : s1 - b0, :] = src
            self._rows[b0] += s1 - s0
            if self._rows[b0] == b1 - b0:
                del self._open[b0], self._rows[b0]
                yield b0, bufs

    def _new(
        self, b0: int, rows: int, part: list[np.ndarray | None]
    ) -> list[np.ndarray | None]:
        bufs = [
            None if a is None else np.empty((*a.shape[:-2], rows, a.shape[-1]), a.dtype)
            for a in part
        ]
        self._open[b0], self._rows[b0] = bufs, 0
        return bufs


class MapWriter:
    """Write a class map (and optional confidence and probabilities) strip by strip.

    Strips go into hidden temporary GeoTIFFs in the output directory
    (``.<name>.tmp-<pid>-<random>``); :meth:`finalize` builds the COGs, writes the
    styles and moves the files into place. Use it as a context manager: an exception
    (including ``KeyboardInterrupt``) inside the ``with`` block removes every
    temporary file, and leaving the block without :meth:`finalize` discards the
    output too::

        with MapWriter(out, width=w, height=h, crs=crs, transform=t, spec=spec) as mw:
            for row0, classes in strips:
                mw.write_rows(row0, classes)
            mw.finalize()

    Calls are serialised by a lock, so one writer thread may write while another
    thread calls :meth:`abort`. Strips reach GDAL as whole rows of the files'
    512-row blocks: the rows of a block row still incomplete are held here (uint8,
    one or two block rows when strips come in order).

    Args:
        path: output map (``.tif``/``.tiff``); its directory must exist.
        width: columns of the scene.
        height: rows of the scene.
        crs: CRS of the scene, or None for a scene without one.
        transform: affine transform of the scene.
        spec: the model's spec (its legend: codes, names, colours, no data).
        confidence: also write ``<stem>_confidence.tif`` (percent).
        probabilities: also write ``<stem>_probabilities.tif``.
        tags: extra dataset metadata (non-string values are stored as JSON).
        overwrite: replace existing outputs (only once the new ones are complete);
            without it no file is replaced, not even one that appears meanwhile.
        params: run parameters, stored as JSON in ``ALOSMAP_PARAMS``.
        source_scene: the input scene as given (path, GDAL virtual path or URL):
            its file name goes in ``SOURCE_SCENE``, the whole of it in
            ``SOURCE_INPUT`` (:func:`input_as_given`).
        inputs: files the outputs must not be (the scene); refused whatever
            ``overwrite`` says.
        creation_options: COG creation options over the defaults, for every file
            (:func:`~alosmap.io.cog_options.parse_creation_options`); None: those
            of the enclosing :func:`~alosmap.io.cog_options.creation_options`.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
        OutputPathError: an output is an input; the directory is missing or not
            writable, the path is a directory or its suffix is not ``.tif``/``.tiff``;
            the disk is full (:class:`~alosmap.errors.DiskFullError`; nothing is
            left behind).
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
        inputs: Iterable[str | os.PathLike[str]] = (),
        creation_options: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self.spec = spec
        self.confidence = bool(confidence)
        self.probabilities = bool(probabilities)
        self.nodata = spec.legend.nodata
        self.num_probability_bands = spec.num_outputs
        if self.width < 1 or self.height < 1:
            raise ValueError(
                f"width and height must be >= 1, got {self.width} x {self.height}"
            )
        self._check_paths(overwrite, list(inputs))
        self._overwrite = bool(overwrite)
        finals = [
            f for p in self._outputs() for f in (p, sidecar_path(p), style_path(p))
        ]
        #: sidecars already there (a deleted map's): replaced even without overwrite
        self._old_sidecars = {f for f in finals if f.exists()}
        for f in remove_stale_temps(*finals):
            logger.info("removed leftover %s", f)

        self._lock = threading.Lock()
        self._written = np.zeros(self.height, dtype=bool)
        self._blocks = _BlockRows(self.height, BLOCKSIZE)
        self._state = "open"  # open -> finalized | aborted
        self._temps: list[Path] = []
        self._valid_codes = np.zeros(256, dtype=bool)
        self._valid_codes[[c.code for c in spec.classes]] = True
        self._valid_codes[self.nodata] = True
        self._pixels = np.zeros(256, dtype=np.int64)  # per code, rows written
        self._names = _class_names(spec.classes)
        self._tags = self._make_tags(spec, params, source_scene, tags)
        self._creation = (
            current_creation_options()
            if creation_options is None
            else parse_creation_options(creation_options)
        )
        self._files: dict[str, _Output] = {}
        try:
            self._open_all(crs, transform)
        except BaseException:
            self._cleanup()
            raise

    # -- set-up -----------------------------------------------------------------

    @property
    def prob_path(self) -> Path:
        """Path of the probabilities file (written only with ``probabilities=True``)."""
        return probabilities_path(self.path)

    @property
    def conf_path(self) -> Path:
        """Path of the confidence file (written only with ``confidence=True``)."""
        return confidence_path(self.path)

    def _outputs(self) -> list[Path]:
        return output_paths(
            self.path, confidence=self.confidence, probabilities=self.probabilities
        )

    def _make_tags(
        self,
        spec: ModelSpec,
        params: Mapping[str, Any] | None,
        source_scene: str | os.PathLike[str] | None,
        tags: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, str]]:
        """Dataset metadata of each product (``map``, ``confidence``, ...)."""
        base = {
            "ALOSMAP_VERSION": __version__,
            "ALOSMAP_MODEL": spec.name,
            "ALOSMAP_SPEC": spec.to_json(),
            "ALOSMAP_PARAMS": _json_tag(dict(params or {})),
            "ALOSMAP_TASK": spec.task,
            "SOURCE_SCENE": source_name(source_scene) if source_scene else "",
            **({"SOURCE_INPUT": input_as_given(source_scene)} if source_scene else {}),
        }
        extra = {str(k): _json_tag(v) for k, v in (tags or {}).items()}
        names = json.dumps({str(k): v for k, v in self._names.items()})
        return {
            "map": {**base, "ALOSMAP_PRODUCT": "map", "CLASS_NAMES": names, **extra},
            "confidence": {**base, **extra, "ALOSMAP_PRODUCT": "confidence"},
            "probabilities": {**base, **extra, "ALOSMAP_PRODUCT": "probabilities"},
        }

    def _check_paths(
        self, overwrite: bool, inputs: list[str | os.PathLike[str]]
    ) -> None:
        if self.path.suffix.lower() not in _SUFFIXES:
            raise OutputPathError(
                f"output {self.path} must end in .tif or .tiff (a GeoTIFF), "
                f"got {self.path.suffix or 'no suffix'!r}"
            )
        check_not_input(self._outputs(), inputs)
        check_output_place(self.path)
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

    def _open_all(self, crs: Any, transform: Affine) -> None:
        """Open the temporary GeoTIFF of every output and describe it."""
        georef = {"crs": crs, "transform": transform}
        # (kind, final path, bands, no data, overviews, DEFLATE level, predictor)
        wanted = [
            ("map", self.path, 1, self.nodata, "NEAREST", MAP_LEVEL, False),
            (
                "confidence",
                self.conf_path,
                1,
                CONFIDENCE_NODATA,
                "NEAREST",
                PERCENT_LEVEL,
                True,
            ),
            (
                "probabilities",
                self.prob_path,
                self.num_probability_bands,
                PROBABILITY_NODATA,
                "AVERAGE",
                PERCENT_LEVEL,
                True,
            ),
        ]
        for kind, final, count, nodata, resampling, level, pred in wanted:
            if final not in self._outputs():
                continue
            tmp = self._temp_path(final, "tmp")
            ds = self._open_temp(tmp, count=count, nodata=nodata, **georef)
            self._files[kind] = _Output(final, tmp, ds, resampling, level, pred)
            ds.update_tags(**self._tags[kind])
        self._describe_map(self._files["map"].ds)
        if "confidence" in self._files:
            ds = self._files["confidence"].ds
            ds.set_band_description(1, "confidence")
            ds.set_band_unit(1, "%")
        if "probabilities" in self._files:
            self._describe_probabilities(self._files["probabilities"].ds)

    def _open_temp(
        self, path: Path, *, count: int, nodata: int, crs: Any, transform: Affine
    ) -> rasterio.io.DatasetWriter:
        profile = dict(
            _TMP_PROFILE,
            # band by band: each block of a band compresses on its own (3× less CPU
            # than interleaved pixels for the probabilities, and a faster COG build;
            # the COG's layout is its own)
            interleave="band",
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
            for i, compression in enumerate(_TMP_COMPRESSION):
                try:
                    return rasterio.open(path, "w", **profile, **compression)
                except (RasterioError, OSError) as exc:
                    self._raise_if_disk_full(exc, path)
                    if i + 1 < len(_TMP_COMPRESSION) and "zstd" in str(exc).lower():
                        continue  # a GDAL built without ZSTD
                    raise OutputPathError(
                        f"cannot create a temporary GeoTIFF in {path.parent}: {exc}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe_map(self, ds: rasterio.io.DatasetWriter) -> None:
        ds.set_band_description(1, "class")
        ds.write_colormap(1, colormap(self.spec.classes))
        ds.update_tags(1, **{f"CLASS_{k}": v for k, v in self._names.items()})

    def _describe_probabilities(self, ds: rasterio.io.DatasetWriter) -> None:
        legend = self.spec.legend
        if legend.binary:  # one band: the probability of the positive class
            descriptions = [legend.positive.name]
        else:
            descriptions = [c.name for c in self.spec.classes]  # model order
        for i, name in enumerate(descriptions, start=1):
            ds.set_band_description(i, name)
        ds.scales = (PROBABILITY_SCALE,) * ds.count
        ds.offsets = (0.0,) * ds.count

    def _raise_if_disk_full(
        self, exc: BaseException | None, path: Path, low: int = LOW_SPACE
    ) -> None:
        """Turn a write error for want of space into one line.

        Raises:
            DiskFullError: "disk full while writing ..." when the disk is full,
                naming the directory, its free space and what the outputs need.
        """
        if write_failed_for_space(exc, path.parent, low):
            raise disk_full_error(self.path, path.parent, self.space_needed()) from exc

    def space_needed(self) -> int:
        """Bytes the outputs may need at most while :meth:`finalize` builds them.

        Their uncompressed size, twice (the temporary GeoTIFFs and the COGs exist
        together) plus a third (the COGs' overviews): compression makes the real
        need smaller, often much smaller.
        """
        bands = 1 + self.confidence + (self.num_probability_bands * self.probabilities)
        return self.width * self.height * bands * 7 // 3

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
            OutputPathError: the disk is full.
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
        counts = self._check_classes(classes)
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
        has_nodata = bool(counts[self.nodata])
        nodata_mask = np.zeros((), dtype=bool)  # only read where has_nodata
        if has_nodata and (conf is not None or prob is not None):
            nodata_mask = classes == self.nodata
        if conf is not None:
            over = conf > 100
            if has_nodata:
                over &= ~nodata_mask
            if over.any():
                raise ValueError(
                    "confidence: expected percent 0..100 where the map has data, "
                    f"got values up to {int(conf[~nodata_mask].max())}"
                )
            conf = _as_nodata(conf, nodata_mask, CONFIDENCE_NODATA, has_nodata)
        if prob is not None:
            prob = _as_nodata(prob, nodata_mask, PROBABILITY_NODATA, has_nodata)
        self._write(row0, h, classes, conf, prob, counts)

    def _write(
        self,
        row0: int,
        h: int,
        classes: np.ndarray,
        conf: np.ndarray | None,
        prob: np.ndarray | None,
        counts: np.ndarray,
    ) -> None:
        with self._lock:
            if self._state != "open" or not self._files:
                raise AlosmapError(f"map writer for {self.path} is {self._state}")
            if self._written[row0 : row0 + h].any():
                raise ValueError(
                    f"rows {row0}..{row0 + h - 1}: some were already written "
                    "(each row must be written exactly once)"
                )
            for r, (c, cf, pr) in self._blocks.add(row0, [classes, conf, prob]):
                self._write_block(r, c, cf, pr)
            self._written[row0 : row0 + h] = True
            self._pixels += counts

    def _write_block(
        self,
        row0: int,
        classes: np.ndarray | None,
        conf: np.ndarray | None,
        prob: np.ndarray | None,
    ) -> None:
        """Write whole block rows starting at ``row0`` into the temporary files."""
        assert classes is not None
        window = Window(0, row0, self.width, classes.shape[0])
        try:
            self._files["map"].ds.write(classes, 1, window=window)
            if conf is not None:
                self._files["confidence"].ds.write(conf, 1, window=window)
            if prob is not None:
                self._files["probabilities"].ds.write(prob, window=window)
        except (RasterioError, OSError) as exc:
            self._raise_if_disk_full(exc, self.path)
            raise

    def _check_classes(self, classes: np.ndarray) -> np.ndarray:
        """Pixels per code of ``classes`` (``[256]``); raises on a code not valid.

        One counting pass both checks the codes and counts them.
        """
        if classes.dtype != np.uint8:
            raise ValueError(f"classes: expected uint8 codes, got {classes.dtype}")
        counts = count_bytes(classes)
        bad = np.flatnonzero(counts * ~self._valid_codes)
        if bad.size:
            valid = np.flatnonzero(self._valid_codes).tolist()
            raise ValueError(
                f"classes: code {int(bad[0])} is not a class of the "
                f"{self.spec.task} map; valid codes (incl. no data): {valid}"
            )
        return counts

    @property
    def class_pixels(self) -> np.ndarray:
        """Pixels per class code written so far (``[256]`` int64; no data: 0)."""
        out = self._pixels.copy()
        out[self.nodata] = 0
        return out

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
        """Build the COGs, write the styles and move the files into place.

        Returns:
            The map path.

        Raises:
            AlosmapError: rows are missing (nothing is left on disk), or the writer
                was aborted.
            OutputPathError: the disk is full (nothing is left on disk).
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
                closing = self._close_datasets()
                # libtiff may fail to flush a full disk without an error GDAL raises
                self._raise_if_disk_full(None, self.path, _NO_SPACE)
                for level, message in closing:
                    if level > _CE_WARNING:
                        raise AlosmapError(f"cannot write {self.path}: {message}")
                    logger.warning("%s: GDAL: %s", self.path, message)
                cogs = [(self._build_cog(o), o.final) for o in self._files.values()]
                styles = self._write_styles()
                # The map last: its appearing marks the end of the run.
                self._move_into_place([*styles, *reversed(cogs)])
                self._state = "finalized"
            except BaseException:
                if self._state != "finalized":
                    self._state = "aborted"
                self._cleanup()
                raise
            self._cleanup()
        logger.info("wrote %s", self.path)
        return self.path

    def _move_into_place(self, moves: list[tuple[Path, Path]]) -> None:
        """Rename each ``(temporary, final)`` in order: all of them, or none.

        With ``overwrite`` each final file is replaced. Without, a final file is
        never replaced (a sidecar already there when the writer opened, a deleted
        map's, excepted): one that appeared meanwhile (another run) stops the
        moves, and the files this run had moved already are removed, so that
        no half set of outputs is left.

        Raises:
            OutputExistsError: a final file appeared meanwhile (not with
                ``overwrite``).
        """
        placed: list[tuple[Path, int, int]] = []  # final, device, inode
        try:
            for tmp, final in moves:
                st = os.stat(tmp)
                if self._overwrite or final in self._old_sidecars:
                    os.replace(tmp, final)
                else:
                    try:
                        rename_no_replace(tmp, final)
                    except FileExistsError as exc:
                        # named by the map the user asked for, with the part found
                        what = self.path if final == self.path else None
                        raise appeared_meanwhile(
                            what or f"{self.path} ({final.name})"
                        ) from exc
                placed.append((final, st.st_dev, st.st_ino))
                self._temps.remove(tmp)
        except BaseException:
            for final, dev, ino in placed:  # ours only: not what replaced them since
                with contextlib.suppress(OSError):
                    st = os.lstat(final)
                    if (st.st_dev, st.st_ino) == (dev, ino):
                        final.unlink()
            raise

    def _build_cog(self, out: _Output) -> Path:
        dst = self._temp_path(out.final, "cog")
        options = cog_build_options(
            out.level, out.predictor, out.resampling, self._creation
        )
        with (
            warnings.catch_warnings(),
            _gdal_lines_held(out.tmp.name, dst.name),
            rasterio.Env(**_COG_BUILD_CONFIG),
        ):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                rasterio.shutil.copy(out.tmp, dst, driver="COG", **options)
            except Exception as exc:  # RasterioError, OSError or GDAL's CPLE_* errors
                self._raise_if_disk_full(exc, dst)
                raise AlosmapError(f"cannot write {out.final}: {exc}") from exc
        return dst

    def _write_styles(self) -> list[tuple[Path, Path]]:
        """The sidecars: categories, colour table and QGIS styles of every file.

        Written into hidden temporaries before the data files are moved into
        place (with them, by :meth:`_move_into_place`), so that a full disk leaves
        no new map behind; a stale ``.aux.xml`` (statistics of an old file) of
        the confidence and probabilities files is removed.

        Returns:
            ``(temporary, final)`` of each sidecar.
        """
        classes, nodata = self.spec.classes, self.nodata
        files = [
            (style_path(self.path), class_qml(classes, nodata)),
            (sidecar_path(self.path), pam_xml(classes, nodata)),
        ]
        for kind, title, scale in (
            ("confidence", "confidence", 1.0),
            ("probabilities", "probability", PROBABILITY_SCALE),
        ):
            if kind in self._files:
                final = self._files[kind].final
                files.append((style_path(final), percent_qml(1, title, scale)))
        moves = []
        try:
            for final, data in files:
                tmp = self._temp_path(final, "tmp")
                tmp.write_bytes(data)
                make_readable(tmp)
                moves.append((tmp, final))
            for kind in ("confidence", "probabilities"):
                if kind not in self._files:
                    continue
                stale = sidecar_path(self._files[kind].final)
                if self._overwrite or stale in self._old_sidecars:
                    _unlink(stale)
        except OSError as exc:
            self._raise_if_disk_full(exc, self.path)
            raise OutputPathError(
                f"cannot write the styles of {self.path}: {exc}"
            ) from exc
        return moves

    def _close_datasets(self) -> list[tuple[int, str]]:
        """Close the temporary GeoTIFFs; GDAL's errors in doing so (not printed).

        Closing writes the blocks GDAL still holds: on a full disk it fails, and
        GDAL would print each error on stderr (rasterio raises none of them).

        Returns:
            ``(level, message)`` of GDAL's errors and warnings (see
            :func:`_gdal_errors`).
        """
        with _gdal_errors() as caught:
            for out in self._files.values():
                if out.ds is not None and not out.ds.closed:
                    out.ds.close()
                out.ds = None
        return caught

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


#: GDAL's error handler: ``void handler(CPLErr, CPLErrorNum, const char *message)``.
_CPL_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
#: GDAL's ``CE_Warning`` (``CE_Failure`` and ``CE_Fatal`` are above).
_CE_WARNING = 2


@functools.cache
def _gdal_error_stack() -> tuple[Any, Any] | None:
    """GDAL's ``CPLPushErrorHandler`` and ``CPLPopErrorHandler``; None if not found."""
    from alosmap._process import library_functions

    names = ("CPLPushErrorHandler", "CPLPopErrorHandler")
    for push, pop in library_functions("libgdal", *names):
        push.argtypes, push.restype = [_CPL_HANDLER], None
        pop.argtypes, pop.restype = [], None
        return push, pop
    return None


@contextlib.contextmanager
def _gdal_errors() -> Iterator[list[tuple[int, str]]]:
    """Collect the errors GDAL reports in this thread during the block, unprinted.

    Only for GDAL calls that rasterio does not watch (closing a dataset), where
    GDAL would print them on stderr (``ERROR 1: ...``). Where libgdal is not found
    (not Linux), nothing is collected and GDAL prints them.

    Yields:
        ``(level, message)`` of each: 2 a warning, 3 or more an error.
    """
    caught: list[tuple[int, str]] = []
    stack = _gdal_error_stack()
    if stack is None:
        yield caught
        return
    push, pop = stack

    def collect(level: int, number: int, message: bytes | None) -> None:
        caught.append((level, (message or b"").decode("utf-8", "replace")))

    handler = _CPL_HANDLER(collect)  # referenced until popped
    push(handler)
    try:
        yield caught
    finally:
        pop()


@contextlib.contextmanager
def _gdal_lines_held(*names: str) -> Iterator[None]:
    """Hold GDAL's log lines (rasterio's) about the files ``names`` during the block.

    They are logged when the block succeeds, and dropped when it fails: its error
    says what went wrong (a full disk makes GDAL warn of each file it could not
    finish, then fail).
    """
    log = logging.getLogger("rasterio._env")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if any(name in record.getMessage() for name in names):
            held.append(record)
            return False
        return True

    log.addFilter(hold)
    try:
        yield
    finally:
        log.removeFilter(hold)
    for record in held:
        log.handle(record)


def _as_nodata(
    a: np.ndarray, nodata_mask: np.ndarray, value: int, has_nodata: bool
) -> np.ndarray:
    """``a`` (``[..., h, w]``) with ``value`` where the map is no data.

    A new array only when some such pixel holds another value (the pipeline's
    rows already hold ``value`` there).
    """
    if has_nodata and np.any(a[..., nodata_mask] != value):
        return np.where(nodata_mask, np.uint8(value), a)
    return a
