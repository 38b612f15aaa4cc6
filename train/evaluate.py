"""``alosmap train evaluate``: a model file on a dataset split, in the paper's tables.

LULC (and any multi-class legend): per-class IoU (Table II's row), mIoU, plus mAcc
and per-class accuracy. Water (and any binary legend): IoU_water, precision and
recall (Table III), in percent. The model's spec decides the legend and the
threshold; the dataset's labels must follow the same legend (a dataset of JAXA
codes serves the bundled tasks).

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

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alosmap._fileio import atomic_write_bytes
from alosmap.classes import Legend
from alosmap.errors import BackendUnavailableError
from alosmap.metrics import (
    ConfusionMatrix,
    jsonable,
    threshold_probabilities,
    water_metrics,
)
from alosmap.radiometry import normalize
from alosmap.report import format_table as _format_table
from alosmap.report import plot_confusion
from alosmap.spec import ModelSpec, load_model
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.errors import DatasetFormatError

logger = logging.getLogger(__name__)

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
    return normalize(db, spec.radiometry, torch.isfinite(db)).float()


def _batches(ds: PatchDataset, batch_size: int) -> Iterable[tuple[torch.Tensor, ...]]:
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        yield tuple(torch.stack(parts) for parts in zip(*items, strict=True))


def _data_legend(data: TrainingData, spec: ModelSpec) -> Legend:
    """The dataset's legend for the model's: the same outputs, or an error."""
    model = spec.legend
    own = data.own_legend
    if own is None:
        return data.legend(model.name)  # JAXA codes: a bundled task, or an error
    if not own.same_outputs(model):
        raise DatasetFormatError(
            f"{data.root}: its labels follow the legend {own.name!r} "
            f"({', '.join(own.names)}), the model's outputs {model.name!r} "
            f"({', '.join(model.names)}); evaluate a model of that legend"
        )
    return own


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
    legend = _data_legend(data, spec)
    # normalised with the model's radiometry, not the dataset's statistics
    ds = PatchDataset(data, split, legend, radiometry=spec.radiometry)
    if len(ds) == 0:
        raise DatasetFormatError(f"{data.root}: no {split!r} patches to evaluate")
    names = [c.name for c in spec.classes]
    cm = ConfusionMatrix(len(names))
    model = model.to(device).eval()
    for x, y in _batches(ds, batch_size):
        logits = model(x.to(device))
        if legend.binary:
            prob = torch.sigmoid(logits[:, 0].float())
            pred = threshold_probabilities(prob, spec.threshold or 0.5)
        else:
            pred = logits.argmax(1).cpu()
        cm.update(pred, y)
    report: dict[str, Any] = {
        "task": spec.task,
        "binary": legend.binary,
        "model": spec.name,
        "data": str(data.root),
        "split": split,
        "patches": len(ds),
        "classes": names,
        "confusion_matrix": cm.matrix.tolist(),
    }
    if legend.binary:
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


def format_table(report: dict[str, Any]) -> str:
    """The paper's table layout as text (Table II for LULC, Table III for water)."""
    title = f"{report['model']} on {report['split']} ({report['patches']} patches)"
    # the layout follows the kind of legend (binary or not); reports without the
    # "binary" key: from the task (a bundled one) or the metrics' keys
    return _format_table(
        report["task"],
        report["metrics"],
        report["classes"],
        title,
        threshold=report.get("threshold"),
        binary=report.get("binary"),
    )


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` and ``confusion_matrix.png`` into ``out_dir``.

    Without matplotlib (the ``plot`` extra) the figure is skipped with a warning
    that says how to get it; the report is written all the same.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out / "report.json", text.encode("utf-8"))
    try:
        plot_confusion(
            report["confusion_matrix"],
            report["classes"],
            out / "confusion_matrix.png",
            title=f"{report['model']} — {report['split']} (row %)",
        )
    except BackendUnavailableError:
        logger.warning("confusion_matrix.png skipped: pip install 'alosmap[plot]'")
    return out / "report.json"
