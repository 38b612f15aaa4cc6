#!/usr/bin/env bash
# The README's main command (`make demo`): map sample_data/ with the bundled demo models.
set -euo pipefail
VENV=${1:-.venv}
A="$VENV/bin/alosmap"
OUT=demo_out
mkdir -p "$OUT"
for scene in sample_data/IMG-HH-*.tif; do
  stem=$(basename "$scene" .tif)
  "$A" predict "$scene" -o "$OUT/${stem}_lulc.tif" --confidence \
      --preview "$OUT/${stem}_lulc.png" --overwrite
  "$A" water "$scene" -o "$OUT/${stem}_water.tif" \
      --preview "$OUT/${stem}_water.png" --overwrite
done
echo "maps and previews in $OUT/" >&2
