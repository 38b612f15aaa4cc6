"""Train / val / test splits of a dataset: fractions, per patch, per scene, split files.

Three ways to split the labelled patches of ``build-dataset``:

* **per patch** (:func:`split_patches`): a seeded shuffle of the patches cut at the
  fractions (the paper's split of its finetuning month, ``--split-by random``);
* **per group** (:func:`split_groups`): whole groups (scenes, months) go to one
  split each, so no image is seen in two splits. Groups are shuffled (seeded) and
  each goes to the split furthest below its target number of patches; while a
  split with a positive fraction is still empty and only as many groups are left
  as there are such splits, the next group goes to one of them. With at least as
  many groups as positive fractions, every split that should hold patches does;
* **given** (:func:`read_split_file`): a split file maps scenes or files to splits.

Fractions may be 0 (``0/0/1``: an all-test dataset, for evaluation only).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from alosmap.train.errors import DatasetBuildError

__all__ = [
    "LABELLED_SPLITS",
    "SPLIT_BY",
    "check_fractions",
    "parse_split",
    "read_split_file",
    "split_groups",
    "split_patches",
]

#: Split names of labelled patches, in the order of the fractions.
LABELLED_SPLITS = ("train", "val", "test")
#: Choices of ``--split-by``.
SPLIT_BY = ("month", "scene", "random")


def check_fractions(values: Sequence[float], text: str | None = None) -> None:
    """Refuse fractions that are not three non-negative numbers summing to 1.

    Raises:
        DatasetBuildError: naming ``--split`` and the value.
    """
    shown = text if text is not None else "/".join(f"{v:g}" for v in values)
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise DatasetBuildError(
            f"--split {shown}: expected 3 fractions train/val/test, each ≥ 0, "
            "e.g. 0.7/0.15/0.15 (0/0/1: all test)"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise DatasetBuildError(
            f"--split {shown}: the fractions sum to {sum(values):g}, not 1"
        )


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse ``"0.7/0.15/0.15"`` (``/`` or ``,`` separated) into 3 fractions.

    Zero fractions are allowed (``0/0/1``).

    Raises:
        DatasetBuildError: not three non-negative numbers that sum to 1.
    """
    parts = [p for p in text.replace(",", "/").split("/") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise DatasetBuildError(
            f"--split {text!r}: expected three numbers train/val/test, "
            "e.g. 0.7/0.15/0.15"
        ) from None
    check_fractions(values, repr(text))
    return values[0], values[1], values[2]


def split_patches(
    indices: np.ndarray,
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Patches → splits by a seeded shuffle cut at the fractions.

    ``round(f_train · n)`` patches go to train, ``round(f_val · n)`` (at most what
    is left) to val, the rest to test.

    Args:
        indices: the patches to split.
        fractions: train / val / test.
        rng: the split's random generator (one permutation is drawn).

    Returns:
        The patch indices of each split (``train``, ``val``, ``test``).
    """
    shuffled = rng.permutation(indices)
    n = len(shuffled)
    n_train = round(fractions[0] * n)
    n_val = min(n - n_train, round(fractions[1] * n))
    return {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }


def split_groups(
    sizes: Mapping[str, int],
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, str]:
    """Whole groups → splits, as close to the fractions (in patches) as they allow.

    Args:
        sizes: patches per group (groups without patches are left out).
        fractions: train / val / test.
        rng: the split's random generator (one permutation is drawn).

    Returns:
        The split of each group.
    """
    names = sorted(g for g, n in sizes.items() if n > 0)
    order = [names[i] for i in rng.permutation(len(names))]
    total = sum(sizes[g] for g in order)
    targets = {s: f * total for s, f in zip(LABELLED_SPLITS, fractions, strict=True)}
    positive = [s for s in LABELLED_SPLITS if targets[s] > 0]
    have = dict.fromkeys(LABELLED_SPLITS, 0)
    out: dict[str, str] = {}
    for i, g in enumerate(order):
        empty = [s for s in positive if have[s] == 0]
        left = len(order) - i
        choices = empty if empty and left <= len(empty) else positive
        # furthest below its target; ties in the order train, val, test
        best = max(choices, key=lambda s: (targets[s] - have[s], -positive.index(s)))
        out[g] = best
        have[best] += sizes[g]
    return out


def read_split_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """A split file: one ``key,split`` (or ``key split``) per line.

    Keys name a scene (the manifest's ``scene`` column), an image file name or
    stem, or an image path as given. Blank lines and lines starting with ``#`` are
    skipped; a first line ``scene,split`` (any key column name) is a header.

    Raises:
        DatasetBuildError: an unreadable file, a bad line, a split other than
            train/val/test, a key given twice.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetBuildError(f"--split-file {p}: cannot read it ({exc})") from exc
    out: dict[str, str] = {}
    first = True
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header, first = first, False
        fields = next(csv.reader([line])) if "," in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 2 or not fields[0]:
            raise DatasetBuildError(
                f"--split-file {p}, line {lineno}: expected 'scene-or-file,split', "
                f"got {raw!r}"
            )
        key, split = fields[0], fields[1].lower()
        if header and split == "split":
            continue
        if split not in LABELLED_SPLITS:
            raise DatasetBuildError(
                f"--split-file {p}, line {lineno}: split {fields[1]!r} is not one of "
                f"{', '.join(LABELLED_SPLITS)}"
            )
        if key in out and out[key] != split:
            raise DatasetBuildError(
                f"--split-file {p}, line {lineno}: {key!r} is given twice "
                f"({out[key]} and {split})"
            )
        out[key] = split
    if not out:
        raise DatasetBuildError(f"--split-file {p}: no 'scene-or-file,split' lines")
    return out
