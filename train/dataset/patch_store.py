"""A dataset's patch arrays and σ0 statistics (both paths of ``build-dataset``).

``sar_db.npy`` and ``labels.npy`` are memory-mapped ``.npy`` files sized for every
candidate patch, filled in order with the kept ones, then shrunk to them
(:func:`shrink_npy`); nothing is held in memory but the patch being written.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.radiometry import DEFAULT_CLIP_DB
from alosmap.train.dataset.record import PatchRecord

logger = logging.getLogger(__name__)

__all__ = [
    "Normalization",
    "PatchStore",
    "format_normalization",
    "normalization",
    "shrink_npy",
]


@dataclass
class PatchStore:
    """Kept patches: the memory-mapped arrays being filled and per-patch results."""

    sar: np.memmap | np.ndarray  # float16 [N_candidates, P, P] (memmap)
    labels: np.memmap | np.ndarray  # uint8 [N_candidates, P, P] (memmap)
    records: list[PatchRecord] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    sums: list[tuple[float, float, int]] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, n: int, p: int) -> PatchStore:
        """Empty ``sar_db.npy`` and ``labels.npy`` of ``n`` patches in ``directory``."""
        sar = np.lib.format.open_memmap(
            directory / "sar_db.npy", mode="w+", dtype=np.float16, shape=(n, p, p)
        )
        labels = np.lib.format.open_memmap(
            directory / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, p, p)
        )
        return cls(sar=sar, labels=labels)

    def add(
        self,
        record: PatchRecord,
        group: str,
        sar: np.ndarray,
        labels: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Store one patch (σ0 dB as float16) and its normalisation sums."""
        n = len(self.records)
        record.index = n
        x = sar.astype(np.float16)
        self.sar[n] = x
        self.labels[n] = labels
        # sums over the stored (float16) values, clipped like the model input
        xv = np.clip(x[valid].astype(np.float64), *DEFAULT_CLIP_DB)
        self.sums.append((float(xv.sum()), float((xv * xv).sum()), int(xv.size)))
        self.records.append(record)
        self.groups.append(group)

    def close(self, directory: Path) -> int:
        """Flush, release the memmaps and shrink the files to the kept patches.

        Returns:
            The number of kept patches.
        """
        for a in (self.sar, self.labels):
            if isinstance(a, np.memmap):
                a.flush()
        n = len(self.records)
        self.sar = self.labels = np.empty(0)  # release the memmaps
        if n:
            shrink_npy(directory / "sar_db.npy", n)
            shrink_npy(directory / "labels.npy", n)
        return n


def shrink_npy(path: Path, n: int) -> None:
    """Keep the first ``n`` rows of a C-order ``.npy`` file, in place if possible."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if shape[0] == n:
        return
    new_shape = (n, *shape[1:])
    header: dict[str, Any] = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": fortran,
    }
    header["shape"] = new_shape
    buf = io.BytesIO()
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    if buf.tell() == offset:
        with path.open("r+b") as f:
            f.write(buf.getvalue())
            f.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)
        return
    # header length changed: copy (rare)
    src = np.load(path, mmap_mode="r")
    tmp = path.with_suffix(".shrink.npy")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=new_shape)
    for i in range(0, n, 256):
        dst[i : i + 256] = src[i : min(n, i + 256)]
    dst.flush()
    del dst, src
    os.replace(tmp, path)


@dataclass(frozen=True)
class Normalization:
    """σ0 statistics (dB, clipped) and the split they come from.

    All None when no split could give them (no training patches): such a dataset
    evaluates models but trains none (``dataset.json`` holds ``null``, never NaN).
    """

    split: str | None
    mean_db: float | None
    std_db: float | None


def normalization(
    sums: Sequence[tuple[float, float, int]],
    splits: np.ndarray,
    notes: list[str],
    fallback: str | None = None,
) -> Normalization:
    """Mean and std over the training split (else the ``fallback`` split, noted).

    Args:
        sums: per patch, the sum, sum of squares and count of its valid σ0 (dB).
        splits: per patch, its split.
        notes: the summary's notes (a line is added without a training split).
        fallback: the split to use without training patches (the paper's path:
            ``pretrain``, what pretraining trains on); None: no statistics.
    """
    for split in ("train", fallback):
        if split is None:
            continue
        pick = splits == split
        s = np.array(sums, dtype=np.float64).reshape(-1, 3)[pick]
        if not pick.any() or s[:, 2].sum() == 0:
            continue
        if split != "train":
            notes.append(f"no training patches: normalisation from the {split} split")
        mean = s[:, 0].sum() / s[:, 2].sum()
        std = math.sqrt(max(0.0, s[:, 1].sum() / s[:, 2].sum() - mean * mean))
        return Normalization(split, mean, std)
    notes.append(
        "no training patches: no σ0 statistics (null in dataset.json); the dataset "
        "can evaluate a model but not train one"
    )
    return Normalization(None, None, None)


def format_normalization(n: dict[str, Any]) -> str:
    """The summary's normalisation line (statistics, or why there are none)."""
    lo, hi = DEFAULT_CLIP_DB
    if n["mean_db"] is None:
        return (
            "normalisation: none (no training patches): the dataset can evaluate a "
            "model but not train one"
        )
    return (
        f"normalisation ({n['split']} split, σ0 clipped to {lo:g}..{hi:g} dB): "
        f"mean {n['mean_db']:.3f} dB, std {n['std_db']:.3f} dB"
    )


@dataclass
class BuildResult:
    """What a dataset build made.

    Returned by :func:`~alosmap.train.dataset.jaxa.build_dataset` and
    :func:`~alosmap.train.dataset.general.build_general`.

    Attributes:
        path: the dataset directory.
        summary: the summary stored in ``dataset.json``.
        summary_text: the same as a readable table (also in ``summary.txt``).
    """

    path: Path
    summary: dict[str, Any]
    summary_text: str
