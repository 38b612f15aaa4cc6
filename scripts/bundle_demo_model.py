"""Copy a finetuned model into the package as a demo model (float16), labelled.

    python scripts/bundle_demo_model.py RUN/model.safetensors \
        alosmap/weights/lulc.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

from alosmap.spec import load_model, save_model

NOTE = (
    "DEMO WEIGHTS: small preset trained from scratch on synthetic ALOS-2-like scenes "
    "(alosmap.synthetic, scripts/train_demo_models.sh); not trained on real ALOS-2 "
    "data, not for real mapping"
)


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    model, spec = load_model(src)
    spec = spec.replace(
        name=f"alosmap-demo-{spec.task}-small",
        provenance={**spec.provenance, "note": NOTE},
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    # stored as float16 to keep the package small; loading casts back to float32
    save_model(model.half(), spec, dst, overwrite=True)
    print(dst)


if __name__ == "__main__":
    main()
