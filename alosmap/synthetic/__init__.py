"""Synthetic ALOS-2 PALSAR-2 HH scenes with JAXA-style ground truth.

No real paired ALOS-2 + label data ships with alosmap, so this package makes data
that exercises every part of the tool honestly:

* :func:`generate_label_world` draws ground truth on the JAXA HRLULC grid
  (EPSG:4326, 1/12000° pixels): coast and sea, meandering rivers 1-6 px wide,
  towns with street grids, paddy and cropland in parcels, forests of five types,
  grassland, wetlands by the water, bare land, solar farms and greenhouse clusters,
  with the land-only class shares of Japan (rare classes rare, but present).
* :func:`generate_scene` resamples a world onto a north-up UTM grid and simulates
  L-band HH backscatter (class-wise σ0, texture, speckle) as ALOS-2 Level 2.1
  amplitude DN in a tilted swath footprint, named and tagged like a real product.
  The class means and spreads are calibrated to real PALSAR-2 HH figures (25 m
  mosaic, De Alban et al. 2018, Remote Sensing 10(2):306; see
  ``alosmap.synthetic._scene`` and :data:`SIGMA0_DB`).
* :func:`write_label_tiles` writes a world as ``LC_N{lat}E{lon}.tif`` tiles.
* :func:`generate_scenes` writes a set of scenes (:class:`SceneSpec`) on one world.
* :func:`make_sample_data` writes the committed ``sample_data/``.

Everything is deterministic from its seed (numpy ``Generator`` only).

Example:
    >>> from alosmap.synthetic import generate_scene
    >>> scene = generate_scene("out", seed=7, width=512)  # doctest: +SKIP
    >>> scene.path.name  # doctest: +SKIP
    'IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif'
"""

from __future__ import annotations

from alosmap.synthetic._io import tile_name, tiles_for_bounds, write_label_tiles
from alosmap.synthetic._sample import (
    SAMPLE_SCENES,
    SceneSpec,
    generate_scenes,
    make_sample_data,
    sample_file_names,
    sha256_file,
)
from alosmap.synthetic._scene import (
    SCENE_NAME_RE,
    SIGMA0_DB,
    SceneGrid,
    SyntheticScene,
    class_sigma0,
    generate_scene,
    labels_on_grid,
    make_scene_grid,
    orbit_frame,
    scene_file_name,
    simulate_dn,
    utm_epsg,
)
from alosmap.synthetic._world import (
    FOREST_SHARES,
    LABEL_PIXEL_DEG,
    LABEL_PIXELS_PER_DEG,
    LAND_SHARES,
    LabelWorld,
    generate_label_world,
)

__all__ = [
    "FOREST_SHARES",
    "LABEL_PIXELS_PER_DEG",
    "LABEL_PIXEL_DEG",
    "LAND_SHARES",
    "SAMPLE_SCENES",
    "SCENE_NAME_RE",
    "SIGMA0_DB",
    "LabelWorld",
    "SceneGrid",
    "SceneSpec",
    "SyntheticScene",
    "class_sigma0",
    "generate_label_world",
    "generate_scene",
    "generate_scenes",
    "labels_on_grid",
    "make_sample_data",
    "make_scene_grid",
    "orbit_frame",
    "sample_file_names",
    "scene_file_name",
    "sha256_file",
    "simulate_dn",
    "tile_name",
    "tiles_for_bounds",
    "utm_epsg",
    "write_label_tiles",
]
