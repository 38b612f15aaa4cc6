"""Issue 14's "done when": labelled chips of another sensor → dataset → model → map,
with the command line only.

The chips are not ALOS-2: 2-band float32 σ0 dB (VV, VH), NaN no data, no dates, 0/1
labels with −1 for "no label" on another grid and CRS; the user's legend is a YAML
file ("flood": 0 dry, 1 flooded, binary).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from test_build_general import _water_mask, make_chips

LEGEND = """\
name: flood
title: Flood map
binary: true
ignore: [-1]
classes:
  - {name: Dry, values: [0], color: "#d2b48c"}
  - {name: Flooded, values: [1], color: [0, 60, 255]}
"""


@pytest.mark.slow
def test_chips_to_model_to_map_with_the_cli_only(tmp_path, cli):
    chips, labels = make_chips(tmp_path, n=6)
    legend = tmp_path / "flood.yaml"
    legend.write_text(LEGEND, encoding="utf-8")
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "maps"
    out.mkdir()

    # 1. the dataset: band 1 (VV), the user's legend, split by chip
    code, _, err = cli(
        "train", "build-dataset", "--images", chips, "--labels", labels,
        "--label-pattern", "{stem}_label.tif", "--legend", legend, "--band", "1",
        "--patch-size", "32", "--split", "0.67/0.33/0", "-o", data,
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["legend"]["name"] == "flood" and meta["radiometry"]["units"] == "db"

    # 2. the model (laptop defaults but a tiny network and few epochs for the test)
    code, stdout, err = cli(
        "train", "finetune", "--data", data, "--preset", "tiny", "--epochs", "3",
        "--lr", "3e-3", "--layer-decay", "1", "--warmup-epochs", "0", "-o", run,
    )  # fmt: skip
    assert code == 0, err
    model = run / "model.safetensors"
    assert stdout.strip().endswith(str(model))
    code, stdout, err = cli("info", model)
    assert code == 0 and "flood" in stdout and "Flooded" in stdout

    # 3. a map of a chip: the model's radiometry (dB, band 1) and legend, no options
    code, stdout, err = cli("predict", chips / "chip_0.tif", "--model", model,
                            "--band", "1", "-o", out / "chip_0_flood.tif")  # fmt: skip
    assert code == 0, err
    with (
        rasterio.open(out / "chip_0_flood.tif") as m,
        rasterio.open(chips / "chip_0.tif") as src,
    ):
        assert m.crs == src.crs and m.transform == src.transform
        classes = m.read(1)
        assert m.nodata == 255
        cmap = m.colormap(1)
        assert cmap[0][:3] == (210, 180, 140) and cmap[1][:3] == (0, 60, 255)
        assert json.loads(m.tags()["CLASS_NAMES"]) == {"0": "Dry", "1": "Flooded"}
        nan = np.isnan(src.read(1))
    assert (classes[nan] == 255).all() and set(np.unique(classes[~nan])) <= {0, 1}
    # the model learned something: most chip pixels right (water −21 dB vs −8 dB)
    water = _water_mask(0)
    agree = (classes == water.astype(np.uint8))[~nan].mean()
    assert agree > 0.8, agree
    assert (out / "chip_0_flood.tif.qml").is_file() or (
        out / "chip_0_flood.qml"
    ).is_file()
