"""PyTorch (eager) runtime for ``.safetensors`` model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alosmap.errors import BackendUnavailableError
from alosmap.spec import load_model

from .base import check_device


class TorchRuntime:
    """Runs a :class:`~alosmap.models.SegmentationModel` in eval mode, fp32."""

    name = "torch"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None):
        device = check_device(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(
                "--device cuda: PyTorch sees no CUDA GPU here; use --device cpu"
            )
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.model, self.spec = load_model(path, device=device)
        self.path = path

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[B, K, H, W]`` for normalised tiles ``[B, 1, H, W]``."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        logits = self.model(x.to(self.device, non_blocking=True)).float()
        if logits.shape[1] == 1:
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    def close(self) -> None:
        """Drop the model."""
        self.model = None  # type: ignore[assignment]
