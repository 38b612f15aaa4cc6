"""Tests for alosmap.models: shapes, no shifts, sin-cos APE, PPM pooling, checks."""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alosmap.arch import get_preset
from alosmap.errors import SpecError, SpecMismatchError
from alosmap.models import (
    PlainHead,
    RefineUpHead,
    SegmentationModel,
    adaptive_avg_pool2d_static,
    build_model,
    count_parameters,
    sincos_pos_embed_2d,
)
from alosmap.models.swin import SwinBlock

SWITCHES = [(hr, ru) for hr in (False, True) for ru in (False, True)]


@pytest.fixture(scope="module")
def tiny() -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(get_preset("tiny")).eval()


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("num_classes", [9, 1])
@pytest.mark.parametrize(("highres", "refine_up"), SWITCHES)
def test_forward_shapes_tiny(highres, refine_up, num_classes):
    torch.manual_seed(0)
    arch = get_preset(
        "tiny", highres=highres, refine_up=refine_up, num_classes=num_classes
    )
    model = build_model(arch).eval()
    assert isinstance(model.head, RefineUpHead if refine_up else PlainHead)
    assert model.decoder.in_index == ((0, 1, 2, 3, 4) if highres else (1, 2, 3, 4))
    x = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, num_classes, 256, 256)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_highres_adds_one_level(tiny):
    base = build_model(get_preset("tiny", highres=False))
    assert len(tiny.decoder.lateral_convs) == len(base.decoder.lateral_convs) + 1
    assert len(tiny.decoder.fpn_convs) == len(base.decoder.fpn_convs) + 1
    c = tiny.arch.decoder_channels
    assert tiny.decoder.fpn_bottleneck.conv.in_channels == 5 * c
    assert base.decoder.fpn_bottleneck.conv.in_channels == 4 * c
    assert tiny.decoder.lateral_convs[0].conv.in_channels == tiny.arch.embed_dim


def test_train_mode_backward(tiny):
    model = build_model(get_preset("tiny", num_classes=1)).train()
    x = torch.randn(2, 1, 256, 256)
    model(x).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_encoder_outputs(tiny):
    enc = tiny.encoder
    arch = tiny.arch
    c = arch.embed_dim
    assert enc.out_channels == (c, c, 2 * c, 4 * c, 8 * c)
    assert enc.out_strides == (4, 4, 8, 16, 32)
    with torch.no_grad():
        feats = enc(torch.randn(3, 1, 256, 256))
    assert len(feats) == 5
    for f, ch, s in zip(feats, enc.out_channels, enc.out_strides, strict=True):
        assert f.shape == (3, ch, 256 // s, 256 // s)
        assert f.is_contiguous()


def test_encoder_keeps_timm_names(tiny):
    keys = set(tiny.encoder.state_dict())
    assert "patch_embed.proj.weight" in keys
    assert "layers.0.blocks.0.attn.qkv.weight" in keys
    assert "layers.1.downsample.reduction.weight" in keys
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in keys
    # buffers that checkpoints must not carry
    assert not any("absolute_pos_embed" in k or "attn_mask" in k for k in keys)
    assert not any("relative_position_index" in k for k in keys)


# ------------------------------------------------------------------- no shifts, APE
def test_no_block_is_shifted():
    model = build_model(get_preset("paper"))
    blocks = [b for stage in model.encoder.layers for b in stage.blocks]
    assert len(blocks) == sum(model.arch.depths)
    for b in blocks:
        assert isinstance(b, SwinBlock)  # window attention without shift or mask
        assert not any("mask" in name for name, _ in b.named_buffers())
    assert model.encoder.window_sizes == ((16, 16), (16, 16), (16, 16), (8, 8))


def _hand_sincos(d: int, i: int, j: int) -> list[float]:
    q = d // 4
    om = [1.0 / 10000 ** (k / q) for k in range(q)]
    return (
        [math.sin(j * w) for w in om]
        + [math.cos(j * w) for w in om]
        + [math.sin(i * w) for w in om]
        + [math.cos(i * w) for w in om]
    )


def test_ape_is_fixed_sincos_table(tiny):
    enc = tiny.encoder
    ape = enc.absolute_pos_embed
    assert ape.shape == (1, 64, 64, 16)
    assert not ape.requires_grad
    assert all(p is not ape for p in enc.parameters())
    assert "absolute_pos_embed" not in enc.state_dict()
    for i, j in [(0, 0), (3, 5), (63, 17)]:
        ref = torch.tensor(_hand_sincos(16, i, j), dtype=torch.float32)
        torch.testing.assert_close(ape[0, i, j], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ape[0], sincos_pos_embed_2d(16, 64, 64))


def test_ape_is_added_after_patch_embedding(tiny):
    """Zeroing the APE changes the stage outputs but not the embedding map."""
    enc = build_model(get_preset("tiny")).encoder.eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        a = enc(x)
        enc.absolute_pos_embed.zero_()
        b = enc(x)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_sincos_non_square_and_bad_dim():
    t = sincos_pos_embed_2d(8, 3, 5)
    assert t.shape == (3, 5, 8)
    torch.testing.assert_close(
        t[2, 4], torch.tensor(_hand_sincos(8, 2, 4), dtype=torch.float32)
    )
    with pytest.raises(SpecError, match="multiple of 4"):
        sincos_pos_embed_2d(6, 4, 4)


# ------------------------------------------------------------------------- PPM
@pytest.mark.parametrize(("size", "bins"), [(8, 1), (8, 2), (8, 3), (8, 6), (7, 6)])
def test_ppm_pooling_equals_adaptive_avg_pool(size, bins):
    x = torch.randn(2, 5, size, size)
    torch.testing.assert_close(
        adaptive_avg_pool2d_static(x, bins),
        F.adaptive_avg_pool2d(x, bins),
        rtol=1e-6,
        atol=1e-6,
    )


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    bins=st.integers(1, 8),
    seed=st.integers(0, 99),
)
def test_ppm_pooling_property(h, w, bins, seed):
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        adaptive_avg_pool2d_static(x, bins),
        F.adaptive_avg_pool2d(x, bins),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    ("shape", "dtype", "match"),
    [
        ((1, 2, 256, 256), torch.float32, "1 input band"),
        ((1, 1, 250, 256), torch.float32, r"pad or crop to \(256, 256\)"),
        ((1, 1, 256, 128), torch.float32, "multiples of 256"),
        ((1, 256, 256), torch.float32, "3-D tensor"),
        ((1, 1, 256, 256), torch.int64, "floating-point"),
    ],
)
def test_input_checks(tiny, shape, dtype, match):
    x = torch.zeros(shape, dtype=dtype)
    with pytest.raises(SpecMismatchError, match=match):
        tiny(x)


def test_larger_multiple_input_is_accepted(tiny):
    with torch.no_grad():
        y = tiny(torch.randn(1, 1, 256, 512))
    assert y.shape == (1, 9, 256, 512)


def test_window_not_tiling_grid_is_rejected():
    with pytest.raises(SpecError, match="window_size"):
        build_model(get_preset("tiny", window_size=(8, 8, 6, 8)))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_checks_skipped_while_tracing(tiny):
    # tracing with a wrong channel count must not raise SpecMismatchError (the
    # check is skipped); the conv then fails with torch's own error instead
    with pytest.raises(RuntimeError), torch.no_grad():
        torch.jit.trace(tiny, torch.zeros(1, 2, 256, 256), check_trace=False)


def test_count_parameters(tiny):
    n = count_parameters(tiny)
    assert n == sum(p.numel() for p in tiny.parameters())
    tiny.encoder.requires_grad_(False)
    try:
        assert count_parameters(tiny, trainable_only=True) == n - count_parameters(
            tiny.encoder
        )
    finally:
        tiny.encoder.requires_grad_(True)


# -------------------------------------------------------------------- paper preset
def test_paper_preset_builds_and_runs():
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(get_preset("paper")).eval()
    t_build = time.perf_counter() - t0
    assert model.encoder.out_channels == (128, 128, 256, 512, 1024)
    assert model.arch.depths == (2, 2, 18, 2)
    assert model.arch.num_heads == (4, 8, 16, 32)
    # the Swin-B encoder alone is ~87 M parameters (timm swin_base: 86.7 M w/o head)
    assert 85e6 < count_parameters(model.encoder) < 89e6
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        t0 = time.perf_counter()
        y = model(x)
        t_fwd = time.perf_counter() - t0
    assert y.shape == (1, 9, 256, 256)
    assert torch.isfinite(y).all()
    print(f"paper preset: build {t_build:.2f} s, 256×256 CPU forward {t_fwd:.2f} s")


def test_torch_export_parity_dynamic_batch(tiny):
    """Eager vs torch.export with a dynamic batch (STYLE habit 12)."""
    batch = torch.export.Dim("N")
    program = torch.export.export(
        tiny, (torch.randn(2, 1, 256, 256),), dynamic_shapes={"x": {0: batch}}
    )
    x = torch.randn(3, 1, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), tiny(x), rtol=1e-5, atol=1e-5)
