#!/usr/bin/env bash
# Transfer to a "new sensor" (README table): the bundled water model, label-free
# adaptation (`train adapt`), finetuning from the bundled model (`train finetune
# --init-from`) and training from scratch, scored on held-out chips of that sensor.
#
# The new sensor: synthetic ALOS-2-like scenes (alosmap.synthetic, 4 scenes of 1024²)
# whose σ0 is changed as σ0' = -12 + 1.25·(σ0 + 12) + 4 dB (a gain and a calibration
# offset), water 3 dB brighter still (rougher water: less contrast with paddy and
# bare land), written as 512² chips of float32 dB (NaN no data) with 0/1 water
# labels (255 no label): another format than ALOS-2's uint16 DN. Scenes 1-2 give 6
# training and 2 validation chips (the split by chip is the manifest's column),
# scenes 3-4 the 8 held-out test chips. The same chips as ALOS-2 sees them (no
# change) give the bundled model's score before the shift.
#
#   scripts/transfer_experiment.sh [WORK_DIR]     (about 20 minutes on 2 CPU cores)
# Env: ALOSMAP, PYTHON, MODEL (default alosmap/weights/water.safetensors), EPOCHS (10).
set -euo pipefail
WORK=${1:-transfer_work}
A=${ALOSMAP:-alosmap}
PY=${PYTHON:-python}
MODEL=${MODEL:-alosmap/weights/water.safetensors}
EPOCHS=${EPOCHS:-10}
mkdir -p "$WORK"

# 1. the chips: $WORK/new (the new sensor) and $WORK/alos2 (the same, unchanged)
PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" $PY - "$WORK" <<'EOF'
import sys
from pathlib import Path

from _water_chips import water_scene, write, write_manifest
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

work = Path(sys.argv[1])
GAIN, REF, OFFSET, WATER_EXTRA = 1.25, -12.0, 4.0, 3.0  # dB
CHIP = 512
ROLE = {1: "trainval", 2: "trainval", 3: "test", 4: "test"}
VAL = {(1, 3), (2, 0)}  # (scene, chip) kept for validation


def new_sensor(db, water):
    out = REF + GAIN * (db - REF) + OFFSET
    out[water] += WATER_EXTRA
    return out


rows = {"new": [], "alos2": []}
for s, role in ROLE.items():
    db, label, _, profile = water_scene(
        work / "scenes", seed=100 + s, width=1024, center_lon=139.0 + 0.3 * s,
        center_lat=35.0,
    )
    images = {"alos2": db, "new": new_sensor(db, label == 1)}
    for k, (r, c) in enumerate([(0, 0), (0, CHIP), (CHIP, 0), (CHIP, CHIP)]):
        split = "test" if role == "test" else ("val" if (s, k) in VAL else "train")
        win = Window(c, r, CHIP, CHIP)
        meta = dict(profile, driver="GTiff", width=CHIP, height=CHIP, count=1,
                    transform=window_transform(win, profile["transform"]))
        name = f"chip_s{s}_{k}"
        for version, image in images.items():
            d = work / version
            d.mkdir(exist_ok=True)
            window = (slice(r, r + CHIP), slice(c, c + CHIP))
            write(d / f"{name}.tif", image[window], meta, "float32", float("nan"))
            write(d / f"{name}_label.tif", label[window], meta, "uint8", 255)
            rows[version].append(
                {"image": f"{name}.tif", "label": f"{name}_label.tif", "split": split}
            )
for version, manifest in rows.items():
    write_manifest(work / version / "manifest.csv", manifest, ["image", "label", "split"])
    with open(work / version / "unlabelled.txt", "w") as f:  # chips adapt may see
        f.writelines(f"{work / version / m['image']}\n" for m in manifest
                     if m["split"] != "test")
EOF

# 2. the datasets (the general build-dataset path: manifest + the water-binary legend)
for version in new alos2; do
  $A train build-dataset --manifest "$WORK/$version/manifest.csv" \
      --legend water-binary -o "$WORK/data_$version" --overwrite > /dev/null
done

# 3. the models
mapfile -t UNLABELLED < "$WORK/new/unlabelled.txt"
# label-free: the training and validation chips' images, never the held-out ones
$A train adapt "$MODEL" --images "${UNLABELLED[@]}" -o "$WORK/adapted.safetensors" \
    --overwrite > /dev/null
FT=(--data "$WORK/data_new" --epochs "$EPOCHS" --workers 0 --seed 0)
for run in ft_init ft_adapted scratch; do rm -rf "${WORK:?}/$run"; done
# learning rates chosen on the validation chips (1e-3 and 3e-4 tried for each)
$A train finetune "${FT[@]}" --init-from "$MODEL" -o "$WORK/ft_init" \
    --normalization data --lr 3e-4 > /dev/null
$A train finetune "${FT[@]}" --init-from "$WORK/adapted.safetensors" \
    -o "$WORK/ft_adapted" --lr 3e-4 > /dev/null
$A train finetune "${FT[@]}" -o "$WORK/scratch" --lr 1e-3 --layer-decay 1.0 \
    --warmup-epochs 2 > /dev/null

# 4. scores on the held-out chips (test split)
ev() {  # ev NAME MODEL DATA
  $A train evaluate --model "$2" --data "$3" --split test --json > "$WORK/eval_$1.json"
}
ev bundled_alos2 "$MODEL" "$WORK/data_alos2"
ev bundled "$MODEL" "$WORK/data_new"
ev adapted "$WORK/adapted.safetensors" "$WORK/data_new"
ev ft_init "$WORK/ft_init/model.safetensors" "$WORK/data_new"
ev ft_adapted "$WORK/ft_adapted/model.safetensors" "$WORK/data_new"
ev scratch "$WORK/scratch/model.safetensors" "$WORK/data_new"

$PY - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
ROWS = [
    ("bundled", "bundled water model (no labels, no change)"),
    ("adapted", "`train adapt` (no labels: normalisation + BatchNorm statistics)"),
    ("ft_init", "`finetune --init-from` the bundled model (`--normalization data`)"),
    ("ft_adapted", "`finetune --init-from` the adapted model"),
    ("scratch", "training from scratch on the same chips"),
    ("bundled_alos2", "*reference: bundled model on the same chips before the shift*"),
]
print("| model | IoU_water | precision | recall |")
print("|---|---|---|---|")
for key, label in ROWS:
    m = json.loads((work / f"eval_{key}.json").read_text())["metrics"]
    cells = " | ".join(
        f"{100 * m[k]:.1f}" if m[k] is not None else "n/a"
        for k in ("iou_water", "precision", "recall")
    )
    print(f"| {label} | {cells} |")
EOF
