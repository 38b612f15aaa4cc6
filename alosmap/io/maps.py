"""Class maps on disk: their legend, class names, validity checks, block reading.

``alosmap evaluate``, ``stats``, ``vectorize`` and ``mosaic`` read class maps:

* maps written by alosmap (``predict``, ``water``, ``batch``, ``mosaic``), whose
  legend is the model's: the ``ALOSMAP_SPEC`` tag holds the model spec and with it
  the legend (a user's own, or ``lulc``: LULC-9 codes 1-9, 0 = no data; ``water``:
  1 water, 0 not water, 255 = no data); maps with only an ``ALOSMAP_TASK`` tag of a
  bundled task get that task's legend;
* other files, whose legend the caller names (:data:`LEGENDS`: ``lulc``, ``water``,
  ``jaxa`` = JAXA HRLULC tiles, codes 1-14, 0 = no data), or gives as a
  :class:`~alosmap.classes.Legend` (a legend file: the file then holds the
  legend's label values, not map codes).

:func:`map_legend` is the one place that turns a map file (its tags) into its
legend. Each legend turns into a lookup from pixel value to class index (position in
the legend), with :data:`IGNORE` for no data and :data:`UNKNOWN` for values that are
not in the legend, so a file that does not follow its legend is caught instead of
being miscounted.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from alosmap.classes import (
    IGNORE_INDEX,
    JAXA,
    LULC,
    TASK_RECORDS,
    TASKS,
    UNKNOWN_LABEL,
    WATER,
    Legend,
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
    "legend_of_file",
    "legend_text",
    "map_legend",
    "open_map",
    "row_windows",
    "sidecar_path",
]

#: Lookup value of no-data pixels.
IGNORE = IGNORE_INDEX
#: Lookup value of pixel values outside the legend.
UNKNOWN = UNKNOWN_LABEL
#: Pixels per strip when reading block-wise (2 Mpx: ~2 MB of uint8 per array).
CHUNK_PIXELS = 1 << 21
#: Tasks of the bundled models (an ``ALOSMAP_TASK`` tag without a spec).
MAP_TASKS = TASKS

#: The legends a command-line option can name for a file without alosmap tags.
LEGENDS: dict[str, Legend] = {lg.name: lg for lg in (LULC, WATER, JAXA)}
#: How messages call the named legends.
_SHORT = {LULC.name: "LULC-9", WATER.name: "water", JAXA.name: "JAXA HRLULC"}


def _ranges(values: Sequence[int]) -> str:
    """``[1, 2, 3, 4, 7]`` → ``"1-4, 7"`` (runs of three or more as ranges)."""
    vals = sorted(set(values))
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]}-{vals[j]}")
        else:
            parts.extend(str(v) for v in vals[i : j + 1])
        i = j + 1
    return ", ".join(parts)


def legend_text(legend: Legend, labels: bool = False) -> str:
    """A legend as messages name it: ``LULC-9 (codes 1-9, 0 = no data)``.

    Args:
        legend: the legend.
        labels: describe its label values instead of its map codes.
    """
    name = _SHORT.get(legend.name, repr(legend.name))
    if labels:
        return f"{name} (label values {_ranges(list(legend.label_values()))})"
    return f"{name} (codes {_ranges(legend.codes)}, {legend.nodata} = no data)"


def map_legend(tags: Mapping[str, str], where: str = "map") -> Legend | None:
    """The legend of a map written by alosmap, from its dataset tags.

    The model spec in ``ALOSMAP_SPEC`` carries the legend (a user's or a bundled
    task's, with the colours the model was given); a map with only the
    ``ALOSMAP_TASK`` tag of a bundled task (``lulc``, ``water``) has that task's.

    Args:
        tags: the file's dataset metadata.
        where: the file, for the message.

    Returns:
        The legend; None for a file without ``ALOSMAP_TASK`` (not written by
        alosmap).

    Raises:
        InputRasterError: a task alosmap does not know and no readable spec.
    """
    task = tags.get("ALOSMAP_TASK")
    if task is None:
        return None
    spec_text = tags.get("ALOSMAP_SPEC")
    if spec_text:
        from alosmap.errors import SpecError
        from alosmap.spec import ModelSpec

        with contextlib.suppress(SpecError, ValueError):
            spec = ModelSpec.from_json(spec_text)
            if spec.task == task:
                return spec.legend
    if task in TASK_RECORDS:
        return TASK_RECORDS[task]
    raise InputRasterError(
        f"{where} has ALOSMAP_TASK={task!r}, a task alosmap does not know, and no "
        "readable model spec (ALOSMAP_SPEC tag) with its legend; expected a "
        f"{' or '.join(MAP_TASKS)} map or one written by alosmap predict"
    )


def legend_of_file(path: str | os.PathLike[str]) -> Legend | None:
    """The legend of a map file written by alosmap (:func:`map_legend`), or None.

    Raises:
        InputRasterError: unreadable file, or a task alosmap does not know.
    """
    with open_raster(path) as ds:
        tags = ds.tags()
    return map_legend(tags, str(path))


@dataclass(frozen=True)
class MapInfo:
    """A class raster opened for reading (band 1) and its legend.

    Attributes:
        path: the file.
        legend: the legend of its values.
        crs: its CRS (``None`` when it has none).
        transform: pixel → CRS coordinates.
        width: columns.
        height: rows.
        nodata: the file's no-data tag (``None`` when absent).
        block_rows: rows per internal block (1 for strip files).
        labels: the values are the legend's label values (a label raster read
            with a legend file), not its map codes.
        hint: what to do about values outside the legend (end of the message).
    """

    path: Path
    legend: Legend
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    nodata: float | None
    block_rows: int
    labels: bool = False
    hint: str = ""

    def lut(self) -> np.ndarray:
        """Value → class index of this file's values 0-255 (:meth:`Legend.lut`)."""
        if not self.labels:
            return self.legend.lut(self.nodata)
        lut = self.legend.label_lut.copy()
        nd = self.nodata
        if nd is not None and float(nd).is_integer() and 0 <= nd <= 255:
            lut[int(nd)] = IGNORE
        return lut

    def index(self, values: np.ndarray) -> np.ndarray:
        """Class indices of raw values (:data:`IGNORE`, :data:`UNKNOWN` kept)."""
        if self.labels:
            return self.legend.labels_to_index(values, self.nodata)
        return apply_lut(self.lut(), values, self.nodata)

    def classify(self, values: np.ndarray, role: str = "map") -> np.ndarray:
        """Class indices of raw values (:data:`IGNORE` at no data).

        Raises:
            InputRasterError: values outside the legend.
        """
        index = self.index(values)
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
    legend: str | Legend | None = None,
    *,
    default: str | Legend | None = None,
    allowed: tuple[str, ...] = MAP_TASKS,
    role: str = "map",
    option: str = "--task",
    labels: bool = False,
    hint: str = "",
) -> MapInfo:
    """Open a class raster and work out its legend.

    The tags of maps written by alosmap decide (:func:`map_legend`: the legend of
    the model that made it, a user's legend included); ``legend`` is the fallback
    for files without them (and must agree with the tags when both exist).

    Args:
        path: the raster.
        legend: a name of :data:`LEGENDS` (``lulc``, ``water``, ``jaxa``: map
            codes) or a legend (map codes, or label values with ``labels``);
            ``None`` = from the tags.
        default: legend of files with neither tags nor ``legend``; ``None`` = such
            files are an error.
        allowed: the named legends the caller can use (a map with a user's legend
            is always accepted).
        role: what the file is, for messages (``map``, ``reference``).
        option: the command-line option that sets ``legend``, for messages.
        labels: a :class:`Legend` given as ``legend`` or ``default`` is read
            through its label values (a label raster), not its map codes.
        hint: the end of the message about values outside the legend.

    Raises:
        InputRasterError: unreadable; not an integer raster; a probabilities or
            confidence file; unknown or conflicting task; no tag and no
            ``legend``; a legend the caller cannot use; class names that are not
            the legend's; a no-data value that is one of the legend's classes.
    """
    p = Path(path)
    with open_raster(p) as ds:
        tags = ds.tags()
        dtype = np.dtype(ds.dtypes[0])
        info: dict[str, Any] = dict(
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
    tagged = map_legend(tags, f"{role} {p}")
    if tagged is not None:
        _check_given(p, tagged, legend, role, option)
        lg, by_labels = tagged, False
        _check_class_names(p, lg, role)
    else:
        lg, by_labels = _given_legend(p, legend, default, allowed, role, option)
        by_labels = by_labels and labels
    _check_allowed(p, lg, allowed, role)
    _check_nodata(p, lg, info["nodata"], by_labels, role)
    return MapInfo(path=p, legend=lg, labels=by_labels, hint=hint, **info)


def _check_given(
    p: Path, tagged: Legend, legend: str | Legend | None, role: str, option: str
) -> None:
    """A legend given for a tagged map must be the map's own."""
    if legend is None:
        return
    given = legend if isinstance(legend, str) else legend.name
    if given != tagged.name:
        raise InputRasterError(
            f"{role} {p} is a {tagged.name} map (ALOSMAP_TASK tag) but {option} "
            f"{given} was given; drop the option"
        )


def _given_legend(
    p: Path,
    legend: str | Legend | None,
    default: str | Legend | None,
    allowed: tuple[str, ...],
    role: str,
    option: str,
) -> tuple[Legend, bool]:
    """The legend of a file without alosmap tags, and whether it is a Legend given."""
    chosen = legend if legend is not None else default
    if chosen is None:
        raise InputRasterError(
            f"{role} {p} has no ALOSMAP_TASK tag (not written by alosmap?); say "
            f"which codes it holds with {option} {'|'.join(allowed)}"
        )
    if isinstance(chosen, Legend):
        return chosen, True
    if chosen not in LEGENDS:
        raise InputRasterError(
            f"{option} {chosen!r}: expected one of {', '.join(LEGENDS)}"
        )
    return LEGENDS[chosen], False


def _check_allowed(p: Path, lg: Legend, allowed: tuple[str, ...], role: str) -> None:
    """A named legend the command cannot use (a JAXA tile as a map to evaluate)."""
    if LEGENDS.get(lg.name) is lg and lg.name not in allowed:
        raise InputRasterError(
            f"{role} {p} holds {legend_text(lg)} codes; this command needs "
            f"a {' or '.join(allowed)} {role}"
        )


def _check_nodata(
    p: Path, lg: Legend, nodata: float | None, labels: bool, role: str
) -> None:
    """A file whose no-data value is one of its legend's classes is contradictory."""
    if nodata is None:
        return
    if labels:
        named = lg.label_values()
        if float(nodata).is_integer() and int(nodata) in named:
            name = lg.classes[named[int(nodata)]].name
            raise InputRasterError(
                f"{role} {p} declares no-data {nodata:g}, which is the label value "
                f"of {name!r} in the {legend_text(lg, True)} legend"
            )
    elif nodata != lg.nodata and nodata in lg.codes:
        raise InputRasterError(
            f"{role} {p} declares no-data {nodata:g}, which is a class code of the "
            f"{legend_text(lg)} legend"
        )


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
            f"{legend_text(legend)} legend; alosmap cannot compare or name them"
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
        index: :meth:`MapInfo.index` of ``values``.
        values: the raw pixel values.
        info: the file.
        role: ``map`` or ``reference``, for the message.

    Raises:
        InputRasterError: naming up to ten unknown values.
    """
    bad = index == UNKNOWN
    if bad.any():
        found = np.unique(values[bad])[:10].tolist()
        hint = info.hint or f"; is it a {info.legend.name} raster?"
        raise InputRasterError(
            f"{role} {info.path} holds values {found} outside the "
            f"{legend_text(info.legend, info.labels)} legend{hint}"
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
