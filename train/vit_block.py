"""The plain (global-attention) ViT block of MixMAE's decoder, without timm.

It replaced ``timm.models.vision_transformer.Block`` (as MixMAE built it:
``qkv_bias=True``, ``nn.LayerNorm``, no dropout, no drop path, no layer scale), so
that training needs timm only to import MixMIM ``.pth`` checkpoints. It keeps timm's
parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), so pretraining checkpoints written with timm's block load unchanged;
builds its modules in timm's order, so a seed gives the same initial weights; and
attends through :func:`torch.nn.functional.scaled_dot_product_attention` as timm's
fused attention (its default) does, so the outputs are bit-equal.
``tests/train/test_vit_block.py`` checks all three against timm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alosmap.models.swin import Mlp

__all__ = ["ViTAttention", "ViTBlock"]


class ViTAttention(nn.Module):
    """Multi-head self-attention over all tokens (biased qkv, output projection).

    Args:
        dim: channels.
        num_heads: attention heads (``dim`` divisible by it).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, C]`` → ``[B, N, C]`` (softmax scale ``head_dim^-0.5``)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    """Pre-norm self-attention and MLP (GELU), each with a residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width ÷ ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, C]`` → the same shape."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
