#!/usr/bin/env bash
# Recipe of the bundled demo models (alosmap/weights/{lulc,water}.safetensors, and the
# .onnx beside each, exported from it: the default models of `alosmap predict`/`water`).
#
# Trains the small preset from scratch on synthetic scenes (scripts/make_demo_data.py;
# a different synthetic world from sample_data/, which stays held out), evaluates on the
# test split and on sample_data/, and copies the models into the package.
# About 25 minutes on a 2-core CPU.  Usage: scripts/train_demo_models.sh [WORK_DIR]
set -euo pipefail
WORK=${1:-demo_training}
A=${ALOSMAP:-alosmap}
PY=${PYTHON:-python}
mkdir -p "$WORK"
$PY scripts/make_demo_data.py "$WORK/scenes" --scenes 24
$A train build-dataset --sar "$WORK/scenes" --lulc "$WORK/scenes" -o "$WORK/data" \
    --anchors 20000 --seed 0 --overwrite
# From scratch (no pretraining): no layer-wise decay, an absolute LR for batch 8.
COMMON=(--data "$WORK/data" --preset small --batch-size 8 --lr 1e-3 --layer-decay 1.0
        --warmup-epochs 2 --seed 0)
$A train finetune "${COMMON[@]}" --task lulc --epochs 40 -o "$WORK/lulc"
$A train finetune "${COMMON[@]}" --task water --epochs 25 -o "$WORK/water"
# held-out scenes: sample_data/ (another synthetic world), all three months labelled
$A train build-dataset --sar sample_data --lulc sample_data -o "$WORK/heldout" \
    --anchors 20000 --pretrain-months 12 --finetune-months 9,10,11 \
    --split 0.1/0.1/0.8 --seed 0 --overwrite
for task in lulc water; do
  $A train evaluate --model "$WORK/$task/model.safetensors" --data "$WORK/data" \
      --split test -o "$WORK/eval_${task}_test"
  $A train evaluate --model "$WORK/$task/model.safetensors" --data "$WORK/heldout" \
      --split test -o "$WORK/eval_${task}_heldout"
done
# writes alosmap/weights/$task.safetensors and alosmap/weights/$task.onnx (parity-checked)
for task in lulc water; do
  $PY scripts/bundle_demo_model.py "$WORK/$task/model.safetensors" \
      "alosmap/weights/$task.safetensors"
done
