"""Metric reports in the paper's layout: text tables and confusion-matrix PNGs.

Shared by ``alosmap evaluate`` (a map against a reference raster) and
``alosmap train evaluate`` (a model on a dataset split). Both describe their result
with the metric dicts of :mod:`alosmap.metrics`: for LULC
:meth:`~alosmap.metrics.ConfusionMatrix.summary` (Table II: per-class IoU, mIoU, plus
per-class accuracy and mAcc), for water :func:`~alosmap.metrics.water_metrics`
(Table III: IoU_water, precision, recall). Values are fractions in [0, 1]; the
tables print percent, ``n/a`` where a value is undefined (``None``).

matplotlib is optional (``pip install 'alosmap[plot]'``) and imported only by
:func:`plot_confusion`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_write_bytes
from alosmap._imports import lazy_import
from alosmap.classes import TASK_RECORDS, Legend

__all__ = ["format_confusion", "format_table", "pct", "plot_confusion"]


#: Table III columns: header and metrics key.
_WATER_COLUMNS = (
    ("IoU_water", "iou_water"),
    ("Precision", "precision"),
    ("Recall", "recall"),
)


def pct(v: float | None) -> str:
    """A fraction as percent with two decimals (``"  n/a"`` for ``None``)."""
    return "  n/a" if v is None else f"{100.0 * v:5.2f}"


def format_table(
    task: str | Legend,
    metrics: dict[str, Any],
    classes: Sequence[str],
    title: str,
    threshold: float | None = None,
    *,
    binary: bool | None = None,
) -> str:
    """The paper's table layout as text: Table II for LULC, Table III for water.

    Args:
        task: the legend, or its name (``"lulc"``, ``"water"``, a user's).
        metrics: for a multi-class legend the dict of
            :meth:`ConfusionMatrix.summary`, for a binary one the dict of
            :func:`water_metrics` (values may be ``None``).
        classes: class names in index order (LULC columns; a binary legend's
            positive class last).
        title: first line.
        threshold: probability threshold of a binary legend, printed when given.
        binary: whether the legend is binary; None = from ``task`` (a legend, or a
            bundled task's name), else from the metrics (Table III's keys).
    """
    m = metrics
    if _is_binary(task, m, binary):
        return _water_table(m, classes, title, threshold)
    names = list(classes)
    width = max(9, *(len(n) for n in names))
    per = m["per_class"]
    f1 = m.get("f1_per_class")

    def row(label: str, values: Sequence[float | None], mean: float | None) -> str:
        cells = " ".join(f"{pct(v):>{width}}" for v in values)
        return f"{label:<10}{cells} {pct(mean):>7}"

    lines = [
        title,
        " " * 10 + " ".join(f"{n:>{width}}" for n in names) + f" {'mean':>7}",
        row("IoU", [per[n]["iou"] for n in names], m["miou"]),
        row("Acc", [per[n]["accuracy"] for n in names], m["macc"]),
    ]
    if f1 is not None:
        lines.append(row("F1", [f1[n] for n in names], m.get("mf1")))
    kappa = m.get("kappa")
    lines.append(
        f"(percent; mIoU {pct(m['miou']).strip()}, mAcc {pct(m['macc']).strip()}, "
        f"overall accuracy {pct(m['overall_accuracy']).strip()}"
        + ("" if "kappa" not in m else f", Cohen's kappa {_num(kappa)}")
        + "; n/a = class absent)"
    )
    return "\n".join(lines)


def _is_binary(
    task: str | Legend, metrics: dict[str, Any], binary: bool | None
) -> bool:
    """Whether a table is Table III (a binary legend)."""
    if binary is not None:
        return binary
    if isinstance(task, Legend):
        return task.binary
    if task in TASK_RECORDS:
        return TASK_RECORDS[task].binary
    return "iou_water" in metrics and "per_class" not in metrics


def _num(v: float | None) -> str:
    """A plain number with three decimals (``n/a`` for ``None``)."""
    return "n/a" if v is None else f"{v:.3f}"


def _water_table(
    m: dict[str, Any], classes: Sequence[str], title: str, threshold: float | None
) -> str:
    """Table III (IoU_water, precision, recall) and what else the metrics have.

    IoU, precision and recall are of the positive class (the last of ``classes``:
    Water, or a user's, whose name then heads the IoU column). F1 of that class,
    overall accuracy and Cohen's kappa are added when the metrics hold them
    (``alosmap evaluate`` does; training validation does not).
    """
    cols = [(name, m[key]) for name, key in _WATER_COLUMNS]
    positive = list(classes)[-1] if classes else None  # a binary legend's positive
    if positive is not None and positive.lower() != "water":
        cols[0] = (f"IoU_{positive.replace(' ', '_')}", cols[0][1])
    f1 = m.get("f1_per_class") or {}
    if positive is not None and positive in f1:
        cols.append(("F1", f1[positive]))
    if "overall_accuracy" in m:
        cols.append(("OA", m["overall_accuracy"]))
    widths = [max(10, len(name)) for name, _ in cols]
    head = " ".join(f"{name:>{w}}" for (name, _), w in zip(cols, widths, strict=True))
    row = " ".join(f"{pct(v):>{w}}" for (_, v), w in zip(cols, widths, strict=True))
    note = "(percent" if threshold is None else f"(percent; threshold {threshold}"
    if "kappa" in m:
        note += f"; Cohen's kappa {_num(m['kappa'])}"
    return f"{title}\n{head}\n{row}\n{note})"


def format_confusion(matrix: Any, classes: Sequence[str]) -> str:
    """Confusion matrix of pixel counts as text: rows = reference, columns = map."""
    m = np.asarray(matrix, dtype=np.int64)
    names = list(classes)
    corner = "reference \\ map"
    label = max(len(corner), *(len(n) for n in names))
    width = max(max(len(n) for n in names), len(str(int(m.max(initial=0)))))
    lines = [f"{corner:<{label}} " + " ".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, m, strict=True):
        lines.append(f"{name:<{label}} " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def plot_confusion(
    matrix: Any, names: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Row-normalised confusion matrix as a PNG (rows = truth), written atomically.

    Each cell is the percentage of the true class's pixels predicted as the column
    class; the cells and the colour bar are both in percent (0-100).

    Raises:
        BackendUnavailableError: matplotlib is not installed.
    """
    lazy_import("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    share = 100.0 * np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(names)
    size = 2.5 + 0.7 * k
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=100.0)
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 50.0 else "black"
            ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center",
                    fontsize=8, color=color)  # fmt: skip
    ax.set_xticks(range(k), list(names), rotation=45, ha="right")
    ax.set_yticks(range(k), list(names))
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (%)")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("% of the true class's pixels")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
