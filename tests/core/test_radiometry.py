"""Tests of alosmap.radiometry (DN ↔ dB ↔ linear, unit guessing)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alosmap.radiometry import (
    CALIBRATION_FACTOR_DB,
    db_to_dn,
    db_to_linear,
    dn_to_db,
    guess_units,
    linear_to_db,
)


def test_calibration_factor():
    assert CALIBRATION_FACTOR_DB == -83.0


def test_dn_to_db_hand_values():
    # 10·log10(DN²) − 83: DN 10000 → 80 − 83 = −3 dB; DN 1 → −83 dB; DN 100 → −43.
    out = dn_to_db(np.array([10000, 1, 100, 0], dtype=np.uint16))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:3], [-3.0, -83.0, -43.0], atol=1e-5)
    assert np.isnan(out[3])


def test_dn_to_db_custom_cf_and_nodata():
    out = dn_to_db(np.array([10, 1000, 5]), cf=-80.0, nodata=5)
    np.testing.assert_allclose(out[:2], [-60.0, -20.0], atol=1e-5)
    assert np.isnan(out[2])
    # Zero is never a valid amplitude, even without a nodata value.
    assert np.isnan(dn_to_db(np.array([0.0]), nodata=None)[0])


def test_dn_to_db_scalar():
    assert float(dn_to_db(10000)) == pytest.approx(-3.0)


def test_db_to_dn_hand_values_and_clipping():
    out = db_to_dn(np.array([-3.0, -83.0, -200.0, 50.0, np.nan, np.inf]))
    assert out.dtype == np.uint16
    assert out.tolist() == [10000, 1, 1, 65535, 0, 65535]


@given(st.integers(min_value=1, max_value=65535))
def test_dn_db_round_trip(dn):
    assert int(db_to_dn(dn_to_db(np.uint16(dn)))) == dn


def test_linear_conversions():
    np.testing.assert_allclose(
        db_to_linear(np.array([0.0, 10.0, -3.0])), [1, 10, 0.5012], rtol=1e-4
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = linear_to_db(np.array([1.0, 100.0, 0.0, -1.0, np.nan]))
    np.testing.assert_allclose(out[:2], [0.0, 20.0])
    assert np.isnan(out[2:]).all()
    assert np.isnan(db_to_linear(np.array([np.nan]))[0])


@given(st.floats(min_value=-60, max_value=30))
def test_db_linear_round_trip(db):
    assert float(linear_to_db(db_to_linear(db))) == pytest.approx(db, abs=1e-4)


def test_no_warnings_on_nodata():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dn_to_db(np.zeros((4, 4), dtype=np.uint16))
        db_to_dn(np.full(3, np.nan))
        linear_to_db(np.zeros(3))


def test_guess_units():
    rng = np.random.default_rng(0)
    dn = rng.integers(500, 20000, size=1000).astype(np.uint16)
    assert guess_units(dn) == "dn"
    assert guess_units(dn.astype(np.float32)) == "dn"  # DN stored as float
    assert guess_units(dn.astype(np.float32), dtype=np.uint16) == "dn"
    db = rng.normal(-12.0, 5.0, size=1000).astype(np.float32)
    assert guess_units(db) == "db"
    lin = db_to_linear(db)
    assert guess_units(lin) == "linear"
    with_nan = np.concatenate([lin, np.full(100, np.nan, dtype=np.float32)])
    assert guess_units(with_nan) == "linear"
    assert (
        guess_units(np.array([-9999.0, -9999.0, 3.0, 5.0]), nodata=-9999.0) == "linear"
    )
    with pytest.raises(ValueError, match="no valid values"):
        guess_units(np.full(10, np.nan, dtype=np.float32))


def test_guess_units_mostly_positive_db():
    # Bright urban scene in dB: few negatives but all within the dB range.
    db = np.array([1.0, 2.0, 3.0, 4.0, -1.0] * 40, dtype=np.float32)
    assert guess_units(db) == "db"
    assert math.isnan(float(dn_to_db(0)))


@pytest.mark.parametrize("units", ["dn", "db", "linear"])
def test_model_input_is_one_formula_on_numpy_and_torch(units):
    """The host (NumPy) and device (torch) engines convert strips alike."""
    torch = pytest.importorskip("torch")
    from alosmap.radiometry import Radiometry, model_input

    rng = np.random.default_rng(3)
    rad = Radiometry(clip_db=(-30.0, 5.0), mean_db=-12.0, std_db=7.0)
    dn = rng.integers(0, 40000, size=(37, 53)).astype(np.uint16)  # 0: no data
    raw = {
        "dn": dn,
        "db": dn_to_db(dn),
        "linear": db_to_linear(dn_to_db(dn)),
    }[units]
    valid = dn > 0
    before = raw.copy()
    host = model_input(raw, valid, rad, units, -83.0)
    assert host.dtype == np.float32 and (host[~valid] == 0).all()
    want = (np.clip(dn_to_db(dn).astype(np.float64), -30, 5) + 12.0) / 7.0
    np.testing.assert_allclose(host[valid], want[valid], atol=2e-5)
    src = torch.from_numpy(raw.astype(np.int32) if units == "dn" else raw)
    dev = model_input(src, torch.from_numpy(valid), rad, units, -83.0).numpy()
    if units == "db":  # no logarithm: the same IEEE operations, the same bits
        np.testing.assert_array_equal(dev, host)
    else:  # log10 of two libraries: within a few ulps (of log10(DN) ~ 4: 5e-7)
        np.testing.assert_allclose(dev, host, rtol=0, atol=5e-6)
    np.testing.assert_array_equal(raw, before)  # the input is not modified
