"""Swin encoder of the segmentation model (MixMIM-style forward).

The encoder is the one SAR-W-MixMAE pretrains (a MixMIM encoder), built from the
Swin modules of :mod:`alosmap.models.swin` (timm's layout and parameter names, no
timm import):

* **No shifted windows.** MixMIM has no shift or roll in any block, and neither has
  :class:`~alosmap.models.swin.SwinBlock`.
* **Fixed 2-D sin-cos absolute position embedding** added right after patch
  embedding (MixMIM/MAE layout, see :func:`sincos_pos_embed_2d`). It is a
  *non-persistent buffer*: it is a deterministic function of ``embed_dim`` and the
  token grid, so it is not stored in ``state_dict`` (MixMIM's ``absolute_pos_embed``
  key is dropped on load), it is never seen by an optimiser or its weight-decay
  groups, it follows ``.to(device, dtype)``, and it becomes a constant in ONNX.
  **Another tile size**: being fixed, it is rebuilt for the new token grid (not
  interpolated, as a learned table would be: timm's ``resample_abs_pos_embed``);
  the table of an ``h × w`` grid is the top-left corner of any larger one. The
  model for other tiles is :meth:`ArchConfig.with_tile_size
  <alosmap.arch.ArchConfig.with_tile_size>`, which refuses the sizes whose stage
  grids the windows do not tile (and lists those that fit).
* **timm parameter names.** ``self.patch_embed`` and ``self.layers`` have timm's
  module layout, so the encoder's ``state_dict`` keys (``patch_embed.proj.weight``,
  ``layers.2.blocks.17.attn.qkv.weight``, ...) are timm's and a MixMIM /
  SAR-W-MixMAE checkpoint passed through
  ``timm.models.swin_transformer.checkpoint_filter_fn(state_dict, encoder)`` loads
  with ``absolute_pos_embed`` as the only unexpected key (plus MixMIM's final
  ``norm.*``, which a loader may copy into ``out_norms.3``).
* **Per-output LayerNorm** on each stage output (``out_norms.i``), as mmseg's Swin
  backbone does (``norm0``..``norm3``) before handing features to UPerHead.

Hook for MixMAE pretraining: :meth:`SwinEncoder.forward` accepts ``attn_bias``, one
optional additive attention bias per stage (``N`` = window area, ``nW`` = windows per
image), passed to every block's ``WindowAttention(x, mask=...)``:

* ``[nW, N, N]``: shared by the batch (MixMIM draws one mask per batch);
* ``[B·nW, N, N]``: one per window of every image, in the order the windows are
  partitioned (image, window row, window column), for masks that differ per sample.
  The attention reads the leading dimension as its window count, so both shapes work.

Building it from the per-token source mask is the pretraining code's job
(:func:`alosmap.train.mixmae.attention_bias`): window-partition the stage mask ``m``
to ``[·, N]`` and put a large negative value where ``m_i != m_j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from alosmap.arch import ArchConfig
from alosmap.errors import SpecError
from alosmap.models.swin import (
    PatchEmbed,
    SwinStage,
    init_linear_layers,
    stage_windows,
    swin_layers,
)


def sincos_pos_embed_2d(
    embed_dim: int, grid_h: int, grid_w: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position table in the MAE/MixMIM layout.

    For the token at row ``i`` and column ``j`` (row-major order, as the tokens are
    flattened), with ``D = embed_dim`` and ``q = D // 4``, ``ω_k = 10000^(-k/q)``::

        emb[0 : q]      = sin(j·ω)      emb[q : 2q]   = cos(j·ω)     # column
        emb[2q : 3q]    = sin(i·ω)      emb[3q : 4q]  = cos(i·ω)     # row

    The first half encodes the column: MAE's ``np.meshgrid(grid_w, grid_h)`` puts the
    ``w`` coordinate first. Computed in float64 and cast, as MixMIM does in numpy.

    Args:
        embed_dim: channels ``D``, a multiple of 4.
        grid_h: token rows.
        grid_w: token columns.
        dtype: output dtype.

    Returns:
        Table of shape [grid_h, grid_w, D] (NHWC, ready to add to the tokens).

    Raises:
        SpecError: if ``embed_dim`` is not a multiple of 4.
    """
    if embed_dim % 4:
        raise SpecError(
            f"arch.embed_dim: the sin-cos position embedding needs a multiple of 4, "
            f"got {embed_dim}"
        )
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(grid_h, dtype=torch.float64)[:, None] * omega  # [H, q]
    cols = torch.arange(grid_w, dtype=torch.float64)[:, None] * omega  # [W, q]
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)  # [W, D/2]
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)  # [H, D/2]
    table = torch.cat(
        [
            col_emb[None, :, :].expand(grid_h, grid_w, embed_dim // 2),
            row_emb[:, None, :].expand(grid_h, grid_w, embed_dim // 2),
        ],
        dim=2,
    )
    return table.to(dtype)


class SwinEncoder(nn.Module):
    """Hierarchical Swin encoder returning five NCHW feature maps.

    For an input [B, in_chans, H, W] (H, W multiples of :attr:`size_multiple`; the
    paper preset at 256×256 gives 64/32/16/8-token stage grids), ``forward`` returns:

    ===  =====================================  ======  ============
    idx  map                                    stride  channels
    ===  =====================================  ======  ============
    0    patch embedding (conv 4×4 + LN), the   4       embed_dim
         high-resolution map, before the APE
    1    stage 1 output, LayerNorm'ed           4       C
    2    stage 2 output, LayerNorm'ed           8       2C
    3    stage 3 output, LayerNorm'ed           16      4C
    4    stage 4 output, LayerNorm'ed           32      8C
    ===  =====================================  ======  ============

    Map 0 is taken *before* the position embedding so that the decoder's
    high-resolution injection stays a purely local, translation-equivariant feature;
    the stages see ``patch_embed(x) + APE`` as MixMIM does.

    Attributes:
        patch_embed: :class:`~alosmap.models.swin.PatchEmbed` (NHWC output).
        layers: :class:`~alosmap.models.swin.SwinStage` s (``layers.0`` has no
            downsample).
        out_norms: one LayerNorm per stage output.
        out_channels: channels of the five outputs.
        out_strides: strides of the five outputs.
        window_sizes: effective (h, w) window per stage after clamping to the grid.
        size_multiple: H and W must be multiples of this (every stage grid divisible
            by its window); equals ``img_size`` for the presets.
    """

    #: The sin-cos table [1, h, w, C] of the build size (a non-persistent buffer).
    absolute_pos_embed: torch.Tensor

    def __init__(self, arch: ArchConfig) -> None:
        """Build the encoder for ``arch``.

        Args:
            arch: architecture; uses in_chans, img_size, patch_size, embed_dim,
                depths, num_heads, window_size, mlp_ratio, drop_path_rate.

        Raises:
            SpecError: if a window does not tile its stage grid.
        """
        super().__init__()
        self.arch = arch
        grid = arch.img_size // arch.patch_size
        # built in timm's order (patch embedding, stages, then every linear layer
        # re-initialised), so a seed gives the weights the timm-built encoder had
        self.patch_embed = PatchEmbed(arch.in_chans, arch.embed_dim, arch.patch_size)
        self.layers: nn.Sequential = swin_layers(
            arch.embed_dim,
            arch.depths,
            arch.num_heads,
            stage_windows(arch.window_size, grid, arch.num_stages),
            arch.mlp_ratio,
            arch.drop_path_rate,
        )
        init_linear_layers(self)

        chans = arch.stage_channels
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in chans)
        self.out_channels: tuple[int, ...] = (arch.embed_dim, *chans)
        self.out_strides: tuple[int, ...] = (
            arch.patch_size,
            *(arch.patch_size * 2**i for i in range(arch.num_stages)),
        )
        self.window_sizes: tuple[tuple[int, int], ...] = tuple(
            stage.window_size for stage in self.stages
        )

        problem = arch.tile_size_problem(arch.img_size)
        if problem is not None:
            raise SpecError(
                f"arch.window_size {arch.window_size} at img_size {arch.img_size}: "
                f"{problem}; the tile sizes these windows fit: "
                + ", ".join(map(str, arch.valid_tile_sizes()))
            )
        multiple = arch.stride
        for i, (wh, ww) in enumerate(self.window_sizes):
            cell = arch.patch_size * 2**i
            multiple = math.lcm(multiple, cell * wh, cell * ww)
        self.size_multiple = multiple

        self.register_buffer(
            "absolute_pos_embed",
            sincos_pos_embed_2d(arch.embed_dim, grid, grid)[None],  # [1, h, w, C]
            persistent=False,
        )

    @property
    def stages(self) -> list[SwinStage]:
        """The stages of :attr:`layers`, in order."""
        return [cast("SwinStage", stage) for stage in self.layers]

    def _pos_embed(self, h: int, w: int, x: torch.Tensor) -> torch.Tensor:
        """APE for an [h, w] token grid: the buffer, or a fresh table if it differs."""
        table = self.absolute_pos_embed
        if table.shape[1] == h and table.shape[2] == w:
            return table
        return sincos_pos_embed_2d(self.arch.embed_dim, h, w, dtype=x.dtype)[None].to(
            x.device
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_bias: Sequence[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """Encode an image batch.

        Args:
            x: images [B, in_chans, H, W].
            attn_bias: optional per-stage additive attention bias, each
                [nW_s, N_s, N_s] (shared) or [B·nW_s, N_s, N_s] (per image) or None
                (MixMAE pretraining); see the module docstring.

        Returns:
            Five maps [B, C_k, H / s_k, W / s_k] with ``C_k = out_channels[k]`` and
            ``s_k = out_strides[k]``.
        """
        tokens = self.patch_embed(x)  # [B, H/4, W/4, C1]
        outs = [tokens.permute(0, 3, 1, 2).contiguous()]  # stride 4, before APE
        tokens = tokens + self._pos_embed(tokens.shape[1], tokens.shape[2], tokens)
        for i, stage in enumerate(self.stages):
            bias = attn_bias[i] if attn_bias is not None else None
            # stage 1 has no downsample; later ones halve H, W and double C
            tokens = stage(tokens, bias)
            # stage i+1: [B, H/(4·2^i), W/(4·2^i), C·2^i] -> NCHW after LayerNorm
            outs.append(self.out_norms[i](tokens).permute(0, 3, 1, 2).contiguous())
        return outs
