"""The two installs run their whole user path.

* ``pip install alosmap`` (no extras): mapping with ``.onnx`` models on ONNX Runtime
  alone. PyTorch and every extra's module are made unimportable in a child process
  (a meta-path finder that refuses them), which maps a scene with the bundled default
  models, counts areas, draws water polygons, runs a batch and describes the
  machine, all without importing torch; what needs PyTorch (a ``.safetensors``
  model, training, export) is refused with one line naming ``alosmap[torch]``.
* ``pip install 'alosmap[torch]'`` without the other extras (timm, torchvision,
  matplotlib, tensorboard, pystac, pyogrio unimportable): pretraining, finetuning
  from that encoder, evaluation with a report, and a prediction through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import rasterio

from alosmap.classes import get_task

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "alosmap" / "weights"
OPTIONAL = ("timm", "torchvision", "matplotlib", "tensorboard", "pystac", "pyogrio")
#: what only the extras install: PyTorch's (torch) and every other one's
NOT_IN_CORE = ("torch", "safetensors", "onnxscript", *OPTIONAL)

#: Runs ``alosmap ARGS`` for each ARGS of argv[1] in one process, with ``BLOCKED``
#: (argv[2]) unimportable; prints the exit codes and which of them got imported.
SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = tuple(json.loads(sys.argv[2]))

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from alosmap.cli.main import run

    codes = []
    for args in json.loads(sys.argv[1]):
        sys.argv = ["alosmap", *args]
        try:
            run()
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code)
        print("--- end of", args[0], file=sys.stderr, flush=True)
    print(json.dumps({"codes": codes, "loaded": sorted(
        m for m in BLOCKED if sys.modules.get(m) is not None)}))
    """
)


def _run_without(blocked, runs, cwd):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT,
         json.dumps([[str(a) for a in r] for r in runs]), json.dumps(blocked)],
        capture_output=True, text=True, timeout=600, cwd=cwd,
        env={**os.environ, "ALOSMAP_ENGINE": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # stderr of each command, in order
    parts = proc.stderr.split("--- end of ")
    errs = [parts[0]] + [p.split("\n", 1)[1] if "\n" in p else "" for p in parts[1:]]
    return result, errs[: len(runs)], proc.stdout


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_core_install_maps_without_pytorch(tmp_path):
    from alosmap.synthetic import generate_scene

    # 300 × 260: four windows of the bundled (small preset) models per map
    small_scene = generate_scene(
        tmp_path / "scene", seed=5, width=300, height=260, write_label_tiles=False
    ).path
    lulc, water = tmp_path / "lulc.tif", tmp_path / "water.tif"
    runs = [
        ["predict", small_scene, "-o", lulc],  # the bundled lulc.onnx
        ["water", small_scene, "-o", water, "--confidence"],  # water.onnx
        ["stats", lulc, "--format", "json", "-o", tmp_path / "areas.json"],
        ["vectorize", water, "-o", tmp_path / "water.geojson"],
        ["batch", small_scene, "-o", tmp_path / "batch", "--no-stac"],
        ["info"],
        ["info", WEIGHTS / "lulc.onnx"],
        # what needs PyTorch: one line naming the extra, nothing written
        ["predict", small_scene, "-m", WEIGHTS / "lulc.safetensors",
         "-o", tmp_path / "st.tif"],
        ["export", "onnx", WEIGHTS / "lulc.safetensors", "-o", tmp_path / "x.onnx"],
        ["train", "finetune", "--data", tmp_path, "-o", tmp_path / "run"],
    ]  # fmt: skip
    result, errs, out = _run_without(NOT_IN_CORE, runs, tmp_path)
    assert result["loaded"] == [], result  # torch never imported
    assert result["codes"] == [0] * 7 + [1] * 3, (result, errs)
    for path, task in ((lulc, "lulc"), (water, "water")):
        with rasterio.open(path) as ds:
            codes = set(np.unique(ds.read(1)).tolist())
        legend = get_task(task)
        assert codes <= {c.code for c in legend.classes} | {legend.nodata}
        assert len(codes - {legend.nodata}) >= 2, (path.name, codes)  # a real map
    assert (tmp_path / "water_confidence.tif").is_file()
    assert json.loads((tmp_path / "areas.json").read_text())
    assert json.loads((tmp_path / "water.geojson").read_text())["features"]
    assert list((tmp_path / "batch").glob("*.tif"))
    assert "torch     not installed: pip install 'alosmap[torch]'" in out
    assert "backend     onnx: runs here on cpu" in out
    needs = "pip install 'alosmap[torch]'"
    for err in errs[7:]:
        assert _error_line(err).endswith(needs) or needs + " " in _error_line(err)
    assert ".safetensors models need it" in _error_line(errs[7])
    assert "lulc.safetensors (a .safetensors model) needs PyTorch" in errs[8]
    assert "this command needs PyTorch" in errs[9]
    assert not (tmp_path / "st.tif").exists() and not (tmp_path / "x.onnx").exists()
    assert not (tmp_path / "run").exists()


def test_the_bundled_models_ship_as_onnx_beside_safetensors():
    from alosmap.predict.pipeline import default_model_path
    from alosmap.spec import load_spec

    for task in ("lulc", "water"):
        onnx, st = default_model_path(task), default_model_path(task, "torch")
        assert (onnx.name, st.name) == (f"{task}.onnx", f"{task}.safetensors")
        # the same model: one spec, read without PyTorch from either file
        assert load_spec(onnx) == load_spec(st)
        assert onnx.stat().st_size < 10 * 2**20  # float16-stored weights: ~8.6 MiB
    text = (REPO / "pyproject.toml").read_text()
    assert '"weights/*.onnx"' in text


def test_a_torch_install_trains_evaluates_and_maps(
    make_training_data, small_scene, tmp_path
):
    data = make_training_data(splits=(("pretrain", 8), ("train", 8), ("val", 4)))
    fast = ["--preset", "tiny", "--epochs", "1", "--batch-size", "4"]
    fast += ["--workers", "0", "--device", "cpu"]
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    model = ft / "model.safetensors"
    runs = [
        ["train", "pretrain", "--data", data, "-o", pre, *fast],
        ["train", "finetune", "--data", data, "--task", "water", "-o", ft, *fast,
         "--pretrained", pre / "encoder.safetensors"],
        ["train", "evaluate", "--model", model, "--data", data, "--split", "val",
         "-o", tmp_path / "eval"],
        ["predict", small_scene, "--model", model, "-o", tmp_path / "map.tif"],
    ]  # fmt: skip
    result, errs, _ = _run_without(OPTIONAL, runs, tmp_path)
    assert result == {"codes": [0, 0, 0, 0], "loaded": []}, errs
    err = "".join(errs)
    assert "figures (PNG) skipped: pip install 'alosmap[plot]'" in err
    assert "confusion_matrix.png skipped" in err
    assert (pre / "encoder.safetensors").is_file() and model.is_file()
    assert (tmp_path / "eval" / "report.json").is_file()
    assert (tmp_path / "map.tif").is_file()
    assert not list(tmp_path.rglob("*.png"))
