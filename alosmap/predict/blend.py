"""Blending overlapping window predictions into finished map rows.

:class:`StripAccumulator` sums each window's probabilities times its blend weights
(:func:`~alosmap.tiling.tile_weights`) over a rolling band of at most ``tile`` rows,
divides by the summed weights once a row can receive no more windows, and turns the
rows into class codes (argmax, or a threshold for a binary task), the confidence
and the per-class probability bands (uint8 percent).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from alosmap.classes import get_task
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, tile_weights

#: No data of the confidence and probabilities (as
#: :data:`alosmap.io.writer.CONFIDENCE_NODATA`).
PERCENT_NODATA = 255
#: ``emit(row0, classes, confidence, probabilities)``: finished rows, uint8 arrays.
Emit = Callable[[int, np.ndarray, "np.ndarray | None", "np.ndarray | None"], None]


class StripAccumulator:
    """Weighted blend of window probabilities over a rolling band of rows.

    Windows arrive in grid order (row band by row band). When the first window of the
    band starting at row ``y`` arrives, every row above ``y`` is final: it is turned
    into classes (and confidence/probabilities), handed to ``emit`` and dropped, so at
    most ``tile`` rows are held.

    Args:
        width: scene width.
        height: scene height.
        tile: window size.
        overlap: overlap of the window grid (for the blend weights).
        spec: model spec (task, classes, threshold).
        emit: called as ``emit(row0, classes, confidence, probabilities)`` with uint8
            arrays for each finished run of rows, in increasing row order.
        want_confidence: compute the confidence (top class probability, percent).
        want_probabilities: compute the per-class probabilities (percent).
    """

    def __init__(
        self,
        width: int,
        height: int,
        tile: int,
        overlap: int,
        spec: ModelSpec,
        emit: Emit,
        *,
        want_confidence: bool = False,
        want_probabilities: bool = False,
    ) -> None:
        task = get_task(spec.task)
        self.width, self.height = width, height
        self.k = spec.num_outputs
        self.spec = spec
        self.emit = emit
        self.tile, self.overlap = tile, overlap
        self.rows = min(tile, height)
        self.acc = np.zeros((self.k, self.rows, width), dtype=np.float32)
        self.wsum = np.zeros((self.rows, width), dtype=np.float32)
        self.base = 0  # scene row of buffer row 0
        self.valid: dict[int, np.ndarray | None] = {}  # band start row -> validity
        self.want_confidence = want_confidence
        self.want_probabilities = want_probabilities
        self.nodata = task.nodata
        self.binary = task.binary
        # a binary task's spec carries its threshold (the Task default unless set)
        self.threshold = spec.threshold if spec.threshold is not None else 0.5
        self.codes = np.array([c.code for c in spec.classes], dtype=np.uint8)
        self.class_pixels = np.zeros(256, dtype=np.int64)

    def open_band(self, row: int, valid: np.ndarray | None) -> None:
        """Register the validity of the band starting at ``row`` (None = none valid)."""
        self.valid[row] = valid

    def add(self, t: Tile, probs: np.ndarray) -> None:
        """Blend one window's probabilities ``[K, tile, tile]`` (cropped to ``t``)."""
        if t.row > self.base:
            self.flush(t.row)
        r0 = t.row - self.base
        w = tile_weights(t, self.height, self.width, self.tile, self.overlap)
        sl = (slice(r0, r0 + t.height), slice(t.col, t.col + t.width))
        self.acc[:, sl[0], sl[1]] += probs[:, : t.height, : t.width] * w
        self.wsum[sl] += w

    def flush(self, upto: int) -> None:
        """Finish rows ``[base, upto)`` and hand them to ``emit``."""
        starts = sorted(r for r in self.valid if r < upto)
        for i, band_row in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else upto
            self._emit_rows(band_row, end, self.valid.pop(band_row))
        n = upto - self.base
        if n <= 0:
            return
        keep = self.rows - n
        if keep > 0:
            # move the still-open rows up, one row at a time: a single overlapping
            # slice assignment would make numpy copy the whole buffer first
            for r in range(keep):
                self.acc[:, r] = self.acc[:, r + n]
            self.wsum[:keep] = self.wsum[n:]
        self.acc[:, max(keep, 0) :] = 0
        self.wsum[max(keep, 0) :] = 0
        self.base = upto

    def finish(self) -> None:
        """Finish every remaining row."""
        self.flush(self.height)

    def _emit_rows(self, r0: int, r1: int, valid_band: np.ndarray | None) -> None:
        n = r1 - r0
        if n <= 0:
            return
        if valid_band is None:  # a band of windows that were all no data
            blank = np.full((n, self.width), self.nodata, dtype=np.uint8)
            conf = (
                np.full((n, self.width), PERCENT_NODATA, dtype=np.uint8)
                if self.want_confidence
                else None
            )
            probs = (
                np.full((self.k, n, self.width), PERCENT_NODATA, dtype=np.uint8)
                if self.want_probabilities
                else None
            )
            self.emit(r0, blank, conf, probs)
            return
        b0 = r0 - self.base
        valid = valid_band[:n]
        wsum = self.wsum[b0 : b0 + n]
        valid = valid & (wsum > 0)
        acc = self.acc[:, b0 : b0 + n]
        inv = 1.0 / np.maximum(wsum, 1e-12)
        if self.binary:
            p = acc[0] * inv
            idx = (p >= self.threshold).astype(np.uint8)
            top = np.maximum(p, 1.0 - p)
        else:
            # the weight sum is one positive number per pixel: classes and the top
            # probability need no [K, rows, width] division
            idx = acc.argmax(axis=0).astype(np.uint8)
            top = acc.max(axis=0) * inv
        classes = np.where(valid, self.codes[idx], self.nodata).astype(np.uint8)
        self.class_pixels += np.bincount(classes[valid], minlength=256)
        conf = None
        if self.want_confidence:
            conf = np.where(valid, _percent(top), PERCENT_NODATA).astype(np.uint8)
        prob_out = None
        if self.want_probabilities:
            prob_out = np.where(
                valid[None], _percent(acc * inv), PERCENT_NODATA
            ).astype(np.uint8)
        self.emit(r0, classes, conf, prob_out)


def _percent(p: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(p, 0.0, 1.0) * 100.0).astype(np.uint8)


__all__ = ["Emit", "StripAccumulator"]
