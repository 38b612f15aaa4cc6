"""The encoder's Swin modules against timm's Swin, which they replaced.

The encoder no longer imports timm (≈ 1.5 s of every ``alosmap predict``), but keeps
timm's layout: the same parameter names, the same initial weights for a seed, the
same outputs for the same weights (timm's blocks with the shift removed), and
MixMIM checkpoints load through timm's ``checkpoint_filter_fn``. timm is optional
(``alosmap[mixmim]``, in ``dev``): without it these tests are skipped.
"""

from __future__ import annotations

import re

import pytest
import torch

from alosmap.arch import get_preset
from alosmap.models import build_model
from alosmap.models.encoder import SwinEncoder
from alosmap.models.swin import DropPath, PatchMerging, WindowAttention, trunc_normal_

swin = pytest.importorskip("timm.models.swin_transformer")


def _timm_swin(arch):
    """timm's Swin as the encoder used to build it (norm and head dropped later)."""
    return swin.SwinTransformer(
        img_size=arch.img_size,
        patch_size=arch.patch_size,
        in_chans=arch.in_chans,
        num_classes=0,
        embed_dim=arch.embed_dim,
        depths=arch.depths,
        num_heads=arch.num_heads,
        window_size=tuple((w, w) for w in arch.window_size),
        mlp_ratio=arch.mlp_ratio,
        qkv_bias=True,
        drop_path_rate=arch.drop_path_rate,
        strict_img_size=False,
    )


def _unshift(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, swin.SwinTransformerBlock):
            m.shift_size = (0, 0)
            m.target_shift_size = (0, 0)
            m.dynamic_mask = False
            m.always_partition = False
            m.register_buffer("attn_mask", None, persistent=False)


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_a_seed_gives_timms_initial_weights(preset):
    arch = get_preset(preset, drop_path_rate=0.1)
    torch.manual_seed(7)
    ours = SwinEncoder(arch).state_dict()
    torch.manual_seed(7)
    ref = {
        k: v
        for k, v in _timm_swin(arch).state_dict().items()
        if k.startswith(("patch_embed.", "layers."))
    }
    assert [k for k in ours if not k.startswith("out_norms.")] == list(ref)
    for k, v in ref.items():
        assert torch.equal(ours[k], v), k


def test_trunc_normal_draws_as_timm():
    from timm.layers import trunc_normal_ as timm_trunc_normal_

    torch.manual_seed(3)
    a = trunc_normal_(torch.empty(300, 7))
    torch.manual_seed(3)
    b = timm_trunc_normal_(torch.empty(300, 7), std=0.02)
    assert torch.equal(a, b)
    assert a.abs().max() <= 2.0


def test_forward_equals_timms_unshifted_blocks():
    torch.manual_seed(0)
    enc = build_model(get_preset("tiny")).encoder.eval()
    ref = _timm_swin(enc.arch).eval()
    ref.load_state_dict(enc.state_dict(), strict=False)
    _unshift(ref)
    x = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        ours = enc(x)
        tok = ref.patch_embed(x)
        torch.testing.assert_close(ours[0], tok.permute(0, 3, 1, 2), rtol=0, atol=0)
        tok = tok + enc.absolute_pos_embed
        for i, stage in enumerate(ref.layers):
            tok = stage(tok)  # timm's PatchMerging and blocks (shift 0)
            want = enc.out_norms[i](tok).permute(0, 3, 1, 2)
            torch.testing.assert_close(ours[i + 1], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_attention_bias_as_timms_mask(per_image):
    torch.manual_seed(1)
    ours = WindowAttention(32, (4, 4), 2).eval()
    ref = swin.WindowAttention(32, num_heads=2, window_size=(4, 4)).eval()
    ref.load_state_dict(ours.state_dict())
    ref.fused_attn = False
    n_win, batch = 6, 3
    x = torch.randn(batch * n_win, 16, 32)
    m = torch.zeros(batch * n_win if per_image else n_win, 16, 16)
    m[..., :5, 8:] = -100.0
    with torch.no_grad():
        torch.testing.assert_close(ours(x, m), ref(x, mask=m), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)


def test_patch_merging_channel_order_as_timm():
    torch.manual_seed(2)
    ours = PatchMerging(16)
    ref = swin.PatchMerging(dim=16)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_drop_path_draws_as_timm():
    from timm.layers import DropPath as TimmDropPath

    x = torch.randn(8, 4, 4, 3)
    ours, ref = DropPath(0.3).train(), TimmDropPath(0.3).train()
    torch.manual_seed(4)
    a = ours(x)
    torch.manual_seed(4)
    torch.testing.assert_close(a, ref(x), rtol=0, atol=0)
    assert torch.equal(ours.eval()(x), x)


def test_shifted_windows_would_differ():
    """Sanity: a timm block with its default shift gives another output."""
    torch.manual_seed(0)
    enc = build_model(get_preset("tiny", depths=(2, 1, 1, 1))).encoder.eval()
    ours_block = enc.layers[0].blocks[1]
    shifted = swin.SwinTransformerBlock(
        dim=16, input_resolution=(64, 64), num_heads=1, window_size=8, shift_size=4
    ).eval()
    shifted.load_state_dict(ours_block.state_dict())
    tok = torch.randn(1, 64, 64, 16)
    with torch.no_grad():
        assert not torch.allclose(ours_block(tok), shifted(tok), atol=1e-4)


def test_mixmim_layout_checkpoint_loads_through_timm_filter():
    """A MixMIM-layout state dict maps onto the encoder via timm's filter."""
    torch.manual_seed(1)
    src = build_model(get_preset("tiny")).encoder
    dst = build_model(get_preset("tiny")).encoder
    ckpt = {}
    for k, v in src.state_dict().items():
        if k.startswith("out_norms."):
            continue
        # MixMIM downsamples at the end of a stage: layers.i.downsample -> i-1
        k = re.sub(
            r"layers\.(\d+)\.downsample",
            lambda m: f"layers.{int(m.group(1)) - 1}.downsample",
            k,
        )
        ckpt[k] = v
    ckpt["absolute_pos_embed"] = torch.zeros(1, 64 * 64, 16)
    ckpt["norm.weight"] = torch.ones(128)
    ckpt["norm.bias"] = torch.zeros(128)
    out = swin.checkpoint_filter_fn(ckpt, dst)
    out.pop("absolute_pos_embed")
    result = dst.load_state_dict(out, strict=False)
    assert set(result.unexpected_keys) == {"norm.weight", "norm.bias"}
    assert all(k.startswith("out_norms.") for k in result.missing_keys)
    for k, v in src.state_dict().items():
        if not k.startswith("out_norms."):
            assert torch.equal(dst.state_dict()[k], v), k
