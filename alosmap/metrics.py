"""Segmentation metrics of the paper (Section III-B), from a streaming confusion matrix.

LULC: per-class IoU and accuracy, mIoU (primary), mAcc and overall accuracy. Water:
IoU of the water class, precision and recall. Everything derives from a confusion
matrix ``M`` with rows = truth and columns = prediction, so it can be accumulated
over batches, merged (``+``) and summed across DDP ranks (:meth:`ConfusionMatrix.
all_reduce_`) before any ratio is taken. With ``TP_k = M[k, k]``,
``FN_k = Σ_j M[k, j] − TP_k`` and ``FP_k = Σ_i M[i, k] − TP_k``:

* ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``
* ``Acc_k = TP_k / (TP_k + FN_k)`` (per-class recall)
* ``OA = Σ_k TP_k / Σ M``
* ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)`` (harmonic mean of precision and recall)
* Cohen's ``κ = (p_o − p_e) / (1 − p_e)`` with ``p_o = OA`` and
  ``p_e = Σ_k (Σ_j M[k, j]) (Σ_i M[i, k]) / (Σ M)²`` (agreement expected by chance)

**Undefined values are NaN, never 0.** A class absent from both truth and prediction
has an undefined IoU and F1 (0/0); κ is undefined when ``p_e = 1`` (a single class
in both truth and prediction) or the matrix is empty; a class absent from the truth
has an undefined accuracy even if predicted (its IoU is then 0: every prediction of
it is a false positive). mIoU, mAcc and mF1 are means over the classes whose value
is defined; the number of such classes is reported next to them.
:meth:`ConfusionMatrix.summary` turns NaN into ``None`` for JSON.

**Validation noise.** A score pooled over a few scenes is noisy: the matrices of
each unit (scene or patch, :func:`confusion_per_item`) are kept apart, and
:func:`bootstrap_scores` resamples the units with replacement (the same seeded draws
every call) and pools each resample's matrices into one score; percentiles of these
give an interval (:func:`percentile_interval`), and the same draws applied to two
models scored on the same units give a paired distribution of their difference.

Inputs may be numpy arrays or torch tensors; this module never imports torch at
import time (only :func:`all_reduce_sum` and :meth:`ConfusionMatrix.all_reduce_`
import it, when called).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from alosmap.classes import IGNORE_INDEX

__all__ = [
    "WATER_THRESHOLD",
    "ConfusionMatrix",
    "accuracy_per_class",
    "all_reduce_sum",
    "batched_score",
    "binary_metrics",
    "bootstrap_scores",
    "cohen_kappa",
    "confusion_per_item",
    "f1_per_class",
    "iou_per_class",
    "jsonable",
    "nan_mean",
    "overall_accuracy",
    "percentile_interval",
    "positive_iou_name",
    "slug",
    "threshold_probabilities",
    "water_metrics",
]

#: Probability threshold of the water task at inference (paper: ``pred_thr = 0.5``).
WATER_THRESHOLD = 0.5


def _to_numpy(x: Any) -> np.ndarray:
    """Numpy view of an array-like or a torch tensor (without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` as float64 with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _as_matrix(cm: ConfusionMatrix | np.ndarray | Any) -> np.ndarray:
    m = cm.matrix if isinstance(cm, ConfusionMatrix) else _to_numpy(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square [K, K]; got {m.shape}")
    return m


def iou_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """Per-class ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``; NaN where undefined (0/0).

    Args:
        cm: a :class:`ConfusionMatrix` or a ``[K, K]`` matrix (rows = truth).

    Returns:
        float64 array ``[K]``.
    """
    m = _as_matrix(cm)
    tp = np.diag(m)
    return _ratio(tp, m.sum(axis=0) + m.sum(axis=1) - tp)


def accuracy_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """Per-class ``Acc_k = TP_k / (TP_k + FN_k)`` (recall); NaN if absent from truth.

    ``cm`` and the result are as for :func:`iou_per_class` (float64 ``[K]``).
    """
    m = _as_matrix(cm)
    return _ratio(np.diag(m), m.sum(axis=1))


def overall_accuracy(cm: ConfusionMatrix | np.ndarray) -> float:
    """``Σ_k TP_k / Σ M`` (pixel accuracy); NaN for an empty matrix."""
    m = _as_matrix(cm)
    return float(_ratio(np.trace(m), m.sum()))


def f1_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """Per-class ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)``; NaN where undefined (0/0).

    ``cm`` and the result are as for :func:`iou_per_class` (float64 ``[K]``).
    """
    m = _as_matrix(cm)
    tp = np.diag(m).astype(np.float64)
    return _ratio(2.0 * tp, m.sum(axis=0) + m.sum(axis=1))


def cohen_kappa(cm: ConfusionMatrix | np.ndarray) -> float:
    """Cohen's kappa ``(p_o − p_e) / (1 − p_e)``; NaN when undefined.

    ``p_o`` is the overall accuracy and ``p_e = Σ_k truth_k · pred_k / N²`` the
    agreement expected from the marginals alone. Undefined (NaN) for an empty
    matrix or when ``p_e = 1`` (truth and prediction all one and the same class).
    """
    m = _as_matrix(cm).astype(np.float64)
    n = m.sum()
    if n == 0:
        return math.nan
    p_o = np.trace(m) / n
    p_e = float((m.sum(axis=1) * m.sum(axis=0)).sum() / (n * n))
    if p_e >= 1.0:
        return math.nan
    return float((p_o - p_e) / (1.0 - p_e))


def nan_mean(values: np.ndarray) -> tuple[float, int]:
    """Mean over the non-NaN entries and their count; ``(nan, 0)`` if there are none."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    n = int(ok.sum())
    return (float(v[ok].mean()) if n else math.nan), n


def jsonable(obj: Any) -> Any:
    """Copy of ``obj`` with NaN/inf → ``None`` and numpy scalars/arrays → Python."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class ConfusionMatrix:
    """Streaming ``K × K`` confusion matrix: rows = truth, columns = prediction.

    Pixels whose *truth* is ``ignore_index`` are skipped, whatever is predicted
    there. Matrices add up exactly, so per-batch or per-rank matrices can be merged
    before metrics are computed (see :meth:`merge`, ``+``, :meth:`all_reduce_`).

    Args:
        num_classes: ``K``.
        ignore_index: truth value excluded from counting.

    Attributes:
        matrix: int64 ``[K, K]``; ``matrix[t, p]`` counts pixels of true class ``t``
            predicted as ``p``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={self.total})"
        )

    @property
    def total(self) -> int:
        """Number of counted (valid) pixels."""
        return int(self.matrix.sum())

    def reset(self) -> None:
        """Set every count to zero."""
        self.matrix[...] = 0

    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Count one batch of predictions.

        Args:
            pred: predicted class indices (e.g. ``logits.argmax(1)``), any shape;
                numpy array or torch tensor of an integer or bool dtype.
            target: true class indices of the same shape; ``ignore_index`` pixels
                are skipped.

        Returns:
            ``self``, so calls can be chained.

        Raises:
            ValueError: on mismatched shapes, non-integer inputs (e.g.
                probabilities), or values outside ``[0, K)`` at non-ignored pixels.
        """
        p = _to_numpy(pred)
        t = _to_numpy(target)
        if p.shape != t.shape:
            raise ValueError(
                f"pred and target must have the same shape; got {p.shape} and {t.shape}"
            )
        for name, a in (("pred", p), ("target", t)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
                raise ValueError(
                    f"{name} must hold integer class indices; got dtype {a.dtype} "
                    "(take argmax over classes, or threshold water probabilities "
                    "with threshold_probabilities)"
                )
        t = t.reshape(-1).astype(np.int64, copy=False)
        p = p.reshape(-1).astype(np.int64, copy=False)
        valid = t != self.ignore_index
        if not valid.all():
            t = t[valid]
            p = p[valid]
        k = self.num_classes
        for name, a in (("target", t), ("pred", p)):
            if a.size and (a.min() < 0 or a.max() >= k):
                bad = np.unique(a[(a < 0) | (a >= k)])[:10].tolist()
                raise ValueError(
                    f"{name} holds values {bad} outside [0, {k}) at non-ignored "
                    f"pixels (ignore_index={self.ignore_index})"
                )
        self.matrix += np.bincount(k * t + p, minlength=k * k).reshape(k, k)
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"cannot merge a {type(other).__name__} into a matrix")
        if (other.num_classes, other.ignore_index) != (
            self.num_classes,
            self.ignore_index,
        ):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore_index="
                f"{other.ignore_index}) into a {self.num_classes}-class one "
                f"(ignore_index={self.ignore_index})"
            )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix in place; returns ``self``."""
        self._check_compatible(other)
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_compatible(other)
        out = self.copy()
        out.matrix += other.matrix
        return out

    def copy(self) -> ConfusionMatrix:
        """An independent copy."""
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix[...] = self.matrix
        return out

    def all_reduce_(self, group: Any = None) -> ConfusionMatrix:
        """Sum the matrix over all ``torch.distributed`` ranks, in place.

        Every rank must call it (it is a collective). A no-op when torch or
        ``torch.distributed`` is unavailable or not initialised. With the NCCL
        backend the counts travel through the current CUDA device.

        Args:
            group: process group; ``None`` = the default group.

        Returns:
            ``self``.
        """
        self.matrix[...] = all_reduce_sum(self.matrix, group)
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 ``[K]`` (NaN = undefined); see module docs."""
        return iou_per_class(self.matrix)

    def accuracy(self) -> np.ndarray:
        """Per-class accuracy (recall), float64 ``[K]`` (NaN = undefined)."""
        return accuracy_per_class(self.matrix)

    def miou(self) -> float:
        """Mean IoU over the classes with a defined IoU (NaN if none)."""
        return nan_mean(self.iou())[0]

    def macc(self) -> float:
        """Mean class accuracy over the classes present in the truth (NaN if none)."""
        return nan_mean(self.accuracy())[0]

    def overall_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly (NaN if none counted)."""
        return overall_accuracy(self.matrix)

    def f1(self) -> np.ndarray:
        """Per-class F1, float64 ``[K]`` (NaN = undefined); see module docs."""
        return f1_per_class(self.matrix)

    def kappa(self) -> float:
        """Cohen's kappa (NaN = undefined); see module docs."""
        return cohen_kappa(self.matrix)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """All LULC metrics as a JSON-serialisable dict (NaN → ``None``).

        Keys: ``miou``, ``macc``, ``overall_accuracy``, ``miou_classes`` and
        ``macc_classes`` (how many classes each mean covers), ``pixels``,
        ``num_classes`` and ``per_class``: class name → ``iou``, ``accuracy``,
        ``support`` (true pixels) and ``predicted`` (predicted pixels); also
        ``kappa`` (Cohen's κ), ``f1_per_class`` (class name → F1), ``mf1`` (mean
        F1 over the classes where it is defined) and ``mf1_classes``.

        Args:
            class_names: one name per class; default ``"0"`` … ``"K-1"``.
        """
        k = self.num_classes
        names = [str(i) for i in range(k)] if class_names is None else class_names
        if len(names) != k:
            raise ValueError(f"got {len(names)} class names for {k} classes")
        iou = self.iou()
        acc = self.accuracy()
        miou, n_iou = nan_mean(iou)
        macc, n_acc = nan_mean(acc)
        f1 = self.f1()
        mf1, n_f1 = nan_mean(f1)
        support = self.matrix.sum(axis=1)
        predicted = self.matrix.sum(axis=0)
        per_class = {
            str(name): {
                "iou": iou[i],
                "accuracy": acc[i],
                "support": int(support[i]),
                "predicted": int(predicted[i]),
            }
            for i, name in enumerate(names)
        }
        return jsonable(
            {
                "miou": miou,
                "macc": macc,
                "overall_accuracy": self.overall_accuracy(),
                "miou_classes": n_iou,
                "macc_classes": n_acc,
                "pixels": self.total,
                "num_classes": k,
                "per_class": per_class,
                "kappa": self.kappa(),
                "mf1": mf1,
                "mf1_classes": n_f1,
                "f1_per_class": {str(n): f1[i] for i, n in enumerate(names)},
            }
        )


def water_metrics(cm: ConfusionMatrix | np.ndarray) -> dict[str, float]:
    """Water-class IoU, precision and recall from a 2 × 2 matrix (index 1 = water).

    With ``TP = M[1, 1]``, ``FP = M[0, 1]``, ``FN = M[1, 0]``:
    ``iou_water = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``,
    ``recall = TP / (TP + FN)``. A zero denominator gives NaN (no water predicted →
    precision undefined; no water in the truth → recall undefined; neither → all
    three undefined). Pass the result through :func:`jsonable` for JSON.

    Args:
        cm: a 2-class :class:`ConfusionMatrix` or a ``[2, 2]`` matrix
            (rows = truth).

    Returns:
        ``{"iou_water", "precision", "recall"}`` as floats.
    """
    m = _as_matrix(cm)
    if m.shape != (2, 2):
        raise ValueError(f"water metrics need a 2 x 2 matrix; got {m.shape}")
    tp, fp, fn = m[1, 1], m[0, 1], m[1, 0]
    return {
        "iou_water": float(_ratio(tp, tp + fp + fn)),
        "precision": float(_ratio(tp, tp + fp)),
        "recall": float(_ratio(tp, tp + fn)),
    }


def threshold_probabilities(
    prob: Any, threshold: float = WATER_THRESHOLD
) -> np.ndarray:
    """Water probabilities → class indices: 1 where ``prob >= threshold``, else 0.

    At the default 0.5 this is ``logit >= 0``. NaN probabilities give 0.

    Args:
        prob: water probabilities in ``[0, 1]``, any shape (numpy or torch).
        threshold: decision threshold.

    Returns:
        uint8 array of the same shape.
    """
    p = _to_numpy(prob)
    return (p >= threshold).astype(np.uint8)


def slug(name: str) -> str:
    """``name`` in lower case, runs of other characters than ``a-z0-9`` as ``_``.

    ``"Flooded area"`` → ``"flooded_area"``; a name with none of them → ``"class"``.
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


def positive_iou_name(positive: str) -> str:
    """The score name of a binary legend: ``iou_<slug of its positive class>``.

    The water legend's positive class, *Water*, gives ``iou_water``.
    """
    return f"iou_{slug(positive)}"


def binary_metrics(
    cm: ConfusionMatrix | np.ndarray, positive: str = "Water"
) -> dict[str, float]:
    """:func:`water_metrics` of a binary legend whose class 1 is ``positive``.

    Returns:
        ``{positive_iou_name(positive), "precision", "recall"}`` as floats.
    """
    m = water_metrics(cm)
    return {positive_iou_name(positive): m.pop("iou_water"), **m}


def all_reduce_sum(array: np.ndarray, group: Any = None) -> np.ndarray:
    """``array`` summed over all ``torch.distributed`` ranks (a new array).

    Every rank must call it with an array of the same shape and dtype (it is a
    collective). Without an initialised process group: a copy of ``array``. With
    the NCCL backend the values travel through the current CUDA device.
    """
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return np.array(array)
    if not (dist.is_available() and dist.is_initialized()):
        return np.array(array)
    device = torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    buf = torch.from_numpy(np.ascontiguousarray(array).copy()).to(device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.cpu().numpy()


def confusion_per_item(
    pred: Any, target: Any, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """One confusion matrix per item of a batch (rows = truth).

    Args:
        pred: predicted class indices ``[B, ...]`` (numpy or torch, integers).
        target: true class indices of the same shape; ``ignore_index`` skipped.
        num_classes: ``K``.
        ignore_index: truth value excluded from counting.

    Returns:
        int64 ``[B, K, K]``; item ``b`` is what :class:`ConfusionMatrix` counts
        for ``pred[b], target[b]``.

    Raises:
        ValueError: mismatched shapes, or values outside ``[0, K)`` at counted
            pixels.
    """
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.shape != t.shape or p.ndim < 1:
        raise ValueError(f"pred {p.shape} and target {t.shape}: need one [B, ...]")
    b, k = p.shape[0], int(num_classes)
    t = t.reshape(b, -1).astype(np.int64, copy=False)
    p = p.reshape(b, -1).astype(np.int64, copy=False)
    item = np.broadcast_to(np.arange(b)[:, None], t.shape)
    valid = t != ignore_index
    t, p, item = t[valid], p[valid], item[valid]
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"class indices outside [0, {k}) at counted pixels")
    flat = (item * k + t) * k + p
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


def batched_score(matrices: np.ndarray, binary: bool) -> np.ndarray:
    """The selection score of each of ``[..., K, K]`` confusion matrices.

    Binary legends: the IoU of class 1 (``water_metrics``' ``iou_water``); others:
    the mIoU over the classes whose IoU is defined (:meth:`ConfusionMatrix.miou`).
    NaN where undefined.
    """
    m = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    iou = _ratio(tp, m.sum(axis=-2) + m.sum(axis=-1) - tp)
    if binary:
        return iou[..., 1]
    ok = ~np.isnan(iou)
    n = ok.sum(axis=-1)
    return _ratio(np.where(ok, iou, 0.0).sum(axis=-1), n)


def bootstrap_scores(
    units: Sequence[np.ndarray],
    binary: bool,
    *,
    resamples: int = 1000,
    seed: int = 0,
    chunk: int = 100,
) -> list[np.ndarray]:
    """Scores of bootstrap resamples of units, the same draws for every model.

    Each resample draws ``U`` units with replacement (multinomial counts, seeded by
    ``seed``: the same draws every call) and pools their confusion matrices into one
    score (:func:`batched_score`). Given several models scored on the same units,
    each model's ``r``-th score is on the same resample: their differences are a
    paired bootstrap of the difference.

    Args:
        units: one ``[U, K, K]`` array of per-unit confusion matrices per model.
        binary: binary legend (IoU of class 1) or mIoU.
        resamples: number of resamples.
        seed: seed of the draws.
        chunk: resamples drawn at a time (bounds the memory: ``chunk × U``).

    Returns:
        One float64 ``[resamples]`` array per model (NaN where undefined).
    """
    flat = [np.asarray(u, dtype=np.float64).reshape(len(u), -1) for u in units]
    n, k = len(flat[0]), math.isqrt(flat[0].shape[1])
    if any(len(f) != n for f in flat):
        raise ValueError("every model needs the same units")
    if n == 0:
        return [np.full(resamples, math.nan) for _ in flat]
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in flat]
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        for o, f in zip(out, flat, strict=True):
            pooled = (weights @ f).reshape(size, k, k)
            o.append(batched_score(pooled, binary))
    return [np.concatenate(o) if o else np.zeros(0) for o in out]


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``samples`` (NaN ignored).

    ``level`` 0.9 gives the 5th and 95th percentiles; NaN, NaN when no sample is
    defined.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not s.size:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return float(lo), float(hi)
