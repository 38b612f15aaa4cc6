"""Batch mode's scene overlap, measured with the zero-cost model.

``alosmap batch`` finishes a scene (COG builds, preview, record) in a background
thread while the model maps the next one. This script measures what that buys on
this machine when the model costs nothing on the host, as on a GPU: the same
scenes mapped one after the other with ``predict_scene`` (finish included), then
with ``stream_scene`` and the finish in a background thread, as batch does. It
checks that both give byte-identical maps and prints both times.

    python scripts/batch_overlap_bench.py [--size 3000] [--scenes 4] [--probabilities]
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from alosmap.predict.bench import write_bench_scene
from alosmap.predict.ceiling import NullRuntime
from alosmap.predict.pipeline import default_model_path, predict_scene, stream_scene
from alosmap.spec import load_spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=3000, help="scene side (px)")
    p.add_argument("--scenes", type=int, default=4, help="scenes per run")
    p.add_argument("--probabilities", action="store_true", help="also write them")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="alosmap-overlap-") as tmp:
        d = Path(tmp)
        scenes = [
            write_bench_scene(d / f"scene_{i}.tif", a.size, seed=i)
            for i in range(a.scenes)
        ]
        rt = NullRuntime(load_spec(default_model_path("lulc")))
        kw = dict(
            runtime=rt, overwrite=True, confidence=True, probabilities=a.probabilities
        )
        predict_scene(scenes[0], d / "warm-up.tif", **kw)
        for _ in range(a.repeats):
            t = time.perf_counter()
            for i, s in enumerate(scenes):
                predict_scene(s, d / f"seq_{i}.tif", **kw)
            seq = time.perf_counter() - t
            t = time.perf_counter()
            with ThreadPoolExecutor(1) as pool:
                pending: Future[object] | None = None
                for i, s in enumerate(scenes):
                    streamed = stream_scene(s, d / f"ovl_{i}.tif", **kw)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(streamed.finish)
                if pending is not None:
                    pending.result()
            ovl = time.perf_counter() - t
            same = all(
                filecmp.cmp(d / f"seq_{i}.tif", d / f"ovl_{i}.tif", shallow=False)
                for i in range(a.scenes)
            )
            print(
                f"{a.scenes} scenes of {a.size}², confidence"
                + (" and probabilities" if a.probabilities else "")
                + f": one after the other {seq:.2f} s, finishing in the background "
                f"{ovl:.2f} s ({seq / ovl:.2f}×); maps identical: {same}"
            )


if __name__ == "__main__":
    main()
