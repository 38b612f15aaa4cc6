"""Inference runtimes behind one small interface.

Every backend turns a batch of normalised tiles ``[B, 1, H, W]`` (a float32 torch
tensor, on the runtime's device or on the CPU) into class probabilities
``[B, K, H, W]`` (float32, on the runtime's device): softmax over the 9 LULC classes,
or the sigmoid water probability (K = 1); :func:`run_numpy` does the same for NumPy
arrays. :func:`load_runtime` picks the backend from the model file and checks it is
installed; :func:`describe_backends` says what can run on this machine.
"""

from __future__ import annotations

from alosmap.runtime.base import (
    BACKENDS,
    PRECISIONS,
    Runtime,
    available_backends,
    logits_to_probs,
    resolve_backend,
    run_numpy,
)
from alosmap.runtime.loader import load_runtime
from alosmap.runtime.probe import describe_backends

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Runtime",
    "available_backends",
    "describe_backends",
    "load_runtime",
    "logits_to_probs",
    "resolve_backend",
    "run_numpy",
]
