"""Options resolved against a model: task, tile and overlap set once, then read."""

from __future__ import annotations

import pytest

from alosmap.errors import InferenceOptionError
from alosmap.predict.options import InferenceOptions, ResolvedOptions
from alosmap.spec import load_spec
from alosmap.tiling import default_overlap


def test_for_model_sets_task_tile_and_overlap(tiny_lulc_model):
    spec = load_spec(tiny_lulc_model)
    asked = InferenceOptions(batch_size=3, confidence=True)
    opts = asked.for_model(spec, tiny_lulc_model.name)
    assert isinstance(opts, ResolvedOptions)
    assert (opts.task, opts.tile, opts.overlap) == ("lulc", 256, 64)
    assert opts.overlap == default_overlap(spec.tile_size)
    assert (opts.batch_size, opts.confidence) == (3, True)  # the rest as asked
    assert asked.replace(overlap=10).for_model(spec, "m").overlap == 10
    # resolving again changes nothing; a variant is validated as resolved
    assert opts.for_model(spec, "m") == opts
    assert opts.replace(overlap=32).overlap == 32
    with pytest.raises(InferenceOptionError, match="resolved options need"):
        opts.replace(overlap=None)
    with pytest.raises(InferenceOptionError, match=r"overlap 256: must be in 0\.\.255"):
        opts.replace(overlap=256)
    with pytest.raises(InferenceOptionError, match="overlap 300"):
        InferenceOptions(overlap=300).for_model(spec, "m")
    # only resolved options have a fingerprint (it records tile and overlap)
    assert not hasattr(asked, "fingerprint")
    assert opts.fingerprint("sha")["overlap"] == 64
