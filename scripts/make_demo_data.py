"""Synthetic training scenes for the bundled demo models (train_demo_models.sh).

Writes N scenes on one synthetic label world (a different world, seed and place from
``sample_data/``, so sample_data stays held out) plus the JAXA-style label tile(s).
September scenes become the finetuning month; October/November ones the
pretraining months.

    python scripts/make_demo_data.py OUT_DIR [--scenes 10] [--size 1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from alosmap.synthetic import SceneSpec, generate_scenes

WORLD_SEED = 20221
CENTRE = (139.95, 35.55)  # an invented coast, sea to the east


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--pixel-size", type=float, default=8.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(WORLD_SEED)
    specs = []
    for i in range(args.scenes):
        lon = CENTRE[0] + rng.uniform(-0.12, 0.12)
        lat = CENTRE[1] + rng.uniform(-0.10, 0.10)
        month = 9 if i % 10 < 7 else (10 if i % 2 else 11)
        heading = 190.0 if i % 2 else 350.0
        day = 1 + (3 * i) % 28
        date = f"2022-{month:02d}-{day:02d}"
        specs.append(
            SceneSpec(date, lon, lat, heading, 100 + i, args.size, args.pixel_size)
        )
    scenes, tiles = generate_scenes(
        args.out,
        specs,
        world_seed=WORLD_SEED,
        sea_side="east",
        sea_fraction=0.25,
        min_class_pixels=300,
    )
    for s in scenes:
        print(s.path)
    for t in tiles:
        print(t)


if __name__ == "__main__":
    main()
