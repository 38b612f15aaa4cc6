"""Finetuning: param groups, LR schedule, a short run, exact resume, pretrained
encoders and bad input."""

import csv
import re
import sys

import numpy as np
import pytest
import torch
from train_runs import FAST
from typer.testing import CliRunner

from alosmap.arch import get_preset
from alosmap.cli.main import app
from alosmap.errors import AlosmapError
from alosmap.models import build_model
from alosmap.spec import default_spec, load_model, save_model
from alosmap.train.checkpoint import (
    CheckpointError,
    load_pretrained_encoder,
    save_encoder,
)
from alosmap.train.finetune import finetune
from alosmap.train.optim import (
    build_optimizer,
    layer_id,
    lr_at,
    param_groups,
    scaled_lr,
)

runner = CliRunner()


# -- optimiser -------------------------------------------------------------------


def test_param_groups_layer_decay_and_no_decay():
    depths = (2, 1, 3, 1)  # L = 7, num_layers = 9, scale = d^(8 - id)
    arch = get_preset("tiny", img_size=64, depths=depths)
    model = build_model(arch)
    d = 0.5
    groups = param_groups(model, weight_decay=0.05, layer_decay=d, depths=depths)
    seen = [n for g in groups for n in g["param_names"]]
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())
    assert len(seen) == len(set(seen))
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    expected = {
        "encoder.patch_embed.proj.weight": d**8,  # id 0
        "encoder.layers.0.blocks.0.attn.qkv.weight": d**7,  # id 1
        "encoder.layers.0.blocks.1.mlp.fc1.weight": d**6,  # id 2
        "encoder.layers.1.downsample.reduction.weight": d**5,  # id 3 (= its block 0)
        "encoder.layers.1.blocks.0.attn.proj.weight": d**5,  # id 3
        "encoder.layers.2.downsample.norm.weight": d**4,  # id 4
        "encoder.layers.2.blocks.2.mlp.fc2.weight": d**2,  # id 6
        "encoder.layers.3.blocks.0.attn.qkv.weight": d**1,  # id 7
        "encoder.out_norms.0.weight": d**1,  # last encoder id 7
        "decoder.fpn_bottleneck.conv.weight": 1.0,
    }
    for name, s in expected.items():
        if name in scale:
            assert scale[name] == pytest.approx(s), name
    head = [n for n in scale if n.startswith("head.")]
    assert head and all(scale[n] == 1.0 for n in head)
    for name, p in model.named_parameters():
        no = p.ndim == 1 or "relative_position_bias_table" in name
        assert wd[name] == (0.0 if no else 0.05), name
    assert wd["encoder.layers.0.blocks.0.attn.relative_position_bias_table"] == 0.0
    assert layer_id("encoder.layers.3.downsample.norm.bias", (2, 2, 18, 2)) == 23
    assert layer_id("encoder.layers.2.blocks.17.mlp.fc1.weight", (2, 2, 18, 2)) == 22
    assert layer_id("decoder.x", (2, 2, 18, 2)) == 25
    opt = build_optimizer(
        model, lr=1.0, weight_decay=0.05, layer_decay=d, depths=depths
    )
    assert all(g["lr"] == g["lr_scale"] for g in opt.param_groups)


def test_lr_schedule_by_hand():
    kw = dict(base_lr=1e-3, min_lr=1e-6, warmup_steps=10, total_steps=110)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == pytest.approx(5e-4)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(60, **kw) == pytest.approx((1e-3 + 1e-6) / 2)
    assert lr_at(35, **kw) == pytest.approx(1e-6 + (1e-3 - 1e-6) * (1 + 2**-0.5) / 2)
    assert lr_at(110, **kw) == pytest.approx(1e-6)
    assert lr_at(0, **{**kw, "warmup_steps": 0}) == pytest.approx(1e-3)
    assert scaled_lr(6e-4, 512) == pytest.approx(1.2e-3)


# -- a short run -----------------------------------------------------------------


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_short_run_writes_a_usable_model(make_training_data, make_geotiff, tmp_path):
    data = make_training_data()
    out = tmp_path / "run"
    res = finetune(data, "lulc", out, epochs=3, seed=1, **FAST)
    rows = _rows(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {
        "lr",
        "train_loss",
        "train_focal",
        "train_dice",
        "val_miou",
        "val_macc",
    } <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (out / "val_curve.png").read_bytes()[:4] == b"\x89PNG"
    _model, spec = load_model(res.model_path)
    assert spec.provenance["best_epoch"] == str(res.best_epoch)
    assert spec.arch.drop_path_rate == 0.0 and spec.arch.img_size == 64
    from alosmap.train.data import TrainingData

    assert spec.radiometry.mean_db == pytest.approx(TrainingData(data).mean_db)
    from alosmap.predict.pipeline import predict_scene

    dn = np.random.default_rng(0).integers(500, 6000, (96, 128)).astype(np.uint16)
    scene = make_geotiff(dn, "IMG-HH-test.tif")
    predict_scene(
        scene, tmp_path / "map.tif", model=res.model_path, backend="torch", overlap=16
    )
    assert (tmp_path / "map.tif").is_file()


def test_water_run(make_training_data, tmp_path):
    data = make_training_data(splits=(("train", 8), ("val", 4)))
    res = finetune(data, "water", tmp_path / "w", epochs=1, **FAST)
    rows = _rows(tmp_path / "w" / "log.csv")
    assert {"train_bce", "val_iou_water", "val_precision", "val_recall"} <= set(rows[0])
    assert {"val_loss", "val_iou_water_lo", "val_iou_water_hi", "kept_epoch"} <= set(
        rows[0]
    )
    assert float(rows[0]["val_loss"]) > 0
    assert load_model(res.model_path)[1].task == "water"


@pytest.mark.slow
def test_exact_resume(make_training_data, tmp_path):
    data = make_training_data()
    opts = dict(epochs=2, seed=3, drop_path=0.1, **FAST)  # dropout + drop-path on
    finetune(data, "lulc", tmp_path / "straight", **opts)
    first = finetune(data, "lulc", tmp_path / "killed", stop_after=1, **opts)
    assert first.epochs_done == 1 and not first.finished
    second = finetune(data, "lulc", tmp_path / "killed", **opts)
    assert second.finished
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["step"] == b["step"] and a["best_epoch"] == b["best_epoch"]

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(_rows(tmp_path / "straight" / "log.csv")) == strip(
        _rows(tmp_path / "killed" / "log.csv")
    )
    # a finished run resumed again does nothing; other options are refused
    assert finetune(data, "lulc", tmp_path / "killed", **opts).epochs_done == 2
    with pytest.raises(CheckpointError, match="epochs=2"):
        finetune(data, "lulc", tmp_path / "killed", **{**opts, "epochs": 3})


# -- pretrained encoders ---------------------------------------------------------


def _mixmim_state(encoder, channels=2):
    """The encoder's weights in the upstream MixMIM/SAR-W-MixMAE layout."""
    sd = {k: v.clone() for k, v in encoder.state_dict().items()}
    state = {}
    for k, v in sd.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        if m:  # upstream downsamples at the end of the previous stage
            k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        if k.startswith("out_norms."):
            if not k.startswith(f"out_norms.{len(encoder.layers) - 1}."):
                continue
            k = "norm." + k.split(".", 2)[2]
        state[k] = v
    w = state["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = torch.cat([w / channels] * channels, dim=1)
    grid = encoder.absolute_pos_embed.shape[1]
    state["absolute_pos_embed"] = torch.zeros(1, grid * grid, w.shape[0])
    state["mask_token"] = torch.zeros(1, 1, 32)
    state["decoder_embed.weight"] = torch.zeros(32, 8 * w.shape[0])
    state["decoder_pred.weight"] = torch.zeros(2048, 32)
    return state


def _fresh(arch):
    torch.manual_seed(123)
    return build_model(arch).encoder


def test_mixmim_checkpoint_loads(tmp_path):
    pytest.importorskip("timm")  # MixMIM's layout goes through timm's filter
    arch = get_preset("tiny", img_size=64)
    torch.manual_seed(0)
    source = build_model(arch).encoder
    path = tmp_path / "checkpoint_64.pth"
    torch.save({"model": _mixmim_state(source), "epoch": 64}, path)
    target = _fresh(arch)
    report = load_pretrained_encoder(target, path)
    keys = [k for k in source.state_dict() if not k.startswith("out_norms.")]
    assert set(keys) <= set(report.matched)
    assert report.missing == [
        f"out_norms.{i}.{s}" for i in range(3) for s in ("weight", "bias")
    ]
    assert not report.unexpected
    assert "absolute_pos_embed" in report.dropped and "mask_token" in report.dropped
    for k in [*keys, "out_norms.3.weight"]:
        torch.testing.assert_close(target.state_dict()[k], source.state_dict()[k])
    assert "summed" in report.summary()


def _own_encoder_loaded(tmp_path):
    """A tiny model's encoder saved as alosmap writes it, loaded into a fresh one."""
    arch = get_preset("tiny", img_size=64)
    torch.manual_seed(0)
    model = build_model(arch)
    enc_file = save_encoder(model.encoder, arch, tmp_path / "enc.safetensors")
    target = _fresh(arch)
    report = load_pretrained_encoder(target, enc_file)
    assert sorted(report.matched) == sorted(model.encoder.state_dict())
    return arch, model, enc_file, target, report


def test_own_encoder_file_loads_and_bad_files_fail(tmp_path):
    arch, model, enc_file, _, report = _own_encoder_loaded(tmp_path)
    assert not report.missing and not report.unexpected

    # a full model file
    spec = default_spec("lulc", arch)
    full = save_model(model, spec, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="complete alosmap model"):
        load_pretrained_encoder(_fresh(arch), full)
    # tensors but no encoder keys
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(3)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(CheckpointError, match="no Swin encoder weights"):
        load_pretrained_encoder(_fresh(arch), tmp_path / "junk.safetensors")
    # another preset: the first mismatching key is named
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight"):
        load_pretrained_encoder(_fresh(get_preset("small", img_size=64)), enc_file)
    # a pickle that needs arbitrary objects is refused
    torch.save({"model": {"x": torch.zeros(1)}, "args": _Args()}, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="safely"):
        load_pretrained_encoder(_fresh(arch), tmp_path / "u.pth")


@pytest.fixture
def no_timm(monkeypatch):
    """timm as if not installed: importing it, or any of its modules, fails."""
    for name in [m for m in sys.modules if m.startswith("timm.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "timm", None)


def test_encoder_files_load_without_timm(tmp_path, no_timm):
    arch, model, enc_file, target, report = _own_encoder_loaded(tmp_path)
    assert not report.missing and not report.unexpected and not report.notes
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    # a .pth already in the encoder's layout needs no conversion either
    torch.save({"model": model.encoder.state_dict()}, tmp_path / "own.pth")
    assert load_pretrained_encoder(_fresh(arch), tmp_path / "own.pth").matched
    # another preset: still the shape error, not a call for timm
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight has shape"):
        load_pretrained_encoder(_fresh(get_preset("small", img_size=64)), enc_file)


def test_conversions_without_timm_say_what_to_install(tmp_path, no_timm):
    arch = get_preset("tiny", img_size=64)
    torch.manual_seed(0)
    encoder = build_model(arch).encoder
    torch.save({"model": _mixmim_state(encoder)}, tmp_path / "mixmim.pth")
    for target, path, why in [
        (_fresh(arch), tmp_path / "mixmim.pth", "MixMIM's layout"),
    ]:
        with pytest.raises(CheckpointError) as err:
            load_pretrained_encoder(target, path)
        msg = str(err.value)
        assert "\n" not in msg and why in msg, msg
        assert "needs timm" in msg and "pip install 'alosmap[mixmim]'" in msg, msg


@pytest.mark.parametrize("pretrained_at,tile", [(256, 64), (64, 256), (256, 128)])
def test_pretrained_encoder_at_another_tile_size(
    tmp_path, no_timm, pretrained_at, tile
):
    """``--pretrained`` from another tile size needs no timm: the bias tables of
    clamped windows load as a whole model's do at another tile size
    (``--init-from``: ``WindowAttention`` resizes them)."""
    arch = get_preset("tiny", img_size=pretrained_at)
    torch.manual_seed(0)
    source = build_model(arch)
    enc_file = save_encoder(source.encoder, arch, tmp_path / "enc.safetensors")
    other = arch.with_tile_size(tile)
    target = _fresh(other)
    report = load_pretrained_encoder(target, enc_file)
    assert not report.missing and not report.unexpected
    assert "relative position bias tables resized" in report.summary()
    # the same weights as the whole model loaded at that tile size (--init-from)
    whole = build_model(other)
    whole.load_state_dict(source.state_dict())
    own = whole.encoder.state_dict()
    resized = 0
    for k, v in target.state_dict().items():
        assert torch.equal(v, own[k]), k
        resized += tuple(v.shape) != tuple(source.encoder.state_dict()[k].shape)
    assert resized >= 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's table resizing
def test_timm_filter_is_skipped_only_where_it_changes_nothing(tmp_path):
    swin = pytest.importorskip("timm.models.swin_transformer")
    from alosmap.train.checkpoint import _conversion_needed

    arch = get_preset("tiny", img_size=64)
    encoder = _fresh(arch)
    own = encoder.state_dict()
    assert _conversion_needed(own, encoder) == ""
    mapped = swin.checkpoint_filter_fn(dict(own), encoder)
    assert list(mapped) == list(own)
    assert all(mapped[k] is v for k, v in own.items())
    assert "MixMIM" in _conversion_needed(_mixmim_state(encoder), encoder)
    big_patch = {**own, "patch_embed.proj.weight": torch.zeros(16, 1, 8, 8)}
    assert "patch embedding" in _conversion_needed(big_patch, encoder)
    # with timm, the tables of other windows are resized
    enc_file = save_encoder(encoder, arch, tmp_path / "enc.safetensors")
    target = _fresh(arch.replace(window_size=(4, 4, 4, 4)))
    report = load_pretrained_encoder(target, enc_file)
    assert "relative position bias tables resized" in report.summary()


class _Args:
    lr = 1.0


# -- CLI and bad input -----------------------------------------------------------


def _cli(*args):
    return runner.invoke(app, ["train", "finetune", *args])


@pytest.mark.slow
def test_cli_finetune_and_bad_input(make_training_data, tmp_path):
    data = make_training_data(splits=(("train", 8), ("val", 2)))
    base = ["--task", "lulc", "--preset", "tiny", "--workers", "0", "--device", "cpu"]
    res = _cli("--data", str(data), "-o", str(tmp_path / "ok"), *base,
               "--epochs", "1", "--batch-size", "4")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "ok" / "model.safetensors")

    def fails(args, match):
        res = _cli(*args, *base)
        assert res.exit_code == 1, res.output
        assert isinstance(res.exception, AlosmapError)
        assert re.search(match, str(res.exception)), str(res.exception)

    fails(
        ["--data", str(tmp_path), "-o", str(tmp_path / "a")], "not an alosmap dataset"
    )
    no_train = make_training_data("nt", splits=(("val", 2), ("test", 2)))
    fails(["--data", str(no_train), "-o", str(tmp_path / "c")], "no 'train' patches")
    fails(["--data", str(data), "-o", str(tmp_path / "ok"), "--no-resume",
           "--batch-size", "4"],
          "already holds a run")  # fmt: skip
    junk = tmp_path / "junk.pth"
    torch.save({"model": {"foo": torch.zeros(2)}}, junk)
    fails(["--data", str(data), "-o", str(tmp_path / "d"), "--pretrained", str(junk),
           "--batch-size", "4"],
          "no Swin encoder weights")  # fmt: skip
    assert not (tmp_path / "d" / "last.pt").exists()


def test_val_curve_percent_and_training_loss(tmp_path, monkeypatch):
    """The validation score is drawn in percent on a "%" axis, the loss beside it."""
    from matplotlib.figure import Figure

    from alosmap.train.finetune import plot_curve

    figures = []
    save = Figure.savefig

    def spy(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    rows = [
        {"epoch": "1", "train_loss": "1.2", "val_miou": "0.40"},
        {"epoch": "2", "train_loss": "0.9", "val_miou": "0.68"},
        {"epoch": "3", "train_loss": "0.8", "val_miou": "0.61"},
    ]
    plot_curve(tmp_path / "c.png", rows, "val_miou")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    loss_ax, score_ax = figures[-1].axes
    assert list(loss_ax.lines[0].get_ydata()) == [1.2, 0.9, 0.8]
    assert "loss" in loss_ax.get_ylabel()
    assert list(score_ax.lines[0].get_ydata()) == pytest.approx([40.0, 68.0, 61.0])
    assert score_ax.get_ylabel() == "validation mIoU (%)"
    best = score_ax.get_legend().get_texts()[0].get_text()
    assert best == "best 68.0 % (epoch 2)"
    # rows without a loss column: the score panel alone
    plot_curve(
        tmp_path / "w.png", [{"epoch": 1, "val_iou_water": 0.5}], "val_iou_water"
    )
    assert len(figures[-1].axes) == 1
    # the interval shaded, the kept epoch (not the highest) marked, the class named
    rows = [
        {"epoch": "0", "val_iou_dry": "0.70", "val_iou_dry_lo": "0.6",
         "val_iou_dry_hi": "0.8", "kept_epoch": "0"},
        {"epoch": "1", "train_loss": "0.5", "val_iou_dry": "0.72",
         "val_iou_dry_lo": "0.6", "val_iou_dry_hi": "0.8", "kept_epoch": "0"},
    ]  # fmt: skip
    plot_curve(tmp_path / "d.png", rows, "val_iou_dry")
    score_ax = figures[-1].axes[-1]
    assert score_ax.get_ylabel() == "validation IoU_dry (%)"
    texts = [t.get_text() for t in score_ax.get_legend().get_texts()]
    assert "kept 70.0 % (epoch 0)" in texts and "90 % interval" in texts


def test_missing_tensorboard_is_said_once(make_training_data, tmp_path, monkeypatch):
    """Without tensorboard the run says so in one line instead of skipping silently."""
    import sys

    from alosmap.train.engine import TENSORBOARD_MISSING

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    data = make_training_data(splits=(("train", 8), ("val", 4)))
    lines: list[str] = []
    finetune(data, "water", tmp_path / "w", epochs=2, log=lines.append, **FAST)
    assert lines.count(TENSORBOARD_MISSING) == 1
    assert (
        TENSORBOARD_MISSING == "TensorBoard logs skipped: pip install 'alosmap[train]'"
    )
    assert not (tmp_path / "w" / "tb").exists()
