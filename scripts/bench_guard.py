"""``make bench``: the speed guard's JSON (alosmap.predict.guard), and its check.

Usage: ``python scripts/bench_guard.py [--quick] [--out bench.json]``. Writes the
report (ratios measured side by side in one run) and exits 1, one line per
regression on stderr, when a ratio regressed grossly (an accepted precision slower
than fp32, the pipeline below 0.8 of model-only, a ceiling below the model).
``--quick`` is CI's short version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> int:
    """Run the guard; write the JSON; 1 on a regression."""
    from alosmap.export.onnx import export_onnx
    from alosmap.predict.guard import FULL, QUICK, run_guard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI's short version")
    ap.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="alosmap-guard-") as tmp:
        report = run_guard(QUICK if args.quick else FULL, Path(tmp), export_onnx)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    r = report["ratios"]
    print(f"bench: {args.out} ({report['seconds']:.0f} s) on {report['machine']}")
    for key in ("precision_vs_fp32", "pipeline_vs_model", "ceiling_tiles_per_cpu_s"):
        print(f"  {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in r[key].items()))
    for key in ("ceiling_vs_model", "torch_cpu_vs_host_ceiling", "rss_large_vs_small"):
        if key in r:
            print(f"  {key}: {r[key]:.2f}")
    for name, why in r["skipped"].items():
        print(f"  skipped {name}: {why}")
    for line in report["failures"]:
        print(f"bench regression: {line}", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
