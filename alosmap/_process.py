"""Process-wide settings of the command-line tool: GDAL's block cache.

GDAL's block cache (default 5 % of RAM) is capped: strip-wise reading and writing
needs little, and a small cache keeps the peak memory nearly flat across scene
sizes. The commands that map scenes (``predict``, ``water``, ``batch``, and
``bench``'s runs of them) get :data:`MAPPING_CACHE_MB`: they decode each block of a
scene once (:class:`~alosmap.predict.tiles.RowBuffer`) and hand GDAL whole rows of
blocks to write (:class:`~alosmap.io.writer.MapWriter`), so a larger cache only
holds blocks that are never read again (measured: 55 MB less peak at 12000², the
same speed). The other commands keep :data:`GDAL_CACHE_MB` (measured: 215 MB less
peak at 12000² than 256 MB).

It is applied by the CLI and by ``alosmap bench``'s child processes, not on import:
a program using alosmap as a library keeps its own settings. A ``GDAL_CACHEMAX``
already in the environment wins.

Not set here: ``GDAL_NUM_THREADS``. With it, GDAL compresses written blocks in
worker threads and a full disk no longer raises an error (tested: a truncated
GeoTIFF and exit code 0); decoding threads are asked for per scene instead
(:func:`alosmap.io.raster.open_raster`, reading only).
"""

from __future__ import annotations

import os

#: GDAL block cache of the CLI (MB).
GDAL_CACHE_MB = 64
#: GDAL block cache of the commands that map scenes (MB).
MAPPING_CACHE_MB = 16
#: The commands that map scenes.
MAPPING_COMMANDS = frozenset({"predict", "water", "batch", "bench"})


def gdal_cache_mb(command: str | None = None) -> int:
    """The GDAL block cache (MB) of a command (its name, as the CLI calls it)."""
    return MAPPING_CACHE_MB if command in MAPPING_COMMANDS else GDAL_CACHE_MB


def configure_process(command: str | None = None) -> None:
    """Cap GDAL's block cache for ``command`` (see the module doc)."""
    os.environ.setdefault("GDAL_CACHEMAX", str(gdal_cache_mb(command)))


__all__ = ["configure_process", "gdal_cache_mb"]
