"""Lazy import of optional dependencies with an install hint.

``pip install alosmap`` maps with ``.onnx`` models on ONNX Runtime alone; PyTorch
(``.safetensors`` models, training, export, the device engine) comes with the
``alosmap[torch]`` extra. Every optional module is imported here, through
:func:`lazy_import` or :func:`require_torch`, so a missing one is one line that names
what to install, raised before any work starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from alosmap.errors import BackendUnavailableError

#: The pip install argument that provides each optional module.
_EXTRAS = {
    "onnxruntime": "alosmap  (or: pip install onnxruntime)",
    "torch": "'alosmap[torch]'",
    "safetensors": "'alosmap[torch]'",
    "onnxscript": "'alosmap[torch]'",
    "timm": "'alosmap[mixmim]'",
    "tensorboard": "'alosmap[train]'",
    "tensorrt": "'alosmap[tensorrt]'",
    "matplotlib": "'alosmap[plot]'",
    "pystac": "'alosmap[stac]'",
    "pyogrio": "'alosmap[vector]'",
}


def install_hint(name: str) -> str:
    """``pip install ...`` for the optional module ``name`` (its top-level package)."""
    top = name.split(".")[0]
    return f"pip install {_EXTRAS.get(top, top)}"


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
        raise BackendUnavailableError(
            f"{top} is not installed ({exc}); install it with: {install_hint(top)}"
        ) from exc


def require_torch(what: str) -> ModuleType:
    """Import PyTorch for ``what``, or raise the one line naming ``alosmap[torch]``.

    Args:
        what: what needs PyTorch, as the user asked for it (``"training"``,
            ``"--device cuda"``); it starts the message.

    Raises:
        BackendUnavailableError: PyTorch is not installed (or fails to import).
    """
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{what} needs PyTorch, which is not installed: {install_hint('torch')}"
        ) from exc


def missing_extra(exc: ImportError) -> str | None:
    """The one line for an optional module a command found missing (None: not one).

    For the command line's last resort: a command that needs an extra
    (``alosmap train``, ``alosmap export``: PyTorch) and imports it without
    :func:`require_torch` still ends in one line that names what to install.
    """
    top = (exc.name or "").split(".")[0]
    if top not in _EXTRAS:
        return None
    what = "PyTorch" if top == "torch" else top
    return f"this command needs {what}, which is not installed: {install_hint(top)}"
