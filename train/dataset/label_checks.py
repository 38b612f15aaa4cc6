"""Label checks: does each class look the same to the radar in every scene?

Labels drawn from other evidence (optical images, field maps) can contradict the
radar: "water" drawn over flooded fields, vegetation or towns is as bright as land
in σ0, and a model trained on it learns a wrong threshold. Such labels show as a
class whose backscatter in one scene departs from the same class in the others.

For each class and scene (the split unit: ``manifest.csv``'s ``scene``) of a built
dataset's labelled patches (train, val and test) this module takes the σ0 (dB) of
the labelled, SAR-valid pixels: their number, median and quartiles (from
histograms of :data:`BIN_DB` dB, interpolated within a bin). Datasets hold one band
(``sar_db.npy`` is ``[N, P, P]``), so there is one table per dataset.

Two rules flag a class in a scene (both are warnings: the build goes on):

* **departs**: its median is far from the same class's median in the other
  scenes. ``z = (m − M) / s``, ``M`` the median of the class's scene medians,
  ``s = max(1.4826 · MAD, 1 dB)`` (MAD: the median absolute deviation of the scene
  medians from ``M``; 1.4826 · MAD is a standard deviation for normal data and the
  1 dB floor keeps near-identical scenes from making every small difference a
  flag). Flagged when ``|z| > 3.5``: at least 3.5 dB from ``M``, more when the
  scenes naturally disagree (``3.5 · 1.4826 · MAD`` ≈ 5.2 MAD).
* **overlaps**: its median lies inside another class's typical interquartile
  range and outside its own (typical: the median over the scenes of each scene's
  first and third quartiles), e.g. "water" in a scene as bright as land elsewhere.

A class is judged in a scene with at least :data:`MIN_PIXELS` pixels there, and
only when at least :data:`MIN_SCENES` scenes hold that many (a median of two
medians says nothing about which one is wrong). The way out of a flag, when the
labels are wrong: leave the scene out (``build-dataset --exclude-scene NAME`` or
the input manifest's ``exclude`` column).

Entry points: :func:`check_dataset` (an opened or named dataset),
:func:`check_patches` (arrays as ``build-dataset`` writes them),
:func:`format_label_check` (the table), :func:`plot_label_check` (the figure).
"""

from __future__ import annotations

import io
import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alosmap.classes import Legend
from alosmap.train.data import TrainingData
from alosmap.train.dataset.splits import LABELLED_SPLITS

__all__ = [
    "BIN_DB",
    "MAD_FLOOR_DB",
    "MIN_PIXELS",
    "MIN_SCENES",
    "Z_LIMIT",
    "ClassScene",
    "ClassSummary",
    "LabelCheck",
    "LabelFlag",
    "check_dataset",
    "check_histograms",
    "check_patches",
    "class_histograms",
    "format_label_check",
    "plot_label_check",
]

#: Histogram bin width (dB) of the σ0 distributions; quantiles are interpolated.
BIN_DB = 0.1
#: Histogram range (dB); values outside it count in the end bins.
LOW_DB, HIGH_DB = -60.0, 30.0
NBINS = round((HIGH_DB - LOW_DB) / BIN_DB)
#: Fewest pixels of a class in a scene for the scene to be judged.
MIN_PIXELS = 500
#: Fewest judged scenes of a class for the class to be judged at all.
MIN_SCENES = 3
#: |robust z| above which a scene's class median "departs".
Z_LIMIT = 3.5
#: Floor (dB) of the robust standard deviation of a class's scene medians.
MAD_FLOOR_DB = 1.0
#: MAD → standard deviation for normal data.
MAD_TO_SD = 1.4826
#: Scenes beyond which the build summary lists only flagged scenes' rows.
SUMMARY_SCENES = 20
#: Patches read at a time.
_CHUNK = 32


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class ClassScene:
    """One class in one scene: its σ0 distribution (dB) and robust z.

    Attributes:
        class_index: training index of the class.
        class_name: its name.
        scene: the scene (``manifest.csv``'s ``scene``).
        splits: the splits of the scene's patches, e.g. ``"train"``.
        pixels: labelled SAR-valid pixels of the class in the scene.
        median_db: their median σ0 (None without pixels).
        q1_db: first quartile (None without pixels).
        q3_db: third quartile (None without pixels).
        z: robust z-score of the median (None: not judged).
        flags: the rules that flag it (``departs``, ``overlaps``).
    """

    class_index: int
    class_name: str
    scene: str
    splits: str
    pixels: int
    median_db: float | None
    q1_db: float | None
    q3_db: float | None
    z: float | None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassSummary:
    """A class over the scenes that judge it (fields None when fewer than needed).

    Attributes:
        class_index: training index of the class.
        class_name: its name.
        pixels: its pixels in all scenes.
        scenes: scenes with at least :data:`MIN_PIXELS` of its pixels.
        median_db: median of those scenes' medians.
        sd_db: robust standard deviation of the scene medians
            (``max(1.4826 · MAD, 1 dB)``).
        q1_db: typical first quartile (median of the scenes' first quartiles).
        q3_db: typical third quartile.
    """

    class_index: int
    class_name: str
    pixels: int
    scenes: int
    median_db: float | None
    sd_db: float | None
    q1_db: float | None
    q3_db: float | None


@dataclass(frozen=True)
class LabelFlag:
    """A class in a scene that contradicts the radar.

    Attributes:
        scene: the scene.
        class_index: training index of the class.
        class_name: its name.
        rule: ``departs`` or ``overlaps``.
        message: the flag in words, with its numbers.
    """

    scene: str
    class_index: int
    class_name: str
    rule: str
    message: str


@dataclass(frozen=True)
class LabelCheck:
    """The label check of a dataset: per class and scene, and the flags.

    Attributes:
        legend: the legend's name.
        class_names: its classes, in training-index order.
        scenes: the scenes, in the order of the dataset.
        rows: one per class and scene with pixels of the class, by class.
        classes: one per class.
        flags: the flags, by scene.
        own_data: the dataset was built from (image, label) pairs (the way out is
            ``--exclude-scene``; the paper's datasets leave a scene out of
            ``--sar``).
        histograms: ``[S, K, NBINS]`` pixels per scene, class and σ0 bin of
            :data:`BIN_DB` dB from ``LOW_DB``.
    """

    legend: str
    class_names: tuple[str, ...]
    scenes: tuple[str, ...]
    rows: tuple[ClassScene, ...]
    classes: tuple[ClassSummary, ...]
    flags: tuple[LabelFlag, ...]
    own_data: bool = True
    histograms: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 0, NBINS), np.int64),
        repr=False,
        compare=False,
    )

    @property
    def flagged_scenes(self) -> list[str]:
        """The scenes with a flag, in the dataset's order."""
        flagged = {f.scene for f in self.flags}
        return [s for s in self.scenes if s in flagged]

    def way_out(self) -> str:
        """One line: how to leave the flagged scenes out ("" without flags)."""
        return way_out(self.flagged_scenes, self.own_data)

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-able data (``dataset.json``'s ``label_check``)."""
        return {
            "rule": rule_record(),
            "legend": self.legend,
            "classes": [_rounded(vars(c)) for c in self.classes],
            "scenes": list(self.scenes),
            "rows": [_rounded({**vars(r), "flags": list(r.flags)}) for r in self.rows],
            "flags": [dict(vars(f)) for f in self.flags],
            "flagged_scenes": self.flagged_scenes,
            "way_out": self.way_out(),
        }

    def format(self, max_scenes: int | None = None) -> str:
        """The check as a text table (see :func:`format_label_check`)."""
        return format_label_check(self.to_dict(), max_scenes)


def rule_record() -> dict[str, Any]:
    """The rule's parameters, as recorded with a check."""
    return {
        "z_limit": Z_LIMIT,
        "mad_floor_db": MAD_FLOOR_DB,
        "mad_to_sd": MAD_TO_SD,
        "min_pixels": MIN_PIXELS,
        "min_scenes": MIN_SCENES,
        "bin_db": BIN_DB,
        "splits": list(LABELLED_SPLITS),
    }


def way_out(scenes: Sequence[str], own_data: bool = True) -> str:
    """How to leave ``scenes`` out of a rebuild ("" without scenes)."""
    if not scenes:
        return ""
    if not own_data:
        return (
            "way out: if these labels are wrong, rebuild without the scene(s) in "
            f"--sar: {', '.join(scenes)}"
        )
    opts = " ".join(f"--exclude-scene {shlex.quote(s)}" for s in scenes)
    return (
        f"way out: if these labels are wrong, rebuild with {opts} (or exclude=yes "
        "in their rows of the input manifest)"
    )


def _rounded(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


# ------------------------------------------------------------------- histograms
def class_histograms(
    sar: np.ndarray,
    labels: np.ndarray,
    patches: Sequence[int],
    scenes: Sequence[str],
    num_classes: int,
    to_index: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """σ0 histograms per scene and class over some patches.

    Args:
        sar: ``[N, P, P]`` σ0 dB (NaN = no data), e.g. a memory-mapped
            ``sar_db.npy``; read :data:`_CHUNK` patches at a time.
        labels: ``[N, P, P]`` stored labels.
        patches: the patches to count.
        scenes: the scene of each of ``patches``.
        num_classes: ``K``, the legend's classes.
        to_index: stored labels → training indices (None: they are indices);
            indices ≥ ``K`` (no label) are not counted.

    Returns:
        The scenes (in order of first appearance) and ``[S, K, NBINS]`` pixels.
    """
    names = list(dict.fromkeys(scenes))
    where = {s: i for i, s in enumerate(names)}
    hist = np.zeros((len(names), num_classes, NBINS), np.int64)
    by_scene: dict[int, list[int]] = {}
    for p, name in zip(patches, scenes, strict=True):
        by_scene.setdefault(where[name], []).append(int(p))
    for s, idx in by_scene.items():
        for start in range(0, len(idx), _CHUNK):
            take = idx[start : start + _CHUNK]
            db = np.asarray(sar[take], dtype=np.float32)
            y = np.asarray(labels[take])
            y = np.asarray(to_index(y) if to_index is not None else y, np.int64)
            ok = np.isfinite(db) & (y < num_classes)
            b = np.clip(np.floor((db[ok] - LOW_DB) / BIN_DB), 0, NBINS - 1)
            flat = y[ok] * NBINS + b.astype(np.int64)
            hist[s] += np.bincount(flat, minlength=num_classes * NBINS).reshape(
                num_classes, NBINS
            )
    return names, hist


def _quartiles(h: np.ndarray) -> tuple[float, float, float]:
    """First quartile, median, third quartile (dB) of a histogram (NaN if empty)."""
    total = float(h.sum())
    if total == 0:
        return math.nan, math.nan, math.nan
    cum = np.cumsum(h)
    out = []
    for q in (0.25, 0.5, 0.75):
        t = q * total
        b = int(np.searchsorted(cum, t, side="left"))
        before = float(cum[b - 1]) if b else 0.0
        frac = (t - before) / float(h[b]) if h[b] else 0.5
        out.append(LOW_DB + (b + frac) * BIN_DB)
    return out[0], out[1], out[2]


# ------------------------------------------------------------------------ rules
@dataclass
class _Stats:
    """Per scene and class: pixels and quartiles ``[S, K]`` (NaN without pixels)."""

    pixels: np.ndarray
    q1: np.ndarray
    med: np.ndarray
    q3: np.ndarray

    @classmethod
    def of(cls, hist: np.ndarray) -> _Stats:
        s, k, _ = hist.shape
        q = np.full((3, s, k), np.nan)
        for i in range(s):
            for c in range(k):
                q[:, i, c] = _quartiles(hist[i, c])
        return cls(hist.sum(axis=2), q[0], q[1], q[2])


def _summaries(st: _Stats, names: Sequence[str]) -> list[ClassSummary]:
    """Each class over its judged scenes (None fields when too few)."""
    out = []
    for c, name in enumerate(names):
        judged = st.pixels[:, c] >= MIN_PIXELS
        n = int(judged.sum())
        if n < MIN_SCENES:
            out.append(
                ClassSummary(c, name, int(st.pixels[:, c].sum()), n, *(None,) * 4)
            )
            continue
        meds = st.med[judged, c]
        centre = float(np.median(meds))
        mad = float(np.median(np.abs(meds - centre)))
        out.append(
            ClassSummary(
                c,
                name,
                int(st.pixels[:, c].sum()),
                n,
                centre,
                max(MAD_TO_SD * mad, MAD_FLOOR_DB),
                float(np.median(st.q1[judged, c])),
                float(np.median(st.q3[judged, c])),
            )
        )
    return out


def _departs(m: float, z: float, cs: ClassSummary, scene: str) -> LabelFlag:
    assert cs.median_db is not None and cs.sd_db is not None
    return LabelFlag(
        scene,
        cs.class_index,
        cs.class_name,
        "departs",
        f"{scene}: {cs.class_name} median {m:.1f} dB, {m - cs.median_db:+.1f} dB "
        f"from its median over {cs.scenes} scenes ({cs.median_db:.1f} dB): z "
        f"{z:+.1f} (robust SD {cs.sd_db:.1f} dB; flagged beyond ±{Z_LIMIT:g})",
    )


def _overlap(
    m: float, cs: ClassSummary, classes: Sequence[ClassSummary], scene: str
) -> LabelFlag | None:
    """The overlaps flag of a class's scene median ``m`` (None: no overlap)."""
    if cs.q1_db is None or cs.q3_db is None or cs.q1_db <= m <= cs.q3_db:
        return None
    for other in classes:
        if other.class_index == cs.class_index or other.q1_db is None:
            continue
        assert other.q3_db is not None
        if other.q1_db <= m <= other.q3_db:
            return LabelFlag(
                scene,
                cs.class_index,
                cs.class_name,
                "overlaps",
                f"{scene}: {cs.class_name} median {m:.1f} dB lies in "
                f"{other.class_name}'s typical range ({other.q1_db:.1f}.."
                f"{other.q3_db:.1f} dB), outside its own ({cs.q1_db:.1f}.."
                f"{cs.q3_db:.1f} dB)",
            )
    return None


def _judge(
    st: _Stats, i: int, cs: ClassSummary, classes: Sequence[ClassSummary], scene: str
) -> tuple[float | None, list[LabelFlag]]:
    """Robust z and flags of class ``cs`` in scene ``i``."""
    c = cs.class_index
    if cs.median_db is None or cs.sd_db is None or st.pixels[i, c] < MIN_PIXELS:
        return None, []
    m = float(st.med[i, c])
    z = (m - cs.median_db) / cs.sd_db
    flags = [_departs(m, z, cs, scene)] if abs(z) > Z_LIMIT else []
    overlap = _overlap(m, cs, classes, scene)
    return z, flags + ([overlap] if overlap else [])


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def check_histograms(
    hist: np.ndarray,
    scenes: Sequence[str],
    class_names: Sequence[str],
    legend: str,
    splits: Mapping[str, str] | None = None,
    *,
    own_data: bool = True,
) -> LabelCheck:
    """The label check of ``[S, K, NBINS]`` histograms (:func:`class_histograms`).

    Args:
        hist: pixels per scene, class and σ0 bin.
        scenes: the ``S`` scenes.
        class_names: the ``K`` classes.
        legend: the legend's name.
        splits: each scene's split(s), for the table.
        own_data: whether the dataset holds the user's pairs (the way out).
    """
    st = _Stats.of(hist)
    classes = _summaries(st, class_names)
    rows, flags = [], []
    for cs in classes:
        c = cs.class_index
        for i, scene in enumerate(scenes):
            if st.pixels[i, c] == 0:
                continue
            z, found = _judge(st, i, cs, classes, scene)
            flags += found
            rows.append(
                ClassScene(
                    c,
                    cs.class_name,
                    scene,
                    (splits or {}).get(scene, ""),
                    int(st.pixels[i, c]),
                    _finite(st.med[i, c]),
                    _finite(st.q1[i, c]),
                    _finite(st.q3[i, c]),
                    z,
                    tuple(f.rule for f in found),
                )
            )
    order = {s: i for i, s in enumerate(scenes)}
    flags.sort(key=lambda f: (order[f.scene], f.class_index))
    return LabelCheck(
        legend,
        tuple(class_names),
        tuple(scenes),
        tuple(rows),
        tuple(classes),
        tuple(flags),
        own_data,
        hist,
    )


def _scene_splits(scenes: Sequence[str], splits: Sequence[str]) -> dict[str, str]:
    """Each scene's splits joined in train/val/test order, e.g. ``train/val``."""
    seen: dict[str, set[str]] = {}
    for s, sp in zip(scenes, splits, strict=True):
        seen.setdefault(s, set()).add(str(sp))
    return {s: "/".join(x for x in LABELLED_SPLITS if x in v) for s, v in seen.items()}


def check_patches(
    sar: np.ndarray,
    labels: np.ndarray,
    scenes: Sequence[str],
    splits: Sequence[str],
    legend: Legend,
    to_index: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    own_data: bool = True,
) -> LabelCheck:
    """The label check of a dataset's arrays (the train, val and test patches).

    Args:
        sar: ``[N, P, P]`` σ0 dB, NaN = no data.
        labels: ``[N, P, P]`` stored labels.
        scenes: each patch's scene.
        splits: each patch's split (``pretrain`` patches are not counted).
        legend: the legend the labels are trained with.
        to_index: stored labels → training indices of ``legend`` (None: they are).
        own_data: whether the dataset holds the user's pairs.
    """
    pick = [i for i, sp in enumerate(splits) if sp in LABELLED_SPLITS]
    picked = [scenes[i] for i in pick]
    names, hist = class_histograms(
        sar, labels, pick, picked, legend.num_train_classes, to_index
    )
    return check_histograms(
        hist,
        names,
        legend.names,
        legend.name,
        _scene_splits(picked, [splits[i] for i in pick]),
        own_data=own_data,
    )


def check_dataset(
    data: TrainingData | str | os.PathLike[str], task: str | None = None
) -> LabelCheck:
    """The label check of a built dataset (both paths of ``build-dataset``).

    Args:
        data: the dataset (opened, or its directory).
        task: for the paper's datasets (JAXA codes): ``lulc`` (default) or
            ``water``; for a dataset of the user's labels: None or its legend's
            name.

    Raises:
        DatasetFormatError: not a dataset, or a task it cannot serve.
    """
    ds = data if isinstance(data, TrainingData) else TrainingData(data)
    own = ds.own_legend is not None
    legend = ds.legend(task if own else (task or "lulc"))
    return check_patches(
        ds.sar,
        ds.labels,
        [r.scene for r in ds.records],
        [r.split for r in ds.records],
        legend,
        None if own else (lambda y: ds.labels_to_index(y, legend)),
        own_data=own,
    )


# ----------------------------------------------------------------------- table
def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _class_line(c: Mapping[str, Any]) -> str:
    head = f"{c['class_index']}: {c['class_name']}"
    if c["median_db"] is None:
        return (
            f"{head}: {c['pixels']:,} px; in {c['scenes']} scene(s) with ≥ "
            f"{MIN_PIXELS} px: not judged (needs {MIN_SCENES})"
        )
    return (
        f"{head}: median over {c['scenes']} scenes {c['median_db']:.1f} dB, robust "
        f"SD {c['sd_db']:.1f} dB, typical quartiles {c['q1_db']:.1f}.."
        f"{c['q3_db']:.1f} dB"
    )


def _row_line(r: Mapping[str, Any], width: int) -> str:
    mark = "!" if r["flags"] else " "
    z = "-" if r["z"] is None else f"{r['z']:+.1f}".replace("-0.0", "+0.0")
    return (
        f"  {mark} {r['scene']:<{width}} {r['splits'] or '-':<15} "
        f"{r['pixels']:>11,} {_num(r['median_db']):>7} {_num(r['q1_db']):>7} "
        f"{_num(r['q3_db']):>7} {z:>6}  {' '.join(r['flags'])}"
    ).rstrip()


def format_label_check(check: Mapping[str, Any], max_scenes: int | None = None) -> str:
    """The check (:meth:`LabelCheck.to_dict`) as a text table, flags marked ``!``.

    Args:
        check: the check as data (also ``dataset.json``'s ``label_check``).
        max_scenes: with more scenes than this only the flagged scenes' rows are
            listed (None: all rows).
    """
    rule = check["rule"]
    scenes, rows = check["scenes"], check["rows"]
    short = max_scenes is not None and len(scenes) > max_scenes
    flagged = set(check["flagged_scenes"])
    width = min(60, max([len(s) for s in scenes] + [5]))  # names are never cut
    lines = [
        f"label check: σ0 (dB) of each class per scene ({'/'.join(rule['splits'])} "
        "patches); ! = flagged",
        f"  departs: median beyond ±{rule['z_limit']:g} robust SD (so at least "
        f"{rule['z_limit'] * rule['mad_floor_db']:g} dB) from the class's median "
        "over the scenes",
        "  overlaps: median inside another class's typical quartiles and outside "
        "its own",
        f"  judged: a class with ≥ {rule['min_pixels']} px in a scene, in ≥ "
        f"{rule['min_scenes']} scenes",
        f"  {'':1} {'scene':<{width}} {'split':<15} {'pixels':>11} {'median':>7} "
        f"{'q1':>7} {'q3':>7} {'z':>6}  flag",
    ]
    for c in check["classes"]:
        lines.append(_class_line(c))
        mine = [r for r in rows if r["class_index"] == c["class_index"]]
        shown = [r for r in mine if not short or r["scene"] in flagged]
        lines += [_row_line(r, width) for r in shown]
        if len(shown) < len(mine):
            lines.append(f"    ({len(mine) - len(shown)} scene(s) without flags)")
    if short:
        lines.append("(all rows: alosmap train inspect DATASET)")
    if check["flags"]:
        lines.append(f"flags ({len(flagged)} scene(s)):")
        lines += [f"  {f['message']}" for f in check["flags"]]
        lines.append(check["way_out"])
    else:
        lines.append("flags: none")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- figure
def _xlim(hist: np.ndarray) -> tuple[float, float]:
    """The σ0 range that holds 99 % of all pixels, 2 dB wider on each side."""
    total = hist.sum(axis=(0, 1))
    if not total.any():
        return -30.0, 0.0
    cum = np.cumsum(total) / total.sum()
    lo = int(np.searchsorted(cum, 0.005))
    hi = int(np.searchsorted(cum, 0.995))
    return LOW_DB + lo * BIN_DB - 2.0, LOW_DB + (hi + 1) * BIN_DB + 2.0


def plot_label_check(
    check: LabelCheck, path: str | os.PathLike[str], rebin: int = 5
) -> Path:
    """Per class, the σ0 histogram of each scene; flagged scenes drawn in red.

    One panel per class with pixels: a curve per scene (share of the class's
    pixels there per dB, in bins of ``rebin · BIN_DB`` dB), flagged scenes thick
    and red (grey curves without a legend entry beyond 10 scenes), the class's
    median over the scenes dashed and its typical quartiles shaded. Written
    atomically.

    Raises:
        BackendUnavailableError: matplotlib is not installed.
    """
    from alosmap._fileio import atomic_write_bytes
    from alosmap._imports import lazy_import

    lazy_import("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist = check.histograms
    shown = [c for c in check.classes if c.pixels > 0]
    cols = min(3, max(1, len(shown)))
    nrows = max(1, math.ceil(len(shown) / cols))
    fig = Figure(figsize=(5.0 * cols, 3.6 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    width = rebin * BIN_DB
    x = LOW_DB + width * (np.arange(NBINS // rebin) + 0.5)
    for ax, cs in zip(axes, shown, strict=False):
        _plot_class(ax, check, cs, hist, x, rebin)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    lo, hi = _xlim(hist)
    for ax in axes[: len(shown)]:
        ax.set_xlim(lo, hi)
    fig.suptitle(f"σ0 per class and scene ({check.legend}); red: flagged scenes")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _plot_class(
    ax: Any, check: LabelCheck, cs: ClassSummary, hist: np.ndarray, x: Any, rebin: int
) -> None:
    """One class's panel of :func:`plot_label_check`."""
    c = cs.class_index
    flagged = {f.scene for f in check.flags if f.class_index == c}
    many = len(check.scenes) > 10
    calm = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#7f7f7f", "#bcbd22"]
    styles = iter(["-", "--", "-.", ":"] * len(check.scenes))
    for i, scene in enumerate(check.scenes):
        h = hist[i, c]
        n = int(h.sum())
        if n == 0:
            continue
        y = h[: (len(h) // rebin) * rebin].reshape(-1, rebin).sum(axis=1)
        y = y / (n * rebin * BIN_DB)
        if scene in flagged:
            ax.plot(x, y, lw=2.2, color="#d62728", ls=next(styles),
                    label=f"{scene} (flagged)")  # fmt: skip
        elif many:
            ax.plot(x, y, lw=0.8, color="0.6", alpha=0.7)
        else:
            ax.plot(x, y, lw=1.0, alpha=0.8, color=calm[i % len(calm)], label=scene)
    if cs.median_db is not None and cs.q1_db is not None and cs.q3_db is not None:
        ax.axvspan(cs.q1_db, cs.q3_db, color="0.85", alpha=0.5, lw=0,
                   label="typical quartiles")  # fmt: skip
        ax.axvline(cs.median_db, color="k", ls="--", lw=1.0, label="median of scenes")
    ax.set(
        title=f"{cs.class_name} ({cs.pixels:,} px)",
        xlabel="σ0 (dB)",
        ylabel="share of pixels per dB",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
