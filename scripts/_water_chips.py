"""Water chips from synthetic scenes, for the experiment scripts.

Shared by scripts/bad_label_experiment.sh and scripts/transfer_experiment.sh (their
Python steps import it with this folder on PYTHONPATH).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from alosmap.radiometry import dn_to_db
from alosmap.synthetic import generate_scene


def water_scene(
    directory: Path, *, seed: int, width: int, center_lon: float, center_lat: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """A synthetic scene as σ0 dB, 0/1 water labels, JAXA codes and its profile.

    dB is NaN at DN 0; the label is 255 where the scene has no label or no data.
    """
    scene = generate_scene(
        directory,
        seed=seed,
        width=width,
        center_lon=center_lon,
        center_lat=center_lat,
        write_label_tiles=False,
        write_scene_labels=True,
        overwrite=True,
    )
    with rasterio.open(scene.path) as ds:
        dn, profile = ds.read(1), ds.profile
    with rasterio.open(scene.scene_labels) as ds:
        codes = ds.read(1)
    db = dn_to_db(dn)  # NaN at DN 0
    label = np.where(codes == 0, 255, codes == 1).astype(np.uint8)  # JAXA 1 = water
    label[~np.isfinite(db)] = 255
    return db, label, codes, dict(profile)


def write(
    path: Path, array: np.ndarray, profile: dict[str, Any], dtype: str, nodata: float
) -> None:
    """One band as ``dtype``; float32 chips are tagged as dB."""
    with rasterio.open(path, "w", **dict(profile, dtype=dtype, nodata=nodata)) as ds:
        ds.write(array.astype(dtype), 1)
        if dtype == "float32":
            ds.update_tags(UNITS="db")


def write_manifest(
    path: Path, rows: Iterable[dict[str, str]], fields: list[str]
) -> None:
    """A CSV manifest of ``fields``, one row a chip."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
