"""Blending overlapping window predictions into finished map rows: one engine.

:class:`StripAccumulator` sums each window's probabilities times its blend weights
(:func:`~alosmap.tiling.tile_weights`) over a rolling band of at most ``tile`` rows,
divides by the summed weights once a row can receive no more windows, and turns the
rows into class codes of the model's legend (argmax, or a threshold for a binary
legend: index 1, its positive class, where the probability reaches it), the confidence
and the per-class probability bands (uint8 percent).

It is written once over an array namespace (:mod:`alosmap._xp`, the array API
standard through ``array-api-compat``): NumPy arrays on the host (any runtime on the
CPU: ONNX Runtime's NumPy outputs, or PyTorch's CPU tensors viewed as NumPy without a
copy), torch tensors where the model runs on a GPU (the float32 band, the weights, the
argmax stay in device memory; only the finished uint8 rows go back, copied
asynchronously into page-locked memory, and the writer waits for the copy
(:meth:`Rows.wait`) instead of the model). For the same probabilities both give
bit-identical maps: every operation is one IEEE-rounded step on either library.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from alosmap._xp import (
    CHUNK_ROWS,
    add_product_,
    bincount,
    fill_where_,
    is_numpy,
    namespace,
    percent_,
    set_product_,
    top_class,
    top_class_numpy,
)
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, tile_weights

#: No data of the confidence and probabilities (as
#: :data:`alosmap.io.writer.CONFIDENCE_NODATA`).
PERCENT_NODATA = 255
#: Engines :func:`engine_namespace` knows: ``numpy`` (the host) or ``torch``.
ENGINES = ("numpy", "torch")
#: The environment variable that picks the engine (:func:`pipeline_engine`).
ENGINE_ENV = "ALOSMAP_ENGINE"


def engine_namespace(device: str, engine: str | None = None) -> ModuleType:
    """The array namespace the pipeline's engine runs on for ``device``.

    NumPy on the CPU, torch on a GPU (``cuda``, ``cuda:N``); ``engine`` names one
    (``numpy`` or ``torch``) instead, for tests and ``alosmap bench --ceiling
    --engine`` (the torch engine on the CPU is the device path without a GPU).

    Raises:
        ValueError: an unknown engine, or the NumPy engine on a GPU.
    """
    if engine is None:
        engine = "torch" if device.startswith("cuda") else "numpy"
    if engine not in ENGINES:
        raise ValueError(f"engine: expected numpy or torch, got {engine!r}")
    if engine == "numpy" and device.startswith("cuda"):
        raise ValueError(f"the numpy engine runs on the CPU, not on {device}")
    return namespace(engine)


def pipeline_engine() -> str | None:
    """The engine ``$ALOSMAP_ENGINE`` names (``numpy`` or ``torch``), else None.

    None lets :func:`engine_namespace` choose by the device. Naming ``torch`` on the
    CPU runs the device path (raw strips, radiometry, blend and finish in torch
    tensors) without a GPU: for tests and ``alosmap bench --ceiling --engine``.

    Raises:
        ValueError: another name.
    """
    name = os.environ.get(ENGINE_ENV, "").strip().lower() or None
    if name is not None and name not in ENGINES:
        raise ValueError(f"${ENGINE_ENV}: expected numpy or torch, got {name!r}")
    return name


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
        engine: ``numpy`` or ``torch`` (default: :func:`engine_namespace`'s).
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
        engine: str | None = None,
    ) -> None:
        xp = self.xp = engine_namespace(device, engine)
        self.host = is_numpy(xp)
        self.device = device
        self.gpu = device.startswith("cuda")
        self.width, self.height = width, height
        self.k = spec.num_outputs
        self.spec = spec
        self.emit = emit
        self.tile, self.overlap = tile, overlap
        self.rows = min(tile, height)
        self.acc = xp.zeros((self.k, self.rows, width), dtype=xp.float32, device=device)
        self.wsum = xp.zeros((self.rows, width), dtype=xp.float32, device=device)
        self.base = 0  # scene row of buffer row 0
        # what the band holds (see add): rows above this scene row were written by
        # earlier bands; in the current band (its scene row), columns left of
        # _col_end were written by its earlier windows; the rest is stale
        self._rows_end = 0
        self._band_rows_end = 0
        self._band_row = -1
        self._col_end = 0
        self.valid: dict[int, Any] = {}  # band start -> validity (None: none valid)
        self.want_confidence = want_confidence
        self.want_probabilities = want_probabilities
        task = spec.legend
        self.nodata = task.nodata
        self.binary = task.binary
        # a binary task's spec carries its threshold (the Task default unless set)
        self.threshold = spec.threshold if spec.threshold is not None else 0.5
        codes = np.array([c.code for c in spec.classes], dtype=np.uint8)
        self._codes = self.asarray(codes)
        self._pixels = xp.zeros(256, dtype=xp.int64, device=device)
        self._weights: dict[tuple[bool, bool, bool, bool], Any] = {}  # w, box
        # the host's product of a window and its weights (no temporary per window)
        self._scratch = (
            np.empty((self.k, tile, tile), dtype=np.float32) if self.host else None
        )

    def asarray(self, a: Any) -> Any:
        """``a`` (a NumPy array or a tensor) as an array of this engine's device.

        On the host a CPU tensor is viewed, not copied.
        """
        if self.host:
            return np.asarray(a)
        return self.xp.asarray(a, device=self.device)

    @property
    def class_pixels(self) -> np.ndarray:
        """Pixels per output code so far (``[256]`` int64; no data not counted)."""
        out = _to_numpy(self._pixels).copy()
        out[self.nodata] = 0  # valid pixels never carry the no-data code
        return out

    def open_band(self, row: int, valid: Any) -> None:
        """Register the validity of the band starting at ``row`` (None = none valid)."""
        self.valid[row] = None if valid is None else self.asarray(valid)

    def add(self, t: Tile, probs: Any) -> None:
        """Blend one window's probabilities ``[K, tile, tile]`` (cropped to ``t``).

        ``probs`` is an array of this engine (:meth:`asarray`) on the band's device.
        """
        if t.row > self.base:
            self.flush(t.row)
        if t.row != self._band_row:  # a new band of windows
            self._rows_end, self._band_row, self._col_end = (
                self._band_rows_end,
                t.row,
                0,
            )
        w, (i0, i1, j0, j1) = self._tile_weights(t)
        # only the rows and columns with a weight > 0 (adding 0 × p changes no bit),
        # in three blocks: rows earlier bands wrote and columns earlier windows of
        # this band wrote get the product added; the rest, which no window wrote
        # since the rows were finished, gets it assigned (0 + p·w is p·w, bit for
        # bit): no zeroing of finished rows, no read of rows not yet written
        r0, c0 = t.row - self.base + i0, t.col + j0
        r1, c1 = r0 + i1 - i0, c0 + j1 - j0
        fr = min(max(r0, self._rows_end - self.base), r1)
        fc = min(max(c0, self._col_end), c1)
        for (a, b), (c, d), assign in (
            ((r0, fr), (c0, c1), False),
            ((fr, r1), (c0, fc), False),
            ((fr, r1), (fc, c1), True),
        ):
            if a < b and c < d:
                self._blend(probs, w, (a, b, c, d), (r0 - i0, c0 - j0, i0, j0), assign)
        self._col_end = max(self._col_end, c1)
        self._band_rows_end = max(self._band_rows_end, self.base + r1)

    def _blend(
        self,
        probs: Any,
        w: Any,
        box: tuple[int, int, int, int],
        where: tuple[int, int, int, int],
        assign: bool,
    ) -> None:
        """Blend the block ``box`` (band rows ``[a, b)``, columns ``[c, d)``).

        ``where``: the window's band row and column, and its first weighted row
        and column ``(i0, j0)``, where ``w`` (its weights > 0) starts.
        """
        a, b, c, d = box
        ti, tj = a - where[0], c - where[1]  # the block in the window
        wi, wj = ti - where[2], tj - where[3]
        acc, wsum = self.acc[:, a:b, c:d], self.wsum[a:b, c:d]
        p = probs[:, ti : ti + b - a, tj : tj + d - c]
        wb = w[wi : wi + b - a, wj : wj + d - c]
        scratch = None if self._scratch is None else self._scratch[:, : b - a, : d - c]
        if assign:
            set_product_(acc, p, wb)
            wsum[...] = wb
        else:
            add_product_(acc, p, wb, scratch)
            wsum += wb

    def _tile_weights(self, t: Tile) -> tuple[Any, tuple[int, int, int, int]]:
        """The blend weights of ``t`` where they are > 0, on the device, and where.

        Returns the weights cropped to the rows ``[i0, i1)`` and columns
        ``[j0, j1)`` of the window outside which they are 0 (the discard margins),
        and ``(i0, i1, j0, j1)``; cached by the sides that ramp.
        """
        key = (
            t.row > 0,
            t.row + t.height < self.height,
            t.col > 0,
            t.col + t.width < self.width,
        )
        cached = self._weights.get(key)
        if cached is None:
            host = tile_weights(t, self.height, self.width, self.tile, self.overlap)
            rows, cols = np.flatnonzero(host.any(1)), np.flatnonzero(host.any(0))
            if rows.size == 0:  # cannot happen for overlap < tile; keep one pixel
                rows = cols = np.zeros(1, dtype=np.intp)
            box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            crop = host[box[0] : box[1], box[2] : box[3]]
            cached = (self.asarray(np.array(crop, dtype=np.float32)), box)
            self._weights[key] = cached
        return cached

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
            self.acc[:, r : r + m] = self.acc[:, r + n : r + n + m]
            self.wsum[r : r + m] = self.wsum[r + n : r + n + m]
        self.base = upto  # rows from keep on are stale: add() assigns before it adds

    def finish(self) -> None:
        """Finish every remaining row."""
        self.flush(self.height)

    def _emit_rows(self, r0: int, r1: int, valid_band: Any) -> None:
        n = r1 - r0
        if n <= 0:
            return
        if valid_band is None:  # a band of windows that were all no data
            self.emit(self._blank_rows(r0, n))
            return
        xp, dev = self.xp, self.device
        shape = (n, self.width)
        classes = xp.empty(shape, dtype=xp.uint8, device=dev)
        conf = prob = None
        if self.want_confidence:
            conf = xp.empty(shape, dtype=xp.uint8, device=dev)
        if self.want_probabilities:
            prob = xp.empty((self.k, *shape), dtype=xp.uint8, device=dev)
        # on the CPU a few rows at a time: temporaries stay small (and in cache)
        step = n if self.gpu else CHUNK_ROWS
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
        self, b0: int, b1: int, valid: Any, classes: Any, conf: Any, prob: Any
    ) -> None:
        """Classes (and confidence, probabilities) of buffer rows ``[b0, b1)``.

        The rows of the band are finished: their sums may be overwritten.
        """
        xp = self.xp
        wsum = self.wsum[b0:b1]
        invalid = ~((wsum > 0.0) & valid)
        acc = self.acc[:, b0:b1]
        # 1 / weight sum, where a probability is needed (a class map of a
        # multi-class task needs none: the weight sum is one positive number per
        # pixel, so the argmax of the sums is the argmax of the probabilities)
        inv = None
        if self.binary or conf is not None or prob is not None:
            inv = 1.0 / xp.clip(wsum, 1e-12)
        if self.binary:
            p = acc[0] * inv
            idx = xp.astype(p >= self.threshold, xp.uint8)
            top = xp.maximum(p, 1.0 - p)
        else:
            top, idx = top_class(acc)
            if inv is not None:
                top *= inv
        flat = xp.take(self._codes, xp.reshape(xp.astype(idx, xp.int64), (-1,)), axis=0)
        classes[...] = xp.reshape(flat, idx.shape)
        fill_where_(classes, invalid, self.nodata)
        self._pixels += bincount(classes, 256)
        if conf is not None:
            fill_where_(percent_(top, conf), invalid, PERCENT_NODATA)
        if prob is not None:
            fill_where_(percent_(acc, prob, inv), invalid, PERCENT_NODATA)

    def _to_host(self, row: int, classes: Any, conf: Any, prob: Any) -> Rows:
        """The finished rows as host arrays (asynchronous copies from a GPU)."""
        if not self.gpu:
            return Rows(
                row,
                _to_numpy(classes),
                None if conf is None else _to_numpy(conf),
                None if prob is None else _to_numpy(prob),
            )
        arrays, event = _copy_to_pinned((classes, conf, prob), self.device)
        return Rows(row, arrays[0], arrays[1], arrays[2], ready=event)

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


def _to_numpy(a: Any) -> np.ndarray:
    """A host array of ``a`` (a NumPy array, or a CPU tensor viewed without a copy)."""
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(a.cpu())


def _copy_to_pinned(arrays: tuple[Any, ...], device: str) -> tuple[list[Any], Any]:
    """Asynchronous copies of GPU tensors into page-locked host memory.

    Returns the host arrays (None stays None) and the CUDA event after the copies.
    """
    import torch

    host = [
        None if t is None else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        for t in arrays
    ]
    for dst, src in zip(host, arrays, strict=True):
        if dst is not None and src is not None:
            dst.copy_(src, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return [None if h is None else h.numpy() for h in host], event


__all__ = [
    "ENGINES",
    "ENGINE_ENV",
    "Emit",
    "Rows",
    "StripAccumulator",
    "engine_namespace",
    "pipeline_engine",
    "top_class_numpy",
]
