"""Accuracy of a map against a reference raster (``alosmap evaluate``).

The **map** is a class map of alosmap: LULC, water, or the map of a model trained
with its own legend (its ``ALOSMAP_SPEC`` tag carries the legend: codes, names,
no-data, binary or not). The **reference** is read through a legend too:

* another alosmap map (its tags say which legend; for comparing two maps; a LULC
  map serves as a water reference through its Water class);
* ``reference_legend`` ``jaxa``, ``lulc`` or ``water``: map codes of that legend
  (``jaxa``: a JAXA HRLULC tile, codes 1-14, remapped to the map's classes through
  the label values of the map's legend: 14 → 9 for LULC, water vs not);
* ``reference_legend`` a label preset (:data:`alosmap.classes.LABEL_PRESETS`:
  ``jaxa-lulc9``, ``jaxa-water``, ``water-binary``) or a legend file (YAML/JSON,
  :func:`alosmap.classes.load_legend`): the reference holds that legend's label
  values (:meth:`~alosmap.classes.Legend.labels_to_index`), e.g. the label rasters
  a model was trained on, read with the legend file it was trained with;
* without ``reference_legend`` (``auto``), a reference without alosmap tags is
  taken for a JAXA tile when the map's legend reads JAXA labels (LULC, water), and
  refused when its values do not fit: values outside JAXA's codes, or only 0 and 1
  (a 0/1 raster whose 0 would be JAXA's no data). A map with a user's legend needs
  ``reference_legend`` for such a reference.

Reference classes are matched to the map's classes by name (a binary map's
positive class, e.g. Water, against the rest when the reference has more classes).
A reference whose values are not in its legend is rejected with the values found,
rather than being miscounted.

The reference is resampled onto the map's grid by nearest neighbour, block by block
(full-width strips of the map, :func:`rasterio.warp.reproject` of the reference
onto each strip's grid), so memory does not grow with the map. When both share one
grid up to a whole-pixel offset (a map on the JAXA grid), the reference is read
directly, exactly. Pixels that are no data in either raster, outside the
reference, or whose centre is outside the AOI are not counted.

Metrics (paper Section III-B, :mod:`alosmap.metrics`): the confusion matrix (rows =
reference, columns = map), per-class IoU and accuracy, mIoU, mAcc and overall
accuracy for a multi-class legend (LULC); IoU of the positive class (water),
precision and recall for a binary one.

**Means over the classes present in the reference.** A class of the legend that the
reference does not hold (no Solar panel in this tile) has no true pixel: its IoU
and F1 are 0 as soon as the map shows it once, whatever the map's quality on the
classes that are there. mIoU, mAcc and mF1 are therefore means over the classes
present in the reference (``means_over``, ``*_classes`` say so); the absent
classes keep their rows, marked (``absent_from_reference``, ``in_reference``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import (
    JAXA,
    LABEL_PRESETS,
    TASK_RECORDS,
    Legend,
    LegendError,
    load_legend,
)
from alosmap.errors import InputRasterError
from alosmap.io.aoi import AoiMask, aoi_windows, map_aoi_mask
from alosmap.io.maps import (
    IGNORE,
    UNKNOWN,
    MapInfo,
    check_known,
    legend_of_file,
    open_map,
)
from alosmap.metrics import ConfusionMatrix, jsonable, water_metrics
from alosmap.report import format_confusion, format_table

logger = logging.getLogger(__name__)

__all__ = ["REFERENCE_CHOICES", "evaluate_map", "format_report", "report_csv"]

#: Legends a reference's map codes can be named by.
REFERENCE_LEGENDS = (JAXA.name, *TASK_RECORDS)
#: Every name ``reference_legend`` takes (besides a legend file).
REFERENCE_CHOICES = ("auto", *REFERENCE_LEGENDS, *LABEL_PRESETS)
_HOW = (
    "name its legend with --reference-legend "
    + ", ".join(REFERENCE_CHOICES[1:])
    + " or a legend file (YAML/JSON)"
)


def _reference_legend(value: str | Legend) -> str | Legend | None:
    """``reference_legend`` as :func:`open_map` takes it (None for ``auto``).

    Raises:
        InputRasterError: neither a name of :data:`REFERENCE_CHOICES` nor a
            readable legend file.
    """
    if isinstance(value, Legend) or value in REFERENCE_LEGENDS:
        return value
    if value == "auto":
        return None
    try:
        return load_legend(value)
    except LegendError as exc:
        raise InputRasterError(
            f"--reference-legend {value!r}: {exc}; expected one of "
            f"{', '.join(REFERENCE_CHOICES)} or a legend file (YAML/JSON)"
        ) from exc


def _open_reference(
    reference: str | os.PathLike[str], given: str | Legend | None, target: Legend
) -> tuple[MapInfo, bool]:
    """Open the reference with its legend; and whether it was taken for JAXA.

    Raises:
        InputRasterError: see :func:`evaluate_map`.
    """
    defaulted = given is None and legend_of_file(reference) is None
    if defaulted and target.name not in TASK_RECORDS:
        raise InputRasterError(
            f"reference {reference} has no alosmap tags, and the map's legend "
            f"{target.name!r} is not JAXA's: {_HOW} (e.g. the legend file the "
            "model was trained with)"
        )
    hint = "; it has no alosmap tags, so it was read as a JAXA HRLULC tile: " + _HOW
    ref = open_map(
        reference,
        given,
        default=JAXA,  # JAXA's labels, checked by _check_jaxa_default
        allowed=REFERENCE_LEGENDS,
        role="reference",
        option="--reference-legend",
        labels=True,
        hint=hint if defaulted else "",
    )
    return ref, defaulted


def _reference_to_map(ref: MapInfo, target: Legend) -> np.ndarray:
    """256-entry lookup: reference class index → map class index.

    :data:`IGNORE` stays; reference classes the map's legend has no class for
    become :data:`UNKNOWN` (refused when present, :func:`_reference_classes`).

    Raises:
        InputRasterError: the reference's classes cannot be matched to the map's.
    """
    src = ref.legend
    out = np.full(256, UNKNOWN, dtype=np.uint8)
    out[IGNORE] = IGNORE
    n = len(src.classes)
    if src.name == JAXA.name:  # JAXA codes are the label values of LULC and water
        out[:n] = target.labels_to_index(np.array(src.codes, dtype=np.int64))
        return out
    index = {c.name.lower(): i for i, c in enumerate(target.classes)}
    names = [c.name.lower() for c in src.classes]
    if all(name in index for name in names):
        out[:n] = [index[name] for name in names]
        return out
    positive = target.positive.name.lower()
    if target.binary and positive in names:
        out[:n] = [1 if name == positive else 0 for name in names]
        return out
    what = f"read with the {src.name} legend" if ref.labels else f"a {src.name} map"
    raise InputRasterError(
        f"reference {ref.path} is {what}; it cannot serve as a {target.name} "
        f"reference (its classes {src.names} are not the map's {target.names})"
    )


def _aligned_offset(m: MapInfo, r: MapInfo) -> tuple[int, int] | None:
    """(row, col) of the map's origin in the reference grid if both share a grid."""
    if (m.crs is None) != (r.crs is None) or (m.crs is not None and m.crs != r.crs):
        return None
    a, b = m.transform, r.transform
    if a.b != b.b or a.d != b.d or a.b or a.d:
        return None
    if not (
        math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)
    ):
        return None
    # drift over the whole map from a slightly different pixel size stays < 1e-3 px
    if (
        m.width * abs(a.a - b.a) / abs(b.a) > 1e-3
        or m.height * abs(a.e - b.e) / abs(b.e) > 1e-3
    ):
        return None
    col = (a.c - b.c) / b.a
    row = (a.f - b.f) / b.e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(row), round(col)


def _footprints_overlap(m: MapInfo, r: MapInfo) -> bool:
    """Whether the reference's outline overlaps the map's (in the map's CRS)."""
    import shapely
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    outline = r.footprint()
    if m.crs is not None and r.crs is not None and m.crs != r.crs:
        step = max(r.width, r.height) / 64
        dense = shapely.segmentize(outline, step * max(abs(r.transform.a), 1e-12))
        try:
            outline = shape(transform_geom(r.crs, m.crs, mapping(dense)))
        except Exception:  # a failed transform: let the block loop decide
            return True
    return bool(outline.intersects(m.footprint()))


def evaluate_map(
    map_path: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    *,
    task: str | None = None,
    reference_legend: str | Legend = "auto",
    aoi: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Compare a map with a reference raster.

    Args:
        map_path: the map.
        reference: the reference raster.
        task: ``lulc`` or ``water`` for maps without an ``ALOSMAP_TASK`` tag.
        reference_legend: ``auto`` (its tags, else JAXA for a LULC or water map,
            checked), ``jaxa``, ``lulc`` or ``water`` (map codes), a label preset
            (``jaxa-lulc9``, ``jaxa-water``, ``water-binary``), a legend file, or a
            :class:`~alosmap.classes.Legend` (label values).
        aoi: polygon file; only pixels whose centre is inside count.

    Returns:
        The JSON-ready report: ``task``, ``binary``, ``map``, ``reference``,
        ``reference_legend``, ``aoi``, ``classes``, ``codes``,
        ``confusion_matrix`` (rows = reference, columns = map), ``metrics``
        (fractions; multi-class: :meth:`ConfusionMatrix.summary` with mIoU,
        mAcc, mF1 over the classes present in the reference, ``means_over``,
        ``absent_from_reference`` and per class ``in_reference``; binary:
        ``iou_water`` (IoU of the positive class), ``precision``, ``recall``,
        ``overall_accuracy``, ``pixels``; both: ``kappa`` (Cohen's κ) and
        ``f1_per_class``, class name → F1; multi-class also ``mf1``) and
        ``pixels`` (``map_valid``: map pixels with a class inside the AOI;
        ``no_reference``: those without a reference class; ``compared``).

    Raises:
        InputRasterError: unreadable rasters, unknown task or legend, a map or
            reference without CRS (unless both share one grid), no overlap,
            values outside a legend, a raw reference that does not look like a
            JAXA tile without ``reference_legend``.
        AoiError: unreadable AOI or one that misses the map.
    """
    info = open_map(map_path, task)
    given = _reference_legend(reference_legend)
    ref, jaxa_default = _open_reference(reference, given, info.legend)
    offset = _placement(info, ref)
    mask = map_aoi_mask(aoi, info)
    cm, map_valid, found = _confusion(info, ref, offset, mask, jaxa_default)
    if jaxa_default:
        _check_jaxa_default(ref, found)
    if cm.total == 0:
        where = " inside the AOI" if aoi is not None else ""
        raise InputRasterError(
            f"no pixel{where} has both a class in map {info.path} and a reference "
            f"class in {ref.path} ({map_valid} mapped pixels, all without "
            "reference); is it the right reference tile?"
        )
    legend = info.legend
    return jsonable(
        {
            "task": legend.name,
            "binary": legend.binary,
            "map": str(info.path),
            "reference": str(ref.path),
            "reference_legend": _legend_label(reference_legend, ref),
            "aoi": None if aoi is None else str(aoi),
            "classes": legend.names,
            "codes": legend.codes,
            "confusion_matrix": cm.matrix.tolist(),
            "metrics": _metrics(cm, legend),
            "pixels": {
                "map_valid": map_valid,
                "no_reference": map_valid - cm.total,
                "compared": cm.total,
            },
        }
    )


def _legend_label(given: str | Legend, ref: MapInfo) -> str:
    """How the report names the reference's legend: its tags', or as given."""
    if not ref.labels or given == "auto":
        return ref.legend.name
    return given.name if isinstance(given, Legend) else str(given)


def _metrics(cm: ConfusionMatrix, legend: Legend) -> dict[str, Any]:
    """Table III metrics of a binary legend, else Table II's (:meth:`summary`).

    Multi-class: the means over the classes present in the reference (see the
    module docs); each class says whether it is (``in_reference``).
    """
    names = legend.names
    if not legend.binary:
        return _present_means(cm, names)
    return {
        **water_metrics(cm),
        "overall_accuracy": cm.overall_accuracy(),
        "pixels": cm.total,
        "kappa": cm.kappa(),
        "f1_per_class": dict(zip(names, cm.f1().tolist(), strict=True)),
    }


def _present_means(cm: ConfusionMatrix, names: list[str]) -> dict[str, Any]:
    """:meth:`ConfusionMatrix.summary` with mIoU, mAcc, mF1 over the present classes.

    Present: at least one reference pixel. Their IoU, accuracy and F1 are defined.
    """
    out = cm.summary(names)
    present = cm.matrix.sum(axis=1) > 0
    n = int(present.sum())
    for key, values in (("miou", cm.iou()), ("macc", cm.accuracy()), ("mf1", cm.f1())):
        out[key] = float(values[present].mean()) if n else None
        out[f"{key}_classes"] = n
    for name, there in zip(names, present.tolist(), strict=True):
        out["per_class"][name]["in_reference"] = there
    out["means_over"] = "classes present in the reference"
    out["absent_from_reference"] = [
        name for name, there in zip(names, present.tolist(), strict=True) if not there
    ]
    return out


def _check_jaxa_default(ref: MapInfo, found: Mapping[int, int]) -> None:
    """A reference taken for a JAXA tile must not look like a 0/1 raster.

    Raises:
        InputRasterError: only the values 0 and 1 were found (JAXA's 0 is no
            data): naming the values, their shares and how to name the legend.
    """
    counts = {v: n for v, n in sorted(found.items()) if n and v != ref.nodata}
    if set(counts) != {0, 1}:
        return
    total = sum(counts.values())
    shares = ", ".join(f"{v} ({100 * n / total:.1f} %)" for v, n in counts.items())
    raise InputRasterError(
        f"reference {ref.path} has no alosmap tags and holds only the values "
        f"{shares} where the map has data: read as a JAXA HRLULC tile its 0 would "
        f"be no data; {_HOW} (water-binary for 0/1 water; jaxa to read it as JAXA "
        "codes after all)"
    )


def _placement(info: MapInfo, ref: MapInfo) -> tuple[int, int] | None:
    """Check the reference can be put on the map's grid; its whole-pixel offset.

    Returns:
        ``(row, col)`` of the map's origin in the reference grid when both share
        one grid (see :func:`_aligned_offset`), else None (the reference is
        reprojected).

    Raises:
        InputRasterError: a raster without CRS (and no shared grid), or no overlap.
    """
    offset = _aligned_offset(info, ref)
    if offset is None and (info.crs is None or ref.crs is None):
        which = "map" if info.crs is None else "reference"
        raise InputRasterError(
            f"the {which} has no CRS, so the reference cannot be placed on the "
            "map's grid; assign one (gdal_edit.py -a_srs)"
        )
    if not _footprints_overlap(info, ref):
        raise InputRasterError(
            f"reference {ref.path} does not overlap map {info.path}; pick the "
            "reference tile that covers the map"
        )
    return offset


def _confusion(
    info: MapInfo,
    ref: MapInfo,
    offset: tuple[int, int] | None,
    mask: AoiMask | None,
    count_values: bool = False,
) -> tuple[ConfusionMatrix, int, dict[int, int]]:
    """Confusion matrix of the map against the reference, block by block.

    Args:
        info: the map.
        ref: the reference.
        offset: see :func:`_placement`.
        mask: the AOI on the map's grid, or None.
        count_values: also count the reference's raw values where the map has
            data (for :func:`_check_jaxa_default`).

    Returns:
        The matrix (rows = reference, columns = map), the number of map pixels
        with a class inside the AOI (compared or without reference), and the
        counts of the reference's values (empty without ``count_values``).
    """
    from alosmap.io.raster import open_raster

    cm = ConfusionMatrix(len(info.legend.classes))
    k = cm.num_classes
    to_map = _reference_to_map(ref, info.legend)
    pair_type = np.uint8 if k * k < 255 else np.uint16
    map_valid = 0
    found: dict[int, int] = {}
    with open_raster(info.path) as mds, open_raster(ref.path) as rds:
        ref, fill = _with_fill(ref, np.dtype(rds.dtypes[0]))
        for win, inside in aoi_windows(info, mask):
            pred = info.classify(mds.read(1, window=win), "map")
            raw = _reference_block(rds, ref, info, win, offset, fill)
            truth = _reference_classes(ref, raw, to_map, info)
            valid = pred != IGNORE
            if inside is not True:
                valid &= inside
            if count_values:
                _count(found, raw[valid])
            has_ref = valid & (truth != IGNORE)
            map_valid += int(np.count_nonzero(valid))
            # pair index t·K + p (< K²); bin K² collects the rest
            pair = truth.astype(pair_type) * pair_type(k) + pred
            pair[~has_ref] = k * k
            counts = np.bincount(pair.ravel(), minlength=k * k + 1)
            cm.matrix += counts[: k * k].reshape(k, k)
    return cm, map_valid, found


def _reference_classes(
    ref: MapInfo, raw: np.ndarray, to_map: np.ndarray, info: MapInfo
) -> np.ndarray:
    """The map's class index of each reference value (:data:`IGNORE` at no data).

    Raises:
        InputRasterError: values outside the reference's legend, or reference
            classes the map's legend has no class for.
    """
    index = ref.index(raw)
    check_known(index, raw, ref, "reference")
    truth = to_map[index]
    bad = truth == UNKNOWN
    if bad.any():
        values = np.unique(raw[bad])[:10].tolist()
        raise InputRasterError(
            f"reference {ref.path} holds values {values} of the {ref.legend.name} "
            f"legend that the map's legend {info.legend.name!r} has no class for "
            f"({', '.join(info.legend.names)})"
        )
    return truth


def _count(found: dict[int, int], values: np.ndarray) -> None:
    """Add the counts of ``values`` to ``found`` (value → pixels)."""
    if values.dtype == np.uint8:
        n = np.bincount(values, minlength=256)
        for v in np.flatnonzero(n).tolist():
            found[v] = found.get(v, 0) + int(n[v])
        return
    vals, n = np.unique(values, return_counts=True)
    for v, c in zip(vals.tolist(), n.tolist(), strict=True):
        found[v] = found.get(v, 0) + c


def _with_fill(ref: MapInfo, dtype: np.dtype) -> tuple[MapInfo, float]:
    """A value of ``dtype`` that the reference reads as no data (outside it).

    Its no-data value; else its legend's no-data code (map codes), an ignored
    label value, or (for a label legend that ignores none) a value it does not
    name, which then counts as the reference's no data.
    """
    if ref.nodata is not None:
        return ref, ref.nodata
    lg = ref.legend
    if not ref.labels:
        return ref, lg.nodata
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    for v in lg.ignore:
        if lo <= v <= hi:
            return ref, v
    named = lg.label_values()
    v = next(x for x in range(int(hi), int(hi) - 300, -1) if x not in named)
    return dataclasses.replace(ref, nodata=float(v)), v


def _reference_block(
    rds: Any,
    ref: MapInfo,
    info: MapInfo,
    win: Any,
    offset: tuple[int, int] | None,
    fill: float,
) -> np.ndarray:
    """Reference values on the grid of map window ``win`` (``fill`` outside)."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    h, w = int(win.height), int(win.width)
    out = np.full((h, w), fill, dtype=rds.dtypes[0])
    if offset is not None:
        r0 = int(win.row_off) + offset[0]
        c0 = int(win.col_off) + offset[1]
        rr0, rr1 = max(r0, 0), min(r0 + h, ref.height)
        cc0, cc1 = max(c0, 0), min(c0 + w, ref.width)
        if rr0 < rr1 and cc0 < cc1:
            out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = rds.read(
                1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            )
        return out
    import rasterio
    from rasterio.warp import Resampling, reproject

    reproject(
        source=rasterio.band(rds, 1),
        destination=out,
        src_transform=rds.transform,
        src_crs=rds.crs,
        src_nodata=ref.nodata if ref.nodata is not None else fill,
        dst_transform=window_transform(win, info.transform),
        dst_crs=info.crs,
        dst_nodata=fill,
        resampling=Resampling.nearest,
    )
    return out


def _is_binary(report: dict[str, Any]) -> bool:
    """Whether a report is of a binary legend (reports of earlier releases: water)."""
    if "binary" in report:
        return bool(report["binary"])
    preset = TASK_RECORDS.get(str(report.get("task")))
    return preset is not None and preset.binary


def _title(report: dict[str, Any]) -> str:
    where = f", inside {Path(report['aoi']).name}" if report.get("aoi") else ""
    return (
        f"{Path(report['map']).name} vs {Path(report['reference']).name} "
        f"({report['reference_legend']} reference{where}; "
        f"{report['pixels']['compared']} pixels compared)"
    )


def _marked(report: dict[str, Any]) -> tuple[list[str], dict[str, Any], str]:
    """Class names (absent ones marked ``*``), metrics keyed by them, and the note.

    Reports of earlier releases (means over every class with a value) get no mark
    and no note.
    """
    names, met = list(report["classes"]), report["metrics"]
    if _is_binary(report) or "means_over" not in met:
        return names, met, ""
    absent = set(met.get("absent_from_reference") or [])
    shown = [f"{n}*" if n in absent else n for n in names]
    marked = dict(met)
    for key in ("per_class", "f1_per_class"):
        if key in met:
            marked[key] = {s: met[key][n] for s, n in zip(shown, names, strict=True)}
    n = met.get("miou_classes", len(names) - len(absent))
    note = f"means over the {n} classes present in the reference"
    if absent:
        note += (
            "; * = absent from it, left out of the means: any map pixel of such a "
            "class is a false alarm, its IoU 0"
        )
    return shown, marked, note


def format_report(report: dict[str, Any]) -> str:
    """The paper's table (Table II or III) and the confusion matrix, as text.

    Multi-class: the classes absent from the reference are marked ``*`` and a line
    says what the means are over.
    """
    names, metrics, note = _marked(report)
    table = format_table(
        report["task"],
        metrics,
        names,
        _title(report),
        binary=_is_binary(report),
    )
    if note:
        table += f"\n({note})"
    cm = format_confusion(report["confusion_matrix"], report["classes"])
    return (
        f"{table}\n\nConfusion matrix (pixels; rows = reference, columns = map)\n{cm}"
    )


def report_csv(report: dict[str, Any]) -> str:
    """One row per reference class: metrics, then its row of the confusion matrix.

    Columns: ``class``, ``code``, ``iou``, ``accuracy`` (= recall),
    ``precision``, ``f1``, ``reference_pixels``, ``map_pixels``, then one
    ``map:<class>`` column per map class (pixel counts: the confusion matrix, rows
    = reference), then ``in_reference`` (``yes``/``no``: whether the reference
    holds the class). A last row ``all`` holds mIoU, mAcc and mean F1 (LULC, over
    the classes present in the reference; empty for water) and the column totals.
    Metrics are fractions; empty where undefined.
    """
    m = np.asarray(report["confusion_matrix"], dtype=np.int64)
    names = report["classes"]
    tp = np.diag(m).astype(np.float64)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "class",
            "code",
            "iou",
            "accuracy",
            "precision",
            "f1",
            "reference_pixels",
            "map_pixels",
            *(f"map:{n}" for n in names),
            "in_reference",
        ]
    )

    def frac(num: float, den: float) -> str:
        return repr(float(num) / float(den)) if den else ""

    for i, (name, code) in enumerate(zip(names, report["codes"], strict=True)):
        union = support[i] + predicted[i] - tp[i]
        w.writerow(
            [
                name,
                code,
                frac(tp[i], union),
                frac(tp[i], support[i]),
                frac(tp[i], predicted[i]),
                frac(2.0 * tp[i], support[i] + predicted[i]),
                int(support[i]),
                int(predicted[i]),
                *(int(v) for v in m[i]),
                "yes" if support[i] else "no",
            ]
        )
    met = report["metrics"]
    lulc = not _is_binary(report)

    def opt(key: str) -> str:
        v = met.get(key) if lulc else None
        return "" if v is None else repr(float(v))

    w.writerow(
        [
            "all",
            "",
            opt("miou"),
            opt("macc"),
            "",
            opt("mf1"),
            int(support.sum()),
            int(predicted.sum()),
            *(int(v) for v in predicted),
            "",
        ]
    )
    return buf.getvalue()
