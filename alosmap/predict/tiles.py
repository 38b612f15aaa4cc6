"""A scene's model-input tiles, read exactly as ``predict`` reads them.

The pipeline, export parity checks and the benchmark all feed a model the same way:
full-width strips of ``tile`` rows (:meth:`~alosmap.io.scene.Scene.read_raw`: the
file's values and their validity), converted to σ0 dB
(:func:`~alosmap.radiometry.to_db`) and normalised with the model's radiometry
(:func:`~alosmap.radiometry.normalize`), cut into zero-padded ``tile × tile`` windows
on the edge-aligned grid (:func:`~alosmap.tiling.cut_tiles`), windows without valid
pixels skipped.

The pipeline splits this in two (:class:`StripSource`): the reader thread reads a
strip and finds its windows with data (host work: GDAL decodes with the GIL
released); :meth:`StripSource.to_device` then converts and normalises it where the
model runs. On the CPU the conversion runs in NumPy in the reader thread (faster
there than torch's single-threaded kernels) and the device step is free; on a GPU
the raw values travel (a quarter of the bytes of float32 for DN), through pinned
memory, and the radiometry runs on the GPU. The accumulator's pair of strips (the
grid's last two, where the last window starts a few rows after the one before) is
read and converted as one block of rows, the lower strip a view of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from alosmap._xp import is_numpy
from alosmap.predict.blend import engine_namespace, row_moves
from alosmap.predict.options import InferenceOptions
from alosmap.predict.stages import StageClock
from alosmap.radiometry import Radiometry, model_input
from alosmap.spec import ModelSpec
from alosmap.tiling import GridPart, Tile, axis_starts, cut_tiles

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.io.scene import Scene


@dataclass
class StripTiles:
    """The windows of one strip (the windows whose top row is ``row``).

    Attributes:
        row: raster row of the strip.
        valid: validity of the strip's pixels; None when none is valid.
        tiles: ``(Tile, [tile, tile] float32)`` of the windows with valid pixels.
        skipped: windows of the strip without a valid pixel.
    """

    row: int
    valid: np.ndarray | None
    tiles: list[tuple[Tile, np.ndarray]]
    skipped: int


def host_input(
    raw: np.ndarray, valid: np.ndarray, radiometry: Radiometry, units: str, cf: float
) -> np.ndarray:
    """Model input of raw scene values on the host: σ0 dB, normalised, 0 where invalid.

    Args:
        raw: the file's values (:meth:`~alosmap.io.scene.Scene.read_raw`).
        valid: their validity.
        radiometry: the model's radiometry (clip range, mean and std).
        units: the scene's units (``dn``, ``db`` or ``linear``).
        cf: the scene's calibration factor (dB).
    """
    return model_input(raw, valid, radiometry, units, cf)


def window_columns(
    valid: np.ndarray, cols: Sequence[int], tile: int
) -> tuple[list[int], int]:
    """The window start columns of a strip that hold valid pixels, and how many not."""
    tw = min(tile, valid.shape[1])
    keep = [c for c in cols if valid[:, c : c + tw].any()]
    return keep, len(cols) - len(keep)


def read_strip_tiles(
    scene: Scene, radiometry: Radiometry, row: int, tile: int, cols: Sequence[int]
) -> StripTiles:
    """Read, normalise and cut the strip of windows starting at ``row``.

    Args:
        scene: the opened scene.
        radiometry: the model's radiometry (clip range, mean and std).
        row: first row of the strip (a start of :func:`~alosmap.tiling.axis_starts`).
        tile: the model's tile size.
        cols: window start columns.
    """
    raw, valid = scene.read_raw(row, min(tile, scene.info.height))
    if not valid.any():
        return StripTiles(row, None, [], len(cols))
    x = host_input(raw, valid, radiometry, scene.units, scene.cf)
    tiles, skipped = cut_tiles(x, valid, row, cols, tile)
    return StripTiles(row, valid, tiles, skipped)


@dataclass
class HostStrip:
    """One strip as the reader thread hands it over (host memory).

    Attributes:
        row: raster row of the strip.
        values: the model input (normalised float32 NumPy) on the host engine,
            the file's values on the torch engine (a tensor, pinned for a GPU);
            None when no pixel is valid.
        valid: validity of the strip's pixels (a tensor on the torch engine);
            None when none is valid.
        cols: start columns of the windows with valid pixels.
        skipped: windows of the strip without a valid pixel.
        seconds: ``{stage: seconds}`` the reader spent (``read``, ``radiometry``).
        cpu_seconds: the same in the reader thread's CPU time.
    """

    row: int
    values: Any
    valid: Any
    cols: list[int]
    skipped: int
    seconds: dict[str, float]
    cpu_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class DeviceStrip:
    """A strip's model input and validity on the model's device.

    Attributes:
        row: raster row of the strip.
        x: normalised input ``[rows, width]`` float32 (0 where invalid).
        valid: validity ``[rows, width]`` bool.
        cols: start columns of the windows with valid pixels.
    """

    row: int
    x: Any
    valid: Any
    cols: list[int]


class StripSource:
    """The pipeline's strips: read on the host, converted on the model's device.

    Args:
        scene: the opened scene.
        radiometry: the model's radiometry.
        tile: the model's tile size.
        overlap: pixels shared by neighbouring windows.
        device: the model's device (``cpu``, ``cuda``, ``cuda:N``).
        part: the windows to read (a part of a larger scene's grid, in the
            coordinates of ``scene``, its frame: :func:`~alosmap.tiling.grid_part`);
            None: the whole grid of ``scene``.
        engine: the array namespace the strips go to (``numpy``: the reader
            thread converts them on the host; ``torch``: raw values go to
            ``device`` and are converted there); default
            :func:`~alosmap.predict.blend.engine_namespace`'s for ``device``.
        pair: the rows of two strips the accumulator takes as a pair
            (:attr:`~alosmap.predict.blend.StripAccumulator.pair`): read and
            converted together, the lower strip a view of the rows they share.
    """

    def __init__(
        self,
        scene: Scene,
        radiometry: Radiometry,
        tile: int,
        overlap: int,
        device: str = "cpu",
        part: GridPart | None = None,
        engine: str | None = None,
        pair: tuple[int, int] | None = None,
    ) -> None:
        self.scene = scene
        self.radiometry = radiometry
        self.tile = tile
        self.device = device
        self.gpu = device.startswith("cuda")
        self.host = is_numpy(engine_namespace(device, engine))
        if part is None:
            self.rows = axis_starts(scene.info.height, tile, overlap)
            self.cols = axis_starts(scene.info.width, tile, overlap)
        else:
            self.rows, self.cols = part.rows, part.cols
        self._rows = RowBuffer(scene)
        self.pair = pair
        self._stash: dict[int, HostStrip] = {}  # the pair's lower strip, read

    def __iter__(self) -> Iterator[HostStrip]:
        """Every strip, top to bottom (the reader thread's work)."""
        for row in self.rows:
            yield self.read(row)

    def read(self, row: int) -> HostStrip:
        """Read the strip starting at ``row`` and find its windows with data.

        Strips are read in increasing row order (the reader thread's). The upper
        strip of the pair (``pair``) reads the lower one's rows too: the lower
        strip is then views of the same arrays (no second copy of the rows they
        share), its time counted with the upper's.
        """
        stashed = self._stash.pop(row, None)
        if stashed is not None:
            return stashed
        sc = self.scene
        t0, c0 = time.perf_counter(), time.thread_time()
        n = min(self.tile, sc.info.height)
        starts = [row]
        if self.pair is not None and row == self.pair[0]:
            starts.append(self.pair[1])
        raw, valid = self._rows.get(row, starts[-1] + n)
        valid = valid.copy()  # the band keeps it; not the reader's whole buffer
        found = [
            window_columns(valid[r - row : r - row + n], self.cols, self.tile)
            for r in starts
        ]
        t1, c1 = time.perf_counter(), time.thread_time()
        seconds, cpu = {"read": t1 - t0}, {"read": c1 - c0}
        values = mask = None
        if any(cols for cols, _ in found):
            if self.host:
                values = host_input(raw, valid, self.radiometry, sc.units, sc.cf)
                mask = valid
            else:  # raw values, converted on the device
                values, mask = _pinned(raw, self.gpu), _pinned(valid, self.gpu)
            seconds["radiometry"] = time.perf_counter() - t1
            cpu["radiometry"] = time.thread_time() - c1
        strips = []
        for r, (cols, skipped) in zip(starts, found, strict=True):
            rows = slice(r - row, r - row + n)
            if cols and values is not None and mask is not None:
                strips.append(
                    HostStrip(r, values[rows], mask[rows], cols, skipped, seconds, cpu)
                )
            else:
                strips.append(HostStrip(r, None, None, [], skipped, seconds, cpu))
            seconds, cpu = {}, {}  # the pair's time goes with its upper strip
        for strip in strips[1:]:
            self._stash[strip.row] = strip
        return strips[0]

    def to_device(
        self, strip: HostStrip, clock: StageClock | None = None
    ) -> DeviceStrip:
        """The strip's input on the model's device (a strip with valid pixels).

        On the host engine (NumPy) the reader already did σ0 dB and the
        normalisation: the strip is used as it is. On the torch engine (a GPU, or
        the device path run on the CPU): asynchronous copies from pinned memory
        (``h2d``), then the same :func:`~alosmap.radiometry.model_input` there
        (``radiometry``).
        """
        if self.host:
            return DeviceStrip(strip.row, strip.values, strip.valid, strip.cols)
        import torch

        clock = clock or StageClock()
        with clock.stage("h2d", device=True):
            valid = strip.valid.to(self.device, non_blocking=True)
            raw = strip.values.to(self.device, non_blocking=True)
        with clock.stage("radiometry", device=True):
            if self.scene.info.dtype == "uint16":  # int16 bits: see _pinned
                raw = raw.to(torch.int32).bitwise_and_(0xFFFF)
            sc = self.scene
            x = model_input(raw, valid, self.radiometry, sc.units, sc.cf)
        return DeviceStrip(strip.row, x, valid, strip.cols)


class RowBuffer:
    """A scene's rows read in whole blocks of rows, each row once, kept until passed.

    Strips overlap (by ``overlap`` rows) and rarely align with the file's blocks, so
    reading each strip on its own decodes most blocks two or three times, or relies
    on GDAL's block cache holding a few rows of blocks: that cache grows with the
    scene's width, and at the CLI's 64 MB a 6000-wide tiled scene already missed
    (measured on one core: reading took 0.23 ms per tile instead of 0.05). Here reads
    end at block boundaries and the rows a later strip needs are kept: memory is one
    strip plus one block row of the file's values, in buffers reused from read to
    read (the rows kept move up, the new ones are copied in after them: no new
    arrays per strip, whose allocation and release made the peak memory grow with
    the width).

    Args:
        scene: the opened scene.
    """

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.block, self.offset = scene.block_rows
        self.block = max(1, self.block)
        self.start = 0  # scene row of the buffer's first row
        self.rows = 0  # rows the buffers hold
        self.raw: np.ndarray | None = None
        self.valid: np.ndarray | None = None
        # the values' type in the buffers: the file's (float64 read as float32)
        dtype = np.dtype(scene.info.dtype)
        self.dtype = np.dtype(np.float32) if dtype == np.float64 else dtype
        self._direct = self.dtype == dtype  # read straight into the buffers

    @property
    def end(self) -> int:
        """Scene row after the buffer's last row."""
        return self.start + self.rows

    def get(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Values and validity of rows ``[r0, r1)`` (``r0`` never decreases).

        Views of the buffers: valid until the next call.
        """
        if not self.start <= r0 <= self.end:
            self.start, self.rows = r0, 0
        if r1 > self.end:
            lo = self.end
            # up to a block boundary of the file, so no block is decoded twice
            hi = -(-(r1 + self.offset) // self.block) * self.block - self.offset
            hi = min(max(hi, r1), self.scene.info.height)
            i = r0 - self.start  # rows before r0 are passed for good
            keep = self.rows - i
            need = keep + hi - lo
            raw, valid = self.raw, self.valid
            if raw is None or valid is None or len(raw) < need:
                # room for a strip and a block row of the file
                rows = min(self.scene.info.height, max(need, r1 - r0 + self.block))
                width = self.scene.info.width
                self.raw = np.empty((rows, width), dtype=self.dtype)
                self.valid = np.empty((rows, width), dtype=bool)
                if raw is not None and valid is not None:
                    self.raw[:keep] = raw[i : i + keep]
                    self.valid[:keep] = valid[i : i + keep]
            else:  # the kept rows move up, in place
                for buf in (raw, valid):
                    for r, m in row_moves(i + keep, i):
                        buf[r : r + m] = buf[r + i : r + i + m]
            assert self.raw is not None and self.valid is not None
            into = self.raw[keep:need], self.valid[keep:need]
            if self._direct:
                self.scene.read_raw(lo, hi - lo, out=into)
            else:  # float64 in the file, float32 here
                into[0][...], into[1][...] = self.scene.read_raw(lo, hi - lo)
            self.start, self.rows = r0, need
        assert self.raw is not None and self.valid is not None
        i, j = r0 - self.start, r1 - self.start
        return self.raw[i:j], self.valid[i:j]


def _pinned(a: np.ndarray, pin: bool = True) -> Any:
    """``a`` as a torch tensor, page-locked (``pin``) for an asynchronous copy.

    uint16 (ALOS-2 DN) travels as its int16 bits (:meth:`StripSource.to_device`
    undoes it): torch's unsigned 16-bit type has few GPU kernels.
    """
    import torch

    src = a.view(np.int16) if a.dtype == np.uint16 else a
    t = torch.empty(src.shape, dtype=torch.from_numpy(src[:0]).dtype, pin_memory=pin)
    t.numpy()[...] = src
    return t


def iter_strip_tiles(
    scene: Scene, radiometry: Radiometry, tile: int, overlap: int
) -> Iterator[StripTiles]:
    """Every strip of the scene's window grid, top to bottom.

    Args:
        scene: the opened scene.
        radiometry: the model's radiometry.
        tile: the model's tile size.
        overlap: pixels shared by neighbouring windows (``0 <= overlap < tile``).
    """
    info = scene.info
    cols = axis_starts(info.width, tile, overlap)
    for row in axis_starts(info.height, tile, overlap):
        yield read_strip_tiles(scene, radiometry, row, tile, cols)


def iter_scene_tiles(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    overlap: int | None = None,
    band: int | None = None,
    input_units: str = "auto",
) -> Iterator[tuple[Tile, np.ndarray]]:
    """The normalised model tiles of a scene file, in the pipeline's order.

    Args:
        path: the scene (any raster ``predict`` accepts).
        spec: the model spec (tile size, radiometry).
        overlap: pixels shared by neighbouring windows (``0 <= overlap < tile``);
            default ``predict``'s, a quarter of the model's tile.
        band: 1-based band of a multi-band scene.
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.

    Yields:
        ``(Tile, array)``: the window and its ``[tile, tile]`` float32 model input
        (0 at no data and in the padding); windows without valid pixels are left
        out.

    Raises:
        InputRasterError: the scene cannot be read.
    """
    from alosmap.io.scene import Scene

    opts = InferenceOptions(overlap=overlap).for_model(spec, os.fspath(path))
    with Scene(path, spec.radiometry, band=band, input_units=input_units) as scene:
        for strip in iter_strip_tiles(scene, spec.radiometry, opts.tile, opts.overlap):
            yield from strip.tiles


__all__ = [
    "DeviceStrip",
    "HostStrip",
    "RowBuffer",
    "StripSource",
    "StripTiles",
    "host_input",
    "iter_scene_tiles",
    "iter_strip_tiles",
    "read_strip_tiles",
    "window_columns",
]
