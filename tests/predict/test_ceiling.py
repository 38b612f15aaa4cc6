"""``alosmap bench --ceiling``: the pipeline with a zero-cost model."""

from __future__ import annotations

import json

from alosmap.predict.ceiling import HOST_STAGES, run_ceiling
from alosmap.predict.stages import StageClock


def test_ceiling_measures_every_stage(tmp_path):
    r = run_ceiling(700, tmp_path, batch_size=4, confidence=True, probabilities=True)
    assert r.tiles == 16 and r.classes == 9 and r.device == "cpu"
    assert r.tiles_per_s > 0 and r.peak_rss_mb > 0 and r.peak_device_mb is None
    ms = r.stages_ms_per_tile
    assert list(ms) == list(StageClock.STAGES)
    for stage in ("read", "radiometry", "cut", "blend", "finish", "write", "cog"):
        assert ms[stage] > 0, stage
    assert ms["h2d"] == 0 and ms["d2h"] == 0  # nothing moves on the CPU
    host_ms = sum(ms[s] for s in HOST_STAGES)
    assert abs(1000 / r.host_tiles_per_s - host_ms) < 1e-6 * host_ms + 1e-9


def test_ceiling_cli_json_and_text(cli):
    code, out, err = cli(
        "bench", "--ceiling", "--size", "600", "--task", "water", "--json"
    )
    assert code == 0, err
    c = json.loads(out)["ceiling"]
    assert c["classes"] == 1 and c["size"] == 600 and c["tiles"] == 9
    assert set(c["stages_ms_per_tile"]) == set(StageClock.STAGES)
    code, out, err = cli("bench", "--ceiling", "--size", "600")
    assert code == 0, err
    assert "tiles/s" in out and "host-side" in out and "blend" in out


def test_ceiling_cli_usage_errors(cli):
    code, _, err = cli("bench", "--ceiling", "--task", "forest")
    assert code == 2 and "--task" in err
    code, _, err = cli("bench", "--ceiling", "--device", "cuda:x")
    assert code != 0 and "cuda:x" in err


def test_ceiling_on_a_missing_gpu_is_one_line(cli):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    code, out, err = cli("bench", "--ceiling", "--device", "cuda", "--size", "600")
    assert code == 1 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "PyTorch sees no CUDA GPU" in lines[0]


def test_ceiling_paths_in_cpu_seconds_with_stage_shares(tmp_path):
    """The host path (NumPy out) and the torch CPU path; shares of the CPU time."""
    from alosmap.predict.guard import ceiling_child

    host = ceiling_child(tmp_path, size=700, arrays="numpy", engine="numpy")
    assert host["arrays"] == "numpy" and host["engine"] == "numpy"
    assert host["tiles"] == 16 and host["tiles_per_cpu_s"] > 0
    assert host["cpu_seconds"] > 0
    share = host["cpu_share"]
    assert set(share) == {*StageClock.STAGES, "other"}
    assert abs(sum(share.values()) - 1.0) < 1e-6
    for stage in ("read", "blend", "finish", "cog"):
        assert share[stage] > 0, stage
    dev = run_ceiling(700, tmp_path, arrays="torch", engine="torch")
    assert dev.engine == "torch" and dev.tiles == 16 and dev.tiles_per_cpu_s > 0


def test_ceiling_cli_paths(cli):
    code, out, err = cli("bench", "--ceiling", "--size", "600", "--path", "torch-cpu")
    assert code == 0, err
    assert "tiles per CPU-second" in out and "model output torch" in out
    assert "finish" in out and "cog" in out and "%" in out
    code, _, err = cli("bench", "--ceiling", "--path", "gpu")
    assert code == 2 and "--path" in err


def test_ceiling_builds_its_cogs_with_the_creation_options(tmp_path):
    import rasterio

    from alosmap.io.cog_options import creation_options

    with creation_options(["COMPRESS=ZSTD"]):
        r = run_ceiling(600, tmp_path, batch_size=4)
    assert r.creation == {"COMPRESS": "ZSTD"}
    with rasterio.open(tmp_path / "ceiling_map.tif") as ds:
        assert ds.compression.name.lower() == "zstd"
    r = run_ceiling(600, tmp_path, batch_size=4)
    assert r.creation == {}
    with rasterio.open(tmp_path / "ceiling_map.tif") as ds:
        assert ds.compression.name.lower() == "deflate"


def test_ceiling_cli_creation_options(cli):
    code, out, err = cli(
        "bench", "--ceiling", "--size", "600", "--co", "level=1", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["ceiling"]["creation"] == {"LEVEL": "1"}
    code, out, err = cli("bench", "--ceiling", "--size", "600", "--co", "LEVEL=1")
    assert code == 0, err
    assert "COG options LEVEL=1" in out.splitlines()[0]
    # checked as predict's --co, before any work
    code, out, err = cli("bench", "--ceiling", "--co", "OVERVIEW_RESAMPLING=MODE")
    assert code == 2 and out == "" and "OVERVIEW_RESAMPLING" in err
    # the end-to-end runs write predict's defaults: refused, not ignored
    code, out, err = cli("bench", "--co", "LEVEL=1", "--size", "0")
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--co is for --ceiling" in lines[0]
