"""Shared fixtures: the CLI runner, tiny GeoTIFF factory and small model files."""

from __future__ import annotations

import logging
import sys
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


def _landcover3():
    from alosmap.classes import ClassInfo, Legend

    return Legend(
        "landcover3",
        "Land cover, 3 classes",
        (
            ClassInfo(10, "Open water", (31, 95, 191), (1,)),
            ClassInfo(20, "Vegetation", (40, 160, 60), (2,)),
            ClassInfo(30, "Settlement", (200, 50, 50), (3,)),
        ),
        nodata=0,
    )


#: A user's own legend (as a legend file would give it): codes 10/20/30, 0 = no data.
LANDCOVER3 = _landcover3()


def write_raster(path, array, *, crs, transform, nodata, tags=None):
    """Write ``array`` ([H, W] or [C, H, W]) as a GeoTIFF (no CRS when None)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    count, h, w = a.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": count,
        "dtype": a.dtype,
        "nodata": nodata,
        "transform": transform,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(a)
        if tags:
            ds.update_tags(**tags)
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``alosmap ARGS…`` through the real entry point; return (code, out, err)."""
    from alosmap.cli.main import run

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["alosmap", *map(str, args)])
        # the command configures the root logger (-q: ERROR); later tests must not
        # inherit that, whatever order they run in
        root = logging.getLogger()
        level, handlers = root.level, root.handlers[:]
        try:
            run()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        finally:
            root.setLevel(level)
            root.handlers[:] = handlers
            logging.captureWarnings(False)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


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
        return write_raster(
            tmp_path / name,
            array,
            crs=crs,
            transform=transform or DEFAULT_TRANSFORM,
            nodata=nodata,
            tags=tags,
        )

    return make


def nearest_onto(source, shape, transform, crs, dtype=np.uint8):
    """Band 1 of the open raster ``source`` resampled (nearest) onto a grid; 0 off."""
    from rasterio.warp import Resampling, reproject

    out = np.zeros(shape, dtype)
    reproject(
        rasterio.band(source, 1),
        out,
        dst_transform=transform,
        dst_crs=crs,
        resampling=Resampling.nearest,
    )
    return out


def write_map(path, codes, spec, *, crs=UTM54, transform=DEFAULT_TRANSFORM, **kw):
    """Write ``codes`` as a map of ``spec`` with the real writer; the final path.

    ``kw``: more :class:`~alosmap.io.writer.MapWriter` arguments; ``confidence=``
    an array also asks for (and writes) the confidence file.
    """
    from alosmap.io.writer import MapWriter

    codes = np.asarray(codes)
    conf = kw.pop("confidence", None)
    with MapWriter(
        path,
        width=codes.shape[1],
        height=codes.shape[0],
        crs=crs,
        transform=transform,
        spec=spec,
        confidence=conf is not None,
        **kw,
    ) as w:
        w.write_rows(0, codes, conf)
        return w.finalize()


def tiny_model(legend, img_size: int = 256, *, name: str):
    """An untrained tiny model (seed 1) of ``legend`` (task or Legend), and its spec."""
    import torch

    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.spec import Radiometry, default_spec

    spec = default_spec(
        legend,
        get_preset("tiny", img_size=img_size),
        radiometry=Radiometry(mean_db=-12.0, std_db=7.0),
        name=name,
    )
    torch.manual_seed(1)
    return build_model(spec.arch).eval(), spec


def _model_file(directory: Path, task: str, img_size: int = 256) -> Path:
    from alosmap.spec import save_model

    model, spec = tiny_model(task, img_size, name=f"tiny-{task}-test")
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


#: σ0 (dB) per JAXA code in :func:`write_training_data` (distinct, so learnable).
TRAINING_SIGMA0 = {1: -24.0, 2: 0.0, 4: -12.0, 5: -16.0, 8: -7.0}


def write_training_data(
    root: Path,
    *,
    splits=(("train", 16), ("val", 4), ("test", 4)),
    size: int = 64,
    seed: int = 0,
    noise_db: float = 1.0,
    mean_db: float | None = None,
    std_db: float | None = None,
) -> Path:
    """A tiny dataset in the ``train/data.py`` format (``alosmap-dataset/1``).

    Each patch is a 4×4 grid of blocks of JAXA codes from :data:`TRAINING_SIGMA0`
    (water, built-up, cropland, grassland, EBF), σ0 = the code's dB + Gaussian
    noise; some patches have a no-data corner (NaN σ0, label 0). Statistics in
    ``dataset.json`` come from the train split unless ``mean_db``/``std_db`` are
    given.
    """
    from alosmap.classes import jaxa_to_training
    from alosmap.train.dataset.record import (
        MANIFEST_FIELDS,
        DatasetRecord,
        PatchRecord,
        write_dataset,
    )

    rng = np.random.default_rng(seed)
    codes = np.array(sorted(TRAINING_SIGMA0))
    n = sum(k for _, k in splits)
    labels = np.zeros((n, size, size), np.uint8)
    sar = np.zeros((n, size, size), np.float32)
    records = []
    i = 0
    for split, count in splits:
        for _ in range(count):
            blocks = rng.choice(codes, size=(4, 4))
            lab = np.kron(blocks, np.ones((size // 4, size // 4), np.uint8))
            db = np.vectorize(TRAINING_SIGMA0.get)(lab).astype(np.float32)
            db += rng.normal(0.0, noise_db, db.shape).astype(np.float32)
            if i % 5 == 3:  # a no-data corner
                lab[: size // 4, : size // 4] = 0
                db[: size // 4, : size // 4] = np.nan
            labels[i], sar[i] = lab, db
            hist = np.bincount(lab.ravel(), minlength=15).tolist()
            valid = float(np.isfinite(db).mean())
            records.append(
                PatchRecord(i, split, "synthetic", "2024-09-01", 0, 0, valid, hist)
            )
            i += 1
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "sar_db.npy", sar.astype(np.float16))
    np.save(root / "labels.npy", labels)
    train = [r.index for r in records if r.split == "train"]
    tr_db = sar[train][np.isfinite(sar[train])]
    counts = {}
    for task, k in (("lulc", 9), ("water", 2)):
        y = jaxa_to_training(labels[train], task)
        counts[task] = np.bincount(y[y != 255].ravel(), minlength=k)[:k].tolist()
    mean = float(tr_db.mean()) if mean_db is None else mean_db
    std = float(tr_db.std()) if std_db is None else std_db
    record = DatasetRecord.of_jaxa_codes(
        size, (mean, std, "train"), counts, build={}, summary={}
    )
    write_dataset(root, record, records, MANIFEST_FIELDS, "")
    return root


@pytest.fixture
def make_training_data(tmp_path):
    """Factory: ``make_training_data(name="data", **kw)`` → a tiny dataset dir."""

    def make(name: str = "data", **kw) -> Path:
        return write_training_data(tmp_path / name, **kw)

    return make


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size)``: a small tmpfs (e.g. ``"1m"``) to fill up; unmounted after.

    Needs root and ``mount``; the test is skipped where mounting is not allowed.
    """
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            capture_output=True,
            check=False,
        )
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def dead_pid() -> int:
    """The id of a process that has ended (what a killed run leaves in temp names)."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
