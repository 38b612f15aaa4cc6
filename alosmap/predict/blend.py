"""Blending overlapping window predictions into finished map rows, on the device.

:class:`StripAccumulator` sums each window's probabilities times its blend weights
(:func:`~alosmap.tiling.tile_weights`) over a rolling band of at most ``tile`` rows,
divides by the summed weights once a row can receive no more windows, and turns the
rows into class codes of the model's legend (argmax, or a threshold for a binary
legend: index 1, its positive class, where the probability reaches it), the confidence
and the per-class probability bands (uint8 percent).

Everything up to the uint8 rows stays where the model runs (torch tensors on the
CPU or a GPU): the float32 band, the weights, the argmax. Only the finished uint8
rows go back to the host; on a GPU they are copied asynchronously into page-locked
memory, and the writer waits for the copy (:meth:`Rows.wait`) instead of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, tile_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: No data of the confidence and probabilities (as
#: :data:`alosmap.io.writer.CONFIDENCE_NODATA`).
PERCENT_NODATA = 255
#: Rows of the band the CPU argmax works on at once (its working set stays in cache).
_CPU_CHUNK_ROWS = 32


@dataclass
class Rows:
    """Finished map rows (uint8 host arrays), handed to the writer.

    Attributes:
        row: scene row of the first row.
        classes: ``[n, width]`` class codes (the task's no-data where invalid).
        confidence: ``[n, width]`` top probability in percent, or None.
        probabilities: ``[K, n, width]`` probabilities in percent, or None.
        ready: a CUDA event that completes when the arrays hold their values
            (asynchronous copies from a GPU); None when they already do.
    """

    row: int
    classes: np.ndarray
    confidence: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    ready: Any = None

    def wait(self) -> None:
        """Block until the arrays hold their values (a no-op on the CPU)."""
        if self.ready is not None:
            self.ready.synchronize()
            self.ready = None


#: ``emit(rows)``: finished rows, in increasing row order.
Emit = Callable[[Rows], None]


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
        spec: model spec (its legend: codes, no data, binary; the threshold).
        emit: called with the :class:`Rows` of each finished run of rows, in
            increasing row order.
        want_confidence: compute the confidence (top class probability, percent).
        want_probabilities: compute the per-class probabilities (percent).
        device: where the band lives: the model's device (``cpu``, ``cuda:N``).
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
        device: str = "cpu",
    ) -> None:
        import torch

        task = spec.legend
        self._torch = torch
        self.device = torch.device(device)
        self.gpu = self.device.type == "cuda"
        self.width, self.height = width, height
        self.k = spec.num_outputs
        self.spec = spec
        self.emit = emit
        self.tile, self.overlap = tile, overlap
        self.rows = min(tile, height)
        self.acc = torch.zeros(
            (self.k, self.rows, width), dtype=torch.float32, device=self.device
        )
        self.wsum = torch.zeros(
            (self.rows, width), dtype=torch.float32, device=self.device
        )
        self.base = 0  # scene row of buffer row 0
        self.valid: dict[int, torch.Tensor | None] = {}  # band start -> validity
        self.want_confidence = want_confidence
        self.want_probabilities = want_probabilities
        self.nodata = task.nodata
        self.binary = task.binary
        # a binary task's spec carries its threshold (the Task default unless set)
        self.threshold = spec.threshold if spec.threshold is not None else 0.5
        codes = np.array([c.code for c in spec.classes], dtype=np.uint8)
        self._codes_np = codes
        self._codes = torch.from_numpy(codes).to(self.device)
        self._pixels = torch.zeros(256, dtype=torch.int64, device=self.device)
        self._weights: dict[tuple[bool, bool, bool, bool], torch.Tensor] = {}
        self._scratch: np.ndarray | None = None  # the CPU's percent plane

    @property
    def class_pixels(self) -> np.ndarray:
        """Pixels per output code so far (``[256]`` int64; no data not counted)."""
        out: np.ndarray = self._pixels.cpu().numpy().copy()
        out[self.nodata] = 0  # valid pixels never carry the no-data code
        return out

    def open_band(self, row: int, valid: torch.Tensor | np.ndarray | None) -> None:
        """Register the validity of the band starting at ``row`` (None = none valid)."""
        if isinstance(valid, np.ndarray):
            valid = self._torch.from_numpy(valid).to(self.device)
        self.valid[row] = valid

    def add(self, t: Tile, probs: torch.Tensor) -> None:
        """Blend one window's probabilities ``[K, tile, tile]`` (cropped to ``t``).

        ``probs`` is a tensor on the band's device.
        """
        if t.row > self.base:
            self.flush(t.row)
        r0 = t.row - self.base
        w = self._tile_weights(t)
        rows, cols = slice(r0, r0 + t.height), slice(t.col, t.col + t.width)
        # one fused pass: acc += probs * w
        self.acc[:, rows, cols].addcmul_(probs[:, : t.height, : t.width], w)
        self.wsum[rows, cols].add_(w)

    def _tile_weights(self, t: Tile) -> torch.Tensor:
        """The blend weights of ``t`` on the device (cached by the sides that ramp)."""
        key = (
            t.row > 0,
            t.row + t.height < self.height,
            t.col > 0,
            t.col + t.width < self.width,
        )
        w = self._weights.get(key)
        if w is None:
            host = tile_weights(t, self.height, self.width, self.tile, self.overlap)
            w = self._torch.from_numpy(np.array(host, dtype=np.float32)).to(self.device)
            self._weights[key] = w
        return w

    def flush(self, upto: int) -> None:
        """Finish rows ``[base, upto)`` and hand them to ``emit``."""
        starts = sorted(r for r in self.valid if r < upto)
        for i, band_row in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else upto
            self._emit_rows(band_row, end, self.valid.pop(band_row))
        n = upto - self.base
        if n <= 0:
            return
        keep = max(self.rows - n, 0)
        # move the still-open rows up, in runs of at most n rows from the top: no
        # run overlaps its source, and no source is overwritten before it is read
        # (the last band of a scene can move up by a few rows only; a temporary
        # copy of the rows would cost a band's worth of memory)
        for r in range(0, keep, n):
            m = min(n, keep - r)
            self.acc[:, r : r + m].copy_(self.acc[:, r + n : r + n + m])
            self.wsum[r : r + m].copy_(self.wsum[r + n : r + n + m])
        self.acc[:, keep:].zero_()
        self.wsum[keep:].zero_()
        self.base = upto

    def finish(self) -> None:
        """Finish every remaining row."""
        self.flush(self.height)

    def _emit_rows(self, r0: int, r1: int, valid_band: torch.Tensor | None) -> None:
        n = r1 - r0
        if n <= 0:
            return
        if valid_band is None:  # a band of windows that were all no data
            self.emit(self._blank_rows(r0, n))
            return
        torch = self._torch
        shape, dev = (n, self.width), self.device
        classes = torch.empty(shape, dtype=torch.uint8, device=dev)
        conf = prob = None
        if self.want_confidence:
            conf = torch.empty(shape, dtype=torch.uint8, device=dev)
        if self.want_probabilities:
            prob = torch.empty((self.k, *shape), dtype=torch.uint8, device=dev)
        # on the CPU a few rows at a time: temporaries stay small (and in cache)
        step = n if self.gpu else _CPU_CHUNK_ROWS
        b0 = r0 - self.base
        for s in range(0, n, step):
            e = min(n, s + step)
            self._finish(
                b0 + s,
                b0 + e,
                valid_band[s:e],
                classes[s:e],
                None if conf is None else conf[s:e],
                None if prob is None else prob[:, s:e],
            )
        self.emit(self._to_host(r0, classes, conf, prob))

    def _finish(
        self,
        b0: int,
        b1: int,
        valid: torch.Tensor,
        classes: torch.Tensor,
        conf: torch.Tensor | None,
        prob: torch.Tensor | None,
    ) -> None:
        """Classes (and confidence, probabilities) of buffer rows ``[b0, b1)``."""
        torch = self._torch
        wsum = self.wsum[b0:b1]
        invalid = (wsum > 0).logical_and_(valid).logical_not_()
        acc = self.acc[:, b0:b1]
        # 1 / weight sum, where a probability is needed (a class map of a
        # multi-class task needs none: the weight sum is one positive number per
        # pixel, so the argmax of the sums is the argmax of the probabilities)
        need_inv = self.binary or conf is not None or prob is not None
        inv = torch.reciprocal(wsum.clamp(min=1e-12)) if need_inv else wsum
        if self.binary:
            p = acc[0] * inv
            idx = (p >= self.threshold).to(torch.uint8)
            top = torch.maximum(p, 1.0 - p)
        else:
            top, idx = self._top_class(acc)
            if need_inv:
                top.mul_(inv)
        classes.copy_(self._lookup_codes(idx)).masked_fill_(invalid, self.nodata)
        self._pixels += torch.bincount(classes.reshape(-1), minlength=256)
        if conf is not None:
            self._to_percent(conf, top, None).masked_fill_(invalid, PERCENT_NODATA)
        if prob is not None:
            self._to_percent(prob, acc, inv).masked_fill_(invalid, PERCENT_NODATA)

    def _to_percent(
        self, out: torch.Tensor, p: torch.Tensor, scale: torch.Tensor | None
    ) -> torch.Tensor:
        """``out`` = ``p`` (times ``scale``) as uint8 percent (:func:`_percent`).

        Without ``scale``, ``p`` is a temporary of :meth:`_finish` and is
        overwritten. On the CPU one class plane at a time, through a scratch plane
        that stays in cache: the same values, 2.2× faster than the tensor
        expression on one core (measured on ``[9, 32, 6000]`` rows, ``taskset -c 0``).
        """
        if self.gpu:
            return out.copy_(_percent(p if scale is None else p * scale))
        if scale is None:
            _percent_host(p.numpy(), out.numpy())
            return out
        if self._scratch is None:  # rows come in chunks of at most this many
            self._scratch = np.empty((_CPU_CHUNK_ROWS, self.width), dtype=np.float32)
        tmp = self._scratch[: p.shape[1]]
        s = scale.numpy()
        for src, dst in zip(p.numpy(), out.numpy(), strict=True):
            np.multiply(src, s, out=tmp)
            _percent_host(tmp, dst)
        return out

    def _top_class(self, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top value and first index of it over the classes of ``acc [K, n, W]``."""
        if self.gpu:
            top, idx = acc.max(dim=0)
            return top, idx.to(self._torch.uint8)
        top_np, idx_np = top_class_numpy(acc.numpy())
        return self._torch.from_numpy(top_np), self._torch.from_numpy(idx_np)

    def _lookup_codes(self, idx: torch.Tensor) -> torch.Tensor:
        """Output codes of class indices (uint8)."""
        if self.gpu:
            return self._codes[idx.long()]
        return self._torch.from_numpy(np.take(self._codes_np, idx.numpy()))

    def _to_host(
        self,
        row: int,
        classes: torch.Tensor,
        conf: torch.Tensor | None,
        prob: torch.Tensor | None,
    ) -> Rows:
        """The finished rows as host arrays (asynchronous copies from a GPU)."""
        if not self.gpu:
            return Rows(
                row,
                classes.numpy(),
                None if conf is None else conf.numpy(),
                None if prob is None else prob.numpy(),
            )
        torch = self._torch
        host = [
            None if t is None else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            for t in (classes, conf, prob)
        ]
        for dst, src in zip(host, (classes, conf, prob), strict=True):
            if dst is not None and src is not None:
                dst.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        arrays = [None if h is None else h.numpy() for h in host]
        return Rows(row, arrays[0], arrays[1], arrays[2], ready=event)  # type: ignore[arg-type]

    def _blank_rows(self, row: int, n: int) -> Rows:
        """Rows of a band whose windows were all no data."""
        shape = (n, self.width)
        return Rows(
            row,
            np.full(shape, self.nodata, dtype=np.uint8),
            np.full(shape, PERCENT_NODATA, dtype=np.uint8)
            if self.want_confidence
            else None,
            np.full((self.k, *shape), PERCENT_NODATA, dtype=np.uint8)
            if self.want_probabilities
            else None,
        )


def top_class_numpy(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top value and the first index of it along axis 0 of ``acc [K, n, W]``.

    The same result as ``acc.max(0), acc.argmax(0)`` (ties go to the lower index),
    about eight times faster on one CPU core: element-wise maxima over cache-sized
    chunks of rows, where NumPy's argmax over a leading axis is scalar code.

    Returns:
        ``(top [n, W] float32, index [n, W] uint8)``.
    """
    k, n, w = acc.shape
    top = np.empty((n, w), dtype=acc.dtype)
    idx = np.zeros((n, w), dtype=np.uint8)
    chunk = max(1, min(n, _CPU_CHUNK_ROWS))
    gt = np.empty((chunk, w), dtype=bool)
    step = np.empty((chunk, w), dtype=np.uint8)
    for r in range(0, n, chunk):
        e = min(n, r + chunk)
        best, ix, g, s = top[r:e], idx[r:e], gt[: e - r], step[: e - r]
        np.copyto(best, acc[0, r:e])
        for c in range(1, k):
            a = acc[c, r:e]
            np.greater(a, best, out=g)  # strictly: the first maximum wins
            np.maximum(best, a, out=best)
            # ix = where(g, c, ix) in three uint8 passes (np.where/putmask are slower)
            np.subtract(c, ix, out=s)
            np.multiply(s, g, out=s)
            ix += s
    return top, idx


def _percent(p: torch.Tensor) -> torch.Tensor:
    """Probabilities as uint8 percent (rounded half to even, as ``np.rint``)."""
    import torch

    return p.clamp(0.0, 1.0).mul_(100.0).round_().to(torch.uint8)


def _percent_host(p: np.ndarray, out: np.ndarray) -> None:
    """:func:`_percent` on the host: ``out`` (uint8) from ``p`` (float32, clobbered)."""
    np.clip(p, 0.0, 1.0, out=p)
    np.multiply(p, 100.0, out=p)
    np.rint(p, out=p)
    np.copyto(out, p, casting="unsafe")


__all__ = ["Emit", "Rows", "StripAccumulator", "top_class_numpy"]
