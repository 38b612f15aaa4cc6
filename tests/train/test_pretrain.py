"""SAR-W-MixMAE pretraining: masks, attention isolation, SAR-W weights, the loss,
a short run, exact resume, 2-process DDP, the hand-off to finetuning, bad input."""

import csv
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DistributedSampler
from train_runs import FAST
from typer.testing import CliRunner

from alosmap.arch import get_preset
from alosmap.cli.main import app
from alosmap.errors import AlosmapError
from alosmap.models import build_model
from alosmap.train.checkpoint import load_pretrained_encoder
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.finetune import finetune
from alosmap.train.mixmae import (
    DECODER_PRESETS,
    MASK_VALUE,
    MixMAE,
    mix_images,
    normalize_patches,
    patchify,
    random_pair_masks,
    reconstruction_loss,
    sar_w_weights,
    unpatchify,
    upsample_mask,
)
from alosmap.train.optim import build_optimizer, set_lr
from alosmap.train.pretrain import build_pretrain_model, mask_generator, pretrain

runner = CliRunner()
#: tiny preset with the paper's windows: at 256 px every stage's windows span
#: several 32-px mask cells (stage 1: 16×16 tokens = 2×2 cells), so isolation matters.
ARCH_256 = get_preset("tiny", window_size=(16, 16, 16, 8))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these small runs share a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pretrain_data(make_training_data):
    """A tiny dataset with a pretraining split (64-px patches)."""
    return make_training_data(splits=(("pretrain", 12), ("train", 8), ("val", 4)))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- masks ---------------------------------------------------------------------


def test_masks_are_complementary_pairs_of_32px_cells_at_256():
    gen = torch.Generator().manual_seed(0)
    b = 6
    mask = random_pair_masks(b, (8, 8), 0.5, generator=gen)  # 256 px / 32
    assert mask.shape == (b, 8, 8)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert (mask.flatten(1).sum(1) == 32).all()  # int(64 · 0.5) cells each
    for i in range(b):
        assert torch.equal(mask[i], mask[b - 1 - i])  # a pair shares its mask
    assert not torch.equal(mask[0], mask[1])  # different pairs, different masks

    # each image is marked by its index: the mix tells where each pixel came from
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 256, 256)
    mixed = mix_images(x, mask)
    for i in range(b):
        j = b - 1 - i
        src = mixed[i, 0]
        assert set(src.unique().tolist()) == {float(i), float(j)}
        # the source is constant on every 32×32 block, and 1 exactly where m is 1
        blocks = src.view(8, 32, 8, 32)
        assert (blocks == blocks[:, :1, :, :1]).all()
        assert torch.equal(blocks[:, 0, :, 0] == j, mask[i] == 1)
        # image i is visible in exactly one of the two mixed samples at every pixel
        seen = (mixed[i, 0] == i).int() + (mixed[j, 0] == i).int()
        assert (seen == 1).all()


def test_stage_masks_and_attention_bias_granularity():
    gen = torch.Generator().manual_seed(1)
    mask = random_pair_masks(2, (8, 8), 0.5, generator=gen)
    model = MixMAE(ARCH_256, DECODER_PRESETS["tiny"])
    biases = model.attention_biases(mask)
    # stage grids 64/32/16/8 tokens, windows 16/16/16/8
    assert [tuple(t.shape) for t in biases] == [
        (2 * 16, 256, 256),
        (2 * 4, 256, 256),
        (2 * 1, 256, 256),
        (2 * 1, 64, 64),
    ]
    for s, (grid, bias) in enumerate(zip((64, 32, 16, 8), biases, strict=True)):
        up = upsample_mask(mask, grid // 8)
        assert up.shape == (2, grid, grid)
        assert torch.equal(up[:, :: grid // 8, :: grid // 8], mask)
        # window (image 1, row 0, col last): tokens (r, c) row-major inside it
        win = model.encoder.window_sizes[s][0]
        n_col = grid // win
        w_idx = 1 * (grid // win) ** 2 + n_col - 1
        m = up[1, :win, grid - win :].reshape(-1)
        expected = torch.where(m[:, None] == m[None, :], 0.0, MASK_VALUE)
        assert torch.equal(bias[w_idx], expected)
        assert set(bias.unique().tolist()) == {0.0, MASK_VALUE}


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="odd"):
        random_pair_masks(3, (8, 8), 0.5)
    with pytest.raises(ValueError, match="at least one cell"):
        random_pair_masks(2, (2, 2), 0.1)


# -- attention isolation ---------------------------------------------------------


def test_attention_isolation_at_every_stage():
    torch.manual_seed(0)
    model = MixMAE(ARCH_256, DECODER_PRESETS["tiny"]).eval()
    mask = random_pair_masks(2, (8, 8), 0.5, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 1, 256, 256)
    x_perturbed = x.clone()
    x_perturbed[1] += 3.0 * torch.randn(1, 256, 256)  # image B only
    biases = model.attention_biases(mask)
    with torch.no_grad():
        outs = [
            model.encoder(mix_images(v, mask), attn_bias=bias)
            for v in (x, x_perturbed)
            for bias in (biases, None)
        ]
        preds = [model(v, mask) for v in (x, x_perturbed)]
    isolated, free, isolated_p, free_p = outs
    for s in range(1, 5):  # the four stage outputs
        grid = isolated[s].shape[-1]
        a_tokens = upsample_mask(mask, grid // 8)[0] == 0  # image A's in sample 0
        assert a_tokens.any() and (~a_tokens).any()
        same = isolated[s][0][:, a_tokens], isolated_p[s][0][:, a_tokens]
        torch.testing.assert_close(*same, rtol=0, atol=1e-6)
        # B's tokens did change, and without the bias A's tokens change too
        b_diff = isolated[s][0][:, ~a_tokens] - isolated_p[s][0][:, ~a_tokens]
        assert b_diff.abs().max() > 1e-3
        leak = (free[s][0][:, a_tokens] - free_p[s][0][:, a_tokens]).abs().max()
        assert leak > 1e-4, f"stage {s}: the test cannot see a leak"
    # end to end: image A's whole reconstruction never depends on image B
    torch.testing.assert_close(preds[0][0], preds[1][0], rtol=0, atol=1e-6)
    assert (preds[0][1] - preds[1][1]).abs().max() > 1e-5  # B's does


# -- SAR-W weights and the loss --------------------------------------------------


def test_sar_w_weights_by_hand():
    nan = float("nan")
    db = torch.tensor(
        [
            [[[-10.0, 0.0], [10.0, nan]]],  # linear 0.1, 1, 10
            [[[-20.0, -20.0], [-20.0, -10.0]]],  # linear 0.01 ×3, 0.1
        ]
    )
    w = sar_w_weights(db)
    eps = 1e-6
    expected = torch.tensor(
        [
            [[[math.e, math.exp(1 - 0.9 / (9.9 + eps))], [math.exp(1 - 9.9 / (9.9 + eps)), 0.0]]],  # noqa: E501
            [[[math.e, math.e], [math.e, math.exp(1 - 0.09 / (0.09 + eps))]]],
        ]
    )  # fmt: skip
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-6)
    assert w[0, 0, 0, 0] == pytest.approx(2.718281828, rel=1e-6)  # darkest: e
    assert w[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5)  # brightest: 1
    # exponent scale, and clipping to the input range before the min-max
    w2 = sar_w_weights(db[:1], scale=2.0)
    assert w2[0, 0, 0, 1] == pytest.approx(math.exp(2 * (1 - 0.9 / (9.9 + eps))))
    clipped = torch.tensor([[[[-10.0, 30.0], [20.0, 0.0]]]])
    wc = sar_w_weights(clipped, clip_db=(-40.0, 20.0))
    assert wc[0, 0, 0, 1] == wc[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-5)
    assert wc[0, 0, 1, 1] == pytest.approx(math.exp(1 - 0.9 / (99.9 + eps)))
    # per channel: each channel has its own min and max
    two = torch.stack([db[1, 0], db[1, 0] + 10.0])[None]
    torch.testing.assert_close(sar_w_weights(two)[0, 0], sar_w_weights(two)[0, 1])


def test_patchify_targets_and_loss():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    p = patchify(x, 32)
    assert p.shape == (2, 4, 1024)
    assert torch.equal(p[1, 2].view(32, 32), x[1, 0, 32:, :32])  # row-major cells
    assert torch.equal(unpatchify(p, 32, (64, 64)), x)
    norm = normalize_patches(p)[0]
    ref = (p - p.mean(-1, keepdim=True)) / (p.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(norm, ref)
    pred = torch.randn(2, 4, 1024)
    loss, mse = reconstruction_loss(pred, x, patch=32)
    torch.testing.assert_close(loss, ((pred - ref) ** 2).mean())
    assert loss == mse
    # pixel weights multiply the squared error; the normaliser stays #valid
    w = torch.full_like(x, 2.0)
    w[0, 0, :32, :32] = 0.5
    loss_w, mse_w = reconstruction_loss(pred, x, patch=32, weight=w)
    expected = (patchify(w, 32) * (pred - ref) ** 2).mean()
    torch.testing.assert_close(loss_w, expected)
    torch.testing.assert_close(mse_w, mse)
    # invalid pixels: out of the patch statistics and out of the loss
    valid = torch.ones_like(x)
    valid[1, 0, :8, :8] = 0
    x_bad = x.clone()
    x_bad[1, 0, :8, :8] = 1e3
    pred_bad = pred.clone()
    pred_bad[1, 0].view(32, 32)[:8, :8] = -1e3
    a = reconstruction_loss(pred, x, patch=32, weight=w * valid, valid=valid)[0]
    b = reconstruction_loss(pred_bad, x_bad, patch=32, weight=w * valid, valid=valid)
    torch.testing.assert_close(a, b[0])
    assert a != loss_w


# -- runs ------------------------------------------------------------------------


def _write_texture(root, n=16, size=64, seed=0):
    """A pretraining split where every 32×32 cell holds the same texture.

    σ0 = a per-patch offset + a 32-px periodic texture (symmetric under the
    flips/rot90 of the augmentation) + 0.5 dB noise: normalised
    per cell, all cells share one target (up to the noise), so a model that learns
    gets far below the loss of predicting the mean (≈ 1 for normalised targets)
    within a few dozen steps.
    """
    import numpy as np

    from alosmap.train.dataset.record import (
        MANIFEST_FIELDS,
        DatasetRecord,
        PatchRecord,
        write_dataset,
    )

    rng = np.random.default_rng(seed)
    # even about each cell's centre in x and y, so flips and rot90 leave it unchanged
    yy, xx = (np.mgrid[:size, :size] + 0.5) * (2 * np.pi / 32)
    texture = 3.0 * (np.cos(xx) + np.cos(yy)) + 2.0 * np.cos(2 * xx) * np.cos(2 * yy)
    sar = np.empty((n, size, size), np.float16)
    for i in range(n):
        noise = rng.normal(0.0, 0.5, (size, size))
        sar[i] = rng.uniform(-20.0, -5.0) + texture + noise
    root.mkdir(parents=True)
    np.save(root / "sar_db.npy", sar)
    np.save(root / "labels.npy", np.zeros(sar.shape, np.uint8))
    record = DatasetRecord.of_jaxa_codes(
        size, (-12.0, 5.0, "pretrain"), {}, build={}, summary={}
    )
    write_dataset(
        root,
        record,
        [PatchRecord(i, "pretrain", "texture", "2022-10-01", 0, 0, 1.0, [0] * 15)
         for i in range(n)],
        MANIFEST_FIELDS,
        "",
    )  # fmt: skip
    return root


@pytest.mark.slow
def test_short_run_loss_decreases(tmp_path):
    data = _write_texture(tmp_path / "texture")
    out = tmp_path / "run"
    res = pretrain(data, out, epochs=5, seed=1, **FAST)
    assert res.finished and res.epochs_done == 5
    rows = _rows(out / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 6))
    assert {"lr", "loss", "mse", "seconds"} <= set(rows[0])
    first, last = rows[0], rows[-1]
    assert float(first["mse"]) > 0.95  # starts at the predict-the-mean level
    assert float(last["loss"]) < 0.5 * float(first["loss"])
    assert float(last["mse"]) < 0.5
    assert res.last_loss == pytest.approx(float(last["loss"]))
    assert (out / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    assert res.encoder_path == out / "encoder.safetensors"
    assert res.encoder_path.is_file()


@pytest.mark.slow
def test_exact_resume(pretrain_data, tmp_path):
    opts = dict(epochs=2, seed=3, **FAST)  # augmentation and random masks on
    pretrain(pretrain_data, tmp_path / "straight", **opts)
    first = pretrain(pretrain_data, tmp_path / "killed", stop_after=1, **opts)
    assert first.epochs_done == 1 and not first.finished
    second = pretrain(pretrain_data, tmp_path / "killed", **opts)
    assert second.finished
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["step"] == b["step"] == 2 * 3  # 12 patches / batch 4
    assert torch.equal(a["rng"][0]["mask"], b["rng"][0]["mask"])

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(_rows(tmp_path / "straight" / "log.csv")) == strip(
        _rows(tmp_path / "killed" / "log.csv")
    )


def test_pretrain_then_finetune_matches_every_encoder_key(pretrain_data, tmp_path):
    res = runner.invoke(
        app,
        ["train", "pretrain", "--data", str(pretrain_data), "-o", str(tmp_path / "pt"),
         "--preset", "tiny", "--epochs", "1", "--batch-size", "4", "--workers", "0",
         "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    enc = tmp_path / "pt" / "encoder.safetensors"
    assert res.stdout.strip() == str(enc)

    arch = get_preset("tiny", img_size=64)
    torch.manual_seed(5)
    target = build_model(arch).encoder
    report = load_pretrained_encoder(target, enc)
    assert sorted(report.matched) == sorted(target.state_dict())
    assert not report.missing and not report.unexpected and not report.dropped
    trained = torch.load(tmp_path / "pt" / "last.pt", weights_only=True)["model"]
    for k, v in target.state_dict().items():
        assert torch.equal(v, trained[f"encoder.{k}"]), k

    lines = []
    finetune(pretrain_data, "lulc", tmp_path / "ft", epochs=1, pretrained=enc,
             log=lines.append, **FAST)  # fmt: skip
    n = len(target.state_dict())
    assert any(
        f"{n} keys matched, 0 missing, 0 unexpected, 0 dropped" in line
        for line in lines
    ), lines


@pytest.mark.slow
def test_two_process_ddp_step_matches_single_process(make_training_data, tmp_path):
    data_dir = make_training_data(splits=(("pretrain", 4), ("train", 4)))
    out = tmp_path / "run"
    lr = 1e-4
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node", "2", "-m", "alosmap", "train", "pretrain",
         "--data", str(data_dir), "-o", str(out), "--preset", "tiny",
         "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
         "--lr", str(lr), "--no-augment", "--workers", "0", "--device", "cpu",
         "--seed", "0"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines() == [str(out / "encoder.safetensors")]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["config"]["global_batch"] == 4
    assert len(ckpt["rng"]) == 2 and "mask" in ckpt["rng"][1]

    # single process: each rank's 2 patches with that rank's masks, mean loss
    data = TrainingData(data_dir)
    torch.manual_seed(0)
    model = build_pretrain_model(
        get_preset("tiny", img_size=64), DECODER_PRESETS["tiny"]
    )
    opt = build_optimizer(model, lr=lr, weight_decay=0.05, layer_decay=1.0,
                          depths=model.arch.depths, betas=(0.9, 0.95))  # fmt: skip
    set_lr(opt, lr)
    ds = PatchDataset(data, "pretrain", return_db=True)
    total = 0.0
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, seed=0,
                                     drop_last=True)  # fmt: skip
        idx = list(sampler)
        x = torch.stack([ds[i][0] for i in idx])
        db = torch.stack([ds[i][2] for i in idx])
        mask = random_pair_masks(2, model.grid, 0.5, generator=mask_generator(0, rank))
        loss, _ = reconstruction_loss(
            model(x, mask), x, patch=32, valid=torch.isfinite(db).float(),
            weight=sar_w_weights(db, clip_db=(-40.0, 20.0)),
        )  # fmt: skip
        total = total + loss / 2
    opt.zero_grad()
    total.backward()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt.step()
    diffs = {
        k: (ckpt["model"][k] - p.detach()).abs().max().item()
        for k, p in model.named_parameters()
    }
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 0.2 * lr, (worst, diffs[worst])
    # the step moved the weights by about lr (Adam), so the check can fail
    moved = max((ckpt["model"][k] - v).abs().max().item() for k, v in before.items())
    assert moved > 0.5 * lr


# -- bad input -------------------------------------------------------------------


def _fails(args, match):
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, AlosmapError), repr(res.exception)
    message = str(res.exception)
    assert "\n" not in message
    assert re.search(match, message), message


def test_bad_input(pretrain_data, make_training_data, tmp_path):
    base = ["train", "pretrain", "--workers", "0", "--device", "cpu", "--epochs", "1"]
    _fails([*base, "--data", str(pretrain_data), "-o", str(tmp_path / "a"),
            "--preset", "tiny", "--batch-size", "3"],
           r"--batch-size 3 is odd.*use 2 or 4")  # fmt: skip
    no_pretrain = make_training_data("np", splits=(("train", 4), ("val", 2)))
    _fails([*base, "--data", str(no_pretrain), "-o", str(tmp_path / "b"),
            "--preset", "tiny", "--batch-size", "2"],
           r"no 'pretrain' patches \(train 4, val 2, test 0\)")  # fmt: skip
    _fails([*base, "--data", str(tmp_path), "-o", str(tmp_path / "c")],
           "not an alosmap dataset")  # fmt: skip
    _fails([*base, "--data", str(pretrain_data), "-o", str(tmp_path / "d"),
            "--preset", "tiny", "--batch-size", "14"],
           "larger than the 12 pretraining patches")  # fmt: skip

    # a run of another preset: resuming it, or finetuning its encoder
    run = tmp_path / "tiny"
    pretrain(pretrain_data, run, epochs=1, **FAST)
    _fails([*base, "--data", str(pretrain_data), "-o", str(run), "--preset", "small",
            "--batch-size", "4"],
           r"other options: preset='tiny' \(now 'small'\)")  # fmt: skip
    _fails(["train", "finetune", "--data", str(pretrain_data), "--task", "lulc",
            "-o", str(tmp_path / "ft"), "--preset", "small", "--pretrained",
            str(run / "encoder.safetensors"), "--workers", "0", "--device", "cpu",
            "--epochs", "1", "--batch-size", "4"],
           r"patch_embed\.proj\.weight has shape .* another --preset")  # fmt: skip
    # a finetuning run directory is not a pretraining one
    finetune(pretrain_data, "lulc", tmp_path / "ftrun", epochs=1, **FAST)
    _fails([*base, "--data", str(pretrain_data), "-o", str(tmp_path / "ftrun"),
            "--preset", "tiny", "--batch-size", "4"],
           "not an alosmap pretrain checkpoint")  # fmt: skip


def test_without_matplotlib_pretraining_and_finetuning_still_run(
    pretrain_data, tmp_path, monkeypatch
):
    """A core install (no `plot` extra): one line says the figures are skipped; the
    runs, their logs and their model files are written (it crashed at the first
    figure before)."""
    from alosmap.train.engine import FIGURES_MISSING

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    lines: list[str] = []
    pre = tmp_path / "pre"
    pretrain(pretrain_data, pre, epochs=2, log=lines.append, **FAST)
    ft = tmp_path / "ft"
    finetune(
        pretrain_data,
        "water",
        ft,
        epochs=2,
        pretrained=pre / "encoder.safetensors",
        log=lines.append,
        **FAST,
    )
    assert lines.count(FIGURES_MISSING) == 2  # once per run
    assert FIGURES_MISSING == "figures (PNG) skipped: pip install 'alosmap[plot]'"
    assert (pre / "encoder.safetensors").exists()
    assert (ft / "model.safetensors").exists()
    assert not list(tmp_path.rglob("*.png"))
    assert len((ft / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs
