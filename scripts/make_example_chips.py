"""Labelled flood chips unlike ALOS-2, for README's "Train on your own data" example.

Writes ``DIR/chips/S1_NN.tif`` (2 bands VV, VH, float32 σ0 in dB on UTM 33N, NaN no
data along one edge, no date) and ``DIR/labels/S1_NN_label.tif`` (int16 0 dry,
1 flooded, −1 no label, on an EPSG:4326 grid): smooth random flood patches with
water at −21.2 dB and land at −7.9 dB (PALSAR-2 HH figures of De Alban et al. 2018,
used here as a stand-in sensor) plus 4.4-look speckle. The last chip's image is
moved to ``DIR/new_chip.tif`` and its label dropped: the chip to map.

Usage: python scripts/make_example_chips.py DIR [--chips 12] [--size 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy.ndimage import gaussian_filter

UTM33 = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)


def _chip(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image [2, size, size] float32 dB, labels [size, size] int16)."""
    field = gaussian_filter(rng.normal(size=(size, size)), 12)
    water = field > np.quantile(field, 0.6)

    def speckle() -> np.ndarray:
        return 10 * np.log10(rng.gamma(4.4, 1 / 4.4, (size, size)))

    texture = gaussian_filter(rng.normal(size=(size, size)), 1.5)
    vv = np.where(water, -21.2, -7.9) + np.where(water, 2.0, 2.5) * texture + speckle()
    vh = vv - 8 + speckle()
    image = np.stack([vv, vh]).astype(np.float32)
    image[:, : size // 10] = np.nan  # a swath edge
    labels = water.astype(np.int16)
    labels[-size // 8 :] = -1  # not labelled
    return image, labels


def _write_labels(path: Path, labels: np.ndarray, transform: Affine) -> None:
    """The labels reprojected (nearest) onto a geographic grid, −1 outside."""
    size = labels.shape[0]
    bounds = array_bounds(size, size, transform)
    dst_t, w, h = calculate_default_transform(
        UTM33, WGS84, size, size, *bounds, resolution=0.00009
    )
    out = np.full((h, w), -1, np.int16)
    reproject(
        labels, out, src_transform=transform, src_crs=UTM33, dst_transform=dst_t,
        dst_crs=WGS84, resampling=Resampling.nearest, dst_nodata=-1,
    )  # fmt: skip
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1}
    with rasterio.open(
        path, "w", **profile, dtype="int16", crs=WGS84, transform=dst_t
    ) as ds:
        ds.write(out, 1)


def main() -> None:
    """Write the chips."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--chips", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    chips, labels = args.dir / "chips", args.dir / "labels"
    chips.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(args.chips):
        image, lab = _chip(rng, args.size)
        t = Affine(10, 0, 400_000 + 3_000 * i, 0, -10, 4_500_000)
        name = f"S1_{i:02d}"
        last = i == args.chips - 1
        img_path = args.dir / "new_chip.tif" if last else chips / f"{name}.tif"
        profile = {"driver": "GTiff", "width": args.size, "height": args.size}
        with rasterio.open(
            img_path, "w", **profile, count=2, dtype="float32", crs=UTM33,
            transform=t, nodata=float("nan"),
        ) as ds:  # fmt: skip
            ds.write(image)
        if not last:
            _write_labels(labels / f"{name}_label.tif", lab, t)


if __name__ == "__main__":
    main()
