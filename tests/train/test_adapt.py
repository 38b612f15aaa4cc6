"""Label-free adaptation through ``alosmap train adapt``.

The new normalisation equals a direct computation over the scenes' valid pixels,
the BatchNorm statistics change and equal the average over the tiles, every other
tensor stays bit-identical, the spec carries the provenance, and the inputs are
never written over.
"""

import hashlib
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from alosmap.cli.main import app
from alosmap.spec import load_spec
from alosmap.train.adapt import BN_STATS, RunningStats, recompute_batchnorm

runner = CliRunner()


def _adapt(*args):
    return runner.invoke(app, ["train", "adapt", *map(str, args)])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained tiny water model on 64-px tiles (its BatchNorm at 0/1)."""
    out = tmp_path_factory.mktemp("adapt") / "tiny64.safetensors"
    res = runner.invoke(
        app,
        ["train", "init", "--preset", "tiny", "--tile-size", "64", "--task", "water",
         "-o", str(out), "--seed", "4"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def _scene(make_geotiff, name, shape, seed, offset_db, bands=1):
    """float32 σ0 dB with NaN no data: water and land blocks, shifted by an offset."""
    rng = np.random.default_rng(seed)
    h, w = shape
    db = np.where(rng.random((h // 16 + 1, w // 16 + 1)) < 0.3, -22.0, -8.0)
    db = np.kron(db, np.ones((16, 16)))[:h, :w] + rng.normal(0, 3, (h, w))
    db = (db + offset_db).astype(np.float32)
    db[:20, :30] = np.nan  # a no-data corner
    db[5, 40] = 35.0  # clipped to 20 like model input
    data = np.stack([db - 7.0, db]) if bands == 2 else db
    return make_geotiff(data, name, nodata=np.nan), db


def _direct_stats(*arrays):
    v = np.concatenate([a[np.isfinite(a)].astype(np.float64) for a in arrays])
    v = np.clip(v, -40.0, 20.0)
    return v.size, v.mean(), v.std()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adapt_normalisation_batchnorm_and_provenance(model, make_geotiff, tmp_path):
    a, db_a = _scene(make_geotiff, "a.tif", (150, 200), 1, 4.0)
    b, db_b = _scene(make_geotiff, "b.tif", (130, 97), 2, 4.0)
    out = tmp_path / "adapted.safetensors"
    before = _sha(model)
    res = _adapt(model, "--images", a, b, "-o", out, "--max-tiles", "6",
                 "--batch-size", "4")  # fmt: skip
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.stdout.strip() == str(out)
    assert _sha(model) == before

    spec, src = load_spec(out), load_spec(model)
    n, mean, std = _direct_stats(db_a, db_b)
    assert spec.radiometry.mean_db == pytest.approx(mean, rel=1e-9)
    assert spec.radiometry.std_db == pytest.approx(std, rel=1e-9)
    assert spec.radiometry.units == "db" and spec.radiometry.band == 1
    assert spec.radiometry.clip_db == src.radiometry.clip_db
    p = spec.provenance
    assert p["adapt_pixels"] == str(n) and p["adapt_tiles"] == "6"
    assert p["adapted_from"] == f"{model.name} ({src.name})"
    assert p["adapted_from_sha256"] == before and p["command"] == "alosmap train adapt"
    # the scenes by name and SHA-256, never by this machine's paths
    assert p["adapt_scenes"] == "a.tif; b.tif"
    assert p["adapt_scenes_sha256"] == f"{_sha(a)}; {_sha(b)}"
    assert {"adapt_date", "alosmap_version"} <= set(p)
    assert spec.name.endswith("-adapted") and spec.legend == src.legend

    old, new = load_file(model), load_file(out)
    stats = [k for k in old if k.endswith(("running_mean", "running_var"))]
    others = [k for k in old if not k.endswith(BN_STATS)]
    assert stats and all(not torch.equal(old[k], new[k]) for k in stats)
    assert others and all(torch.equal(old[k], new[k]) for k in others)
    assert "encoder.patch_embed.proj.weight" in others
    assert "decoder.bottleneck.bn.weight" in others  # BN affine weights too


def test_only_one_of_the_two(model, make_geotiff, tmp_path):
    a, db = _scene(make_geotiff, "a.tif", (140, 140), 3, -5.0)
    old = load_file(model)
    res = _adapt(model, "--images", a, "-o", tmp_path / "n.safetensors", "--no-bn")
    assert res.exit_code == 0, res.output
    new = load_file(tmp_path / "n.safetensors")
    assert all(torch.equal(old[k], new[k]) for k in old)
    spec = load_spec(tmp_path / "n.safetensors")
    assert spec.radiometry.mean_db == pytest.approx(_direct_stats(db)[1])
    assert spec.provenance["adapt_tiles"] == "0"

    res = _adapt(model, a, "-o", tmp_path / "b.safetensors", "--no-norm")
    assert res.exit_code == 0, res.output  # scenes as arguments work too
    spec = load_spec(tmp_path / "b.safetensors")
    assert spec.radiometry == load_spec(model).radiometry
    new = load_file(tmp_path / "b.safetensors")
    assert not torch.equal(
        old["decoder.bottleneck.bn.running_mean"],
        new["decoder.bottleneck.bn.running_mean"],
    )

    res = _adapt(model, a, "-o", tmp_path / "x.safetensors", "--no-bn", "--no-norm")
    assert res.exit_code == 1 and "nothing to adapt" in str(res.exception)


def test_bad_input_and_outputs(model, make_geotiff, tmp_path):
    two, _ = _scene(make_geotiff, "two.tif", (140, 140), 5, 0.0, bands=2)
    res = _adapt(model, "--images", two, "-o", tmp_path / "o.safetensors")
    assert res.exit_code == 1 and "--band N" in str(res.exception)
    res = _adapt(
        model, "--images", two, "--band", "2", "-o", tmp_path / "o.safetensors"
    )
    assert res.exit_code == 0, res.output
    assert load_spec(tmp_path / "o.safetensors").radiometry.band == 2
    # never over an input, never over an output without --overwrite
    res = _adapt(model, "--images", two, "--band", "2", "-o", model, "--overwrite")
    assert res.exit_code == 1 and "refusing to write over an input" in str(
        res.exception
    )
    res = _adapt(
        model, "--images", two, "--band", "2", "-o", tmp_path / "o.safetensors"
    )
    assert res.exit_code == 1 and re.search("exists", str(res.exception))
    noise = np.random.default_rng(0).normal(-10, 2, (20, 20)).astype(np.float32)
    tiny = make_geotiff(noise, "tiny.tif", nodata=None)
    res = _adapt(model, "--images", tiny, "-o", tmp_path / "t.safetensors")
    assert res.exit_code == 1 and "tile" in str(res.exception)
    res = _adapt(model, "-o", tmp_path / "none.safetensors")
    assert res.exit_code == 2


def test_batchnorm_average_over_batches():
    """momentum=None: the running mean is the average of the batches' means."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    conv = net[0].weight.detach().clone()
    batches = [torch.randn(4, 1, 8, 8) * (i + 1) + i for i in range(3)]
    assert recompute_batchnorm(net, batches) == 1
    with torch.no_grad():
        feats = [net[0](x) for x in batches]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, want_mean)
    torch.testing.assert_close(bn.running_var, want_var)
    assert torch.equal(net[0].weight, conv) and not net.training
    assert bn.momentum == 0.1  # restored


def test_running_stats_merge():
    rng = np.random.default_rng(0)
    parts = [rng.normal(5, 3, n) for n in (1, 17, 1000, 3)]
    s = RunningStats()
    for p in parts:
        s.add(p)
    s.add(np.array([]))
    allv = np.concatenate(parts)
    assert s.n == allv.size
    assert s.mean == pytest.approx(allv.mean(), rel=1e-12)
    assert s.std == pytest.approx(allv.std(), rel=1e-12)
