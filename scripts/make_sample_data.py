"""Regenerate ``sample_data/`` byte-for-byte (same as ``alosmap synth sample-data``).

Usage::

    python scripts/make_sample_data.py [OUT_DIR]   # default: sample_data/ beside this

Then ``git diff --stat sample_data`` should show nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from alosmap.synthetic import make_sample_data


def main() -> None:
    out = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parents[1] / "sample_data"
    )
    t0 = time.perf_counter()
    for path in make_sample_data(out, overwrite=True):
        print(path)
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
