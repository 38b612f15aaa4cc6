"""Validation that knows its noise: per-scene scores, a bootstrap interval, a kept
model that changes only beyond the noise, early stopping, the final line.

The keep rule and early stopping are driven by a deterministic sequence of
validation results (``FinetuneRun.validation_pass`` monkeypatched, indexed by the
number of log rows so that a resumed run sees the same sequence); the training
epochs in between are real (tiny preset).
"""

import csv
import math

import numpy as np
import pytest
import torch
from conftest import write_training_data
from train_runs import FAST, to_own_legend

from alosmap.arch import get_preset
from alosmap.metrics import (
    ConfusionMatrix,
    batched_score,
    bootstrap_scores,
    confusion_per_item,
    percentile_interval,
    positive_iou_name,
    water_metrics,
)
from alosmap.models import build_model
from alosmap.spec import default_spec, load_spec, save_model
from alosmap.train.data import TrainingData
from alosmap.train.dataset.record import PatchRecord, write_manifest
from alosmap.train.finetune import (
    FinetuneRun,
    Validation,
    finetune,
    gain_beyond_noise,
    make_config,
)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _set_scenes(root, scenes):
    """Give the val patches of a dataset the scenes ``scenes`` (in order)."""
    data = TrainingData(root)
    records = list(data.records)
    it = iter(scenes)
    out = [
        PatchRecord(**{**r.__dict__, "scene": next(it)}) if r.split == "val" else r
        for r in records
    ]
    write_manifest(root / "manifest.csv", out)
    return root


# -- the statistics ----------------------------------------------------------------


def test_per_item_matrices_and_batched_scores_match_the_pooled_metrics():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (5, 8, 8))
    target = rng.integers(0, 3, (5, 8, 8))
    target[0, :2] = 255  # ignored
    per = confusion_per_item(pred, target, 3)
    for b in range(5):
        cm = ConfusionMatrix(3).update(pred[b], target[b])
        assert np.array_equal(per[b], cm.matrix)
    pooled = ConfusionMatrix(3).update(pred, target)
    assert batched_score(per.sum(0), False) == pytest.approx(pooled.miou(), abs=1e-15)
    m2 = np.array([[50, 5], [10, 35]])
    assert batched_score(m2, True) == water_metrics(m2)["iou_water"]
    assert positive_iou_name("Flooded area") == "iou_flooded_area"
    assert positive_iou_name("Water") == "iou_water"


def test_bootstrap_interval_is_deterministic_and_holds_the_pooled_score():
    rng = np.random.default_rng(1)
    units = np.zeros((6, 2, 2), np.int64)  # six scenes of different difficulty
    units[:, 1, 1] = rng.integers(20, 90, 6)
    units[:, 1, 0] = 100 - units[:, 1, 1]
    units[:, 0, 1] = rng.integers(0, 20, 6)
    units[:, 0, 0] = 500
    (a,) = bootstrap_scores([units], True, resamples=500, seed=0)
    (b,) = bootstrap_scores([units], True, resamples=500, seed=0)
    assert np.array_equal(a, b)
    lo, hi = percentile_interval(a, 0.9)
    pooled = water_metrics(units.sum(0))["iou_water"]
    assert lo < pooled < hi and hi - lo > 0.05
    # paired: the same draws for two models; a model compared with itself gains 0
    same, again = bootstrap_scores([units, units], True, resamples=200)
    assert np.array_equal(same, again)
    assert gain_beyond_noise(units, units, True) == (False, 0.0)


def _water_units(tp_per_patch):
    """Per-patch water matrices: 100 water pixels each, ``tp`` of them found."""
    tp = np.asarray(tp_per_patch)
    m = np.zeros((len(tp), 2, 2), np.int64)
    m[:, 1, 1], m[:, 1, 0], m[:, 0, 0] = tp, 100 - tp, 300
    return m


#: patch scores 0.5 each; a pooled gain carried by one patch (another got worse);
#: a gain on every patch
BASE = _water_units([50, 50, 50, 50])
NOISY = _water_units([90, 20, 55, 50])
BETTER = _water_units([70, 68, 72, 70])


def test_a_gain_within_the_noise_is_not_kept():
    pooled = batched_score(NOISY.sum(0), True)
    assert pooled > batched_score(BASE.sum(0), True)  # better on the pooled score
    keep, lo = gain_beyond_noise(NOISY, BASE, True)
    assert not keep and lo < 0
    keep, lo = gain_beyond_noise(BETTER, BASE, True)
    assert keep and lo > 0.15
    keep, lo = gain_beyond_noise(BASE, None, True)  # nothing kept yet
    assert keep and math.isnan(lo)


# -- runs driven by a fake validation sequence -------------------------------------


@pytest.fixture(scope="module")
def water_data(tmp_path_factory):
    """8 training and 4 validation patches (one scene: the units are patches)."""
    root = tmp_path_factory.mktemp("noise")
    return write_training_data(root / "data", splits=(("train", 8), ("val", 4)))


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """An untrained tiny water model to start from (``--init-from``)."""
    arch = get_preset("tiny", img_size=64, num_classes=1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("start") / "start.safetensors"
    return save_model(build_model(arch), default_spec("water", arch), path)


def _fake_validation(monkeypatch, sequence):
    """``validation_pass`` returns ``sequence[len(rows)]`` (a resume sees the same)."""

    def fake(self):
        units = sequence[min(len(self.rows), len(sequence) - 1)]
        return Validation(units.copy(), loss=0.25 + 0.01 * len(self.rows))

    monkeypatch.setattr(FinetuneRun, "validation_pass", fake)


INIT = {k: v for k, v in FAST.items() if k != "preset"}


def test_the_kept_model_changes_only_beyond_the_noise(
    water_data, start_model, tmp_path, monkeypatch
):
    _fake_validation(monkeypatch, [BASE, NOISY, NOISY, BETTER, NOISY])
    lines = []
    out = tmp_path / "run"
    res = finetune(water_data, "water", out, init_from=start_model, epochs=4,
                   patience=0, log=lines.append, **INIT)  # fmt: skip
    rows = _rows(out / "log.csv")
    assert [int(r["kept_epoch"]) for r in rows] == [0, 0, 0, 3, 3]
    assert float(rows[1]["val_iou_water"]) > float(rows[0]["val_iou_water"])
    assert float(rows[1]["gain_lo"]) < 0 < float(rows[3]["gain_lo"])
    assert rows[0]["gain_lo"] == ""  # nothing to compare the start with
    assert res.best_epoch == 3 and res.best_score == pytest.approx(0.7)
    assert res.start_score == pytest.approx(0.5) and res.finished
    assert not res.stopped_early
    assert load_spec(res.model_path).provenance["best_epoch"] == "3"
    final = lines[-1]
    assert final.startswith("kept epoch 3: iou_water 70.00% [")
    assert "the --init-from model (epoch 0): 50.00% [" in final
    assert final.endswith("all 4 epochs done")
    assert "note: val holds 4 patches of 1 scene(s)" in "\n".join(lines)


def test_early_stopping_and_a_resume_continue_the_count(
    water_data, start_model, tmp_path, monkeypatch
):
    _fake_validation(monkeypatch, [BASE, NOISY])  # never beyond the noise
    out = tmp_path / "run"
    lines = []
    opts = dict(init_from=start_model, epochs=10, patience=3, log=lines.append, **INIT)
    first = finetune(water_data, "water", out, stop_after=2, **opts)
    assert first.epochs_done == 2 and not first.finished and not first.stopped_early
    assert "paused after epoch 2 of 10 (--stop-after)" in lines[-1]
    second = finetune(water_data, "water", out, **opts)  # resumes: 1 more epoch
    assert second.epochs_done == 3 and second.finished and second.stopped_early
    assert [int(r["epoch"]) for r in _rows(out / "log.csv")] == [0, 1, 2, 3]
    assert lines[-1] == (
        "kept epoch 0 (the --init-from model, unchanged): iou_water 50.00% "
        "[50.00-50.00] (90 % interval over patches); early stop after epoch 3 of "
        "10: 3 epochs without a gain beyond the noise (--patience 3)"
    )
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["best_epoch"] == 0 and ckpt["kept_units"].shape == (4, 2, 2)
    # a run that stopped early is finished: resuming it trains nothing
    again = finetune(water_data, "water", out, **opts)
    assert again.epochs_done == 3 and again.stopped_early
    assert len(_rows(out / "log.csv")) == 4


def test_transfer_defaults(water_data, tmp_path):
    from alosmap.train import defaults

    cfg = make_config(water_data, "water", tmp_path / "a", init_from=tmp_path / "m")
    assert (cfg.epochs, cfg.lr, cfg.warmup_epochs, cfg.patience) == (
        defaults.INIT_EPOCHS,
        defaults.INIT_LR,
        defaults.INIT_WARMUP,
        defaults.INIT_PATIENCE,
    )
    scratch = make_config(water_data, "water", tmp_path / "b")
    assert (scratch.epochs, scratch.lr, scratch.patience) == (100, None, 0)
    given = make_config(water_data, "water", tmp_path / "c", init_from=tmp_path / "m",
                        epochs=7, patience=0)  # fmt: skip
    assert (given.epochs, given.patience, given.warmup_epochs) == (7, 0, 1)


# -- real validation passes --------------------------------------------------------


def test_val_loss_interval_and_per_scene_columns(tmp_path):
    data = write_training_data(tmp_path / "data", splits=(("train", 8), ("val", 6)))
    _set_scenes(data, ["s1", "s1", "s2", "s2", "s 3", "s 3"])
    lines = []
    finetune(data, "water", tmp_path / "run", epochs=2, log=lines.append, **FAST)
    rows = _rows(tmp_path / "run" / "log.csv")
    for r in rows:
        score, lo, hi = (float(r[f"val_iou_water{s}"]) for s in ("", "_lo", "_hi"))
        assert lo <= score <= hi
        assert float(r["val_loss"]) > 0
        scenes = [float(r[f"val_iou_water@{s}"]) for s in ("s1", "s2", "s_3")]
        assert all(0 <= v <= 1 for v in scenes)
    assert "note: val holds" not in "\n".join(lines)  # 3 scenes: scenes resampled
    assert rows[0]["kept_epoch"] == "1"  # from scratch: the first epoch
    assert "(90 % interval over scenes)" in lines[-1]
    assert lines[-1].endswith("all 2 epochs done")
    assert "the --init-from model" not in lines[-1]


FLOOD = {
    "name": "flood",
    "binary": True,
    "nodata": 255,
    "ignore": [0],
    "classes": [
        {"name": "Dry", "values": [2, 4, 5, 8], "code": 0, "color": "#d0d0c0"},
        {"name": "Flooded area", "values": [1], "code": 1, "color": "#0050ff"},
    ],
}


def test_a_custom_binary_legend_logs_its_class(tmp_path):
    data = write_training_data(tmp_path / "data", splits=(("train", 8), ("val", 4)))
    to_own_legend(data, FLOOD)
    lines = []
    res = finetune(data, None, tmp_path / "run", epochs=1, log=lines.append, **FAST)
    rows = _rows(tmp_path / "run" / "log.csv")
    assert {"val_iou_flooded_area", "val_iou_flooded_area_lo"} <= set(rows[0])
    assert not any("iou_water" in k for k in rows[0])
    assert "iou_flooded_area" in lines[-1]
    assert math.isfinite(res.best_score)


@pytest.mark.slow
def test_ddp_per_patch_matrices_match_one_process(water_data, tmp_path):
    """Epoch 0 under torchrun (2 ranks, each half of the val patches) = 1 process."""
    import os
    import subprocess
    import sys

    # a model that finds some water (an untrained one scores 0 everywhere)
    start_model = finetune(water_data, "water", tmp_path / "base", epochs=3,
                           **FAST).model_path  # fmt: skip
    args = ["--data", str(water_data), "--task", "water", "--init-from",
            str(start_model), "--epochs", "1", "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--lr", "1e-3"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node", "2", "-m", "alosmap", "train", "finetune", *args,
         "-o", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    finetune(water_data, "water", tmp_path / "one", init_from=start_model, epochs=1,
             batch_size=2, workers=0, device="cpu", lr=1e-3)  # fmt: skip
    ddp = _rows(tmp_path / "ddp" / "log.csv")[0]
    one = _rows(tmp_path / "one" / "log.csv")[0]
    assert 0 < float(one["val_iou_water"]) <= float(one["val_iou_water_hi"])
    for key in ("val_iou_water", "val_iou_water_lo", "val_iou_water_hi",
                "val_precision", "val_iou_water@synthetic"):  # fmt: skip
        assert float(ddp[key]) == pytest.approx(float(one[key]), abs=1e-9), key
