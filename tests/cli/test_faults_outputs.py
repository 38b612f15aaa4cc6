"""Faults around the outputs, through the real entry point: one line, the usual exit
code (1 failure, 143 SIGTERM), nothing left behind, nothing replaced.

* two runs writing the same map (an output appears while a run writes it);
* SIGTERM while a map is being written (``predict`` and ``batch``);
* a full disk with ``--confidence --probabilities`` (``predict`` and ``batch``);
* a JPEG quicklook (``--preview p.jpg``) and a suffix that is no image format;
* messages in the command line's words (``--overwrite``, no ``overwrite=True``).

Every moment that matters is chosen by an event (a patched function reached, a
line read from a pipe), never by time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alosmap import _fileio
from alosmap._fileio import atomic_write
from alosmap.errors import OutputExistsError
from alosmap.io.writer import MapWriter


def _one_error_line(err: str) -> str:
    """The only line of ``err``: an ``alosmap: error:`` line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), err
    return lines[0]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _hidden(directory: Path) -> list[str]:
    """Names of the hidden files (temporaries) anywhere under ``directory``."""
    return sorted(str(p) for p in directory.rglob(".*"))


# ------------------------------------------------- an output appears meanwhile
def test_a_map_that_appears_meanwhile_is_kept_and_the_run_leaves_nothing(
    cli, small_scene, tiny_lulc_model, tmp_path, monkeypatch
):
    """Another run's map appears between our check and our rename: ours fails
    (exit 1, one line), theirs stays as it is, and none of our files (confidence,
    styles, temporaries) stays beside it."""
    out = tmp_path / "out"
    out.mkdir()
    final = out / "m.tif"
    theirs = b"the map of another run"
    build = MapWriter._build_cog

    def build_while_another_run_finishes(self, cog):
        dst = build(self, cog)
        if cog.final == final:  # the other run's map lands right now
            final.write_bytes(theirs)
        return dst

    monkeypatch.setattr(MapWriter, "_build_cog", build_while_another_run_finishes)
    code, stdout, err = cli(
        "-q", "predict", small_scene, "-m", tiny_lulc_model, "-o", final,
        "--confidence", "--probabilities",
    )  # fmt: skip
    assert code == 1 and stdout == ""
    line = _one_error_line(err)
    assert f"{final} appeared meanwhile" in line and "another run" in line, line
    assert final.read_bytes() == theirs
    assert sorted(p.name for p in out.iterdir()) == ["m.tif"]


@pytest.mark.parametrize("how", ["renameat2", "hard link"])
def test_an_atomic_write_never_replaces_a_file_that_appeared_meanwhile(
    how, tmp_path, monkeypatch
):
    if how == "hard link":  # a system or file system without RENAME_NOREPLACE
        monkeypatch.setattr(_fileio, "_renameat2", lambda: None)
    target = tmp_path / "a.json"

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"theirs")  # appears before the rename

    with pytest.raises(OutputExistsError, match="appeared meanwhile"):
        atomic_write(target, write, replace=False)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    atomic_write(
        tmp_path / "b.json", lambda tmp: tmp.write_bytes(b"new"), replace=False
    )
    assert (tmp_path / "b.json").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


# ---------------------------------------------------------------------- SIGTERM
#: Runs ``alosmap ARGS``; once the first rows of a map are written, says READY
#: and holds the writer thread until stdin closes.
_HOLD_AFTER_FIRST_ROWS = """
import sys
from alosmap.io.writer import MapWriter

write_rows = MapWriter.write_rows
held = []

def write_rows_then_hold(self, *args, **kwargs):
    write_rows(self, *args, **kwargs)
    if not held:
        held.append(True)
        print("READY", flush=True)
        sys.stdin.buffer.read()  # until the test closes stdin, after its SIGTERM

MapWriter.write_rows = write_rows_then_hold
from alosmap.cli.main import run

sys.argv = ["alosmap", *sys.argv[1:]]
run()
"""


@pytest.mark.parametrize("command", ["predict", "batch"])
def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(
    command, small_scene, tiny_lulc_model, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    where = ["-o", str(out / "m.tif")] if command == "predict" else ["-o", str(out)]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", _HOLD_AFTER_FIRST_ROWS, "-q", command),
            *(str(small_scene), "-m", str(tiny_lulc_model), *where),
            "--confidence",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        ready = proc.stdout.readline()  # the map's temporaries are on disk now
        if ready != b"READY\n":
            proc.kill()
            pytest.fail(f"no READY: {ready!r} {proc.communicate()[1].decode()}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)  # closes stdin: the writer goes on
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err.decode()
    assert _one_error_line(err.decode()) == "alosmap: error: terminated"
    assert _hidden(out) == []
    assert not list(out.rglob("*.tif")) and not list(out.rglob("*.qml"))


# -------------------------------------------------------------------- disk full
@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 2 MiB tmpfs."""
    return mount_tmpfs("2m")


@pytest.mark.parametrize("command", ["predict", "batch"])
def test_a_full_disk_is_one_line_naming_the_directory_and_the_space(
    command, make_geotiff, tiny_lulc_model, tiny_disk
):
    """GDAL and libtiff report a full disk several times over, on stderr and as
    warnings; the user gets one line, and a batch stops at the first scene."""
    rng = np.random.default_rng(7)
    dn = rng.integers(500, 4000, size=(1100, 1100), dtype=np.uint16)
    scenes = [make_geotiff(dn, name=f"big{i}.tif") for i in range(2)]
    # leave about 200 kB of the 2 MiB: less than the outputs need
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 200_000))
    if command == "predict":
        args, directory = [scenes[0], "-o", tiny_disk / "m.tif"], tiny_disk
    else:
        args, directory = [*scenes, "-o", tiny_disk / "out"], tiny_disk / "out"
    res = subprocess.run(
        [
            *(sys.executable, "-m", "alosmap", command, *map(str, args)),
            *("-m", str(tiny_lulc_model), "--confidence", "--probabilities"),
            *("--tile", "256", "--overlap", "0"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert res.returncode == 1, res.stderr
    line = _one_error_line(res.stderr)
    assert "disk full while writing" in line
    assert f"free in {directory}," in line and "need up to" in line, line
    assert res.stdout == ""
    assert not list(tiny_disk.rglob("*.tif")) and _hidden(tiny_disk) == []


# ---------------------------------------------------------------------- preview
def test_a_jpg_preview_is_a_jpeg_and_other_suffixes_are_refused(
    cli, small_scene, tiny_lulc_model, tmp_path, monkeypatch
):
    pytest.importorskip("matplotlib")

    def predict(directory, preview):
        directory.mkdir()
        return cli(
            "-q", "predict", small_scene, "-m", tiny_lulc_model,
            "-o", directory / "m.tif", "--preview", directory / preview,
        )  # fmt: skip

    out = tmp_path / "out"
    code, _, err = predict(out, "p.jpg")
    assert code == 0, err
    assert (out / "p.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG

    other = tmp_path / "other"
    code, _, err = predict(other, "p.gif")
    assert code == 2  # a usage error, refused before any work
    line = _one_error_line(err)
    assert "p.gif" in line and ".png, .jpg or .jpeg" in line, line
    assert list(other.iterdir()) == []

    # the library refuses it before the model is even loaded
    from alosmap import predict_scene
    from alosmap.errors import OutputPathError
    from alosmap.predict import pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for an output that cannot be")

    monkeypatch.setattr(pipeline, "load_model", no_model)
    with pytest.raises(OutputPathError, match=r"p\.gif"):
        predict_scene(
            small_scene, other / "m.tif", model=tiny_lulc_model, preview=other / "p.gif"
        )
    assert list(other.iterdir()) == []


# ------------------------------------------------------------ command-line words
def test_messages_name_options_not_python_keywords(
    cli, small_scene, tiny_lulc_model, tmp_path
):
    existing = tmp_path / "m.tif"
    existing.write_bytes(b"precious")
    code, _, err = cli(
        "-q", "predict", small_scene, "-m", tiny_lulc_model, "-o", existing
    )
    assert code == 1
    line = _one_error_line(err)
    assert "--overwrite" in line and "overwrite=" not in line, line
    assert existing.read_bytes() == b"precious"
