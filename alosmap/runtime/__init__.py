"""Inference runtimes behind one small interface.

Every backend turns a batch of normalised tiles ``[B, 1, H, W]`` (float32) into class
probabilities ``[B, K, H, W]`` (float32): softmax over the 9 LULC classes, or the
sigmoid water probability (K = 1). :func:`load_runtime` picks the backend from the
model file and what is installed.
"""

from __future__ import annotations

from .base import BACKENDS, Runtime, available_backends, load_runtime, logits_to_probs

__all__ = [
    "BACKENDS",
    "Runtime",
    "available_backends",
    "load_runtime",
    "logits_to_probs",
]
