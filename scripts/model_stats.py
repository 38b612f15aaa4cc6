"""Parameter count and GFLOPs per tile of the segmentation model, per refinement.

Usage:
    python scripts/model_stats.py [--preset paper] [--tile 256]

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` for one
``tile × tile`` image (batch 1) in eval mode. FlopCounterMode counts a
multiply-add as **2 FLOPs** (a conv or matmul of ``M×K`` by ``K×N`` is
``2·M·K·N``); it covers convolutions, matmuls/linear layers and attention matmuls,
not elementwise ops, norms, softmax, pooling or interpolation. Divide by 2 for
"GMACs" as many papers report.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from alosmap.arch import get_preset
from alosmap.classes import LULC, WATER
from alosmap.models import build_model, count_parameters

VARIANTS = [
    ("baseline", False, False),
    ("+highres", True, False),
    ("+refine_up", False, True),
    ("+both", True, True),
]
#: (label, model outputs) per task.
TASKS = [("LULC", LULC.num_outputs), ("water", WATER.num_outputs)]


def measure(preset: str, tile: int, highres: bool, refine_up: bool, k: int):
    arch = get_preset(
        preset, highres=highres, refine_up=refine_up, num_classes=k, img_size=tile
    )
    model = build_model(arch).eval()
    x = torch.zeros(1, arch.in_chans, tile, tile)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    total = counter.get_total_flops()
    by_module = counter.get_flop_counts()
    parts = {
        name: sum(by_module.get(f"SegmentationModel.{name}", {}).values())
        for name in ("encoder", "decoder", "head")
    }
    return count_parameters(model), total, parts, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()

    print(
        f"preset={args.preset} tile={args.tile}x{args.tile} batch=1 "
        "(FLOPs: 1 multiply-add = 2 FLOPs)"
    )
    header = (
        f"{'task':6} {'variant':11} {'params (M)':>10} {'GFLOPs':>8} "
        f"{'enc':>7} {'dec':>7} {'head':>7}"
    )
    print(header)
    print("-" * len(header))
    for task, k in TASKS:
        for name, hr, ru in VARIANTS:
            n, flops, parts, _ = measure(args.preset, args.tile, hr, ru, k)
            print(
                f"{task:6} {name:11} {n / 1e6:10.3f} {flops / 1e9:8.2f} "
                f"{parts['encoder'] / 1e9:7.2f} {parts['decoder'] / 1e9:7.2f} "
                f"{parts['head'] / 1e9:7.2f}"
            )


if __name__ == "__main__":
    main()
