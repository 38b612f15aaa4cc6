"""Training losses (paper Section II): α-scaled focal+dice (LULC), BCE+dice (water).

Notation follows the paper. ``Ω`` is the set of valid pixels of the *whole batch*
(every pixel whose label is not :data:`~alosmap.classes.IGNORE_INDEX`), ``N = |Ω|``,
``K`` the number of classes, ``p_{n,k} = softmax(z_n)_k`` and ``p_t,n = p_{n,y_n}``.

* Class weights, eq. (1): ``f_k = n_k / Σ_j n_j``, ``w_k = 1 − f_k``,
  ``α_k = w_k / Σ_j w_j`` (:func:`class_weights_from_counts`).
* Focal, eq. (2): ``L_focal = (1/N) Σ_{n∈Ω} −α_scale · α_{y_n} · (1 − p_t,n)^γ ·
  log(p_t,n + ε)``.
* Dice, eq. (3): ``L_dice = 1 − (1/K) Σ_k (2 Σ_Ω p_{n,k} g_{n,k} + ε) /
  (Σ_Ω p_{n,k} + Σ_Ω g_{n,k} + ε)`` with one-hot ``g``.
* Total, eq. (4): ``L = λ_focal · L_focal + λ_dice · L_dice``
  (:class:`FocalDiceLoss`).
* Water: ``L = BCE + λ_dice · L_dice,water`` over valid pixels
  (:class:`BCEDiceLoss`).

Both losses are computed in at least float32 (float16/bfloat16 logits are upcast, so
they are safe under autocast; float64 stays float64, e.g. for ``gradcheck``),
use dense masking (no data-dependent shapes) and return a zero loss that is still
connected to the logits when every pixel of a batch is ignored, so ``backward()`` and
DDP's gradient all-reduce keep working on such a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alosmap.classes import IGNORE_INDEX, Legend, get_task

__all__ = [
    "DEFAULT_EPS",
    "BCEDiceLoss",
    "FocalDiceLoss",
    "LossParts",
    "build_loss",
    "class_weights_from_counts",
]

#: ε of eqs. (2) and (3). Inside the log it bounds the per-pixel focal term by
#: ``α_scale · α_y · log(1/ε) ≈ 13.8 · α_scale · α_y``; in dice it only matters for
#: classes (nearly) absent from both prediction and labels.
DEFAULT_EPS = 1e-6


class LossParts(NamedTuple):
    """A loss value with its unweighted terms, for logging.

    Attributes:
        total: the weighted total that is optimised (scalar).
        terms: the unweighted terms by name: ``{"focal", "dice"}`` for
            :class:`FocalDiceLoss`, ``{"bce", "dice"}`` for :class:`BCEDiceLoss`.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]

    def as_floats(self) -> dict[str, float]:
        """Return ``{"loss": total, **terms}`` as Python floats (detached)."""
        out = {"loss": float(self.total.detach())}
        out.update({k: float(v.detach()) for k, v in self.terms.items()})
        return out


def class_weights_from_counts(
    counts: Sequence[float] | np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Subtraction-normalised class weights of eq. (1).

    With ``f_k = n_k / Σ_j n_j``, ``w_k = 1 − f_k`` and ``α_k = w_k / Σ_j w_j``.
    Since ``Σ_j w_j = K − 1``, this is ``α_k = (1 − f_k) / (K − 1)``: the weights sum
    to 1 and stay within ``[0, 1/(K−1)]``, so they temper rather than invert the
    class frequencies (``α_scale`` then sets the overall strength).

    Args:
        counts: per-class pixel counts ``n_k`` of the training set, or frequencies
            ``f_k`` (any positive scale gives the same result), length ``K``.

    Returns:
        ``α`` as a float32 tensor of shape ``[K]``.

    Raises:
        ValueError: if ``counts`` is not 1-D, has fewer than 2 entries, holds a
            negative or non-finite value, or is all zeros.
    """
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size < 2:
        raise ValueError(
            f"class counts must be a 1-D sequence with one entry per class (K >= 2); "
            f"got shape {n.shape}"
        )
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError(
            f"class counts must be finite and non-negative; got {n.tolist()}"
        )
    total = n.sum()
    if total <= 0:
        raise ValueError(
            "class counts are all zero; count label pixels per class over the "
            "training set (ignored pixels excluded)"
        )
    w = 1.0 - n / total
    return torch.as_tensor(w / w.sum(), dtype=torch.float32)


def _check_target(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise ``ValueError`` if a label is neither in ``[0, K)`` nor ``ignore_index``."""
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class indices (int64); got dtype {target.dtype}"
        )
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()[:10]
        raise ValueError(
            f"target holds labels {values} outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}; remap them to a class or to "
            f"{ignore_index}"
        )


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (float16/bfloat16 → float32; float64 kept)."""
    if logits.dtype in (torch.float32, torch.float64):
        return logits
    return logits.float()


class _PartsLoss(nn.Module, ABC):
    """A loss computed by :meth:`parts`; ``forward`` returns its total or the parts."""

    @overload
    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        return_parts: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, return_parts: Literal[True]
    ) -> LossParts: ...

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, return_parts: bool = False
    ) -> torch.Tensor | LossParts:
        """Compute the loss (see :meth:`parts` for the shapes).

        Args:
            logits: raw scores, any float dtype.
            target: integer labels or ``ignore_index``.
            return_parts: also return the unweighted terms.

        Returns:
            The scalar total (float32; float64 for float64 logits), or a
            :class:`LossParts` if ``return_parts``.

        Raises:
            ValueError: on mismatched shapes or labels outside the classes that are
                not ``ignore_index`` (see :meth:`parts`).
        """
        parts = self.parts(logits, target)
        return parts if return_parts else parts.total

    @abstractmethod
    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        """Total loss and its unweighted terms."""


class FocalDiceLoss(_PartsLoss):
    """α-scaled focal + dice loss for K-class segmentation, eqs. (1)-(4).

    ``L = λ_focal · L_focal + λ_dice · L_dice`` where, over the valid pixels ``Ω`` of
    the batch (``N = |Ω|``, ``p = softmax(logits)``, ``p_t = p_{n,y_n}``)::

        L_focal = (1/N) Σ_{n∈Ω} −α_scale · α_{y_n} · (1 − p_t)^γ · log(p_t + ε)
        L_dice  = 1 − (1/K) Σ_k (2 Σ_Ω p_{n,k} g_{n,k} + ε)
                               / (Σ_Ω p_{n,k} + Σ_Ω g_{n,k} + ε)

    Dice sums run over all valid pixels of the batch at once (not per image).
    A class absent from the batch's labels gets the dice ratio
    ``ε / (Σ_Ω p_{n,k} + ε)``: close to 1 only if the model also predicts (almost) no
    mass for it, otherwise close to 0, so it still pushes that class's probability
    down. This is eq. (3) as written; there is no special-casing.

    If every pixel of the batch is ignored (``N = 0``) the loss is an exact zero that
    is still connected to ``logits`` (all gradients zero), so ``backward()`` and DDP
    keep working.

    Args:
        alpha: class weights ``α`` of shape ``[K]`` (see
            :func:`class_weights_from_counts`). ``None`` means uniform
            ``α_k = 1/K``, which is what eq. (1) gives for equally frequent classes;
            ``K`` is then taken from the logits.
        alpha_scale: global factor ``α_scale`` on the focal weights.
        gamma: focusing parameter ``γ``.
        lambda_focal: weight ``λ_focal`` of the focal term.
        lambda_dice: weight ``λ_dice`` of the dice term.
        eps: ``ε`` of eqs. (2) and (3).
        ignore_index: label value excluded from ``Ω``.
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        alpha: torch.Tensor | Sequence[float] | None = None,
        alpha_scale: float = 2.25,
        gamma: float = 1.1,
        lambda_focal: float = 0.57,
        lambda_dice: float = 0.32,
        eps: float = DEFAULT_EPS,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
            if a.ndim != 1 or a.numel() < 2:
                raise ValueError(
                    f"alpha must have shape [K] with K >= 2; got {tuple(a.shape)}"
                )
            if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
                raise ValueError(f"alpha must be finite and >= 0; got {a.tolist()}")
            self.register_buffer("alpha", a)
        else:
            self.alpha = None
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0; got {gamma}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.alpha_scale = float(alpha_scale)
        self.gamma = float(gamma)
        self.lambda_focal = float(lambda_focal)
        self.lambda_dice = float(lambda_dice)
        self.eps = float(eps)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        """Hyper-parameters shown in ``repr``."""
        k = "uniform" if self.alpha is None else f"K={self.alpha.numel()}"
        return (
            f"alpha={k}, alpha_scale={self.alpha_scale}, gamma={self.gamma}, "
            f"lambda_focal={self.lambda_focal}, lambda_dice={self.lambda_dice}, "
            f"eps={self.eps}, ignore_index={self.ignore_index}"
        )

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        """Total loss of eq. (4) and its unweighted ``"focal"`` and ``"dice"`` terms.

        Args:
            logits: ``[B, K, H, W]`` raw scores, any float dtype.
            target: ``[B, H, W]`` integer labels in ``[0, K)`` or ``ignore_index``.

        Raises:
            ValueError: on mismatched shapes, a wrong number of classes in ``alpha``,
                or labels outside ``[0, K)`` that are not ``ignore_index``.
        """
        if logits.ndim != 4:
            raise ValueError(
                f"logits must be [B, K, H, W]; got shape {tuple(logits.shape)}"
            )
        b, k, h, w = logits.shape
        if tuple(target.shape) != (b, h, w):
            raise ValueError(
                f"target must be [B, H, W] = {(b, h, w)} to match logits "
                f"{tuple(logits.shape)}; got {tuple(target.shape)}"
            )
        if self.alpha is not None and self.alpha.numel() != k:
            raise ValueError(
                f"alpha has {self.alpha.numel()} classes but logits have K={k}"
            )
        _check_target(target, k, self.ignore_index)

        z = _upcast(logits)
        valid = target != self.ignore_index  # [B, H, W]
        safe_t = torch.where(valid, target, torch.zeros_like(target)).long()
        n_valid = valid.sum()

        # Focal, eq. (2). p: [B, K, H, W]; p_t, alpha_t: [B, H, W].
        p = torch.softmax(z, dim=1)
        p_t = p.gather(1, safe_t.unsqueeze(1)).squeeze(1)
        if self.alpha is None:
            alpha_t = torch.full_like(p_t, 1.0 / k)
        else:
            alpha_t = self.alpha.to(device=z.device)[safe_t]
        focal_px = (
            -self.alpha_scale
            * alpha_t
            * (1.0 - p_t).clamp_min(0.0).pow(self.gamma)
            * torch.log(p_t + self.eps)
        )
        focal_sum = torch.where(valid, focal_px, torch.zeros_like(focal_px)).sum()
        focal = focal_sum / n_valid.clamp_min(1).to(focal_sum.dtype)

        # Dice, eq. (3): sums over Ω per class -> [K].
        valid4 = valid.unsqueeze(1)
        p_valid = torch.where(valid4, p, torch.zeros_like(p))
        g = F.one_hot(safe_t, k).permute(0, 3, 1, 2).to(p.dtype) * valid4
        inter = (p_valid * g).sum(dim=(0, 2, 3))
        ratio = (2.0 * inter + self.eps) / (
            p_valid.sum(dim=(0, 2, 3)) + g.sum(dim=(0, 2, 3)) + self.eps
        )
        dice = 1.0 - ratio.mean()

        # With N = 0 both terms are already exact zeros built from the logits
        # (focal: 0 / 1, dice: 1 − ε/ε), so the graph stays connected.
        total = self.lambda_focal * focal + self.lambda_dice * dice
        return LossParts(total, {"focal": focal, "dice": dice})


class BCEDiceLoss(_PartsLoss):
    """Binary water loss: BCE-with-logits plus soft dice of the water class.

    Over the valid pixels ``Ω`` of the batch (``N = |Ω|``, ``p = σ(z)``, labels
    ``y ∈ {0, 1}``)::

        L_bce  = (1/N) Σ_{n∈Ω} −[y_n log p_n + (1 − y_n) log(1 − p_n)]
        L_dice = 1 − (2 Σ_Ω p_n y_n + ε) / (Σ_Ω p_n + Σ_Ω y_n + ε)
        L      = L_bce + λ_dice · L_dice

    Dice is the standard binary soft dice of the *positive (water) class only*: the
    not-water class is the large majority and its dice would sit near 1 and add
    little signal. BCE uses PyTorch's numerically stable log-sigmoid form, so no ε
    is needed there. A batch with no water in its labels gets
    ``L_dice = 1 − ε / (Σ_Ω p_n + ε)``, which penalises any predicted water mass.
    If every pixel is ignored the loss is an exact zero connected to ``logits``.

    Args:
        lambda_dice: weight ``λ_dice`` of the dice term (paper: 1.0).
        eps: ``ε`` of the dice ratio.
        ignore_index: label value excluded from ``Ω``.
    """

    def __init__(
        self,
        lambda_dice: float = 1.0,
        eps: float = DEFAULT_EPS,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.lambda_dice = float(lambda_dice)
        self.eps = float(eps)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        """Hyper-parameters shown in ``repr``."""
        return (
            f"lambda_dice={self.lambda_dice}, eps={self.eps}, "
            f"ignore_index={self.ignore_index}"
        )

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        """``L_bce + λ_dice · L_dice`` and its unweighted ``"bce"`` and ``"dice"``.

        Args:
            logits: ``[B, 1, H, W]`` or ``[B, H, W]`` water logits, any float dtype.
            target: ``[B, H, W]`` or ``[B, 1, H, W]`` labels: 1 water, 0 not water,
                ``ignore_index`` excluded.

        Raises:
            ValueError: on mismatched shapes or labels other than 0, 1 and
                ``ignore_index``.
        """
        if logits.ndim == 4 and logits.shape[1] == 1:
            logits = logits[:, 0]
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if logits.ndim != 3 or logits.shape != target.shape:
            raise ValueError(
                "water logits must be [B, 1, H, W] or [B, H, W] and target "
                f"[B, H, W] of the same size; got logits {tuple(logits.shape)} and "
                f"target {tuple(target.shape)}"
            )
        _check_target(target, 2, self.ignore_index)

        z = _upcast(logits)
        valid = target != self.ignore_index
        y = torch.where(valid, target, torch.zeros_like(target)).to(z.dtype)
        n_valid = valid.sum()

        bce_px = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        bce_sum = torch.where(valid, bce_px, torch.zeros_like(bce_px)).sum()
        bce = bce_sum / n_valid.clamp_min(1).to(bce_sum.dtype)

        p = torch.sigmoid(z)
        p_valid = torch.where(valid, p, torch.zeros_like(p))
        inter = (p_valid * y).sum()
        dice = 1.0 - (2.0 * inter + self.eps) / (p_valid.sum() + y.sum() + self.eps)

        total = bce + self.lambda_dice * dice
        return LossParts(total, {"bce": bce, "dice": dice})


_LULC_OPTIONS = (
    "alpha",
    "alpha_scale",
    "gamma",
    "lambda_focal",
    "lambda_dice",
    "eps",
    "ignore_index",
)
_WATER_OPTIONS = ("lambda_dice", "eps", "ignore_index")


def build_loss(
    task: str | Legend,
    class_counts: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    **overrides: Any,
) -> FocalDiceLoss | BCEDiceLoss:
    """Build the paper's loss for a task, with the paper's hyper-parameters.

    Args:
        task: ``"lulc"`` or its record (:class:`FocalDiceLoss`), or ``"water"``
            (binary: :class:`BCEDiceLoss`).
        class_counts: LULC only: per-class training pixel counts, turned into ``α``
            by :func:`class_weights_from_counts`. ``None`` gives uniform ``α``.
        **overrides: constructor arguments of the chosen loss, e.g.
            ``alpha_scale=1.0`` or ``lambda_dice=0.5``.

    Raises:
        ValueError: for an unknown task, an unknown override, ``class_counts`` with
            the water task, or both ``class_counts`` and ``alpha``.
    """
    t = get_task(task)
    allowed = _WATER_OPTIONS if t.binary else _LULC_OPTIONS
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown {t.name} loss option(s) {unknown}; valid: {', '.join(allowed)}"
        )
    if t.binary:
        if class_counts is not None:
            raise ValueError(
                f"class_counts apply to the lulc loss only; the {t.name} loss "
                "(BCE + dice) has no class weights"
            )
        return BCEDiceLoss(**overrides)
    if class_counts is not None:
        if overrides.get("alpha") is not None:
            raise ValueError("give either class_counts or alpha, not both")
        overrides["alpha"] = class_weights_from_counts(class_counts)
    return FocalDiceLoss(**overrides)
