"""Real SAR tiles for export parity checks, read exactly as ``alosmap predict`` does.

A parity check is only as good as its inputs: random normal noise never produces the
bright built-up blocks, dark water and swath edges (no data set to 0 after
normalisation) that a deployed model sees. :func:`parity_tiles` therefore cuts
windows from real scenes with the pipeline's own reader
(:func:`~alosmap.predict.tiles.read_strip_tiles`: :class:`~alosmap.io.scene.Scene`
strip reads → σ0 dB → validity → :func:`~alosmap.radiometry.normalize` with the
model's radiometry → zero-padded ``tile × tile`` windows on the pipeline's grid).
By default the scenes are the three ``sample_data/IMG-HH-*.tif`` of the source
checkout; an installed package without the repository falls back to random tiles
with an :class:`AlosmapWarning`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alosmap.errors import AlosmapWarning, InputRasterError, ParityError
from alosmap.spec import ModelSpec

logger = logging.getLogger(__name__)

#: Tiles used by the export parity checks unless told otherwise.
DEFAULT_PARITY_TILES = 12
#: ``sample_data/`` of a source checkout (absent from an installed wheel).
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


@dataclass(frozen=True)
class ParityTiles:
    """Model input for a parity check and where it came from.

    Attributes:
        tiles: normalised tiles ``[N, 1, tile, tile]`` float32 (0 at no data).
        source: one line for the report, e.g. ``"12 tiles from 3 scenes"``.
        real: False when the tiles are random noise (no scene found).
    """

    tiles: np.ndarray
    source: str
    real: bool


def sample_scenes(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """The sample ALOS-2 scenes (``IMG-HH-*.tif``) of ``directory``, sorted.

    Args:
        directory: folder to look in; ``sample_data/`` of the checkout by default.

    Returns:
        The scene paths; empty when the folder or the scenes are missing.
    """
    folder = Path(directory) if directory is not None else SAMPLE_DATA
    return sorted(folder.glob("IMG-HH-*.tif")) if folder.is_dir() else []


def scene_tiles(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    count: int,
    *,
    seed: int = 0,
    overlap: int | None = None,
) -> np.ndarray:
    """``count`` model-input windows of one scene, as the pipeline would feed them.

    Windows lie on the pipeline's grid (``tile`` = the model's tile, ``overlap``
    pixels shared); windows without any valid pixel are never chosen (the pipeline
    skips them too). The choice is seeded and spread over the scene.

    Args:
        path: a scene the pipeline accepts (band 1, units from its tags or guessed).
        spec: the model spec (tile size, radiometry).
        count: windows wanted (fewer when the scene has fewer valid windows).
        seed: seed of the window choice.
        overlap: grid overlap in pixels; default ``predict``'s for the model (a
            quarter of its tile).

    Returns:
        ``[n, 1, tile, tile]`` float32, ``n <= count``.

    Raises:
        InputRasterError: unreadable scene, or no valid pixel at all.
    """
    from alosmap.io.scene import Scene
    from alosmap.predict.options import default_overlap
    from alosmap.predict.tiles import read_strip_tiles
    from alosmap.tiling import axis_starts

    tile = spec.tile_size
    with Scene(path, spec.radiometry) as scene:
        info = scene.info
        ov = default_overlap(tile) if overlap is None else min(overlap, tile - 1)
        rows, cols = (
            axis_starts(info.height, tile, ov),
            axis_starts(info.width, tile, ov),
        )
        order = np.random.default_rng(seed).permutation(len(rows) * len(cols))
        strips: dict[int, dict[int, np.ndarray]] = {}
        picked: list[tuple[int, int]] = []
        for idx in order:
            if len(picked) >= count:
                break
            r, c = rows[idx // len(cols)], cols[idx % len(cols)]
            if r not in strips:
                strip = read_strip_tiles(scene, spec.radiometry, r, tile, cols)
                strips[r] = {t.col: x for t, x in strip.tiles}
            if c in strips[r]:
                picked.append((r, c))
    if not picked:
        raise InputRasterError(f"{path}: no window with valid pixels for parity")
    return np.stack([strips[r][c] for r, c in sorted(picked)])[:, None]


def parity_tiles(
    spec: ModelSpec,
    scenes: Sequence[str | os.PathLike[str]] | None = None,
    *,
    count: int = DEFAULT_PARITY_TILES,
    seed: int = 0,
) -> ParityTiles:
    """Tiles for a parity check: real windows when scenes exist, else random noise.

    Args:
        spec: the model spec.
        scenes: scenes to cut windows from; None uses ``sample_data/``. Given
            scenes must be readable (errors are raised, not hidden).
        count: total number of tiles, spread evenly over the scenes.
        seed: seed of the window choice (and of the random fallback).

    Returns:
        The tiles and a description of their source.
    """
    if count < 1:
        raise ValueError(f"count: expected >= 1 parity tiles, got {count}")
    paths = [Path(p) for p in scenes] if scenes else sample_scenes()
    if not paths:
        warnings.warn(
            "sample_data/ not found (installed package?): the parity check uses "
            "random tiles; give a real scene with --parity-scene for a meaningful "
            "check",
            AlosmapWarning,
            stacklevel=2,
        )
        rng = np.random.default_rng(seed)
        s = spec.tile_size
        tiles = rng.standard_normal((count, 1, s, s), dtype=np.float32)
        return ParityTiles(tiles, f"{count} random tiles", real=False)
    per = [count // len(paths) + (i < count % len(paths)) for i in range(len(paths))]
    parts = [
        scene_tiles(p, spec, n, seed=seed + i)
        for i, (p, n) in enumerate(zip(paths, per, strict=True))
        if n > 0
    ]
    tiles = np.concatenate(parts)
    used = sum(n > 0 for n in per)
    where = paths[0].name if used == 1 else f"{used} scenes in {paths[0].parent}"
    logger.info("parity tiles: %d from %s", len(tiles), where)
    return ParityTiles(tiles, f"{len(tiles)} tiles from {where}", real=True)


def export_parity_tiles(
    spec: ModelSpec,
    check: bool,
    scenes: Sequence[str | os.PathLike[str]] | None,
    count: int | None,
) -> ParityTiles | None:
    """The tiles of an exporter's parity check, or None when the check is off.

    Args:
        spec: the model spec.
        check: whether the check runs (``--check/--no-check``).
        scenes: ``--parity-scene`` files (None: ``sample_data/``).
        count: ``--parity-tiles`` (None: :data:`DEFAULT_PARITY_TILES`).
    """
    if not check:
        return None
    return parity_tiles(spec, scenes, count=count or DEFAULT_PARITY_TILES)


def enforce_tolerance(
    what: str,
    precision: str,
    parity: dict[str, float],
    tolerance: float,
    source: str,
    *,
    reference: str = "",
) -> None:
    """Fail an export whose max |Δprob| exceeds ``tolerance`` (NaN fails too).

    Args:
        what: the exported format, e.g. ``ONNX`` or ``TensorRT``.
        precision: ``fp32`` or ``fp16``.
        parity: a comparison with ``max_abs_prob_diff``.
        tolerance: the largest accepted max |Δprob|.
        source: where the tiles came from (:attr:`ParityTiles.source`).
        reference: what the export was compared with, for the message (e.g.
            ``ONNX Runtime``); empty when it goes without saying.

    Raises:
        ParityError: the check failed; the message says nothing was written.
    """
    diff = parity["max_abs_prob_diff"]
    if not diff <= tolerance:
        against = f" against {reference}" if reference else ""
        raise ParityError(
            f"{what} parity check failed ({precision}, {source}): max "
            f"|Δprob| {diff:.2e} > tolerance {tolerance:.1e}{against}; nothing was "
            "written"
        )
