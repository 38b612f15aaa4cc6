"""alosmap: land-use/land-cover and water maps from ALOS-2 PALSAR-2 HH SAR scenes.

The package imports nothing heavy at import time; torch and friends load on first use::

    import alosmap
    res = alosmap.predict_scene("scene.tif", "map.tif", model="model.safetensors")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alosmap._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.predict.pipeline import PredictResult, predict_scene

__all__ = ["PredictResult", "__version__", "predict_scene"]


def __getattr__(name: str) -> Any:
    if name in ("predict_scene", "PredictResult"):
        from alosmap.predict import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'alosmap' has no attribute {name!r}")
