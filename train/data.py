"""The on-disk training dataset (written by ``build-dataset``) and its torch Dataset.

Layout of a dataset directory (format ``alosmap-dataset/1``)::

    DATA_DIR/
      dataset.json     format, alosmap version, patch size, normalisation (training
                       split only), class pixel counts per task (training split only),
                       the build parameters and the summary
      manifest.csv     one row per patch: index, split, scene, date (YYYY-MM-DD),
                       row, col (window on the scene's own grid), valid_fraction
                       (SAR-valid share) and the patch's histogram of JAXA codes
                       (h0 … h14) over its SAR-valid pixels (h0 = unlabelled)
      sar_db.npy       float16 [N, P, P]: σ0 in dB on the scene grid, NaN = no data
      labels.npy       uint8   [N, P, P]: JAXA HRLULC codes 1-14, 0 = no data
                       (resampled by nearest neighbour onto the patch's SAR grid)
      anchors.npy      the anchors drawn (lon, lat in EPSG:4326, JAXA code), for
                       reproducibility
      summary.txt      the build summary as a table

Splits: ``pretrain`` (unlabelled use, pretraining months) and ``train`` / ``val`` /
``test`` (finetuning month). Labels are stored as JAXA codes so one dataset serves
both tasks: :func:`alosmap.classes.jaxa_to_training` maps them at load time.
Arrays are opened memory-mapped (``np.load(mmap_mode="r")``), never loaded whole.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import IGNORE_INDEX, jaxa_to_training
from alosmap.radiometry import DEFAULT_CLIP_DB, Radiometry, normalize
from alosmap.train.errors import DatasetFormatError

FORMAT = "alosmap-dataset/1"
SPLITS = ("pretrain", "train", "val", "test")
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

    def to_row(self) -> dict[str, Any]:
        """CSV row."""
        d = {
            "index": self.index,
            "split": self.split,
            "scene": self.scene,
            "date": self.date,
            "row": self.row,
            "col": self.col,
            "valid_fraction": f"{self.valid_fraction:.4f}",
        }
        d.update({f"h{c}": int(n) for c, n in enumerate(self.histogram)})
        return d

    @classmethod
    def from_row(cls, row: dict[str, str]) -> PatchRecord:
        """Parse a CSV row."""
        return cls(
            index=int(row["index"]),
            split=row["split"],
            scene=row["scene"],
            date=row["date"],
            row=int(row["row"]),
            col=int(row["col"]),
            valid_fraction=float(row["valid_fraction"]),
            histogram=[int(row[f"h{c}"]) for c in range(15)],
        )


def write_manifest(path: Path, records: Sequence[PatchRecord]) -> None:
    """Write ``manifest.csv``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        for r in records:
            w.writerow(r.to_row())


class TrainingData:
    """An opened dataset directory.

    Raises:
        DatasetFormatError: missing files, or a dataset of another format version.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DatasetFormatError(
                f"{self.root} is not an alosmap dataset (no dataset.json); "
                "make one with `alosmap train build-dataset`"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{meta_path}: not valid JSON ({exc})") from exc
        if self.meta.get("format") != FORMAT:
            raise DatasetFormatError(
                f"{self.root}: dataset format {self.meta.get('format')!r}, this "
                f"alosmap reads {FORMAT!r}; rebuild it with "
                "`alosmap train build-dataset`"
            )
        for name in ("manifest.csv", "sar_db.npy", "labels.npy"):
            if not (self.root / name).is_file():
                raise DatasetFormatError(f"{self.root}: {name} is missing")
        with (self.root / "manifest.csv").open(encoding="utf-8") as f:
            self.records = [PatchRecord.from_row(r) for r in csv.DictReader(f)]
        self.sar = np.load(self.root / "sar_db.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy", mmap_mode="r")
        if (
            len(self.records) != self.sar.shape[0]
            or self.sar.shape != self.labels.shape
        ):
            raise DatasetFormatError(
                f"{self.root}: manifest ({len(self.records)} rows), sar_db.npy "
                f"{self.sar.shape} and labels.npy {self.labels.shape} disagree"
            )

    @property
    def patch_size(self) -> int:
        """Patch size in pixels."""
        return int(self.sar.shape[-1])

    @property
    def mean_db(self) -> float:
        """Training-split σ0 mean (dB)."""
        return float(self.meta["normalization"]["mean_db"])

    @property
    def std_db(self) -> float:
        """Training-split σ0 standard deviation (dB)."""
        return float(self.meta["normalization"]["std_db"])

    @property
    def clip_db(self) -> tuple[float, float]:
        """σ0 range (dB) clipped before normalising, as the build recorded it.

        A record without one (hand-made datasets) means the default range.
        """
        lo, hi = self.meta["normalization"].get("clip_db", DEFAULT_CLIP_DB)
        return float(lo), float(hi)

    @property
    def radiometry(self) -> Radiometry:
        """How σ0 dB becomes model input: the clip range and training statistics."""
        return Radiometry(
            clip_db=self.clip_db, mean_db=self.mean_db, std_db=self.std_db
        )

    def class_counts(self, task: str) -> list[int]:
        """Training-split pixel counts per training class of ``task``."""
        return [int(n) for n in self.meta["class_counts"][task]]

    def indices(self, split: str) -> np.ndarray:
        """Patch indices of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return np.array(
            [r.index for r in self.records if r.split == split], dtype=np.int64
        )


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / rot90 applied to every array (last two axes)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


class PatchDataset:
    """A torch-style dataset over one split.

    Items are ``(x, y)``: ``x`` float32 [1, P, P] normalised with the dataset's
    :attr:`~TrainingData.radiometry` (its clip range and training-split statistics;
    0 at no data), ``y`` int64 [P, P] training indices of ``task``
    (:data:`~alosmap.classes.IGNORE_INDEX` at no data, and wherever the SAR is no
    data). With ``return_db=True`` a third item, σ0 dB float32 [1, P, P] (NaN at no
    data), is returned for SAR-W weighting. Augmentation (random rot90 + flip, the
    same for all items) is seeded per (epoch, index) for exact resumes. ``clip_db``
    overrides the record's clip range.
    """

    def __init__(
        self,
        data: TrainingData,
        split: str,
        task: str = "lulc",
        *,
        augment: bool = False,
        clip_db: tuple[float, float] | None = None,
        return_db: bool = False,
        seed: int = 0,
    ) -> None:
        self.data = data
        self.split = split
        self.task = task
        self.idx = data.indices(split)
        self.augment = augment
        self.radiometry = data.radiometry
        if clip_db is not None:
            self.radiometry = replace(self.radiometry, clip_db=clip_db)
        self.clip_db = self.radiometry.clip_db
        self.return_db = return_db
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        import torch

        j = int(self.idx[i])
        db = np.asarray(self.data.sar[j], dtype=np.float32)
        valid = np.isfinite(db)
        y = jaxa_to_training(np.asarray(self.data.labels[j]), self.task)
        y = np.where(valid, y, IGNORE_INDEX).astype(np.int64)
        x = normalize(db, self.radiometry, valid)
        arrays = [x, y, db]
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, j))
            arrays = _augment(arrays, rng)
        x, y, db = arrays
        items: list[Any] = [torch.from_numpy(x[None]), torch.from_numpy(y)]
        if self.return_db:
            items.append(torch.from_numpy(db[None].astype(np.float32)))
        return tuple(items)
