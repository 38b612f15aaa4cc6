"""``build-dataset``, the paper's path: label-guided sampling (paper Section III-A).

The builder turns ALOS-2 HH scenes and JAXA HRLULC label tiles into the on-disk
dataset that :mod:`alosmap.train.data` reads (``docs/dataset_format.md``). Any
other (image, label) pairs with a legend go through
:mod:`.general`. The steps:

1. **Class frequencies.** Pixels of every JAXA code are counted over *all* label
   tiles (``LC_*.tif``), read in windows of :attr:`BuildConfig.block_rows` rows
   (``np.bincount`` per window). Codes 1-14 are classes; 0 and anything above 14
   are no data.
2. **Anchors.** ``N`` pixel positions are drawn independently (with replacement),
   each labelled pixel with weight ``1 / f(class)``. The total weight of class ``k``
   is then ``n_k · (1 / f_k) ∝ 1``: every present class gets the same expected
   number of anchors. This is done exactly without listing pixels: the number per
   class is a multinomial draw with equal probabilities over the present classes,
   then each class's anchors get uniform ranks in ``[0, n_k)`` and a second
   window-wise pass finds the pixel of each rank (raster order over the tiles,
   sorted by name). Anchors are stored as lon/lat of pixel centres (EPSG:4326).
3. **Patches.** Each scene is cut into non-overlapping ``P × P`` patches aligned
   on its own grid from the top-left corner (patch ``(r, c)`` covers rows
   ``r·P … (r+1)·P``); only complete patches are used (a remainder narrower than
   ``P`` at the right or bottom edge is not). A patch is a candidate when at least
   one anchor falls inside it. Its label patch is the label tiles resampled by
   nearest neighbour onto the patch's grid (every intersecting tile is warped into
   the same array, so scenes that straddle tiles work).
4. **No-data rule.** A candidate is dropped when less than ``1 − max_nodata`` of
   its pixels hold valid SAR (reason ``sar_nodata``), or, in the labelled months
   only, when fewer than ``min_label_fraction`` of its SAR-valid pixels carry a
   label (reason ``label_nodata``). Pretraining patches need no labels.
5. **Splits by month.** Scenes acquired in a pretraining month give ``pretrain``
   patches; scenes of a finetuning month give ``train`` / ``val`` / ``test``,
   assigned *per patch* (a seeded shuffle cut at the fractions, which may be 0),
   as the paper's patch counts imply. Scenes of other months are skipped with a
   note.
6. **Output.** Written into a temporary sibling directory that is renamed onto the
   destination at the end, so an error never leaves a half-written dataset.
   Normalisation and class counts come from the training split only (without
   training patches: statistics from the pretrain split, else null).

The bytes of a dataset depend only on the inputs and these parameters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from alosmap._fileio import atomic_dir, check_not_input_dir, remove_stale_temps
from alosmap.classes import LULC, TASK_RECORDS, Legend, jaxa_to_training
from alosmap.errors import InputRasterError
from alosmap.spec import provenance_name, provenance_sha256
from alosmap.train import defaults
from alosmap.train.dataset.images import (
    ImageOptions,
    open_image,
    scene_radiometry,
    summarize_radiometry,
)
from alosmap.train.dataset.label_checks import (
    SUMMARY_SCENES,
    check_patches,
    format_label_check,
)
from alosmap.train.dataset.label_values import row_blocks
from alosmap.train.dataset.pairs import image_files
from alosmap.train.dataset.patch_store import (
    BuildResult,
    Normalization,
    PatchStore,
    format_normalization,
    normalization,
)
from alosmap.train.dataset.record import (
    FORMAT,
    MANIFEST_FIELDS,
    DatasetRecord,
    PatchRecord,
    write_dataset,
)
from alosmap.train.dataset.splits import (
    LABELLED_SPLITS,
    check_fractions,
    parse_split,
    split_patches,
)
from alosmap.train.defaults import DEFAULT_SPLIT
from alosmap.train.errors import DatasetBuildError

logger = logging.getLogger(__name__)

__all__ = [
    "ANCHOR_DTYPE",
    "BuildConfig",
    "BuildResult",
    "DatasetBuildError",
    "build_dataset",
    "count_classes",
    "find_label_tiles",
    "format_summary",
    "parse_months",
    "parse_split",
    "sample_anchors",
    "scene_files",
]

#: Number of JAXA codes kept (0 = no data, 1-14 classes).
N_CODES = 15
#: Record of one anchor in ``anchors.npy``: pixel centre and JAXA code.
ANCHOR_DTYPE = np.dtype([("lon", "<f8"), ("lat", "<f8"), ("code", "u1")])
#: How the summary table names each task's classes.
_SCHEME_LABELS = {"lulc": "LULC-9", "water": "water"}


# --------------------------------------------------------------------- config
@dataclass(frozen=True)
class BuildConfig:
    """Parameters of a dataset build.

    Attributes:
        anchors: number of anchor points drawn (the paper uses 1,000,000).
        pretrain_months: months (1-12) whose scenes give ``pretrain`` patches.
        finetune_months: months whose scenes give ``train``/``val``/``test``.
        split: train / val / test fractions of the finetuning patches (each ≥ 0).
        patch_size: patch side ``P`` in pixels.
        max_nodata: largest tolerated fraction of SAR no-data pixels in a patch
            (``--max-nodata``; ``--min-valid`` is ``1 − max_nodata``).
        min_label_fraction: smallest fraction of SAR-valid pixels that must carry
            a label (finetuning months only; ``--min-labelled``).
        seed: seed of every random choice (anchors and splits).
        block_rows: rows per window when scanning label tiles.

    Raises:
        DatasetBuildError: on any invalid value (the message names it).
    """

    anchors: int = defaults.ANCHORS
    pretrain_months: tuple[int, ...] = defaults.PRETRAIN_MONTHS
    finetune_months: tuple[int, ...] = defaults.FINETUNE_MONTHS
    split: tuple[float, float, float] = DEFAULT_SPLIT
    patch_size: int = defaults.PATCH_SIZE
    max_nodata: float = defaults.MAX_NODATA
    min_label_fraction: float = defaults.MIN_LABEL_FRACTION
    seed: int = defaults.SEED
    block_rows: int = 1000

    def __post_init__(self) -> None:
        if self.anchors < 1:
            raise DatasetBuildError(f"--anchors {self.anchors}: must be at least 1")
        for name in ("pretrain_months", "finetune_months"):
            months = getattr(self, name)
            bad = [m for m in months if not 1 <= m <= 12]
            if bad:
                raise DatasetBuildError(
                    f"--{name.replace('_', '-')}: month(s) {bad} outside 1..12"
                )
        both = sorted(set(self.pretrain_months) & set(self.finetune_months))
        if both:
            raise DatasetBuildError(
                f"month(s) {both} are in both --pretrain-months and "
                "--finetune-months; a month must go to one side only (no temporal "
                "leakage)"
            )
        if not self.pretrain_months and not self.finetune_months:
            raise DatasetBuildError("no pretraining or finetuning months given")
        check_fractions(self.split)
        if self.patch_size < 8:
            raise DatasetBuildError(f"--patch-size {self.patch_size}: must be ≥ 8")
        if not 0.0 <= self.max_nodata < 1.0:
            raise DatasetBuildError(
                f"--max-nodata {self.max_nodata:g}: must be in [0, 1)"
            )
        if not 0.0 <= self.min_label_fraction <= 1.0:
            raise DatasetBuildError(
                f"min_label_fraction {self.min_label_fraction:g}: must be in [0, 1]"
            )
        if self.block_rows < 1:
            raise DatasetBuildError(f"block_rows {self.block_rows}: must be ≥ 1")


def parse_months(text: str, option: str = "--months") -> tuple[int, ...]:
    """Parse a comma-separated month list such as ``"10,11"`` (empty: none).

    Raises:
        DatasetBuildError: a value that is not an integer in 1..12.
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            m = int(part)
        except ValueError:
            raise DatasetBuildError(
                f"{option} {text!r}: {part!r} is not a month number (1..12)"
            ) from None
        if not 1 <= m <= 12:
            raise DatasetBuildError(f"{option} {text!r}: month {m} outside 1..12")
        out.append(m)
    return tuple(sorted(set(out)))


# ------------------------------------------------------------- inputs
#: JAXA label tile names (``LC_N35E139.tif``): never scenes.
_LABEL_TILE = re.compile("LC_")


def scene_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The scenes that ``--sar`` names: files as given, directories expanded.

    A directory stands for its ``*.tif``/``*.tiff`` files (sorted by name), except
    JAXA label tiles (``LC_*``) and the mask, date, incidence and HV files of JAXA
    25 m mosaic tiles (the HH file reads its mask).
    """
    return image_files(paths, skip=_LABEL_TILE)


def find_label_tiles(tile_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``LC_*.tif`` tiles of a directory, sorted by name.

    Raises:
        InputRasterError: the directory is missing or holds no ``LC_*.tif``.
    """
    d = Path(tile_dir)
    if not d.is_dir():
        raise InputRasterError(f"--lulc {d}: label tile directory not found")
    tiles = sorted(p for p in d.glob("LC_*.tif") if p.is_file())
    if not tiles:
        raise InputRasterError(
            f"--lulc {d}: no JAXA label tiles (LC_*.tif) in the directory"
        )
    return tiles


def _open(path: Path) -> Any:
    from alosmap.io.raster import open_raster

    return open_raster(path)


def _blocks(
    tiles: Sequence[Path], block_rows: int, progress: bool, desc: str
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(tile index, first row, window)`` over all tiles in row windows."""
    from alosmap._progress import progress_bar

    heights = []
    for t in tiles:
        with _open(t) as ds:
            if ds.count < 1:
                raise InputRasterError(f"{t}: the label tile has no bands")
            heights.append(ds.height)
    total = sum(math.ceil(h / block_rows) for h in heights)
    with progress_bar(total, desc, progress, unit="win") as bar:
        for i, t in enumerate(tiles):
            with _open(t) as ds:
                for r0, a in row_blocks(ds, t, block_rows):
                    if a.dtype != np.uint8:
                        a = np.where((a >= 0) & (a < N_CODES), a, 0).astype(np.uint8)
                    yield i, r0, a
                    bar.update(1)


def count_classes(
    tiles: Sequence[str | os.PathLike[str]],
    *,
    block_rows: int = 1000,
    progress: bool = False,
) -> np.ndarray:
    """Pixel count of every JAXA code over the label tiles.

    Args:
        tiles: label tiles (read in windows of ``block_rows`` full rows).
        block_rows: rows per window.
        progress: draw a progress bar on stderr.

    Returns:
        int64 [15]: index ``c`` = pixels of code ``c`` (index 0 = no data, which
        also absorbs codes above 14).
    """
    counts = np.zeros(256, dtype=np.int64)
    for _, _, a in _blocks([Path(t) for t in tiles], block_rows, progress, "count"):
        counts += np.bincount(a.ravel(), minlength=256)
    out = counts[:N_CODES].copy()
    out[0] += counts[N_CODES:].sum()
    return out


def sample_anchors(
    tiles: Sequence[str | os.PathLike[str]],
    counts: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    block_rows: int = 1000,
    progress: bool = False,
) -> np.ndarray:
    """Draw ``n`` anchors, each pixel weighted by 1 / frequency of its class.

    Every class present in ``counts`` gets the same expected number of anchors;
    within a class, pixels are drawn uniformly and independently (with
    replacement). Tiles are scanned window by window; no pixel list is built.

    Args:
        tiles: the label tiles ``counts`` was computed over, in the same order.
        counts: int [15] pixel counts per JAXA code (from :func:`count_classes`).
        n: number of anchors.
        rng: random generator.
        block_rows: rows per window (any value; the result does not depend on it).
        progress: draw a progress bar on stderr.

    Returns:
        Structured [n] array of :data:`ANCHOR_DTYPE` (lon/lat of pixel centres in
        EPSG:4326, JAXA code), grouped by class and in raster order within one.

    Raises:
        DatasetBuildError: the tiles hold no labelled pixel.
    """
    from rasterio.warp import transform as warp_transform

    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts[1:N_CODES] > 0) + 1
    if present.size == 0:
        raise DatasetBuildError(
            "the label tiles hold no labelled pixel (codes 1-14); nothing to sample"
        )
    per_class = np.zeros(N_CODES, dtype=np.int64)
    per_class[present] = rng.multinomial(n, np.full(present.size, 1.0 / present.size))
    # Sorted ranks among each class's pixels, in raster order over all tiles.
    ranks = {
        int(k): np.sort(rng.integers(0, counts[k], size=per_class[k]))
        for k in present
        if per_class[k] > 0
    }
    seen = np.zeros(N_CODES, dtype=np.int64)  # class pixels before this window
    done = dict.fromkeys(ranks, 0)  # anchors of each class already placed
    paths = [Path(t) for t in tiles]
    found: list[tuple[int, np.ndarray, np.ndarray, int]] = []  # tile, rows, cols, k
    for i, r0, a in _blocks(paths, block_rows, progress, "anchors"):
        flat = a.ravel()
        bc = np.bincount(flat, minlength=256)
        order: np.ndarray | None = None
        for k, rk in ranks.items():
            j0 = done[k]
            j1 = int(np.searchsorted(rk, seen[k] + bc[k], side="left"))
            if j1 > j0:
                if order is None:
                    # stable: pixels of one code stay in raster order
                    order = np.argsort(flat, kind="stable")
                    starts = np.concatenate([[0], np.cumsum(bc)])
                local = rk[j0:j1] - seen[k]
                idx = order[starts[k] + local]
                found.append((i, r0 + idx // a.shape[1], idx % a.shape[1], k))
                done[k] = j1
        seen += bc[:N_CODES]
    out = np.empty(sum(len(f[1]) for f in found), dtype=ANCHOR_DTYPE)
    pos = 0
    for i in range(len(paths)):
        parts = [f for f in found if f[0] == i]
        if not parts:
            continue
        rows = np.concatenate([f[1] for f in parts])
        cols = np.concatenate([f[2] for f in parts])
        with _open(paths[i]) as ds:
            t, crs = ds.transform, ds.crs
        x = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
        y = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
        if crs is not None and not crs.is_geographic:
            x, y = (np.asarray(v) for v in warp_transform(crs, "EPSG:4326", x, y))
        m = len(rows)
        out["lon"][pos : pos + m] = x
        out["lat"][pos : pos + m] = y
        out["code"][pos : pos + m] = np.concatenate(
            [np.full(len(f[1]), f[3]) for f in parts]
        )
        pos += m
    # grouped by class, raster order within a class (tiles sorted by name)
    return out[np.argsort(out["code"], kind="stable")]


# ------------------------------------------------------------------ scenes
@dataclass
class _SceneInput:
    path: Path
    date: date
    group: str  # "pretrain", "finetune" or "skip"
    crs: Any
    transform: Any
    width: int
    height: int
    bounds_lonlat: tuple[float, float, float, float]


def _inspect_scenes(
    scenes: Sequence[str | os.PathLike[str]], config: BuildConfig
) -> list[_SceneInput]:
    from rasterio.warp import transform_bounds

    from alosmap.io.raster import acquisition_date

    if not scenes:
        raise DatasetBuildError("no SAR scenes given (--sar)")
    out = []
    for s in scenes:
        p = Path(s)
        with _open(p) as ds:
            d = acquisition_date(p, ds.tags())
            if d is None:
                raise InputRasterError(
                    f"{p}: no acquisition date (no ACQUISITION_DATE tag and not an "
                    "ALOS-2 L2.1 file name); the month decides the split"
                )
            if ds.crs is None:
                raise InputRasterError(
                    f"{p}: no CRS; anchors cannot be placed on the scene"
                )
            lonlat = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
            if d.month in config.pretrain_months:
                group = "pretrain"
            elif d.month in config.finetune_months:
                group = "finetune"
            else:
                group = "skip"
            out.append(
                _SceneInput(
                    p, d, group, ds.crs, ds.transform, ds.width, ds.height, lonlat
                )
            )
    return out


def _tile_bounds(tiles: Sequence[Path]) -> list[tuple[float, float, float, float]]:
    from rasterio.warp import transform_bounds

    out = []
    for t in tiles:
        with _open(t) as ds:
            if ds.crs is None:
                raise InputRasterError(f"{t}: the label tile has no CRS")
            out.append(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    return out


def boxes_intersect(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two ``(left, bottom, right, top)`` boxes share an area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _anchor_cells(
    scene: _SceneInput, anchors: np.ndarray, p: int
) -> tuple[np.ndarray, np.ndarray]:
    """Anchors inside the scene's complete patches and the patch of each.

    Returns:
        ``(anchor indices [M], patch cells [M])`` with cell ``= row · n_cols + col``
        in patch units (``n_cols = width // p``).
    """
    from rasterio.warp import transform as warp_transform

    w, s, e, n = scene.bounds_lonlat
    idx = np.flatnonzero(
        (anchors["lon"] >= w)
        & (anchors["lon"] <= e)
        & (anchors["lat"] >= s)
        & (anchors["lat"] <= n)
    )
    if idx.size == 0:
        return idx, idx.copy()
    xs, ys = warp_transform(
        "EPSG:4326", scene.crs, anchors["lon"][idx], anchors["lat"][idx]
    )
    cols, rows = ~scene.transform @ (np.asarray(xs), np.asarray(ys))
    cols = np.floor(np.asarray(cols)).astype(np.int64)
    rows = np.floor(np.asarray(rows)).astype(np.int64)
    n_rows, n_cols = scene.height // p, scene.width // p
    inside = (rows >= 0) & (cols >= 0) & (rows < n_rows * p) & (cols < n_cols * p)
    cells = (rows[inside] // p) * n_cols + cols[inside] // p
    return idx[inside], cells


def _label_patch(
    tiles: Sequence[Any],
    tile_bounds: Sequence[tuple[float, float, float, float]],
    crs: Any,
    transform: Any,
    p: int,
) -> np.ndarray:
    """Label tiles resampled (nearest) onto a ``p × p`` grid; codes > 14 → 0."""
    from rasterio import band
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    dst = np.zeros((p, p), dtype=np.uint8)
    x0, y0 = transform.c, transform.f
    x1, y1 = transform @ (p, p)
    box = transform_bounds(
        crs, "EPSG:4326", min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    )
    for ds, tb in zip(tiles, tile_bounds, strict=True):
        if not boxes_intersect(box, tb):
            continue
        # init_dest_nodata=False: each tile only fills where it has labels, so
        # a patch that straddles tiles gets labels from all of them.
        reproject(
            source=band(ds, 1),
            destination=dst,
            src_nodata=0,
            dst_nodata=0,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling.nearest,
            init_dest_nodata=False,
            num_threads=1,
        )
    dst[dst >= N_CODES] = 0
    return dst


# ---------------------------------------------------------------- summary
def _task_counts(counts: np.ndarray, task: Legend) -> np.ndarray:
    """Pixel counts [K] of ``task``'s training classes from JAXA code counts [15]."""
    k = task.num_train_classes
    out = np.zeros(k, dtype=np.int64)
    for code in range(1, N_CODES):
        idx = int(task.label_lut[code])
        if idx < k:
            out[idx] += counts[code]
    return out


def _shares(counts: np.ndarray, task: Legend) -> list[float]:
    """Shares (0..1) of ``task``'s training classes from JAXA code counts [15]."""
    out = _task_counts(counts, task).astype(np.float64)
    total = out.sum()
    return (out / total).tolist() if total else out.tolist()


def format_summary(summary: dict[str, Any]) -> str:
    """The build summary as a readable plain-text table."""
    lines = [f"alosmap dataset {summary['path']} ({FORMAT})", ""]
    lines.append(
        f"{'scene':<48} {'date':<10} {'group':<8} {'cand.':>6} {'kept':>6} "
        f"{'sar-nd':>6} {'lab-nd':>6}"
    )
    for s in summary["scenes"]:
        lines.append(
            f"{s['name'][:48]:<48} {s['date']:<10} {s['group']:<8} "
            f"{s['candidates']:>6} {s['kept']:>6} {s['dropped_sar_nodata']:>6} "
            f"{s['dropped_label_nodata']:>6}"
        )
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    lines.append("")
    sp = summary["patches"]
    lines.append(
        "patches: "
        + "  ".join(f"{k} {sp[k]}" for k in sp)
        + f"  (total {sum(sp.values())})"
    )
    d = summary["dropped"]
    rule = summary["rule"]
    lines.append(
        f"dropped: {d['sar_nodata']} with SAR valid < {rule['min_sar_valid']:.0%}, "
        f"{d['label_nodata']} with labels on < {rule['min_label_fraction']:.0%} of "
        "the SAR-valid pixels"
    )
    a = summary["anchors"]
    lines.append(
        f"anchors: {a['drawn']} drawn over {a['tiles']} tile(s); "
        f"{a['in_kept_patches']} inside kept patches"
    )
    lines.append(format_normalization(summary["normalization"]))
    lines.append("")
    sh = summary["class_shares"]
    lines.append(f"{'class share (%)':<18} {'tiles':>8} {'anchors':>8} {'train':>8}")
    for task in TASK_RECORDS.values():
        shares = sh[task.name]
        lines.append(f"[{_SCHEME_LABELS[task.name]}]")
        for i, c in enumerate(task.classes):
            lines.append(
                f"  {c.name[:16]:<16} {100 * shares['tiles'][i]:>8.2f} "
                f"{100 * shares['anchors'][i]:>8.2f} "
                f"{100 * shares['train'][i]:>8.2f}"
            )
    text = "\n".join(lines) + "\n"
    if summary.get("label_check"):
        text += "\n" + format_label_check(summary["label_check"], SUMMARY_SCENES)
    return text


def _label_check(tmp: Path, out: PatchStore, splits: np.ndarray) -> dict[str, Any]:
    """The label check of the patches written in ``tmp``, as LULC-9 classes."""
    sar = np.load(tmp / "sar_db.npy", mmap_mode="r")
    labels = np.load(tmp / "labels.npy", mmap_mode="r")
    check = check_patches(
        sar,
        labels,
        [r.scene for r in out.records],
        [str(s) for s in splits],
        LULC,
        lambda y: jaxa_to_training(y, LULC),
        own_data=False,
    )
    return check.to_dict()


# ------------------------------------------------------------------ build
def _extract_scene(
    scene: _SceneInput,
    cand: np.ndarray,
    out: PatchStore,
    tiles: Sequence[Any],
    tile_bounds: Sequence[tuple[float, float, float, float]],
    config: BuildConfig,
    bar: Any,
    image: ImageOptions,
    radiometry: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[int]]:
    """Read, check and store a scene's candidate patches.

    What the scene holds (:func:`scene_radiometry`) is appended to ``radiometry``.

    Returns:
        The scene's summary row and the cells (``row · n_cols + col``) kept.
    """
    from affine import Affine

    p = config.patch_size
    n_cols = scene.width // p
    info = _scene_row(scene, scene.group, len(cand))
    kept: list[int] = []
    if len(cand) == 0:
        return info, kept
    min_valid = 1.0 - config.max_nodata
    with open_image(scene.path, image) as sc:  # ALOS-2 DN, the default CF
        radiometry.append(scene_radiometry(sc))
        for pr in np.unique(cand[:, 0]):
            r = int(pr) * p
            db, valid = sc.read_strip(r, p)  # one read per patch row
            for pc in cand[cand[:, 0] == pr, 1]:
                bar.update(1)
                c = int(pc) * p
                v = valid[:, c : c + p]
                vf = float(v.mean())
                if vf < min_valid or not v.any():
                    info["dropped_sar_nodata"] += 1
                    continue
                t = scene.transform @ Affine.translation(c, r)
                labels = _label_patch(tiles, tile_bounds, scene.crs, t, p)
                hist = np.bincount(labels[v], minlength=N_CODES)[:N_CODES]
                labelled = 1.0 - hist[0] / int(v.sum())
                if scene.group == "finetune" and labelled < config.min_label_fraction:
                    info["dropped_label_nodata"] += 1
                    continue
                record = PatchRecord(
                    index=-1,
                    split="",
                    scene=scene.path.name,
                    date=scene.date.isoformat(),
                    row=r,
                    col=c,
                    valid_fraction=vf,
                    histogram=[int(h) for h in hist],
                )
                out.add(record, scene.group, db[:, c : c + p], labels, v)
                info["kept"] += 1
                kept.append(int(pr) * n_cols + int(pc))
    return info, kept


def _assign_splits(
    groups: Sequence[str],
    fractions: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Split names per patch: pretrain, or train/val/test by a seeded shuffle."""
    g = np.asarray(groups)
    splits = np.where(g == "pretrain", "pretrain", "test").astype(object)
    parts = split_patches(np.flatnonzero(g == "finetune"), fractions, rng)
    for name, idx in parts.items():
        splits[idx] = name
    return splits


def _scene_row(scene: _SceneInput, group: str, candidates: int = 0) -> dict[str, Any]:
    """A scene's row of the summary, before its patches are cut."""
    return {
        "name": scene.path.name,
        "path": str(scene.path),
        "date": scene.date.isoformat(),
        "group": group,
        "candidates": candidates,
        "kept": 0,
        "dropped_sar_nodata": 0,
        "dropped_label_nodata": 0,
    }


@dataclass
class _Inputs:
    """The checked inputs of a build."""

    tiles: list[Path]
    tile_bounds: list[tuple[float, float, float, float]]
    scenes: list[_SceneInput]  # every scene, skipped ones too
    notes: list[str]  # for the summary (grows during the build)

    @property
    def used(self) -> list[_SceneInput]:
        """The scenes of a pretraining or finetuning month."""
        return [s for s in self.scenes if s.group != "skip"]


def _check_inputs(
    scenes: Sequence[str | os.PathLike[str]],
    tile_dir: str | os.PathLike[str],
    config: BuildConfig,
) -> _Inputs:
    """Validate everything cheap before the long passes; note skipped scenes."""
    p = config.patch_size
    tiles = find_label_tiles(tile_dir)
    inputs = _inspect_scenes(scenes, config)
    tile_bounds = _tile_bounds(tiles)
    if not any(
        boxes_intersect(s.bounds_lonlat, tb) for s in inputs for tb in tile_bounds
    ):
        raise InputRasterError(
            f"--lulc {tile_dir}: none of the {len(tiles)} label tile(s) overlaps any "
            "of the scenes; give the tiles that cover the scenes"
        )
    notes = []
    for s in inputs:
        if s.group == "skip":
            notes.append(
                f"{s.path.name}: month {s.date.month} is neither a pretraining "
                f"{list(config.pretrain_months)} nor a finetuning "
                f"{list(config.finetune_months)} month; skipped"
            )
        elif s.width < p or s.height < p:
            notes.append(f"{s.path.name}: smaller than one {p}×{p} patch; no patches")
    for note in notes:
        logger.warning(note)
    checked = _Inputs(tiles, tile_bounds, inputs, notes)
    if not checked.used:
        raise DatasetBuildError(
            "no scene was acquired in a pretraining or finetuning month: "
            + "; ".join(notes)
        )
    return checked


def _candidate_patches(
    used: Sequence[_SceneInput], anchors: np.ndarray, config: BuildConfig
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Each scene's anchor cells and its candidates: the patches with ≥ 1 anchor.

    Returns:
        Per scene, the ``(anchor indices, cells)`` of :func:`_anchor_cells` and the
        candidate patches as ``[M, 2]`` (patch row, patch column).

    Raises:
        DatasetBuildError: no patch holds an anchor.
    """
    p = config.patch_size
    cells = [_anchor_cells(s, anchors, p) for s in used]
    cands = []
    for s, (_, cell) in zip(used, cells, strict=True):
        u = np.unique(cell)
        cands.append(np.stack([u // max(1, s.width // p), u % max(1, s.width // p)], 1))
    if sum(len(c) for c in cands) == 0:
        raise DatasetBuildError(
            f"no {p}×{p} patch of the scenes contains any of the "
            f"{config.anchors} anchors; use more --anchors or scenes inside the "
            "labelled area"
        )
    return cells, cands


def _extract_patches(
    tmp: Path,
    inputs: _Inputs,
    n_anchors: int,
    cells: Sequence[tuple[np.ndarray, np.ndarray]],
    cands: Sequence[np.ndarray],
    config: BuildConfig,
    progress: bool,
    image: ImageOptions,
    radiometry: list[dict[str, Any]],
) -> tuple[PatchStore, list[dict[str, Any]], np.ndarray]:
    """Cut, check and store the candidates into ``sar_db.npy`` and ``labels.npy``.

    The arrays are sized for all candidates, then shrunk to the kept patches.

    Returns:
        The kept patches, one summary row per used scene, and which anchors lie
        inside kept patches.

    Raises:
        DatasetBuildError: every candidate was dropped for no data.
    """
    from alosmap._progress import progress_bar

    n_cand = sum(len(c) for c in cands)
    out = PatchStore.create(tmp, n_cand, config.patch_size)
    hit = np.zeros(n_anchors, dtype=bool)
    scene_rows = []
    with contextlib.ExitStack() as stack:
        tile_ds = [stack.enter_context(_open(t)) for t in inputs.tiles]
        bar = stack.enter_context(
            progress_bar(n_cand, "patches", progress, unit="patch")
        )
        for s, cand, (a_idx, a_cell) in zip(inputs.used, cands, cells, strict=True):
            info, kept = _extract_scene(
                s,
                cand,
                out,
                tile_ds,
                inputs.tile_bounds,
                config,
                bar,
                image,
                radiometry,
            )
            scene_rows.append(info)
            hit[a_idx[np.isin(a_cell, kept)]] = True
    n = out.close(tmp)
    if n == 0:
        raise DatasetBuildError(
            f"all {n_cand} candidate patches were dropped for no data (SAR valid "
            f"< {1 - config.max_nodata:.0%} or labels < "
            f"{config.min_label_fraction:.0%}); raise --max-nodata or check the "
            "scenes"
        )
    return out, scene_rows, hit


def _summary(
    out_dir: Path,
    config: BuildConfig,
    inputs: _Inputs,
    scene_rows: list[dict[str, Any]],
    splits: np.ndarray,
    anchors: np.ndarray,
    hit: np.ndarray,
    norm: Normalization,
    counts: np.ndarray,
    train_hist: np.ndarray,
) -> dict[str, Any]:
    """The build summary (``dataset.json``'s ``summary``, ``summary.txt``)."""
    anchor_hist = np.bincount(anchors["code"], minlength=N_CODES)[:N_CODES]
    scene_rows = scene_rows + [
        _scene_row(s, "skipped") for s in inputs.scenes if s.group == "skip"
    ]
    # the scenes relative to the dataset: no path of the machine that built it
    scene_rows = [
        {**r, "path": provenance_name(r["path"], out_dir)} for r in scene_rows
    ]
    return {
        "path": out_dir.name,
        "scenes": scene_rows,
        "notes": inputs.notes,
        "patches": {
            k: int((splits == k).sum()) for k in ("pretrain", *LABELLED_SPLITS)
        },
        "candidates": sum(r["candidates"] for r in scene_rows),
        "dropped": {
            "sar_nodata": sum(r["dropped_sar_nodata"] for r in scene_rows),
            "label_nodata": sum(r["dropped_label_nodata"] for r in scene_rows),
        },
        "rule": {
            "min_sar_valid": 1.0 - config.max_nodata,
            "min_label_fraction": config.min_label_fraction,
            "label_rule_applies_to": "finetuning months (train/val/test)",
        },
        "anchors": {
            "drawn": len(anchors),
            "tiles": len(inputs.tiles),
            "in_kept_patches": int(hit.sum()),
        },
        "normalization": {
            "split": norm.split,
            "mean_db": norm.mean_db,
            "std_db": norm.std_db,
        },
        "tile_pixel_counts": [int(v) for v in counts],
        "class_shares": {
            task.name: {
                "tiles": _shares(counts, task),
                "anchors": _shares(anchor_hist, task),
                "train": _shares(train_hist, task),
            }
            for task in TASK_RECORDS.values()
        },
    }


def _metadata(
    config: BuildConfig,
    inputs: _Inputs,
    tile_dir: str | os.PathLike[str],
    norm: Normalization,
    train_hist: np.ndarray,
    summary: dict[str, Any],
    out_dir: Path,
    radiometry: dict[str, Any],
) -> DatasetRecord:
    """``dataset.json``: JAXA codes (``"labels": "jaxa"``), every bundled task.

    The scenes, tiles and label directory are named relative to the dataset
    (``out_dir``), the files with their SHA-256: no path of the machine that built
    it is recorded.
    """
    scenes = [s.path for s in inputs.scenes]
    return DatasetRecord.of_jaxa_codes(
        config.patch_size,
        (norm.mean_db, norm.std_db, norm.split),
        {
            task.name: [int(v) for v in _task_counts(train_hist, task)]
            for task in TASK_RECORDS.values()
        },
        radiometry=radiometry,
        build={
            **asdict(config),
            "scenes": [provenance_name(p, out_dir) for p in scenes],
            "scenes_sha256": [provenance_sha256(p) for p in scenes],
            "tiles": [provenance_name(t, out_dir) for t in inputs.tiles],
            "tiles_sha256": [provenance_sha256(t) for t in inputs.tiles],
            "label_dir": provenance_name(tile_dir, out_dir),
            "anchors_file": "anchors.npy",
            "split_unit": "patch",
        },
        summary=summary,
    )


def build_dataset(
    scenes: Sequence[str | os.PathLike[str]],
    tile_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: BuildConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    image: ImageOptions | None = None,
) -> BuildResult:
    """Build a training dataset by label-guided sampling (see the module docs).

    Args:
        scenes: ALOS-2 HH scenes (any raster :class:`~alosmap.io.scene.Scene`
            reads, with a CRS and an acquisition date).
        tile_dir: directory of JAXA HRLULC tiles ``LC_*.tif``.
        out_dir: dataset directory to create.
        config: build parameters (defaults: :class:`BuildConfig`).
        overwrite: replace an existing dataset directory (only one that holds a
            ``dataset.json`` or is empty).
        progress: draw progress bars on stderr.
        image: how to read the scenes (band, units, no-data; default: as the
            files say, recorded in ``dataset.json`` only when not the default).

    Returns:
        The dataset path and its summary.

    Raises:
        InputRasterError: a missing or unreadable scene or tile, a scene without a
            date or CRS, no tiles, tiles that overlap no scene.
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False.
        OutputPathError: ``out_dir`` is, or holds, an input (whatever
            ``overwrite`` says).
        DatasetBuildError: bad parameters, or no patch survives.
    """
    config = config or BuildConfig()
    image = image or ImageOptions()
    out_dir = Path(out_dir)
    inputs = _check_inputs(scenes, tile_dir, config)
    check_not_input_dir(out_dir, [*scenes, tile_dir, *inputs.tiles])
    remove_stale_temps(out_dir)
    anchor_rng, split_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2)
    )
    rows = config.block_rows
    with atomic_dir(out_dir, overwrite, "dataset.json") as tmp:
        counts = count_classes(inputs.tiles, block_rows=rows, progress=progress)
        anchors = sample_anchors(
            inputs.tiles,
            counts,
            config.anchors,
            anchor_rng,
            block_rows=rows,
            progress=progress,
        )
        np.save(tmp / "anchors.npy", anchors)
        cells, cands = _candidate_patches(inputs.used, anchors, config)
        held: list[dict[str, Any]] = []  # what each scene holds
        out, scene_rows, hit = _extract_patches(
            tmp,
            inputs,
            len(anchors),
            cells,
            cands,
            config,
            progress,
            image,
            held,
        )
        splits = _assign_splits(out.groups, config.split, split_rng)
        for rec, sp in zip(out.records, splits, strict=True):
            rec.split = str(sp)
        norm = normalization(out.sums, splits, inputs.notes, fallback="pretrain")
        hist = np.array([r.histogram for r in out.records], dtype=np.int64)
        train_hist = hist[splits == "train"].sum(axis=0)
        summary = _summary(
            out_dir,
            config,
            inputs,
            scene_rows,
            splits,
            anchors,
            hit,
            norm,
            counts,
            train_hist,
        )
        summary["label_check"] = _label_check(tmp, out, splits)
        radiometry, note = summarize_radiometry(held)
        if note:
            inputs.notes.append(note)
        record = _metadata(
            config, inputs, tile_dir, norm, train_hist, summary, out_dir, radiometry
        )
        record.build["image"] = image.to_dict()
        text = format_summary(summary)
        write_dataset(tmp, record, out.records, MANIFEST_FIELDS, text)
    return BuildResult(out_dir, summary, text)
