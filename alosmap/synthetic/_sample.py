"""The committed ``sample_data/``: three synthetic scenes and their label tile."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alosmap._fileio import sha256_file
from alosmap.synthetic._io import check_writable, tile_name, tiles_for_bounds
from alosmap.synthetic._io import write_label_tiles as _write_label_tiles
from alosmap.synthetic._scene import (
    SyntheticScene,
    generate_scene,
    make_scene_grid,
    orbit_frame,
    parse_date,
    scene_file_name,
    scene_focus_box,
    world_bounds_for,
)
from alosmap.synthetic._world import generate_label_world

#: Seed of the sample label world.
SAMPLE_WORLD_SEED = 3539
#: Minimum pixels of every class in the centre of every sample scene.
SAMPLE_MIN_CLASS_PIXELS = 300


@dataclass(frozen=True)
class SampleSceneSpec:
    """One scene of the sample data (see :data:`SAMPLE_SCENES`)."""

    date: str
    center_lon: float
    center_lat: float
    heading_deg: float
    seed: int
    size: int = 1280
    pixel_size: float = 8.0


#: The sample scenes: two overlapping descending scenes of the same path 28 days
#: apart (September and October 2022) and an ascending one in November 2022, on a
#: synthetic coast with the sea to the south, around N35.3° E139.5° (UTM 54N).
SAMPLE_SCENES: tuple[SampleSceneSpec, ...] = (
    SampleSceneSpec("2022-09-12", 139.440, 35.300, 190.0, seed=1),
    SampleSceneSpec("2022-10-10", 139.475, 35.325, 190.0, seed=2),
    SampleSceneSpec("2022-11-17", 139.590, 35.345, 350.0, seed=3),
)


def sample_file_names() -> list[str]:
    """File names that :func:`make_sample_data` writes (scenes, tiles, SHA256SUMS)."""
    names = []
    grids = []
    for spec in SAMPLE_SCENES:
        grid = make_scene_grid(
            spec.center_lon,
            spec.center_lat,
            spec.size,
            spec.size,
            spec.pixel_size,
            spec.heading_deg,
        )
        grids.append(grid)
        ascending = not 90.0 <= spec.heading_deg % 360.0 <= 270.0
        day = parse_date(spec.date)
        orbit, frame = orbit_frame(day, spec.center_lat, ascending)  # type: ignore[arg-type]
        names.append(scene_file_name(day, orbit, frame, ascending))  # type: ignore[arg-type]
    box = world_bounds_for(grids)
    names += [tile_name(la, lo) for la, lo in tiles_for_bounds(box)]
    return [*names, "SHA256SUMS"]


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
    check_writable([out / n for n in sample_file_names()], overwrite)
    grids = [
        make_scene_grid(
            s.center_lon, s.center_lat, s.size, s.size, s.pixel_size, s.heading_deg
        )
        for s in SAMPLE_SCENES
    ]
    world = generate_label_world(
        world_bounds_for(grids),
        seed=SAMPLE_WORLD_SEED,
        sea_side="south",
        sea_fraction=0.3,
        min_class_pixels=SAMPLE_MIN_CLASS_PIXELS,
        focus=[scene_focus_box(g) for g in grids],
    )
    scenes: list[SyntheticScene] = [
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
        for s in SAMPLE_SCENES
    ]
    tiles = _write_label_tiles(world, out, overwrite=True)
    paths = [s.path for s in scenes] + tiles
    sums = out / "SHA256SUMS"
    sums.write_text(
        "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(paths)),
        encoding="utf-8",
    )
    return [*paths, sums]
