#!/usr/bin/env bash
# Bad labels: the label check of `train build-dataset` / `train inspect` against
# training scenes whose "water" labels cover bright land (as optical-derived flood
# labels over flooded vegetation or towns do), and what finetuning the bundled water
# model with the CLI defaults does with and without those scenes.
#
# Data: synthetic ALOS-2-like scenes (alosmap.synthetic, 512²), each written as one chip of float32 σ0 dB (NaN no data) with 0/1 water labels
# (255 no label) and its own `scene` in the manifest: 5 training scenes (t1-t5; in
# t2 and t4 the water label also covers a disc of land, about twice the scene's
# water, so that their "water" has a land-like median), 2 validation scenes (v1, v2)
# and 3 held-out test scenes (x1-x3, a dataset of their own, never trained on).
#
# Steps: build-dataset on all 7 scenes (the summary's label check) and `train
# inspect` (its figure; exit 1 when it flags), `finetune --init-from MODEL` with the
# CLI defaults -> run_all; the same without the flagged scenes (--exclude-scene per
# flagged scene) -> run_clean; IoU_water on the held-out test scenes of MODEL,
# run_all and run_clean (pooled over their patches, `train evaluate`).
#
# With SHIFT=1 every chip is seen by a "new sensor" (scripts/transfer_experiment.sh's:
# σ0' = -12 + 1.25·(σ0 + 12) + 4 dB, water 3 dB brighter still), where the bundled
# model starts far from right, so that labels can make it better.
#
#   scripts/bad_label_experiment.sh [WORK_DIR]
# Env: ALOSMAP, PYTHON, MODEL (default alosmap/weights/water.safetensors), SHIFT (0),
#      FT_ARGS (extra finetune options, default "--threads 2 --workers 0 --save-last":
#      none changes the training; --save-last keeps the final epoch, scored too).
set -euo pipefail
WORK=${1:-bad_label_work}
A=${ALOSMAP:-alosmap}
PY=${PYTHON:-python}
MODEL=${MODEL:-alosmap/weights/water.safetensors}
read -r -a EXTRA <<< "${FT_ARGS:---threads 2 --workers 0 --save-last}"
SHIFT=${SHIFT:-0}
mkdir -p "$WORK"
SECONDS=0

# 1. the chips: $WORK/chips, manifest.csv (training + validation) and test.csv
PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" $PY - "$WORK" "$SHIFT" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from _water_chips import water_scene, write, write_manifest

work = Path(sys.argv[1])
out = work / "chips"
out.mkdir(exist_ok=True)
SIZE = 512
SCENES = [("t1", "train"), ("t2", "train"), ("t3", "train"), ("t4", "train"),
          ("t5", "train"), ("v1", "val"), ("v2", "val"),
          ("x1", "test"), ("x2", "test"), ("x3", "test")]
BAD = {"t2", "t4"}  # water label also over a disc of land
SHIFT = sys.argv[2] == "1"
GAIN, REF, OFFSET, WATER_EXTRA = 1.25, -12.0, 4.0, 3.0  # dB, the "new sensor"


def land_disc(label, db, rng):
    """Label as water a disc of valid land, about twice the scene's water."""
    land = (label == 0) & np.isfinite(db)
    target = 2 * max(int((label == 1).sum()), 5000)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rows, cols = np.nonzero(land)
    best = None
    for _ in range(20):  # the centre among land pixels, the radius to fit target
        k = rng.integers(rows.size)
        dist2 = (yy - rows[k]) ** 2 + (xx - cols[k]) ** 2
        order = np.sort(dist2[land])
        r2 = order[min(target, order.size - 1)]
        disc = land & (dist2 <= r2)
        if best is None or r2 < best[0]:
            best = (r2, disc)
    return best[1]


rng = np.random.default_rng(0)
rows = {"manifest": [], "test": []}
print("scene  split  bad  water_px  water_median_dB  land_median_dB")
for i, (name, split) in enumerate(SCENES):
    db, label, codes, profile = water_scene(
        work / "scenes", seed=300 + i, width=SIZE, center_lon=138.0 + 0.2 * i,
        center_lat=36.0,
    )
    if SHIFT:  # the new sensor sees the true water (JAXA 1), whatever the label says
        db = REF + GAIN * (db - REF) + OFFSET + WATER_EXTRA * (codes == 1)
    if name in BAD:
        label[land_disc(label, db, rng)] = 1
    meta = dict(profile, driver="GTiff", count=1)
    write(out / f"{name}.tif", db, meta, "float32", float("nan"))
    write(out / f"{name}_label.tif", label, meta, "uint8", 255)
    row = {"image": f"chips/{name}.tif", "label": f"chips/{name}_label.tif",
           "split": split, "scene": name}
    rows["test" if split == "test" else "manifest"].append(row)
    w, land = db[label == 1], db[label == 0]
    print(f"{name:5}  {split:5}  {'yes' if name in BAD else 'no ':3}  "
          f"{w.size:8d}  {np.nanmedian(w):15.1f}  {np.nanmedian(land):14.1f}")
for key, manifest in rows.items():
    write_manifest(work / f"{key}.csv", manifest, ["image", "label", "split", "scene"])
EOF

BUILD=(--legend water-binary --label-nodata 255 --input-units db --patch-size 256
       --overwrite)
# 2. the dataset of all 7 scenes and its label check
echo "== build-dataset (all scenes): summary"
$A train build-dataset --manifest "$WORK/manifest.csv" "${BUILD[@]}" \
    -o "$WORK/data_all" > /dev/null 2> "$WORK/build_all.log" \
    || { cat "$WORK/build_all.log"; exit 1; }
cat "$WORK/build_all.log"
echo "== train inspect"
rc=0
$A train inspect "$WORK/data_all" -o "$WORK/check.png" --overwrite \
    --json > "$WORK/check.json" || rc=$?
echo "inspect exit code: $rc (1: a scene is flagged)"
mapfile -t FLAGGED < <($PY -c '
import json, sys
print("\n".join(json.load(open(sys.argv[1]))["flagged_scenes"]))' "$WORK/check.json")
echo "flagged scenes: ${FLAGGED[*]:-none}"

# 3. finetune from the bundled model on all scenes (CLI defaults)
rm -rf "${WORK:?}/run_all" "${WORK:?}/run_clean"
echo "== finetune --init-from (all scenes)"
$A train finetune --data "$WORK/data_all" --init-from "$MODEL" -o "$WORK/run_all" \
    "${EXTRA[@]}" > /dev/null 2> "$WORK/run_all.log" \
    || { cat "$WORK/run_all.log"; exit 1; }
tail -n 3 "$WORK/run_all.log"

# 4. without the flagged scenes
EXCL=()
for s in "${FLAGGED[@]}"; do [[ -n $s ]] && EXCL+=(--exclude-scene "$s"); done
echo "== build-dataset ${EXCL[*]:-(nothing flagged)}"
$A train build-dataset --manifest "$WORK/manifest.csv" "${BUILD[@]}" "${EXCL[@]}" \
    -o "$WORK/data_clean" > /dev/null 2> "$WORK/build_clean.log" \
    || { cat "$WORK/build_clean.log"; exit 1; }
echo "== finetune --init-from (flagged scenes excluded)"
$A train finetune --data "$WORK/data_clean" --init-from "$MODEL" \
    -o "$WORK/run_clean" "${EXTRA[@]}" > /dev/null 2> "$WORK/run_clean.log" \
    || { cat "$WORK/run_clean.log"; exit 1; }
tail -n 3 "$WORK/run_clean.log"

# 5. the held-out test scenes: a dataset of their own (all test), scored per model
# (test.csv's split column: all test)
$A train build-dataset --manifest "$WORK/test.csv" "${BUILD[@]}" \
    -o "$WORK/data_test" > /dev/null 2> "$WORK/build_test.log" \
    || { cat "$WORK/build_test.log"; exit 1; }
ev() {  # ev NAME MODEL
  $A train evaluate --model "$2" --data "$WORK/data_test" --split test --json \
      > "$WORK/eval_$1.json"
}
ev start "$MODEL"
ev all "$WORK/run_all/model.safetensors"
ev clean "$WORK/run_clean/model.safetensors"
for run in all clean; do  # the final epoch too (not the kept model), for reference
  if [[ -f $WORK/run_$run/last.safetensors ]]; then
    ev "${run}_last" "$WORK/run_$run/last.safetensors"
  fi
done

$PY - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
ROWS = [("start", "bundled water model (start)"),
        ("all", "finetune --init-from, all 5 training scenes (run_all)"),
        ("clean", "finetune --init-from, flagged scenes excluded (run_clean)"),
        ("all_last", "*reference: run_all's final epoch (not kept)*"),
        ("clean_last", "*reference: run_clean's final epoch (not kept)*")]
print("| model (held-out test scenes x1-x3) | IoU_water | precision | recall |")
print("|---|---|---|---|")
for key, label in ROWS:
    if not (work / f"eval_{key}.json").exists():
        continue
    m = json.loads((work / f"eval_{key}.json").read_text())["metrics"]
    cells = " | ".join(f"{100 * m[k]:.1f}" if m[k] is not None else "n/a"
                       for k in ("iou_water", "precision", "recall"))
    print(f"| {label} | {cells} |")
EOF
echo "wall time: ${SECONDS} s"
