"""Class tables: JAXA's HRLULC legend, the 9-class LULC scheme and water.

This module is the only place that knows class numbers. Everything else asks it.

* **JAXA HRLULC v23.12** (JAXA's own legend, ``README_JAXA.txt`` of the
  release): codes 1-14, 0 = no data.
* **LULC-9** (paper Section III-A): the five forest classes (DBF, DNF, EBF, ENF,
  bamboo) merge into *Forest* and paddy into *Cropland*. The model predicts indices
  0-8; maps written to disk use codes 1-9 with 0 = no data.
* **Water**: water vs not water from the same source. Model index 1 = water;
  maps on disk: 1 water, 0 not water, 255 no data.

Training labels use :data:`IGNORE_INDEX` (255) for pixels excluded from losses and
metrics (no data in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Label value excluded from losses and metrics.
IGNORE_INDEX = 255
#: No-data value of JAXA LULC tiles.
JAXA_NODATA = 0
#: No-data value of LULC maps written by alosmap.
LULC_NODATA = 0
#: No-data value of water maps written by alosmap (0 and 1 are classes).
WATER_NODATA = 255


@dataclass(frozen=True)
class ClassInfo:
    """One class of a legend.

    Attributes:
        code: value stored in map files.
        name: human-readable name.
        color: RGB colour for colour tables and previews.
    """

    code: int
    name: str
    color: tuple[int, int, int]


#: JAXA HRLULC v23.12 legend (code -> class).
JAXA_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "Water bodies", (0, 92, 230)),
    ClassInfo(2, "Built-up", (220, 20, 60)),
    ClassInfo(3, "Paddy field", (0, 200, 200)),
    ClassInfo(4, "Cropland", (245, 222, 60)),
    ClassInfo(5, "Grassland", (170, 220, 100)),
    ClassInfo(6, "DBF (deciduous broad-leaf forest)", (60, 170, 60)),
    ClassInfo(7, "DNF (deciduous needle-leaf forest)", (110, 150, 40)),
    ClassInfo(8, "EBF (evergreen broad-leaf forest)", (0, 110, 40)),
    ClassInfo(9, "ENF (evergreen needle-leaf forest)", (20, 80, 60)),
    ClassInfo(10, "Bare", (180, 160, 130)),
    ClassInfo(11, "Bamboo forest", (140, 200, 40)),
    ClassInfo(12, "Solar panel", (120, 60, 200)),
    ClassInfo(13, "Wetland", (80, 200, 200)),
    ClassInfo(14, "Greenhouse", (250, 150, 220)),
)

#: JAXA codes of the five forest classes merged into LULC-9 Forest.
JAXA_FOREST_CODES = (6, 7, 8, 9, 11)

#: The paper's 9-class LULC scheme; model index i is written as code i + 1.
LULC9_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "Water", (0, 92, 230)),
    ClassInfo(2, "Built-up", (220, 20, 60)),
    ClassInfo(3, "Cropland", (245, 222, 60)),
    ClassInfo(4, "Grassland", (170, 220, 100)),
    ClassInfo(5, "Forest", (20, 120, 50)),
    ClassInfo(6, "Bare", (180, 160, 130)),
    ClassInfo(7, "Solar panel", (120, 60, 200)),
    ClassInfo(8, "Wetland", (80, 200, 200)),
    ClassInfo(9, "Greenhouse", (250, 150, 220)),
)

#: Water task: model index 0 = not water, 1 = water (codes on disk are the same).
WATER_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "Not water", (235, 235, 225)),
    ClassInfo(1, "Water", (0, 92, 230)),
)

#: JAXA code -> LULC-9 model index (one entry per JAXA code 1-14).
_JAXA_TO_LULC9_INDEX = {
    1: 0,  # Water bodies -> Water
    2: 1,  # Built-up
    3: 2,  # Paddy field -> Cropland
    4: 2,  # Cropland
    5: 3,  # Grassland
    6: 4,  # DBF -> Forest
    7: 4,  # DNF -> Forest
    8: 4,  # EBF -> Forest
    9: 4,  # ENF -> Forest
    10: 5,  # Bare
    11: 4,  # Bamboo -> Forest
    12: 6,  # Solar panel
    13: 7,  # Wetland
    14: 8,  # Greenhouse
}


@dataclass(frozen=True)
class Task:
    """What a mapping task means for models, maps and metrics.

    Code asks a task's record instead of comparing task names.

    Attributes:
        name: ``"lulc"`` or ``"water"`` (the ``--task`` value, the spec's task).
        title: human-readable name of its maps (previews, reports).
        classes: the legend of its maps (codes on disk, names, colours).
        nodata: the no-data code of its maps.
        binary: one model output thresholded (water) instead of an argmax over
            one output per class.
        metric: the model-selection metric (``"miou"`` or ``"iou_water"``).
        jaxa_lut: 256-entry lookup from JAXA HRLULC codes to training indices.
    """

    name: str
    title: str
    classes: tuple[ClassInfo, ...]
    nodata: int
    binary: bool
    metric: str
    jaxa_lut: np.ndarray = field(repr=False, compare=False)

    @property
    def num_outputs(self) -> int:
        """Channels the model outputs (1 for a binary task, else one per class)."""
        return 1 if self.binary else len(self.classes)

    @property
    def num_train_classes(self) -> int:
        """Classes of the training labels and confusion matrices (2 for binary)."""
        return len(self.classes)

    def default_threshold(self) -> float | None:
        """Probability threshold of a binary task (0.5); None for argmax tasks."""
        return 0.5 if self.binary else None


def _lut(mapping: dict[int, int], default: int) -> np.ndarray:
    lut = np.full(256, default, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


#: 256-entry lookup: JAXA code -> LULC-9 training index (255 = ignore).
JAXA_TO_LULC9 = _lut(_JAXA_TO_LULC9_INDEX, IGNORE_INDEX)
#: 256-entry lookup: JAXA code -> water training index (1 water, 0 not, 255 ignore).
JAXA_TO_WATER = _lut({c.code: int(c.code == 1) for c in JAXA_CLASSES}, IGNORE_INDEX)


#: The tasks, by name.
LULC = Task(
    "lulc", "LULC map", LULC9_CLASSES, LULC_NODATA, False, "miou", JAXA_TO_LULC9
)
WATER = Task(
    "water", "Water map", WATER_CLASSES, WATER_NODATA, True, "iou_water", JAXA_TO_WATER
)
TASK_RECORDS: dict[str, Task] = {t.name: t for t in (LULC, WATER)}
TASKS = tuple(TASK_RECORDS)


def get_task(task: str | Task) -> Task:
    """The :class:`Task` record of ``task`` (a name or already a record).

    Raises:
        ValueError: for an unknown task name.
    """
    if isinstance(task, Task):
        return task
    try:
        return TASK_RECORDS[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; expected one of {', '.join(TASK_RECORDS)}"
        ) from None


def classes_for_task(task: str) -> tuple[ClassInfo, ...]:
    """Return the output legend of a task (``"lulc"`` or ``"water"``)."""
    return get_task(task).classes


def jaxa_to_training(labels: np.ndarray, task: str) -> np.ndarray:
    """Map JAXA codes to training indices of ``task``; no data and unknown -> 255.

    Args:
        labels: uint8 array of JAXA codes, any shape.
        task: ``"lulc"`` or ``"water"``.
    """
    return get_task(task).jaxa_lut[np.asarray(labels, dtype=np.uint8)]


def jaxa_to_lulc9_codes(labels: np.ndarray) -> np.ndarray:
    """Map JAXA codes to LULC-9 map codes (1-9, 0 = no data)."""
    idx = jaxa_to_training(labels, "lulc")
    return np.where(idx == IGNORE_INDEX, LULC_NODATA, idx + 1).astype(np.uint8)


def colormap(classes: tuple[ClassInfo, ...]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table (code -> RGBA) for ``classes``; other codes transparent."""
    cmap = {i: (0, 0, 0, 0) for i in range(256)}
    for c in classes:
        cmap[c.code] = (*c.color, 255)
    return cmap
