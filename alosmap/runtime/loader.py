"""Opening a model file with its backend: the one module that imports the backends.

:mod:`alosmap.runtime.base` holds the protocol and the checks and imports no backend;
this module picks the backend for a file
(:func:`~alosmap.runtime.base.resolve_backend`), checks the options it cannot honour
and only then imports the backend's module, so a missing optional library (TensorRT)
is one clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

from alosmap.errors import BackendOptionError, BackendUnavailableError, ModelFileError
from alosmap.runtime.base import (
    INSTALL_HINTS,
    Runtime,
    check_device,
    check_precision,
    resolve_backend,
)

__all__ = ["check_native_precision", "load_runtime"]


def check_native_precision(precision: str | None, device: str, backend: str) -> None:
    """Refuse a 16-bit precision this device does not run natively (one line).

    See :func:`~alosmap.runtime.probe.precision_problem`.

    Raises:
        BackendOptionError: naming the precision and why it is refused.
    """
    from alosmap.runtime.probe import precision_problem

    why = precision_problem(precision, device, backend)
    if why is not None:
        raise BackendOptionError(f"--precision {precision} refused: {why}")


def load_runtime(
    model_path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    precision: str | None = None,
    compile: bool = False,
    batch_size: int | None = None,
) -> Runtime:
    """Open a model file with the chosen backend.

    Args:
        model_path: ``.safetensors`` (torch), ``.onnx`` (ONNX Runtime) or
            ``.engine`` (TensorRT).
        backend: ``auto`` (by the file type), ``torch``, ``onnx`` or ``tensorrt``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op CPU threads (default: the physical cores).
        precision: ``fp32``, ``bf16`` or ``fp16``; None for the backend's default
            (see the module docstring).
        compile: ``torch.compile`` the model (torch only). The first batch of each
            new size compiles (minutes on a CPU); smaller batches are padded.
        batch_size: the batch size that will be used; sets the optimisation profile
            of ONNX Runtime's TensorRT execution provider (batches up to
            ``max(64, batch_size)``, optimised for ``batch_size``). A TensorRT
            engine runs larger batches in chunks of its profile's maximum.

    Raises:
        ModelFileError: unknown or unreadable model file, or a backend/file mismatch.
        BackendUnavailableError: the backend or the device is not available here.
        BackendOptionError: a precision, device or ``compile`` the backend cannot
            honour, or a 16-bit precision the device has no native arithmetic for
            (:func:`check_native_precision`).
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    device = check_device(device)
    precision = check_precision(precision)
    name = resolve_backend(path, backend)
    check_native_precision(precision, device, name)
    if compile and name != "torch":
        raise BackendOptionError(
            f"--compile is for the torch backend (torch.compile); {path.name} runs "
            f"with {name}"
        )
    if name == "torch":
        from alosmap.runtime.torch_backend import TorchRuntime

        return TorchRuntime(
            path, device=device, threads=threads, precision=precision, compile=compile
        )
    if name == "onnx":
        from alosmap.runtime.onnx_backend import OnnxRuntime

        return OnnxRuntime(
            path,
            device=device,
            threads=threads,
            precision=precision,
            batch_size=batch_size,
        )
    return _open_tensorrt(path, device, threads, precision)


def _open_tensorrt(
    path: Path, device: str, threads: int | None, precision: str | None
) -> Runtime:
    """Open a TensorRT engine after the checks that need no TensorRT.

    Raises:
        BackendOptionError: a precision was asked for, or the device is the CPU.
        BackendUnavailableError: TensorRT (or this alosmap's TensorRT runtime) is
            missing.
    """
    if precision is not None:
        raise BackendOptionError(
            f"--precision {precision}: a TensorRT engine's precision is fixed when it "
            "is built (`alosmap export tensorrt`); leave --precision unset"
        )
    if device == "cpu":
        raise BackendOptionError(
            f"{path.name} is a TensorRT engine, which runs only on a GPU; use "
            "--device cuda, or the .onnx/.safetensors model on the CPU"
        )
    try:
        from alosmap.runtime.tensorrt_backend import TensorRTRuntime
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorrt":
            raise BackendUnavailableError(INSTALL_HINTS["tensorrt"]) from exc
        raise BackendUnavailableError(
            f"this alosmap has no TensorRT runtime ({exc}); use the .onnx model with "
            "--backend onnx --device cuda"
        ) from exc
    # the engine's sidecar is checked against this GPU and TensorRT first (a clear
    # error for an engine built elsewhere); batches beyond its profile are chunked
    return TensorRTRuntime(path, device=device, threads=threads)
