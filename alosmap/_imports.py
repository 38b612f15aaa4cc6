"""Lazy import of optional dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from alosmap.errors import BackendUnavailableError

#: pip extra that provides each optional module.
_EXTRAS = {
    "onnxruntime": "alosmap  (or: pip install onnxruntime)",
    "tensorrt": "'alosmap[tensorrt]'",
    "matplotlib": "'alosmap[plot]'",
    "pystac": "'alosmap[stac]'",
    "onnxscript": "onnxscript",
}


def lazy_import(name: str) -> ModuleType:
    """Import an optional module or raise an error that says how to install it.

    Args:
        name: module name, e.g. ``"onnxruntime"``.

    Raises:
        BackendUnavailableError: when the module cannot be imported.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        hint = _EXTRAS.get(top, top)
        raise BackendUnavailableError(
            f"{top} is not installed ({exc}); install it with: pip install {hint}"
        ) from exc
