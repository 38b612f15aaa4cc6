"""Blending overlapping window predictions into finished map rows: one engine.

:class:`StripAccumulator` blends each window's probabilities with its blend weights
(:func:`~alosmap.tiling.tile_weights`), divides by the summed weights once a pixel can
receive no more windows, and turns the pixels into class codes of the model's legend
(argmax, or a threshold for a binary legend: index 1, its positive class, where the
probability reaches it), the confidence and the per-class probability bands (uint8
percent), handed on in rows.

Most pixels never go through weighted sums. A window's **core**
(:func:`~alosmap.tiling.axis_cores`: weight 1, no other window) is finished straight
from its probabilities (``p · 1 / 1`` would be the same bits); in a band's core rows
the **seams** between cores take only the windows between them, summed in a small
buffer and finished as soon as the window on the right came; only the rows outside
every core, where bands meet, are held as weighted sums, full width, in a rolling
band. The sums run in grid order (the first product assigned, the others added),
exactly as if every window were added into one buffer.

Where the grid's edge-aligned last window starts a few rows after the one before
(2000², 12000²), the band before it has no core rows: all its weighted rows would be
held full width until the last band came. Those two bands come **as a pair**
(:attr:`StripAccumulator.order`: the lower band's windows interleaved, each right
after the last upper window that reaches its columns, so every pixel still gets its
windows in grid order), and the pair's rows are finished column by column as the
pair passes: the rows no earlier band wrote live in a ring of a few windows' width,
not the full width.

It is written once over an array namespace (:mod:`alosmap._xp`, the array API
standard): NumPy arrays on the host (any runtime on the CPU: ONNX Runtime's NumPy
outputs, or PyTorch's CPU tensors viewed as NumPy without a copy), torch tensors where
the model runs on a GPU (the sums, the weights, the argmax stay in device memory; only
the finished uint8 rows go back, copied asynchronously into page-locked memory, and
the writer waits for the copy (:meth:`Rows.wait`) instead of the model). For the same
probabilities both give bit-identical maps: every operation is one IEEE-rounded step
on either library.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from alosmap._xp import (
    add_product_,
    chunk_rows,
    fill_where_,
    is_numpy,
    leading,
    namespace,
    percent_,
    select_,
    set_product_,
    top_class,
    top_class_numpy,
)
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile, axis_cores, axis_starts, tile_weights, window_support

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

    A window's **core** (:func:`~alosmap.tiling.axis_cores`: where its weight is 1
    and no other window's is > 0; about half of its pixels at the default overlap)
    is finished straight from its probabilities when it arrives, into the band of
    finished rows: blended, those pixels would be ``p · 1 / 1``, the same bits. Only
    the rest, where windows meet, goes through the weighted sums.

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
        starts: the window starts ``(rows, columns)`` that will arrive (a part's
            grid, :class:`~alosmap.tiling.GridPart`); default: the whole
            ``height × width`` raster's grid (:func:`~alosmap.tiling.axis_starts`).
            A window elsewhere is refused.
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
        starts: tuple[Sequence[int], Sequence[int]] | None = None,
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
        #: ``(upper, lower)``: the grid's last two band rows when they come as a
        #: pair (see the module), else None; :attr:`order` is the windows' order
        self.pair: tuple[int, int] | None = None
        self.base = 0  # scene row of buffer row 0 (of the finished rows' band)
        # what the band holds (see add): rows above this scene row were written by
        # earlier bands; in the current band (its scene row), columns left of
        # _col_end were written by its earlier windows; the rest is stale
        self._rows_end = 0
        self._band_rows_end = 0
        self._band_row = -1
        self._col_end = 0
        self.valid: dict[int, Any] = {}  # band start -> validity (None: none valid)
        self._all_valid: set[int] = set()  # band starts valid everywhere (CPU)
        self.want_confidence = want_confidence
        self.want_probabilities = want_probabilities
        task = spec.legend
        self.nodata = task.nodata
        self.binary = task.binary
        # a binary task's spec carries its threshold (the Task default unless set)
        self.threshold = spec.threshold if spec.threshold is not None else 0.5
        codes = np.array([c.code for c in spec.classes], dtype=np.uint8)
        self._codes = self.asarray(codes)
        self._host_codes = codes
        self._weights: dict[tuple[bool, bool, bool, bool], Any] = {}  # w, box
        self._init_cores(starts)
        self._init_pair()
        self._init_sums()
        self.out = _Finished.empty(self, self.out_rows)
        # the host's product of a window and its weights (no temporary per window)
        self._scratch = (
            np.empty((self.k, tile, tile), dtype=np.float32) if self.host else None
        )

    def _init_cores(self, starts: tuple[Sequence[int], Sequence[int]] | None) -> None:
        """Each window start's core, and which rows and columns are some core's."""
        if starts is None:
            starts = (
                axis_starts(self.height, self.tile, self.overlap),
                axis_starts(self.width, self.tile, self.overlap),
            )
        self.starts = (sorted(starts[0]), sorted(starts[1]))
        self._row_core = axis_cores(starts[0], self.height, self.tile, self.overlap)
        self._col_core = axis_cores(starts[1], self.width, self.tile, self.overlap)
        #: the window start row whose core holds each row (-1: none)
        self._core_owner = np.full(self.height, -1, dtype=np.int64)
        for s, (a, b) in self._row_core.items():
            self._core_owner[s + a : s + b] = s
        self._core_rows = self._core_owner >= 0
        #: window start row → the start columns of the windows that came
        self._came: dict[int, set[int]] = {}
        self._seams = _seams(self.starts[1], self._col_core, self.width)
        #: the current band's next seam to finish, and the seam whose sums a window
        #: started (its index and sums) (see _add_seams)
        self._seam_next = 0
        self._seam_open: tuple[int, Any, Any] | None = None

    def _init_pair(self) -> None:
        """Whether the grid's last two bands come as a pair (see the module), and how.

        They do where the upper one has no core rows (every band before it has),
        some of its rows no earlier band wrote, and a ring of the columns the pair
        keeps open is narrower than the scene. Sets :attr:`pair`, :attr:`order`'s
        tail and the ring's plan.
        """
        rows, cols = self.starts
        self.out_rows = self.rows
        self.pair_order: list[tuple[int, int]] = []
        self._pair_pos: dict[tuple[int, int], int] = {}
        self._saved: dict[int, tuple[int, int, int, Any]] = {}
        cores = self._row_core
        if len(rows) < 2 or any(cores[r][0] >= cores[r][1] for r in rows[:-2]):
            return
        upper, lower = rows[-2], rows[-1]
        a, b = self._row_core[upper]
        if a < b:
            return
        th, tw = self.rows, min(self.tile, self.width)
        # rows below every earlier band's windows: no band before the pair wrote them
        ends = [
            window_support(r, th, self.height, self.tile, self.overlap)[1] for r in rows
        ]
        y = max([upper, *ends[:-2]])
        held = ~self._core_rows
        if not held[y:].any():
            return
        order = _pair_order(upper, lower, cols, tw)
        # after a window, the columns left of every window still to come are final
        front = [*itertools.accumulate([c for _, c in order[:0:-1]], min)][::-1]
        front.append(self.width)
        # the ring: the widest span of columns open (not final, some window's) at once
        ring = max(
            c + tw - f for (_, c), f in zip(order, [0, *front[:-1]], strict=True)
        )
        if ring >= self.width:
            return
        self.pair = (upper, lower)
        self.pair_order = order
        self._pair_pos = {w: p for p, w in enumerate(order)}
        self._pair_front = front
        self._pair_last = -1  # the position of the last pair window that came
        self._front = 0  # the pair's rows are finished left of this column
        self._ring_y, self._ring_cols = y, ring
        self._upper_end = ends[-2]
        self.out_rows = max(self.rows, min(self.height, lower + th) - upper)

    @property
    def order(self) -> list[tuple[int, int]]:
        """The windows ``(row, col)`` in the order :meth:`add` takes them.

        Grid order (row band by row band), the last two bands interleaved where
        they come as a pair (:attr:`pair`). Windows without data may be left out;
        a window after one that follows it is refused.
        """
        rows, cols = self.starts
        head = rows[:-2] if self.pair is not None else rows
        return [(r, c) for r in head for c in cols] + self.pair_order

    def _init_sums(self) -> None:
        """The weighted sums' band: only the rows outside every core.

        Core rows never go through the sums (cores and seams, :meth:`add`): the
        band holds the other rows only, side by side (64 rows of an inner band's
        256 at the default overlap; the band is sized by the grid's widest case,
        all of a band's weighted rows where its windows have no core rows).
        ``_srow[y]`` is the place of scene row ``y`` among the rows held (their
        count before ``y``).
        """
        xp, dev = self.xp, self.device
        held = ~self._core_rows
        self._srow = np.concatenate([[0], np.cumsum(held)]).astype(np.int64)
        starts = self.starts[0]
        th = self.rows
        srow = self._srow
        spans = [(s, min(s + th, self.height)) for s in starts]
        if self.pair is not None:  # the rows from _ring_y on live in the ring
            y = self._ring_y
            spans = [(s, min(e, y)) for s, e in spans[:-2]] + [(self.pair[0], y)]
            n = int(srow[self.height] - srow[self._ring_y])
            self._ring_s0 = int(srow[self._ring_y])
            self.racc = xp.zeros(
                (self.k, n, self._ring_cols), dtype=xp.float32, device=dev
            )
            self.rwsum = xp.zeros((n, self._ring_cols), dtype=xp.float32, device=dev)
        n = max(int(srow[b] - srow[a]) for a, b in spans)
        self.srows = max(n, 1)
        self.acc = xp.zeros(
            (self.k, self.srows, self.width), dtype=xp.float32, device=dev
        )
        self.wsum = xp.zeros((self.srows, self.width), dtype=xp.float32, device=dev)
        self.sbase = 0  # the held row of self.base

    def _srows(self, a: int, b: int) -> slice:
        """Band rows ``[a, b)`` (all held rows) as a slice of the sums' band."""
        lo = int(self._srow[self.base + a]) - self.sbase
        return slice(lo, lo + b - a)

    def _sum_blocks(
        self, a: int, b: int, c: int, d: int
    ) -> list[tuple[tuple[int, int, int, int], Any, Any]]:
        """The sums and weight sums of band rows ``[a, b)`` (held), columns ``[c, d)``.

        ``(box, sums, weight sums)`` per block of storage: the band's rows, and the
        pair's ring (:meth:`_init_pair`), where a column ``x`` lives at ``x`` modulo
        the ring's width (a block that wraps is two).
        """
        y = b if self.pair is None else min(b, max(a, self._ring_y - self.base))
        blocks = []
        if a < y:
            rows = self._srows(a, y)
            blocks.append(((a, y, c, d), self.acc[:, rows, c:d], self.wsum[rows, c:d]))
        if y < b:
            r0 = int(self._srow[self.base + y]) - self._ring_s0
            rows, n = slice(r0, r0 + b - y), self._ring_cols
            x = c
            while x < d:  # up to the ring's end, then on from its start
                x0 = x % n
                e = min(d, x + n - x0)
                ring = slice(x0, x0 + e - x)
                blocks.append(
                    ((y, b, x, e), self.racc[:, rows, ring], self.rwsum[rows, ring])
                )
                x = e
        return blocks

    def asarray(self, a: Any) -> Any:
        """``a`` (a NumPy array or a tensor) as an array of this engine's device.

        On the host a CPU tensor is viewed, not copied.
        """
        if self.host:
            return np.asarray(a)
        return self.xp.asarray(a, device=self.device)

    def open_band(self, row: int, valid: Any) -> None:
        """Register the validity of the band starting at ``row`` (None = none valid)."""
        self.valid[row] = None if valid is None else self.asarray(valid)
        # on the CPU, a band valid everywhere skips its masks (a GPU would have to
        # synchronise to know)
        if not self.gpu and valid is not None and bool(self.valid[row].all()):
            self._all_valid.add(row)

    def _mask(self, row: int) -> Any:
        """The validity the band at ``row`` applies to its cores and seams.

        None where there is none to apply: the band is valid everywhere (CPU).
        """
        return None if row in self._all_valid else self.valid.get(row)

    def add(self, t: Tile, probs: Any) -> None:
        """Blend one window's probabilities ``[K, tile, tile]`` (cropped to ``t``).

        ``probs`` is an array of this engine (:meth:`asarray`) on the band's device.

        Raises:
            ValueError: ``t`` is not a window of the grid the accumulator was made
                for, or it comes after a window that follows it (:attr:`order`).
        """
        if t.row not in self._row_core or t.col not in self._col_core:
            raise ValueError(f"window {t} is not one of the accumulator's grid")
        pos = self._pair_pos.get((t.row, t.col))
        if pos is not None and pos <= self._pair_last:
            raise ValueError(f"window {t} came after a window that follows it")
        if t.row > self.base:
            self.flush(t.row)
        if t.row != self._band_row:
            self._enter_band(t.row)
        if pos:  # the windows before it came or never will: their columns are final
            self._finish_columns(self._pair_front[pos - 1])
        self._came.setdefault(t.row, set()).add(t.col)
        w, (i0, i1, j0, j1) = self._tile_weights(t)
        (a, b), (c, d) = self._row_core[t.row], self._col_core[t.col]
        if a < b:
            if c < d:
                self._finish_core(t, probs, (a, b, c, d))
            # above and below the band's core rows: the sums; in them, left and
            # right of the window's core: seams, finished as they complete
            rects = [(i0, a, j0, j1), (b, i1, j0, j1)]
            self._add_seams(t, probs, w, (i0, j0, j1), (a, b, c, d))
        else:
            rects = [(i0, i1, j0, j1)]
        for rect in rects:
            self._blend_rect(t, probs, w, (i0, j0), rect)
        self._col_end = max(self._col_end, t.col + j1)
        self._band_rows_end = max(self._band_rows_end, t.row + i1)
        if pos is not None:
            self._pair_last = pos
            self._finish_columns(self._pair_front[pos])

    def _enter_band(self, row: int) -> None:
        """Make ``row`` the current band (flush closed the last one's seams).

        A band of the pair keeps its state (the columns written, its seams) while
        the other one's windows come.
        """
        if self.pair is not None and self._band_row in self.pair:
            self._saved[self._band_row] = (
                self._rows_end,
                self._col_end,
                self._seam_next,
                self._seam_open,
            )
        state = self._saved.pop(row, None)
        if state is None:
            rows_end = self._band_rows_end
            if self.pair is not None and row == self.pair[1]:
                # the upper band wrote its rows (where it had windows; elsewhere
                # the pixels are no data), whichever of the pair came first
                rows_end = max(rows_end, self._upper_end)
            state = (rows_end, 0, 0, None)
        self._rows_end, self._col_end, self._seam_next, self._seam_open = state
        self._band_row = row

    def _blend_rect(
        self,
        t: Tile,
        probs: Any,
        w: Any,
        w0: tuple[int, int],
        rect: tuple[int, int, int, int],
    ) -> None:
        """Blend the window's rows ``[i0, i1)``, columns ``[j0, j1)`` (``rect``).

        ``w`` holds the window's weights from its row and column ``w0`` on.
        """
        i0, i1, j0, j1 = rect
        if i0 >= i1 or j0 >= j1:
            return
        # rows earlier bands wrote and columns earlier windows of this band wrote
        # get the product added; the rest, which no window wrote since the rows
        # were finished, gets it assigned (0 + p·w is p·w, bit for bit): no zeroing
        # of finished rows, no read of rows not yet written
        r0, c0 = t.row - self.base + i0, t.col + j0
        r1, c1 = r0 + i1 - i0, c0 + j1 - j0
        fr = min(max(r0, self._rows_end - self.base), r1)
        fc = min(max(c0, self._col_end), c1)
        at = (t.row - self.base, t.col, w0[0], w0[1])
        for (ra, rb), (ca, cb), assign in (
            ((r0, fr), (c0, c1), False),
            ((fr, r1), (c0, fc), False),
            ((fr, r1), (fc, c1), True),
        ):
            if ra < rb and ca < cb:
                self._blend(probs, w, (ra, rb, ca, cb), at, assign)

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
        for (a, b, c, d), acc, wsum in self._sum_blocks(*box):
            ti, tj = a - where[0], c - where[1]  # the block in the window
            wi, wj = ti - where[2], tj - where[3]
            p = probs[:, ti : ti + b - a, tj : tj + d - c]
            wb = w[wi : wi + b - a, wj : wj + d - c]
            scratch = None
            if self._scratch is not None:
                scratch = leading(self._scratch, self.k, b - a, d - c)
            if assign:
                set_product_(acc, p, wb)
                wsum[...] = wb
            else:
                add_product_(acc, p, wb, scratch)
                wsum += wb

    def _add_seams(
        self,
        t: Tile,
        probs: Any,
        w: Any,
        box: tuple[int, int, int],
        core: tuple[int, int, int, int],
    ) -> None:
        """The window's parts outside its core, in the band's core rows.

        Seam ``j`` (:func:`_seams`: the columns between the ``j``-th core of the
        band and the next) takes, in the band's core rows, only the windows
        between those cores: its sums live in a small buffer, not in the band.
        A window with a core adds its left part to the seam before its core and
        finishes that seam, then starts the next with its right part; a window
        without a core (more than half a tile of overlap) adds its whole width to
        the seam it lies in. The sums are the band's, bit for bit: the first
        product assigned, the others added in grid order (``0 + x`` is ``x``).

        ``box``: the window's first weighted row ``i0`` and its weighted columns
        ``[j0, j1)``; ``core``: its core rows and columns (``c == d``: none).
        """
        i0, j0, j1 = box
        a, b, c, d = core
        seams, index = self._seams
        j = index[t.col]
        self._close_seams(j)  # seams whose last windows never came
        sums = self._seam_sums(j, b - a)
        x0 = t.col + j0 - seams[j][0]  # the window's weighted columns in the seam
        left = c if c < d else j1
        rows, wrows = slice(a, b), slice(a - i0, b - i0)
        add_product_(
            sums[0][:, :, x0 : x0 + left - j0],
            probs[:, rows, j0:left],
            w[wrows, : left - j0],
        )
        sums[1][:, x0 : x0 + left - j0] += w[wrows, : left - j0]
        if c >= d:  # no core: the seam goes on
            self._seam_open = (j, *sums)
            return
        self._finish_seam(j, sums)
        nxt = self._seam_sums(j + 1, b - a)
        # its right part: from the core's end (the next seam's start) on
        set_product_(nxt[0][:, :, : j1 - d], probs[:, rows, d:j1], w[wrows, d - j0 :])
        nxt[1][:, : j1 - d] = w[wrows, d - j0 :]
        self._seam_open = (j + 1, *nxt)

    def _seam_sums(self, j: int, rows: int) -> tuple[Any, Any]:
        """Seam ``j``'s sums and weight sums: those a window started, else zeros."""
        if self._seam_open is not None and self._seam_open[0] == j:
            return self._seam_open[1], self._seam_open[2]
        xp, dev = self.xp, self.device
        lo, hi = self._seams[0][j]
        return (
            xp.zeros((self.k, rows, hi - lo), dtype=xp.float32, device=dev),
            xp.zeros((rows, hi - lo), dtype=xp.float32, device=dev),
        )

    def _finish_seam(self, j: int, sums: tuple[Any, Any]) -> None:
        """Finish seam ``j`` of the current band's core rows from its sums."""
        lo, hi = self._seams[0][j]
        a, b = self._row_core[self._band_row]
        r0 = self._band_row - self.base
        valid = self._mask(self._band_row)
        if hi > lo:
            acc, wsum = sums
            ok = wsum > 0.0
            if valid is not None:
                ok &= valid[a:b, lo:hi]
            out = self.out.view(r0 + a, r0 + b, lo, hi)
            self._finish(acc, wsum, ~ok, out)
        self._seam_next = j + 1
        self._seam_open = None

    def _close_seams(self, upto: int) -> None:
        """Finish the current band's seams before seam ``upto`` not yet finished.

        Their windows on the right never came (no data, or the frame ends).
        """
        if self._band_row < 0:
            return
        a, b = self._row_core.get(self._band_row, (0, 0))
        if a >= b:
            return
        for j in range(self._seam_next, upto):
            self._finish_seam(j, self._seam_sums(j, b - a))

    def _finish_core(
        self, t: Tile, probs: Any, core: tuple[int, int, int, int]
    ) -> None:
        """Finish the window's core (its rows ``[a, b)``, columns ``[c, d)``)."""
        a, b, c, d = core
        valid = self._mask(t.row)
        r0, c0 = t.row - self.base, t.col
        out = self.out.view(r0 + a, r0 + b, c0 + c, c0 + d)
        invalid = None if valid is None else ~valid[a:b, c0 + c : c0 + d]
        # the window's whole rows (contiguous), the core's columns kept
        p = probs[:, a:b, : t.width]
        self._finish(p, None, invalid, out, self._scratch, slice(c, d))

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
        """Finish rows ``[base, upto)`` and hand them to ``emit``.

        While the pair (:attr:`pair`) comes, its rows are not final: a flush up to
        its lower band does nothing; one past it finishes the pair.
        """
        if self.pair is not None:
            upper, lower = self.pair
            if self.base >= upper and upto <= lower:
                return
            if upto > lower:
                self._finish_columns(self.width)
                if self._band_row == upper and lower in self._saved:
                    self._enter_band(lower)  # its seams close below
        self._close_seams(len(self._seams[0]))
        starts = sorted(r for r in self.valid if r < upto)
        for i, band_row in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else upto
            self._emit_rows(band_row, end, self.valid.pop(band_row))
            self._all_valid.discard(band_row)
        n = upto - self.base
        if n <= 0:
            return
        # move the still-open rows up, in runs of at most n rows from the top: no
        # run overlaps its source, and no source is overwritten before it is read
        # (the last band of a scene can move up by a few rows only; a temporary
        # copy of the rows would cost a band's worth of memory)
        for r, m in row_moves(self.out_rows, n):
            self.out.move(r + n, r, m)
        sn = int(self._srow[upto]) - self.sbase
        for r, m in row_moves(self.srows, sn):
            for plane in self.acc:  # per plane: NumPy sees no overlap, no temporary
                plane[r : r + m] = plane[r + sn : r + sn + m]
            self.wsum[r : r + m] = self.wsum[r + sn : r + sn + m]
        # the rows not moved are stale: add() assigns before it adds
        self.base, self.sbase = upto, int(self._srow[upto])

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
        b0 = r0 - self.base
        self._blank_skipped_cores(r0, r1)
        # rows outside every core come from the sums (core rows are finished:
        # cores and seams; the pair's rows column by column, _finish_columns)
        for s, e, in_core in _runs(self._core_rows[r0:r1]):
            if in_core or (self.pair is not None and r0 >= self.pair[0]):
                continue
            step = e - s if self.gpu else chunk_rows(e - s, self.width)
            for q in range(s, e, step):
                qe = min(e, q + step)
                self._finish_sums(b0 + q, b0 + qe, valid_band[q:qe])
        self.emit(self._to_host(r0, self.out.view(b0, b0 + n, 0, self.width)))

    def _blank_skipped_cores(self, r0: int, r1: int) -> None:
        """No data in the cores, in rows ``[r0, r1)``, of windows that never came.

        The pipeline skips windows without data; their cores hold stale values.
        """
        for s, e, owner in _runs(self._core_owner[r0:r1]):
            if owner < 0:
                continue
            came = self._came.get(int(owner), set())
            if not came:  # a band without windows: seams were never finished
                self.out.view(r0 + s - self.base, r0 + e - self.base, 0, None).blank(
                    self.nodata
                )
                continue
            for col, (c, d) in self._col_core.items():
                if c < d and col not in came:
                    box = (r0 + s - self.base, r0 + e - self.base, col + c, col + d)
                    self.out.view(*box).blank(self.nodata)

    def _finish_columns(self, front: int) -> None:
        """Finish the pair's rows (those held) left of column ``front``.

        No window still to come reaches them (:meth:`_init_pair`).
        """
        c, d = self._front, front
        if d <= c:
            return
        self._front = front
        upper, lower = self.pair or (0, 0)
        lo, hi = max(self.base, upper), min(self.height, lower + self.rows)
        for s, e, in_core in _runs(self._core_rows[lo:hi]):
            if in_core:
                continue
            for band, a, b in (
                (upper, lo + s, min(lo + e, lower)),
                (lower, max(lo + s, lower), lo + e),
            ):
                valid = self.valid.get(band)
                if a >= b or valid is None:
                    continue  # no rows, or a band without data (blank rows)
                rows = valid[a - band : b - band, c:d]
                self._finish_sums(a - self.base, b - self.base, rows, (c, d))

    def _finish_sums(
        self, a: int, b: int, valid: Any, cols: tuple[int, int] | None = None
    ) -> None:
        """Finish the band's rows ``[a, b)`` (rows held) from the sums.

        ``valid``: the validity of those rows and columns; ``cols``: the columns
        ``[c, d)`` (None: the whole width).
        """
        c, d = (0, self.width) if cols is None else cols
        for (ra, rb, ca, cb), acc, wsum in self._sum_blocks(a, b, c, d):
            ok = valid[ra - a : rb - a, ca - c : cb - c]
            invalid = ~((wsum > 0.0) & ok)
            self._finish(acc, wsum, invalid, self.out.view(ra, rb, ca, cb))

    def _finish(
        self,
        acc: Any,
        wsum: Any,
        invalid: Any,
        out: _Finished,
        scratch: Any = None,
        cols: slice | None = None,
    ) -> None:
        """Classes (and confidence, probabilities) of the sums ``acc`` into ``out``.

        ``wsum``: the weight sums (None: all 1, a core's own probabilities, which
        are then not modified: ``scratch`` takes what the NumPy kernels overwrite).
        ``invalid``: where no data goes (None: nowhere). ``cols``: the columns of
        ``acc`` that ``out`` holds (None: all); the classes are found for every
        column (contiguous rows are many times faster on NumPy than a narrow
        block), the rest only for these.
        """
        xp = self.xp
        # 1 / weight sum, where a probability is needed (a class map of a
        # multi-class task needs none: the weight sum is one positive number per
        # pixel, so the argmax of the sums is the argmax of the probabilities)
        inv = None
        if wsum is not None and (
            self.binary or out.conf is not None or out.prob is not None
        ):
            inv = 1.0 / xp.clip(wsum, min=1e-12)
        cols = slice(None) if cols is None else cols
        if self.binary:
            p = acc[0][:, cols] if inv is None else acc[0] * inv
            codes = self._host_codes
            select_(out.classes, p >= self.threshold, int(codes[0]), int(codes[1]))
            if out.conf is not None:
                top = xp.maximum(p, 1.0 - p)
        else:
            top, code = top_class(acc, self._codes)
            top = top[:, cols]
            out.classes[...] = code[:, cols]
            if inv is not None:
                top *= inv
        if invalid is not None:
            fill_where_(out.classes, invalid, self.nodata)
        if out.conf is not None:
            percent_(top, out.conf)
            if invalid is not None:
                fill_where_(out.conf, invalid, PERCENT_NODATA)
        if out.prob is not None:
            percent_(acc[:, :, cols], out.prob, inv, scratch if wsum is None else None)
            if invalid is not None:
                fill_where_(out.prob, invalid, PERCENT_NODATA)

    def _to_host(self, row: int, out: _Finished) -> Rows:
        """Copies of the finished rows ``out`` as host arrays (from a GPU: async)."""
        arrays = (out.classes, out.conf, out.prob)
        if not self.gpu:
            c, f, p = (None if a is None else _to_numpy(a).copy() for a in arrays)
            assert c is not None
            return Rows(row, c, f, p)
        host, event = _copy_to_pinned(arrays, self.device)
        return Rows(row, host[0], host[1], host[2], ready=event)

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


@dataclass
class _Finished:
    """Finished uint8 rows of the band, or a block of them (views).

    Classes, confidence and probabilities (None: not wanted).
    """

    classes: Any
    conf: Any = None
    prob: Any = None

    @classmethod
    def empty(cls, acc: StripAccumulator, rows: int) -> _Finished:
        """``rows`` full-width rows on ``acc``'s engine and device."""
        xp, dev, shape = acc.xp, acc.device, (rows, acc.width)
        return cls(
            xp.empty(shape, dtype=xp.uint8, device=dev),
            xp.empty(shape, dtype=xp.uint8, device=dev)
            if acc.want_confidence
            else None,
            xp.empty((acc.k, *shape), dtype=xp.uint8, device=dev)
            if acc.want_probabilities
            else None,
        )

    def view(self, a: int, b: int, c: int, d: int | None) -> _Finished:
        """Rows ``[a, b)``, columns ``[c, d)`` (``d`` None: to the end)."""
        return _Finished(
            self.classes[a:b, c:d],
            None if self.conf is None else self.conf[a:b, c:d],
            None if self.prob is None else self.prob[:, a:b, c:d],
        )

    def move(self, src: int, dst: int, n: int) -> None:
        """Copy rows ``[src, src + n)`` to ``[dst, dst + n)`` (not overlapping)."""
        self.classes[dst : dst + n] = self.classes[src : src + n]
        if self.conf is not None:
            self.conf[dst : dst + n] = self.conf[src : src + n]
        if self.prob is not None:
            self.prob[:, dst : dst + n] = self.prob[:, src : src + n]

    def blank(self, nodata: int) -> None:
        """No data everywhere (``nodata`` classes, no-data percentages)."""
        self.classes[...] = nodata
        if self.conf is not None:
            self.conf[...] = PERCENT_NODATA
        if self.prob is not None:
            self.prob[...] = PERCENT_NODATA


def _seams(
    cols: list[int], cores: dict[int, tuple[int, int]], width: int
) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """The columns between the window cores of a band, and each window's seam.

    With the cores ``k = 0 .. n - 1`` of the windows that have one, seam ``j`` is
    ``[end of core j - 1, start of core j)`` (from 0 for the first, to ``width``
    for the last): ``n + 1`` seams. A window with a core maps to the seam on its
    left; one without (more than half a tile of overlap) to the seam it lies in.
    """
    bounds, index = [0], {}
    for c in cols:
        a, b = cores[c]
        index[c] = len(bounds) // 2
        if a < b:
            bounds += [c + a, c + b]
    bounds.append(width)
    return list(itertools.pairwise(bounds))[::2], index


def _pair_order(
    upper: int, lower: int, cols: Sequence[int], width: int
) -> list[tuple[int, int]]:
    """The windows ``(row, col)`` of two bands, interleaved as a pair.

    Each lower window comes right after the last upper window that reaches its
    columns (``width``: the windows' width): a pixel then still gets every upper
    window before any lower one, each band in column order, as in grid order.
    """
    order = []
    pending = list(cols)  # the lower windows still to place
    for i, c in enumerate(cols):
        order.append((upper, c))
        nxt = cols[i + 1] if i + 1 < len(cols) else None
        while pending and (nxt is None or nxt >= pending[0] + width):
            order.append((lower, pending.pop(0)))
    return order


def row_moves(rows: int, n: int) -> list[tuple[int, int]]:
    """Runs ``(to, count)`` that move rows ``[n, rows)`` of a band up by ``n``.

    At most ``n`` rows each, from the top: no run overlaps its source.
    """
    if n <= 0:
        return []
    keep = max(rows - n, 0)
    return [(r, min(n, keep - r)) for r in range(0, keep, n)]


def _runs(values: np.ndarray) -> list[tuple[int, int, Any]]:
    """Runs ``(start, end, value)`` of equal values of a 1-D array."""
    n = len(values)
    if n == 0:
        return []
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    bounds = [0, *cuts.tolist(), n]
    return [(s, e, values[s]) for s, e in itertools.pairwise(bounds)]


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
    "row_moves",
    "top_class_numpy",
]
