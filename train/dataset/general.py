"""``build-dataset`` from any (image, label) pairs and a legend (bring your own data).

The general path next to the paper's (:mod:`.jaxa`):

1. **Pairs** (:mod:`.pairs`): a manifest CSV, or images matched to a
   label directory by a file-name pattern.
2. **Images** are any rasters GDAL reads, single- or multi-band (``--band``), in
   amplitude DN, dB or linear power (``--input-units``, else as the file's
   ``UNITS`` tag says or guessed, as ``predict`` does), with the file's no-data
   value (or ``--nodata``); read through :class:`~alosmap.io.scene.Scene` into σ0
   dB with a validity mask.
3. **Labels** are rasters on any grid and of any numeric type, one band of class
   values (``--label-band`` picks it in a raster of several bands, which is refused
   without it). Before anything is written every label raster is scanned and each
   value checked against the legend (:mod:`.label_values`): a value
   the legend does not name
   (and that is not ignored, the raster's no-data or NaN) stops the build with a
   table of the values found.
4. **Patches**: each image is cut into ``P × P`` patches on a regular grid of its
   own pixels with step ``stride`` (default ``P``: no overlap), from the top-left
   corner; a remainder narrower than ``P`` at the right or bottom is not used.
   The label raster is resampled by nearest neighbour onto each patch's grid
   (or read pixel for pixel when one of the two has no CRS and both have the same
   size). A patch is kept when at least ``min_valid`` of its pixels hold valid
   SAR and at least ``min_labelled`` of those carry a label.
5. **Splits** (:mod:`.splits`): the manifest's split column, a split
   file, or ``split_by``: ``scene`` (whole scenes/groups), ``month`` (whole
   months of the acquisition dates) or ``random`` (per patch). Default: ``scene``
   with at least 3 scenes, else ``random``.
6. **Checks** (in the summary): every class's pixels per split and in the patches
   the filters dropped; a legend class without training pixels stops the build
   (unless ``allow_missing_classes``); the label check
   (:mod:`.label_checks`) flags classes whose backscatter in a scene
   contradicts the same class elsewhere. Pairs are left out by the manifest's
   ``exclude`` column or by scene (``exclude_scenes``), and recorded as left out.
7. **Output**: the same files as the paper's path (no ``anchors.npy``), labels as
   training indices of the legend (255 = no label), ``dataset.json`` with the
   legend, ``"labels": "index"``, the images' radiometry and statistics from the
   train split only (null without one: such a dataset evaluates, it cannot train).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_dir, check_not_input_dir, remove_stale_temps
from alosmap.classes import IGNORE_INDEX, UNKNOWN_LABEL, Legend
from alosmap.errors import InputRasterError
from alosmap.spec import provenance_name, provenance_sha256
from alosmap.train import defaults
from alosmap.train.dataset.general_summary import (
    format_general_summary,
    general_summary,
)
from alosmap.train.dataset.images import (
    ImageOptions,
    open_image,
    scene_radiometry,
    summarize_radiometry,
)
from alosmap.train.dataset.jaxa import boxes_intersect
from alosmap.train.dataset.label_checks import LabelCheck, check_patches
from alosmap.train.dataset.label_values import (
    LabelValues,
    check_label_values,
    scan_label_values,
)
from alosmap.train.dataset.pairs import Pair
from alosmap.train.dataset.patch_store import BuildResult, PatchStore, normalization
from alosmap.train.dataset.record import (
    MANIFEST_FIELDS,
    DatasetRecord,
    PatchRecord,
    normalization_record,
    write_dataset,
)
from alosmap.train.dataset.splits import (
    LABELLED_SPLITS,
    SPLIT_BY,
    check_fractions,
    read_split_file,
    split_groups,
    split_patches,
)
from alosmap.train.defaults import DEFAULT_SPLIT, MIN_SCENES_FOR_SCENE_SPLIT
from alosmap.train.errors import DatasetBuildError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SPLIT", "GeneralConfig", "build_general"]


# --------------------------------------------------------------------- config
@dataclass(frozen=True)
class GeneralConfig:
    """Parameters of a build from (image, label) pairs.

    Attributes:
        patch_size: patch side ``P`` in pixels.
        stride: step of the patch grid in pixels (None: ``P``, no overlap).
        min_valid: smallest fraction of a patch's pixels with valid SAR.
        min_labelled: smallest fraction of its SAR-valid pixels with a label.
        split: train / val / test fractions (None: ``DEFAULT_SPLIT``); zeros
            allowed.
        split_by: ``scene``, ``month`` or ``random`` (None: ``scene`` with at
            least ``MIN_SCENES_FOR_SCENE_SPLIT`` scenes, else ``random``).
        split_file: a file mapping scenes or images to splits.
        seed: seed of the splits.
        block_rows: rows per window when scanning label rasters.
        label_band: the band of the label rasters that holds the labels (None: the
            only one; a label raster of several bands is then refused).
        exclude_scenes: scenes (the pairs' scene/group, else image file name)
            whose pairs are left out (``--exclude-scene``).
        allow_missing_classes: build even when a legend class has no training
            pixels (a warning instead of an error).

    Raises:
        DatasetBuildError: on any invalid value (the message names its option).
    """

    patch_size: int = defaults.PATCH_SIZE
    stride: int | None = None
    min_valid: float = 1.0 - defaults.MAX_NODATA
    min_labelled: float = defaults.MIN_LABEL_FRACTION
    split: tuple[float, float, float] | None = None
    split_by: str | None = None
    split_file: str | None = None
    seed: int = defaults.SEED
    block_rows: int = 1024
    label_band: int | None = None
    exclude_scenes: tuple[str, ...] = ()
    allow_missing_classes: bool = False

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise DatasetBuildError(f"--patch-size {self.patch_size}: must be ≥ 8")
        if self.stride is not None and self.stride < 1:
            raise DatasetBuildError(f"--stride {self.stride}: must be ≥ 1")
        if self.label_band is not None and self.label_band < 1:
            raise DatasetBuildError(f"--label-band {self.label_band}: must be ≥ 1")
        if not 0.0 < self.min_valid <= 1.0:
            raise DatasetBuildError(
                f"--min-valid {self.min_valid:g}: must be in (0, 1]"
            )
        if not 0.0 <= self.min_labelled <= 1.0:
            raise DatasetBuildError(
                f"--min-labelled {self.min_labelled:g}: must be in [0, 1]"
            )
        if self.split is not None:
            check_fractions(self.split)
        if self.split_by is not None and self.split_by not in SPLIT_BY:
            raise DatasetBuildError(
                f"--split-by {self.split_by!r}: choose {', '.join(SPLIT_BY)}"
            )
        if self.split_file is not None and (self.split_by or self.split):
            raise DatasetBuildError(
                "--split-file decides the splits: leave out --split-by and --split"
            )

    @property
    def step(self) -> int:
        """The patch grid's step (``stride``, else ``patch_size``)."""
        return self.stride or self.patch_size

    @property
    def fractions(self) -> tuple[float, float, float]:
        """``split`` or the default fractions."""
        return self.split or DEFAULT_SPLIT


# --------------------------------------------------------------------- inputs
@dataclass
class _Image:
    """A checked pair: the image's grid and radiometry, the label's grid."""

    pair: Pair
    width: int
    height: int
    crs: Any
    transform: Any
    date: date | None
    radiometry: dict[str, Any]
    label_nodata: float | None
    pixel_grid: bool  # label read pixel for pixel (no CRS on one side)
    label_band: int = 1  # the label raster's band that holds the labels
    image_name: str = ""  # the image as recorded: relative to the dataset
    label_name: str = ""  # the label as recorded: relative to the dataset
    split: str | None = None  # given by the manifest or the split file
    row: dict[str, Any] = field(default_factory=dict)  # summary row
    #: pixels per class (SAR-valid) of the patches each filter dropped
    dropped: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The split unit (scene / group)."""
        return self.pair.group

    @property
    def month(self) -> str:
        """``YYYY-MM`` of the acquisition date ("" without one)."""
        return self.date.strftime("%Y-%m") if self.date else ""


def _lonlat_bounds(crs: Any, bounds: Any) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)


def _label_band(path: Path, count: int, wanted: int | None) -> int:
    """The band of a label raster with ``count`` bands that holds the labels.

    Raises:
        InputRasterError: no band; several and no ``--label-band`` (a colour
            rendering, an RGB export or an image given as labels would otherwise
            be read as its first band); ``--label-band`` beyond ``count``.
    """
    if count < 1:
        raise InputRasterError(f"{path}: the label raster has no bands")
    if wanted is None:
        if count > 1:
            raise InputRasterError(
                f"{path}: the label raster has {count} bands, labels are one band "
                f"of class values; name it with --label-band N (1..{count})"
            )
        return 1
    if wanted > count:
        raise InputRasterError(
            f"{path}: --label-band {wanted}, but the label raster has {count} "
            f"band{'s' if count > 1 else ''}"
        )
    return wanted


@contextlib.contextmanager
def _no_crs_warnings() -> Iterator[None]:
    """Silence the warnings of a raster without CRS: here it is allowed.

    rasterio's NotGeoreferencedWarning and the scene reader's (which speaks of a
    map); the build says it once, in its own words (:func:`_log_no_crs`).
    """
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from alosmap.errors import AlosmapWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.filterwarnings("ignore", ".* has no CRS", AlosmapWarning)
        yield


def _log_no_crs(images: list[_Image]) -> None:
    """One log line for the pairs read pixel for pixel (a raster without a CRS)."""
    pixel = [i for i in images if i.pixel_grid]
    if pixel:
        first = pixel[0]
        which = first.pair.image if first.crs is None else first.pair.label
        logger.warning(
            f"{len(pixel)} of {len(images)} pair(s) have a raster without a CRS "
            f"(first: {which.name}): their labels are read pixel for pixel, "
            "image and label having the same size"
        )


def _inspect_pair(
    pair: Pair, image: ImageOptions, label_band: int | None = None
) -> _Image:
    """Open an image and its label; check they can be paired."""
    from alosmap.io.raster import open_raster

    with open_image(pair.image, image) as sc:
        info = sc.info
        radiometry = scene_radiometry(sc)
        bounds = sc.ds.bounds
    with open_raster(pair.label) as ds:
        band = _label_band(pair.label, ds.count, label_band)
        label_crs, label_bounds = ds.crs, ds.bounds
        label_nodata = ds.nodatavals[band - 1]
        label_shape = (ds.height, ds.width)
    pixel = info.crs is None or label_crs is None
    if pixel and label_shape != (info.height, info.width):
        raise InputRasterError(
            f"{pair.where}: {'the image' if info.crs is None else 'the label'} has "
            "no CRS, so the label must have the image's size to be read pixel for "
            f"pixel; {pair.label.name} is {label_shape[1]}×{label_shape[0]}, "
            f"{pair.image.name} {info.width}×{info.height}"
        )
    if not pixel and not boxes_intersect(
        _lonlat_bounds(info.crs, bounds), _lonlat_bounds(label_crs, label_bounds)
    ):
        raise InputRasterError(
            f"{pair.where}: the label {pair.label} does not overlap the image "
            f"{pair.image}"
        )
    return _Image(
        pair,
        info.width,
        info.height,
        info.crs,
        info.transform,
        pair.date or info.date,
        radiometry,
        label_nodata,
        pixel,
        label_band=band,
    )


@dataclass
class _Plan:
    """How the splits are decided: the rule and, for a given split, each image's."""

    rule: str  # "manifest", "file", "scene", "month" or "random"
    source: str  # for the summary
    unused_keys: list[str] = field(default_factory=list)


def _split_key(img: _Image, mapping: dict[str, str]) -> str | None:
    p = img.pair
    for key in (p.scene, p.image.name, p.image.stem, str(p.image)):
        if key and key in mapping:
            return key
    return None


def _plan_splits(images: list[_Image], config: GeneralConfig) -> _Plan:
    """The split rule; the images' splits when the manifest or a file gives them.

    Raises:
        DatasetBuildError: clashing split options, a split file that misses
            images, ``month`` without dates.
    """
    if any(i.pair.split for i in images):
        if config.split_file or config.split_by or config.split:
            raise DatasetBuildError(
                "the manifest's split column decides the splits: leave out "
                "--split, --split-by and --split-file (or the column)"
            )
        for i in images:
            i.split = i.pair.split
        return _Plan("manifest", "the manifest's split column")
    if config.split_file:
        return _plan_from_file(images, config.split_file)
    groups = {i.group for i in images}
    rule = config.split_by or (
        "scene" if len(groups) >= MIN_SCENES_FOR_SCENE_SPLIT else "random"
    )
    if rule == "month":
        undated = [i.pair.image.name for i in images if i.date is None]
        if undated:
            raise DatasetBuildError(
                f"--split-by month needs every image's date (a date column in the "
                f"manifest, an ACQUISITION_DATE tag or an ALOS-2 file name); none "
                f"for {', '.join(undated[:3])}"
                + (f" and {len(undated) - 3} more" if len(undated) > 3 else "")
                + "; or use --split-by scene|random"
            )
    if config.split_by:
        return _Plan(rule, f"--split-by {rule}")
    return _Plan(rule, f"default: {rule} ({len(groups)} scene(s); scene from 3)")


def _plan_from_file(images: list[_Image], path: str) -> _Plan:
    mapping = read_split_file(path)
    missing, used = [], set()
    for i in images:
        key = _split_key(i, mapping)
        if key is None:
            missing.append(i.pair.image.name)
            continue
        i.split = mapping[key]
        used.add(key)
    if missing:
        raise DatasetBuildError(
            f"--split-file {path}: no split for {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            + " (keys: the manifest's scene, the image file name or stem, or its "
            "path as given)"
        )
    unused = sorted(set(mapping) - used)
    return _Plan("file", f"--split-file {Path(path).name}", unused)


def _check_inputs(
    pairs: Sequence[Pair],
    legend: Legend,
    source: str,
    config: GeneralConfig,
    image: ImageOptions,
) -> tuple[list[_Image], LabelValues, _Plan]:
    """Everything checked before anything is written."""
    if not pairs:
        raise DatasetBuildError("no (image, label) pairs given")
    images = [_inspect_pair(p, image, config.label_band) for p in pairs]
    plan = _plan_splits(images, config)
    values = scan_label_values(
        [p.label for p in pairs],
        block_rows=config.block_rows,
        band=config.label_band or 1,
    )
    check_label_values(values, legend, source)
    return images, values, plan


# -------------------------------------------------------------------- patches
def _cells(img: _Image, config: GeneralConfig) -> list[tuple[int, int]]:
    p, s = config.patch_size, config.step
    return [
        (r, c)
        for r in range(0, img.height - p + 1, s)
        for c in range(0, img.width - p + 1, s)
    ]


def _label_patch(ds: Any, img: _Image, r: int, c: int, p: int) -> np.ndarray:
    """The label raster's values on the patch at ``(r, c)`` of the image.

    Nearest neighbour onto the patch's grid (float64, NaN outside the label raster
    and at its no-data), or the same pixels when one of the two has no CRS.
    """
    from affine import Affine
    from rasterio import band
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    if img.pixel_grid:
        return ds.read(img.label_band, window=Window(c, r, p, p))
    dst = np.full((p, p), np.nan, dtype=np.float64)
    reproject(
        source=band(ds, img.label_band),
        destination=dst,
        src_nodata=img.label_nodata,
        dst_nodata=np.nan,
        dst_transform=img.transform @ Affine.translation(c, r),
        dst_crs=img.crs,
        resampling=Resampling.nearest,
        init_dest_nodata=True,
        num_threads=1,
    )
    return dst


def _scene_row(img: _Image, candidates: int) -> dict[str, Any]:
    p = img.pair
    return {
        "name": p.image.name,
        "image": img.image_name,
        "label": img.label_name,
        "scene": img.group,
        "date": img.date.isoformat() if img.date else "",
        "candidates": candidates,
        "kept": 0,
        "dropped_sar_nodata": 0,
        "dropped_label_nodata": 0,
        "weight": p.weight,
        **img.radiometry,
    }


def _patch_index(
    ds: Any, img: _Image, legend: Legend, r: int, c: int, p: int
) -> np.ndarray:
    """The patch's labels as training indices (:data:`IGNORE_INDEX`: no label).

    Raises:
        DatasetBuildError: a value outside the legend (the scan refused these).
    """
    idx = legend.labels_to_index(
        _label_patch(ds, img, r, c, p), nodata=img.label_nodata
    )
    if (idx == UNKNOWN_LABEL).any():
        raise DatasetBuildError(
            f"{img.pair.label}: a value outside the legend at patch "
            f"({r}, {c}) of {img.pair.image.name}"
        )
    return idx


def _extract_image(
    img: _Image,
    out: PatchStore,
    legend: Legend,
    config: GeneralConfig,
    image: ImageOptions,
    bar: Any,
) -> None:
    """Read, check and store one image's patches; fill its summary row."""
    from alosmap.io.raster import open_raster

    p, k = config.patch_size, legend.num_train_classes
    cells = _cells(img, config)
    img.row = info = _scene_row(img, len(cells))
    img.dropped = {f: np.zeros(k, np.int64) for f in ("sar_nodata", "label_nodata")}
    with open_image(img.pair.image, image) as sc, open_raster(img.pair.label) as ds:
        for r in sorted({rc[0] for rc in cells}):
            db, valid = sc.read_strip(r, p)
            for c in (cc for rr, cc in cells if rr == r):
                bar.update(1)
                v = valid[:, c : c + p]
                vf = float(v.mean())
                if vf < config.min_valid or not v.any():
                    info["dropped_sar_nodata"] += 1
                    if v.any():  # the classes the filter took (SAR-valid pixels)
                        idx = _patch_index(ds, img, legend, r, c, p)
                        hist = np.bincount(idx[v], minlength=256)
                        img.dropped["sar_nodata"] += hist[:k]
                    continue
                idx = _patch_index(ds, img, legend, r, c, p)
                hist = np.bincount(idx[v], minlength=256)
                labelled = 1.0 - hist[IGNORE_INDEX] / int(v.sum())
                if labelled < config.min_labelled or labelled == 0:
                    info["dropped_label_nodata"] += 1
                    img.dropped["label_nodata"] += hist[:k]
                    continue
                record = PatchRecord(
                    index=-1,
                    split="",
                    scene=img.group,
                    date=info["date"],
                    row=r,
                    col=c,
                    valid_fraction=vf,
                    histogram=[int(h) for h in hist[:k]],
                    extra={
                        "image": img.image_name,
                        "label": img.label_name,
                        "labelled_fraction": f"{labelled:.4f}",
                        "weight": f"{img.pair.weight:g}",
                    },
                )
                out.add(record, img.group, db[:, c : c + p], idx, v)
                info["kept"] += 1
    info["dropped_class_pixels"] = {f: a.tolist() for f, a in img.dropped.items()}


def _extract(
    tmp: Path,
    images: list[_Image],
    legend: Legend,
    config: GeneralConfig,
    image: ImageOptions,
    progress: bool,
) -> PatchStore:
    """Cut, check and store every image's patches into the arrays in ``tmp``.

    Raises:
        DatasetBuildError: no image holds a whole patch, or every patch was dropped.
    """
    from alosmap._progress import progress_bar

    p = config.patch_size
    n_cand = sum(len(_cells(i, config)) for i in images)
    if n_cand == 0:
        raise DatasetBuildError(
            f"no image holds a whole {p}×{p} patch (the largest is "
            f"{max(i.width for i in images)}×{max(i.height for i in images)}); "
            "use a smaller --patch-size"
        )
    out = PatchStore.create(tmp, n_cand, p)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            progress_bar(n_cand, "patches", progress, unit="patch")
        )
        for img in images:
            _extract_image(img, out, legend, config, image, bar)
    if out.close(tmp) == 0:
        raise DatasetBuildError(
            f"all {n_cand} candidate patches were dropped (SAR valid < "
            f"{config.min_valid:.0%} or labels on < {config.min_labelled:.0%} of "
            "the SAR-valid pixels); lower --min-valid / --min-labelled or check "
            "the images' no-data and the labels"
        )
    return out


# --------------------------------------------------------------------- splits
def _assign(
    images: list[_Image], out: PatchStore, plan: _Plan, config: GeneralConfig
) -> tuple[np.ndarray, dict[str, str]]:
    """Each patch's split and each scene's (month's) when whole ones were assigned.

    The splits are also set in the records and the images' summary rows.
    """
    splits, chosen = _split_of_patches(images, out, plan, config)
    _note_image_splits(images, splits, out)
    return splits, chosen


def _split_of_patches(
    images: list[_Image], out: PatchStore, plan: _Plan, config: GeneralConfig
) -> tuple[np.ndarray, dict[str, str]]:
    """Each patch's split, and each scene's (month's) split when whole ones moved."""
    rng = np.random.default_rng(config.seed)
    groups = np.asarray(out.groups, dtype=object)
    splits = np.full(len(groups), "test", dtype=object)
    if plan.rule in ("manifest", "file"):
        given = {i.image_name: i.split for i in images}
        for n, rec in enumerate(out.records):
            splits[n] = given[rec.extra["image"]]
        return splits, {}
    if plan.rule == "random":
        for name, idx in split_patches(
            np.arange(len(groups)), config.fractions, rng
        ).items():
            splits[idx] = name
        return splits, {}
    month = {i.group: i.month for i in images}
    unit = groups if plan.rule == "scene" else np.array([month[g] for g in groups])
    names, counts = np.unique(unit.astype(str), return_counts=True)
    chosen = split_groups(
        dict(zip(names.tolist(), counts.tolist(), strict=True)), config.fractions, rng
    )
    for n, u in enumerate(unit):
        splits[n] = chosen[str(u)]
    return splits, chosen


def _empty_split_notes(
    splits: np.ndarray, plan: _Plan, config: GeneralConfig, units: int
) -> list[str]:
    """Notes on splits the fractions ask for that got no patch."""
    if plan.rule in ("manifest", "file"):
        return []
    notes = []
    for name, f in zip(LABELLED_SPLITS, config.fractions, strict=True):
        if f > 0 and not (splits == name).any():
            why = (
                f"{units} {plan.rule}(s) for the splits"
                if plan.rule in ("scene", "month")
                else "too few patches"
            )
            notes.append(
                f"no {name} patches although --split gives it {f:g} ({why}); "
                "use more images, --split-by random or other fractions"
            )
    return notes


def _input_notes(images: list[_Image], plan: _Plan, config: GeneralConfig) -> list[str]:
    """The summary's notes on the inputs: unused split keys, images too small."""
    p = config.patch_size
    notes = []
    if plan.unused_keys:
        notes.append(f"split keys not used: {', '.join(plan.unused_keys)}")
    notes += [
        f"{i.pair.image.name}: smaller than one {p}×{p} patch; no patches"
        for i in images
        if i.width < p or i.height < p
    ]
    return notes


def _note_image_splits(
    images: list[_Image], splits: np.ndarray, out: PatchStore
) -> None:
    """Set each record's split; fill each image's summary row with its split(s)."""
    for rec, sp in zip(out.records, splits, strict=True):
        rec.split = str(sp)
    per_image: dict[str, set[str]] = {}
    for rec, sp in zip(out.records, splits, strict=True):
        per_image.setdefault(rec.extra["image"], set()).add(str(sp))
    for i in images:
        i.row["split"] = "/".join(
            s for s in LABELLED_SPLITS if s in per_image.get(i.image_name, ())
        )


# ------------------------------------------------------------------ exclusion
def _exclude(
    pairs: Sequence[Pair], scenes: Sequence[str]
) -> tuple[list[Pair], list[tuple[Pair, str]]]:
    """The pairs to use, and those left out with why (``manifest`` or the option).

    Raises:
        DatasetBuildError: a scene no pair has (naming the scenes), every pair
            left out.
    """
    known = list(dict.fromkeys(p.group for p in pairs))
    unknown = [s for s in scenes if s not in known]
    if unknown:
        shown = ", ".join(known[:20])
        more = f" and {len(known) - 20} more" if len(known) > 20 else ""
        raise DatasetBuildError(
            f"--exclude-scene {unknown[0]!r}: no pair has that scene; the scenes "
            f"are {shown}{more}"
        )
    kept, left = [], []
    for p in pairs:
        if p.exclude or p.weight == 0.0:
            left.append((p, "manifest" if p.exclude else "weight 0"))
        elif p.group in scenes:
            left.append((p, "--exclude-scene"))
        else:
            kept.append(p)
    if pairs and not kept:
        raise DatasetBuildError(
            f"all {len(pairs)} pairs are excluded (--exclude-scene, the manifest's "
            "exclude column or weight 0): nothing to build"
        )
    return kept, left


def _excluded_record(
    left: Sequence[tuple[Pair, str]], out_dir: Path
) -> list[dict[str, str]]:
    """The pairs left out, as ``dataset.json`` records them (no absolute path)."""
    return [
        {
            "image": provenance_name(p.image, out_dir),
            "label": provenance_name(p.label, out_dir),
            "scene": p.group,
            "by": by,
        }
        for p, by in left
    ]


# --------------------------------------------------------------------- checks
def _class_pixels(
    hist: np.ndarray, splits: np.ndarray, images: Sequence[_Image]
) -> dict[str, np.ndarray]:
    """Pixels of each class per split, and in the patches each filter dropped."""
    out = {s: hist[splits == s].sum(axis=0) for s in LABELLED_SPLITS}
    for f in ("sar_nodata", "label_nodata"):
        out[f"dropped_{f}"] = np.sum([i.dropped[f] for i in images], axis=0)
    return out


def _missing_classes(
    pixels: dict[str, np.ndarray], legend: Legend, config: GeneralConfig
) -> list[str]:
    """A note on the legend's classes without training pixels.

    Only with training patches (a dataset without them evaluates, it cannot
    train).

    Raises:
        DatasetBuildError: such a class, unless ``config.allow_missing_classes``.
    """
    train = pixels["train"]
    missing = [i for i in range(len(train)) if train[i] == 0]
    if not train.any() or not missing:
        return []
    what = "; ".join(
        f"class {i} {legend.classes[i].name!r}: val {pixels['val'][i]:,} px, test "
        f"{pixels['test'][i]:,} px, dropped {pixels['dropped_label_nodata'][i]:,} "
        f"px by --min-labelled {config.min_labelled:g} and "
        f"{pixels['dropped_sar_nodata'][i]:,} px by --min-valid {config.min_valid:g}"
        for i in missing
    )
    head = f"the legend {legend.name!r} has classes without training pixels: {what}"
    if not config.allow_missing_classes:
        raise DatasetBuildError(
            f"{head}; lower --min-labelled, add training data with the class, or "
            "give --allow-missing-classes to build without it"
        )
    return [f"{head}; built anyway (--allow-missing-classes): no model learns it"]


def _label_check(
    tmp: Path, out: PatchStore, splits: np.ndarray, legend: Legend
) -> LabelCheck:
    """The label check of the patches written in ``tmp``."""
    sar = np.load(tmp / "sar_db.npy", mmap_mode="r")
    labels = np.load(tmp / "labels.npy", mmap_mode="r")
    return check_patches(sar, labels, out.groups, [str(s) for s in splits], legend)


def _checks(
    tmp: Path,
    out: PatchStore,
    images: Sequence[_Image],
    splits: np.ndarray,
    legend: Legend,
    config: GeneralConfig,
    source: str,
) -> tuple[np.ndarray, dict[str, np.ndarray], LabelCheck, list[str]]:
    """The class and label checks of the kept patches.

    Returns:
        Their class histograms ``[N, K]``, the class pixels
        (:func:`_class_pixels`), the label check and the notes of it all.

    Raises:
        DatasetBuildError: a legend class without training pixels, unless
            ``config.allow_missing_classes`` (:func:`_missing_classes`).
    """
    hist = np.array([r.histogram for r in out.records], dtype=np.int64)
    pixels = _class_pixels(hist, splits, images)
    notes = _missing_classes(pixels, legend, config)
    notes += _class_notes(hist, legend, source)
    check = _label_check(tmp, out, splits, legend)
    return hist, pixels, check, notes + _check_notes(check)


def _check_notes(check: LabelCheck) -> list[str]:
    """A note (and warning) naming the scenes the label check flags."""
    scenes = check.flagged_scenes
    if not scenes:
        return []
    return [
        f"label check: in {len(scenes)} scene(s) a class's σ0 contradicts the same "
        f"class elsewhere: {', '.join(scenes)} (table in summary.txt); "
        + check.way_out()
    ]


# --------------------------------------------------------------------- output
def _class_notes(hist: np.ndarray, legend: Legend, source: str) -> list[str]:
    """A note (and warning) when the kept patches hold one class only."""
    present = np.flatnonzero(hist.sum(axis=0))
    if len(present) != 1:
        return []
    name = legend.classes[int(present[0])].name
    return [
        f"every labelled pixel is {name!r}: a dataset of one class teaches nothing; "
        f"check that --legend {source} is how the labels are coded (docs/"
        "dataset_format.md)"
    ]


def _manifest_fields(k: int) -> list[str]:
    return [
        *MANIFEST_FIELDS[:7],
        *[f"h{c}" for c in range(k)],
        "image",
        "label",
        "labelled_fraction",
        "weight",
    ]


def _record(
    legend: Legend,
    radiometry: dict[str, Any],
    config: GeneralConfig,
    build: dict[str, Any],
    summary: dict[str, Any],
    train_hist: np.ndarray,
) -> DatasetRecord:
    """``dataset.json``: labels as training indices of ``legend``."""
    norm = summary["normalization"]
    return DatasetRecord(
        patch_size=config.patch_size,
        labels="index",
        legend=legend,
        radiometry=radiometry,
        normalization=normalization_record(
            norm["mean_db"], norm["std_db"], norm["split"]
        ),
        class_counts={legend.name: [int(v) for v in train_hist]},
        build=build,
        summary=summary,
    )


def _record_names(
    images: Sequence[_Image], inputs: dict[str, Any] | None, out_dir: Path
) -> dict[str, Any]:
    """Name the images and labels relative to the dataset, as recorded.

    Not by this machine's paths; ``inputs`` comes back with its manifest or label
    directory named so too.
    """
    for i in images:
        i.image_name = provenance_name(i.pair.image, out_dir)
        i.label_name = provenance_name(i.pair.label, out_dir)
    return {
        k: provenance_name(v, out_dir) if k in ("manifest", "label_dir") else v
        for k, v in (inputs or {}).items()
    }


def _build_record(
    config: GeneralConfig,
    images: list[_Image],
    plan: _Plan,
    image: ImageOptions,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    return {
        "input": "pairs",
        "patch_size": config.patch_size,
        "stride": config.step,
        "min_valid": config.min_valid,
        "min_labelled": config.min_labelled,
        "split": list(config.fractions) if plan.rule in SPLIT_BY else None,
        "split_rule": plan.rule,
        "split_source": plan.source,
        "seed": config.seed,
        "image": image.to_dict(),
        "label_band": config.label_band or 1,
        "exclude_scenes": list(config.exclude_scenes),
        "allow_missing_classes": config.allow_missing_classes,
        **inputs,
        "pairs": [
            {
                "image": i.image_name,
                "image_sha256": provenance_sha256(i.pair.image),
                "label": i.label_name,
                "label_sha256": provenance_sha256(i.pair.label),
                "scene": i.group,
                "date": i.date.isoformat() if i.date else None,
                "split": i.split,
                "weight": i.pair.weight,
            }
            for i in images
        ],
    }


def build_general(
    pairs: Sequence[Pair],
    legend: Legend,
    out_dir: str | os.PathLike[str],
    config: GeneralConfig | None = None,
    *,
    image: ImageOptions | None = None,
    legend_source: str = "",
    inputs: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> BuildResult:
    """Build a dataset from (image, label) pairs and a legend (see the module docs).

    Args:
        pairs: the images and their labels (:mod:`.pairs`).
        legend: how label values map to classes (``--label-nodata`` values
            already among its ignored ones: :meth:`Legend.with_ignore`).
        out_dir: dataset directory to create.
        config: build parameters (defaults: :class:`GeneralConfig`).
        image: how to read the images (band, units, no-data).
        legend_source: how the legend was given (a preset name or a file).
        inputs: more to record in ``dataset.json``'s ``build`` (the manifest,
            the label directory and pattern).
        overwrite: replace an existing dataset directory (only one that holds a
            ``dataset.json`` or is empty).
        progress: draw progress bars on stderr.

    Returns:
        The dataset path and its summary.

    Raises:
        InputRasterError: a missing or unreadable image or label raster, a label
            that misses its image.
        UnknownLabelValuesError: label values the legend does not name (nothing
            is written; its ``table`` lists the values found).
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
        OutputPathError: ``out_dir`` is, or holds, an input.
        DatasetBuildError: bad parameters, clashing split options, no patch kept.
    """
    config = config or GeneralConfig()
    image = image or ImageOptions()
    out_dir = Path(out_dir)
    source = legend_source or legend.name
    used, left_out = _exclude(pairs, config.exclude_scenes)
    with _no_crs_warnings():
        images, values, plan = _check_inputs(used, legend, source, config, image)
    _log_no_crs(images)
    given = [(inputs or {}).get("manifest"), config.split_file]
    check_not_input_dir(
        out_dir,
        [*(p.image for p in pairs), *(p.label for p in pairs), *filter(None, given)],
    )
    remove_stale_temps(out_dir)
    inputs = _record_names(images, inputs, out_dir)
    notes = _input_notes(images, plan, config)
    with atomic_dir(out_dir, overwrite, "dataset.json") as tmp:
        with _no_crs_warnings():
            out = _extract(tmp, images, legend, config, image, progress)
        splits, chosen = _assign(images, out, plan, config)
        notes += _empty_split_notes(splits, plan, config, len(chosen))
        norm = normalization(out.sums, splits, notes)
        radiometry, note = summarize_radiometry([i.radiometry for i in images])
        if note:
            notes.append(note)
        hist, pixels, check, more = _checks(
            tmp, out, images, splits, legend, config, source
        )
        notes += more
        excluded = _excluded_record(left_out, out_dir)
        extra = {**inputs, "legend": source, "excluded": excluded}
        build = _build_record(config, images, plan, image, extra)
        summary = general_summary(
            out_dir,
            legend,
            [i.row for i in images],
            notes,
            splits,
            chosen,
            plan.source,
            config,
            norm,
            hist,
            values,
            class_pixels=pixels,
            label_check=check.to_dict(),
            excluded=excluded,
        )
        record = _record(legend, radiometry, config, build, summary, pixels["train"])
        text = format_general_summary(summary, legend)
        fields = _manifest_fields(legend.num_train_classes)
        write_dataset(tmp, record, out.records, fields, text)
    for note in notes:
        logger.warning(note)
    return BuildResult(out_dir, summary, text)
