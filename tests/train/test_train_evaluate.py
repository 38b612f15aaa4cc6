"""Evaluation: known answers, the model spec's normalisation, report files and CLI."""

import json

import numpy as np
import torch
from conftest import TRAINING_SIGMA0
from torch import nn
from typer.testing import CliRunner

from alosmap.arch import get_preset
from alosmap.classes import jaxa_to_training
from alosmap.cli.main import app
from alosmap.metrics import ConfusionMatrix
from alosmap.spec import Radiometry, default_spec
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.evaluate import evaluate, format_table, normalise_db

runner = CliRunner()
SPEC_RAD = Radiometry(mean_db=-11.0, std_db=9.0)


class Oracle(nn.Module):
    """Classifies noise-free patches by σ0, de-normalised with the SPEC's stats."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        codes = sorted(TRAINING_SIGMA0)
        self.register_buffer("db", torch.tensor([TRAINING_SIGMA0[c] for c in codes]))
        idx = jaxa_to_training(np.array(codes, np.uint8), task).astype(np.int64)
        self.register_buffer("index", torch.from_numpy(idx))

    def forward(self, x):
        db = x[:, 0] * SPEC_RAD.std_db + SPEC_RAD.mean_db
        nearest = (db[..., None] - self.db).abs().argmin(-1)
        cls = self.index[nearest]
        if self.task == "water":
            return (cls.float() * 20 - 10)[:, None]
        return torch.nn.functional.one_hot(cls, 9).permute(0, 3, 1, 2).float()


def _noise_free(make_training_data):
    # dataset stats deliberately far from the spec's: using them would break the oracle
    return TrainingData(make_training_data(noise_db=0.0, mean_db=5.0, std_db=1.0))


def test_perfect_lulc_model(make_training_data):
    data = _noise_free(make_training_data)
    spec = default_spec("lulc", get_preset("tiny", img_size=64), radiometry=SPEC_RAD)
    report = evaluate(Oracle("lulc"), spec, data, "test", batch_size=3)
    m = report["metrics"]
    assert m["miou"] == 1.0 and m["macc"] == 1.0 and m["overall_accuracy"] == 1.0
    cm = np.array(report["confusion_matrix"])
    assert (cm == np.diag(np.diag(cm))).all()
    # counts equal the valid test labels per class
    ds = PatchDataset(data, "test", "lulc")
    y = np.stack([ds[i][1].numpy() for i in range(len(ds))])
    assert np.diag(cm).tolist() == np.bincount(y[y != 255], minlength=9).tolist()
    assert m["per_class"]["Solar panel"]["iou"] is None  # absent class: n/a
    table = format_table(report)
    assert "mIoU" in table and "100.00" in table and "n/a" in table


def test_perfect_water_model(make_training_data):
    data = _noise_free(make_training_data)
    spec = default_spec("water", get_preset("tiny", img_size=64), radiometry=SPEC_RAD)
    report = evaluate(Oracle("water"), spec, data, "val")
    assert report["metrics"]["iou_water"] == 1.0
    assert report["metrics"]["precision"] == 1.0
    assert report["metrics"]["recall"] == 1.0
    assert "IoU_water" in format_table(report)


def test_cli_matches_direct_computation(make_training_data, tmp_path):
    from alosmap.models import build_model
    from alosmap.spec import save_model

    data_dir = make_training_data()
    spec = default_spec("lulc", get_preset("tiny", img_size=64), radiometry=SPEC_RAD)
    torch.manual_seed(3)
    m64 = build_model(spec.arch).eval()
    model_file = save_model(m64, spec, tmp_path / "m64.safetensors")

    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            *("train", "evaluate", "--model", str(model_file)),
            *("--data", str(data_dir), "--split", "val", "-o", str(out), "--json"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert set(report) >= {"task", "split", "metrics", "confusion_matrix", "classes"}
    assert report["split"] == "val" and report["patches"] == 4
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # direct computation with the spec's normalisation
    ds = PatchDataset(TrainingData(data_dir), "val", "lulc", return_db=True)
    cm = ConfusionMatrix(9)
    with torch.no_grad():
        for i in range(len(ds)):
            _, y, db = ds[i]
            cm.update(m64(normalise_db(db[None], spec)).argmax(1)[0], y)
    assert report["confusion_matrix"] == cm.matrix.tolist()

    res = runner.invoke(
        app, ["train", "evaluate", "--model", str(model_file), "--data", str(data_dir)]
    )
    assert res.exit_code == 0 and "IoU" in res.output and "mIoU" in res.output


def test_cli_bad_data(tmp_path, tiny_lulc_model):
    res = runner.invoke(
        app,
        ["train", "evaluate", "--model", str(tiny_lulc_model), "--data", str(tmp_path)],
    )
    assert res.exit_code == 1
    assert "not an alosmap dataset" in str(res.exception)


def test_report_without_matplotlib_skips_only_the_figure(
    make_training_data, tmp_path, monkeypatch
):
    """A core install: report.json is written, the PNG skipped with one warning (it
    failed with exit 1 after writing the report before)."""
    import sys

    from alosmap.models import build_model
    from alosmap.spec import save_model

    data_dir = make_training_data()
    spec = default_spec("lulc", get_preset("tiny", img_size=64), radiometry=SPEC_RAD)
    model_file = save_model(
        build_model(spec.arch).eval(), spec, tmp_path / "m.safetensors"
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            *("train", "evaluate", "--model", str(model_file)),
            *("--data", str(data_dir), "--split", "val", "-o", str(out)),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "report.json").read_text())["split"] == "val"
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert "confusion_matrix.png skipped: pip install 'alosmap[plot]'" in res.output
