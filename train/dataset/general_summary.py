"""The summary of a dataset built from (image, label) pairs (``dataset.json``, text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alosmap.classes import Legend
from alosmap.train.dataset.label_checks import SUMMARY_SCENES, format_label_check
from alosmap.train.dataset.label_values import (
    LabelValues,
    format_value_rows,
    value_rows,
)
from alosmap.train.dataset.patch_store import Normalization, format_normalization
from alosmap.train.dataset.record import FORMAT
from alosmap.train.dataset.splits import LABELLED_SPLITS

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.train.dataset.general import GeneralConfig

__all__ = ["format_general_summary", "general_summary"]


def _shares(counts: np.ndarray) -> list[float]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return (c / total).tolist() if total else c.tolist()


def general_summary(
    out_dir: Path,
    legend: Legend,
    rows: list[dict[str, Any]],
    notes: list[str],
    splits: np.ndarray,
    units: dict[str, str],
    source: str,
    config: GeneralConfig,
    norm: Normalization,
    hist: np.ndarray,
    values: LabelValues,
    *,
    class_pixels: Mapping[str, np.ndarray] | None = None,
    label_check: dict[str, Any] | None = None,
    excluded: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The build summary (``dataset.json``'s ``summary``, ``summary.txt``).

    Args:
        out_dir: the dataset directory.
        legend: the dataset's legend.
        rows: one summary row per image.
        notes: notes of the build.
        splits: each kept patch's split.
        units: the split of each scene (month) when whole ones were assigned.
        source: what decided the splits.
        config: the build parameters.
        norm: the σ0 statistics.
        hist: [N, K] pixels of each class per kept patch (SAR-valid pixels).
        values: the scan of the label rasters.
        class_pixels: pixels of each class per split (``train``, ``val``,
            ``test``) and in the dropped patches (``dropped_sar_nodata``,
            ``dropped_label_nodata``), over SAR-valid pixels.
        label_check: the label check (:meth:`LabelCheck.to_dict`).
        excluded: the pairs left out (``image``, ``label``, ``scene``, ``by``).
    """
    patches = {k: int((splits == k).sum()) for k in LABELLED_SPLITS}
    total = max(1, sum(patches.values()))
    return {
        "path": out_dir.name,
        "legend": legend.name,
        "images": rows,
        "notes": notes,
        "patches": patches,
        "split": {
            "source": source,
            "asked": list(config.fractions) if config.split_file is None else None,
            "made": [patches[k] / total for k in LABELLED_SPLITS],
            "units": units,
        },
        "candidates": sum(r["candidates"] for r in rows),
        "dropped": {
            "sar_nodata": sum(r["dropped_sar_nodata"] for r in rows),
            "label_nodata": sum(r["dropped_label_nodata"] for r in rows),
        },
        "rule": {
            "patch_size": config.patch_size,
            "stride": config.step,
            "min_sar_valid": config.min_valid,
            "min_label_fraction": config.min_labelled,
            "label_rule_applies_to": "all patches",
        },
        "normalization": {
            "split": norm.split,
            "mean_db": norm.mean_db,
            "std_db": norm.std_db,
        },
        "label_values": value_rows(values, legend),
        "class_shares": {
            "all": _shares(hist.sum(axis=0)),
            "train": _shares(hist[splits == "train"].sum(axis=0)),
        },
        "class_pixels": {
            k: [int(n) for n in v] for k, v in (class_pixels or {}).items()
        },
        "excluded": list(excluded),
        "label_check": label_check,
    }


def _image_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The images' table; a ``weight`` column when a manifest weight is not 1."""
    weighted = any(r["weight"] != 1.0 for r in rows)
    lines = [
        f"{'image':<32} {'scene':<16} {'date':<10} {'split':<10} {'units':<6} "
        f"{'cand.':>6} {'kept':>6} {'sar-nd':>6} {'lab-nd':>6}"
        + (f" {'weight':>6}" if weighted else "")
    ]
    for r in rows:
        lines.append(
            f"{r['name'][:32]:<32} {r['scene'][:16]:<16} {r['date'] or '-':<10} "
            f"{r.get('split') or '-':<10} {r['units']:<6} {r['candidates']:>6} "
            f"{r['kept']:>6} {r['dropped_sar_nodata']:>6} "
            f"{r['dropped_label_nodata']:>6}"
            + (f" {r['weight']:>6g}" if weighted else "")
        )
    return lines


def format_general_summary(summary: dict[str, Any], legend: Legend) -> str:
    """The summary as a readable plain-text table."""
    lines = [
        f"alosmap dataset {summary['path']} ({FORMAT}), legend {legend.name}",
        "",
        *_image_lines(summary["images"]),
    ]
    lines += [f"note: {n}" for n in summary["notes"]]
    sp, split = summary["patches"], summary["split"]
    made = "  ".join(
        f"{k} {100 * f:.1f} %"
        for k, f in zip(LABELLED_SPLITS, split["made"], strict=True)
    )
    d, rule = summary["dropped"], summary["rule"]
    lines += [
        "",
        "patches: "
        + "  ".join(f"{k} {sp[k]}" for k in sp)
        + f"  (total {sum(sp.values())})",
        f"split: {split['source']}; made {made}",
        f"patches of {rule['patch_size']}×{rule['patch_size']} px every "
        f"{rule['stride']} px; dropped: {d['sar_nodata']} with SAR valid < "
        f"{rule['min_sar_valid']:.0%}, {d['label_nodata']} with labels on < "
        f"{rule['min_label_fraction']:.0%} of the SAR-valid pixels",
        format_normalization(summary["normalization"]),
        "",
        "label values (all pixels of the label rasters)",
        *format_value_rows(summary["label_values"]),
        "",
        f"{'class share (%)':<24} {'all':>8} {'train':>8}",
    ]
    shares = summary["class_shares"]
    for i, c in enumerate(legend.classes):
        lines.append(
            f"  {i}: {c.name[:19]:<19} {100 * shares['all'][i]:>8.2f} "
            f"{100 * shares['train'][i]:>8.2f}"
        )
    lines += _class_pixel_lines(summary, legend)
    lines += _excluded_lines(summary.get("excluded") or [])
    text = "\n".join(lines) + "\n"
    if summary.get("label_check"):
        text += "\n" + format_label_check(summary["label_check"], SUMMARY_SCENES)
    return text


def _class_pixel_lines(summary: dict[str, Any], legend: Legend) -> list[str]:
    """Pixels of each class per split and in the patches the filters dropped."""
    px = summary.get("class_pixels")
    if not px:
        return []
    rule = summary["rule"]
    sar = f"dropped SAR<{rule['min_sar_valid']:.0%}"
    lab = f"dropped lab<{rule['min_label_fraction']:.0%}"
    lines = [
        "",
        f"{'class pixels (SAR-valid)':<24} {'train':>11} {'val':>11} {'test':>11} "
        f"{sar:>17} {lab:>17}",
    ]
    trains = any(px["train"])  # without training patches: an evaluation dataset
    for i, c in enumerate(legend.classes):
        none = "  ← no training pixels" if trains and px["train"][i] == 0 else ""
        lines.append(
            f"  {i}: {c.name[:19]:<19} {px['train'][i]:>11,} {px['val'][i]:>11,} "
            f"{px['test'][i]:>11,} {px['dropped_sar_nodata'][i]:>17,} "
            f"{px['dropped_label_nodata'][i]:>17,}{none}"
        )
    return lines


def _excluded_lines(excluded: Sequence[dict[str, str]]) -> list[str]:
    """The pairs left out (manifest's exclude column, --exclude-scene)."""
    if not excluded:
        return []
    return [
        "",
        f"excluded: {len(excluded)} pair(s), not used",
        *(
            f"  {Path(e['image']).name} (scene {e['scene']}; by {e['by']})"
            for e in excluded
        ),
    ]
