"""Shared fixtures: tiny GeoTIFF factory and small model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_SCENES = sorted((REPO / "sample_data").glob("IMG-HH-*.tif"))

UTM54 = CRS.from_epsg(32654)
DEFAULT_TRANSFORM = Affine(10.0, 0.0, 350000.0, 0.0, -10.0, 3910000.0)


@pytest.fixture
def make_geotiff(tmp_path):
    """Write ``array`` ([H, W] or [C, H, W]) as a GeoTIFF; return its path."""

    def make(
        array,
        name="scene.tif",
        *,
        crs=UTM54,
        transform=None,
        nodata=0,
        tags=None,
    ):
        a = np.asarray(array)
        if a.ndim == 2:
            a = a[None]
        count, h, w = a.shape
        path = tmp_path / name
        profile = {
            "driver": "GTiff",
            "width": w,
            "height": h,
            "count": count,
            "dtype": a.dtype,
            "nodata": nodata,
            "transform": transform
            or Affine(10.0, 0.0, 350000.0, 0.0, -10.0, 3910000.0),
        }
        if crs is not None:
            profile["crs"] = crs
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(a)
            if tags:
                ds.update_tags(**tags)
        return path

    return make


def _model_file(directory: Path, task: str, img_size: int = 256) -> Path:
    import torch

    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.spec import Radiometry, default_spec, save_model

    spec = default_spec(
        task,
        get_preset("tiny", img_size=img_size),
        radiometry=Radiometry(mean_db=-12.0, std_db=7.0),
        name=f"tiny-{task}-test",
    )
    torch.manual_seed(1)
    model = build_model(spec.arch).eval()
    return save_model(model, spec, directory / f"tiny-{task}.safetensors")


@pytest.fixture(scope="session")
def tiny_lulc_model(tmp_path_factory) -> Path:
    """An untrained tiny-preset LULC model file (256 px tiles)."""
    return _model_file(tmp_path_factory.mktemp("models"), "lulc")


@pytest.fixture(scope="session")
def tiny_water_model(tmp_path_factory) -> Path:
    """An untrained tiny-preset water model file (256 px tiles)."""
    return _model_file(tmp_path_factory.mktemp("models"), "water")


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> Path:
    """A synthetic 600 × 520 ALOS-2-like scene with no-data corners."""
    from alosmap.synthetic import generate_scene

    out = tmp_path_factory.mktemp("scene")
    return generate_scene(
        out, seed=5, width=600, height=520, write_label_tiles=False
    ).path
