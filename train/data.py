"""The on-disk training dataset (written by ``build-dataset``) and its torch Dataset.

Layout of a dataset directory (format ``alosmap-dataset/1``)::

    DATA_DIR/
      dataset.json     the record (``dataset.record.DatasetRecord``):
                       format, version, patch size, labels (``jaxa`` codes or
                       ``index``) and their legend, the images' radiometry,
                       normalisation and class pixel counts (training split
                       only), the build parameters and the summary
      manifest.csv     one row per patch: index, split, scene, date (YYYY-MM-DD),
                       row, col (window on the scene's own grid), valid_fraction
                       (SAR-valid share) and the patch's histogram of JAXA codes
                       (h0 … h14) over its SAR-valid pixels (h0 = unlabelled);
                       a dataset of the user's labels has h0 … h{K-1} (pixels of
                       each training class) and more columns (image, label,
                       labelled_fraction, weight)
      sar_db.npy       float16 [N, P, P]: σ0 in dB on the scene grid, NaN = no data
      labels.npy       uint8   [N, P, P]: JAXA HRLULC codes 1-14, 0 = no data
                       (resampled by nearest neighbour onto the patch's SAR grid);
                       with the user's legend: its training indices, 255 = no label
      anchors.npy      the anchors drawn (lon, lat in EPSG:4326, JAXA code), for
                       reproducibility (the paper's path only)
      summary.txt      the build summary as a table

``docs/dataset_format.md`` describes every file and key.

Splits: ``pretrain`` (unlabelled use, pretraining months) and ``train`` / ``val`` /
``test`` (finetuning month). Whichever source built it, the record says what the
labels are: JAXA codes (the paper's, ``"labels": "jaxa"``), which serve every bundled
task (:func:`alosmap.classes.jaxa_to_training` maps them at load time), or training
indices of the record's legend (``"labels": "index"``, 255 = no label), which serve
that legend only (:attr:`DatasetRecord.tasks
<alosmap.train.dataset.record.DatasetRecord.tasks>`). Each patch's training
sampling weight is the manifest's ``weight`` column (1 without one).
Arrays are opened memory-mapped (``np.load(mmap_mode="r")``), never loaded whole.
"""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import IGNORE_INDEX, Legend, jaxa_to_training, resolve_legend
from alosmap.radiometry import Radiometry, normalize
from alosmap.train.dataset.record import DatasetRecord, PatchRecord
from alosmap.train.errors import DatasetFormatError

SPLITS = ("pretrain", "train", "val", "test")


def _open_array(path: Path) -> np.ndarray:
    """Memory-map one of a dataset's ``.npy`` arrays.

    Raises:
        DatasetFormatError: not an ``.npy`` file, or cut short (an interrupted copy).
    """
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(
            f"{path}: not a readable .npy array ({exc}); rebuild the dataset with "
            "`alosmap train build-dataset`"
        ) from exc


class TrainingData:
    """An opened dataset directory.

    Raises:
        DatasetFormatError: missing files, or a dataset of another format version.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: what dataset.json holds
        self.record = DatasetRecord.read(self.root)
        self.meta: dict[str, Any] = self.record.to_dict()
        for name in ("manifest.csv", "sar_db.npy", "labels.npy"):
            if not (self.root / name).is_file():
                raise DatasetFormatError(f"{self.root}: {name} is missing")
        with (self.root / "manifest.csv").open(encoding="utf-8") as f:
            self.records = [PatchRecord.from_row(r) for r in csv.DictReader(f)]
        self.sar = _open_array(self.root / "sar_db.npy")
        self.labels = _open_array(self.root / "labels.npy")
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
    def has_statistics(self) -> bool:
        """Whether the build recorded σ0 statistics (null without training patches)."""
        return self.record.has_statistics

    def _statistic(self, key: str) -> float:
        if not self.has_statistics:
            raise DatasetFormatError(
                f"{self.root}: the dataset has no training patches, so no σ0 "
                "statistics to normalise with: it can evaluate a model but not "
                "train one (rebuild it with a train fraction in --split)"
            )
        return float(self.record.normalization[key])

    @property
    def mean_db(self) -> float:
        """Training-split σ0 mean (dB).

        Raises:
            DatasetFormatError: the dataset has no statistics (no train split).
        """
        return self._statistic("mean_db")

    @property
    def std_db(self) -> float:
        """Training-split σ0 standard deviation (dB).

        Raises:
            DatasetFormatError: the dataset has no statistics (no train split).
        """
        return self._statistic("std_db")

    @property
    def clip_db(self) -> tuple[float, float]:
        """σ0 range (dB) clipped before normalising, as the build recorded it."""
        return self.record.clip_db

    @property
    def image_radiometry(self) -> dict[str, Any]:
        """What the images held (``dataset.json``'s ``"radiometry"``).

        Keys ``band``, ``units``, ``calibration_factor_db``, ``backscatter``.
        """
        return dict(self.record.radiometry)

    @property
    def radiometry(self) -> Radiometry:
        """How the images became model input.

        What they held (band, units, CF, backscatter; :attr:`image_radiometry`),
        the clip range and the training statistics.

        Raises:
            DatasetFormatError: the dataset has no statistics (no train split), or
                a bad ``"radiometry"`` record.
        """
        return self.input_radiometry(self.clip_db, self.mean_db, self.std_db)

    def input_radiometry(
        self, clip_db: tuple[float, float], mean_db: float, std_db: float
    ) -> Radiometry:
        """What the images held (:attr:`image_radiometry`), normalised as given.

        Raises:
            DatasetFormatError: a bad ``"radiometry"`` record.
        """
        return self.record.input_radiometry(clip_db, mean_db, std_db)

    @property
    def own_legend(self) -> Legend | None:
        """The legend of a dataset of training indices (None: JAXA codes)."""
        return self.record.legend if self.record.labels == "index" else None

    def legend(self, task: str | Legend | None = None) -> Legend:
        """The legend its labels are trained with.

        Args:
            task: a legend or its name among :attr:`DatasetRecord.tasks` (the
                bundled tasks for JAXA codes, the dataset's own legend otherwise);
                None: the only one.

        Raises:
            DatasetFormatError: the dataset cannot serve ``task``.
        """
        tasks = self.record.tasks
        name = task.name if isinstance(task, Legend) else task
        if name is None and len(tasks) == 1:
            return next(iter(tasks.values()))
        if name in tasks:
            return resolve_legend(name, names=tasks, files=False, what="task")
        what = (
            f"holds JAXA codes, which serve the tasks {', '.join(tasks)}"
            if self.own_legend is None
            else f"its labels follow the legend {self.record.legend.name!r} "
            f"({', '.join(self.record.legend.names)})"
        )
        if name is None:
            raise DatasetFormatError(f"{self.root}: {what}: name one (--task)")
        hint = "" if self.own_legend is None else "; leave --task out"
        raise DatasetFormatError(f"{self.root}: {what}, not {name!r}{hint}")

    def labels_to_index(self, labels: np.ndarray, legend: Legend) -> np.ndarray:
        """Stored labels → training indices of ``legend`` (255 = no label)."""
        if self.own_legend is not None:
            return np.asarray(labels, dtype=np.uint8)
        return jaxa_to_training(np.asarray(labels), legend)

    def class_counts(self, task: str | Legend) -> list[int]:
        """Training-split pixel counts per training class of ``task``."""
        name = task.name if isinstance(task, Legend) else task
        return [int(n) for n in self.record.class_counts[name]]

    def weights(self, split: str) -> np.ndarray:
        """Sampling weights of the patches of ``split`` (in :meth:`indices` order)."""
        return np.array(
            [r.weight for r in self.records if r.split == split], dtype=np.float64
        )

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
    data); ``task`` is a bundled task for JAXA-code datasets, None (or the legend)
    for a dataset with its own legend. With ``return_db=True`` a third item, σ0 dB
    float32 [1, P, P] (NaN at no data), is returned for SAR-W weighting. Augmentation
    (random rot90 + flip, the same for all items) is seeded per (epoch, index) for
    exact resumes. ``clip_db`` overrides the record's clip range; ``radiometry``
    replaces the dataset's (e.g. a model's, to evaluate it). A dataset without
    statistics (no train split: evaluation only) and no ``radiometry`` gives NaN
    for ``x``: use the σ0 dB item (``return_db``) and the model's radiometry.
    """

    def __init__(
        self,
        data: TrainingData,
        split: str,
        task: str | Legend | None = "lulc",
        *,
        augment: bool = False,
        clip_db: tuple[float, float] | None = None,
        return_db: bool = False,
        seed: int = 0,
        radiometry: Radiometry | None = None,
    ) -> None:
        self.data = data
        self.split = split
        self.legend = data.legend(task)
        self.idx = data.indices(split)
        #: sampling weights of the items (the manifest's ``weight`` column)
        self.weights = data.weights(split)
        self.augment = augment
        if radiometry is None and data.has_statistics:
            radiometry = data.radiometry
        if radiometry is not None and clip_db is not None:
            radiometry = replace(radiometry, clip_db=clip_db)
        #: None: no statistics (an evaluation-only dataset); ``x`` is NaN
        self.radiometry = radiometry
        self.clip_db = radiometry.clip_db if radiometry is not None else data.clip_db
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
        y = self.data.labels_to_index(self.data.labels[j], self.legend)
        y = np.where(valid, y, IGNORE_INDEX).astype(np.int64)
        if self.radiometry is None:
            x = np.full(db.shape, np.nan, dtype=np.float32)
        else:
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
