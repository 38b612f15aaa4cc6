"""alosmap: land-use/land-cover and water maps from ALOS-2 PALSAR-2 HH SAR scenes.

The package imports nothing heavy at import time; torch and friends load on first use.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
