"""Sets of scenes on one synthetic world; the committed ``sample_data/`` is one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alosmap._fileio import atomic_write_bytes, check_overwrite, sha256_file
from alosmap.synthetic._io import all_or_nothing, tile_name, tiles_for_bounds
from alosmap.synthetic._io import write_label_tiles as _write_label_tiles
from alosmap.synthetic._scene import (
    SyntheticScene,
    generate_scene,
    plan_scene,
    scene_focus_box,
    world_bounds_for,
)
from alosmap.synthetic._world import SeaSide, generate_label_world

#: Seed of the sample label world.
SAMPLE_WORLD_SEED = 3539
#: Minimum pixels of every class in the centre of every sample scene.
SAMPLE_MIN_CLASS_PIXELS = 300


@dataclass(frozen=True)
class SceneSpec:
    """One scene of a set (:func:`generate_scenes`): the arguments of its simulation.

    Attributes:
        date: acquisition date ``YYYY-MM-DD`` or ISO datetime (UTC).
        center_lon: scene centre longitude in degrees.
        center_lat: scene centre latitude in degrees.
        heading_deg: track heading, degrees clockwise from north.
        seed: seed of the backscatter simulation.
        size: scene width and height in pixels.
        pixel_size: pixel size in metres.
    """

    date: str
    center_lon: float
    center_lat: float
    heading_deg: float
    seed: int
    size: int = 1024
    pixel_size: float = 8.0

    def plan(self, out_dir: Path) -> SyntheticScene:
        """The scene's grid and file name in ``out_dir`` (nothing is written)."""
        return plan_scene(
            out_dir,
            seed=self.seed,
            center=(self.center_lon, self.center_lat),
            size=(self.size, self.size),
            pixel_size=self.pixel_size,
            heading_deg=self.heading_deg,
            date=self.date,
        )


def generate_scenes(
    out_dir: str | os.PathLike[str],
    scenes: Sequence[SceneSpec],
    *,
    world_seed: int,
    sea_side: SeaSide = "south",
    sea_fraction: float = 0.3,
    min_class_pixels: int = 200,
) -> tuple[list[SyntheticScene], list[Path]]:
    """Write scenes that share one generated ground truth, and its label tiles.

    The world covers every scene (with a margin) and guarantees
    ``min_class_pixels`` of every class in the central part of each scene. Existing
    files are replaced.

    Args:
        out_dir: output directory (created if needed).
        scenes: the scenes to write.
        world_seed: seed of the label world.
        sea_side: where the sea is (``"none"`` for no sea).
        sea_fraction: sea share of the world.
        min_class_pixels: minimum pixel count of every class per scene centre.

    Returns:
        The scenes written and the label tiles written.
    """
    out = Path(out_dir)
    grids = [s.plan(out).grid for s in scenes]
    world = generate_label_world(
        world_bounds_for(grids),
        seed=world_seed,
        sea_side=sea_side,
        sea_fraction=sea_fraction,
        min_class_pixels=min_class_pixels,
        focus=[scene_focus_box(g) for g in grids],
    )
    written = [
        generate_scene(
            out,
            seed=s.seed,
            width=s.size,
            pixel_size=s.pixel_size,
            center_lon=s.center_lon,
            center_lat=s.center_lat,
            date=s.date,
            heading_deg=s.heading_deg,
            world=world,
            write_label_tiles=False,
            overwrite=True,
        )
        for s in scenes
    ]
    return written, _write_label_tiles(world, out, overwrite=True)


#: The sample scenes: two overlapping descending scenes of the same path 28 days
#: apart (September and October 2022) and an ascending one in November 2022, on a
#: synthetic coast with the sea to the south, around N35.3° E139.5° (UTM 54N).
SAMPLE_SCENES: tuple[SceneSpec, ...] = (
    SceneSpec("2022-09-12", 139.440, 35.300, 190.0, seed=1, size=1280),
    SceneSpec("2022-10-10", 139.475, 35.325, 190.0, seed=2, size=1280),
    SceneSpec("2022-11-17", 139.590, 35.345, 350.0, seed=3, size=1280),
)


def sample_file_names() -> list[str]:
    """File names that :func:`make_sample_data` writes (scenes, tiles, SHA256SUMS)."""
    planned = [s.plan(Path()) for s in SAMPLE_SCENES]
    box = world_bounds_for([p.grid for p in planned])
    return [
        *(p.path.name for p in planned),
        *(tile_name(la, lo) for la, lo in tiles_for_bounds(box)),
        "SHA256SUMS",
    ]


def make_sample_data(
    out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Write the sample data set (byte-identical on every run with the same libraries).

    Three 1280 × 1280 scenes at 8 m on UTM zone 54N (EPSG:32654) and the JAXA-style
    label tile ``LC_N35E139.tif`` they share, plus ``SHA256SUMS``. Other files in
    ``out_dir`` (such as its README.md) are left alone.

    Args:
        out_dir: output directory (created if needed).
        overwrite: replace existing files.

    Returns:
        Paths written, SHA256SUMS last.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    planned = [out / n for n in sample_file_names()]
    check_overwrite(planned, overwrite)
    with all_or_nothing(planned):
        scenes, tiles = generate_scenes(
            out,
            SAMPLE_SCENES,
            world_seed=SAMPLE_WORLD_SEED,
            sea_side="south",
            sea_fraction=0.3,
            min_class_pixels=SAMPLE_MIN_CLASS_PIXELS,
        )
        paths = [s.path for s in scenes] + tiles
        sums = out / "SHA256SUMS"
        text = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(paths))
        atomic_write_bytes(sums, text.encode("utf-8"))
    return [*paths, sums]
