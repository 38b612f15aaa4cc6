"""Defaults of dataset building, in one light module (no NumPy, no GDAL).

:class:`~alosmap.train.build_dataset.BuildConfig`,
:class:`~alosmap.train.build_general.GeneralConfig` and the options of
``alosmap train build-dataset`` (its values and help texts) take them from here, so
the command's ``--help`` stays quick and always states the library's values.
"""

from __future__ import annotations

__all__ = [
    "ANCHORS",
    "DEFAULT_SPLIT",
    "FINETUNE_MONTHS",
    "MAX_NODATA",
    "MIN_LABEL_FRACTION",
    "MIN_SCENES_FOR_SCENE_SPLIT",
    "PATCH_SIZE",
    "PRETRAIN_MONTHS",
    "SEED",
]

#: Anchor points drawn on the paper's path (the paper: 1,000,000).
ANCHORS = 1_000_000
#: Months whose scenes give pretraining patches (the paper's path).
PRETRAIN_MONTHS: tuple[int, ...] = (10, 11)
#: Months whose scenes give train/val/test patches (the paper's path).
FINETUNE_MONTHS: tuple[int, ...] = (9,)
#: Train / val / test fractions when none are given (both paths).
DEFAULT_SPLIT: tuple[float, float, float] = (0.7, 0.15, 0.15)
#: Patch side in pixels.
PATCH_SIZE = 256
#: Largest fraction of SAR no-data pixels a kept patch may hold.
MAX_NODATA = 0.5
#: Smallest fraction of a patch's SAR-valid pixels that must carry a label.
MIN_LABEL_FRACTION = 0.5
#: Seed of anchors and splits.
SEED = 0
#: Scenes (groups) from which the own-data path splits by scene by default.
MIN_SCENES_FOR_SCENE_SPLIT = 3
