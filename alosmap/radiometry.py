"""Radiometry of ALOS-2 PALSAR-2 products: amplitude DN, σ0 in dB, linear power.

Level 2.1 GeoTIFFs store amplitude as 16-bit unsigned digital numbers (DN) with 0 as
no data. JAXA's calibration converts them to backscatter in decibels:

    σ0 [dB] = 10·log10(DN²) + CF,   CF = −83.0 dB

so, for example, DN 10000 gives 10·log10(1e8) − 83 = −3.0 dB. Linear power is
``10 ** (dB / 10)``.

The same formula gives γ0 (terrain-flattened backscatter) for JAXA's 25 m yearly
mosaics; :attr:`Radiometry.backscatter` records which of the two a model was trained
on (:data:`BACKSCATTER_KINDS`), so that running it on the other can be flagged.

All functions accept scalars or numpy arrays of any shape and never emit
floating-point warnings: undefined results (no data, zero or negative power) are NaN.
:func:`to_db`, :func:`normalize` and :func:`model_input` are written once over the
array API (:mod:`alosmap._xp`): NumPy arrays on the host, torch tensors on the model's
device (the prediction pipeline's device path); one formula for the host and the GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import array_api_compat
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from alosmap._xp import clip_, fill_where_, is_numpy, log10_, namespace_of
from alosmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BACKSCATTER_KINDS",
    "CALIBRATION_FACTOR_DB",
    "DEFAULT_CLIP_DB",
    "DN_MAX",
    "DN_MIN",
    "DN_NODATA",
    "INPUT_UNITS",
    "Radiometry",
    "Units",
    "db_to_dn",
    "db_to_linear",
    "dn_to_db",
    "guess_units",
    "linear_to_db",
    "model_input",
    "normalize",
    "parse_backscatter",
    "to_db",
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
#: The units a scene may be declared in.
INPUT_UNITS: tuple[str, ...] = ("dn", "db", "linear")
#: σ0 range (dB) model inputs are clipped to before normalising, unless a model's
#: spec or a dataset's record says otherwise.
DEFAULT_CLIP_DB: tuple[float, float] = (-40.0, 20.0)
#: What the backscatter of a scene or a model's training data is: σ0 (ellipsoid
#: normalised, ALOS-2 Level 2.1), γ0 (terrain-flattened, the 25 m mosaics) or not
#: known.
BACKSCATTER_KINDS: tuple[str, ...] = ("sigma0", "gamma0", "unknown")

_A = TypeVar("_A", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class Radiometry:
    """How scene values become model input.

    The model always works on σ0 in dB, normalised as ``(db - mean) / std`` and
    clipped to ``clip_db`` first. Level 2.1 amplitude DN convert as
    ``σ0 = 10·log10(DN²) + calibration_factor_db``.

    Attributes:
        band: 1-based band of the scene that holds HH.
        units: units the model expects scenes in by default (``dn``, ``db``,
            ``linear``); ``--input-units`` overrides per scene.
        calibration_factor_db: CF of the DN → σ0 conversion (−83.0 dB for ALOS-2).
        clip_db: σ0 range (dB) values are clipped to before normalising.
        mean_db: training-set mean of σ0 (dB).
        std_db: training-set standard deviation of σ0 (dB).
        backscatter: what the training scenes held: ``sigma0`` (ALOS-2 L2.1, the
            default, also for specs written before this field), ``gamma0``
            (terrain-flattened: the 25 m mosaics) or ``unknown``.
    """

    band: int = 1
    units: str = "dn"
    calibration_factor_db: float = CALIBRATION_FACTOR_DB
    clip_db: tuple[float, float] = DEFAULT_CLIP_DB
    mean_db: float = -10.0
    std_db: float = 6.0
    backscatter: str = "sigma0"

    def __post_init__(self) -> None:
        """Validate; raise :class:`SpecError` naming the field."""
        object.__setattr__(self, "clip_db", tuple(float(v) for v in self.clip_db))
        if (
            not isinstance(self.band, int)
            or isinstance(self.band, bool)
            or self.band < 1
        ):
            raise SpecError(
                f"radiometry.band: expected an integer >= 1, got {self.band!r}"
            )
        if self.units not in INPUT_UNITS:
            raise SpecError(
                f"radiometry.units: expected one of {', '.join(INPUT_UNITS)}, "
                f"got {self.units!r}"
            )
        if self.backscatter not in BACKSCATTER_KINDS:
            raise SpecError(
                f"radiometry.backscatter: expected one of "
                f"{', '.join(BACKSCATTER_KINDS)}, got {self.backscatter!r}"
            )
        if len(self.clip_db) != 2 or not self.clip_db[0] < self.clip_db[1]:
            raise SpecError(
                f"radiometry.clip_db: expected (low, high), got {self.clip_db}"
            )
        if not (isinstance(self.std_db, (int, float)) and self.std_db > 0):
            raise SpecError(f"radiometry.std_db: expected > 0, got {self.std_db!r}")
        for name in ("mean_db", "calibration_factor_db"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
                raise SpecError(
                    f"radiometry.{name}: expected a finite number, got {v!r}"
                )


_BACKSCATTER_WORDS = {
    "sigma0": "sigma0",
    "sigmanought": "sigma0",
    "sigmanaught": "sigma0",
    "σ0": "sigma0",
    "gamma0": "gamma0",
    "gammanought": "gamma0",
    "gammanaught": "gamma0",
    "γ0": "gamma0",
    "unknown": "unknown",
}


def parse_backscatter(text: str | None) -> str | None:
    """``sigma0``, ``gamma0`` or ``unknown`` from a tag or metadata value, else None.

    Case, spaces, ``-`` and ``_`` are ignored: ``Gamma-0``, ``gamma_0``, ``γ0``,
    ``Sigma Nought`` are understood; ``beta0`` and anything else give None.
    """
    if not text:
        return None
    key = re.sub(r"[\s_\-]+", "", text.strip().lower())
    return _BACKSCATTER_WORDS.get(key)


def to_db(
    values: _A, units: str, cf: float = CALIBRATION_FACTOR_DB, *, inplace: bool = False
) -> _A:
    """σ0 in dB from values in ``units``, computed in the values' float precision.

    ``dn``: ``20·log10(DN) + cf`` (= ``10·log10(DN²) + cf``); ``linear``:
    ``10·log10(power)``; ``db``: the values themselves (a float32 copy for integer
    input). Non-positive DN or power give -inf or NaN without a warning; callers keep
    their own validity mask.

    Written once over the array API (:mod:`alosmap._xp`): NumPy arrays on the host,
    torch tensors on their device (the pipeline's device path), with the same
    operations in the same order.

    Args:
        values: raw values of a scene (float32 strips, or any numeric array; integer
            NumPy input is computed in float64, integer tensors in float32).
        units: ``"dn"``, ``"db"`` or ``"linear"``.
        cf: calibration factor of the DN conversion, in dB.
        inplace: overwrite ``values`` (a floating array or tensor the caller owns)
            instead of a new one: strips of a scene are large.

    Raises:
        ValueError: for other units.
    """
    if units not in INPUT_UNITS:
        raise ValueError(
            f"units: expected one of {', '.join(INPUT_UNITS)}, got {units!r}"
        )
    x: Any = values if array_api_compat.is_array_api_obj(values) else np.asarray(values)
    xp = namespace_of(x)
    if not xp.isdtype(x.dtype, "real floating"):
        x = xp.astype(x, xp.float64 if is_numpy(xp) else xp.float32)
    if units == "db":
        return x
    y: Any
    with np.errstate(divide="ignore", invalid="ignore"):
        y = log10_(x) if inplace and x is values else xp.log10(x)
    if isinstance(y, np.generic):  # a NumPy 0-d input gives a scalar
        y = np.asarray(y)
    y *= 20.0 if units == "dn" else 10.0  # in place: strips are large
    if units == "dn":
        y += cf
    return y


def normalize(
    db: _A, radiometry: Radiometry, valid: Any = None, *, inplace: bool = False
) -> _A:
    """Model input from σ0 dB: clip, ``(x - mean) / std``, 0 where not ``valid``.

    The mean and std are the training set's (a model's spec or a dataset's record),
    never per tile. Written once over the array API: NumPy arrays (float32
    arithmetic) and torch tensors (on their device) go through the same operations
    in the same order.

    Args:
        db: σ0 in dB (NaN allowed where ``valid`` is False).
        radiometry: the clip range and statistics.
        valid: boolean mask of the same shape; None keeps every value.
        inplace: overwrite ``db`` (a float32 array or tensor the caller owns)
            instead of returning a new one: strips of a scene are large.
    """
    xp = namespace_of(db)
    lo, hi = radiometry.clip_db
    x = clip_(db if inplace else xp.asarray(db, copy=True), lo, hi)
    x -= radiometry.mean_db
    # a true division, as training's data loader has always done (a CUDA division
    # by a scalar multiplies by its reciprocal: 1 ulp apart, within the tolerance of
    # host vs device maps)
    x /= radiometry.std_db
    if valid is not None:
        fill_where_(x, ~valid, 0.0)
    return x


def model_input(
    raw: _A, valid: Any, radiometry: Radiometry, units: str, cf: float
) -> _A:
    """Model input of a scene's raw values: σ0 dB, normalised, 0 where not ``valid``.

    The one conversion of the prediction pipeline, on the host (NumPy) and on the
    device (torch tensors): a float32 copy of ``raw``, then :func:`to_db` and
    :func:`normalize` in place.

    Args:
        raw: the file's values (:meth:`~alosmap.io.scene.Scene.read_raw`).
        valid: their validity (boolean, same shape).
        radiometry: the model's radiometry (clip range, mean and std).
        units: the scene's units (``dn``, ``db`` or ``linear``).
        cf: the scene's calibration factor (dB).
    """
    xp = namespace_of(raw)
    x = xp.astype(raw, xp.float32, copy=True)
    return normalize(to_db(x, units, cf, inplace=True), radiometry, valid, inplace=True)


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
    return np.where(valid, to_db(a, "dn", cf), np.nan).astype(np.float32)


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
    return np.where(a > 0, to_db(a, "linear"), np.nan).astype(np.float32)


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
