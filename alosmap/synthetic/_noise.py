"""Random fields and shapes used by the synthetic generators (pure numpy, seeded).

Everything here takes a :class:`numpy.random.Generator`; nothing touches numpy's
global random state. Interpolation is plain arithmetic (no BLAS, no SIMD-dispatched
transcendental functions) so that a seed gives the same field on every machine.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float
) -> np.ndarray:
    """Smooth Gaussian-like random field with zero mean and unit standard deviation.

    White noise on a coarse lattice (one node every ``scale_px`` pixels) is blurred
    a little and interpolated bilinearly to ``shape``.

    Args:
        rng: random generator.
        shape: output shape ``(rows, cols)``.
        scale_px: correlation length in pixels (≥ 1).

    Returns:
        float32 array of ``shape``.
    """
    return fractal_field(rng, shape, scale_px, octaves=1)


def fractal_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale_px: float,
    octaves: int = 3,
    gain: float = 0.5,
) -> np.ndarray:
    """Sum of smooth random octaves (scale halves, amplitude × ``gain`` each time).

    The octaves are summed on the lattice of the finest one and interpolated to
    full resolution once, so the cost hardly depends on ``octaves``.

    Args:
        rng: random generator.
        shape: output shape ``(rows, cols)``.
        scale_px: correlation length of the coarsest octave in pixels.
        octaves: number of octaves (≥ 1).
        gain: amplitude ratio between successive octaves.

    Returns:
        float32 array of ``shape``, zero mean and (about) unit standard deviation.
    """
    h, w = shape
    fine = max(float(scale_px) / 2 ** (octaves - 1), 1.0)
    fh = int(np.ceil(h / fine)) + 4
    fw = int(np.ceil(w / fine)) + 4
    lattice = np.zeros((fh, fw), dtype=np.float32)
    amp = 1.0
    for k in range(octaves):
        s = max(float(scale_px) / 2**k, 1.0)
        ratio = s / fine  # octave lattice spacing in fine-lattice nodes
        ch = int(np.ceil(fh / ratio)) + 4
        cw = int(np.ceil(fw / ratio)) + 4
        coarse = rng.standard_normal((ch, cw), dtype=np.float32)
        if s > 1.5:
            coarse = ndimage.gaussian_filter(coarse, 0.8, mode="nearest")
        coarse /= np.float32(max(float(coarse.std()), 1e-6))
        off = rng.uniform(1.0, 2.0, size=2)
        lattice += np.float32(amp) * _bilinear(coarse, ratio, fh, fw, *off)
        amp *= gain
    lattice -= np.float32(lattice.mean())
    lattice /= np.float32(max(float(lattice.std()), 1e-6))
    off = rng.uniform(1.0, 2.0, size=2)
    return _bilinear(lattice, fine, h, w, *off)


def _bilinear(
    coarse: np.ndarray, s: float, h: int, w: int, r_off: float, c_off: float
) -> np.ndarray:
    """Interpolate ``coarse`` bilinearly: output pixel i sits at ``i / s + off``."""
    ri = np.arange(h, dtype=np.float64) / s + r_off
    ci = np.arange(w, dtype=np.float64) / s + c_off
    r0 = np.floor(ri).astype(np.intp)
    c0 = np.floor(ci).astype(np.intp)
    fr = (ri - r0).astype(np.float32)[:, None]
    fc = (ci - c0).astype(np.float32)[None, :]
    rows = coarse[r0]
    rows += (coarse[r0 + 1] - rows) * fr
    out = rows[:, c0]
    right = rows[:, c0 + 1]
    right -= out
    right *= fc
    out += right
    return out


def block_upsample(coarse: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a block-reduced map back to ``(h, w)`` pixels.

    Args:
        coarse: map whose cell ``k`` covers pixels ``k·factor … k·factor+factor-1``.
        factor: block size in pixels.
        h: output rows.
        w: output columns.

    Returns:
        float32 array ``[h, w]``.
    """
    padded = np.pad(coarse.astype(np.float32), 1, mode="edge")
    off = 0.5 / factor - 0.5 + 1.0
    return _bilinear(padded, float(factor), h, w, off, off)


def block_max(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block-wise maximum of a 2-D array (padded with zeros to whole blocks)."""
    h, w = mask.shape
    hh, ww = -(-h // factor), -(-w // factor)
    pad = np.zeros((hh * factor, ww * factor), dtype=np.float32)
    pad[:h, :w] = mask
    return pad.reshape(hh, factor, ww, factor).max(axis=(1, 3))


def quantile(values: np.ndarray, q: float, mask: np.ndarray | None = None) -> float:
    """Approximate quantile of ``values`` (optionally where ``mask``) on a subsample.

    Uses every 3rd row and column, which is plenty for thresholding smooth fields and
    keeps the cost low on large grids.

    Args:
        values: 2-D array.
        q: quantile in [0, 1].
        mask: optional boolean array of the same shape; only its True pixels count.

    Returns:
        The quantile, or +inf when no pixel is selected.
    """
    sub = values[::3, ::3]
    if mask is not None:
        sub = sub[mask[::3, ::3]]
        if sub.size == 0:
            sub = values[mask]
    if sub.size == 0:
        return float("inf")
    return float(np.quantile(sub, min(max(q, 0.0), 1.0)))


def hash_uniform(*keys: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer keys.

    Args:
        *keys: integer arrays (broadcastable), e.g. block indices.
        salt: integer mixed into the hash (a per-world random number).

    Returns:
        float32 array in [0, 1).
    """
    primes = (73856093, 19349663, 83492791, 2654435761)
    h = np.full(np.broadcast_shapes(*(k.shape for k in keys)), salt, dtype=np.uint64)
    for i, k in enumerate(keys):
        h ^= np.asarray(k, dtype=np.int64).astype(np.uint64) * np.uint64(primes[i % 4])
        h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return ((h & np.uint64(0xFFFFFF)).astype(np.float32)) / np.float32(2**24)


def blob(
    rng: np.random.Generator, ry: float, rx: float, jag: float = 0.25
) -> np.ndarray:
    """Boolean mask of an irregular ellipse with semi-axes ``ry`` × ``rx`` pixels.

    Args:
        rng: random generator.
        ry: semi-axis along rows in pixels.
        rx: semi-axis along columns in pixels.
        jag: relative amplitude of the boundary wobble.

    Returns:
        Boolean array of shape ``(2·ceil(ry·(1+jag))+1, 2·ceil(rx·(1+jag))+1)``.
    """
    hy = int(np.ceil(ry * (1 + jag))) + 1
    hx = int(np.ceil(rx * (1 + jag))) + 1
    dy = np.arange(-hy, hy + 1, dtype=np.float64)[:, None] / max(ry, 0.5)
    dx = np.arange(-hx, hx + 1, dtype=np.float64)[None, :] / max(rx, 0.5)
    theta = np.arctan2(dy, dx)
    wobble = np.zeros_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = 1.0 + jag * wobble / 1.5
    return dy * dy + dx * dx <= radius * radius


def disk_offsets(width: int) -> np.ndarray:
    """Pixel offsets ``(dy, dx)`` of a disk of diameter ``width`` pixels.

    Odd widths are centred on the pixel, even widths on its lower-right corner, so a
    line stamped with them is exactly ``width`` pixels wide across its axis.

    Args:
        width: diameter in pixels (≥ 1).

    Returns:
        int array of shape ``[N, 2]``.
    """
    c = 0.0 if width % 2 else 0.5
    r = np.arange(-width, width + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = (dy - c) ** 2 + (dx - c) ** 2 <= (width / 2) ** 2
    return np.stack([dy[keep], dx[keep]], axis=1)
