"""UPerNet decoder (mmsegmentation ``UPerHead`` semantics) with high-res injection.

Follows mmseg's ``UPerHead`` (PPM + FPN) layer for layer:

* every conv is a :class:`ConvBNReLU` (conv without bias, BatchNorm, ReLU);
* PPM on the deepest map: per pool scale, adaptive average pooling, a 1×1 conv to
  ``channels`` and a bilinear resize back; ``bottleneck`` (3×3) fuses the deepest map
  with the pooled branches and becomes the top FPN level;
* 1×1 laterals on the other levels, top-down addition of the bilinearly resized
  coarser level, 3×3 ``fpn_convs``, resize of every level to the finest one
  (stride 4), concatenation and the 3×3 ``fpn_bottleneck``.

**High-resolution injection** (the paper's first refinement, ``highres=True``): the
post-patch-embedding map (stride 4) becomes one more, finest FPN level with its own
lateral and fpn conv; it receives the top-down sum like any level and is part of the
fused concatenation (5 levels instead of 4). Stage 1 is also at stride 4, so the
top-down step between the two is a plain addition.

**PPM pooling for ONNX:** ``AdaptiveAvgPool2d(s)`` on an ``n×n`` map with ``s`` not
dividing ``n`` (3 or 6 on 8×8) exports badly. :func:`adaptive_avg_pool2d_static`
computes the same bins (``[floor(i·n/s), ceil((i+1)·n/s))``) as two constant
averaging matrices, so pooling is ``P_h · x · P_wᵀ`` (two MatMuls in ONNX), equal to
``F.adaptive_avg_pool2d`` up to float rounding. Feature sizes are static (fixed tile),
so the matrices are constants in an exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """mmseg ``ConvModule``: conv (no bias) → BatchNorm2d → ReLU, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        """Create the block.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            kernel_size: odd kernel size (1 or 3).
        """
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)


def adaptive_pool_matrix(
    size: int,
    bins: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Averaging matrix of 1-D adaptive average pooling.

    Row ``i`` averages inputs ``[floor(i·size/bins), ceil((i+1)·size/bins))``, the
    bins PyTorch's ``adaptive_avg_pool`` uses (they overlap when ``bins`` does not
    divide ``size``).

    Args:
        size: input length.
        bins: output length.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        Matrix [bins, size].
    """
    # plain Python numbers, so that tracing sees one constant, not index ops
    rows = []
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)  # ceil((i + 1)·size / bins)
        rows.append(
            [1.0 / (end - start) if start <= k < end else 0.0 for k in range(size)]
        )
    return torch.tensor(rows, dtype=dtype, device=device)


def adaptive_avg_pool2d_static(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as two matrix products (ONNX friendly).

    Args:
        x: features [B, C, H, W]; H and W must be static (Python ints while
            tracing), which they are for a fixed tile size.
        bins: output size (square).

    Returns:
        Pooled features [B, C, bins, bins].
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    p_h = adaptive_pool_matrix(h, bins, device=x.device, dtype=x.dtype)  # [s, H]
    p_w = adaptive_pool_matrix(w, bins, device=x.device, dtype=x.dtype)  # [s, W]
    # [B, C, H, W] @ [W, s] -> [B, C, H, s]; [s, H] @ that -> [B, C, s, s]
    return torch.matmul(p_h, torch.matmul(x, p_w.t()))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``); a no-op when the size matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PPM(nn.Module):
    """Pyramid pooling branches of PSPNet (as mmseg's ``PPM``, without the concat).

    Each branch: adaptive average pooling to ``s×s`` → 1×1 :class:`ConvBNReLU` →
    bilinear resize back to the input size.
    """

    def __init__(
        self, pool_scales: Sequence[int], in_channels: int, channels: int
    ) -> None:
        """Create the branches.

        Args:
            pool_scales: output sizes of the pooling, e.g. (1, 2, 3, 6).
            in_channels: channels of the deepest encoder map.
            channels: channels of each branch.
        """
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.convs = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1) for _ in self.pool_scales
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Apply every branch.

        Args:
            x: deepest map [B, C_in, h, w] (stride 32).

        Returns:
            One map [B, channels, h, w] per pool scale.
        """
        outs = []
        for scale, conv in zip(self.pool_scales, self.convs, strict=True):
            pooled = adaptive_avg_pool2d_static(x, scale)  # [B, C_in, s, s]
            outs.append(_resize(conv(pooled), x.shape[-2:]))  # [B, ch, h, w]
        return outs


class UPerNetDecoder(nn.Module):
    """UPerHead without the classifier; fuses the encoder maps at stride 4.

    Attributes:
        in_index: indices of the encoder outputs used, finest first
            (``(0, 1, 2, 3, 4)`` with high-res injection, ``(1, 2, 3, 4)`` without).
        out_channels: channels of the fused output (``channels``).
        out_stride: stride of the fused output (the finest input stride, 4).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        *,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        highres: bool = True,
    ) -> None:
        """Create the decoder.

        Args:
            in_channels: channels of all five encoder outputs (patch embedding,
                stages 1-4), as ``SwinEncoder.out_channels``.
            in_strides: strides of the five encoder outputs.
            channels: channels of every decoder conv (512 in mmseg).
            pool_scales: PPM pool sizes.
            highres: use the post-patch-embedding map as an extra stride-4 level.
        """
        super().__init__()
        first = 0 if highres else 1
        self.in_index = tuple(range(first, len(in_channels)))
        chans = [in_channels[i] for i in self.in_index]
        self.highres = highres
        self.channels = channels
        self.out_channels = channels
        self.out_stride = in_strides[self.in_index[0]]

        # PSP on the deepest map (stride 32): [B, 8C, h, w] -> [B, ch, h, w]
        self.psp_modules = PPM(pool_scales, chans[-1], channels)
        self.bottleneck = ConvBNReLU(
            chans[-1] + len(pool_scales) * channels, channels, 3
        )
        # FPN on the other levels (finest first)
        self.lateral_convs = nn.ModuleList(
            ConvBNReLU(c, channels, 1) for c in chans[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvBNReLU(channels, channels, 3) for _ in chans[:-1]
        )
        self.fpn_bottleneck = ConvBNReLU(len(chans) * channels, channels, 3)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse the encoder maps.

        Args:
            features: the five encoder outputs
                ``[emb (s4), stage1 (s4), stage2 (s8), stage3 (s16), stage4 (s32)]``.

        Returns:
            Fused features [B, channels, H/4, W/4].
        """
        feats = [features[i] for i in self.in_index]
        # laterals: [emb s4,] s4, s8, s16 -> channels; PSP output is the s32 level
        laterals = [
            conv(f) for conv, f in zip(self.lateral_convs, feats[:-1], strict=True)
        ]
        deepest = feats[-1]
        psp = torch.cat([deepest, *self.psp_modules(deepest)], dim=1)
        laterals.append(self.bottleneck(psp))

        # top-down: s32 -> s16 -> s8 -> s4 [-> s4 emb], add the resized coarser level
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(
                laterals[i], laterals[i - 1].shape[-2:]
            )

        # 3×3 fpn convs on all but the top level, then everything to stride 4
        outs = [
            conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1], strict=True)
        ]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [_resize(o, size) for o in outs[1:]]
        # [B, L·channels, H/4, W/4] -> [B, channels, H/4, W/4]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))
