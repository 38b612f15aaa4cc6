"""How scenes are read: whole blocks once (RowBuffer), and the block sample."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import DEFAULT_TRANSFORM, UTM54
from rasterio.windows import Window

import alosmap.io.scene as scene_mod
from alosmap.io.scene import Scene
from alosmap.predict.tiles import StripSource
from alosmap.radiometry import Radiometry


def _tiled(path, dn, block=128):
    profile = {
        "driver": "GTiff",
        "width": dn.shape[1],
        "height": dn.shape[0],
        "count": 1,
        "dtype": dn.dtype,
        "nodata": 0,
        "crs": UTM54,
        "transform": DEFAULT_TRANSFORM,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(dn, 1)
    return path


@pytest.mark.parametrize("crop", [None, Window(37, 101, 500, 600)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float64])  # float64: read as float32
def test_strips_come_from_whole_blocks_read_once(tmp_path, monkeypatch, crop, dtype):
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 5000, size=(900, 700)).astype(dtype)
    if dtype == np.float64:
        dn = np.log10(dn) * 20 - 83  # σ0 dB
    dn[300:360] = 0
    path = _tiled(tmp_path / "s.tif", dn)
    calls: list[tuple[int, int]] = []
    real = Scene.read_raw

    def spy(self, row, height, out=None):
        calls.append((row, height))
        return real(self, row, height, out)

    with Scene(path, Radiometry()) as whole:
        sc = whole if crop is None else whole.crop(crop)
        offset = 0 if crop is None else crop.row_off
        h = sc.info.height
        direct = [real(sc, r, 64) for r in StripSource(sc, Radiometry(), 64, 16).rows]
        monkeypatch.setattr(Scene, "read_raw", spy)
        source = StripSource(sc, Radiometry(), 64, 16)
        # copies: a strip's arrays are views of buffers the next read reuses
        got = [
            tuple(a.copy() for a in source._rows.get(r, r + min(64, h)))
            for r in source.rows
        ]
    # the same values and validity as reading every strip on its own
    for (a, va), (b, vb) in zip(got, direct, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    # every row read once, in reads that end on the file's block boundaries
    assert sum(n for _, n in calls) == h
    assert [r for r, _ in calls] == sorted(r for r, _ in calls)
    for row, n in calls[:-1]:
        assert (row + offset + n) % 128 == 0


def test_large_files_are_sampled_by_blocks(tmp_path, monkeypatch):
    """Without overviews, a large file's checks read whole blocks, not all of it."""
    rng = np.random.default_rng(1)
    dn = rng.integers(2000, 9000, size=(1024, 1024), dtype=np.uint16)
    path = _tiled(tmp_path / "big.tif", dn)
    monkeypatch.setattr(scene_mod, "FULL_SAMPLE_PIXELS", 100_000)
    monkeypatch.setattr(scene_mod, "SAMPLE_PIXELS", 60_000)
    reads: list[object] = []
    real = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        reads.append(kwargs.get("window") or kwargs.get("out_shape"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    with Scene(path, Radiometry()) as sc:
        assert sc.units == "dn"
    windows = [w for w in reads if isinstance(w, Window)]
    assert reads and len(windows) == len(reads)  # no decimated read of the whole
    assert 4 <= len(windows) <= 64
    assert all(w.width == 128 and w.height == 128 for w in windows)
    assert all(w.col_off % 128 == 0 and w.row_off % 128 == 0 for w in windows)


def test_block_sample_falls_back_when_it_misses_the_data(tmp_path, monkeypatch):
    """Data only where the sampled blocks are not: the decimated read finds it."""
    dn = np.zeros((1024, 1024), dtype=np.uint16)
    dn[600:700, 600:700] = 3000  # between the sampled blocks
    path = _tiled(tmp_path / "sparse.tif", dn)
    monkeypatch.setattr(scene_mod, "FULL_SAMPLE_PIXELS", 100_000)
    monkeypatch.setattr(scene_mod, "SAMPLE_PIXELS", 20_000)
    with Scene(path, Radiometry()) as sc:
        blocks = sc._valid_values(sc._block_sample())
        assert blocks.size == 0  # the blocks alone would say "no valid pixels"
        assert sc._sample().size > 0
        assert sc.units == "dn"
