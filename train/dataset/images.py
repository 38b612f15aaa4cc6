"""How ``build-dataset`` reads its images: band, units and no-data of the SAR rasters.

Images are read through :class:`alosmap.io.scene.Scene`, as ``predict`` reads scenes:
σ0 in dB with a validity mask, units declared (``--input-units``) or guessed, the
no-data value of the file (or ``--nodata``), the file's mask band and, for JAXA's
25 m mosaic tiles, the mask file beside them.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alosmap.io.scene import Scene
from alosmap.radiometry import INPUT_UNITS, Radiometry
from alosmap.train.errors import DatasetBuildError

__all__ = ["ImageOptions", "open_image", "scene_radiometry", "summarize_radiometry"]


@dataclass(frozen=True)
class ImageOptions:
    """How to read the images.

    Attributes:
        band: 1-based band (required for multi-band files; None: the only band).
        input_units: ``auto`` (declared by a ``UNITS`` tag, else guessed as
            ``predict`` does), ``dn``, ``db`` or ``linear``.
        nodata: the images' no-data value, instead of the files' own (None: the
            file's no-data tag).

    Raises:
        DatasetBuildError: a bad band or units.
    """

    band: int | None = None
    input_units: str = "auto"
    nodata: float | None = None

    def __post_init__(self) -> None:
        if self.band is not None and self.band < 1:
            raise DatasetBuildError(f"--band {self.band}: bands count from 1")
        if self.input_units not in ("auto", *INPUT_UNITS):
            raise DatasetBuildError(
                f"--input-units {self.input_units!r}: choose auto, "
                f"{', '.join(INPUT_UNITS)}"
            )

    @property
    def is_default(self) -> bool:
        """Whether every option has its default (the file decides everything)."""
        return self == ImageOptions()

    def to_dict(self) -> dict[str, Any]:
        """JSON record (``nodata`` NaN as the string ``"nan"``)."""
        nd = self.nodata
        return {
            "band": self.band,
            "input_units": self.input_units,
            "nodata": "nan" if nd is not None and math.isnan(nd) else nd,
        }


def open_image(path: str | os.PathLike[str], options: ImageOptions) -> Scene:
    """Open one image as a :class:`~alosmap.io.scene.Scene` (ALOS-2 CF by default).

    Raises:
        InputRasterError: the file cannot be used (see :class:`Scene`).
    """
    return Scene(
        path,
        Radiometry(),
        band=options.band,
        input_units=options.input_units,
        nodata=options.nodata,
    )


def scene_radiometry(scene: Scene) -> dict[str, Any]:
    """What an opened image holds: band, units, calibration factor, backscatter."""
    return {
        "band": scene.band,
        "units": scene.units,
        "calibration_factor_db": float(scene.cf),
        "backscatter": scene.info.backscatter,
    }


def summarize_radiometry(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The dataset's ``"radiometry"`` from the images' (band, units, CF, backscatter).

    Band, units and calibration factor: the value most images share; backscatter:
    the images' common kind, else ``unknown``.

    Args:
        rows: per image, a mapping with those four keys.

    Returns:
        The record (field names of :class:`~alosmap.radiometry.Radiometry`) and a
        note when the images differ ("" when they agree).
    """
    out: dict[str, Any] = {}
    mixed = []
    for key in ("band", "units", "calibration_factor_db"):
        counts = Counter(r[key] for r in rows)
        out[key] = counts.most_common(1)[0][0]
        if len(counts) > 1:
            mixed.append(f"{key} {dict(counts)}")
    kinds = {r["backscatter"] for r in rows}
    out["backscatter"] = kinds.pop() if len(kinds) == 1 else "unknown"
    if len({r["backscatter"] for r in rows}) > 1:
        mixed.append(
            "backscatter " + ", ".join(sorted({r["backscatter"] for r in rows}))
        )
    note = (
        "the images differ in " + "; ".join(mixed) + ": dataset.json records the "
        "most common value"
        if mixed
        else ""
    )
    return out, note
