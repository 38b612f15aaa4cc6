"""``alosmap train adapt``: a model adapted to new scenes without labels.

A model trained on one sensor, season or region sees shifted inputs elsewhere: a
calibration offset moves every σ0, other class statistics move the features. Two
label-free corrections (AdaBN, Li et al. 2016; "precise BN", Wu & Johnson 2021)
take care of the first-order part of that shift:

1. **Input normalisation.** The σ0 mean and standard deviation (dB, clipped to the
   model's ``clip_db`` like model input) are re-estimated over the valid pixels of
   the given scenes, read in strips of one tile height (memory: one strip of the
   widest scene). The model then sees inputs of the same first two moments as in
   training.
2. **BatchNorm statistics.** Tiles of the model's size (non-overlapping,
   edge-aligned, at least half valid) are cut from the scenes, up to
   ``max_tiles`` drawn at random (seeded), normalised with the new statistics and
   passed through the network in shuffled batches with only the BatchNorm layers in
   training mode and ``momentum=None``: their running mean and variance become the
   average over all batches. No labels, no gradients, no other weight changes (the
   tensors other than the running statistics are checked to be bit-identical).
   Memory: the drawn tiles (``max_tiles`` × tile² float32: 64 MiB for 256 tiles
   of 256²).

The adapted model is written as a new file (never over the input model or a
scene), its spec carrying the new radiometry (mean/std, and the band, units,
calibration factor and backscatter kind of the scenes when they agree) and the
provenance of the adaptation: source model, scenes, pixels, tiles, date, version.
The log reports the input statistics before (the model's) and after (the adapted
ones), and warns when they differ by more than :data:`WARN_MEAN_SHIFT_DB` in mean
or a factor :data:`WARN_STD_RATIO` in standard deviation (:func:`shift_warning`).

**Adapt or finetune?**

* ``adapt`` (no labels, no weight changes) corrects a shift of the *inputs*: another
  sensor's calibration, another season or region, with **the same kind of scenes as
  the training data** (a similar mix of classes). Give it representative unlabelled
  scenes of the new sensor, season or region, as many as you can.
* Do **not** adapt on the scenes you want to map when their class mix is not the
  training data's: a flood scene (say 25 % water where training saw 5 %) has a
  lower mean σ0 *because of the water*; adapting to it moves the normalisation with
  the very change to be mapped, and the adapted model then finds less water.
* ``finetune --init-from MODEL`` (labels needed, a few labelled scenes suffice)
  changes the weights: use it when the classes look different (another band or
  frequency, another legend, a class the model confuses), or when adapting is not
  enough. The two combine: adapt, then finetune from the adapted model.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from alosmap._fileio import check_not_input, check_output_place, check_overwrite
from alosmap._version import __version__
from alosmap.io.scene import Scene
from alosmap.radiometry import Radiometry, normalize
from alosmap.spec import (
    ModelSpec,
    load_model,
    provenance_file,
    provenance_name,
    provenance_sha256,
    save_model,
)
from alosmap.tiling import axis_starts
from alosmap.train.errors import TrainingError

__all__ = [
    "WARN_MEAN_SHIFT_DB",
    "WARN_STD_RATIO",
    "AdaptOptions",
    "AdaptResult",
    "RunningStats",
    "adapt",
    "batchnorm_layers",
    "recompute_batchnorm",
    "scene_statistics",
    "shift_warning",
]

#: Running statistics of BatchNorm layers: the only tensors adaptation changes.
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
#: The scenes' mean σ0 (dB) this far from the model's draws a warning: about the
#: shift of a flood scene with 25 % water (water ≈ −22 dB, land ≈ −8 dB) against
#: training data with a few percent.
WARN_MEAN_SHIFT_DB = 1.5
#: The scenes' σ0 standard deviation this many times larger (or smaller) than the
#: model's draws a warning.
WARN_STD_RATIO = 1.25

Log = Callable[[str], None]
_T = TypeVar("_T")


def _quiet(_msg: str) -> None:
    """No log."""


@dataclass
class AdaptOptions:
    """How :func:`adapt` reads the scenes and what it re-estimates.

    Attributes:
        band: 1-based band of multi-band scenes (None: single-band scenes).
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.
        max_tiles: most tiles drawn for the BatchNorm statistics.
        batch_size: tiles per forward pass (at least 2: BatchNorm statistics).
        seed: seed of the tile draw and the batch order.
        normalization: re-estimate the input mean/std.
        batchnorm: re-estimate the BatchNorm running statistics.
        min_valid: least valid share of a tile to be drawn.
        device: torch device of the forward passes.
    """

    band: int | None = None
    input_units: str = "auto"
    max_tiles: int = 256
    batch_size: int = 8
    seed: int = 0
    normalization: bool = True
    batchnorm: bool = True
    min_valid: float = 0.5
    device: str = "cpu"


@dataclass
class RunningStats:
    """Count, mean and sum of squared deviations, merged chunk by chunk (Chan)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        """Merge the values of one chunk (any shape)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        n_b, mean_b = v.size, float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        """Population standard deviation (as the dataset builder computes it)."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan


@dataclass
class _SceneScan:
    """What the first pass over one scene found."""

    path: Path
    band: int
    units: str
    cf: float
    backscatter: str
    tiles: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class AdaptResult:
    """Outcome of :func:`adapt`.

    Attributes:
        path: the adapted model file.
        spec: its spec.
        pixels: valid pixels the statistics come from.
        tiles: tiles passed through the network (0 without BatchNorm update).
        batchnorm_layers: BatchNorm layers whose statistics were re-estimated.
        old: the source model's radiometry.
        scene_mean_db: mean σ0 (dB, clipped) of the scenes' valid pixels.
        scene_std_db: its standard deviation.
        warnings: what the log warned about (:func:`shift_warning`).
    """

    path: Path
    spec: ModelSpec
    pixels: int
    tiles: int
    batchnorm_layers: int
    old: Radiometry
    scene_mean_db: float = math.nan
    scene_std_db: float = math.nan
    warnings: list[str] = field(default_factory=list)


def _open(path: Path, radiometry: Radiometry, opts: AdaptOptions) -> Scene:
    return Scene(path, radiometry, band=opts.band, input_units=opts.input_units)


def _scan_scene(
    path: Path,
    radiometry: Radiometry,
    tile: int,
    opts: AdaptOptions,
    stats: RunningStats,
) -> _SceneScan:
    """Add a scene's clipped σ0 to ``stats``; list its tiles with enough data."""
    lo, hi = radiometry.clip_db
    with _open(path, radiometry, opts) as scene:
        info = scene.info
        scan = _SceneScan(path, info.band, scene.units, scene.cf, info.backscatter)
        cols = axis_starts(info.width, tile, 0)
        done = 0  # rows already counted (the last strip of tiles may overlap)
        for row in axis_starts(info.height, tile, 0):
            db, valid = scene.read_strip(row, tile)
            new = slice(max(0, done - row), None)
            stats.add(np.clip(db[new][valid[new]], lo, hi))
            done = row + db.shape[0]
            for col in cols:
                share = valid[:, col : col + tile].sum() / (tile * tile)
                if share >= opts.min_valid:
                    scan.tiles.append((row, col))
    return scan


def scene_statistics(
    paths: Sequence[str | os.PathLike[str]],
    radiometry: Radiometry,
    *,
    tile: int = 256,
    options: AdaptOptions | None = None,
) -> tuple[RunningStats, list[_SceneScan]]:
    """Clipped σ0 (dB) statistics over the valid pixels of scenes, read in strips.

    Args:
        paths: the scenes (anything :class:`~alosmap.io.scene.Scene` opens).
        radiometry: the model's (clip range; calibration factor of DN scenes).
        tile: tile size of the strips and of the tiles listed.
        options: band, units, least valid share of a listed tile.

    Returns:
        The statistics and, per scene, its units and tiles with enough data.
    """
    opts = options or AdaptOptions()
    stats = RunningStats()
    scans = [_scan_scene(Path(p), radiometry, tile, opts, stats) for p in paths]
    return stats, scans


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model``."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, batches: Sequence[torch.Tensor], *, device: str = "cpu"
) -> int:
    """Replace the BatchNorm running statistics by their average over ``batches``.

    Only the BatchNorm layers run in training mode (dropout and drop path stay
    off), with ``momentum=None`` (a cumulative average); nothing else changes,
    which is checked (bit-identical tensors).

    Args:
        model: the network (left in eval mode).
        batches: normalised inputs [B, 1, T, T], B >= 2 each.
        device: where the forward passes run.

    Returns:
        The number of BatchNorm layers updated.

    Raises:
        TrainingError: a batch of fewer than 2 tiles, or a tensor other than the
            running statistics changed.
    """
    layers = batchnorm_layers(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
    model.to(device).eval()
    for bn in layers:
        bn.train()
    try:
        for x in batches:
            if x.shape[0] < 2:
                raise TrainingError("BatchNorm statistics need batches of >= 2 tiles")
            model(x.to(device))
    finally:
        for bn, m in zip(layers, momenta, strict=True):
            bn.momentum = m
        model.eval()
    for k, v in model.state_dict().items():
        if not k.endswith(BN_STATS) and not torch.equal(before[k], v.cpu()):
            raise TrainingError(f"adaptation changed {k}, which it must not")
    return len(layers)


def _draw_tiles(
    scans: list[_SceneScan], opts: AdaptOptions
) -> list[tuple[int, int, int]]:
    """Up to ``max_tiles`` of the listed tiles, drawn at random, in reading order."""
    every = [(i, r, c) for i, s in enumerate(scans) for r, c in s.tiles]
    rng = np.random.default_rng(opts.seed)
    k = min(opts.max_tiles, len(every))
    picked = rng.choice(len(every), size=k, replace=False)
    return sorted(every[int(j)] for j in picked)


def _cut_tiles(
    scans: list[_SceneScan],
    drawn: list[tuple[int, int, int]],
    radiometry: Radiometry,
    tile: int,
    opts: AdaptOptions,
) -> np.ndarray:
    """The drawn tiles [N, 1, T, T], normalised with ``radiometry`` (0 at no data)."""
    out = np.zeros((len(drawn), 1, tile, tile), dtype=np.float32)
    wanted: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for j, (i, r, c) in enumerate(drawn):
        wanted.setdefault((i, r), []).append((j, c))
    for i, scan in enumerate(scans):
        rows = sorted(r for (si, r) in wanted if si == i)
        if not rows:
            continue
        with _open(scan.path, radiometry, opts) as scene:
            for r in rows:
                db, valid = scene.read_strip(r, tile)
                x = normalize(db, radiometry, valid, inplace=True)
                for j, c in wanted[(i, r)]:
                    part = x[:, c : c + tile]
                    out[j, 0, : part.shape[0], : part.shape[1]] = part
    return out


def _batches(tiles: np.ndarray, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Shuffled batches of ``tiles``; a last single tile joins the batch before."""
    order = np.random.default_rng(seed + 1).permutation(len(tiles))
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] < 2:
        starts.pop()
    ends = [*starts[1:], len(order)]
    return [
        torch.from_numpy(tiles[order[a:b]]) for a, b in zip(starts, ends, strict=True)
    ]


def _agreed(values: Sequence[_T], fallback: _T) -> _T:
    """The value all scenes share, else ``fallback``."""
    return values[0] if values and all(v == values[0] for v in values) else fallback


def _new_radiometry(
    old: Radiometry, stats: RunningStats, scans: list[_SceneScan]
) -> Radiometry:
    """``old`` with the scenes' statistics, and their band/units/CF/kind if agreed."""
    cfs = [s.cf for s in scans if s.units == "dn"]
    kinds = [s.backscatter for s in scans if s.backscatter != "unknown"]
    return replace(
        old,
        band=_agreed([s.band for s in scans], old.band),
        units=_agreed([s.units for s in scans], old.units),
        calibration_factor_db=_agreed(cfs, old.calibration_factor_db),
        backscatter=_agreed(kinds, old.backscatter),
        mean_db=stats.mean,
        std_db=stats.std,
    )


def _provenance(
    spec: ModelSpec,
    source: Path,
    scans: list[_SceneScan],
    stats: RunningStats,
    tiles: int,
    layers: int,
) -> dict[str, str]:
    """The source model's provenance plus the adaptation's.

    Files are named without this machine's paths: the source model and the scenes
    by their names, with their SHA-256 (``-`` for a scene that is no local file).
    """
    old = spec.radiometry
    source_entries = provenance_file("adapted_from", source)
    source_entries["adapted_from"] += f" ({spec.name})"
    return {
        **spec.provenance,
        "alosmap_version": __version__,
        "command": "alosmap train adapt",
        **source_entries,
        "adapt_scenes": "; ".join(provenance_name(s.path) for s in scans),
        "adapt_scenes_sha256": "; ".join(
            provenance_sha256(s.path) or "-" for s in scans
        ),
        "adapt_pixels": str(stats.n),
        "adapt_tiles": str(tiles),
        "adapt_batchnorm_layers": str(layers),
        "adapt_source_normalization": (
            f"mean {old.mean_db:.4f} dB, std {old.std_db:.4f} dB"
        ),
        "adapt_date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def shift_warning(model: Radiometry, mean_db: float, std_db: float) -> str | None:
    """The warning for scenes whose statistics are far from the model's, or None.

    Far: the mean more than :data:`WARN_MEAN_SHIFT_DB` away, or the standard
    deviation more than :data:`WARN_STD_RATIO` times larger or smaller.
    """
    shift = mean_db - model.mean_db
    ratio = std_db / model.std_db
    if abs(shift) <= WARN_MEAN_SHIFT_DB and 1 / WARN_STD_RATIO <= ratio <= (
        WARN_STD_RATIO
    ):
        return None
    return (
        f"the scenes' σ0 statistics differ from the model's (mean {shift:+.2f} dB, "
        f"std ×{ratio:.2f}; warned beyond ±{WARN_MEAN_SHIFT_DB:g} dB or "
        f"×{WARN_STD_RATIO:g}). If these are the scenes to be mapped, or their mix "
        "of classes differs from the training data's (e.g. flood scenes with 25 % "
        "water), the shift comes from the classes, not the sensor, and adapting "
        "to it hides the change to be mapped: adapt on representative unlabelled "
        "scenes of the new sensor, season or region instead (or finetune "
        "--init-from on labelled ones)"
    )


def _report(
    say: Log, old: Radiometry, new: Radiometry | None, stats: RunningStats, scenes: int
) -> str | None:
    """Log the input statistics before and after (None: kept); the warning, if any."""
    say(
        f"input statistics (σ0 dB): before (the model's) mean {old.mean_db:.3f}, "
        f"std {old.std_db:.3f}"
    )
    after = (
        f"after (adapted) mean {new.mean_db:.3f}, std {new.std_db:.3f}"
        if new is not None
        else f"after: kept (--no-norm); the scenes' mean {stats.mean:.3f}, std "
        f"{stats.std:.3f}"
    )
    say(
        f"input statistics (σ0 dB): {after}, over {stats.n:,} valid pixels of "
        f"{scenes} scene(s)"
    )
    warning = shift_warning(old, stats.mean, stats.std)
    if warning is not None:
        say(f"warning: {warning}")
    return warning


def _check_paths(
    model_path: Path, images: Sequence[Path], output: Path, overwrite: bool
) -> None:
    """Before any work: the output is writable, new (or ``overwrite``), no input."""
    if not images:
        raise TrainingError("adapt needs at least one scene (--images)")
    check_not_input([output], [model_path, *images])
    check_overwrite([output], overwrite)
    check_output_place(output)


def adapt(
    model_path: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    options: AdaptOptions | None = None,
    overwrite: bool = False,
    log: Log | None = None,
) -> AdaptResult:
    """Adapt a model to scenes without labels and write it as a new file.

    Args:
        model_path: the model (``.safetensors``).
        images: the scenes of the new sensor, season or region.
        output: the adapted model file (never one of the inputs).
        options: what to re-estimate and how to read the scenes.
        overwrite: replace an existing ``output`` (never an input).
        log: receives progress lines.

    Returns:
        The file, its spec, the pixels and tiles used.

    Raises:
        TrainingError: nothing to do, no valid pixel, too few tiles.
        InputRasterError: a scene that cannot be read.
        ModelFileError: a bad model file.
        OutputExistsError, OutputPathError: ``output`` exists or is an input.
    """
    opts, say = options or AdaptOptions(), log or _quiet
    src, out = Path(model_path), Path(output)
    paths = [Path(p) for p in images]
    if not (opts.normalization or opts.batchnorm):
        raise TrainingError("--no-norm and --no-bn together leave nothing to adapt")
    if opts.batch_size < 2 or opts.max_tiles < 2:
        raise TrainingError("--batch-size and --max-tiles must be at least 2")
    _check_paths(src, paths, out, overwrite)
    model, spec = load_model(src)
    tile = spec.arch.img_size
    stats, scans = scene_statistics(paths, spec.radiometry, tile=tile, options=opts)
    if stats.n == 0 or not stats.std > 0:
        raise TrainingError("the scenes hold no valid pixel (or a constant value)")
    rad = (
        _new_radiometry(spec.radiometry, stats, scans)
        if opts.normalization
        else spec.radiometry
    )
    warning = _report(
        say, spec.radiometry, rad if opts.normalization else None, stats, len(paths)
    )
    n_tiles, layers = 0, 0
    if opts.batchnorm:
        drawn = _draw_tiles(scans, opts)
        if len(drawn) < 2:
            raise TrainingError(
                f"only {len(drawn)} tile(s) of {tile}² px with at least "
                f"{opts.min_valid:.0%} valid pixels; BatchNorm statistics need 2 "
                "or more"
            )
        tiles = _cut_tiles(scans, drawn, rad, tile, opts)
        layers = recompute_batchnorm(
            model, _batches(tiles, opts.batch_size, opts.seed), device=opts.device
        )
        n_tiles = len(drawn)
        say(f"BatchNorm statistics of {layers} layers from {n_tiles} tiles")
    new = spec.replace(
        radiometry=rad,
        name=f"{spec.name}-adapted",
        provenance=_provenance(spec, src, scans, stats, n_tiles, layers),
    )
    path = save_model(model, new, out, overwrite=overwrite, inputs=[src, *paths])
    return AdaptResult(
        path,
        new,
        stats.n,
        n_tiles,
        layers,
        spec.radiometry,
        stats.mean,
        stats.std,
        [warning] if warning else [],
    )
