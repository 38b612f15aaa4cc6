"""Losses of the paper (eqs. (1)-(4), water BCE+dice) against hand-computed values.

Expected values are computed with the ``math`` module from the formulas in the
paper, never with the code under test; the approximate numbers are written in
comments next to the arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch

from alosmap.classes import IGNORE_INDEX
from alosmap.train.losses import (
    DEFAULT_EPS,
    BCEDiceLoss,
    FocalDiceLoss,
    LossParts,
    build_loss,
    class_weights_from_counts,
)

EPS = DEFAULT_EPS  # 1e-6
IGN = IGNORE_INDEX


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    s = sum(e)
    return [v / s for v in e]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# A 2 x 2 image, K = 3 classes, one ignored pixel:
#   pixel a: z = [2, 1, 0],  y = 0  -> p = [0.665241, 0.244728, 0.090031]
#   pixel b: z = [0, 0, 0],  y = 1  -> p = [1/3, 1/3, 1/3]
#   pixel c: z = [1, 0, 1],  y = 2  -> p = [0.422319, 0.155362, 0.422319]
#   pixel d: z = [5, -3, 7], y = 255 (ignored)
Z = {"a": [2.0, 1.0, 0.0], "b": [0.0, 0.0, 0.0], "c": [1.0, 0.0, 1.0]}
Y = {"a": 0, "b": 1, "c": 2}
Z_IGNORED = [5.0, -3.0, 7.0]


def make_case(z_ignored: list[float] = Z_IGNORED) -> tuple[torch.Tensor, torch.Tensor]:
    pix = [Z["a"], Z["b"], Z["c"], z_ignored]  # row-major (0,0) (0,1) (1,0) (1,1)
    logits = torch.tensor(pix, dtype=torch.float32).T.reshape(1, 3, 2, 2)
    target = torch.tensor([[[Y["a"], Y["b"]], [Y["c"], IGN]]], dtype=torch.int64)
    return logits, target


def focal_by_hand(alpha: list[float], alpha_scale: float, gamma: float) -> float:
    # eq. (2): mean over the 3 valid pixels of
    #   -alpha_scale * alpha_y * (1 - p_t)^gamma * log(p_t + eps)
    # p_t: a 0.665241, b 0.333333, c 0.422319
    # (1 - p_t)^1.1: a 0.300058, b 0.640176, c 0.546836
    # log(p_t + eps): a -0.407604, b -1.098609, c -0.861992
    # uniform alpha, scale 2.25: 0.75 * (0.122305 + 0.703303 + 0.471366) / 3 = 0.324244
    terms = []
    for key in ("a", "b", "c"):
        y = Y[key]
        pt = softmax(Z[key])[y]
        terms.append(-alpha_scale * alpha[y] * (1 - pt) ** gamma * math.log(pt + EPS))
    return sum(terms) / 3


def dice_by_hand() -> float:
    # eq. (3) over the 3 valid pixels, one label per class:
    #   class 0: sum p = 0.665241 + 1/3 + 0.422319 = 1.420893, inter = 0.665241
    #            ratio = (2 * 0.665241 + eps) / (1.420893 + 1 + eps) = 0.549583
    #   class 1: sum p = 0.244728 + 1/3 + 0.155362 = 0.733424, inter = 1/3
    #            ratio = (0.666667 + eps) / (1.733424 + eps) = 0.384596
    #   class 2: sum p = 0.090031 + 1/3 + 0.422319 = 0.845683, inter = 0.422319
    #            ratio = (0.844638 + eps) / (1.845683 + eps) = 0.457629
    #   L_dice = 1 - (0.549583 + 0.384596 + 0.457629) / 3 = 0.536064
    ratios = []
    for k in range(3):
        sum_p = sum(softmax(Z[key])[k] for key in ("a", "b", "c"))
        inter = sum(softmax(Z[key])[k] for key in ("a", "b", "c") if Y[key] == k)
        sum_g = sum(1 for key in ("a", "b", "c") if Y[key] == k)
        ratios.append((2 * inter + EPS) / (sum_p + sum_g + EPS))
    return 1 - sum(ratios) / 3


def test_hand_values_of_the_hand_helpers() -> None:
    # Guard the helpers themselves with the numbers written in the comments.
    assert focal_by_hand([1 / 3] * 3, 2.25, 1.1) == pytest.approx(0.324244, abs=2e-6)
    assert dice_by_hand() == pytest.approx(0.536064, abs=2e-6)


# --- eq. (1) -------------------------------------------------------------------------


def test_class_weights_from_counts_by_hand() -> None:
    # counts [6, 3, 1] -> f = [0.6, 0.3, 0.1], w = [0.4, 0.7, 0.9], sum w = 2.0
    # alpha = w / 2 = [0.2, 0.35, 0.45]
    alpha = class_weights_from_counts([6, 3, 1])
    assert alpha.dtype == torch.float32
    torch.testing.assert_close(alpha, torch.tensor([0.2, 0.35, 0.45]))
    assert float(alpha.sum()) == pytest.approx(1.0)


def test_class_weights_accept_frequencies_tensors_and_numpy() -> None:
    import numpy as np

    expected = torch.tensor([0.2, 0.35, 0.45])
    torch.testing.assert_close(class_weights_from_counts([0.6, 0.3, 0.1]), expected)
    torch.testing.assert_close(
        class_weights_from_counts(torch.tensor([600, 300, 100])), expected
    )
    torch.testing.assert_close(
        class_weights_from_counts(np.array([60.0, 30.0, 10.0])), expected
    )
    # A class with no pixels gets the largest weight: [5, 0] -> w [0, 1] -> [0, 1].
    torch.testing.assert_close(
        class_weights_from_counts([5, 0]), torch.tensor([0.0, 1.0])
    )


@pytest.mark.parametrize(
    "counts", [[1], [], [[1, 2], [3, 4]], [1, -1, 2], [0, 0, 0], [1, float("nan")]]
)
def test_class_weights_reject_bad_counts(counts: list) -> None:
    with pytest.raises(ValueError):
        class_weights_from_counts(counts)


# --- eqs. (2)-(4) --------------------------------------------------------------------


def test_focal_dice_total_by_hand_uniform_alpha() -> None:
    logits, target = make_case()
    loss = FocalDiceLoss()  # alpha None -> uniform 1/3
    parts = loss(logits, target, return_parts=True)
    assert isinstance(parts, LossParts)
    focal = focal_by_hand([1 / 3] * 3, 2.25, 1.1)  # ~0.324244
    dice = dice_by_hand()  # ~0.536064
    assert float(parts.terms["focal"]) == pytest.approx(focal, rel=1e-5)
    assert float(parts.terms["dice"]) == pytest.approx(dice, rel=1e-5)
    # eq. (4): 0.57 * focal + 0.32 * dice
    assert float(parts.total) == pytest.approx(0.57 * focal + 0.32 * dice, rel=1e-5)
    assert float(loss(logits, target)) == pytest.approx(float(parts.total))
    assert set(parts.as_floats()) == {"loss", "focal", "dice"}


def test_single_pixel_focal_known_logits() -> None:
    # z = [2, 1, 0], y = 0: p_t = e^2 / (e^2 + e + 1) = 0.665241
    # (1 - p_t)^1.1 = 0.334759^1.1 = 0.300058; log(p_t + 1e-6) = -0.407604
    # focal = 2.25 * (1/3) * 0.300058 * 0.407604 = 0.091729
    logits = torch.tensor([2.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.int64)
    parts = FocalDiceLoss()(logits, target, return_parts=True)
    pt = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    expected = 2.25 * (1 / 3) * (1 - pt) ** 1.1 * -math.log(pt + 1e-6)
    assert expected == pytest.approx(0.0917288, rel=1e-5)
    assert float(parts.terms["focal"]) == pytest.approx(expected, rel=1e-5)


def test_focal_with_class_weights_by_hand() -> None:
    # alpha from counts [6, 3, 1] = [0.2, 0.35, 0.45]
    logits, target = make_case()
    loss = build_loss("lulc", class_counts=[6, 3, 1])
    parts = loss(logits, target, return_parts=True)
    focal = focal_by_hand([0.2, 0.35, 0.45], 2.25, 1.1)
    assert float(parts.terms["focal"]) == pytest.approx(focal, rel=1e-5)
    # dice does not use alpha
    assert float(parts.terms["dice"]) == pytest.approx(dice_by_hand(), rel=1e-5)


def test_alpha_scale_scales_the_focal_term_exactly() -> None:
    logits, target = make_case()
    alpha = class_weights_from_counts([6, 3, 1])
    p1 = FocalDiceLoss(alpha=alpha, alpha_scale=1.0)(logits, target, return_parts=True)
    p2 = FocalDiceLoss(alpha=alpha, alpha_scale=2.25)(logits, target, return_parts=True)
    assert float(p2.terms["focal"]) == pytest.approx(
        2.25 * float(p1.terms["focal"]), rel=1e-6
    )
    assert float(p2.terms["dice"]) == float(p1.terms["dice"])
    # total difference = 0.57 * (2.25 - 1) * focal(scale 1)
    assert float(p2.total - p1.total) == pytest.approx(
        0.57 * 1.25 * float(p1.terms["focal"]), rel=1e-5
    )


def test_gamma_zero_is_weighted_cross_entropy() -> None:
    # gamma = 0: focal = mean(-alpha_scale * alpha_y * log(p_t + eps))
    logits, target = make_case()
    parts = FocalDiceLoss(gamma=0.0, alpha_scale=1.0)(logits, target, return_parts=True)
    assert float(parts.terms["focal"]) == pytest.approx(
        focal_by_hand([1 / 3] * 3, 1.0, 0.0), rel=1e-5
    )


def test_ignored_pixels_have_no_effect() -> None:
    logits1, target = make_case([5.0, -3.0, 7.0])
    logits2, _ = make_case([-40.0, 12.0, 0.5])
    logits1.requires_grad_(True)
    logits2.requires_grad_(True)
    loss = FocalDiceLoss(alpha=[0.2, 0.35, 0.45])
    l1 = loss(logits1, target)
    l2 = loss(logits2, target)
    assert float(l1.detach()) == float(l2.detach())
    l1.backward()
    l2.backward()
    assert logits1.grad is not None and logits2.grad is not None
    # Same gradient at valid pixels, exactly zero at the ignored one.
    torch.testing.assert_close(logits1.grad, logits2.grad)
    assert torch.all(logits1.grad[0, :, 1, 1] == 0)


def test_all_ignored_batch_gives_connected_zero() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGN, dtype=torch.int64)
    parts = FocalDiceLoss(alpha=[0.2, 0.35, 0.45])(logits, target, return_parts=True)
    assert parts.as_floats() == {"loss": 0.0, "focal": 0.0, "dice": 0.0}
    assert parts.total.requires_grad and parts.total.grad_fn is not None
    parts.total.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_class_missing_from_batch() -> None:
    # Labels contain only class 0 and 1 (pixels a, b with y = 0, 1); K = 3.
    # class 2 has sum g = 0, inter = 0 -> ratio = eps / (sum p_2 + eps)
    #   sum p_2 = 0.090031 + 1/3 = 0.423364 -> ratio ~ 2.4e-6 (effectively 0)
    logits = torch.tensor([Z["a"], Z["b"]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    parts = FocalDiceLoss()(logits, target, return_parts=True)
    pa, pb = softmax(Z["a"]), softmax(Z["b"])
    r0 = (2 * pa[0] + EPS) / (pa[0] + pb[0] + 1 + EPS)
    r1 = (2 * pb[1] + EPS) / (pa[1] + pb[1] + 1 + EPS)
    r2 = EPS / (pa[2] + pb[2] + EPS)
    assert r2 == pytest.approx(2.362e-6, rel=1e-3)
    assert float(parts.terms["dice"]) == pytest.approx(1 - (r0 + r1 + r2) / 3, rel=1e-5)
    assert torch.isfinite(parts.total)


def test_perfect_prediction_of_absent_class_dice_is_one() -> None:
    # A class absent from labels *and* given ~zero probability: ratio -> eps/eps = 1.
    logits = torch.tensor([[40.0], [0.0], [-40.0]]).reshape(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.int64)
    parts = FocalDiceLoss()(logits, target, return_parts=True)
    # class 0: (2 + eps)/(2 + eps) = 1; class 1: p1 = e^-40 ~ 4e-18 -> eps/(p1+eps) ~ 1
    # class 2: p2 = e^-80 -> ratio ~ 1. So L_dice ~ 0.
    assert float(parts.terms["dice"]) == pytest.approx(0.0, abs=1e-6)


def test_gradients_flow_and_gradcheck() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 1, 2], [2, IGN, 0]]])
    loss = FocalDiceLoss(alpha=[0.2, 0.35, 0.45])
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,))

    water_logits = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    water_target = torch.tensor([[[0, 1, 1], [IGN, 0, 1]]])
    wloss = BCEDiceLoss()
    assert torch.autograd.gradcheck(lambda z: wloss(z, water_target), (water_logits,))


def test_low_precision_logits_are_computed_in_float32() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0, :3] = IGN
    loss = FocalDiceLoss()
    ref = loss(logits, target)
    for dtype in (torch.bfloat16, torch.float16):
        out = loss(logits.to(dtype), target)
        assert out.dtype == torch.float32
        assert float(out) == pytest.approx(float(ref), rel=2e-2)


def test_bad_targets_raise() -> None:
    logits, target = make_case()
    loss = FocalDiceLoss()
    bad = target.clone()
    bad[0, 0, 0] = 3  # K = 3 -> valid labels are 0, 1, 2 (and 255)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        loss(logits, bad)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="outside"):
        loss(logits, bad)
    with pytest.raises(ValueError, match="integer"):
        loss(logits, target.float())
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        loss(logits, target[:, :1])
    with pytest.raises(ValueError, match="alpha has 2 classes"):
        FocalDiceLoss(alpha=[0.5, 0.5])(logits, target)


def test_focal_dice_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        FocalDiceLoss(alpha=[1.0])
    with pytest.raises(ValueError):
        FocalDiceLoss(alpha=[0.5, -0.1, 0.6])
    with pytest.raises(ValueError):
        FocalDiceLoss(eps=0.0)
    with pytest.raises(ValueError):
        FocalDiceLoss(gamma=-1.0)


def test_alpha_is_a_buffer_and_moves_with_the_module() -> None:
    loss = FocalDiceLoss(alpha=[0.2, 0.35, 0.45])
    assert "alpha" in dict(loss.named_buffers())
    assert loss.to(torch.float64).alpha is not None


# --- water ---------------------------------------------------------------------------


def test_bce_dice_by_hand() -> None:
    # 2 x 2 water logits and labels (255 ignored):
    #   z = [[0, 2], [-1, 3]], y = [[1, 0], [0, 255]]
    #   p = sigmoid(z) = [0.5, 0.880797, 0.268941, (ignored)]
    #   BCE: -log 0.5 = 0.693147; -log(1 - 0.880797) = 2.126928;
    #        -log(1 - 0.268941) = 0.313262  -> mean = 3.133337 / 3 = 1.044446
    #   dice (water only): inter = 0.5, sum p = 1.649738, sum y = 1
    #        L_dice = 1 - (1 + eps) / (2.649738 + eps) = 0.622605
    #   total = 1.044446 + 1.0 * 0.622605 = 1.667051
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    target = torch.tensor([[[1, 0], [0, IGN]]])
    p = [sigmoid(0.0), sigmoid(2.0), sigmoid(-1.0)]
    bce = (-math.log(p[0]) - math.log(1 - p[1]) - math.log(1 - p[2])) / 3
    dice = 1 - (2 * p[0] + EPS) / (sum(p) + 1 + EPS)
    assert bce == pytest.approx(1.044446, rel=1e-5)
    assert dice == pytest.approx(0.622605, rel=1e-5)

    parts = BCEDiceLoss()(logits, target, return_parts=True)
    assert float(parts.terms["bce"]) == pytest.approx(bce, rel=1e-5)
    assert float(parts.terms["dice"]) == pytest.approx(dice, rel=1e-5)
    assert float(parts.total) == pytest.approx(bce + dice, rel=1e-5)

    # [B, H, W] logits and a [B, 1, H, W] target give the same; lambda_dice scales.
    assert float(BCEDiceLoss()(logits[:, 0], target[:, None])) == pytest.approx(
        bce + dice, rel=1e-5
    )
    assert float(BCEDiceLoss(lambda_dice=0.5)(logits, target)) == pytest.approx(
        bce + 0.5 * dice, rel=1e-5
    )


def test_bce_dice_ignored_pixels_and_empty_batch() -> None:
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    other = logits.clone()
    other[0, 0, 1, 1] = -25.0
    target = torch.tensor([[[1, 0], [0, IGN]]])
    loss = BCEDiceLoss()
    assert float(loss(logits, target)) == float(loss(other, target))

    z = torch.randn(2, 1, 3, 3, requires_grad=True)
    all_ignored = torch.full((2, 3, 3), IGN)
    out = loss(z, all_ignored)
    assert float(out.detach()) == 0.0 and out.grad_fn is not None
    out.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_bce_dice_no_water_in_batch() -> None:
    # y all 0: L_dice = 1 - eps / (sum p + eps); with z = 0 everywhere sum p = 2
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.zeros(1, 1, 2, dtype=torch.int64)
    parts = BCEDiceLoss()(logits, target, return_parts=True)
    assert float(parts.terms["dice"]) == pytest.approx(1 - EPS / (2 + EPS), rel=1e-6)
    assert float(parts.terms["bce"]) == pytest.approx(math.log(2), rel=1e-6)


def test_bce_dice_bad_inputs() -> None:
    loss = BCEDiceLoss()
    with pytest.raises(ValueError, match="outside"):
        loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 2], [1, 0]]]))
    with pytest.raises(ValueError, match="same size"):
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64))


# --- factory -------------------------------------------------------------------------


def test_build_loss_defaults_are_the_papers() -> None:
    lulc = build_loss("lulc")
    assert isinstance(lulc, FocalDiceLoss)
    assert (lulc.alpha_scale, lulc.gamma, lulc.lambda_focal, lulc.lambda_dice) == (
        2.25,
        1.1,
        0.57,
        0.32,
    )
    assert lulc.alpha is None and lulc.ignore_index == 255 and lulc.eps == 1e-6
    water = build_loss("water")
    assert isinstance(water, BCEDiceLoss)
    assert water.lambda_dice == 1.0


def test_build_loss_counts_and_overrides() -> None:
    loss = build_loss("lulc", class_counts=[6, 3, 1], alpha_scale=1.0)
    assert isinstance(loss, FocalDiceLoss)
    assert loss.alpha is not None
    torch.testing.assert_close(loss.alpha, torch.tensor([0.2, 0.35, 0.45]))
    assert loss.alpha_scale == 1.0
    assert build_loss("water", lambda_dice=0.5).lambda_dice == 0.5


def test_build_loss_errors() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        build_loss("landcover")
    with pytest.raises(ValueError, match="gama"):
        build_loss("lulc", gama=2.0)
    with pytest.raises(ValueError, match="alpha_scale"):
        build_loss("water", alpha_scale=2.0)
    with pytest.raises(ValueError, match="lulc loss only"):
        build_loss("water", class_counts=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        build_loss("lulc", class_counts=[1, 2], alpha=[0.5, 0.5])
