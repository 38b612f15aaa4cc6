"""Class maps on disk: their legend, class names, validity checks, block reading.

``alosmap evaluate``, ``stats``, ``vectorize`` and ``mosaic`` read three kinds of
class map:

* ``lulc``: maps of ``alosmap predict --task lulc``, LULC-9 codes 1-9, 0 = no data;
* ``water``: maps of ``alosmap water``, 1 water, 0 not water, 255 = no data;
* ``jaxa``: JAXA HRLULC tiles, codes 1-14, 0 = no data.

A map written by alosmap says which it is in its ``ALOSMAP_TASK`` tag; for other
files the caller names the legend. Each legend turns into a 256-entry lookup table
from pixel value to class index (position in the legend), with :data:`IGNORE` for
no data and :data:`UNKNOWN` for values that are not in the legend, so a file that
does not follow its legend is caught instead of being miscounted.

Only band 1 is read, so maps of earlier releases, whose band 2 held the confidence,
stay readable (for one release). Class names are read back from where
:class:`~alosmap.io.writer.MapWriter` puts them (:func:`class_names_from_file`): the
``CLASS_NAMES`` metadata item, band 1's ``CLASS_<code>`` items, or the PAM sidecar
``<map>.aux.xml`` (:func:`sidecar_path`).

Large rasters are read in full-width strips of about :data:`CHUNK_PIXELS` pixels
(:func:`row_windows`), so memory does not grow with the map.
"""

from __future__ import annotations

import contextlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from alosmap.classes import (
    IGNORE_INDEX,
    JAXA_CLASSES,
    JAXA_NODATA,
    LULC,
    TASKS,
    WATER,
    ClassInfo,
)
from alosmap.errors import InputRasterError
from alosmap.io.raster import open_raster

__all__ = [
    "CHUNK_PIXELS",
    "IGNORE",
    "LEGENDS",
    "UNKNOWN",
    "Legend",
    "MapInfo",
    "apply_lut",
    "check_known",
    "class_names_from_file",
    "open_map",
    "row_windows",
    "sidecar_path",
]

#: Lookup value of no-data pixels.
IGNORE = IGNORE_INDEX
#: Lookup value of pixel values outside the legend.
UNKNOWN = 254
#: Pixels per strip when reading block-wise (2 Mpx: ~2 MB of uint8 per array).
CHUNK_PIXELS = 1 << 21
#: Tasks of maps written by alosmap (the ``ALOSMAP_TASK`` tag).
MAP_TASKS = TASKS


@dataclass(frozen=True)
class Legend:
    """The codes a class raster uses.

    Attributes:
        name: ``lulc``, ``water`` or ``jaxa``.
        classes: the classes, in index order.
        nodata: the value meaning "no data".
        title: human-readable description, for messages.
    """

    name: str
    classes: tuple[ClassInfo, ...]
    nodata: int
    title: str

    @property
    def codes(self) -> list[int]:
        """Class codes in index order."""
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    def lut(self, extra_nodata: float | None = None) -> np.ndarray:
        """Value → class index; :data:`IGNORE` for no data, :data:`UNKNOWN` else.

        Args:
            extra_nodata: the file's own no-data value, ignored too when it is not
                one of the legend's codes.
        """
        lut = np.full(256, UNKNOWN, dtype=np.uint8)
        lut[self.nodata] = IGNORE
        if extra_nodata is not None and _is_byte(extra_nodata):
            lut[int(extra_nodata)] = IGNORE
        for i, c in enumerate(self.classes):
            lut[c.code] = i
        return lut


def _is_byte(value: float) -> bool:
    return float(value).is_integer() and 0 <= value <= 255


#: The legends, by name.
LEGENDS: dict[str, Legend] = {
    LULC.name: Legend(
        LULC.name, LULC.classes, LULC.nodata, "LULC-9 (codes 1-9, 0 = no data)"
    ),
    WATER.name: Legend(
        WATER.name,
        WATER.classes,
        WATER.nodata,
        "water (1 water, 0 not, 255 = no data)",
    ),
    "jaxa": Legend(
        "jaxa", JAXA_CLASSES, JAXA_NODATA, "JAXA HRLULC (codes 1-14, 0 = no data)"
    ),
}


@dataclass(frozen=True)
class MapInfo:
    """A class raster opened for reading (band 1) and its legend.

    Attributes:
        path: the file.
        legend: the codes it uses.
        crs: its CRS (``None`` when it has none).
        transform: pixel → CRS coordinates.
        width: columns.
        height: rows.
        nodata: the file's no-data tag (``None`` when absent).
        block_rows: rows per internal block (1 for strip files).
    """

    path: Path
    legend: Legend
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    nodata: float | None
    block_rows: int

    def lut(self) -> np.ndarray:
        """Value → class index of this file (see :meth:`Legend.lut`)."""
        return self.legend.lut(self.nodata)

    def classify(self, values: np.ndarray, role: str = "map") -> np.ndarray:
        """Class indices of raw values (:data:`IGNORE` at no data).

        Raises:
            InputRasterError: values outside the legend.
        """
        index = apply_lut(self.lut(), values, self.nodata)
        check_known(index, values, self, role)
        return index

    def footprint(self) -> Any:
        """The grid's outline in its CRS as a shapely polygon."""
        from shapely.geometry import Polygon

        corners = [(0, 0), (self.width, 0), (self.width, self.height), (0, self.height)]
        return Polygon([self.transform @ c for c in corners])

    def windows(self, chunk_pixels: int = CHUNK_PIXELS) -> Iterator[Window]:
        """Full-width strips covering the map (see :func:`row_windows`)."""
        return row_windows(self.height, self.width, self.block_rows, chunk_pixels)


def row_windows(
    height: int, width: int, block_rows: int = 1, chunk_pixels: int = CHUNK_PIXELS
) -> Iterator[Window]:
    """Full-width strips of about ``chunk_pixels`` pixels, top to bottom.

    Strip heights are a multiple of ``block_rows`` (the file's block height) so that
    no internal block is decoded twice.
    """
    rows = max(1, chunk_pixels // max(1, width))
    if block_rows > 1:
        rows = max(block_rows, rows // block_rows * block_rows)
    for r0 in range(0, height, rows):
        yield Window(0, r0, width, min(rows, height - r0))


def open_map(
    path: str | os.PathLike[str],
    legend: str | None = None,
    *,
    default: str | None = None,
    allowed: tuple[str, ...] = MAP_TASKS,
    role: str = "map",
    option: str = "--task",
) -> MapInfo:
    """Open a class raster and work out its legend.

    The ``ALOSMAP_TASK`` tag of maps written by alosmap decides; ``legend`` is the
    fallback for files without it (and must agree with the tag when both exist).

    Args:
        path: the raster.
        legend: ``lulc``, ``water`` or ``jaxa``; ``None`` = from the tag.
        default: legend of files with neither tag nor ``legend``; ``None`` = such
            files are an error.
        allowed: legends the caller can use.
        role: what the file is, for messages (``map``, ``reference``).
        option: the command-line option that sets ``legend``, for messages.

    Raises:
        InputRasterError: unreadable; not an integer raster; a probabilities or
            confidence file;
            unknown or conflicting task; no tag and no ``legend``; a legend the
            caller cannot use; class names that are not the legend's.
    """
    p = Path(path)
    choices = "|".join(allowed)
    with open_raster(p) as ds:
        tags = ds.tags()
        dtype = np.dtype(ds.dtypes[0])
        info = dict(
            crs=ds.crs,
            transform=ds.transform,
            width=ds.width,
            height=ds.height,
            nodata=ds.nodata,
            block_rows=ds.block_shapes[0][0],
        )
    if tags.get("ALOSMAP_PRODUCT") in ("probabilities", "confidence"):
        raise InputRasterError(
            f"{p} is a {tags['ALOSMAP_PRODUCT']} file, not a class map; pass the map "
            "written beside it"
        )
    if dtype.kind not in "ui":
        raise InputRasterError(
            f"{role} {p} holds {dtype} values; expected integer class codes"
        )
    tag = tags.get("ALOSMAP_TASK")
    if tag is not None:
        if tag not in MAP_TASKS:
            raise InputRasterError(
                f"{role} {p} has ALOSMAP_TASK={tag!r}, a task alosmap does not know; "
                f"expected one of {', '.join(MAP_TASKS)}"
            )
        if legend is not None and legend != tag:
            raise InputRasterError(
                f"{role} {p} is a {tag} map (ALOSMAP_TASK tag) but {option} {legend} "
                "was given; drop the option"
            )
        name = tag
    elif legend is None and default is not None:
        name = default
    elif legend is None:
        raise InputRasterError(
            f"{role} {p} has no ALOSMAP_TASK tag (not written by alosmap?); say "
            f"which codes it holds with {option} {choices}"
        )
    else:
        name = legend
    if name not in allowed:
        raise InputRasterError(
            f"{role} {p} holds {LEGENDS[name].title} codes; this command needs "
            f"a {' or '.join(allowed)} {role}"
        )
    lg = LEGENDS[name]
    nodata = info["nodata"]
    if nodata is not None and nodata != lg.nodata and nodata in lg.codes:
        raise InputRasterError(
            f"{role} {p} declares no-data {nodata:g}, which is a class code of the "
            f"{lg.title} legend"
        )
    if tag is not None:
        _check_class_names(p, lg, role)
    return MapInfo(path=p, legend=lg, **info)


def _check_class_names(path: Path, legend: Legend, role: str) -> None:
    """An alosmap map whose class names are not its legend's is another scheme."""
    names = class_names_from_file(path)
    if not names:
        return
    expected = {c.code: c.name.lower() for c in legend.classes}
    found = {int(k): v.lower() for k, v in names.items()}
    if found != expected:
        raise InputRasterError(
            f"{role} {path} has classes {sorted(names.items())}, not the "
            f"{legend.title} legend; alosmap cannot compare or name them"
        )


def apply_lut(
    lut: np.ndarray, values: np.ndarray, nodata: float | None = None
) -> np.ndarray:
    """``lut[values]`` for any integer dtype; values outside 0-255 → :data:`UNKNOWN`.

    Args:
        lut: 256-entry lookup table.
        values: raw pixel values.
        nodata: the file's no-data value, :data:`IGNORE` whatever ``lut`` says
            (for values such as -1 that a 256-entry table cannot hold).
    """
    if values.dtype == np.uint8:
        return lut[values]
    v = values.astype(np.int64, copy=False)
    inside = (v >= 0) & (v <= 255)
    out = np.where(inside, lut[np.where(inside, v, 0)], UNKNOWN).astype(np.uint8)
    if nodata is not None:
        out[values == nodata] = IGNORE
    return out


def check_known(
    index: np.ndarray, values: np.ndarray, info: MapInfo, role: str
) -> None:
    """Raise when a block holds values outside the file's legend.

    Args:
        index: ``apply_lut(lut, values)``.
        values: the raw pixel values.
        info: the file.
        role: ``map`` or ``reference``, for the message.

    Raises:
        InputRasterError: naming up to ten unknown values.
    """
    bad = index == UNKNOWN
    if bad.any():
        found = np.unique(values[bad])[:10].tolist()
        raise InputRasterError(
            f"{role} {info.path} holds values {found} outside the "
            f"{info.legend.title} legend; is it a {info.legend.name} raster?"
        )


# -- class names ------------------------------------------------------------------


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Path of a map's PAM sidecar (``<path>.aux.xml``) holding the category names."""
    p = Path(path)
    return p.with_name(p.name + ".aux.xml")


def class_names_from_file(path: str | os.PathLike[str]) -> dict[int, str]:
    """Class names of a map: code -> name.

    Looks at the ``CLASS_NAMES`` metadata item, then band 1's ``CLASS_<code>`` items,
    then the PAM sidecar's ``<CategoryNames>`` (non-empty entries).

    Args:
        path: a map written by alosmap (or any GeoTIFF with category names).

    Returns:
        The names, sorted by code; empty when the file has none.
    """
    with open_raster(path) as ds:
        tags = ds.tags()
        band_tags = ds.tags(1)
    if "CLASS_NAMES" in tags:
        with contextlib.suppress(ValueError, AttributeError):
            names = json.loads(tags["CLASS_NAMES"])
            return {int(k): str(v) for k, v in sorted(names.items(), key=_int_key)}
    from_band = {
        int(k[6:]): v
        for k, v in band_tags.items()
        if k.startswith("CLASS_") and k[6:].isdigit()
    }
    if from_band:
        return dict(sorted(from_band.items()))
    return _sidecar_categories(sidecar_path(path))


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])


def _sidecar_categories(aux: Path) -> dict[int, str]:
    """Non-empty category names of band 1 in a PAM ``.aux.xml``."""
    if not aux.is_file():
        return {}
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return {}
    for band in root.iter("PAMRasterBand"):
        if band.get("band") == "1":
            cats = band.find("CategoryNames")
            if cats is None:
                return {}
            return {
                i: c.text or ""
                for i, c in enumerate(cats.findall("Category"))
                if c.text
            }
    return {}
