"""Legends: JAXA's HRLULC legend, the 9-class LULC scheme, water, and users' own.

This module is the only place that knows class numbers. Everything else asks it.

A :class:`Legend` says what a model's outputs, its maps and its training labels mean:

* ``classes``: the classes in model-output order; each has the ``code`` written in
  maps, a name, a colour and the label-raster ``values`` that mean it;
* ``nodata``: the map code of no data; ``ignore``: label values that mean "no label";
* ``binary``: one output thresholded (water vs not) instead of an argmax.

The presets are legends like any other:

* **JAXA HRLULC v23.12** (JAXA's own legend, ``README_JAXA.txt`` of the release):
  codes 1-14, 0 = no data.
* **LULC-9** (paper Section III-A, task ``lulc``, label preset ``jaxa-lulc9``): the
  five forest classes (DBF, DNF, EBF, ENF, bamboo) merge into *Forest* and paddy into
  *Cropland*. The model predicts indices 0-8; maps use codes 1-9 with 0 = no data.
* **Water** (task ``water``): water vs not water. Model index 1 = water; maps: 1 water,
  0 not water, 255 no data. Its labels come from JAXA tiles (``jaxa-water``) or from
  0/1 rasters (``water-binary``, 255 = no label).

Users describe their own labels in a legend file (:func:`load_legend`, YAML or JSON)::

    name: flood            # the task name of the models and maps it makes
    binary: true           # two classes, one output thresholded (default false)
    nodata: 255            # map code of no data (default 0, or 255 when 0 is a class)
    ignore: [-1]           # label values meaning "no label"
    classes:               # in model-output order; or a mapping value -> name/object
      - {name: Not water, values: [0], color: "#ebebe1"}
      - {name: Water, values: [1], code: 1, color: [0, 92, 230]}

Training labels use :data:`IGNORE_INDEX` (255) for pixels excluded from losses and
metrics, and :data:`UNKNOWN_LABEL` (254) for values a legend does not name (never
trained on: the dataset builder refuses them).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.errors import AlosmapError

#: Label value excluded from losses and metrics.
IGNORE_INDEX = 255
#: Training index of label values that a legend does not name.
UNKNOWN_LABEL = 254
#: No-data value of JAXA LULC tiles.
JAXA_NODATA = 0
#: No-data value of LULC maps written by alosmap.
LULC_NODATA = 0
#: No-data value of water maps written by alosmap (0 and 1 are classes).
WATER_NODATA = 255
#: Most classes a legend may have (training indices 0..253).
MAX_CLASSES = 200

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
#: Colours given to classes of a legend file that names none.
_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


class LegendError(AlosmapError, ValueError):
    """A legend (file or preset name) that cannot be used; the message says why."""


@dataclass(frozen=True)
class ClassInfo:
    """One class of a legend.

    Attributes:
        code: value stored in map files.
        name: human-readable name.
        color: RGB colour for colour tables and previews.
        values: label-raster values that mean this class (empty: ``(code,)``).
    """

    code: int
    name: str
    color: tuple[int, int, int]
    values: tuple[int, ...] = ()

    @property
    def label_values(self) -> tuple[int, ...]:
        """The label values of this class (``values``, or its code)."""
        return self.values or (self.code,)


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

#: The paper's 9-class LULC scheme; model index i is written as code i + 1. Its
#: ``values`` are the JAXA codes each class merges.
LULC9_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "Water", (0, 92, 230), (1,)),
    ClassInfo(2, "Built-up", (220, 20, 60), (2,)),
    ClassInfo(3, "Cropland", (245, 222, 60), (3, 4)),
    ClassInfo(4, "Grassland", (170, 220, 100), (5,)),
    ClassInfo(5, "Forest", (20, 120, 50), JAXA_FOREST_CODES),
    ClassInfo(6, "Bare", (180, 160, 130), (10,)),
    ClassInfo(7, "Solar panel", (120, 60, 200), (12,)),
    ClassInfo(8, "Wetland", (80, 200, 200), (13,)),
    ClassInfo(9, "Greenhouse", (250, 150, 220), (14,)),
)

#: Water task: model index 0 = not water, 1 = water (codes on disk are the same);
#: label values of the JAXA tiles.
WATER_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "Not water", (235, 235, 225), tuple(range(2, 15))),
    ClassInfo(1, "Water", (0, 92, 230), (1,)),
)


@dataclass(frozen=True)
class Legend:
    """What a model's outputs, its maps and its training labels mean.

    Code asks a legend's record instead of comparing task names.

    Attributes:
        name: the task name (``"lulc"``, ``"water"`` or a user's; the spec's task).
        title: human-readable name of its maps (previews, reports).
        classes: the classes in model-output order (codes on disk, names, colours,
            label values).
        nodata: the no-data code of its maps.
        binary: one model output thresholded (water) instead of an argmax over
            one output per class.
        ignore: label values that mean "no label" (besides a raster's no-data).
    """

    name: str
    title: str
    classes: tuple[ClassInfo, ...]
    nodata: int
    binary: bool = False
    ignore: tuple[int, ...] = ()
    #: label value + 1 → training index, for values -1 (any below 0) to 256 (any
    #: above 255): the 256-entry lookup with an "unknown" entry at each end
    _lut_ext: np.ndarray = field(init=False, repr=False, compare=False)
    #: label values outside 0..255 → training index (or IGNORE_INDEX)
    _wide: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate, and build the label lookup."""
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "ignore", tuple(int(v) for v in self.ignore))
        _check_legend(self)
        table = {v: IGNORE_INDEX for v in self.ignore} | self.label_values()
        ext = np.full(258, UNKNOWN_LABEL, dtype=np.uint8)
        for v, i in table.items():
            if 0 <= v <= 255:
                ext[v + 1] = i
        ext.flags.writeable = False
        object.__setattr__(self, "_lut_ext", ext)
        wide = {v: i for v, i in table.items() if not 0 <= v <= 255}
        object.__setattr__(self, "_wide", wide)

    @property
    def _lut(self) -> np.ndarray:
        """The 256-entry lookup of uint8 labels (a view)."""
        return self._lut_ext[1:257]

    # ------------------------------------------------------------ outputs
    @property
    def metric(self) -> str:
        """The model-selection metric: ``"miou"``, or ``iou_<positive class>``.

        A binary legend's (:func:`alosmap.metrics.positive_iou_name`): the water
        legend's is ``iou_water``, a positive class *Flooded area* gives
        ``iou_flooded_area``.
        """
        if not self.binary:
            return "miou"
        from alosmap.metrics import positive_iou_name  # metrics imports this module

        return positive_iou_name(self.positive.name)

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

    @property
    def codes(self) -> list[int]:
        """Map codes in model-output order."""
        return [c.code for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in model-output order."""
        return [c.name for c in self.classes]

    @property
    def positive(self) -> ClassInfo:
        """The class a binary legend's output stands for (its second class)."""
        return self.classes[-1]

    def lut(self, extra_nodata: float | None = None) -> np.ndarray:
        """Map code → class index; :data:`IGNORE_INDEX` for no data, else unknown.

        Args:
            extra_nodata: a file's own no-data value, ignored too when it is not
                one of the legend's codes.
        """
        lut = np.full(256, UNKNOWN_LABEL, dtype=np.uint8)
        lut[self.nodata] = IGNORE_INDEX
        if extra_nodata is not None and _is_byte(extra_nodata):
            lut[int(extra_nodata)] = IGNORE_INDEX
        for i, c in enumerate(self.classes):
            lut[c.code] = i
        return lut

    # ------------------------------------------------------------- labels
    @property
    def label_lut(self) -> np.ndarray:
        """256-entry lookup: label value → training index (unknown → 254)."""
        return self._lut

    def label_values(self) -> dict[int, int]:
        """Every label value the legend names → its training index."""
        return {v: i for i, c in enumerate(self.classes) for v in c.label_values}

    def labels_to_index(
        self, labels: np.ndarray, nodata: float | None = None
    ) -> np.ndarray:
        """Label values → uint8 training indices.

        :data:`IGNORE_INDEX` for ``ignore`` values, ``nodata`` and NaN;
        :data:`UNKNOWN_LABEL` for values the legend does not name.

        Args:
            labels: label raster values, any numeric dtype and shape.
            nodata: the label raster's own no-data value.
        """
        a = np.asarray(labels)
        out = self._lut[a] if a.dtype == np.uint8 else self._general_lookup(a)
        if nodata is not None and not (
            isinstance(nodata, float) and math.isnan(nodata)
        ):
            out[a == nodata] = IGNORE_INDEX
        return out

    def _general_lookup(self, a: np.ndarray) -> np.ndarray:
        """:meth:`labels_to_index` of a non-uint8 array (without its ``nodata``).

        One gather through the label lookup, extended by an entry for values
        below 0 and one for values above 255 (unknown); legend values outside
        0..255 (:attr:`_wide`) are then looked up once per distinct value.
        Non-finite values are ignored, fractional ones unknown.
        """
        if a.dtype.kind == "b":
            return self._lut[a.view(np.uint8)]
        whole: np.ndarray | None = None
        if a.dtype.kind == "f":
            finite = np.isfinite(a)
            whole = finite & (a == np.round(np.where(finite, a, 0)))
            idx = np.clip(np.where(whole, a, -1), -1, 256).astype(np.int16)
        else:
            info = np.iinfo(a.dtype)
            bounds = max(info.min, -1), min(info.max, 256)
            idx = np.clip(a, *bounds).astype(np.int16, copy=False)
        idx += 1
        out = self._lut_ext[idx]
        if whole is not None:
            out[~finite] = IGNORE_INDEX
        if self._wide:
            rest = (a < 0) | (a > 255)
            if whole is not None:
                rest &= whole
            if rest.any():
                values, inverse = np.unique(a[rest], return_inverse=True)
                found = [self._wide.get(int(v), UNKNOWN_LABEL) for v in values.tolist()]
                out[rest] = np.asarray(found, dtype=np.uint8)[inverse]
        return out

    # ------------------------------------------------------------- records
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (legend files, ``dataset.json``, specs)."""
        return {
            "name": self.name,
            "title": self.title,
            "binary": self.binary,
            "nodata": self.nodata,
            "ignore": list(self.ignore),
            "classes": [
                {
                    "code": c.code,
                    "name": c.name,
                    "color": list(c.color),
                    "values": list(c.label_values),
                }
                for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "legend") -> Legend:
        """A legend from :meth:`to_dict` output or a legend file's content.

        Raises:
            LegendError: naming the first bad or missing field.
        """
        return _legend_from_data(data, source)

    def with_ignore(self, values: Iterable[float]) -> Legend:
        """A copy that also ignores ``values`` (e.g. ``--label-nodata``)."""
        extra = [int(v) for v in values if float(v).is_integer()]
        return replace(self, ignore=tuple(dict.fromkeys([*self.ignore, *extra])))

    def same_outputs(self, other: Legend) -> bool:
        """Whether models of both legends have the same outputs (codes, names, kind)."""
        return self.binary == other.binary and [
            (c.code, c.name) for c in self.classes
        ] == [(c.code, c.name) for c in other.classes]


def _is_byte(value: float) -> bool:
    return float(value).is_integer() and 0 <= value <= 255


def _check_legend(lg: Legend) -> None:
    """Raise :class:`LegendError` for an inconsistent legend."""
    where = f"legend {lg.name!r}"
    if not _NAME_RE.match(lg.name):
        raise LegendError(
            f"{where}: the name must start with a letter and hold only letters, "
            "digits, '-' and '_' (at most 40)"
        )
    k = len(lg.classes)
    if not 2 <= k <= MAX_CLASSES:
        raise LegendError(f"{where}: needs 2 to {MAX_CLASSES} classes, has {k}")
    if lg.binary and k != 2:
        raise LegendError(f"{where}: a binary legend has exactly 2 classes, not {k}")
    codes = lg.codes
    if len(set(codes)) != k or any(not 0 <= c <= 254 for c in codes):
        raise LegendError(f"{where}: class codes must be unique and in 0..254: {codes}")
    if not 0 <= lg.nodata <= 255 or lg.nodata in codes:
        raise LegendError(
            f"{where}: the map no-data code {lg.nodata} must be in 0..255 and not "
            f"a class code ({codes})"
        )
    names = [c.name for c in lg.classes]
    if len({n.lower() for n in names}) != k or any(not n.strip() for n in names):
        raise LegendError(f"{where}: class names must be unique and not empty")
    seen: dict[int, str] = {}
    for c in lg.classes:
        if any(not 0 <= v <= 255 for v in c.color) or len(c.color) != 3:
            raise LegendError(f"{where}: colour {c.color} of {c.name!r} is not RGB")
        for v in c.label_values:
            if v in seen:
                raise LegendError(
                    f"{where}: label value {v} is in both {seen[v]!r} and {c.name!r}"
                )
            if v in lg.ignore:
                raise LegendError(
                    f"{where}: label value {v} of {c.name!r} is also ignored"
                )
            seen[v] = c.name


# ---------------------------------------------------------------------- presets
LULC = Legend("lulc", "LULC map", LULC9_CLASSES, LULC_NODATA, False, (JAXA_NODATA,))
WATER = Legend("water", "Water map", WATER_CLASSES, WATER_NODATA, True, (JAXA_NODATA,))
#: Water from 0/1 label rasters (255 = no label; add others with the raster's
#: no-data or ``--label-nodata``).
WATER_BINARY = replace(
    WATER,
    classes=tuple(replace(c, values=(c.code,)) for c in WATER_CLASSES),
    ignore=(255,),
)
#: JAXA HRLULC tiles read as their own 14 classes (reference maps).
JAXA = Legend(
    "jaxa", "JAXA HRLULC map", JAXA_CLASSES, JAXA_NODATA, False, (JAXA_NODATA,)
)

#: The tasks of the bundled models, by name.
TASK_RECORDS: dict[str, Legend] = {t.name: t for t in (LULC, WATER)}
TASKS = tuple(TASK_RECORDS)

#: Named label schemes of ``build-dataset --legend``: how label rasters are read.
LABEL_PRESETS: dict[str, Legend] = {
    "jaxa-lulc9": LULC,
    "jaxa-water": WATER,
    "water-binary": WATER_BINARY,
}

#: 256-entry lookup: JAXA code -> LULC-9 training index (255 = ignore).
JAXA_TO_LULC9 = np.where(LULC.label_lut == UNKNOWN_LABEL, IGNORE_INDEX, LULC.label_lut)
#: 256-entry lookup: JAXA code -> water training index (1 water, 0 not, 255 ignore).
JAXA_TO_WATER = np.where(
    WATER.label_lut == UNKNOWN_LABEL, IGNORE_INDEX, WATER.label_lut
)
_JAXA_LUTS = {"lulc": JAXA_TO_LULC9, "water": JAXA_TO_WATER}
#: Every legend alosmap knows by name (:func:`resolve_legend`): the bundled tasks,
#: JAXA's own legend and the label presets.
NAMED_LEGENDS: dict[str, Legend] = {**TASK_RECORDS, JAXA.name: JAXA, **LABEL_PRESETS}


def get_task(task: str | Legend) -> Legend:
    """The legend of a bundled task (a name or already a record).

    Raises:
        LegendError: (a ValueError) for an unknown task name.
    """
    return resolve_legend(task, names=TASK_RECORDS, files=False, what="task")


def jaxa_to_training(labels: np.ndarray, task: str | Legend) -> np.ndarray:
    """Map JAXA codes to training indices of ``task``; no data and unknown -> 255.

    Args:
        labels: uint8 array of JAXA codes, any shape.
        task: ``"lulc"`` or ``"water"`` (or their records).
    """
    name = task.name if isinstance(task, Legend) else get_task(task).name
    return _JAXA_LUTS[name][np.asarray(labels, dtype=np.uint8)]


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


# ------------------------------------------------------------------ legend files
def resolve_legend(
    value: str | os.PathLike[str] | Legend,
    *,
    names: Mapping[str, Legend] | None = None,
    files: bool = True,
    what: str = "legend",
) -> Legend:
    """The one way from a name, a label preset or a legend file to a :class:`Legend`.

    Args:
        value: a legend (returned as is), a name of ``names`` or the path of a YAML
            or JSON legend file.
        names: the names accepted (default :data:`NAMED_LEGENDS`: the bundled
            tasks, ``jaxa`` and the label presets).
        files: whether a legend file may be given.
        what: what the value is called in messages (``task``, ``legend``).

    Raises:
        LegendError: an unknown name, an unreadable file or a bad legend.
    """
    if isinstance(value, Legend):
        return value
    names = NAMED_LEGENDS if names is None else names
    text = str(value)
    if text in names:
        return names[text]
    if not files:
        raise LegendError(
            f"unknown {what} {text!r}; expected one of {', '.join(names)}"
        )
    p = Path(text)
    if not p.is_file():
        raise LegendError(
            f"{what} {text!r}: neither a preset ({', '.join(names)}) nor a legend file"
        )
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LegendError(f"{what} {p}: cannot read it ({exc})") from exc
    data = _parse_legend_text(raw, p)
    if isinstance(data, dict):
        data.setdefault("name", _name_from_stem(p.stem))
    return _legend_from_data(data, str(p))


def load_legend(name_or_path: str | os.PathLike[str]) -> Legend:
    """A label preset by name (:data:`LABEL_PRESETS`) or a YAML/JSON legend file.

    What ``--legend`` options take: :func:`resolve_legend` over the label presets.

    Raises:
        LegendError: an unknown preset, an unreadable file or a bad legend.
    """
    return resolve_legend(name_or_path, names=LABEL_PRESETS)


def _parse_legend_text(raw: str, p: Path) -> Any:
    if p.suffix.lower() == ".json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LegendError(f"legend {p}: not valid JSON ({exc})") from exc
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise LegendError(f"legend {p}: not valid YAML ({exc})") from exc


def _name_from_stem(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", stem)[:40]
    return name if name[:1].isalpha() else f"legend-{name}"[:40]


def parse_color(value: Any, where: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` or ``[r, g, b]`` → an RGB tuple.

    Raises:
        LegendError: anything else.
    """
    if isinstance(value, str) and re.fullmatch(r"#?[0-9A-Fa-f]{6}", value.strip()):
        h = value.strip().lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise LegendError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b]")


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise LegendError(f"{where}: {v!r} is not an integer label value")
        if not float(v).is_integer():
            raise LegendError(f"{where}: {v!r} is not an integer label value")
        out.append(int(v))
    return tuple(out)


def _class_entries(data: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    """The ``classes`` of a legend file as a list of objects."""
    raw = data.get("classes")
    if isinstance(raw, Mapping):  # value -> name, or value -> {name, color, ...}
        entries = []
        for key, val in raw.items():
            item = dict(val) if isinstance(val, Mapping) else {"name": val}
            if isinstance(key, str) and re.fullmatch(r"-?\d+", key.strip()):
                key = int(key)  # JSON object keys are strings
            item.setdefault("values", [_int_list(key, f"{source}: classes")[0]])
            entries.append(item)
        return entries
    if isinstance(raw, list) and all(isinstance(e, Mapping) for e in raw):
        return [dict(e) for e in raw]
    raise LegendError(
        f"{source}: 'classes' must be a list of {{name, values, color}} objects or "
        "a mapping label value -> name"
    )


def _class_info(i: int, item: Mapping[str, Any], source: str) -> ClassInfo:
    where = f"{source}: class {i + 1}"
    unknown = sorted(set(item) - {"name", "values", "value", "code", "color"})
    if unknown:
        raise LegendError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LegendError(f"{where}: needs a 'name'")
    values = _int_list(item.get("values", item.get("value", [])), where)
    if "code" in item:
        code = _int_list(item["code"], where)[0]
    elif len(values) == 1 and 0 <= values[0] <= 254:
        code = values[0]
    else:
        code = i + 1
    if not values:
        values = (code,)
    color = (
        parse_color(item["color"], where)
        if "color" in item
        else _PALETTE[i % len(_PALETTE)]
    )
    return ClassInfo(code, name.strip(), color, values)


def _legend_from_data(data: Any, source: str) -> Legend:
    if not isinstance(data, Mapping):
        raise LegendError(f"{source}: a legend is an object with 'classes'")
    known = {"name", "title", "binary", "nodata", "ignore", "classes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LegendError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}")
    classes = tuple(
        _class_info(i, e, source) for i, e in enumerate(_class_entries(data, source))
    )
    name = str(data.get("name", "custom"))
    codes = {c.code for c in classes}
    nodata = data.get("nodata", 255 if 0 in codes else 0)
    if isinstance(nodata, bool) or not isinstance(nodata, int):
        raise LegendError(f"{source}: 'nodata' must be an integer map code")
    binary = data.get("binary", False)
    if not isinstance(binary, bool):
        raise LegendError(f"{source}: 'binary' must be true or false")
    legend = Legend(
        name=name,
        title=str(data.get("title") or f"{name} map"),
        classes=classes,
        nodata=nodata,
        binary=binary,
        ignore=_int_list(data.get("ignore", []), f"{source}: ignore"),
    )
    preset = TASK_RECORDS.get(name)
    if preset is not None and not preset.same_outputs(legend):
        raise LegendError(
            f"{source}: the name {name!r} belongs to the bundled {name} models, whose "
            f"classes are {[(c.code, c.name) for c in preset.classes]}; give your "
            "legend another name"
        )
    return legend
