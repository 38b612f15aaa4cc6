"""PyTorch runtime for ``.safetensors`` model files (eager, optionally compiled).

Precision: ``fp32`` runs in true fp32 (cuDNN's TF32 convolutions are switched off
while the model runs, so GPU fp32 is a reference, not TF32); ``bf16`` and ``fp16`` use
``torch.autocast`` (weights stay fp32, matmuls and convolutions run in 16 bits,
reductions such as LayerNorm and the final softmax in fp32). ``fp16`` needs CUDA;
``bf16`` also runs on the CPU, where it pays off only on CPUs with native bf16
(AVX512-BF16 or AMX): on the development machine's AMD EPYC, 1.46× the fp32
throughput at batch 8 for the small preset, 99.9 % argmax agreement. Elsewhere it is
refused before the model is loaded (:func:`~alosmap.runtime.loader.load_runtime`).

``compile=True`` wraps the model in ``torch.compile``. Compilation happens at the first
batch (about 70 s for the small preset on one CPU core, for a 2 % gain there) and again
for each new batch shape, so batches smaller than the largest seen so far (the last
one of a scene) are padded with zeros (on the device) and the padding is dropped from
the output.

:meth:`TorchRuntime.run` follows the tensor protocol of :mod:`alosmap.runtime.base`:
a batch on the CPU is copied to the device (``non_blocking``), the model and the
softmax run on PyTorch's current stream, and the float32 probabilities stay on the
device (a new tensor per call).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from alosmap.errors import BackendOptionError
from alosmap.runtime.base import (
    check_precision,
    device_batch,
    logits_to_probs,
    require_torch_device,
)
from alosmap.spec import load_model

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRuntime:
    """Runs a :class:`~alosmap.models.SegmentationModel` in eval mode.

    Args:
        path: the ``.safetensors`` model file.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op CPU threads (``torch.set_num_threads``; process-wide).
            Default: PyTorch's own (the physical cores).
        precision: ``fp32`` (default), ``bf16`` or ``fp16`` (CUDA only).
        compile: wrap the model in ``torch.compile``.

    Raises:
        BackendUnavailableError: ``cuda`` without a GPU PyTorch can see.
        BackendOptionError: a precision this device cannot run.
    """

    name = "torch"
    #: :meth:`run` works on torch tensors (see :class:`~alosmap.runtime.base.Runtime`)
    array_kind = "torch"

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        precision: str | None = None,
        compile: bool = False,
    ):
        device = require_torch_device(device)
        precision = check_precision(precision) or "fp32"
        gpu = device.startswith("cuda")
        if precision == "fp16" and not gpu:
            raise BackendOptionError(
                "--precision fp16 needs --device cuda (PyTorch has no fast fp16 on "
                "the CPU); use bf16 (fast on CPUs with AVX512-BF16/AMX) or fp32"
            )
        if precision == "bf16" and gpu and not torch.cuda.is_bf16_supported():
            raise BackendOptionError(
                f"--precision bf16: this GPU ({torch.cuda.get_device_name(device)}) "
                "has no bf16; use fp16"
            )
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.precision = precision
        self.compiled = compile
        self.path = Path(path)
        self.threads = torch.get_num_threads()
        self.model, self.spec = load_model(path, device=device)
        self._net: Any = torch.compile(self.model) if compile else self.model
        self._pad_to = 0
        self._gpu = gpu

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        dev_type = "cuda" if self._gpu else "cpu"
        if self.precision in _DTYPES:
            stack.enter_context(torch.autocast(dev_type, dtype=_DTYPES[self.precision]))
        if self._gpu:
            stack.enter_context(
                torch.backends.cudnn.flags(
                    enabled=True,
                    benchmark=True,
                    deterministic=False,
                    allow_tf32=self.precision != "fp32",
                )
            )
        return stack

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, K, H, W]`` for normalised tiles ``[B, 1, H, W]``.

        Float32, on this runtime's device; see :mod:`alosmap.runtime.base`.
        """
        x = device_batch(batch, self.device, self.spec)
        n = x.shape[0]
        if self.compiled:
            if n < self._pad_to:
                x = torch.cat([x, x.new_zeros((self._pad_to - n, *x.shape[1:]))])
            self._pad_to = max(self._pad_to, n)
        with self._context():
            logits = self._net(x)[:n]
        # outside inference mode, so that the caller may change the result in place
        with torch.no_grad():
            return logits_to_probs(logits)

    def close(self) -> None:
        """Drop the model."""
        self.model = None  # type: ignore[assignment]
        self._net = None
