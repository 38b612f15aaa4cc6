"""SAR-W-MixMAE: the MixMAE pretraining model and its SAR-W weighted loss.

A port of MixMAE (Liu et al., CVPR 2023; ``Sense-X/MixMIM``, ``models_mixmim.py``)
with the SAR-W weighting of SAR-W-MixMAE (Caglayan et al., JSTARS 2026;
``acaglayan/SAR-W-MixMAE``, ``sarwmix/weighting.py``) around the same
:class:`~alosmap.models.SwinEncoder` that finetuning uses. Written from the method
notes, not copied; the differences from the references are deliberate and listed.

**Pairs and masks.** Image ``i`` of a batch is paired with image ``B-1-i``
(MixMIM's ``x.flip(0)``), so the batch must be even. One mask is drawn per pair on
the *last stage's* token grid (stride 32: one mask cell is a 32×32-pixel block, an
8×8 grid at 256 px): ``int(L · mask_ratio)`` of its ``L`` cells are 1, chosen by
``argsort`` of uniform noise. 1 means "this token comes from the partner image".
Mixed sample ``i`` shows image ``i`` where the mask is 0 and image ``B-1-i`` where it
is 1; the partner's mixed sample uses the *same* mask, so each image is visible in
exactly one of the two samples at every cell (complementary masks). MixMIM draws one
mask for the whole batch; a mask per pair gives more mask diversity per step at the
same cost, which matters at the small per-GPU batches of finetuning-sized machines.
Earlier stages use the mask upsampled by nearest neighbour (×8, ×4, ×2 tokens).

**Mixing** happens on pixels, before the encoder. Swin's patch embedding is a 4×4
stride-4 convolution followed by a per-token LayerNorm and the mask is constant on
32×32 blocks, so mixing pixels is exactly MixMIM's mixing of the embedded tokens; the
fixed sin-cos position embedding is added after it, as in MixMIM.

**Attention isolation.** In every block of every stage, a token attends only to
tokens of its own source image: the stage mask is window-partitioned like the tokens
and the additive bias is ``-1e4`` where two tokens come from different images
(MixMIM subtracts ``1e30``, or 65500 in fp16; ``-1e4`` is finite in every autocast
dtype and still makes ``exp`` underflow to exactly 0 in float32). Because masks
differ per pair, the bias is per sample, ``[B·nW, N, N]``; the encoder's
``WindowAttention`` accepts it as its ``mask`` (``nW`` is then ``B·nW``).

**Decoder (dual reconstruction).** The final-stage tokens (after the encoder's last
output LayerNorm, MixMIM's final ``norm``) are projected to the decoder width and
split into two streams: the tokens of image ``i`` with a learnable mask token where
``i`` was hidden, and the tokens of the partner with the mask token elsewhere. Both
streams go through the decoder side by side (``2B`` sequences), with a fixed 2-D
sin-cos position embedding, plain ViT blocks (timm's ``Block`` layout, without
timm: :mod:`alosmap.train.vit_block`), a LayerNorm and a linear layer that
predicts each 32×32 patch (``32·32·C`` values). Un-mixing takes, for each image and
cell, the prediction from the sample in which that cell of the image was hidden, so
every token is predicted from a view that did not show it. Decoder size per preset:
``paper`` 512 wide, 8 blocks, 16 heads (MixMIM-B); smaller for ``small``/``tiny``.

**Targets.** Patches of the normalised input, 32×32×C values in ``(p, q, c)`` order
(MAE's ``patchify``), each normalised by its own mean and unbiased variance
(``norm_pix_loss``, ``(t − μ)/√(σ² + 1e-6)``). No-data pixels (NaN σ0) are left out
of the patch statistics and of the loss; with no no-data both are exactly MixMIM's.

**SAR-W weighting** (SAR-W-MixMAE ``compute_weights``, ``exp_scale`` 1): from σ0 in
dB, ``lin = 10^(dB/10)``, min-max normalised per image and channel over the valid
pixels, ``lin_n = (lin − min)/(max − min + 1e-6)``, weight ``w = exp(s·(1 − lin_n))``
in ``[1, e]`` for ``s = 1``: the darkest pixels (water, shadow) weigh most. It is
pixel-wise and multiplies the squared error of the normalised target:
``loss = Σ w·(pred − target)² / #valid``, MixMIM's plain mean when all pixels are
valid. The reference computes it after its ``Normalize`` transform (on already
normalised values, a quirk); here it is computed from the σ0 dB patch before
normalisation, clipped to the model's input range, and after the flips/rot90 that
were applied to the image (a pixel permutation, so it equals weighting first and
augmenting jointly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alosmap.arch import ArchConfig
from alosmap.models import SwinEncoder, sincos_pos_embed_2d
from alosmap.train.vit_block import ViTBlock

__all__ = [
    "DECODER_PRESETS",
    "MASK_VALUE",
    "DecoderConfig",
    "MixMAE",
    "attention_bias",
    "mix_images",
    "normalize_patches",
    "patchify",
    "random_pair_masks",
    "reconstruction_loss",
    "sar_w_weights",
    "unpatchify",
    "upsample_mask",
]

#: Additive attention bias between tokens of different source images.
MASK_VALUE = -1.0e4


@dataclass(frozen=True)
class DecoderConfig:
    """Size of the MixMAE decoder (a plain ViT over the last-stage tokens).

    Attributes:
        dim: decoder width (a multiple of 4 for the sin-cos position table).
        depth: ViT blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden ratio.
    """

    dim: int = 512
    depth: int = 8
    heads: int = 16
    mlp_ratio: float = 4.0


#: Decoder per architecture preset (``paper`` is MixMIM-B's 512/8/16).
DECODER_PRESETS: dict[str, DecoderConfig] = {
    "paper": DecoderConfig(512, 8, 16),
    "small": DecoderConfig(128, 2, 4),
    "tiny": DecoderConfig(32, 1, 2),
}


# --------------------------------------------------------------------------------------
# Masks and mixing
# --------------------------------------------------------------------------------------


def random_pair_masks(
    batch: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random mask per pair ``(i, B-1-i)`` on the last stage's token grid.

    Args:
        batch: ``B``, even.
        grid: last-stage token grid ``(gh, gw)`` (image size / 32).
        mask_ratio: share of cells taken from the partner image.
        generator: random source (CPU).

    Returns:
        Float mask [B, gh, gw] of 0/1, ``1`` = the token comes from the partner;
        ``mask[B-1-i] == mask[i]`` and each has exactly ``int(gh·gw·ratio)`` ones.

    Raises:
        ValueError: odd ``batch`` or a ratio that leaves one image without tokens.
    """
    if batch % 2:
        raise ValueError(f"MixMAE mixes images in pairs; the batch ({batch}) is odd")
    gh, gw = grid
    length = gh * gw
    keep = int(length * mask_ratio)
    if not 0 < keep < length:
        raise ValueError(
            f"mask_ratio {mask_ratio} gives {keep} of {length} mask cells to the "
            "partner; it must leave each image at least one cell"
        )
    half = batch // 2
    noise = torch.rand(half, length, generator=generator)
    ids = noise.argsort(dim=1)[:, :keep]
    mask = torch.zeros(half, length)
    mask.scatter_(1, ids, 1.0)
    mask = mask.view(half, gh, gw)
    return torch.cat([mask, mask.flip(0)], dim=0)


def upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of a [B, h, w] mask by an integer ``factor``."""
    if factor == 1:
        return mask
    return mask.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def mix_images(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mix each image with its partner (``B-1-i``) where ``mask`` is 1.

    Args:
        x: images [B, C, H, W].
        mask: last-stage mask [B, gh, gw] (H/gh = W/gw = the cell size in pixels).

    Returns:
        ``x·(1 − m) + x.flip(0)·m`` with ``m`` upsampled to pixels, [B, C, H, W].
    """
    m = upsample_mask(mask, x.shape[-1] // mask.shape[-1])[:, None].to(x.dtype)
    return x * (1 - m) + x.flip(0) * m


def attention_bias(
    mask: torch.Tensor,
    grid: tuple[int, int],
    window: tuple[int, int],
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-window additive attention bias keeping tokens within their source image.

    Args:
        mask: last-stage mask [B, gh, gw].
        grid: the stage's token grid ``(H, W)`` (a multiple of the mask grid).
        window: the stage's attention window ``(wh, ww)``.
        dtype: output dtype.

    Returns:
        Bias [B·nW, N, N] (``N = wh·ww``, windows in the encoder's order: image,
        then window row, then window column; tokens row-major inside a window):
        0 between tokens of the same image, :data:`MASK_VALUE` otherwise.
    """
    b = mask.shape[0]
    h, w = grid
    wh, ww = window
    m = upsample_mask(mask, h // mask.shape[1])  # [B, H, W]
    m = m.view(b, h // wh, wh, w // ww, ww).permute(0, 1, 3, 2, 4)
    m = m.reshape(-1, wh * ww)  # [B·nW, N]
    other = m[:, :, None] != m[:, None, :]
    return torch.zeros(other.shape, dtype=dtype, device=mask.device).masked_fill(
        other, MASK_VALUE
    )


# --------------------------------------------------------------------------------------
# Targets, weights and loss
# --------------------------------------------------------------------------------------


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] → [B, L, p·p·C] patches in row-major order, ``(p, q, c)`` inside."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # [B, h, w, p, q, C]
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x: torch.Tensor, patch: int, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`patchify`: [B, L, p·p·C] → [B, C, H, W] with ``size = (H, W)``."""
    b, _, d = x.shape
    c = d // (patch * patch)
    h, w = size[0] // patch, size[1] // patch
    x = x.reshape(b, h, w, patch, patch, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h * patch, w * patch)


def normalize_patches(
    target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch normalisation of a target (MAE/MixMIM ``norm_pix_loss``).

    Args:
        target: patches [B, L, D].
        valid: 0/1 [B, L, D]; statistics use the valid values only (all if None).
        eps: added to the variance.

    Returns:
        ``((t − μ)/√(σ² + eps), μ, √(σ² + eps))`` with the unbiased variance, as
        ``torch.var`` in the reference; μ and the scale are [B, L, 1].
    """
    if valid is None:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
    else:
        n = valid.sum(dim=-1, keepdim=True)
        mean = (target * valid).sum(dim=-1, keepdim=True) / n.clamp_min(1)
        sq = ((target - mean) ** 2 * valid).sum(dim=-1, keepdim=True)
        var = sq / (n - 1).clamp_min(1)
    scale = (var + eps).sqrt()
    return (target - mean) / scale, mean, scale


def sar_w_weights(
    db: torch.Tensor,
    *,
    scale: float = 1.0,
    clip_db: tuple[float, float] | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """SAR-W pixel weights from σ0 in dB (SAR-W-MixMAE ``compute_weights``).

    ``lin = 10^(dB/10)``; per image and channel, over the valid pixels,
    ``lin_n = (lin − min)/(max − min + eps)``; ``w = exp(scale·(1 − lin_n))``.

    Args:
        db: σ0 [B, C, H, W] in dB, NaN at no data (not normalised).
        scale: the exponent's scale (``exp_scale``, 1.0 in the paper: w ∈ [1, e]).
        clip_db: clip σ0 to this range first (the model's input range), or None.
        eps: added to the min-max range (in linear power units).

    Returns:
        Weights [B, C, H, W], 0 at no data.
    """
    db = db.float()
    valid = torch.isfinite(db)
    if clip_db is not None:
        db = db.clamp(*clip_db)
    lin = torch.pow(10.0, db / 10.0)
    inf = torch.full_like(lin, float("inf"))
    lo = torch.where(valid, lin, inf).amin(dim=(-2, -1), keepdim=True)
    hi = torch.where(valid, lin, -inf).amax(dim=(-2, -1), keepdim=True)
    lin_n = (lin - lo) / (hi - lo + eps)
    w = torch.exp(scale * (1.0 - lin_n))
    return torch.where(valid, w, torch.zeros_like(w))


def reconstruction_loss(
    pred: torch.Tensor,
    images: torch.Tensor,
    *,
    patch: int,
    weight: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    norm_pix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMAE dual-reconstruction loss, SAR-W weighted (computed in float32).

    Args:
        pred: un-mixed predictions [B, L, p·p·C] (:meth:`MixMAE.forward`).
        images: the normalised inputs [B, C, H, W] (before mixing).
        patch: the cell size in pixels (the encoder stride, 32).
        weight: per-pixel weights [B, C, H, W] (:func:`sar_w_weights`), or None.
        valid: per-pixel 0/1 validity [B, C, H, W], or None (all valid).
        norm_pix: normalise each target patch by its mean and standard deviation.

    Returns:
        ``(loss, mse)``: ``Σ w·e² / #valid`` and the unweighted ``Σ e² / #valid``
        (``e = pred − target``) over every valid pixel of every image.
    """
    target = patchify(images.float(), patch)
    v = None if valid is None else patchify(valid.float(), patch)
    if norm_pix:
        target = normalize_patches(target, v)[0]
    err = (pred.float() - target) ** 2
    if v is not None:
        err = err * v
    count = err.new_tensor(err.numel()) if v is None else v.sum().clamp_min(1)
    mse = err.sum() / count
    if weight is None:
        return mse, mse.detach()
    loss = (patchify(weight.float(), patch) * err).sum() / count
    return loss, mse.detach()


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def _init_decoder(module: nn.Module) -> None:
    """MixMIM's ``_init_weights``: truncated normal (std .02) linears, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MixMAE(nn.Module):
    """The Swin encoder of finetuning plus MixMAE's un-mixing decoder.

    Attributes:
        encoder: the :class:`~alosmap.models.SwinEncoder` (its ``state_dict`` is the
            pretraining product). Only the last output LayerNorm is trained here
            (MixMIM's final ``norm``); the other ``out_norms`` stay at identity and
            are frozen.
        decoder_embed: last-stage channels → decoder width.
        mask_token: learnable token for hidden cells.
        decoder_blocks: plain ViT blocks (:class:`~alosmap.train.vit_block.ViTBlock`,
            timm's ``Block`` layout).
        decoder_norm: LayerNorm before the prediction.
        decoder_pred: decoder width → ``patch·patch·in_chans`` pixels per cell.
        patch: cell size in pixels (the encoder stride).
        grid: last-stage token grid ``(gh, gw)`` at ``arch.img_size``.
    """

    decoder_pos_embed: torch.Tensor

    def __init__(self, arch: ArchConfig, decoder: DecoderConfig) -> None:
        """Build the model.

        Args:
            arch: encoder architecture (``img_size`` fixes the decoder's grid).
            decoder: decoder size.
        """
        super().__init__()
        self.arch = arch
        self.decoder_config = decoder
        self.encoder = SwinEncoder(arch)
        for norm in self.encoder.out_norms[:-1]:
            norm.requires_grad_(False)
        self.patch = arch.stride
        g = arch.img_size // arch.stride
        self.grid = (g, g)
        c_last = arch.stage_channels[-1]
        self.decoder_embed = nn.Linear(c_last, decoder.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.dim))
        self.decoder_blocks = nn.ModuleList(
            ViTBlock(decoder.dim, decoder.heads, decoder.mlp_ratio)
            for _ in range(decoder.depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder.dim)
        self.decoder_pred = nn.Linear(
            decoder.dim, self.patch * self.patch * arch.in_chans
        )
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(decoder.dim, g, g).reshape(1, g * g, decoder.dim),
            persistent=False,
        )
        for name, module in self.named_children():
            if name.startswith("decoder"):
                module.apply(_init_decoder)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def attention_biases(self, mask: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage attention biases [B·nW_s, N_s, N_s] for ``mask`` [B, gh, gw]."""
        cells = mask.shape[1] * self.arch.stride // self.arch.patch_size
        return [
            attention_bias(mask, (cells // 2**s, cells // 2**s), window)
            for s, window in enumerate(self.encoder.window_sizes)
        ]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mix, encode with isolated attention, decode both streams, un-mix.

        Args:
            x: normalised images [B, C, H, W] (B even, H = W = ``arch.img_size``).
            mask: pair masks [B, gh, gw] from :func:`random_pair_masks`.

        Returns:
            Un-mixed predictions [B, L, p·p·C]: for each image, every cell predicted
            from the mixed sample in which it was hidden.
        """
        b = x.shape[0]
        mask = mask.to(device=x.device, dtype=torch.float32)
        mixed = mix_images(x, mask)
        biases = self.attention_biases(mask)
        feats = self.encoder(mixed, attn_bias=biases)[-1]  # [B, 8C, gh, gw]
        tokens = self.decoder_embed(feats.flatten(2).transpose(1, 2))  # [B, L, D]
        m = mask.flatten(1)[..., None].to(tokens.dtype)  # [B, L, 1]
        token = self.mask_token.to(tokens.dtype)
        own = tokens * (1 - m) + token * m  # image i, its hidden cells masked
        partner = tokens * m + token * (1 - m)  # image B-1-i, likewise
        y = torch.cat([own, partner], dim=0) + self.decoder_pos_embed.to(tokens.dtype)
        for block in self.decoder_blocks:
            y = block(y)
        y = self.decoder_pred(self.decoder_norm(y))  # [2B, L, p·p·C]
        # image i: hidden in its own sample where m = 1, in its partner's where m = 0
        return y[:b] * m + y[b:].flip(0) * (1 - m)
