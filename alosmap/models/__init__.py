"""The refined UPerNet-Swin segmentation model (``alosmap.models``).

A Swin encoder (timm's layout, MixMIM-style: no shifted windows, fixed sin-cos APE),
a UPerNet decoder with the optional high-resolution injection, and the plain or
progressive refine-up head. Build it with :func:`build_model` from an
:class:`~alosmap.arch.ArchConfig`.
"""

from __future__ import annotations

from alosmap.models.builder import SegmentationModel, build_model, count_parameters
from alosmap.models.decoder import UPerNetDecoder, adaptive_avg_pool2d_static
from alosmap.models.encoder import SwinEncoder, sincos_pos_embed_2d
from alosmap.models.heads import PlainHead, RefineUpHead, SegHead

__all__ = [
    "PlainHead",
    "RefineUpHead",
    "SegHead",
    "SegmentationModel",
    "SwinEncoder",
    "UPerNetDecoder",
    "adaptive_avg_pool2d_static",
    "build_model",
    "count_parameters",
    "sincos_pos_embed_2d",
]
