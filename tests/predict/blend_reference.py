"""A reference of the NumPy blend the one-engine accumulator replaced (test helper).

The pipeline blended window probabilities like this before it moved to torch
tensors on the model's device: weighted sums in float32 over the scene, division by
the summed weights, argmax over the classes (or the threshold of a binary task).
The device path must give the same maps up to float summation order: a class may
differ only where the two best blended probabilities are within 1e-5, no data must
be identical, and percentages may differ by one at a rounding boundary.
"""

from __future__ import annotations

import numpy as np

from alosmap.classes import get_task
from alosmap.spec import ModelSpec
from alosmap.tiling import Tile

#: Top-two gap under which a different class counts as a tie.
TIE = 1e-5


class ReferenceBlend:
    """The NumPy blend of the whole scene at once (float32, as the old pipeline)."""

    def __init__(self, height: int, width: int, k: int) -> None:
        self.acc = np.zeros((k, height, width), dtype=np.float32)
        self.wsum = np.zeros((height, width), dtype=np.float32)

    def add(self, t: Tile, probs: np.ndarray, w: np.ndarray) -> None:
        sl = t.slices
        self.acc[:, sl[0], sl[1]] += probs[:, : t.height, : t.width] * w
        self.wsum[sl] += w

    def probabilities(self) -> np.ndarray:
        return self.acc / np.maximum(self.wsum, 1e-12)


def check_against_reference(
    spec: ModelSpec,
    out: dict[str, np.ndarray | None],
    ref: ReferenceBlend,
    valid: np.ndarray,
) -> None:
    """Assert that maps match the reference blend.

    ``out`` holds ``classes`` and, unless None, ``confidence`` and
    ``probabilities`` (uint8 percent, 255 no data).
    """
    task = get_task(spec.task)
    p = ref.probabilities()
    ok = valid & (ref.wsum > 0)
    classes = out["classes"]
    np.testing.assert_array_equal(classes == task.nodata, ~ok)
    codes = np.array([c.code for c in spec.classes], np.uint8)
    if task.binary:
        thr = spec.threshold if spec.threshold is not None else 0.5
        want = codes[(p[0] >= thr).astype(np.uint8)]
        near = np.abs(p[0] - thr) < TIE
        top = np.maximum(p[0], 1 - p[0])
    else:
        want = codes[p.argmax(0)]
        s = np.sort(p, axis=0)
        near = (s[-1] - s[-2]) < TIE
        top = s[-1]
    differ = ok & (classes != want)
    assert not (differ & ~near).any(), "a class differs away from a tie"
    conf = out.get("confidence")
    if conf is not None:
        np.testing.assert_array_equal(conf == 255, ~ok)
        want_conf = np.rint(np.clip(top, 0, 1) * 100)
        assert np.abs(conf[ok].astype(int) - want_conf[ok]).max(initial=0) <= 1
    prob = out.get("probabilities")
    if prob is not None:
        assert (prob[:, ~ok] == 255).all()
        want_prob = np.rint(np.clip(p, 0, 1) * 100)
        assert np.abs(prob[:, ok].astype(int) - want_prob[:, ok]).max(initial=0) <= 1
