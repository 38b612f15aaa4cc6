"""The runtime protocol, backend selection and shared helpers."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from alosmap.errors import BackendUnavailableError, ModelFileError
from alosmap.spec import ModelSpec

#: Backends ``--backend`` accepts (``auto`` picks one).
BACKENDS = ("auto", "torch", "onnx")
_SUFFIX_BACKEND = {".safetensors": "torch", ".onnx": "onnx"}


class Runtime(Protocol):
    """What the tiler needs from a backend."""

    name: str
    spec: ModelSpec
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[B, K, H, W]`` float32 for tiles ``[B, 1, H, W]`` float32."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def logits_to_probs(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1, or the sigmoid when there is one channel (float32)."""
    x = logits.astype(np.float32, copy=False)
    if x.shape[1] == 1:
        return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)
    x = x - x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def available_backends() -> dict[str, str]:
    """Backends usable here, with a short description of each."""
    out: dict[str, str] = {}
    if importlib.util.find_spec("torch") is not None:
        import torch

        cuda = torch.cuda.is_available()
        out["torch"] = f"PyTorch {torch.__version__} (CUDA {'yes' if cuda else 'no'})"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        out["onnx"] = (
            f"ONNX Runtime {ort.__version__} "
            f"({', '.join(ort.get_available_providers())})"
        )
    return out


def resolve_backend(model_path: Path, backend: str) -> str:
    """The backend to use for ``model_path`` (``auto`` goes by the file type)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    suffix = model_path.suffix.lower()
    by_file = _SUFFIX_BACKEND.get(suffix)
    if by_file is None:
        raise ModelFileError(
            f"{model_path}: unknown model file type {suffix!r}; expected .safetensors "
            "(PyTorch) or .onnx (ONNX Runtime)"
        )
    if backend == "auto":
        return by_file
    if backend != by_file:
        raise ModelFileError(
            f"--backend {backend} cannot run {model_path.name}: "
            f"{suffix} files run with --backend {by_file}"
            + (" (export one with `alosmap export onnx`)" if backend == "onnx" else "")
        )
    return backend


def load_runtime(
    model_path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
) -> Runtime:
    """Open a model file with the chosen backend.

    Args:
        model_path: ``.safetensors`` (torch) or ``.onnx`` (ONNX Runtime).
        backend: ``auto``, ``torch`` or ``onnx``.
        device: ``cpu`` or ``cuda`` (``cuda:N`` for torch).
        threads: intra-op threads on the CPU (default: the library's choice).

    Raises:
        ModelFileError: unknown or unreadable model file, or a backend/file mismatch.
        BackendUnavailableError: the backend or the device is not available here.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    name = resolve_backend(path, backend)
    if name == "torch":
        from .torch_backend import TorchRuntime

        return TorchRuntime(path, device=device, threads=threads)
    from .onnx_backend import OnnxRuntime

    return OnnxRuntime(path, device=device, threads=threads)


def check_device(device: str) -> str:
    """Validate a ``--device`` value (``cpu``, ``cuda`` or ``cuda:N``)."""
    if (
        device == "cpu"
        or device == "cuda"
        or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        return device
    raise BackendUnavailableError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
