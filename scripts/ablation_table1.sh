#!/usr/bin/env bash
# Table I of the paper in miniature: the refinements switched on one by one, small
# preset, synthetic data, same budget and seed, scored on the validation split.
#   scripts/ablation_table1.sh DATA_DIR [WORK_DIR] [EPOCHS]
# DATA_DIR: a dataset from `alosmap train build-dataset` (e.g. the one
# scripts/train_demo_models.sh builds). Prints the table (scripts/table1.py).
set -euo pipefail
DATA=$1
WORK=${2:-ablation}
EPOCHS=${3:-20}
A=${ALOSMAP:-alosmap}
PY=${PYTHON:-python}
COMMON=(--data "$DATA" --task lulc --preset small --batch-size 8 --lr 1e-3
        --layer-decay 1.0 --warmup-epochs 2 --epochs "$EPOCHS" --seed 0)
declare -A RUNS=(
  [1_baseline]="--no-highres --no-refine-up --alpha-scale 1.0"
  [2_highres]="--no-refine-up --alpha-scale 1.0"
  [3_refine_up]="--alpha-scale 1.0"
  [4_alpha_scale]="--alpha-scale 2.25"
)
for name in 1_baseline 2_highres 3_refine_up 4_alpha_scale; do
  # shellcheck disable=SC2086
  $A -q train finetune "${COMMON[@]}" ${RUNS[$name]} -o "$WORK/$name"
  $A -q train evaluate --model "$WORK/$name/model.safetensors" --data "$DATA" \
      --split val -o "$WORK/$name/eval_val" > /dev/null
done
$PY scripts/table1.py "$WORK"
