"""`alosmap batch`: resume, shards and torchrun ranks, failures, records, STAC.

Scenes are mapped for real with the tiny test models; the crash is a real SIGKILL
of a running batch, and the two ranks are two gloo processes under torchrun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import rasterio
from conftest import SAMPLE_SCENES

from alosmap.errors import BatchError
from alosmap.national.batch import (
    Shard,
    effective_shard,
    plan_jobs,
    read_records,
    record_path,
    run_batch,
    shard_jobs,
)
from alosmap.runtime.probe import cpu_bf16_problem


@pytest.fixture(scope="module")
def small_scenes(tmp_path_factory):
    """Two small synthetic ALOS-2 scenes (320 × 320 px) a month apart."""
    from alosmap.synthetic import generate_scene

    out = tmp_path_factory.mktemp("scenes")
    return [
        generate_scene(
            out, seed=seed, width=320, height=320, date=date, write_label_tiles=False
        ).path
        for seed, date in ((11, "2022-09-12T02:42:14"), (12, "2022-10-10T02:42:06"))
    ]


def _error_lines(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("alosmap: error:")]
    assert "Traceback" not in err
    return lines


def _subprocess_env():
    # PYTHONFAULTHANDLER: SIGABRT makes a process print every thread's stack
    return dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1"
    )


def _wait(proc: subprocess.Popen, timeout: float) -> str:
    """``proc``'s stderr once it has ended; a test failure showing where each of its
    threads was when it had not ended within ``timeout`` seconds."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # the stacks, by PYTHONFAULTHANDLER
        try:
            err = proc.communicate(timeout=60)[1]
        finally:
            proc.kill()
        pytest.fail(f"still running after {timeout} s; its threads:\n{err[-6000:]}")


# -- shards ---------------------------------------------------------------------------


def test_shards_split_every_scene_exactly_once(tmp_path):
    scenes = [tmp_path / f"IMG-{i:02d}.tif" for i in range(11)]
    jobs = plan_jobs(reversed(scenes + scenes[:3]), tmp_path / "out", "lulc")
    assert [j.scene for j in jobs] == scenes  # sorted by output name, deduplicated
    assert jobs[0].output == tmp_path / "out" / "IMG-00_lulc.tif"
    for shards, world in ((1, 1), (1, 2), (3, 1), (3, 2), (2, 4)):
        taken = [
            j.key
            for i in range(shards)
            for rank in range(world)
            for j in shard_jobs(jobs, effective_shard(Shard(i, shards), rank, world))
        ]
        assert sorted(taken) == [j.key for j in jobs], (shards, world)
    assert Shard.parse("3/10") == Shard(3, 10)
    for bad in ("3", "10/3", "-1/2", "a/b", "1/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    # two different scenes would write the same map
    with pytest.raises(BatchError, match=r"both write IMG-00_lulc\.tif"):
        plan_jobs([scenes[0], tmp_path / "other" / scenes[0].name], tmp_path, "lulc")


def test_array_job_shards(small_scenes, tiny_lulc_model, tmp_path):
    out = tmp_path / "out"
    done = []
    for i in range(2):
        res = run_batch(
            small_scenes, out, model=tiny_lulc_model, shard=Shard(i, 2), stac=False
        )
        assert not res.failed and not res.skipped
        assert res.report.name.endswith(f"-shard-{i}-of-2.json")
        done += res.done
    assert sorted(done) == sorted(f"{s.stem}_lulc" for s in small_scenes)
    # a whole-list run afterwards finds everything done
    res = run_batch(small_scenes, out, model=tiny_lulc_model, stac=False)
    assert res.done == [] and len(res.skipped) == 2


def test_fingerprint_matches_records_of_earlier_versions(tiny_lulc_model):
    """Records written before InferenceOptions existed are still accepted."""
    from alosmap._fileio import sha256_file
    from alosmap.predict.options import InferenceOptions
    from alosmap.spec import load_spec

    spec = load_spec(tiny_lulc_model)
    sha = sha256_file(tiny_lulc_model)
    # the fingerprint dict batch records held before (same keys, order and values)
    earlier = {
        "task": "lulc",
        "model_sha256": sha,
        "tile": spec.tile_size,
        "overlap": 32,
        "input_units": "auto",
        "band": None,
        "confidence": True,
        "probabilities": False,
        "precision": None,
    }
    opts = InferenceOptions(model=tiny_lulc_model, overlap=32, confidence=True)
    fp = opts.for_model(spec, tiny_lulc_model.name).fingerprint(sha)
    assert list(fp.items()) == list(earlier.items())
    assert json.dumps(fp) == json.dumps(earlier)
    # batch size, backend, device, threads and compile do not change a map
    other = opts.replace(batch_size=3, threads=1, compile=True, device="cuda:1")
    assert other.for_model(spec, "m").fingerprint(sha) == fp


# -- failures, records, report, STAC ------------------------------------------------


def test_manifest_with_missing_and_broken_scenes(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    broken = tmp_path / "IMG-broken.tif"
    broken.write_text("not a GeoTIFF")
    manifest = tmp_path / "scenes.txt"
    rel = [os.path.relpath(s, tmp_path) for s in small_scenes]
    manifest.write_text(
        "# scenes of the test\n\n"
        + "\n".join([rel[0], "missing/IMG-gone.tif", broken.name, rel[1], rel[0]])
        + "\n"
    )
    out = tmp_path / "out"
    code, stdout, err = cli(
        "-q", "batch", "--manifest", manifest, "-o", out, "-m", tiny_lulc_model
    )
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and "2 of 4 scenes failed" in lines[0]
    maps = [out / f"{s.stem}_lulc.tif" for s in small_scenes]
    assert stdout.split() == [str(m) for m in maps]
    for m in maps:
        with rasterio.open(m) as ds:
            assert ds.count == 1  # a class map is one band
            assert ds.tags()["ALOSMAP_TASK"] == "lulc"
        # confidence by default, for mosaic, in its own file with its QGIS style
        with rasterio.open(m.with_name(f"{m.stem}_confidence.tif")) as ds:
            assert ds.tags()["ALOSMAP_PRODUCT"] == "confidence" and ds.nodata == 255
        assert m.with_suffix(".qml").is_file()
        assert m.with_name(f"{m.stem}_confidence.qml").is_file()
    report = json.loads(Path(lines[0].rsplit("see ", 1)[1]).read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (2, 0, 2)
    errors = {Path(f["scene"]).name: f["error"] for f in report["failures"]}
    assert "scene not found" in errors["IMG-gone.tif"]
    assert errors.get("IMG-broken.tif")
    assert report["km2_mapped"] > 0 and report["tiles"] > 0
    assert not list(out.glob(".*"))  # no temporary files left

    # records: what produced each map
    records = read_records(out)
    assert [r["key"] for r in records] == [m.stem for m in maps]
    rec = records[0]
    assert rec["output"] == maps[0].name and rec["size"] == maps[0].stat().st_size
    assert rec["model"] == tiny_lulc_model.name and len(rec["model_sha256"]) == 64
    assert rec["fingerprint"]["overlap"] == 64 and rec["fingerprint"]["confidence"]
    assert rec["confidence"] == f"{maps[0].stem}_confidence.tif"
    assert rec["acquired"] == "2022-09-12T02:42:14+00:00"

    # the STAC catalog describes the two maps
    import pystac

    cat = pystac.Catalog.from_file(out / "stac" / "catalog.json")
    items = sorted(cat.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == [m.stem for m in maps]
    item = items[0]
    assert item.datetime == datetime.fromisoformat("2022-09-12T02:42:14+00:00")
    with rasterio.open(small_scenes[0]) as ds:
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    bw, bs, be, bn = item.bbox
    assert w - 1e-3 <= bw < be <= e + 1e-3 and s - 1e-3 <= bs < bn <= n + 1e-3
    asset = item.assets["map"]
    assert Path(asset.get_absolute_href()).resolve() == maps[0].resolve()
    classes = asset.extra_fields["classification:classes"]
    assert [c["value"] for c in classes] == [*range(1, 10), 0]
    assert item.properties["alosmap:task"] == "lulc"

    # second run: the two maps are skipped, the two bad scenes fail again
    stamps = [m.stat().st_mtime_ns for m in maps]
    code, stdout, err = cli(
        "-q", "batch", "--manifest", manifest, "-o", out, "-m", tiny_lulc_model
    )
    assert code == 1 and "2 of 4 scenes failed" in _error_lines(err)[0]
    assert [m.stat().st_mtime_ns for m in maps] == stamps
    assert stdout.split() == [str(m) for m in maps]
    # only the good scenes: nothing to do, exit 0
    code, _, err = cli("batch", *small_scenes, "-o", out, "-m", tiny_lulc_model)
    assert code == 0, err
    assert "0 done, 2 skipped, 0 failed" in err


def test_other_model_options_are_not_mixed(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    out = tmp_path / "out"
    pattern = small_scenes[0].parent / "IMG-HH-*.tif"  # quoted glob, expanded here
    code, stdout, _ = cli("-q", "batch", pattern, "-o", out, "-m", tiny_lulc_model)
    assert code == 0 and len(stdout.split()) == 2
    maps = sorted(out.glob("*.tif"))
    stamps = [m.stat().st_mtime_ns for m in maps]
    overlap_32 = ("batch", *small_scenes, "-o", out, "-m", tiny_lulc_model)
    overlap_32 += ("--overlap", "32")
    code, _, err = cli("-q", *overlap_32)
    lines = _error_lines(err)
    assert code == 1 and len(lines) == 1
    assert "overlap 64 -> 32" in lines[0] and "--overwrite" in lines[0]
    assert [m.stat().st_mtime_ns for m in maps] == stamps  # nothing changed
    code, _, err = cli(*overlap_32, "--overwrite", "--no-stac")
    assert code == 0, err
    assert "2 done, 0 skipped" in err
    assert all(r["fingerprint"]["overlap"] == 32 for r in read_records(out))
    # a water batch with a LULC model is refused; a water model writes _water maps
    code, _, err = cli(
        "-q",
        "batch",
        *small_scenes,
        "-o",
        out,
        "--task",
        "water",
        "-m",
        tiny_lulc_model,
    )
    assert code == 1 and "is a lulc model, not water" in _error_lines(err)[0]
    assert cli("batch")[0] == 2  # neither SCENES nor --manifest
    assert cli("batch", *small_scenes, "-o", out, "--shard", "2/2")[0] == 2


@pytest.mark.skipif(
    cpu_bf16_problem() is not None,
    reason="bf16 is refused on this CPU (tests/runtime/test_precision.py covers that)",
)
def test_creation_options_are_part_of_the_fingerprint(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    # maps written with other --co are not reused silently, either way round
    out = tmp_path / "out"
    base = ("-q", "batch", *small_scenes, "-o", out, "-m", tiny_lulc_model, "--no-stac")
    code, _, err = cli(*base, "--co", "LEVEL=9")
    assert code == 0, err
    recs = read_records(out)
    assert all(r["fingerprint"]["creation_options"] == {"LEVEL": "9"} for r in recs)
    maps = sorted(out.glob("*.tif"))
    stamps = [m.stat().st_mtime_ns for m in maps]
    code, _, err = cli(*base, "--co", "LEVEL=9")  # the same options: reused
    assert code == 0 and [m.stat().st_mtime_ns for m in maps] == stamps, err
    for other in ([], ["--co", "COMPRESS=ZSTD"]):  # without, or other options
        code, _, err = cli(*base, *other)
        lines = _error_lines(err)
        assert code == 1 and len(lines) == 1, err
        assert "creation_options" in lines[0] and "--overwrite" in lines[0]
        assert [m.stat().st_mtime_ns for m in maps] == stamps  # nothing changed
    code, _, err = cli(*base, "--overwrite")  # remapped with the defaults
    assert code == 0, err
    assert all("creation_options" not in r["fingerprint"] for r in read_records(out))


def test_precision_reaches_the_runtime_and_the_fingerprint(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    out = tmp_path / "out"
    args = ("-q", "batch", *small_scenes, "-o", out, "-m", tiny_lulc_model)
    code, _, err = cli(*args, "--precision", "bf16", "--no-stac")
    assert code == 0, err
    recs = read_records(out)
    assert len(recs) == 2
    assert all(r["fingerprint"]["precision"] == "bf16" for r in recs)
    for path in sorted(out.glob("*.tif")):
        with rasterio.open(path) as ds:
            assert json.loads(ds.tags()["ALOSMAP_PARAMS"])["precision"] == "bf16"
    # the same batch in fp32 would mix precisions in one directory: refused
    code, _, err = cli(*args, "--precision", "fp32", "--no-stac")
    lines = _error_lines(err)
    assert code == 1 and len(lines) == 1 and "precision bf16 -> fp32" in lines[0]


def test_without_pystac_the_batch_still_works(
    small_scenes, tiny_water_model, tmp_path, cli, monkeypatch
):
    monkeypatch.setitem(sys.modules, "pystac", None)  # as if not installed
    out = tmp_path / "out"
    code, stdout, err = cli("batch", small_scenes[0], "-o", out, "-m", tiny_water_model)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "STAC" in ln]
    assert len(notes) == 1 and "pip install 'alosmap[stac]'" in notes[0]
    assert stdout.strip() == str(out / f"{small_scenes[0].stem}_water.tif")
    assert not (out / "stac").exists()
    assert record_path(out, f"{small_scenes[0].stem}_water").is_file()


# -- resume after a crash, two ranks ------------------------------------------------


#: ``alosmap batch`` whose model, on scene number ``sys.argv[1]`` (1-based), says
#: READY on stdout and then waits until the process is interrupted or killed: the
#: test chooses the moment of its signal by an event, whatever the machine's speed
#: or load.
#:
#: It waits by reading a pipe that Python's C signal handler writes to
#: (``signal.set_wakeup_fd``), not on a lock: a lock wait without a timeout is
#: interrupted only if the signal reaches the main thread inside the wait. One that
#: lands just before the wait, or in another thread (the scene finishing in the
#: background), is run by Python at its next bytecode, which a lock wait never
#: reaches: seen twice in CI, the main thread still waiting 300 s after SIGINT.
#: SIGINT is set to raise ``KeyboardInterrupt``, as in a program started from a
#: terminal, whatever the test runner passes on (a background job ignores it, and
#: Python then keeps it ignored).
_BLOCK_ON_SCENE = """
import os, signal, sys
from alosmap.cli.main import run
from alosmap.predict import pipeline

signal.signal(signal.SIGINT, signal.default_int_handler)
real_stream, scenes = pipeline.stream_scene, []
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)  # a byte here for every signal, whichever thread

class Blocking:
    def __init__(self, rt):
        self._rt = rt
    def __getattr__(self, name):
        return getattr(self._rt, name)
    def run(self, batch):
        print("READY", flush=True)
        while True:  # SIGINT raises KeyboardInterrupt here, in or after the read
            os.read(wake_r, 1)

def stream_scene(scene, *args, **kw):
    scenes.append(scene)
    if len(scenes) == block_on:
        kw["runtime"] = Blocking(kw["runtime"])
    return real_stream(scene, *args, **kw)

block_on = int(sys.argv[1])
pipeline.stream_scene = stream_scene
sys.argv = ["alosmap", *sys.argv[2:]]
run()
"""


def _batch_blocked_on(scene: int, out: Path, model: Path) -> subprocess.Popen:
    """Start ``alosmap -q batch SAMPLE_SCENES`` whose model blocks on scene ``scene``
    (1-based); returns once it blocks (READY read) or has ended."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", _BLOCK_ON_SCENE, str(scene), "-q", "batch"),
            *map(str, SAMPLE_SCENES),
            *("-o", str(out), "-m", str(model), "--overlap", "0"),
        ],
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = proc.stdout.readline()  # blocks until the model waits (or the end)
    if ready.strip() != "READY":
        err = _wait(proc, 300)
        pytest.fail(f"batch did not reach scene {scene}: {ready!r} {err[-2000:]}")
    return proc


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_scenes_and_leaves_no_partial_one(
    tiny_lulc_model, tmp_path
):
    """Ctrl-C while the model runs on scene 2 (scene 1 maybe finishing in the
    background): scene 1 is completed and recorded, scene 2 leaves nothing, exit
    code 130."""
    out = tmp_path / "out"
    maps = [out / f"{s.stem}_lulc.tif" for s in SAMPLE_SCENES]
    proc = _batch_blocked_on(2, out, tiny_lulc_model)
    proc.send_signal(signal.SIGINT)
    err = _wait(proc, 300)
    assert proc.returncode == 130, err[-2000:]
    assert maps[0].is_file() and record_path(out, maps[0].stem).is_file()
    assert not maps[1].exists() and not record_path(out, maps[1].stem).exists()
    assert not maps[2].exists()
    assert not list(out.glob(".*lulc*"))  # no temporaries of any scene


@pytest.mark.slow
def test_resume_after_a_crash_redoes_only_the_unfinished_scene(
    tiny_lulc_model, tmp_path
):
    out = tmp_path / "out"
    maps = [out / f"{s.stem}_lulc.tif" for s in SAMPLE_SCENES]
    proc = _batch_blocked_on(3, out, tiny_lulc_model)
    # kill -9 while the third scene's map is being written, once the second scene
    # (finishing in the background meanwhile: a state reached whatever the load)
    # is recorded
    deadline = time.monotonic() + 300
    while not record_path(out, maps[1].stem).exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "scene 2 was never recorded"
        time.sleep(0.01)
    leftovers = list(out.glob(f".{maps[2].name}.*"))
    proc.send_signal(signal.SIGKILL)
    err = _wait(proc, 60)
    assert leftovers, err[-2000:]
    assert proc.returncode == -signal.SIGKILL
    # the unfinished scene has no finished-looking map and no record
    assert maps[0].is_file() and maps[1].is_file() and not maps[2].exists()
    assert not record_path(out, maps[2].stem).exists()
    stamps = [m.stat().st_mtime_ns for m in maps[:2]]

    res = run_batch(SAMPLE_SCENES, out, model=tiny_lulc_model, overlap=0, stac=False)
    assert res.done == [maps[2].stem]
    assert res.skipped == [maps[0].stem, maps[1].stem]
    assert [m.stat().st_mtime_ns for m in maps[:2]] == stamps
    assert maps[2].is_file() and record_path(out, maps[2].stem).is_file()
    assert not list(out.glob(".*"))  # the leftovers were cleaned up


@pytest.mark.slow
def test_two_ranks_map_every_scene_exactly_once(tiny_lulc_model, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node", "2", "-m", "alosmap", "-q", "batch"),
            *map(str, SAMPLE_SCENES),
            *("-o", str(out), "-m", str(tiny_lulc_model)),
            *("--threads", "1", "--overlap", "0"),
        ],
        capture_output=True,
        text=True,
        env=_subprocess_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    keys = [f"{s.stem}_lulc" for s in SAMPLE_SCENES]
    # rank 0 prints every map once, after gathering both ranks
    assert res.stdout.split() == [str(out / f"{k}.tif") for k in keys]
    records = read_records(out)
    assert [r["key"] for r in records] == keys
    # scene k (sorted) belongs to rank k mod 2
    assert [r["rank"] for r in records] == [0, 1, 0]
    reports = list((out / "_alosmap" / "reports").glob("*.json"))
    assert len(reports) == 1  # one merged report
    report = json.loads(reports[0].read_text())
    assert report["world_size"] == 2 and report["mapped"] == keys
    assert (report["done"], report["skipped"], report["failed"]) == (3, 0, 0)
    assert (out / "stac" / "catalog.json").is_file()


def test_outputs_that_are_scenes_are_refused_before_any_work(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    out = tmp_path / "out"
    out.mkdir()
    a = out / "a.tif"
    a_map = out / "a_lulc.tif"  # a scene, and the map name of scene a
    a.write_bytes(small_scenes[0].read_bytes())
    a_map.write_bytes(small_scenes[1].read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, err = cli(
        "batch", a, a_map, "-o", out, "-m", tiny_lulc_model, "--overwrite"
    )
    assert code == 1 and stdout == ""
    lines = _error_lines(err)
    assert len(lines) == 1 and "is the input" in lines[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_confidence_file_missing_redoes_the_scene(
    small_scenes, tiny_lulc_model, tmp_path
):
    out = tmp_path / "out"
    res = run_batch(small_scenes[:1], out, model=tiny_lulc_model, stac=False)
    assert len(res.done) == 1
    conf = out / f"{small_scenes[0].stem}_lulc_confidence.tif"
    conf.unlink()
    res = run_batch(small_scenes[:1], out, model=tiny_lulc_model, stac=False)
    assert len(res.done) == 1 and conf.is_file()


def test_a_directory_is_a_usage_error_with_the_glob_to_use(
    small_scenes, tiny_lulc_model, tmp_path, cli
):
    """`alosmap batch DIR` stops at once (exit 2) saying how to name its scenes,
    instead of one "scene not found: DIR" failure in a report."""
    folder = small_scenes[0].parent
    out = tmp_path / "out"
    code, _, err = cli("batch", folder, "-o", out, "-m", tiny_lulc_model)
    text = "".join(err.replace("│", "").split())  # the error box, unwrapped
    assert code == 2, err
    assert "isadirectory" in text and "IMG-HH-*.tif" in text and folder.name in text
    assert not out.exists()
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{small_scenes[0]}\n{folder}\n")
    code, _, err = cli(
        "batch", "--manifest", manifest, "-o", out, "-m", tiny_lulc_model
    )
    text = "".join(err.replace("│", "").split())
    assert code == 2 and "isadirectory" in text and not out.exists()


def test_record_area_is_the_stats_area_on_a_lonlat_map(
    make_geotiff, tiny_lulc_model, tmp_path
):
    """One owner of pixel areas: a record's ``area_km2`` is ``alosmap stats``'."""
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS

    from alosmap.national.stats import class_areas

    rng = np.random.default_rng(5)
    dn = rng.integers(1500, 9000, size=(300, 280), dtype=np.uint16)
    dn[:40, :50] = 0  # no data is not area
    # 0.002° pixels from 60.3° N down to 59.7° N: areas shrink along the rows
    scene = make_geotiff(
        dn,
        name="IMG-HH-lonlat.tif",
        crs=CRS.from_epsg(4326),
        transform=Affine(0.002, 0, 139.0, 0, -0.002, 60.3),
        tags={"SYNTHETIC": "true"},
    )
    out = tmp_path / "out"
    res = run_batch([scene], out, model=tiny_lulc_model, stac=False)
    assert not res.failed
    (rec,) = read_records(out)
    stats = class_areas(out / rec["output"])
    assert "ellipsoid" in stats.method
    assert rec["area_km2"] == round(stats.mapped_m2 / 1e6, 6)
    assert rec["valid_pixels"] == stats.mapped_pixels == int((dn != 0).sum())
