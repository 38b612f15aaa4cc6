"""What the label values found before a build mean to a legend."""

from __future__ import annotations

import numpy as np

from alosmap.classes import WATER_BINARY
from alosmap.train.dataset.label_values import NAN, LabelValues


def _scan(nodata: dict[float | str, list[str]] | None = None) -> LabelValues:
    values = LabelValues(nodata=nodata or {})
    a = np.array([0.0, 1.0, -1.0, 9.0, 255.0, np.nan])
    values.add(a, np.array([5, 2, 3, 1, 4, 6]), "a.tif")
    return values


def test_unknown_values_and_their_meaning():
    values = _scan()
    assert sorted(values.counts, key=str) == sorted([0, 1, -1, 9, 255, NAN], key=str)
    assert sorted(values.unknown(WATER_BINARY)) == [-1, 9]
    assert values.meaning(1, WATER_BINARY) == "class 1: Water"
    assert values.meaning(255, WATER_BINARY) == "no label (ignored)"
    assert values.meaning(NAN, WATER_BINARY) == "no label (NaN)"
    assert values.meaning(9, WATER_BINARY) == "NOT IN THE LEGEND"
    # a value that is the raster's no-data tag, or an ignored one, is no label
    tagged = _scan({-1: ["a.tif"]})
    assert tagged.unknown(WATER_BINARY) == [9]
    assert tagged.meaning(-1, WATER_BINARY) == "no label (raster no-data)"
    assert _scan().unknown(WATER_BINARY.with_ignore([-1])) == [9]
