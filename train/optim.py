"""AdamW with layer-wise LR decay, and the warm-up + cosine schedule (per iteration).

**Layer ids** (``L = sum(depths)``; ``num_layers = L + 2``; a parameter with id ``i``
gets ``lr_scale = layer_decay ** (num_layers - 1 - i)``):

=================================================  ==================================
parameter (``SegmentationModel`` names)            layer id
=================================================  ==================================
``encoder.patch_embed.*``                          0
``encoder.layers.s.blocks.j.*``                    ``sum(depths[:s]) + j + 1``
``encoder.layers.s.downsample.*`` (s ≥ 1)          ``sum(depths[:s]) + 1``
``encoder.out_norms.*``                            ``L`` (the last encoder id)
``decoder.*``, ``head.*``                          ``L + 1`` → scale 1.0
=================================================  ==================================

* **Downsample.** MixMIM's ``util/lr_decay.py`` gives its ``layers.s.downsample``
  (which runs at the *end* of stage ``s``) the id of the *next* stage's first block,
  ``sum(depths[:s+1]) + 1``. timm's ``checkpoint_filter_fn`` renames that module to
  ``layers.(s+1).downsample`` (timm downsamples at the *start* of a stage), so for a
  timm name ``layers.t.downsample`` the same weights get ``sum(depths[:t]) + 1``: the
  id of block 0 of the stage it now belongs to. A pretrained merge layer therefore
  gets exactly the LR it would get in MixMIM's own finetuning. (mmpretrain instead
  gives its end-of-stage downsample the id of the stage's *last* block, one lower.)
* **Encoder blocks and the patch embedding** get the same scales as in MixMIM
  (``0.7^25`` for the patch embedding of the paper preset).
* **Decoder and head: scale 1.0** (the mmpretrain/BEiT convention
  ``num_layers - 1``). MixMIM's table gives its classification head id ``L`` and so
  ``0.7¹``, a quirk of ``total_layers = L + 1``; a freshly initialised UPerNet decoder
  and head should learn at the full rate, so we do not copy it.
* **Output norms** (``out_norms``, absent from MixMIM, which has one final ``norm``
  mapped into ``out_norms.{last}``) share the final norm's id ``L``.

**No weight decay** on every 1-D parameter (LayerNorm/BatchNorm weights, all
biases), any ``*.bias``, the relative position bias tables and any position
embedding or token table (``pos_embed``, ``absolute_pos_embed``, ``mask_token``);
our absolute position embedding is a fixed buffer and never reaches the optimiser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "LR_REFERENCE_BATCH",
    "build_optimizer",
    "layer_id",
    "lr_at",
    "no_weight_decay",
    "param_groups",
    "scaled_lr",
    "set_lr",
]

#: Global batch the base LR refers to: ``lr = blr · global_batch / 256`` (MixMIM).
LR_REFERENCE_BATCH = 256

_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"^encoder\.layers\.(\d+)\.downsample\.")
_NO_DECAY_NAMES = ("relative_position_bias_table", "pos_embed", "mask_token")


def scaled_lr(blr: float, global_batch: int) -> float:
    """Absolute LR from the base LR by the linear scaling rule (MixMIM/MAE).

    Args:
        blr: base learning rate, per 256 samples of global batch.
        global_batch: samples per optimisation step over all ranks.

    Returns:
        ``blr · global_batch / 256``.
    """
    return blr * global_batch / LR_REFERENCE_BATCH


def layer_id(name: str, depths: Sequence[int]) -> int:
    """Layer id of a ``SegmentationModel`` parameter (see the module table).

    Args:
        name: parameter name, e.g. ``encoder.layers.2.blocks.5.attn.qkv.weight``.
        depths: Swin blocks per stage.

    Returns:
        An id in ``[0, sum(depths) + 1]``.
    """
    total = sum(depths)
    if name.startswith("encoder.patch_embed."):
        return 0
    m = _BLOCK.match(name)
    if m:
        s, j = int(m.group(1)), int(m.group(2))
        return sum(depths[:s]) + j + 1
    m = _DOWNSAMPLE.match(name)
    if m:
        return sum(depths[: int(m.group(1))]) + 1
    if name.startswith("encoder."):
        return total  # out_norms (and anything else in the encoder)
    return total + 1  # decoder and head


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for norms, biases, 1-D parameters and position/bias tables."""
    return (
        param.ndim <= 1
        or name.endswith(".bias")
        or any(key in name for key in _NO_DECAY_NAMES)
    )


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float,
    depths: Sequence[int],
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per (layer id, decay / no decay).

    Every trainable parameter lands in exactly one group. Each group carries
    ``lr_scale`` (multiplied into the scheduled LR by :func:`set_lr`), its
    ``weight_decay``, ``layer_id`` and a readable ``name``.

    Args:
        model: the unwrapped :class:`~alosmap.models.SegmentationModel`.
        weight_decay: AdamW weight decay of the decayed groups.
        layer_decay: layer-wise LR decay factor (1.0 = none).
        depths: Swin blocks per stage.
    """
    num_layers = sum(depths) + 2
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depths)
        decay = not no_weight_decay(name, param)
        key = f"layer_{lid}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            groups[key] = {
                "name": key,
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (num_layers - 1 - lid),
                "layer_id": lid,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (groups[k]["layer_id"], k))]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    depths: Sequence[int],
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (default betas, as MixMIM's finetuning).

    The ``param_names`` lists are kept out of the optimiser so its ``state_dict``
    holds only tensors and numbers.
    """
    groups = param_groups(
        model, weight_decay=weight_decay, layer_decay=layer_decay, depths=depths
    )
    for g in groups:
        del g["param_names"]
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_at(
    step: int,
    *,
    base_lr: float,
    min_lr: float,
    warmup_steps: int,
    total_steps: int,
) -> float:
    """LR at optimisation step ``step`` (0-based): linear warm-up, then cosine.

    ``base_lr · step / warmup_steps`` for ``step < warmup_steps``, then
    ``min_lr + (base_lr − min_lr) · ½ (1 + cos(π (step − warmup_steps) /
    (total_steps − warmup_steps)))``, which reaches ``min_lr`` at ``total_steps``
    (MAE/MixMIM's ``adjust_learning_rate``, counted in iterations).
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's LR to ``lr · lr_scale``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
