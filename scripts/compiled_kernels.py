"""What compiled blend kernels (numba) would win and cost (docs/benchmarks.md).

Usage (numba installed in the environment; it is not a dependency of alosmap):
    taskset -c 0 .venv/bin/python scripts/compiled_kernels.py [--windows 32] [--reps 3]

The two NumPy kernels of the host blend that a compiled loop beats, each against a
numba kernel over the same memory (rows contiguous, any block of a C-ordered array,
passed as a flat array and strides), the results asserted bit for bit:

* the top class (and its code) of a window's core, 160 x 160 of nine 256 x 256
  float32 planes: the blend's NumPy loop (:func:`alosmap._xp.top_class_numpy`) takes
  the core's whole rows (contiguous rows are faster there), the kernel only the core;
* ``acc += p * w`` over a block where bands meet (nine planes of 32 x 224):
  NumPy's two operations (:func:`alosmap._xp.add_product_`) against one loop.

The windows cycle through ``--windows`` batches of eight (as a model's outputs, out
of cache). Then the price, in a fresh process, twice (the second loads the kernel
from numba's on-disk cache): ``import numba`` and the first call of a kernel
(numba initialises LLVM there, cached code or not). Printed: microseconds per
window of each, and the windows a run needs before the kernels pay for their
start-up.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from alosmap._xp import add_product_, top_class_numpy

K, TILE, CORE = 9, 256, (48, 208)


@numba.njit(nogil=True, cache=True)
def top_class_rows(flat, sk, sr, codes, top, code):  # type: ignore[no-untyped-def]
    """Top value and code of the planes ``flat[k·sk + r·sr + x]`` into ``[n, w]``."""
    n, w = top.shape
    for r in range(n):
        t, ix, a, c = top[r], code[r], flat[r * sr : r * sr + w], codes[0]
        for x in range(w):
            t[x] = a[x]
            ix[x] = c
        for j in range(1, codes.shape[0]):
            # the code in a local: read from `codes` in the loop, it could alias
            # the rows written, and the loop would not be vectorised
            a, c = flat[j * sk + r * sr : j * sk + r * sr + w], codes[j]
            for x in range(w):
                v, b = a[x], t[x]
                g = v > b
                t[x] = v if (g or v != v) else b  # np.maximum: NaN propagates
                ix[x] = c if g else ix[x]


@numba.njit(nogil=True, cache=True)
def add_product_rows(d, dk, dr, p, pk, pr, w, wr, k, n, m):  # type: ignore[no-untyped-def]
    """``d += p · w`` over ``[k, n, m]`` flat planes, the product rounded first."""
    for c in range(k):
        for r in range(n):
            dd = d[c * dk + r * dr : c * dk + r * dr + m]
            pp = p[c * pk + r * pr : c * pk + r * pr + m]
            ww = w[r * wr : r * wr + m]
            for x in range(m):
                dd[x] += pp[x] * ww[x]


def flat(a: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """``a``'s memory as a 1-D array from its first element, and strides in items."""
    strides = [s // a.itemsize for s in a.strides]
    span = sum((n - 1) * s for n, s in zip(a.shape, strides, strict=True)) + 1
    return np.lib.stride_tricks.as_strided(a, (span,), (a.itemsize,)), strides


def per_window(windows: np.ndarray, run: Callable[[np.ndarray], object]) -> float:
    """CPU microseconds of ``run(window)`` per window, over every window once."""
    t0 = time.process_time()
    for b in windows:
        for p in b:
            run(p)
    return (time.process_time() - t0) / (windows.shape[0] * windows.shape[1]) * 1e6


def top_class_figures(windows: np.ndarray, reps: int) -> tuple[float, float]:
    """NumPy and compiled microseconds per core; asserts the same bits."""
    a, b = CORE
    codes = (np.arange(K) * 10 + 10).astype(np.uint8)
    top = np.empty((b - a, b - a), np.float32)
    code = np.empty_like(top, dtype=np.uint8)

    def compiled(p: np.ndarray) -> None:
        f, s = flat(p[:, a:b, a:b])
        top_class_rows(f, s[0], s[1], codes, top, code)

    p = windows[0, 0].copy()
    p[3, 5, 60:70] = np.nan  # NaN and ties go where NumPy's loop puts them
    p[4, 6, 60:70] = p[2, 6, 60:70]
    compiled(p)
    ref_top, ref_code = top_class_numpy(p[:, a:b, :TILE], codes)
    assert np.array_equal(ref_code[:, a:b], code)
    assert np.array_equal(ref_top[:, a:b], top, equal_nan=True)
    numpy_us = min(
        per_window(windows, lambda p: top_class_numpy(p[:, a:b, :TILE], codes))
        for _ in range(reps)
    )
    return numpy_us, min(per_window(windows, compiled) for _ in range(reps))


def product_figures(windows: np.ndarray, reps: int) -> tuple[float, float]:
    """NumPy and compiled microseconds per ``acc += p · w`` block; the same bits."""
    rng = np.random.default_rng(1)
    acc = rng.random((K, 80, 6000), dtype=np.float32)
    w = rng.random((32, 224), dtype=np.float32)
    dst, scratch = acc[:, 10:42, 1000:1224], np.empty((K, 32, 224), np.float32)

    def compiled(p: np.ndarray) -> None:
        (d, ds), (q, ps), (f, ws) = flat(dst), flat(p[:, 16:48, 16:240]), flat(w)
        add_product_rows(d, ds[0], ds[1], q, ps[0], ps[1], f, ws[0], K, 32, 224)

    before = acc.copy()
    add_product_(dst, windows[0, 0][:, 16:48, 16:240], w, scratch)
    numpy_acc, acc[...] = acc.copy(), before
    compiled(windows[0, 0])
    assert np.array_equal(numpy_acc, acc)

    def numpy(p: np.ndarray) -> None:
        add_product_(dst, p[:, 16:48, 16:240], w, scratch)

    numpy_us = min(per_window(windows, numpy) for _ in range(reps))
    return numpy_us, min(per_window(windows, compiled) for _ in range(reps))


START = """
import sys, time
t0 = time.process_time()
import numba, numpy as np
t1 = time.process_time()
sys.path.insert(0, {here!r})
from compiled_kernels import top_class_rows
codes = np.arange(9, dtype=np.uint8)
top, code = np.empty((2, 4), np.float32), np.empty((2, 4), np.uint8)
top_class_rows(np.ones(72, np.float32), 8, 4, codes, top, code)
print(t1 - t0, time.process_time() - t1)
"""


def start_up() -> tuple[float, float]:
    """CPU seconds of ``import numba`` and of a cached kernel's first call."""
    for _ in range(2):  # the second run loads the kernel from the on-disk cache
        code = START.format(here=str(Path(__file__).parent))
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        out = run.stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    """Print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=32, help="batches of 8 windows")
    ap.add_argument("--reps", type=int, default=3, help="rounds (the fastest is kept)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    windows = rng.random((args.windows, 8, K, TILE, TILE), dtype=np.float32)
    mb = windows.nbytes / 1e6
    print(f"numba {numba.__version__}, NumPy {np.__version__}, windows {mb:.0f} MB")
    tc, pr = top_class_figures(windows, args.reps), product_figures(windows, args.reps)
    print(f"top class of a core: NumPy {tc[0]:.0f} us, numba {tc[1]:.0f} us per window")
    print(f"acc += p * w, 9x32x224: NumPy {pr[0]:.1f} us, numba {pr[1]:.1f} us")
    imp, first = start_up()
    print(f"start-up: import numba {imp:.2f} CPU s, first call (cached) {first:.2f}")
    # a window: one core, and about three blocks where bands meet
    saved = (tc[0] - tc[1]) + 3 * (pr[0] - pr[1])
    print(
        f"saved per window ~{saved:.0f} us: the kernels pay for their start-up "
        f"after ~{(imp + first) / saved * 1e6:.0f} windows"
    )


if __name__ == "__main__":
    main()
