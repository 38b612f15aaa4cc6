"""``alosmap train evaluate``: a model file on a dataset split, in the paper's tables.

LULC: per-class IoU (Table II's row), mIoU, plus mAcc and per-class accuracy.
Water: IoU_water, precision and recall (Table III), in percent. The model's spec
decides the task and the threshold.

**Normalisation comes from the model's spec, not the dataset.** A model only
works on inputs normalised the way it was trained (its training set's mean/std,
carried in ``spec.radiometry``), and ``alosmap predict`` normalises every scene that
way. An evaluation dataset built separately (another month, region or build) has
its own training-split statistics; normalising with those would feed the model
shifted inputs and measure something ``alosmap predict`` never runs. So the σ0 dB
patches are clipped and normalised here with the spec's ``clip_db``, ``mean_db``
and ``std_db``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alosmap._fileio import atomic_write_bytes
from alosmap.metrics import (
    ConfusionMatrix,
    jsonable,
    threshold_probabilities,
    water_metrics,
)
from alosmap.spec import ModelSpec, load_model

from .data import DatasetFormatError, PatchDataset, TrainingData

__all__ = [
    "evaluate",
    "evaluate_file",
    "format_table",
    "normalise_db",
    "plot_confusion",
    "write_report",
]


def normalise_db(db: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """σ0 dB patches → model input with the spec's radiometry (0 at no data)."""
    r = spec.radiometry
    x = (db.clamp(*r.clip_db) - r.mean_db) / r.std_db
    return torch.where(torch.isfinite(db), x, torch.zeros_like(x)).float()


def _batches(ds: PatchDataset, batch_size: int) -> Iterable[tuple[torch.Tensor, ...]]:
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        yield tuple(torch.stack(parts) for parts in zip(*items, strict=True))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    spec: ModelSpec,
    data: TrainingData,
    split: str = "test",
    *,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate ``model`` on one split.

    Args:
        model: maps [B, 1, P, P] normalised input to logits [B, K, P, P].
        spec: the model's spec (task, classes, radiometry, threshold).
        data: the dataset.
        split: ``train``, ``val`` or ``test``.
        batch_size: patches per forward pass.
        device: torch device.

    Returns:
        The report (JSON-ready): task, split, patch and pixel counts, the metrics
        (fractions in [0, 1]), the class names and the confusion matrix
        (rows = truth).

    Raises:
        DatasetFormatError: the split has no patches.
    """
    ds = PatchDataset(data, split, spec.task, return_db=True)
    if len(ds) == 0:
        raise DatasetFormatError(f"{data.root}: no {split!r} patches to evaluate")
    names = [c.name for c in spec.classes]
    cm = ConfusionMatrix(len(names))
    model = model.to(device).eval()
    for _x, y, db in _batches(ds, batch_size):
        logits = model(normalise_db(db, spec).to(device))
        if spec.task == "water":
            prob = torch.sigmoid(logits[:, 0].float())
            pred = threshold_probabilities(prob, spec.threshold or 0.5)
        else:
            pred = logits.argmax(1).cpu()
        cm.update(pred, y)
    report: dict[str, Any] = {
        "task": spec.task,
        "model": spec.name,
        "data": str(data.root),
        "split": split,
        "patches": len(ds),
        "classes": names,
        "confusion_matrix": cm.matrix.tolist(),
    }
    if spec.task == "water":
        report["metrics"] = {**water_metrics(cm), "pixels": cm.total}
        report["threshold"] = spec.threshold
    else:
        report["metrics"] = cm.summary(names)
    return jsonable(report)


def evaluate_file(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str = "test",
    *,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`evaluate` for a ``.safetensors`` model file and a dataset directory."""
    model, spec = load_model(model_path, device=device)
    report = evaluate(
        model, spec, TrainingData(data_dir), split, batch_size=batch_size, device=device
    )
    report["model_file"] = str(model_path)
    return report


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100.0 * v:5.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The paper's table layout as text (Table II for LULC, Table III for water)."""
    m = report["metrics"]
    title = f"{report['model']} on {report['split']} ({report['patches']} patches)"
    if report["task"] == "water":
        head = f"{'IoU_water':>10} {'Precision':>10} {'Recall':>10}"
        row = " ".join(
            f"{_pct(m[k]):>10}" for k in ("iou_water", "precision", "recall")
        )
        return f"{title}\n{head}\n{row}\n(percent; threshold {report['threshold']})"
    names = report["classes"]
    width = max(9, *(len(n) for n in names))
    per = m["per_class"]
    lines = [
        title,
        " " * 10 + " ".join(f"{n:>{width}}" for n in names) + f" {'mean':>7}",
        f"{'IoU':<10}"
        + " ".join(f"{_pct(per[n]['iou']):>{width}}" for n in names)
        + f" {_pct(m['miou']):>7}",
        f"{'Acc':<10}"
        + " ".join(f"{_pct(per[n]['accuracy']):>{width}}" for n in names)
        + f" {_pct(m['macc']):>7}",
        f"(percent; mIoU {_pct(m['miou']).strip()}, mAcc {_pct(m['macc']).strip()}, "
        f"overall accuracy {_pct(m['overall_accuracy']).strip()}; n/a = class "
        "absent)",
    ]
    return "\n".join(lines)


def plot_confusion(
    matrix: Any, names: list[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Row-normalised confusion matrix as a PNG (rows = truth), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(names)
    size = 2.5 + 0.7 * k
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            color = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{100 * frac[i, j]:.0f}", ha="center", va="center",
                    fontsize=8, color=color)  # fmt: skip
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (%)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` and ``confusion_matrix.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out / "report.json", text.encode("utf-8"))
    plot_confusion(
        report["confusion_matrix"],
        report["classes"],
        out / "confusion_matrix.png",
        title=f"{report['model']} — {report['split']} (row %)",
    )
    return out / "report.json"
