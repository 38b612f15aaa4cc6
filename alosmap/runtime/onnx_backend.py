"""ONNX Runtime backend for ``.onnx`` files written by ``alosmap export onnx``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alosmap._imports import lazy_import
from alosmap.errors import BackendUnavailableError, ModelFileError
from alosmap.spec import load_spec

from .base import check_device, logits_to_probs


class OnnxRuntime:
    """An ONNX Runtime session; CUDA EP then CPU EP on ``cuda``, CPU EP otherwise."""

    name = "onnx"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None):
        ort = lazy_import("onnxruntime")
        device = check_device(device)
        self.spec = load_spec(path)
        available = ort.get_available_providers()
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    "--device cuda: this ONNX Runtime has no CUDA provider "
                    f"(available: {', '.join(available)}); install onnxruntime-gpu"
                )
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            providers: list = [
                ("CUDAExecutionProvider", {"device_id": dev_id}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            msg = f"{path}: ONNX Runtime cannot load it ({exc})"
            raise ModelFileError(msg) from exc
        self.input_name = self.session.get_inputs()[0].name
        self.device = device
        self.path = path

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[B, K, H, W]`` for normalised tiles ``[B, 1, H, W]``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: x})
        return logits_to_probs(logits)

    def close(self) -> None:
        """Drop the session."""
        self.session = None
