"""Print the Table I ablation from the runs of scripts/ablation_table1.sh (markdown)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("1_baseline", "✗", "✗", "✗"),
    ("2_highres", "✓", "✗", "✗"),
    ("3_refine_up", "✓", "✓", "✗"),
    ("4_alpha_scale", "✓", "✓", "✓"),
]


def main() -> None:
    work = Path(sys.argv[1])
    reports = {
        name: json.loads((work / name / "eval_val" / "report.json").read_text())
        for name, *_ in ROWS
        if (work / name / "eval_val" / "report.json").exists()
    }
    if not reports:
        sys.exit(f"no reports under {work}")
    classes = next(iter(reports.values()))["classes"]
    head = ["High-res", "Refine-Up", "α-scale", "mIoU", "mAcc", *classes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, hr, ru, a in ROWS:
        if name not in reports:
            continue
        m = reports[name]["metrics"]
        per = (
            {c["name"]: c["iou"] for c in m["per_class"]}
            if isinstance(m["per_class"], list)
            else {k: v["iou"] for k, v in m["per_class"].items()}
        )

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.1f}"

        cells = [hr, ru, a, pct(m["miou"]), pct(m["macc"])]
        cells += [pct(per.get(c)) for c in classes]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
