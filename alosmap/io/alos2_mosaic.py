"""JAXA's ALOS-2 PALSAR-2 25 m yearly mosaic tiles, as delivered.

A tile is 1° × 1° (4500 × 4500 pixels of 0.8″, EPSG:4326), named by its north-west
corner and the year, and comes as a set of files (``F02DAR`` is the version)::

    N23W161_20_sl_HH_F02DAR.tif   HH amplitude DN, uint16, no data 1
    N23W161_20_sl_HV_F02DAR.tif   HV amplitude DN, uint16, no data 1
    N23W161_20_mask_F02DAR.tif    uint8: 0 no data, 50 ocean/water, 100 layover,
                                  150 shadow, 255 land
    N23W161_20_date_F02DAR.tif    uint16: days since the launch (ALOS-2: 2014-05-24)
    N23W161_20_linci_F02DAR.tif   uint8: local incidence angle (degrees)
    N23W161_20_F02DAR.xml         CARD4L metadata (dates, product, mask codes)

The backscatter is γ0 (terrain-flattened): ``γ0 [dB] = 10·log10(DN²) − 83.0``, the
L2.1 scenes' formula for σ0. :class:`~alosmap.io.scene.Scene` uses this module when
it opens an HH (or HV) file named like this: DN 1 is no data, mask values 0 (no
data), 100 (layover) and 150 (shadow) become no data, and the acquisition dates come
from the date file (else the ``.xml``, else the year of the name).

Siblings are looked up beside local files only (not for URLs or ``/vsi`` paths).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window

from alosmap.errors import InputRasterError
from alosmap.io.raster import is_virtual, open_raster, raster_stem

logger = logging.getLogger(__name__)

__all__ = [
    "ALOS2_LAUNCH",
    "ALOS_LAUNCH",
    "DN_NODATA",
    "MOSAIC_NAME",
    "DateRange",
    "MaskCodes",
    "MosaicFiles",
    "MosaicMask",
    "MosaicMetadata",
    "MosaicName",
    "find_mosaic_files",
    "mosaic_date_range",
    "parse_mosaic_name",
    "read_date_range",
    "read_metadata",
]

#: ``<tile>_<yy>_sl_<HH|HV>[_<version>]``, e.g. ``N23W161_20_sl_HH_F02DAR``.
MOSAIC_NAME = re.compile(
    r"^(?P<tile>[NS]\d{2}[EW]\d{3})_(?P<yy>\d{2})_sl_(?P<pol>HH|HV)"
    r"(?:_(?P<version>[A-Za-z0-9]+))?$"
)
#: Zero of the date file of ALOS-2 PALSAR-2 mosaics (2015 on): the launch.
ALOS2_LAUNCH = date(2014, 5, 24)
#: Zero of the date file of ALOS PALSAR mosaics (2007-2010): the launch.
ALOS_LAUNCH = date(2006, 1, 24)
#: DN that marks no data in the mosaic's HH/HV files.
DN_NODATA = 1
#: Largest ``.xml`` read (a CARD4L file is a few kB).
MAX_XML_BYTES = 1 << 20
#: Rows of the date file read at once (its memory: rows × width × 2 bytes).
DATE_ROWS = 256


@dataclass(frozen=True)
class MaskCodes:
    """Values of the mask file (JAXA's; the ``.xml`` may restate them)."""

    no_data: int = 0
    water: int = 50
    layover: int = 100
    shadow: int = 150
    land: int = 255

    @property
    def invalid(self) -> tuple[int, int, int]:
        """The values that make a pixel no data: no data, layover, shadow."""
        return (self.no_data, self.layover, self.shadow)


@dataclass(frozen=True)
class MosaicName:
    """The parts of a mosaic file name (``N23W161_20_sl_HH_F02DAR.tif``).

    Attributes:
        tile: the north-west corner, ``N23W161``.
        yy: the two-digit year, ``20``.
        pol: ``HH`` or ``HV``.
        version: the product version (``F02DAR``), or ``""`` when the name has none.
        suffix: the file's suffix (``.tif``).
    """

    tile: str
    yy: str
    pol: str
    version: str = ""
    suffix: str = ".tif"

    @property
    def year(self) -> int:
        """The mosaic's year (``20`` → 2020)."""
        return 2000 + int(self.yy)

    @property
    def launch(self) -> date:
        """Day zero of the date file: ALOS-2's launch, ALOS's before 2014."""
        return ALOS2_LAUNCH if self.year >= 2014 else ALOS_LAUNCH

    def sibling(self, kind: str) -> str:
        """File name of the tile's ``kind`` file.

        Args:
            kind: ``mask``, ``date``, ``linci``, ``sl_HH``, ``sl_HV`` or ``xml``.
        """
        ver = f"_{self.version}" if self.version else ""
        if kind == "xml":
            return f"{self.tile}_{self.yy}{ver}.xml"
        return f"{self.tile}_{self.yy}_{kind}{ver}{self.suffix}"


def parse_mosaic_name(path: str | os.PathLike[str]) -> MosaicName | None:
    """The parts of a mosaic HH/HV file name, or None for any other name."""
    stem = raster_stem(path)
    m = MOSAIC_NAME.match(stem)
    if m is None:
        return None
    suffix = Path(os.fspath(path)).suffix if not is_virtual(path) else ".tif"
    return MosaicName(m["tile"], m["yy"], m["pol"], m["version"] or "", suffix)


@dataclass(frozen=True)
class MosaicFiles:
    """A mosaic file and the siblings found beside it (None: not there).

    Attributes:
        name: the parsed file name.
        path: the file (HH or HV) itself.
        mask: the mask file.
        date: the date file (days since the launch).
        linci: the local incidence angle file.
        xml: the CARD4L metadata.
        hh: the HH file (``path`` when that is HH).
        hv: the HV file (``path`` when that is HV).
    """

    name: MosaicName
    path: Path
    mask: Path | None = None
    date: Path | None = None
    linci: Path | None = None
    xml: Path | None = None
    hh: Path | None = None
    hv: Path | None = None


def find_mosaic_files(path: str | os.PathLike[str]) -> MosaicFiles | None:
    """Recognise a mosaic HH/HV file and find its siblings (mask, date, xml ...).

    Args:
        path: the file a user gave (``N23W161_20_sl_HH_F02DAR.tif``).

    Returns:
        None when the name is not a mosaic file's; else its :class:`MosaicFiles`,
        with no sibling for URLs and ``/vsi`` paths (only local folders are looked
        in).
    """
    name = parse_mosaic_name(path)
    if name is None:
        return None
    p = Path(path)
    if is_virtual(path):
        return MosaicFiles(name, p)

    def beside(kind: str) -> Path | None:
        q = p.with_name(name.sibling(kind))
        return q if q.is_file() else None

    return MosaicFiles(
        name,
        p,
        mask=beside("mask"),
        date=beside("date"),
        linci=beside("linci"),
        xml=beside("xml"),
        hh=beside("sl_HH"),
        hv=beside("sl_HV"),
    )


# ------------------------------------------------------------------------- dates
@dataclass(frozen=True)
class DateRange:
    """When the pixels of a tile were acquired.

    Attributes:
        first: the earliest acquisition date.
        last: the latest.
        typical: the date of most pixels (the date file), else ``first`` when the
            range is one day, else None.
        source: where the dates come from (``date file``, ``xml metadata``,
            ``file name year``).
    """

    first: date
    last: date
    typical: date | None = None
    source: str = ""


def read_date_range(path: str | os.PathLike[str], zero: date) -> DateRange | None:
    """The acquisition date range of a date file (days since ``zero`` per pixel).

    Reads :data:`DATE_ROWS` rows at a time (memory: rows × width × 2 bytes), counts
    the days, and gives the first, last and most common date. Values 0 and 1 (and
    the file's no-data value) are no data.

    Args:
        path: the date file (``<tile>_<yy>_date_<version>.tif``).
        zero: the date of day 0 (the satellite's launch).

    Returns:
        None when the file holds no valid day.

    Raises:
        InputRasterError: the file cannot be read or is not integer.
    """
    p = Path(path)
    try:
        stat = p.stat()
    except OSError as exc:
        raise InputRasterError(f"cannot read date file {p}: {exc}") from exc
    counts = _day_counts(str(p), stat.st_mtime_ns, stat.st_size)
    days = np.flatnonzero(counts)
    if days.size == 0:
        return None
    first, last = (zero + timedelta(days=int(d)) for d in (days[0], days[-1]))
    typical = zero + timedelta(days=int(np.argmax(counts)))
    return DateRange(first, last, typical, f"date file {p.name}")


@functools.lru_cache(maxsize=8)
def _day_counts(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """Pixels per day of a date file (``counts[d]``: pixels of day ``d``), cached.

    ``mtime_ns`` and ``size`` are part of the cache key: a rewritten file is read
    again.
    """
    del mtime_ns, size
    counts = np.zeros(1 << 16, np.int64)
    with open_raster(path) as ds:
        dtype = np.dtype(ds.dtypes[0])
        if dtype.kind not in "ui":
            raise InputRasterError(
                f"date file {path}: {dtype} data, expected integer days"
            )
        nodata = ds.nodata
        bh = max(1, int(ds.block_shapes[0][0]))
        step = max(bh, DATE_ROWS // bh * bh)
        try:
            for row in range(0, ds.height, step):
                win = Window(0, row, ds.width, min(step, ds.height - row))
                a = ds.read(1, window=win).ravel()
                keep = (a > 1) & (a < counts.size)
                if nodata is not None:
                    keep &= a != nodata
                counts += np.bincount(a[keep].astype(np.int64), minlength=counts.size)
        except (RasterioError, OSError) as exc:
            raise InputRasterError(f"cannot read date file {path}: {exc}") from exc
    counts.flags.writeable = False
    return counts


def mosaic_date_range(
    files: MosaicFiles, metadata: MosaicMetadata | None = None
) -> DateRange:
    """The tile's acquisition dates: the date file, else the ``.xml``, else the year.

    An unreadable date file is logged and skipped. The date file's range is cached
    (see :func:`_date_file_range`): a :class:`~alosmap.io.scene.Scene` and
    :func:`~alosmap.io.raster.acquisition_date` both ask, and the file is read, and
    a broken one reported, once.
    """
    zero = (metadata.zero_date if metadata else None) or files.name.launch
    found = _date_file_range(files.date, zero) if files.date is not None else None
    if found is not None:
        return found
    if metadata is not None and metadata.first_date and metadata.last_date:
        first, last = sorted((metadata.first_date, metadata.last_date))
        typical = first if first == last else None
        return DateRange(first, last, typical, "xml metadata")
    year = files.name.year
    return DateRange(date(year, 1, 1), date(year, 12, 31), None, "file name year")


def _date_file_range(path: Path, zero: date) -> DateRange | None:
    """:func:`read_date_range`, or None (a warning) when the file is unreadable."""
    try:
        stat = path.stat()
    except OSError as exc:
        logger.warning(
            "ignoring the date file: cannot read date file %s: %s", path, exc
        )
        return None
    return _cached_date_file_range(str(path), stat.st_mtime_ns, stat.st_size, zero)


@functools.lru_cache(maxsize=8)
def _cached_date_file_range(
    path: str, mtime_ns: int, size: int, zero: date
) -> DateRange | None:
    """:func:`_date_file_range`, cached (a file's warning is logged once).

    ``mtime_ns`` and ``size`` are part of the cache key: a rewritten file is read
    again. Unlike :func:`_day_counts`, a failure is cached too.
    """
    del mtime_ns, size
    try:
        return read_date_range(path, zero)
    except InputRasterError as exc:
        logger.warning("ignoring the date file: %s", exc)
        return None


# -------------------------------------------------------------------------- xml
@dataclass(frozen=True)
class MosaicMetadata:
    """What alosmap uses of a tile's CARD4L ``.xml`` (None: not stated).

    Attributes:
        product: ``Normalised Radar Backscatter``.
        document: the specification, ``CARD4L-NRB v5.0``.
        satellite: ``ALOS-2``.
        mode: observation mode, ``FBD``.
        pass_direction: ``Ascending`` or ``Descending``.
        polarizations: ``HH+HV``.
        first_date: first acquisition date.
        last_date: last acquisition date.
        zero_date: day 0 of the date file.
        backscatter: ``gamma0`` or ``sigma0`` (from ``BackscatterMeasurement``).
        mask_codes: the mask file's values.
    """

    product: str | None = None
    document: str | None = None
    satellite: str | None = None
    mode: str | None = None
    pass_direction: str | None = None
    polarizations: str | None = None
    first_date: date | None = None
    last_date: date | None = None
    zero_date: date | None = None
    backscatter: str | None = None
    mask_codes: MaskCodes = field(default_factory=MaskCodes)


def read_metadata(path: str | os.PathLike[str]) -> MosaicMetadata | None:
    """Parse a tile's ``.xml`` with the standard library, defensively.

    Nothing is fetched and no entity is expanded: a file with a ``DOCTYPE`` or an
    ``ENTITY`` declaration, larger than :data:`MAX_XML_BYTES`, or not well-formed
    is skipped with a warning (None). Missing or unreadable fields are None.
    """
    p = Path(path)
    try:
        stat = p.stat()
    except OSError as exc:
        logger.warning("ignoring unreadable metadata %s: %s", p.name, exc)
        return None
    return _read_metadata(str(p), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_metadata(path: str, mtime_ns: int, size: int) -> MosaicMetadata | None:
    """:func:`read_metadata`, cached (a file's warnings are logged once)."""
    del mtime_ns
    p = Path(path)
    if size > MAX_XML_BYTES:
        logger.warning("ignoring %s: larger than %d bytes", p.name, MAX_XML_BYTES)
        return None
    try:
        data = p.read_bytes()
    except OSError as exc:
        logger.warning("ignoring unreadable metadata %s: %s", p.name, exc)
        return None
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE):
        logger.warning("ignoring %s: it declares a DOCTYPE or entities", p.name)
        return None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        logger.warning("ignoring malformed metadata %s: %s", p.name, exc)
        return None
    return _metadata(_texts(root), _mask_codes(root))


def _local(tag: object) -> str:
    """An element's name without its namespace (``{ns}Product`` → ``Product``)."""
    return str(tag).rsplit("}", 1)[-1]


def _texts(root: ET.Element) -> dict[str, str]:
    """The stripped text of the first element of each (lower-case) name."""
    out: dict[str, str] = {}
    for el in root.iter():
        name = _local(el.tag).lower()
        text = (el.text or "").strip()
        if text and name not in out:
            out[name] = text
    return out


def _xml_date(text: str | None) -> date | None:
    m = re.match(r"\s*(\d{4})-?(\d{2})-?(\d{2})", text or "")
    if m is None:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _find(texts: dict[str, str], *words: str) -> str | None:
    """The text of the first element whose name holds all ``words``.

    JAXA's own files spell ``FirstAcquistionDate`` and ``LastAcquistitionDate``:
    names are matched by parts, not exactly.
    """
    for name, text in texts.items():
        if all(w in name for w in words):
            return text
    return None


def _metadata(texts: dict[str, str], codes: MaskCodes) -> MosaicMetadata:
    from alosmap.radiometry import parse_backscatter

    first = _find(texts, "first", "acqu", "date")
    last = _find(texts, "last", "acqu", "date")
    return MosaicMetadata(
        product=texts.get("product"),
        document=texts.get("documentidentifier"),
        satellite=texts.get("satellite"),
        mode=texts.get("observationmode"),
        pass_direction=texts.get("passdirection"),
        polarizations=texts.get("polarizations"),
        first_date=_xml_date(first),
        last_date=_xml_date(last),
        zero_date=_xml_date(texts.get("zeroreferencedate")),
        backscatter=parse_backscatter(texts.get("backscattermeasurement")),
        mask_codes=codes,
    )


_CODE_NAMES = {
    "nodata": "no_data",
    "oceanwater": "water",
    "layover": "layover",
    "shadow": "shadow",
    "validdata": "land",
}


def _mask_codes(root: ET.Element) -> MaskCodes:
    """The mask values the ``.xml`` states (``BitValues``), JAXA's by default."""
    found: dict[str, int] = {}
    for el in root.iter():
        if _local(el.tag).lower() != "bitvalues":
            continue
        for child in el:
            key = _CODE_NAMES.get(_local(child.tag).lower())
            text = (child.text or "").strip()
            if key and text.isdigit() and 0 <= int(text) <= 255:
                found.setdefault(key, int(text))
        break
    return MaskCodes(**found)


# ------------------------------------------------------------------------- mask
class MosaicMask:
    """The tile's mask file, read window by window alongside the HH file.

    Args:
        path: the mask file.
        width: the HH file's width (the mask must match it).
        height: the HH file's height.
        codes: the mask's values (:class:`MaskCodes`; the ``.xml``'s when stated).

    Raises:
        InputRasterError: the mask cannot be opened, is not single-band integer
            data, or is not the HH file's size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        codes: MaskCodes | None = None,
    ) -> None:
        self.path = Path(path)
        self.codes = codes or MaskCodes()
        self.ds = open_raster(path)
        try:
            self._check(width, height)
        except BaseException:
            self.ds.close()
            raise

    def _check(self, width: int, height: int) -> None:
        ds = self.ds
        if np.dtype(ds.dtypes[0]).kind not in "ui":
            raise InputRasterError(
                f"mask file {self.path}: {ds.dtypes[0]} data, expected uint8 codes"
            )
        if (ds.width, ds.height) != (width, height):
            raise InputRasterError(
                f"mask file {self.path} is {ds.width} x {ds.height} px, the scene "
                f"{width} x {height} px: not the same tile (move the mask away to map "
                "without it)"
            )

    def read(self, window: Window) -> np.ndarray:
        """The mask values of a pixel window.

        Raises:
            InputRasterError: the rows cannot be read.
        """
        try:
            return self.ds.read(1, window=window)
        except (RasterioError, OSError) as exc:
            raise InputRasterError(
                f"cannot read the mask file {self.path}: {exc}"
            ) from exc

    def invalid(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` mean no data, layover or shadow (bool)."""
        return np.isin(values, self.codes.invalid)

    def close(self) -> None:
        """Close the mask file."""
        self.ds.close()
