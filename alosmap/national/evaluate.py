"""Accuracy of a map against a reference raster (``alosmap evaluate``).

The **map** is an alosmap LULC or water map (its ``ALOSMAP_TASK`` tag says which).
The **reference** is a JAXA HRLULC tile (codes 1-14, remapped to the 9 LULC classes
or to water vs not water by :mod:`alosmap.classes`) or another alosmap map (for
comparing two maps; a LULC map serves as a water reference through its Water
class). Its legend comes from its ``ALOSMAP_TASK`` tag, else it is taken to be JAXA;
``reference_legend`` overrides. A reference whose values are not codes of its
legend is rejected with the values found, rather than being miscounted.

The reference is resampled onto the map's grid by nearest neighbour, block by block
(full-width strips of the map, :func:`rasterio.warp.reproject` of the reference
onto each strip's grid), so memory does not grow with the map. When both share one
grid up to a whole-pixel offset (a map on the JAXA grid), the reference is read
directly, exactly. Pixels that are no data in either raster, outside the
reference, or whose centre is outside the AOI are not counted.

Metrics (paper Section III-B, :mod:`alosmap.metrics`): the confusion matrix (rows =
reference, columns = map), per-class IoU and accuracy, mIoU, mAcc and overall
accuracy for LULC; IoU of water, precision and recall for water.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import LULC, get_task, jaxa_to_training
from alosmap.errors import InputRasterError
from alosmap.io.maps import IGNORE, MapInfo, apply_lut, check_known, open_map
from alosmap.metrics import ConfusionMatrix, jsonable, water_metrics
from alosmap.national.aoi import AoiMask, aoi_windows, map_aoi_mask
from alosmap.report import format_confusion, format_table

logger = logging.getLogger(__name__)

__all__ = ["evaluate_map", "format_report", "report_csv"]

#: Legends a reference can use.
REFERENCE_LEGENDS = ("jaxa", "lulc", "water")


def _reference_lut(ref: MapInfo, task: str) -> np.ndarray:
    """Reference value → class index of ``task`` (IGNORE, UNKNOWN kept)."""
    legend = ref.legend.name
    codes = np.array(ref.legend.codes, dtype=np.uint8)
    if legend == "jaxa":
        target = jaxa_to_training(codes, task)
    elif legend == task:
        target = np.arange(len(codes), dtype=np.uint8)
    elif legend == LULC.name and get_task(task).binary:
        target = (codes == 1).astype(np.uint8)  # LULC-9 code 1 = Water
    else:
        raise InputRasterError(
            f"reference {ref.path} is a {legend} map; it cannot serve as a {task} "
            "reference (use a JAXA LULC tile or an alosmap LULC map)"
        )
    raw = ref.lut()
    lut = raw.copy()
    is_class = raw < len(codes)
    lut[is_class] = target[raw[is_class]]
    return lut


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
    reference_legend: str = "auto",
    aoi: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Compare a map with a reference raster.

    Args:
        map_path: the map.
        reference: the reference raster.
        task: ``lulc`` or ``water`` for maps without an ``ALOSMAP_TASK`` tag.
        reference_legend: ``auto`` (its tag, else JAXA), ``jaxa``, ``lulc`` or
            ``water``.
        aoi: polygon file; only pixels whose centre is inside count.

    Returns:
        The JSON-ready report: ``task``, ``map``, ``reference``,
        ``reference_legend``, ``aoi``, ``classes``, ``codes``,
        ``confusion_matrix`` (rows = reference, columns = map), ``metrics``
        (fractions; LULC: :meth:`ConfusionMatrix.summary`, water:
        ``iou_water``, ``precision``, ``recall``, ``overall_accuracy``,
        ``pixels``; both: ``kappa`` (Cohen's κ) and ``f1_per_class``, class
        name → F1; LULC also ``mf1``) and ``pixels`` (``map_valid``: map pixels
        with a class inside the AOI; ``no_reference``: those without a reference class;
        ``compared``).

    Raises:
        InputRasterError: unreadable rasters, unknown task or legend, a map or
            reference without CRS (unless both share one grid), no overlap,
            values outside a legend.
        AoiError: unreadable AOI or one that misses the map.
    """
    info = open_map(map_path, task)
    if reference_legend not in ("auto", *REFERENCE_LEGENDS):
        raise InputRasterError(
            f"unknown reference legend {reference_legend!r}; expected auto, "
            f"{', '.join(REFERENCE_LEGENDS)}"
        )
    ref = open_map(
        reference,
        None if reference_legend == "auto" else reference_legend,
        default="jaxa",
        allowed=REFERENCE_LEGENDS,
        role="reference",
        option="--reference-legend",
    )
    task_name = info.legend.name
    ref_lut = _reference_lut(ref, task_name)
    offset = _placement(info, ref)
    mask = map_aoi_mask(aoi, info)
    cm, map_valid = _confusion(info, ref, ref_lut, offset, mask)
    if cm.total == 0:
        where = " inside the AOI" if aoi is not None else ""
        raise InputRasterError(
            f"no pixel{where} has both a class in map {info.path} and a reference "
            f"class in {ref.path} ({map_valid} mapped pixels, all without "
            "reference); is it the right reference tile?"
        )
    names = info.legend.names
    if get_task(task_name).binary:
        metrics: dict[str, Any] = {
            **water_metrics(cm),
            "overall_accuracy": cm.overall_accuracy(),
            "pixels": cm.total,
            "kappa": cm.kappa(),
            "f1_per_class": dict(zip(names, cm.f1().tolist(), strict=True)),
        }
    else:
        metrics = cm.summary(names)
    return jsonable(
        {
            "task": task_name,
            "map": str(info.path),
            "reference": str(ref.path),
            "reference_legend": ref.legend.name,
            "aoi": None if aoi is None else str(aoi),
            "classes": names,
            "codes": info.legend.codes,
            "confusion_matrix": cm.matrix.tolist(),
            "metrics": metrics,
            "pixels": {
                "map_valid": map_valid,
                "no_reference": map_valid - cm.total,
                "compared": cm.total,
            },
        }
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
    ref_lut: np.ndarray,
    offset: tuple[int, int] | None,
    mask: AoiMask | None,
) -> tuple[ConfusionMatrix, int]:
    """Confusion matrix of the map against the reference, block by block.

    Returns:
        The matrix (rows = reference, columns = map) and the number of map pixels
        with a class inside the AOI (compared or without reference).
    """
    from alosmap.io.raster import open_raster

    cm = ConfusionMatrix(len(info.legend.classes))
    k = cm.num_classes
    map_valid = 0
    with open_raster(info.path) as mds, open_raster(ref.path) as rds:
        for win, inside in aoi_windows(info, mask):
            pred = info.classify(mds.read(1, window=win), "map")
            raw = _reference_block(rds, ref, info, win, offset)
            truth = apply_lut(ref_lut, raw, ref.nodata)
            check_known(truth, raw, ref, "reference")
            valid = pred != IGNORE
            if inside is not True:
                valid &= inside
            has_ref = valid & (truth != IGNORE)
            map_valid += int(np.count_nonzero(valid))
            # pair index t·K + p (< K² ≤ 81 fits uint8); bin K² collects the rest
            pair = truth * np.uint8(k) + pred
            pair[~has_ref] = k * k
            counts = np.bincount(pair.ravel(), minlength=k * k + 1)
            cm.matrix += counts[: k * k].reshape(k, k)
    return cm, map_valid


def _reference_block(
    rds: Any, ref: MapInfo, info: MapInfo, win: Any, offset: tuple[int, int] | None
) -> np.ndarray:
    """Reference values on the grid of map window ``win`` (no data outside)."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    h, w = int(win.height), int(win.width)
    fill = ref.legend.nodata
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


def _title(report: dict[str, Any]) -> str:
    where = f", inside {Path(report['aoi']).name}" if report.get("aoi") else ""
    return (
        f"{Path(report['map']).name} vs {Path(report['reference']).name} "
        f"({report['reference_legend']} reference{where}; "
        f"{report['pixels']['compared']} pixels compared)"
    )


def format_report(report: dict[str, Any]) -> str:
    """The paper's table (Table II or III) and the confusion matrix, as text."""
    table = format_table(
        report["task"], report["metrics"], report["classes"], _title(report)
    )
    cm = format_confusion(report["confusion_matrix"], report["classes"])
    return (
        f"{table}\n\nConfusion matrix (pixels; rows = reference, columns = map)\n{cm}"
    )


def report_csv(report: dict[str, Any]) -> str:
    """One row per reference class: metrics, then its row of the confusion matrix.

    Columns: ``class``, ``code``, ``iou``, ``accuracy`` (= recall),
    ``precision``, ``f1``, ``reference_pixels``, ``map_pixels``, then one
    ``map:<class>`` column per map class (pixel counts: the confusion matrix, rows
    = reference). A last row ``all`` holds mIoU, mAcc and mean F1 (LULC; empty for
    water) and the column totals. Metrics are fractions; empty where undefined.
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
            ]
        )
    met = report["metrics"]
    lulc = not get_task(report["task"]).binary

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
        ]
    )
    return buf.getvalue()
