"""Radiometry of ALOS-2 PALSAR-2 products: amplitude DN, σ0 in dB, linear power.

Level 2.1 GeoTIFFs store amplitude as 16-bit unsigned digital numbers (DN) with 0 as
no data. JAXA's calibration converts them to backscatter in decibels:

    σ0 [dB] = 10·log10(DN²) + CF,   CF = −83.0 dB

so, for example, DN 10000 gives 10·log10(1e8) − 83 = −3.0 dB. Linear power is
``10 ** (dB / 10)``.

All functions are pure numpy, accept scalars or arrays of any shape, and never emit
floating-point warnings: undefined results (no data, zero or negative power) are NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "CALIBRATION_FACTOR_DB",
    "DN_MAX",
    "DN_MIN",
    "DN_NODATA",
    "Units",
    "db_to_dn",
    "db_to_linear",
    "dn_to_db",
    "guess_units",
    "linear_to_db",
]

#: JAXA calibration factor CF of PALSAR-2 L1.5/L2.1/L3.1 amplitude products, in dB.
CALIBRATION_FACTOR_DB = -83.0
#: DN that marks no data (fill outside the swath).
DN_NODATA = 0
#: Smallest valid DN.
DN_MIN = 1
#: Largest valid DN (uint16).
DN_MAX = 65535

#: Units of a backscatter raster: amplitude DN, σ0 in dB, or σ0 as linear power.
Units = Literal["dn", "db", "linear"]


def dn_to_db(
    dn: ArrayLike,
    cf: float = CALIBRATION_FACTOR_DB,
    nodata: float | None = DN_NODATA,
) -> np.ndarray:
    """Convert amplitude DN to σ0 in dB: ``10·log10(DN²) + cf``.

    Args:
        dn: amplitude digital numbers (any shape; usually uint16).
        cf: calibration factor in dB.
        nodata: DN that marks no data (NaN in the result); None for none.

    Returns:
        float32 σ0 in dB, same shape as ``dn``; NaN where ``dn`` equals ``nodata``,
        is zero or negative, or is not finite.
    """
    a = np.asarray(dn, dtype=np.float64)
    valid = np.isfinite(a) & (a > 0)
    if nodata is not None:
        valid &= a != nodata
    out = np.full(a.shape, np.nan, dtype=np.float64)
    np.log10(a, out=out, where=valid)
    out = np.where(valid, 20.0 * out + cf, np.nan)
    return out.astype(np.float32)


def db_to_dn(db: ArrayLike, cf: float = CALIBRATION_FACTOR_DB) -> np.ndarray:
    """Convert σ0 in dB to amplitude DN: ``round(10 ** ((db - cf) / 20))``.

    Valid values are clipped to ``DN_MIN..DN_MAX`` (1..65535), so no valid pixel
    becomes the no-data value 0. NaN (no data) becomes 0.

    Args:
        db: σ0 in dB (any shape).
        cf: calibration factor in dB.

    Returns:
        uint16 DN, same shape as ``db``.
    """
    a = np.asarray(db, dtype=np.float64)
    finite = ~np.isnan(a)
    # Clip in dB first so that 10**x cannot overflow; +inf saturates to DN_MAX.
    hi = 20.0 * np.log10(DN_MAX) + cf + 1.0
    x = np.clip(np.where(finite, a, 0.0), -1000.0, hi)
    amp = np.power(10.0, (x - cf) / 20.0)
    dn = np.clip(np.rint(amp), DN_MIN, DN_MAX)
    return np.where(finite, dn, DN_NODATA).astype(np.uint16)


def db_to_linear(db: ArrayLike) -> np.ndarray:
    """Convert dB to linear power: ``10 ** (db / 10)``; NaN stays NaN.

    Args:
        db: values in dB (any shape).

    Returns:
        float32 linear power, same shape as ``db``.
    """
    a = np.asarray(db, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = np.power(10.0, a / 10.0)
    return out.astype(np.float32)


def linear_to_db(linear: ArrayLike) -> np.ndarray:
    """Convert linear power to dB: ``10·log10(linear)``; NaN where not positive.

    Args:
        linear: linear power (any shape); zero, negative and non-finite values are
            allowed and give NaN (+inf gives +inf).

    Returns:
        float32 values in dB, same shape as ``linear``.
    """
    a = np.asarray(linear, dtype=np.float64)
    valid = a > 0
    out = np.full(a.shape, np.nan, dtype=np.float64)
    np.log10(a, out=out, where=valid)
    return np.where(valid, 10.0 * out, np.nan).astype(np.float32)


def guess_units(
    sample: ArrayLike,
    dtype: DTypeLike | None = None,
    nodata: float | None = None,
) -> Units:
    """Guess whether raster values are amplitude DN, σ0 in dB or linear power.

    The heuristic, applied to the finite values other than ``nodata``:

    * integer ``dtype`` → ``"dn"`` (L2.1 products are uint16 DN);
    * float with a sizeable share (≥ 5 %) of negative values, or mostly within
      −40..+10 → ``"db"``;
    * float, non-negative, with the 99th percentile below 100 (power is mostly
      below ~10) → ``"linear"``;
    * float, non-negative and large (DN converted to float) → ``"dn"``.

    Args:
        sample: some pixel values of the raster (any shape, e.g. a decimated read).
        dtype: data type of the raster on disk; defaults to ``sample``'s dtype. Pass
            it when the sample was cast (e.g. read as float32 from a uint16 file).
        nodata: no-data value to ignore, if any.

    Returns:
        ``"dn"``, ``"db"`` or ``"linear"``.

    Raises:
        ValueError: when the sample holds no usable value and the dtype is float.
    """
    a = np.asarray(sample)
    kind = np.dtype(dtype if dtype is not None else a.dtype)
    if np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.bool_):
        return "dn"
    v = a.astype(np.float64, copy=False).ravel()
    keep = np.isfinite(v)
    if nodata is not None and not np.isnan(nodata):
        keep &= v != nodata
    v = v[keep]
    if v.size == 0:
        raise ValueError(
            "cannot guess the units of a sample with no valid values; "
            "read more pixels or state the units explicitly"
        )
    neg_share = float(np.mean(v < 0))
    in_db_range = float(np.mean((v >= -40.0) & (v <= 10.0)))
    if neg_share >= 0.05 or (neg_share > 0 and in_db_range >= 0.9):
        return "db"
    if float(np.percentile(v, 99)) < 100.0:
        return "linear"
    return "dn"
