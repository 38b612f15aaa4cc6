"""The values found in label rasters, checked against a legend before a build.

Every label raster is read once (in row windows) and its values counted. A value
the legend names is a class, an ``ignore`` value (the legend's, or
``--label-nodata``), the raster's own no-data value or NaN means "no label";
anything else is **refused** with a table of the values found (pixels, share,
files), so that a 0/1 water mask is never read as JAXA codes (where 0 is no data)
or any other scheme it is not.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import Legend
from alosmap.errors import InputRasterError
from alosmap.train.errors import DatasetBuildError

__all__ = [
    "LabelValues",
    "UnknownLabelValuesError",
    "check_label_values",
    "format_value_rows",
    "scan_label_values",
    "value_rows",
]

#: Rows of the value table shown (the rest is summed up in one line).
TABLE_ROWS = 30
#: Most distinct values a set of label rasters may hold (more: not labels).
MAX_VALUES = 10_000
#: Key of NaN pixels in :attr:`LabelValues.counts`.
NAN = "NaN"


class UnknownLabelValuesError(DatasetBuildError):
    """Label values that the legend does not name; :attr:`table` lists the values."""

    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.table = table


@dataclass
class LabelValues:
    """Pixel counts of the values of some label rasters.

    Attributes:
        counts: value (int or float; ``"NaN"`` for NaN) → pixels.
        files: value → the files that hold it.
        nodata: value → the files whose no-data tag it is.
        total: pixels read.
    """

    counts: dict[float | str, int] = field(default_factory=dict)
    files: dict[float | str, list[str]] = field(default_factory=dict)
    nodata: dict[float | str, list[str]] = field(default_factory=dict)
    total: int = 0

    def add(self, values: np.ndarray, counts: np.ndarray, name: str) -> None:
        """Add the counts of one window of the file ``name``."""
        for v, n in zip(values.tolist(), counts.tolist(), strict=True):
            key: float | str = NAN if isinstance(v, float) and math.isnan(v) else v
            if isinstance(key, float) and key.is_integer():
                key = int(key)
            self.counts[key] = self.counts.get(key, 0) + int(n)
            names = self.files.setdefault(key, [])
            if name not in names:
                names.append(name)
            self.total += int(n)

    def meaning(self, value: float | str, legend: Legend) -> str:
        """What a value means to ``legend``: a class, no label, or not named."""
        if value == NAN:
            return "no label (NaN)"
        if value in self.nodata and set(self.files[value]) <= set(self.nodata[value]):
            return "no label (raster no-data)"
        if isinstance(value, int):
            if value in legend.ignore:
                return "no label (ignored)"
            index = legend.label_values().get(value)
            if index is not None:
                return f"class {index}: {legend.classes[index].name}"
        return "NOT IN THE LEGEND"

    def unknown(self, legend: Legend) -> list[float | str]:
        """The values the legend does not name (and that are not no data)."""
        return [v for v in self.counts if self.meaning(v, legend).startswith("NOT")]


def _window_values(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a window and their counts."""
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:
        bc = np.bincount(a.ravel())
        values = np.flatnonzero(bc)
        return values, bc[values]
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
    return np.unique(a, return_counts=True, equal_nan=True)


def row_blocks(
    ds: Any, path: str | os.PathLike[str], block_rows: int, band: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, band ``band`` of block_rows full-width rows)`` of a raster.

    Raises:
        InputRasterError: rows that cannot be read (naming them and ``path``).
    """
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    for r0 in range(0, ds.height, block_rows):
        h = min(block_rows, ds.height - r0)
        try:
            a = ds.read(band, window=Window(0, r0, ds.width, h))
        except (RasterioError, OSError) as exc:
            raise InputRasterError(
                f"cannot read rows {r0}..{r0 + h} of {path}: {exc}"
            ) from exc
        yield r0, a


def scan_label_values(
    paths: Sequence[str | os.PathLike[str]], *, block_rows: int = 1024, band: int = 1
) -> LabelValues:
    """Count the values of every label raster (its band ``band``), each file once.

    Raises:
        InputRasterError: a file that cannot be read.
    """
    from alosmap.io.raster import open_raster

    out = LabelValues()
    done: set[str] = set()
    for path in map(Path, paths):
        key = os.path.abspath(path)
        if key in done:
            continue
        done.add(key)
        with open_raster(path) as ds:
            nd = ds.nodatavals[band - 1] if ds.count >= band else None
            if nd is not None and not math.isnan(nd):
                k = int(nd) if float(nd).is_integer() else float(nd)
                out.nodata.setdefault(k, []).append(path.name)
            for _, a in row_blocks(ds, path, block_rows, band):
                out.add(*_window_values(a), path.name)
                if len(out.counts) > MAX_VALUES:
                    raise DatasetBuildError(
                        f"{path}: more than {MAX_VALUES:,} distinct values in the "
                        "label rasters; labels are class values (is it an image?)"
                    )
    return out


def _sort_key(v: float | str) -> tuple[int, float]:
    return (1, 0.0) if isinstance(v, str) else (0, float(v))


def value_rows(values: LabelValues, legend: Legend) -> list[dict[str, Any]]:
    """One record per value found, in value order (text values last).

    Keys: ``value``, ``pixels``, ``share`` (of all pixels scanned, 0–1), ``files``
    (how many label rasters hold it) and ``meaning`` (:meth:`LabelValues.meaning`).
    """
    return [
        {
            "value": v,
            "pixels": values.counts[v],
            "share": values.counts[v] / max(1, values.total),
            "files": len(values.files[v]),
            "meaning": values.meaning(v, legend),
        }
        for v in sorted(values.counts, key=_sort_key)
    ]


def format_value_rows(
    rows: Sequence[dict[str, Any]], limit: int = TABLE_ROWS
) -> list[str]:
    """:func:`value_rows` records as text lines (a header, at most ``limit`` rows)."""
    lines = [f"{'value':>10} {'pixels':>12} {'share %':>8} {'files':>6}  meaning"]
    for r in rows[:limit]:
        lines.append(
            f"{r['value']!s:>10} {r['pixels']:>12,} {100 * r['share']:>8.2f} "
            f"{r['files']:>6}  {r['meaning']}"
        )
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more values")
    return lines


def value_table(values: LabelValues, legend: Legend, limit: int = TABLE_ROWS) -> str:
    """The values found: value, pixels, share, files, and what each means."""
    rows = value_rows(values, legend)
    if len(rows) > limit:  # unknown values first when the table is cut
        unknown = set(values.unknown(legend))
        rows.sort(key=lambda r: r["value"] not in unknown)
    return "\n".join(format_value_rows(rows, limit))


def check_label_values(values: LabelValues, legend: Legend, source: str) -> None:
    """Refuse label values that ``legend`` does not name.

    Args:
        values: the scan of the label rasters.
        legend: the legend (with ``--label-nodata`` values among its ignored ones).
        source: how the legend was given (``--legend`` value) for the message.

    Raises:
        UnknownLabelValuesError: one line naming the values (with their pixels,
            share and files) and what to do; ``table`` holds the full table.
    """
    unknown = values.unknown(legend)
    if not unknown:
        return
    unknown.sort(key=lambda v: -values.counts[v])
    parts = []
    for v in unknown[:5]:
        share = 100.0 * values.counts[v] / max(1, values.total)
        files = values.files[v]
        parts.append(
            f"{v} ({values.counts[v]:,} px, {share:.2f} %, {len(files)} file(s), "
            f"e.g. {files[0]})"
        )
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    named = ", ".join(map(str, sorted(legend.label_values()))) or "none"
    raise UnknownLabelValuesError(
        f"label values that the legend {legend.name!r} (--legend {source}) does not "
        f"name: {'; '.join(parts)}{more}. The legend names {named}"
        + (
            f" and ignores {', '.join(map(str, legend.ignore))}"
            if legend.ignore
            else ""
        )
        + ". Name them in a legend file (--legend FILE, see docs/dataset_format.md) "
        "or declare them no data (--label-nodata V); nothing was written",
        "label values found (" + source + "):\n" + value_table(values, legend),
    )
