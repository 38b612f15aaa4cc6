"""Finetuning for small data and transfer, through ``alosmap train finetune``.

``--init-from`` a trained model (its weights really load: epoch 0 is its
evaluation), legend and architecture checks, ``--reinit-head``,
``--normalization``, ``--freeze``, ``--save-last``/``--save-every``,
``--threads``, the small-data defaults and the radiometry the spec records.
"""

import csv
import json
import re

import numpy as np
import pytest
import torch
from conftest import write_training_data
from safetensors.torch import load_file
from train_runs import FAST, FAST_CLI, to_own_legend
from typer.testing import CliRunner

from alosmap.cli.main import app
from alosmap.spec import load_model, load_spec
from alosmap.train.data import TrainingData
from alosmap.train.finetune import finetune

runner = CliRunner()


def _finetune(*args):
    res = runner.invoke(app, ["train", "finetune", *map(str, args)])
    return res


def _ok(*args):
    res = _finetune(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _fails(match, *args):
    res = _finetune(*args)
    assert res.exit_code == 1, res.output
    assert re.search(match, str(res.exception)), str(res.exception)
    return str(res.exception)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _evaluate(model, data, split="val"):
    res = runner.invoke(
        app,
        ["train", "evaluate", "--model", str(model), "--data", str(data),
         "--split", split, "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny water model trained from scratch on a dataset of JAXA codes."""
    root = tmp_path_factory.mktemp("transfer")
    data = write_training_data(root / "data", splits=(("train", 8), ("val", 4)))
    res = finetune(data, "water", root / "base", epochs=3, seed=0, **FAST)
    return data, res.model_path


def _same(a, b, keys):
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_init_from_starts_from_the_model(base, tmp_path):
    """Epoch 0 is the starting model's own evaluation; its normalisation is kept."""
    data, model = base
    out = tmp_path / "ft"
    res = _ok("--data", data, "--task", "water", "-o", out, "--init-from", model,
              "--epochs", "2", "--batch-size", "4", *FAST_CLI)  # fmt: skip
    assert res.stdout.strip() == str(out / "model.safetensors")
    rows = _rows(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[0]["train_loss"] == "" and rows[1]["train_loss"] != ""
    assert list(rows[0])[:3] == ["epoch", "lr", "train_loss"]  # a full row's order
    report = _evaluate(model, data)
    assert float(rows[0]["val_iou_water"]) == pytest.approx(
        report["metrics"]["iou_water"], abs=1e-12
    )
    assert "epoch 0 (the --init-from model)" in res.stderr
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["config"]["warmup_epochs"] == 1  # short warm-up from a model
    src, new = load_spec(model), load_spec(out / "model.safetensors")
    assert new.arch.replace(dropout=0.1) == src.arch.replace(dropout=0.1)
    assert new.radiometry.mean_db == src.radiometry.mean_db  # "model" by default
    assert new.radiometry.std_db == src.radiometry.std_db
    assert new.provenance["normalization"] == "model"
    assert new.provenance["init_from"] == f"{model.name} ({src.name})"
    assert str(model.parent) not in json.dumps(new.provenance)  # no path of ours
    assert new.provenance["best_epoch"] == str(ckpt["best_epoch"])


def test_a_worse_run_keeps_the_starting_model(base, tmp_path):
    """Best on validation can be "no change": model.safetensors stays the input."""
    data, model = base
    out = tmp_path / "bad"
    _ok("--data", data, "--task", "water", "-o", out, "--init-from", model,
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
        "--lr", "3", "--warmup-epochs", "0", "--save-last")  # fmt: skip
    rows = _rows(out / "log.csv")
    assert float(rows[1]["val_iou_water"]) < float(rows[0]["val_iou_water"])
    kept, start = load_file(out / "model.safetensors"), load_file(model)
    assert _same(kept, start, start)
    assert load_spec(out / "model.safetensors").provenance["best_epoch"] == "0"
    last = load_file(out / "last.safetensors")
    assert not _same(last, start, start)


def test_normalization_data_and_dataset_radiometry(base, tmp_path):
    data, model = base
    meta = json.loads((data / "dataset.json").read_text())
    own = tmp_path / "data"
    own.mkdir()
    for name in ("sar_db.npy", "labels.npy", "manifest.csv"):
        (own / name).write_bytes((data / name).read_bytes())
    record = {"band": 2, "units": "db", "backscatter": "gamma0"}
    (own / "dataset.json").write_text(json.dumps({**meta, "radiometry": record}))
    out = tmp_path / "ft"
    _ok("--data", own, "--task", "water", "-o", out, "--init-from", model,
        "--normalization", "data", "--epochs", "1", "--batch-size", "4",
        *FAST_CLI)  # fmt: skip
    spec = load_spec(out / "model.safetensors")
    rad = spec.radiometry
    assert rad.mean_db == pytest.approx(TrainingData(own).mean_db)
    assert rad.std_db == pytest.approx(TrainingData(own).std_db)
    assert (rad.band, rad.units, rad.backscatter) == (2, "db", "gamma0")
    assert spec.provenance["normalization"] == "data"
    # epoch 0 evaluates the starting weights with the data's statistics
    assert _rows(out / "log.csv")[0]["epoch"] == "0"
    # without a record: the ALOS-2 L2.1 defaults (and from scratch: data stats)
    spec0 = load_spec(model)
    assert (spec0.radiometry.units, spec0.radiometry.backscatter) == ("dn", "sigma0")
    assert spec0.radiometry.mean_db == pytest.approx(TrainingData(data).mean_db)
    _fails("--normalization model takes the mean/std of the --init-from",
           "--data", data, "--task", "water", "-o", tmp_path / "x",
           "--normalization", "model", *FAST_CLI)  # fmt: skip


def test_legend_mismatch_reinit_head_and_freeze(base, tmp_path):
    """Another legend: a one-line error, or a new head (encoder+decoder frozen)."""
    data, model = base
    own = tmp_path / "own"
    write_training_data(own, splits=(("train", 8), ("val", 4)))
    to_own_legend(own)
    msg = _fails("--reinit-head", "--data", own, "-o", tmp_path / "a",
                 "--init-from", model, *FAST_CLI)  # fmt: skip
    assert "landcover3" in msg and "water" in msg and "\n" not in msg
    out = tmp_path / "b"
    _ok("--data", own, "-o", out, "--init-from", model, "--reinit-head",
        "--freeze", "encoder+decoder", "--epochs", "1", "--batch-size", "4",
        "--save-last", *FAST_CLI)  # fmt: skip
    _model, spec = load_model(out / "last.safetensors")
    assert spec.task == "landcover3" and spec.num_outputs == 3
    assert spec.legend.same_outputs(TrainingData(own).own_legend)
    assert [c.name for c in spec.classes] == ["Water", "Urban", "Vegetation"]
    start, last = load_file(model), load_file(out / "last.safetensors")
    kept = [k for k in start if k.startswith(("encoder.", "decoder."))]
    assert kept and _same(start, last, kept)  # BatchNorm statistics too
    head = [k for k in last if k.startswith("head.conv_seg.")]
    assert last["head.conv_seg.weight"].shape[0] == 3 and head
    ckpt = torch.load(out / "last.pt", weights_only=True)
    n_opt = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    assert n_opt == sum(1 for k in _model.state_dict() if k.startswith("head.")
                        and "running" not in k and "num_batches" not in k)  # fmt: skip
    # the custom legend through evaluate
    report = _evaluate(out / "last.safetensors", own)
    assert report["task"] == "landcover3" and report["classes"][2] == "Vegetation"
    # a JAXA-code dataset needs --task; a legend dataset refuses another task
    _fails("name one \\(--task\\)", "--data", data, "-o", tmp_path / "c",
           *FAST_CLI)  # fmt: skip
    _fails("leave --task out", "--data", own, "--task", "water", "-o",
           tmp_path / "d", *FAST_CLI)  # fmt: skip


def test_freeze_encoder_trains_the_rest(base, tmp_path):
    data, model = base
    out = tmp_path / "ft"
    _ok("--data", data, "--task", "water", "-o", out, "--init-from", model,
        "--freeze", "encoder", "--epochs", "1", "--batch-size", "4", "--save-last",
        *FAST_CLI)  # fmt: skip
    start, last = load_file(model), load_file(out / "last.safetensors")
    enc = [k for k in start if k.startswith("encoder.")]
    assert enc and _same(start, last, enc)
    dec = [k for k in start if k.startswith("decoder.") and k.endswith("weight")]
    assert not _same(start, last, dec)
    assert not torch.equal(
        start["decoder.bottleneck.bn.running_mean"],
        last["decoder.bottleneck.bn.running_mean"],
    )
    _fails("needs --init-from", "--data", data, "--task", "water", "-o",
           tmp_path / "x", "--freeze", "encoder", *FAST_CLI)  # fmt: skip


def test_save_last_every_and_threads(make_training_data, tmp_path):
    data = make_training_data(splits=(("train", 8), ("val", 4)))
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        _ok("--data", data, "--task", "lulc", "-o", out, "--preset", "tiny",
            "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "4",
            "--save-last", "--save-every", "2", "--threads", "1",
            *FAST_CLI)  # fmt: skip
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "epoch_002.safetensors",
        "last.safetensors",
        "model.safetensors",
    ]
    for name, epoch in (("epoch_002", "2"), ("last", "3")):
        _model, spec = load_model(out / f"{name}.safetensors")
        assert spec.provenance["epoch"] == epoch and spec.task == "lulc"
    ckpt = torch.load(out / "last.pt", weights_only=True)
    last = load_file(out / "last.safetensors")
    assert _same(last, ckpt["model"], last)
    rows = _rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # no epoch 0 from scratch


def test_small_data_defaults(make_training_data, tmp_path):
    """Fewer patches than the default batch: a note, not an error; preset small."""
    data = make_training_data(splits=(("train", 5), ("val", 2)))
    out = tmp_path / "run"
    res = _ok("--data", data, "--task", "water", "-o", out, "--epochs", "1",
              "--workers", "0", "--device", "cpu")  # fmt: skip
    assert "--batch-size 8 is more than the 5 training patches" in res.stderr
    assert "using --batch-size 5" in res.stderr
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["config"]["global_batch"] == 5 and ckpt["step"] == 1
    assert ckpt["config"]["warmup_epochs"] == 0  # at most half of 1 epoch
    spec = load_spec(out / "model.safetensors")
    assert spec.name == "small-water" and spec.arch.embed_dim == 32
    help_text = runner.invoke(app, ["train", "finetune", "--help"]).output
    flat = " ".join(help_text.replace("│", " ").split())
    assert "--preset paper --batch-size 64" in flat
    assert "small (default" in flat and "1 with --init-from" in flat


def test_bad_init_from(base, tmp_path, make_training_data):
    data, model = base
    base_args = ("--data", data, "--task", "water", *FAST_CLI)
    _fails("choose one", *base_args, "-o", tmp_path / "a", "--init-from", model,
           "--pretrained", model)  # fmt: skip
    _fails(r"another architecture than --preset small \(embed_dim",
           *base_args, "-o", tmp_path / "b", "--init-from", model,
           "--preset", "small")  # fmt: skip
    from alosmap.train.checkpoint import save_encoder

    m, spec = load_model(model)
    enc = save_encoder(m.encoder, spec.arch, tmp_path / "enc.safetensors")
    _fails("pass it as --pretrained", *base_args, "-o", tmp_path / "c",
           "--init-from", enc)  # fmt: skip
    res = runner.invoke(
        app, ["train", "init", "--preset", "tiny", "--task", "water",
              "-o", str(tmp_path / "m256.safetensors")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # 64-px patches fit the 256-px model (rebuilt for them:
    # test_transfer_frictions.py); 72-px ones do not
    d72 = make_training_data("d72", size=72, splits=(("train", 2), ("val", 2)))
    _fails("72-px patches do not fit the model", "--data", d72, "--task", "water",
           *FAST_CLI, "-o", tmp_path / "d",
           "--init-from", tmp_path / "m256.safetensors")  # fmt: skip
    # the output may not replace the model it starts from
    _fails("is the input", *base_args, "-o", model.parent, "--init-from", model)


@pytest.mark.slow
def test_exact_resume_from_init(base, tmp_path):
    data, model = base
    opts = dict(epochs=2, seed=3, init_from=model, **FAST)
    del opts["preset"]
    finetune(data, "water", tmp_path / "straight", **opts)
    first = finetune(data, "water", tmp_path / "killed", stop_after=1, **opts)
    assert first.epochs_done == 1 and not first.finished
    finetune(data, "water", tmp_path / "killed", **opts)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert _same(a["model"], b["model"], a["model"])

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(_rows(tmp_path / "straight" / "log.csv")) == strip(
        _rows(tmp_path / "killed" / "log.csv")
    )
    assert np.isfinite(
        float(_rows(tmp_path / "killed" / "log.csv")[0]["val_iou_water"])
    )


def test_init_from_default_lr(make_training_data, tmp_path):
    """With --init-from and no LR given: 3e-4 absolute (the paper's rule at batch 8
    gives 1.9e-5, too little for a few epochs); 20 epochs, early stopping after 5;
    an LR or base LR given is kept."""
    from alosmap.train.finetune import INIT_LR, make_config

    data = make_training_data(splits=(("train", 4), ("val", 2)))
    model = tmp_path / "m.safetensors"
    cfg = make_config(data, "water", tmp_path / "a", init_from=model)
    assert cfg.lr == INIT_LR == 3e-4 and cfg.warmup_epochs == 1
    assert (cfg.epochs, cfg.patience) == (20, 5)
    assert (
        make_config(data, "water", tmp_path / "b", init_from=model, lr=1e-3).lr == 1e-3
    )
    kept = make_config(data, "water", tmp_path / "c", init_from=model, blr=1e-3)
    assert kept.lr is None and kept.blr == 1e-3
    assert make_config(data, "water", tmp_path / "d").lr is None
