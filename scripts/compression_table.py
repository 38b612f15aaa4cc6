"""Size and COG build time of class maps per compression (docs/creation-options.md).

Usage:
    taskset -c 0 .venv/bin/python scripts/compression_table.py [--work DIR] [--repeat 3]

The maps measured, all real-looking:

* ``tile-lulc``: the labelled part (3181 × 1673) of the JAXA-style tile
  ``sample_data/LC_N35E139.tif`` (14 classes, EPSG:4326; synthetic ground truth);
* ``synth-lulc``: a 4000 × 4000 synthetic JAXA-style world
  (:func:`alosmap.synthetic.generate_label_world`, seed 7: coast, towns with
  streets, field parcels, rivers, five forest types);
* ``*-water``: the water bodies of each as a water map (1 water, 0 not, 255 no
  data);
* ``demo-lulc`` / ``demo-water``: the maps the bundled demo models make of the three
  1280 × 1280 sample scenes (``sample_data/IMG-HH-*.tif``), made once into
  ``--work`` (skip them with ``--no-demo``);
* ``real-lulc`` / ``real-water``: with ``--real DIR``, the real JAXA HRLULC tiles
  ``LC_*.tif`` of ``DIR`` (12000 × 12000 each), and their water.

Each map is first written as the writer's temporary tiled GeoTIFF (ZSTD level 1),
then built into a COG exactly as :class:`alosmap.io.writer.MapWriter` builds a class
map (:func:`alosmap.io.writer.cog_build_options`: 512² tiles, NEAREST overviews),
with one setting after the other, ``--repeat`` rounds back to back, on one thread
(``NUM_THREADS=1``; run it under ``taskset -c 0``). Time is the process's CPU time
(:func:`time.process_time`), so that other work on a shared core does not count.
Printed: a Markdown table with the size (and its ratio to DEFLATE level 6) and the
median CPU milliseconds per 512 × 512 tile of the full-resolution level, over the
maps of each kind.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from alosmap.io.writer import BLOCKSIZE, cog_build_options

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
#: (codec, level) measured; DEFLATE 6 is the reference of the size ratios.
SETTINGS = [
    ("DEFLATE", 1),
    ("DEFLATE", 4),
    ("DEFLATE", 5),
    ("DEFLATE", 6),
    ("DEFLATE", 9),
    ("ZSTD", 1),
    ("ZSTD", 9),
]
REFERENCE = ("DEFLATE", 6)
#: Side of the JAXA window (pixels).
SIDE = 4000


def _write_tmp(path: Path, array: np.ndarray, nodata: int, crs, transform) -> Path:
    """The writer's temporary GeoTIFF of a map: tiled, ZSTD level 1."""
    profile = {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": BLOCKSIZE,
        "blockysize": BLOCKSIZE,
        "compress": "zstd",
        "zstd_level": 1,
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": "uint8",
        "nodata": nodata,
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)
    return path


def _as_maps(
    name: str, labels: np.ndarray, crs, transform, work: Path
) -> list[tuple[str, Path]]:
    """JAXA codes as a LULC map and their water bodies as a water map."""
    water = np.where(labels == 0, 255, (labels == 1)).astype(np.uint8)
    return [
        (f"{name}-lulc", _write_tmp(work / f"{name}_l.tif", labels, 0, crs, transform)),
        (
            f"{name}-water",
            _write_tmp(work / f"{name}_w.tif", water, 255, crs, transform),
        ),
    ]


def jaxa_maps(work: Path) -> list[tuple[str, Path]]:
    """The labelled part of the sample JAXA-style tile, LULC and water."""
    with rasterio.open(SAMPLES / "LC_N35E139.tif") as src:
        a = src.read(1)
        rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
        win = Window(cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0])
        crs, transform = src.crs, src.window_transform(win)
    labels = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _as_maps("tile", np.ascontiguousarray(labels), crs, transform, work)


def synthetic_maps(work: Path) -> list[tuple[str, Path]]:
    """A synthetic 4000 × 4000 JAXA-style world (coast, towns, fields, forest)."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from alosmap.synthetic import generate_label_world

    step = 1 / 12000
    world = generate_label_world(
        (139.0, 35.0, 139.0 + SIDE * step, 35.0 + SIDE * step), seed=7
    )
    transform = from_origin(world.col0 * step - 180, 90 - world.row0 * step, step, step)
    return _as_maps("synth", world.labels, CRS.from_epsg(4326), transform, work)


def real_maps(folder: Path, work: Path) -> list[tuple[str, Path]]:
    """Real JAXA HRLULC tiles (``LC_*.tif`` of ``folder``), LULC and water."""
    out: list[tuple[str, Path]] = []
    for path in sorted(folder.glob("LC_*.tif")):
        with rasterio.open(path) as src:
            labels, crs, transform = src.read(1), src.crs, src.transform
        maps = _as_maps(f"real-{path.stem}", labels, crs, transform, work)
        out += [(kind.split("-")[0] + "-" + kind.split("-")[-1], p) for kind, p in maps]
    return out


def demo_maps(work: Path, scratch: Path) -> list[tuple[str, Path]]:
    """The demo models' maps of the sample scenes (made once), as temporaries."""
    from alosmap.predict.options import InferenceOptions
    from alosmap.predict.pipeline import predict_scene

    out: list[tuple[str, Path]] = []
    for scene in sorted(SAMPLES.glob("IMG-HH-*.tif")):
        for task in ("lulc", "water"):
            path = work / f"{scene.stem}_{task}.tif"
            if not path.exists():
                predict_scene(scene, path, InferenceOptions(task=task))
            with rasterio.open(path) as ds:
                a, nodata, crs, t = ds.read(1), ds.nodata, ds.crs, ds.transform
            tmp = _write_tmp(scratch / f"tmp_{path.name}", a, int(nodata), crs, t)
            out.append((f"demo-{task}", tmp))
    return out


def measure(
    maps: list[tuple[str, Path]], repeat: int, out_dir: Path
) -> dict[tuple[str, str, int], tuple[int, float]]:
    """``(kind, codec, level) → (bytes, median ms per tile)``, summed per kind."""
    times: dict[tuple[str, str, int, int], list[float]] = {}
    sizes: dict[tuple[str, str, int, int], int] = {}
    for _ in range(repeat):
        for i, (_kind, tmp) in enumerate(maps):
            for codec, level in SETTINGS:
                dst = out_dir / f"cog_{i}_{codec}{level}.tif"
                options = cog_build_options(
                    level,
                    False,
                    "NEAREST",
                    {"COMPRESS": codec, "LEVEL": str(level), "NUM_THREADS": "1"},
                )
                start = time.process_time()
                rasterio.shutil.copy(tmp, dst, driver="COG", **options)
                seconds = time.process_time() - start
                times.setdefault((_kind, codec, level, i), []).append(seconds)
                sizes[(_kind, codec, level, i)] = dst.stat().st_size
    result: dict[tuple[str, str, int], tuple[int, float]] = {}
    for kind in dict.fromkeys(k for k, _ in maps):
        members = [i for i, (k, _) in enumerate(maps) if k == kind]
        tiles = 0
        for i in members:
            with rasterio.open(maps[i][1]) as ds:
                across = math.ceil(ds.width / BLOCKSIZE)
                tiles += across * math.ceil(ds.height / BLOCKSIZE)
        for codec, level in SETTINGS:
            size = sum(sizes[(kind, codec, level, i)] for i in members)
            ms = sum(statistics.median(times[(kind, codec, level, i)]) for i in members)
            result[(kind, codec, level)] = (size, 1000 * ms / tiles)
    return result


def table(result: dict[tuple[str, str, int], tuple[int, float]]) -> str:
    """The Markdown table of :func:`measure`'s figures."""
    lines = [
        "| map | setting | size (kB) | size / DEFLATE 6 | CPU ms per 512² tile |",
        "|---|---|---:|---:|---:|",
    ]
    for kind in dict.fromkeys(k for k, _, _ in result):
        ref = result[(kind, *REFERENCE)][0]
        for codec, level in SETTINGS:
            size, ms = result[(kind, codec, level)]
            lines.append(
                f"| {kind} | {codec} {level} | {size / 1000:,.1f} | "
                f"{size / ref:.2f} | {ms:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="where the demo maps are kept")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median)")
    parser.add_argument("--no-demo", action="store_true", help="JAXA maps only")
    parser.add_argument(
        "--real", type=Path, help="a folder of real JAXA HRLULC tiles (LC_*.tif)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        work = args.work or scratch
        work.mkdir(parents=True, exist_ok=True)
        maps = jaxa_maps(scratch) + synthetic_maps(scratch)
        if not args.no_demo:
            maps += demo_maps(work, scratch)
        if args.real is not None:
            maps += real_maps(args.real, scratch)
        print(table(measure(maps, args.repeat, scratch)))


if __name__ == "__main__":
    main()
