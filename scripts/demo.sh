#!/usr/bin/env bash
# The README's main command (`make demo`): run alosmap on sample_data/.
set -euo pipefail
VENV=${1:-.venv}
A="$VENV/bin/alosmap"
OUT=demo_out
mkdir -p "$OUT"
for scene in sample_data/IMG-HH-*.tif; do
  "$A" info "$scene"
  echo
done
# Until the inference and training issues land: a (random, untrained) model file with
# its full spec, exported to ONNX and checked against PyTorch.
"$A" train init --preset small --task lulc -o "$OUT/small-lulc-untrained.safetensors" --overwrite
"$A" info "$OUT/small-lulc-untrained.safetensors"
"$A" export onnx "$OUT/small-lulc-untrained.safetensors" -o "$OUT/small-lulc-untrained.onnx" --overwrite
