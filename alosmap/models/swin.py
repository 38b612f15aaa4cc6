"""The Swin modules of the encoder: patch embedding, window attention, blocks, stages.

Written for alosmap so that mapping never imports timm (≈ 1.5 s of every ``alosmap
predict``, most of it the torchvision and ``torch._dynamo`` modules timm pulls in).
timm is an optional dependency (``alosmap[mixmim]``), imported only to convert MixMIM
``.pth`` checkpoints; MixMAE's decoder blocks are alosmap's too
(:mod:`alosmap.train.vit_block`). These modules keep timm's module layout and
parameter names, so the encoder's ``state_dict`` keys (``patch_embed.proj.weight``,
``layers.2.blocks.17.attn.qkv.weight``, ``layers.1.downsample.reduction.weight``,
...) are those of timm's Swin and of MixMIM checkpoints passed through timm's
``checkpoint_filter_fn``; and a model built with a seed gets the initial weights the
timm-built encoder had (same modules, built in the same order, the same
truncated-normal draws). ``tests/models/test_swin_parity.py`` checks both, and the
outputs, against timm.

What differs from timm's Swin on purpose: no shifted windows anywhere (MixMIM has
none), so no shift sizes, roll or shifted-window mask; blocks run on an ``[B, H, W,
C]`` grid divisible by their window (the encoder checks it at build time); the
attention's optional ``mask`` is MixMAE's additive bias.

Another tile size: a window is clamped to its stage's token grid, so the same
network built for smaller tiles has smaller windows in its last stages. Its
relative position bias tables are then smaller, and a table of a larger window
loads into them (:func:`resize_bias_table`): the biases of the offsets that remain,
exactly (a centre crop; timm interpolates, which changes them). A table of a
smaller window is interpolated (bicubic) as timm does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from alosmap.arch import stage_windows

#: Standard deviation of the truncated-normal initialisation of every linear layer
#: and of the relative position bias tables (cut at ±2, as timm's ``trunc_normal_``).
INIT_STD = 0.02


def trunc_normal_(
    t: torch.Tensor, std: float = INIT_STD, cut: float = 2.0
) -> torch.Tensor:
    """Fill ``t`` in place from N(0, std²) truncated to ``[-cut, cut]``; return it.

    Inverse-CDF sampling: uniform values between the CDFs of the two cuts, mapped
    through the inverse error function. The same draws as the initialisation of
    timm's Swin (PyTorch's own ``trunc_normal_`` now samples differently), so a seed
    gives the same initial model as before the encoder left timm.
    """

    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf(-cut / std), cdf(cut / std)
    with torch.no_grad():
        t.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_()
        return t.mul_(std * math.sqrt(2.0)).clamp_(min=-cut, max=cut)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)``; a no-op outside training.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with whole samples dropped (training) or unchanged."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


class PatchEmbed(nn.Module):
    """``patch × patch`` convolution with stride ``patch``, then LayerNorm; NHWC out."""

    def __init__(self, in_chans: int, embed_dim: int, patch: int) -> None:
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` → tokens ``[B, H/patch, W/patch, embed_dim]``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """Index into the bias table of every (query, key) pair of a ``wh × ww`` window.

    Tokens in row-major order; the pair's offset ``(dy, dx)`` (each shifted to start
    at 0) is stored row-major in a ``(2wh − 1) × (2ww − 1)`` table.
    """
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (wh - 1)
    dx = xs[:, None] - xs[None, :] + (ww - 1)
    return dy * (2 * ww - 1) + dx  # [N, N], N = wh·ww


def resize_bias_table(
    table: torch.Tensor, window: tuple[int, int]
) -> torch.Tensor | None:
    """A relative position bias table of another square window, for ``window``.

    Args:
        table: ``[(2w − 1)², heads]`` of a ``w × w`` window.
        window: the ``(wh, ww)`` window it is wanted for.

    Returns:
        ``[(2wh − 1)·(2ww − 1), heads]``: the centre crop (every offset of the
        smaller window keeps its bias) or a bicubic interpolation (a larger
        window); None when ``table`` is not of a square window's shape.
    """
    if table.ndim != 2:
        return None
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        return None
    th, tw = 2 * window[0] - 1, 2 * window[1] - 1
    grid = table.T.reshape(1, -1, side, side)  # [1, heads, dy, dx]
    if th <= side and tw <= side:
        r0, c0 = (side - th) // 2, (side - tw) // 2
        grid = grid[:, :, r0 : r0 + th, c0 : c0 + tw]
    else:
        grid = nn.functional.interpolate(
            grid.float(), size=(th, tw), mode="bicubic", align_corners=False
        ).to(table.dtype)
    return grid.reshape(table.shape[1], th * tw).T.contiguous()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a relative position bias.

    Args:
        dim: channels.
        window: ``(wh, ww)``.
        num_heads: attention heads (``dim`` divisible by it).
    """

    #: ``[N, N]`` index of every (query, key) pair into the bias table (a buffer).
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        wh, ww = window
        self.window_size = window
        self.window_area = wh * ww
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.register_buffer(
            "relative_position_index",
            relative_position_index(wh, ww),
            persistent=False,
        )
        self.qkv = nn.Linear(dim, 3 * head_dim * num_heads)
        self.proj = nn.Linear(head_dim * num_heads, dim)
        trunc_normal_(self.relative_position_bias_table)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Load; a bias table of another window size is resized to this window.

        The network built for another tile size (a window clamped to a smaller
        stage grid) loads the weights of the one it was trained at
        (:func:`resize_bias_table`).
        """
        key = prefix + "relative_position_bias_table"
        table = state_dict.get(key)
        own = self.relative_position_bias_table
        if isinstance(table, torch.Tensor) and table.shape != own.shape:
            resized = resize_bias_table(table, self.window_size)
            if resized is not None and resized.shape == own.shape:
                state_dict[key] = resized
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def position_bias(self) -> torch.Tensor:
        """The bias ``[1, heads, N, N]`` added to every window's attention logits."""
        n = self.window_area
        idx = self.relative_position_index.reshape(-1)
        bias = self.relative_position_bias_table[idx].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend within each window.

        Args:
            x: tokens ``[B·nW, N, C]`` (N = window area).
            mask: optional additive bias ``[M, N, N]``, ``M`` dividing ``B·nW``
                (windows of one image shared by the batch, or one per window).

        Returns:
            Tokens ``[B·nW, N, C]``.
        """
        b, n, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B·nW, heads, N, head_dim]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.position_bias()
        if mask is not None:
            m = mask.shape[0]
            attn = attn.view(-1, m, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear → GELU → linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[..., dim]`` → the same shape."""
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm window attention and MLP, each with a residual (never shifted).

    Args:
        dim: channels.
        num_heads: attention heads.
        window: ``(wh, ww)``.
        mlp_ratio: MLP hidden width ÷ ``dim``.
        drop_path: stochastic depth of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: tuple[int, int],
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = _drop_path(drop_path)

    def forward(
        self, x: torch.Tensor, attn_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens ``[B, H, W, C]`` (H, W divisible by the window) → the same shape.

        ``attn_bias``: MixMAE's additive attention bias (see :class:`WindowAttention`).
        """
        b, h, w, c = x.shape
        wh, ww = self.window_size
        y = self.norm1(x)
        # [B, H, W, C] -> [B·nW, wh·ww, C], windows in row-major order per image
        y = y.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        y = self.attn(y.reshape(-1, wh * ww, c), mask=attn_bias)
        # [B·nW, wh·ww, C] -> [B, H, W, C]
        y = y.view(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        x = x + self.drop_path1(y.reshape(b, h, w, c))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 token merge, LayerNorm, linear ``4C → 2C`` (no bias).

    For each 2×2 cell the tokens are concatenated in the order (0,0), (1,0), (0,1),
    (1,1) (row, column), as timm and MixMIM do.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, H, W, C]`` (H, W even) → ``[B, H/2, W/2, 2C]``."""
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """An optional :class:`PatchMerging`, then ``depth`` :class:`SwinBlock` s."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: tuple[int, int],
        mlp_ratio: float,
        drop_paths: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.downsample: nn.Module = (
            PatchMerging(dim // 2) if downsample else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *(
                SwinBlock(dim, num_heads, window, mlp_ratio, drop_paths[i])
                for i in range(depth)
            )
        )

    @property
    def window_size(self) -> tuple[int, int]:
        """The ``(wh, ww)`` window of the stage's blocks."""
        return cast("SwinBlock", self.blocks[0]).window_size

    def forward(
        self, x: torch.Tensor, attn_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Merge (stages after the first), then run the blocks.

        Tokens ``[B, H, W, C/2]`` → ``[B, H/2, W/2, C]`` (the first stage keeps
        ``[B, H, W, C]``); ``attn_bias`` goes to every block.
        """
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x, attn_bias)
        return x


def swin_layers(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    windows: Sequence[tuple[int, int]],
    mlp_ratio: float,
    drop_path_rate: float,
) -> nn.Sequential:
    """The stages: stage ``i`` works at ``embed_dim · 2^i`` channels.

    Stochastic depth grows linearly from 0 at the first block to ``drop_path_rate``
    at the last, over all stages.
    """
    rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    stages, first = [], 0
    for i, depth in enumerate(depths):
        stages.append(
            SwinStage(
                embed_dim * 2**i,
                depth,
                num_heads[i],
                windows[i],
                mlp_ratio,
                rates[first : first + depth],
                downsample=i > 0,
            )
        )
        first += depth
    return nn.Sequential(*stages)


def init_linear_layers(module: nn.Module) -> None:
    """Truncated-normal weights (std :data:`INIT_STD`) and zero biases, every linear."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = [
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "init_linear_layers",
    "relative_position_index",
    "resize_bias_table",
    "stage_windows",
    "swin_layers",
    "trunc_normal_",
]
