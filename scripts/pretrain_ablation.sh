#!/usr/bin/env bash
# Does SAR-W-MixMAE pretraining help?  Issue 6 in miniature (the paper's Table I
# "no pretraining" row against the pretrained model, same finetuning budget).
#
# Small preset, synthetic data: one synthetic label world, 18 September scenes (the
# finetuning month: train/val/test) and 30 October/November scenes (the pretraining
# months: the unlabelled pretrain split), as build-dataset splits them by month.
#   1. SAR-W-MixMAE pretraining of the small encoder on the pretrain split;
#   2. LULC finetuning from that encoder and from scratch, with identical options and
#      seed (only --pretrained differs);
#   3. `alosmap train evaluate` of both best-by-validation models on val and test.
# About 35 minutes on a shared 2-core CPU with the defaults (pretraining 17 min,
# each finetuning 7 min, with OMP_NUM_THREADS=1).  Reruns resume or skip
# finished runs.  Usage: scripts/pretrain_ablation.sh [WORK_DIR (ablation/pretrain)]
#   env: PT_EPOCHS (pretraining epochs, 20), FT_EPOCHS (finetuning epochs, 12),
#        WORKERS (data-loading workers, 1), FT_SEED (finetuning seed, 0; other
#        seeds go to *_s<seed> runs), NO_NORM_PIX_ARM=1 (adds a pretraining arm
#        with --no-norm-pix), ALOSMAP (the alosmap command), PYTHON.
# On a busy shared CPU, OMP_NUM_THREADS=1 avoids oversubscribed (spinning) threads.
set -euo pipefail
WORK=${1:-ablation/pretrain}  # ablation/ is git-ignored
A=${ALOSMAP:-alosmap}
PY=${PYTHON:-python}
PT_EPOCHS=${PT_EPOCHS:-20}
FT_EPOCHS=${FT_EPOCHS:-12}
WORKERS=${WORKERS:-1}
FT_SEED=${FT_SEED:-0}
SUF=$([ "$FT_SEED" = 0 ] || echo "_s$FT_SEED")
mkdir -p "$WORK"

if [ ! -f "$WORK/scenes/.done" ]; then
  $PY - "$WORK/scenes" <<'EOF'
"""18 September + 30 October/November scenes on one synthetic world."""
import sys
from pathlib import Path

import numpy as np

from alosmap.synthetic import SceneSpec, generate_scenes

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
SEED, CENTRE = 60221, (139.95, 35.55)  # not the world of sample_data or the demo
rng = np.random.default_rng(SEED)
specs = []
for i in range(48):
    lon = CENTRE[0] + rng.uniform(-0.12, 0.12)
    lat = CENTRE[1] + rng.uniform(-0.10, 0.10)
    month = 9 if i < 18 else (10 if i % 2 else 11)
    day = 1 + (3 * i) % 28
    heading = 190.0 if i % 2 else 350.0
    specs.append(SceneSpec(f"2022-{month:02d}-{day:02d}", lon, lat, heading, 500 + i))
generate_scenes(
    out, specs, world_seed=SEED, sea_side="east", sea_fraction=0.25,
    min_class_pixels=300,
)
(out / ".done").write_text("ok\n")
EOF
fi

[ -f "$WORK/data/dataset.json" ] || \
  $A train build-dataset --sar "$WORK/scenes" --lulc "$WORK/scenes" -o "$WORK/data" \
      --anchors 20000 --seed 0 --overwrite

# 1. pretraining: a batch of 8 needs an absolute LR (blr·8/256 would be 4.7e-6)
PT=(--data "$WORK/data" --preset small --epochs "$PT_EPOCHS" --warmup-epochs 3
    --batch-size 8 --lr 1e-3 --seed 0 --workers "$WORKERS")
$A train pretrain "${PT[@]}" -o "$WORK/pretrain"

# 2. finetuning: identical options (the demo models' from-scratch recipe) and seed
FT=(--data "$WORK/data" --task lulc --preset small --epochs "$FT_EPOCHS"
    --warmup-epochs 2 --batch-size 8 --lr 1e-3 --layer-decay 1.0 --seed "$FT_SEED"
    --workers "$WORKERS")
$A train finetune "${FT[@]}" -o "$WORK/ft_scratch$SUF"
$A train finetune "${FT[@]}" -o "$WORK/ft_pretrained$SUF" \
    --pretrained "$WORK/pretrain/encoder.safetensors"
RUNS=("ft_scratch$SUF" "ft_pretrained$SUF")

# optional diagnostic arm (NO_NORM_PIX_ARM=1): the same pretraining with raw
# (not per-patch normalised) targets, then the same finetuning
if [ "${NO_NORM_PIX_ARM:-0}" = 1 ]; then
  $A train pretrain "${PT[@]}" -o "$WORK/pretrain_no_norm_pix" --no-norm-pix
  $A train finetune "${FT[@]}" -o "$WORK/ft_pretrained_no_norm_pix$SUF" \
      --pretrained "$WORK/pretrain_no_norm_pix/encoder.safetensors"
  RUNS+=("ft_pretrained_no_norm_pix$SUF")
fi

# 3. evaluation of the best-by-validation models
for run in "${RUNS[@]}"; do
  for split in val test; do
    $A train evaluate --model "$WORK/$run/model.safetensors" --data "$WORK/data" \
        --split "$split" -o "$WORK/eval/${run}_$split" > "$WORK/eval_${run}_$split.txt"
  done
done

$PY - "$WORK" "${RUNS[@]}" <<'EOF'
"""Print the comparison as a markdown table (percent)."""
import csv
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
labels = {"ft_scratch": "no pretraining (scratch)",
          "ft_pretrained": "SAR-W-MixMAE pretrained",
          "ft_pretrained_no_norm_pix": "SAR-W-MixMAE pretrained, --no-norm-pix"}
names = None
lines = []
for run in sys.argv[2:]:
    base, _, seed = run.rpartition("_s")
    label = labels[base if seed.isdigit() else run]
    label += f" (seed {seed})" if seed.isdigit() else ""
    rep = {s: json.loads((work / "eval" / f"{run}_{s}" / "report.json").read_text())
           for s in ("val", "test")}
    log = list(csv.DictReader(open(work / run / "log.csv")))
    best = max(log, key=lambda r: float(r["val_miou"]))
    names = names or rep["test"]["classes"]
    per = rep["test"]["metrics"]["per_class"]
    iou = [per[n]["iou"] for n in names]
    cells = [f"{100 * v:.1f}" if v is not None else "–" for v in iou]
    lines.append(
        f"| {label} | {best['epoch']} | {100 * rep['val']['metrics']['miou']:.2f} | "
        f"{100 * rep['val']['metrics']['macc']:.2f} | "
        f"{100 * rep['test']['metrics']['miou']:.2f} | "
        f"{100 * rep['test']['metrics']['macc']:.2f} | " + " | ".join(cells) + " |"
    )
print("| finetuning from | best epoch | val mIoU | val mAcc | test mIoU | test mAcc | "
      + " | ".join(f"test IoU {n}" for n in names) + " |")
print("|---" * (6 + len(names)) + "|")
print("\n".join(lines))
print()
for name in ("pretrain", "pretrain_no_norm_pix"):
    if (work / name / "log.csv").is_file():
        pt = list(csv.DictReader(open(work / name / "log.csv")))
        print(f"{name}: {len(pt)} epochs, loss {float(pt[0]['loss']):.4f} → "
              f"{float(pt[-1]['loss']):.4f}, unweighted MSE "
              f"{float(pt[0]['mse']):.4f} → {float(pt[-1]['mse']):.4f}")
EOF
