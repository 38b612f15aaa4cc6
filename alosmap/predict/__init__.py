"""Whole-scene prediction: options, the streaming pipeline, blending, previews, bench.

:func:`~alosmap.predict.pipeline.predict_scene` reads a scene strip by strip, runs
the model on an edge-aligned window grid, blends overlapping windows
(:mod:`alosmap.predict.blend`) and writes a COG map (:mod:`alosmap.io.writer`).
"""
