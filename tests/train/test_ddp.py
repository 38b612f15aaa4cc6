"""DDP: two gloo processes on CPU take the same step as one process on the same data.

Under torchrun each rank gets 2 of the 4 training patches. On CPU the decoder's
BatchNorm cannot be synchronised (SyncBatchNorm needs a GPU), so each rank
normalises with its own 2 patches and DDP averages the two ranks' gradients: the
single-process reference therefore runs the two halves separately and optimises
the mean of their losses.

What is compared is the all-reduced gradient, not the updated weights: AdamW's
first step moves each weight by about ``lr·sign(g)``, so a gradient near zero whose
sign depends on the summation order (which differs between instruction sets, e.g.
AVX2 and AVX-512) moves by 2·lr. The gradient of the DDP step is read back from
the checkpoint's optimiser state (after one step Adam's first moment is
``(1 − β1)·g``), and it must match the reference's to float tolerance relative to
the gradient's scale; a wrong gradient (e.g. rank 0's data only) is off by the
order of the gradient itself.
"""

import os
import subprocess
import sys

import pytest
import torch
from conftest import write_training_data
from torch.utils.data import DistributedSampler
from train_runs import FAST

from alosmap.arch import get_preset
from alosmap.models import build_model
from alosmap.train import distributed as ddp
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.finetune import finetune
from alosmap.train.losses import build_loss
from alosmap.train.optim import build_optimizer, set_lr

LR = 1e-4


@pytest.mark.slow
def test_two_process_step_matches_single_process(make_training_data, tmp_path):
    data_dir = make_training_data(splits=(("train", 4), ("val", 3)))
    out = tmp_path / "run"
    args = [
        *("--data", str(data_dir), "--task", "lulc", "-o", str(out)),
        *("--preset", "tiny", "--epochs", "1", "--warmup-epochs", "0"),
        *("--batch-size", "2", "--lr", str(LR), "--drop-path", "0", "--dropout", "0"),
        *("--no-augment", "--workers", "0", "--device", "cpu", "--seed", "0"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node", "2", "-m", "alosmap", "train", "finetune"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # only rank 0 prints the model path and writes files
    assert res.stdout.strip().splitlines() == [str(out / "model.safetensors")]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 1
    assert ckpt["config"]["global_batch"] == 4

    # single-process reference on the same 4 patches
    data = TrainingData(data_dir)
    torch.manual_seed(0)
    model = build_model(
        get_preset("tiny", img_size=64, drop_path_rate=0.0, dropout=0.0)
    ).train()
    opt = build_optimizer(
        model, lr=LR, weight_decay=0.05, layer_decay=0.7, depths=model.arch.depths
    )
    set_lr(opt, LR)  # warm-up 0: step 0 is the top of the cosine
    loss_fn = build_loss("lulc", class_counts=data.class_counts("lulc"))
    ds = PatchDataset(data, "train", "lulc")
    total = 0.0
    for rank in range(2):
        sampler = DistributedSampler(
            ds, num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True
        )
        sampler.set_epoch(0)
        idx = list(sampler)
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.stack([ds[i][1] for i in idx])
        total = total + loss_fn(model(x), y) / 2
    opt.zero_grad()
    total.backward()

    # the DDP run's gradient of each parameter, from Adam's first moment after step 1
    beta1 = ckpt["optimizer"]["param_groups"][0]["betas"][0]
    state = ckpt["optimizer"]["state"]
    ids = [i for g in ckpt["optimizer"]["param_groups"] for i in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(params)
    names = {id(p): k for k, p in model.named_parameters()}
    # a tensor's error relative to its own gradient, or to a thousandth of the
    # model's largest one where its own is numerically zero (a bias before a norm)
    floor = 1e-3 * max(p.grad.abs().max().item() for p in params if p.grad is not None)
    errors = {}
    for i, p in zip(ids, params, strict=True):
        if p.grad is None:
            continue
        ddp_grad = state[i]["exp_avg"] / (1 - beta1)
        scale = max(p.grad.abs().max().item(), floor)
        errors[names[id(p)]] = (ddp_grad - p.grad).abs().max().item() / scale
    worst = max(errors, key=errors.get)
    print(f"DDP parity: max |Δg|/max|g| = {errors[worst]:.3g} ({worst})")
    # float32 sums in another order: ~1e-5 relative (measured); a wrong gradient: ~1
    assert errors[worst] < 1e-3, (worst, errors[worst])
    # and the weights took that step (within the documented 2·lr of sign flips)
    opt.step()
    for k, p in model.named_parameters():
        assert (ckpt["model"][k] - p.detach()).abs().max().item() <= 2.5 * LR, k


def test_the_ranks_leave_the_process_group_together(tmp_path, monkeypatch):
    """After the run a barrier, then the group is left: under torchrun, a rank that
    left and exited while another still ended its last epoch aborted in some runs
    (SIGABRT after gloo's teardown: a finished run reported as a failed job)."""
    calls: list[str] = []
    barrier, cleanup = ddp.barrier, ddp.cleanup
    monkeypatch.setattr(ddp, "barrier", lambda: (calls.append("barrier"), barrier()))
    monkeypatch.setattr(ddp, "cleanup", lambda: (calls.append("cleanup"), cleanup()))
    data = write_training_data(tmp_path / "data", splits=(("train", 4), ("val", 2)))
    finetune(data, "water", tmp_path / "run", epochs=1, log=calls.append, **FAST)
    assert calls[-2:] == ["barrier", "cleanup"]
    assert calls[-3].startswith("kept epoch")  # the run's last line came before
