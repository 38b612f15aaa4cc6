"""A core install (`pip install alosmap`, no extras) runs the whole user path.

The optional modules (timm, torchvision, matplotlib, tensorboard, pystac, pyogrio)
are made unimportable in a child process, which then runs pretraining, finetuning
from that encoder, evaluation with a report, and a prediction through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

OPTIONAL = ("timm", "torchvision", "matplotlib", "tensorboard", "pystac", "pyogrio")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in {optional!r}:
        sys.modules[name] = None  # not installed
    from alosmap.cli.main import app

    codes = []
    for args in json.loads(sys.argv[1]):
        try:
            app(args, standalone_mode=False)
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code)
    print(json.dumps({{"codes": codes, "loaded": sorted(
        m for m in {optional!r} if sys.modules.get(m) is not None)}}))
    """
)


def test_a_core_install_trains_evaluates_and_maps(
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
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(optional=OPTIONAL),
         json.dumps([[str(a) for a in r] for r in runs])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "loaded": []}, proc.stderr[-3000:]
    assert "figures (PNG) skipped: pip install 'alosmap[plot]'" in proc.stderr
    assert "confusion_matrix.png skipped" in proc.stderr
    assert (pre / "encoder.safetensors").is_file() and model.is_file()
    assert (tmp_path / "eval" / "report.json").is_file()
    assert (tmp_path / "map.tif").is_file()
    assert not list(tmp_path.rglob("*.png"))
