"""The dataset record (``dataset.json``), the manifest rows and the one writer.

Both sources of ``build-dataset`` (the paper's JAXA scenes, :mod:`.jaxa`; the
user's pairs, :mod:`.general`) end in :func:`write_dataset`, and
:class:`~alosmap.train.data.TrainingData` reads :class:`DatasetRecord` without
knowing which source made it. ``docs/dataset_format.md`` describes every key.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alosmap._version import __version__
from alosmap.classes import JAXA, TASK_RECORDS, Legend, LegendError
from alosmap.errors import SpecError
from alosmap.radiometry import DEFAULT_CLIP_DB, Radiometry
from alosmap.train.errors import DatasetFormatError

__all__ = [
    "ALOS2_RADIOMETRY",
    "FORMAT",
    "LABEL_KINDS",
    "MANIFEST_FIELDS",
    "RECORD_KEYS",
    "DatasetRecord",
    "PatchRecord",
    "normalization_record",
    "write_dataset",
    "write_manifest",
]

FORMAT = "alosmap-dataset/1"
#: ``"labels"``: ``jaxa`` (JAXA HRLULC codes: every bundled task reads them through
#: its legend) or ``index`` (training indices of the record's own legend).
LABEL_KINDS = ("jaxa", "index")
MANIFEST_FIELDS = (
    "index",
    "split",
    "scene",
    "date",
    "row",
    "col",
    "valid_fraction",
    *[f"h{c}" for c in range(15)],
)
_HIST_COLUMN = re.compile(r"h\d+")
_BASE_FIELDS = frozenset(MANIFEST_FIELDS[:7])
#: The keys of ``dataset.json`` besides ``format``.
RECORD_KEYS = (
    "alosmap_version",
    "patch_size",
    "labels",
    "legend",
    "radiometry",
    "normalization",
    "class_counts",
    "build",
    "summary",
)
_RADIOMETRY_KEYS = ("band", "units", "calibration_factor_db", "backscatter")
#: ``"radiometry"`` of ALOS-2 L2.1 amplitude DN (band 1, CF −83 dB, σ0): the
#: :class:`~alosmap.radiometry.Radiometry` defaults.
ALOS2_RADIOMETRY: dict[str, Any] = {
    k: getattr(Radiometry(), k) for k in _RADIOMETRY_KEYS
}


@dataclass
class PatchRecord:
    """One manifest row."""

    index: int
    split: str
    scene: str
    date: str
    row: int
    col: int
    valid_fraction: float
    histogram: list[int]
    #: more columns (datasets of the user's labels: image, label, ...)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def weight(self) -> float:
        """Its sampling weight in training (the ``weight`` column; 1 without)."""
        return float(self.extra.get("weight", 1.0))

    def to_row(self) -> dict[str, Any]:
        """CSV row."""
        d: dict[str, Any] = {
            "index": self.index,
            "split": self.split,
            "scene": self.scene,
            "date": self.date,
            "row": self.row,
            "col": self.col,
            "valid_fraction": f"{self.valid_fraction:.4f}",
        }
        d.update({f"h{c}": int(n) for c, n in enumerate(self.histogram)})
        d.update(self.extra)
        return d

    @classmethod
    def from_row(cls, row: dict[str, str]) -> PatchRecord:
        """Parse a CSV row (histogram: every ``h<k>`` column, in the order of k)."""
        hist = sorted(int(k[1:]) for k in row if _HIST_COLUMN.fullmatch(k))
        return cls(
            index=int(row["index"]),
            split=row["split"],
            scene=row["scene"],
            date=row["date"],
            row=int(row["row"]),
            col=int(row["col"]),
            valid_fraction=float(row["valid_fraction"]),
            histogram=[int(row[f"h{c}"]) for c in hist],
            extra={
                k: v
                for k, v in row.items()
                if k not in _BASE_FIELDS and not _HIST_COLUMN.fullmatch(k)
            },
        )


def write_manifest(
    path: Path,
    records: Sequence[PatchRecord],
    fields: Sequence[str] = MANIFEST_FIELDS,
) -> None:
    """Write ``manifest.csv`` with the columns ``fields``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        for r in records:
            w.writerow(r.to_row())


@dataclass(frozen=True)
class DatasetRecord:
    """What ``dataset.json`` holds, whichever source built the dataset.

    Attributes:
        patch_size: patch side in pixels.
        labels: ``jaxa`` (JAXA codes; ``legend`` is JAXA's) or ``index``
            (training indices of ``legend``, 255 = no label).
        legend: the legend the stored labels follow.
        radiometry: what the images held (``band``, ``units``,
            ``calibration_factor_db``, ``backscatter``; a key left out: the
            :class:`~alosmap.radiometry.Radiometry` default).
        normalization: ``mean_db``/``std_db`` of the train split (null without
            one), ``clip_db``, ``split`` (which split gave them).
        class_counts: per task (legend) name, train-split pixels per class.
        build: the source's build parameters and inputs.
        summary: the build summary.
    """

    patch_size: int
    labels: str
    legend: Legend
    radiometry: dict[str, Any]
    normalization: dict[str, Any]
    class_counts: dict[str, list[int]]
    build: dict[str, Any]
    summary: dict[str, Any]
    alosmap_version: str = __version__

    def __post_init__(self) -> None:
        if self.labels not in LABEL_KINDS:
            raise DatasetFormatError(
                f"dataset.json: labels {self.labels!r}, expected one of "
                f"{', '.join(LABEL_KINDS)}"
            )
        unknown = sorted(set(self.radiometry) - set(_RADIOMETRY_KEYS))
        if unknown:
            raise DatasetFormatError(
                f"dataset.json: radiometry has unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(_RADIOMETRY_KEYS)}"
            )

    @classmethod
    def of_jaxa_codes(
        cls,
        patch_size: int,
        statistics: tuple[float | None, float | None, str | None],
        class_counts: dict[str, list[int]],
        *,
        build: dict[str, Any],
        summary: dict[str, Any],
        radiometry: dict[str, Any] | None = None,
    ) -> DatasetRecord:
        """A record of labels stored as JAXA codes (the paper's source).

        ``statistics``: ``(mean_db, std_db, split)``; ``radiometry``: default
        :data:`ALOS2_RADIOMETRY`.
        """
        return cls(
            patch_size=patch_size,
            labels="jaxa",
            legend=JAXA,
            radiometry=dict(radiometry or ALOS2_RADIOMETRY),
            normalization=normalization_record(*statistics),
            class_counts=class_counts,
            build=build,
            summary=summary,
        )

    @property
    def tasks(self) -> dict[str, Legend]:
        """The legends its labels can be trained with, by name."""
        if self.labels == "jaxa":
            return dict(TASK_RECORDS)
        return {self.legend.name: self.legend}

    @property
    def has_statistics(self) -> bool:
        """Whether the build recorded σ0 statistics (null without training patches)."""
        norm = self.normalization
        return all(
            isinstance(norm.get(k), (int, float)) and math.isfinite(norm[k])
            for k in ("mean_db", "std_db")
        )

    @property
    def clip_db(self) -> tuple[float, float]:
        """σ0 range (dB) clipped before normalising."""
        lo, hi = self.normalization["clip_db"]
        return float(lo), float(hi)

    def input_radiometry(
        self, clip_db: tuple[float, float], mean_db: float, std_db: float
    ) -> Radiometry:
        """What the images held, normalised as given.

        Raises:
            DatasetFormatError: a bad ``"radiometry"`` record.
        """
        try:
            return Radiometry(
                **self.radiometry,
                clip_db=clip_db,
                mean_db=mean_db,
                std_db=std_db,
            )
        except (SpecError, TypeError) as exc:
            raise DatasetFormatError(
                f"dataset.json: bad radiometry record ({exc})"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``dataset.json``."""
        return {
            "format": FORMAT,
            "alosmap_version": self.alosmap_version,
            "patch_size": self.patch_size,
            "labels": self.labels,
            "legend": self.legend.to_dict(),
            "radiometry": self.radiometry,
            "normalization": self.normalization,
            "class_counts": self.class_counts,
            "build": self.build,
            "summary": self.summary,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "dataset.json") -> DatasetRecord:
        """Read and check a ``dataset.json`` object.

        Raises:
            DatasetFormatError: another format version, a missing key or a bad
                legend.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else None
            raise DatasetFormatError(
                f"{where}: dataset format {found!r}, this alosmap reads "
                f"{FORMAT!r}; rebuild it with `alosmap train build-dataset`"
            )
        missing = [k for k in RECORD_KEYS if k not in data]
        if missing:
            raise DatasetFormatError(
                f"{where}: no {', '.join(missing)}; rebuild it with "
                "`alosmap train build-dataset`"
            )
        try:
            legend = Legend.from_dict(data["legend"], source=f"{where} legend")
        except LegendError as exc:
            raise DatasetFormatError(str(exc)) from exc
        return cls(
            patch_size=int(data["patch_size"]),
            labels=str(data["labels"]),
            legend=legend,
            radiometry=dict(data["radiometry"]),
            normalization=dict(data["normalization"]),
            class_counts={k: list(v) for k, v in data["class_counts"].items()},
            build=dict(data["build"]),
            summary=dict(data["summary"]),
            alosmap_version=str(data["alosmap_version"]),
        )

    @classmethod
    def read(cls, root: Path) -> DatasetRecord:
        """``root/dataset.json``.

        Raises:
            DatasetFormatError: no file, not JSON, or a bad record.
        """
        path = root / "dataset.json"
        if not path.is_file():
            raise DatasetFormatError(
                f"{root} is not an alosmap dataset (no dataset.json); "
                "make one with `alosmap train build-dataset`"
            )
        try:
            data = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, str(path))


def normalization_record(
    mean_db: float | None, std_db: float | None, split: str | None
) -> dict[str, Any]:
    """``dataset.json``'s ``normalization``: the statistics, the clip range."""
    return {
        "mean_db": mean_db,
        "std_db": std_db,
        "clip_db": list(DEFAULT_CLIP_DB),
        "split": split,
    }


def write_dataset(
    tmp: Path,
    record: DatasetRecord,
    records: Sequence[PatchRecord],
    fields: Sequence[str],
    summary_text: str,
) -> None:
    """Write a dataset's ``manifest.csv``, ``dataset.json`` and ``summary.txt``.

    The one writer of both sources (the arrays are already in ``tmp``).
    """
    write_manifest(tmp / "manifest.csv", records, fields)
    (tmp / "dataset.json").write_text(
        json.dumps(record.to_dict(), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    (tmp / "summary.txt").write_text(summary_text, encoding="utf-8")
