"""Segmentation heads: the plain UPerNet classifier and the progressive refine-up head.

Both take the decoder's fused map [B, C_dec, H/4, W/4] and return logits
[B, K, H, W] at the input resolution (K = 9 for LULC, 1 for water).

* :class:`PlainHead` is mmseg's ``cls_seg`` (Dropout2d + 1×1 conv at stride 4)
  followed by one ×4 bilinear interpolation.
* :class:`RefineUpHead` is the paper's second refinement: staged upsampling with a
  convolutional refinement at each scale, so boundaries are decided at higher
  resolution::

      [B, C_dec, H/4, W/4] -- 3×3 ConvBNReLU --> [B, r0, H/4, W/4]
                           -- ×2 bilinear   --> [B, r0, H/2, W/2]
                           -- 3×3 ConvBNReLU --> [B, r1, H/2, W/2]
                           -- ×2 bilinear   --> [B, r1, H, W]
                           -- Dropout2d + 1×1 conv --> [B, K, H, W]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from alosmap.models.decoder import ConvBNReLU


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``, as mmseg)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegHead(nn.Module, ABC):
    """The interface of both heads: fused decoder features in, full-size logits out.

    Subclasses create ``dropout`` (Dropout2d) and ``conv_seg`` (the 1×1 classifier,
    mmseg's ``cls_seg``) and implement :meth:`decode`.
    """

    dropout: nn.Dropout2d
    conv_seg: nn.Conv2d

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout2d, then the 1×1 classifier: [B, C, h, w] → logits [B, K, h, w]."""
        return self.conv_seg(self.dropout(x))

    @abstractmethod
    def decode(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Logits at ``out_size`` from fused features (each head's own path)."""

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Logits at the input resolution.

        Args:
            x: fused features [B, C_dec, H/4, W/4].
            out_size: (H, W) of the input image.

        Returns:
            Logits [B, K, H, W].
        """
        return self.decode(x, out_size)


class PlainHead(SegHead):
    """Classifier at stride 4, then ×4 bilinear interpolation to the input size."""

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.1
    ) -> None:
        """Create the head.

        Args:
            in_channels: decoder channels.
            num_classes: output logits K.
            dropout: Dropout2d probability before the classifier.
        """
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def decode(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Classify at stride 4, then one ×4 bilinear upsampling."""
        logits = self.classify(x)  # [B, K, H/4, W/4]
        return _upsample(logits, out_size)  # [B, K, H, W]


class RefineUpHead(SegHead):
    """Progressive upsampling head: refine, ×2, refine, ×2, classify at full size."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        refine_channels: Sequence[int] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        """Create the head.

        Args:
            in_channels: decoder channels.
            num_classes: output logits K.
            refine_channels: widths (r0, r1) of the two refinement convs.
            dropout: Dropout2d probability before the classifier.
        """
        super().__init__()
        r0, r1 = refine_channels
        self.refine1 = ConvBNReLU(in_channels, r0, 3)
        self.refine2 = ConvBNReLU(r0, r1, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(r1, num_classes, kernel_size=1)

    def decode(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Refine and upsample in two ×2 steps, then classify at full size."""
        h, w = int(out_size[0]), int(out_size[1])
        x = self.refine1(x)  # [B, r0, H/4, W/4]
        x = _upsample(x, (h // 2, w // 2))  # [B, r0, H/2, W/2]
        x = self.refine2(x)  # [B, r1, H/2, W/2]
        x = _upsample(x, (h, w))  # [B, r1, H, W]
        return self.classify(x)  # [B, K, H, W]
