"""MixMAE's decoder block against timm's ViT ``Block``, which it replaced.

Training no longer imports timm for the decoder, but keeps timm's block: the same
parameter names (pretraining checkpoints load unchanged), the same initial weights for
a seed (whole ``MixMAE`` models included) and bit-equal outputs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from alosmap.arch import get_preset
from alosmap.train import mixmae
from alosmap.train.mixmae import DECODER_PRESETS, MixMAE
from alosmap.train.vit_block import ViTBlock

CASES = [(32, 2, 4.0), (64, 4, 4.0), (48, 3, 2.5), (128, 4, 4.0)]


def _timm_block(dim, heads, mlp_ratio):
    """timm's block as ``MixMAE`` built it before."""
    from timm.models.vision_transformer import Block

    return Block(
        dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm
    )


@pytest.mark.parametrize(("dim", "heads", "mlp_ratio"), CASES)
def test_a_seed_gives_timms_weights_and_outputs(dim, heads, mlp_ratio):
    pytest.importorskip("timm")
    torch.manual_seed(11)
    ours = ViTBlock(dim, heads, mlp_ratio)
    after_ours = torch.get_rng_state()
    torch.manual_seed(11)
    ref = _timm_block(dim, heads, mlp_ratio)
    assert torch.equal(after_ours, torch.get_rng_state())  # the same draws
    assert ref.attn.fused_attn  # timm's default, what MixMAE ran: SDPA, as ours
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for k in b:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(4, 49, dim)
    for train in (False, True):  # no dropout: training mode is the same maths
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x)), train


def test_gradients_equal_timms():
    pytest.importorskip("timm")
    torch.manual_seed(2)
    ours = ViTBlock(32, 2)
    torch.manual_seed(2)
    ref = _timm_block(32, 2, 4.0)
    x = torch.randn(2, 16, 32)
    ours(x).square().sum().backward()
    ref(x).square().sum().backward()
    for (k, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), k


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_mixmae_built_with_a_seed_is_the_timm_built_model(preset, monkeypatch):
    """Every weight of a seeded ``MixMAE`` (decoder included), and its output."""
    pytest.importorskip("timm")
    arch = get_preset(preset, img_size=64)
    torch.manual_seed(5)
    ours = MixMAE(arch, DECODER_PRESETS[preset]).eval()
    monkeypatch.setattr(mixmae, "ViTBlock", _timm_block)
    torch.manual_seed(5)
    ref = MixMAE(arch, DECODER_PRESETS[preset]).eval()
    assert type(ref.decoder_blocks[0]).__module__.startswith("timm.")
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for k in b:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(4, arch.in_chans, 64, 64)
    mask = mixmae.random_pair_masks(4, ours.grid, 0.5)
    with torch.no_grad():
        assert torch.equal(ours(x, mask), ref(x, mask))


def test_mixmae_needs_no_timm_torchvision_or_dynamo():
    """Importing pretraining and building ``MixMAE`` load none of timm's imports."""
    probe = (
        "import sys\n"
        "import alosmap.train.pretrain\n"
        "from alosmap.arch import get_preset\n"
        "from alosmap.train.mixmae import DECODER_PRESETS, MixMAE\n"
        "MixMAE(get_preset('tiny', img_size=64), DECODER_PRESETS['tiny'])\n"
        "mods = ('timm', 'torchvision', 'torch._dynamo', 'huggingface_hub')\n"
        "print('LOADED', [m for m in mods if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("LOADED []"), out.stdout
