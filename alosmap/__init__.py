"""alosmap: land-use/land-cover and water maps from ALOS-2 PALSAR-2 HH SAR scenes.

The public API, imported lazily: ``import alosmap`` loads nothing heavy (no torch,
no rasterio); they load on first use::

    from alosmap import InferenceOptions, predict_scene

    res = predict_scene("scene.tif", "map.tif", model="model.safetensors")
    options = InferenceOptions(model="model.safetensors", confidence=True)
    res = predict_scene("scene.tif", "map.tif", options)

* :func:`predict_scene` maps a whole scene into a COG GeoTIFF and returns a
  :class:`PredictResult`.
* :class:`InferenceOptions` says how (model, task, tiling, runtime, extra outputs).
* :func:`load_model` opens a model file once, to map many scenes with it
  (``predict_scene(..., runtime=model)``).
* :class:`ModelSpec` describes a model (task, classes, tile size, radiometry).
* :class:`AlosmapError` is the root of every error alosmap raises on purpose.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from alosmap._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.errors import AlosmapError
    from alosmap.predict.options import InferenceOptions
    from alosmap.predict.pipeline import PredictResult, load_model, predict_scene
    from alosmap.spec import ModelSpec

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "predict_scene": "alosmap.predict.pipeline",
    "PredictResult": "alosmap.predict.pipeline",
    "load_model": "alosmap.predict.pipeline",
    "InferenceOptions": "alosmap.predict.options",
    "ModelSpec": "alosmap.spec",
    "AlosmapError": "alosmap.errors",
}

__all__ = [
    "AlosmapError",
    "InferenceOptions",
    "ModelSpec",
    "PredictResult",
    "__version__",
    "load_model",
    "predict_scene",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alosmap' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
