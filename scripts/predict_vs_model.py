"""Whole ``alosmap predict`` against the model alone, in CPU seconds (docs/install.md).

    taskset -c 0 python scripts/predict_vs_model.py 3000 [WORK_DIR]

Maps a synthetic SIZE² scene with the bundled LULC model (``alosmap predict
--threads 1`` in a child process: start-up, reading, radiometry, blend, COG writing
included) and runs the same number of tiles through the same model alone (ONNX
Runtime, one thread, batches of 8). Prints one JSON line; ``ratio_cpu`` is model-only
CPU seconds ÷ whole-predict CPU seconds (1.0: the pipeline costs nothing). CPU
seconds, not wall time, so that a shared machine's other load does not count. Runs
on the core install (no PyTorch needed).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alosmap.predict.options import default_overlap
from alosmap.predict.pipeline import default_model_path
from alosmap.runtime import load_runtime
from alosmap.synthetic import generate_scene
from alosmap.tiling import axis_starts


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main() -> None:
    size = int(sys.argv[1])
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    scene = generate_scene(
        work / "scene", seed=3, width=size, height=size, write_label_tiles=False
    ).path
    n_tiles = len(axis_starts(size, 256, default_overlap(256))) ** 2
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "alosmap", "-q", "predict", str(scene),
         "-o", str(work / "map.tif"), "--overwrite", "--threads", "1"],
        check=True,
    )  # fmt: skip
    cpu_p, wall_p = _children_cpu() - c0, time.perf_counter() - t0
    rt = load_runtime(default_model_path("lulc"), threads=1)
    x = np.random.default_rng(0).standard_normal((8, 1, 256, 256), np.float32)
    rt.run(x)  # warm-up
    c0, t0, done = time.process_time(), time.perf_counter(), 0
    while done < n_tiles:
        k = min(8, n_tiles - done)
        rt.run(x[:k])
        done += k
    cpu_m, wall_m = time.process_time() - c0, time.perf_counter() - t0
    print(
        json.dumps(
            {
                "size": size,
                "tiles": n_tiles,
                "predict_cpu_s": round(cpu_p, 2),
                "predict_wall_s": round(wall_p, 2),
                "model_only_cpu_s": round(cpu_m, 2),
                "model_only_wall_s": round(wall_m, 2),
                "ratio_cpu": round(cpu_m / cpu_p, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
