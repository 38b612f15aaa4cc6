"""Confusion-matrix metrics (paper Section III-B) against hand-computed values."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alosmap.classes import IGNORE_INDEX
from alosmap.metrics import (
    WATER_THRESHOLD,
    ConfusionMatrix,
    accuracy_per_class,
    cohen_kappa,
    f1_per_class,
    iou_per_class,
    jsonable,
    nan_mean,
    overall_accuracy,
    threshold_probabilities,
    water_metrics,
)

IGN = IGNORE_INDEX

# A 2 x 3 map, K = 3, one ignored pixel:
#   truth = [[0, 0, 1],      pred = [[0, 1, 1],
#            [1, 2, 255]]            [1, 1, 0]]
# (truth, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,1); (255,0) skipped.
#   M (rows truth, cols pred) = [[1, 1, 0],
#                                [0, 2, 0],
#                                [0, 1, 0]]
#   TP = [1, 2, 0]; truth totals [2, 2, 1]; pred totals [1, 4, 0]
#   FP = pred - TP = [0, 2, 0]; FN = truth - TP = [1, 0, 1]
#   IoU = [1/(1+0+1), 2/(2+2+0), 0/(0+0+1)] = [0.5, 0.5, 0.0] -> mIoU = 1/3
#   Acc = [1/2, 2/2, 0/1] = [0.5, 1.0, 0.0]              -> mAcc = 0.5
#   OA  = (1 + 2 + 0) / 5 = 0.6
TRUTH = np.array([[0, 0, 1], [1, 2, IGN]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.int64)
M_HAND = np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]])


def test_confusion_matrix_by_hand() -> None:
    cm = ConfusionMatrix(3).update(PRED, TRUTH)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, M_HAND)
    assert cm.total == 5
    np.testing.assert_allclose(cm.iou(), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(cm.accuracy(), [0.5, 1.0, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.macc() == pytest.approx(0.5)
    assert cm.overall_accuracy() == pytest.approx(0.6)
    # the free functions agree on a raw matrix
    np.testing.assert_allclose(iou_per_class(M_HAND), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(accuracy_per_class(M_HAND), [0.5, 1.0, 0.0])
    assert overall_accuracy(M_HAND) == pytest.approx(0.6)


def test_summary_is_json_and_matches_hand_values() -> None:
    cm = ConfusionMatrix(3).update(PRED, TRUTH)
    s = cm.summary(["water", "urban", "crop"])
    json.dumps(s, allow_nan=False)
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["macc"] == pytest.approx(0.5)
    assert s["overall_accuracy"] == pytest.approx(0.6)
    assert (s["miou_classes"], s["macc_classes"], s["pixels"]) == (3, 3, 5)
    assert s["per_class"]["urban"] == {
        "iou": 0.5,
        "accuracy": 1.0,
        "support": 2,
        "predicted": 4,
    }
    assert list(ConfusionMatrix(3).summary()["per_class"]) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="2 class names for 3"):
        cm.summary(["a", "b"])


def test_class_absent_from_truth_and_prediction_is_excluded() -> None:
    # Same data with K = 4: class 3 never appears -> IoU 0/0 and Acc 0/0 are NaN,
    # excluded from the means: mIoU = (0.5 + 0.5 + 0) / 3, mAcc = (0.5 + 1 + 0) / 3.
    cm = ConfusionMatrix(4).update(PRED, TRUTH)
    iou, acc = cm.iou(), cm.accuracy()
    assert math.isnan(iou[3]) and math.isnan(acc[3])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.macc() == pytest.approx(0.5)
    s = cm.summary()
    assert (
        s["per_class"]["3"]["iou"] is None and s["per_class"]["3"]["accuracy"] is None
    )
    assert s["miou_classes"] == 3 and s["macc_classes"] == 3
    json.dumps(s, allow_nan=False)


def test_class_predicted_but_absent_from_truth() -> None:
    # truth [0, 0], pred [0, 2], K = 3:
    #   M = [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    #   class 0: IoU = 1/(1+0+1) = 0.5, Acc = 1/2
    #   class 1: never seen, never predicted -> IoU NaN, Acc NaN
    #   class 2: predicted once, never true -> IoU = 0/(0+1+0) = 0, Acc = 0/0 NaN
    #   mIoU = (0.5 + 0) / 2 = 0.25 over 2 classes; mAcc = 0.5 over 1 class
    cm = ConfusionMatrix(3).update(np.array([0, 2]), np.array([0, 0]))
    iou, acc = cm.iou(), cm.accuracy()
    assert iou[0] == 0.5 and math.isnan(iou[1]) and iou[2] == 0.0
    assert acc[0] == 0.5 and math.isnan(acc[1]) and math.isnan(acc[2])
    s = cm.summary()
    assert (s["miou"], s["miou_classes"]) == (0.25, 2)
    assert (s["macc"], s["macc_classes"]) == (0.5, 1)


def test_empty_matrix_gives_nan_not_errors() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 2), np.int64), np.full((2, 2), IGN))  # all ignored
    assert cm.total == 0
    assert math.isnan(cm.miou()) and math.isnan(cm.macc())
    assert math.isnan(cm.overall_accuracy())
    s = cm.summary()
    assert s["miou"] is None and s["miou_classes"] == 0
    json.dumps(s, allow_nan=False)


def test_prediction_at_ignored_pixels_is_not_checked() -> None:
    # A nodata value in the prediction where the truth is ignored is fine.
    cm = ConfusionMatrix(3).update(np.array([0, 255]), np.array([0, IGN]))
    assert cm.total == 1


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.array([0, 3]), np.array([0, 1]), "pred holds values \\[3\\]"),
        (np.array([0, 1]), np.array([0, 7]), "target holds values \\[7\\]"),
        (np.array([0, 1]), np.array([-1, 1]), "target holds values \\[-1\\]"),
        (np.array([0.2, 0.9]), np.array([0, 1]), "integer class indices"),
        (np.array([0, 1, 2]), np.array([0, 1]), "same shape"),
    ],
)
def test_update_rejects_bad_inputs(
    pred: np.ndarray, target: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, target)


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(2, 16, 16))
    truth[0, :3] = IGN
    pred = rng.integers(0, 5, size=(2, 16, 16))
    a = ConfusionMatrix(5).update(pred, truth)
    b = ConfusionMatrix(5).update(torch.from_numpy(pred), torch.from_numpy(truth))
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 5).permute(0, 3, 1, 2)
    c = ConfusionMatrix(5).update(
        logits.float().requires_grad_(True).argmax(1), torch.from_numpy(truth)
    )
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, c.matrix)


@settings(max_examples=50, deadline=None)
@given(
    k=st.integers(2, 6),
    data=st.data(),
)
def test_merge_of_two_halves_equals_whole(k: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 60))
    labels = st.one_of(st.integers(0, k - 1), st.just(IGN))
    truth = np.array(data.draw(st.lists(labels, min_size=n, max_size=n)), np.int64)
    pred = np.array(
        data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64
    )
    cut = data.draw(st.integers(0, n))
    whole = ConfusionMatrix(k).update(pred, truth)
    first = ConfusionMatrix(k).update(pred[:cut], truth[:cut])
    second = ConfusionMatrix(k).update(pred[cut:], truth[cut:])
    before = first.matrix.copy()
    np.testing.assert_array_equal((first + second).matrix, whole.matrix)
    np.testing.assert_array_equal(first.matrix, before)
    # __add__ does not modify its operands; merge does, in place
    np.testing.assert_array_equal(
        first.matrix + second.matrix, first.copy().merge(second).matrix
    )
    streamed = ConfusionMatrix(k).update(pred[:cut], truth[:cut])
    streamed.update(pred[cut:], truth[cut:])
    np.testing.assert_array_equal(streamed.matrix, whole.matrix)
    # counts equal the number of non-ignored pixels, and match a naive loop
    naive = np.zeros((k, k), np.int64)
    for t, p in zip(truth, pred, strict=True):
        if t != IGN:
            naive[t, p] += 1
    np.testing.assert_array_equal(whole.matrix, naive)


def test_merge_rejects_incompatible_and_reset() -> None:
    cm = ConfusionMatrix(3).update(PRED, TRUTH)
    with pytest.raises(ValueError, match="4-class"):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError):
        _ = cm + ConfusionMatrix(3, ignore_index=0)
    with pytest.raises(ValueError):
        ConfusionMatrix(1)
    cm.reset()
    assert cm.total == 0


def test_all_reduce_is_noop_without_distributed() -> None:
    cm = ConfusionMatrix(3).update(PRED, TRUTH)
    assert cm.all_reduce_() is cm
    np.testing.assert_array_equal(cm.matrix, M_HAND)


def test_all_reduce_single_process_gloo(tmp_path) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cm = ConfusionMatrix(3).update(PRED, TRUTH)
        cm.all_reduce_()
        np.testing.assert_array_equal(cm.matrix, M_HAND)  # world size 1: unchanged
        assert cm.matrix.dtype == np.int64
    finally:
        dist.destroy_process_group()


def test_metrics_module_does_not_import_torch() -> None:
    code = "import sys, alosmap.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- water ---------------------------------------------------------------------------


def test_water_metrics_by_hand() -> None:
    # truth = [1, 1, 1, 0, 0, 255], pred = [1, 1, 0, 1, 0, 1]
    #   TP = 2 (pixels 0, 1), FN = 1 (pixel 2), FP = 1 (pixel 3), TN = 1
    #   IoU = 2 / (2 + 1 + 1) = 0.5; precision = 2 / 3; recall = 2 / 3
    cm = ConfusionMatrix(2).update(
        np.array([1, 1, 0, 1, 0, 1]), np.array([1, 1, 1, 0, 0, IGN])
    )
    np.testing.assert_array_equal(cm.matrix, [[1, 1], [1, 2]])
    m = water_metrics(cm)
    assert m == pytest.approx({"iou_water": 0.5, "precision": 2 / 3, "recall": 2 / 3})
    assert water_metrics(cm.matrix) == m


def test_water_metrics_zero_denominators() -> None:
    # No water predicted, 2 water pixels missed: precision 0/0 NaN, recall 0/2, IoU 0/2
    m = water_metrics(np.array([[5, 0], [2, 0]]))
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["iou_water"] == 0.0
    # No water anywhere: everything undefined
    m = water_metrics(np.array([[7, 0], [0, 0]]))
    assert all(math.isnan(v) for v in m.values())
    assert jsonable(m) == {"iou_water": None, "precision": None, "recall": None}
    # Water predicted, none true: precision 0/3 = 0, recall 0/0 NaN
    m = water_metrics(np.array([[4, 3], [0, 0]]))
    assert m["precision"] == 0.0 and math.isnan(m["recall"])
    with pytest.raises(ValueError, match="2 x 2"):
        water_metrics(np.eye(3, dtype=np.int64))


def test_threshold_probabilities() -> None:
    assert WATER_THRESHOLD == 0.5
    prob = np.array([0.0, 0.49, 0.5, 0.51, 1.0, np.nan])
    out = threshold_probabilities(prob)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 0])
    t = threshold_probabilities(torch.sigmoid(torch.tensor([[-1.0, 0.0, 2.0]])))
    np.testing.assert_array_equal(t, [[0, 1, 1]])
    np.testing.assert_array_equal(
        threshold_probabilities(prob[:5], 0.8), [0, 0, 0, 0, 1]
    )


def test_nan_mean_and_jsonable() -> None:
    assert nan_mean(np.array([1.0, np.nan, 3.0])) == (2.0, 2)
    mean, n = nan_mean(np.array([np.nan]))
    assert math.isnan(mean) and n == 0
    assert jsonable({"a": np.float32(1.5), "b": [np.nan, np.int64(2)]}) == {
        "a": 1.5,
        "b": [None, 2],
    }


def test_kappa_and_f1_by_hand() -> None:
    # M_HAND: truth totals [2, 2, 1], pred totals [1, 4, 0], N = 5, TP = [1, 2, 0]
    #   F1 = 2 TP / (truth + pred) = [2/3, 4/6, 0/1]        -> mF1 = 4/9
    #   p_o = 3/5; p_e = (2*1 + 2*4 + 1*0) / 25 = 2/5     -> kappa = (1/5)/(3/5) = 1/3
    np.testing.assert_allclose(f1_per_class(M_HAND), [2 / 3, 2 / 3, 0.0])
    assert cohen_kappa(M_HAND) == pytest.approx(1 / 3)
    cm = ConfusionMatrix(3).update(PRED, TRUTH)
    assert cm.kappa() == pytest.approx(1 / 3)
    s = cm.summary(["water", "urban", "crop"])
    assert s["kappa"] == pytest.approx(1 / 3)
    assert s["f1_per_class"] == pytest.approx(
        {"water": 2 / 3, "urban": 2 / 3, "crop": 0.0}
    )
    assert s["mf1"] == pytest.approx(4 / 9) and s["mf1_classes"] == 3
    # a textbook 2 x 2 case: N = 50, p_o = 35/50, p_e = (25*30 + 25*20)/2500 = 0.5
    m2 = np.array([[20, 5], [10, 15]])
    assert cohen_kappa(m2) == pytest.approx(0.4)
    np.testing.assert_allclose(f1_per_class(m2), [40 / 55, 30 / 45])
    # perfect agreement is 1; agreement no better than chance is 0
    assert cohen_kappa(np.diag([3, 4, 5])) == pytest.approx(1.0)
    assert cohen_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(0.0)


def test_kappa_and_f1_undefined_are_nan_and_none_in_json() -> None:
    one_class = np.array([[5, 0], [0, 0]])  # p_e = 1: kappa undefined
    assert math.isnan(cohen_kappa(one_class))
    assert math.isnan(cohen_kappa(np.zeros((3, 3), dtype=np.int64)))
    f1 = f1_per_class(one_class)
    assert f1[0] == 1.0 and math.isnan(f1[1])
    s = (
        ConfusionMatrix(2)
        .update(np.zeros(5, np.int64), np.zeros(5, np.int64))
        .summary()
    )
    assert s["kappa"] is None and s["f1_per_class"] == {"0": 1.0, "1": None}
    assert s["mf1_classes"] == 1
    json.dumps(s, allow_nan=False)
