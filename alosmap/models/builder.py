"""The complete segmentation model: Swin encoder → UPerNet decoder → head.

``build_model(arch)`` is the one way to create it; ``arch.highres`` and
``arch.refine_up`` switch the paper's two refinements on and off independently, so
Table I of the paper can be re-run.
"""

from __future__ import annotations

import torch
from torch import nn

from alosmap.arch import ArchConfig
from alosmap.errors import SpecMismatchError
from alosmap.models.decoder import UPerNetDecoder
from alosmap.models.encoder import SwinEncoder
from alosmap.models.heads import PlainHead, RefineUpHead, SegHead


def _is_exporting() -> bool:
    """True while tracing/exporting (TorchScript, torch.export or the ONNX export)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    is_exporting = getattr(compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


class SegmentationModel(nn.Module):
    """Refined UPerNet-Swin: logits at the input resolution.

    Attributes:
        arch: the architecture it was built from.
        encoder: :class:`~alosmap.models.encoder.SwinEncoder`, five maps at strides
            4, 4, 8, 16, 32.
        decoder: :class:`~alosmap.models.decoder.UPerNetDecoder`, fused map at
            stride 4 with ``arch.decoder_channels`` channels.
        head: :class:`~alosmap.models.heads.RefineUpHead` when ``arch.refine_up``
            else :class:`~alosmap.models.heads.PlainHead`.
    """

    def __init__(self, arch: ArchConfig) -> None:
        """Build every part from ``arch``.

        Args:
            arch: the architecture.
        """
        super().__init__()
        self.arch = arch
        self.encoder = SwinEncoder(arch)
        self.decoder = UPerNetDecoder(
            self.encoder.out_channels,
            self.encoder.out_strides,
            channels=arch.decoder_channels,
            pool_scales=arch.pool_scales,
            highres=arch.highres,
        )
        if arch.refine_up:
            self.head: SegHead = RefineUpHead(
                arch.decoder_channels,
                arch.num_classes,
                refine_channels=arch.refine_channels,
                dropout=arch.dropout,
            )
        else:
            self.head = PlainHead(
                arch.decoder_channels, arch.num_classes, dropout=arch.dropout
            )

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (``img_size`` for the presets)."""
        return self.encoder.size_multiple

    def check_input(self, x: torch.Tensor) -> None:
        """Check that ``x`` fits the model.

        Args:
            x: candidate input.

        Raises:
            SpecMismatchError: wrong rank, channel count, dtype or spatial size; the
                message says what was expected.
        """
        arch = self.arch
        if x.ndim != 4:
            raise SpecMismatchError(
                f"expected an input batch [B, {arch.in_chans}, H, W], got a "
                f"{x.ndim}-D tensor of shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise SpecMismatchError(
                f"expected a floating-point input (float32), got {x.dtype}"
            )
        _, c, h, w = x.shape
        if c != arch.in_chans:
            raise SpecMismatchError(
                f"the model takes {arch.in_chans} input band(s) (HH), got {c} "
                f"channels in input of shape {tuple(x.shape)}"
            )
        m = self.size_multiple
        if h < 1 or w < 1 or h % m or w % m:
            new_h, new_w = max(m, -(-h // m) * m), max(m, -(-w // m) * m)
            raise SpecMismatchError(
                f"input height={h}, width={w} does not fit the model: tiles must be "
                f"{arch.img_size}×{arch.img_size} (or multiples of {m}); pad or crop "
                f"to ({new_h}, {new_w})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict logits.

        Args:
            x: normalised backscatter [B, in_chans, H, W], float32; H and W equal
                ``arch.img_size`` (or multiples of :attr:`size_multiple`).

        Returns:
            Logits [B, num_classes, H, W] (softmax for K > 1, sigmoid for K = 1).

        Raises:
            SpecMismatchError: if ``x`` does not fit (not checked while exporting).
        """
        if not _is_exporting():
            self.check_input(x)
        feats = self.encoder(x)  # 5 × [B, C_k, H/s_k, W/s_k], s = 4, 4, 8, 16, 32
        fused = self.decoder(feats)  # [B, C_dec, H/4, W/4]
        return self.head(fused, x.shape[-2:])  # [B, K, H, W]


def build_model(arch: ArchConfig) -> SegmentationModel:
    """Create the segmentation model for ``arch`` (random weights, train mode).

    Args:
        arch: the architecture, e.g. ``get_preset("paper", num_classes=1)``.

    Returns:
        The model.
    """
    return SegmentationModel(arch)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as the APE are not counted).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The count.
    """
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )
