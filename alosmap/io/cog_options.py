"""Creation options of the map COGs (``--co KEY=VALUE``), checked against GDAL's list.

The keys and values a user may give are those of the COG driver of the GDAL that
rasterio loads (its ``DMD_CREATIONOPTIONLIST``, read once): an unknown key, a value
not in a key's list, a number of the wrong type or out of its range is refused with
one line that says what is allowed, before any work. On top of GDAL's list:

* the options that would change the grid or the pixels of a product are alosmap's
  own (:data:`RESERVED`: reprojection and tiling schemes, the overview resampling
  chosen per product, sub-byte ``NBITS``), and so are the lossy codecs (JPEG, WEBP,
  LERC with a ``MAX_Z_ERROR``): class codes must survive as they are;
* ``LEVEL`` is checked against the range of the codec (DEFLATE 1-12, ZSTD 1-22,
  LZMA 0-9), which GDAL's list leaves open (GDAL clamps it silently);
* ``BLOCKSIZE`` must be a multiple of 16 (a TIFF tile's rule).

The options apply to every map file a command writes (class map, confidence,
probabilities, mosaic cells) and override alosmap's defaults
(:mod:`alosmap.io.writer`). :func:`creation_options` sets them for the writers
opened during a block, across threads, as :class:`rasterio.Env` does GDAL's
configuration: the command-line tool sets them once per command.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from alosmap.errors import AlosmapError

__all__ = [
    "LEVEL_RANGES",
    "RESERVED",
    "CreationOptionError",
    "creation_options",
    "current_creation_options",
    "driver_options",
    "parse_creation_options",
]

#: Options alosmap sets itself (grid, tiling scheme, per-product overview resampling,
#: 8-bit samples): giving them would change the map's grid or its values.
RESERVED = frozenset(
    {
        "ADD_ALPHA",
        "ALIGNED_LEVELS",
        "EXTENT",
        "MAX_Z_ERROR",
        "MAX_Z_ERROR_OVERVIEW",
        "NBITS",
        "OVERVIEW_QUALITY",
        "OVERVIEW_RESAMPLING",
        "QUALITY",
        "RES",
        "RESAMPLING",
        "TARGET_SRS",
        "TILING_SCHEME",
        "WARP_RESAMPLING",
        "ZOOM_LEVEL",
        "ZOOM_LEVEL_STRATEGY",
    }
)
#: Codecs that change pixel values: never for class codes.
_LOSSY = frozenset({"JPEG", "WEBP"})
#: ``LEVEL`` range of each codec that takes one (LERC_* take their second part's).
LEVEL_RANGES = {"DEFLATE": (1, 12), "ZSTD": (1, 22), "LZMA": (0, 9)}
#: ``BLOCKSIZE`` must be a multiple of this (TIFF tiles).
_TILE_MULTIPLE = 16
_TRUE_FALSE = frozenset({"YES", "NO", "TRUE", "FALSE", "ON", "OFF", "1", "0"})


class CreationOptionError(AlosmapError, ValueError):
    """A ``--co`` option that the COG driver does not take or alosmap refuses."""


@dataclass(frozen=True)
class OptionSpec:
    """One creation option of a GDAL driver, as its list declares it.

    Attributes:
        name: the key (upper case).
        type: ``string``, ``string-select``, ``int``, ``float`` or ``boolean``.
        values: the accepted values of a ``string-select`` (aliases included),
            upper case.
        min: the smallest number allowed, if declared.
        max: the largest number allowed, if declared.
    """

    name: str
    type: str
    values: frozenset[str] = frozenset()
    min: float | None = None
    max: float | None = None


def _gdal_functions() -> tuple[Any, Any] | None:
    """Two calls of the libgdal that rasterio loaded, typed; None if not found.

    ``GDALGetDriverByName`` and ``GDALGetMetadataItem``.
    """
    import rasterio  # noqa: F401  (loads libgdal)

    from alosmap._process import library_functions

    names = ("GDALGetDriverByName", "GDALGetMetadataItem")
    for by_name, item in library_functions("libgdal", *names):
        by_name.argtypes, by_name.restype = [ctypes.c_char_p], ctypes.c_void_p
        item.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        item.restype = ctypes.c_char_p
        return by_name, item
    return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


@functools.cache
def driver_options(driver: str = "COG") -> dict[str, OptionSpec] | None:
    """The creation options of GDAL's ``driver`` by key; None where unreadable.

    Read from the driver's ``DMD_CREATIONOPTIONLIST`` in the libgdal that rasterio
    loaded (found through the process's mapped libraries; on a platform where it
    cannot be found, None: options are then passed to GDAL unchecked).
    """
    import rasterio

    functions = _gdal_functions()
    if functions is None:
        return None
    by_name, item = functions
    with rasterio.Env():  # drivers registered
        handle = by_name(driver.encode())
        raw = item(handle, b"DMD_CREATIONOPTIONLIST", None) if handle else None
    if not raw:
        return None
    specs: dict[str, OptionSpec] = {}
    for node in ET.fromstring(raw.decode("utf-8", "replace")).iter("Option"):
        name = node.get("name", "").upper()
        values = {(v.text or "").strip().upper() for v in node.iter("Value")}
        values |= {v.get("alias", "").upper() for v in node.iter("Value")} - {""}
        specs[name] = OptionSpec(
            name,
            node.get("type", "string").lower(),
            frozenset(values),
            _number(node.get("min")),
            _number(node.get("max")),
        )
    return specs


def _split(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key, value = key.strip().upper(), value.strip()
    if not sep or not key or not value:
        raise CreationOptionError(f"--co {item!r}: give KEY=VALUE, e.g. LEVEL=9")
    return key, value


def _check_value(spec: OptionSpec, value: str) -> str:
    """``value`` checked against ``spec`` (select values upper-cased)."""
    where = f"--co {spec.name}={value}"
    if spec.type == "string-select":
        if value.upper() not in spec.values:
            allowed = ", ".join(sorted(spec.values))
            raise CreationOptionError(f"{where}: not one of {allowed}")
        return value.upper()
    if spec.type == "boolean":
        if value.upper() not in _TRUE_FALSE:
            raise CreationOptionError(f"{where}: give YES or NO")
        return value.upper()
    if spec.type in ("int", "integer", "float"):
        number = _number(value)
        if number is None or (spec.type != "float" and not number.is_integer()):
            kind = "a number" if spec.type == "float" else "a whole number"
            raise CreationOptionError(f"{where}: not {kind}")
        if spec.min is not None and number < spec.min:
            raise CreationOptionError(f"{where}: below the minimum {spec.min:g}")
        if spec.max is not None and number > spec.max:
            raise CreationOptionError(f"{where}: above the maximum {spec.max:g}")
    return value


def _check_together(options: dict[str, str]) -> None:
    """What GDAL's list cannot say: lossless codecs, LEVEL per codec, tile sizes."""
    for key in ("COMPRESS", "OVERVIEW_COMPRESS"):
        if options.get(key, "") in _LOSSY:
            raise CreationOptionError(
                f"--co {key}={options[key]}: lossy, it would change class codes; "
                "use DEFLATE, ZSTD, LZW or LZMA"
            )
    if "LEVEL" in options:
        codec = options.get("COMPRESS", "DEFLATE").removeprefix("LERC_")
        bounds = LEVEL_RANGES.get(codec)
        if bounds is None:
            raise CreationOptionError(
                f"--co LEVEL={options['LEVEL']}: COMPRESS={codec} takes no level "
                f"(DEFLATE, ZSTD and LZMA do)"
            )
        low, high = bounds
        if not low <= int(float(options["LEVEL"])) <= high:
            raise CreationOptionError(
                f"--co LEVEL={options['LEVEL']}: {codec} levels are {low}-{high}"
            )
    if "BLOCKSIZE" in options and int(float(options["BLOCKSIZE"])) % _TILE_MULTIPLE:
        raise CreationOptionError(
            f"--co BLOCKSIZE={options['BLOCKSIZE']}: not a multiple of "
            f"{_TILE_MULTIPLE} (TIFF tiles)"
        )


def parse_creation_options(
    items: Iterable[str] | Mapping[str, str] | None, driver: str = "COG"
) -> dict[str, str]:
    """``KEY=VALUE`` strings (or a mapping) as checked creation options.

    Args:
        items: the ``--co`` values as given (keys in any case).
        driver: the GDAL driver whose list they are checked against.

    Returns:
        The options by upper-case key (select values upper-cased).

    Raises:
        CreationOptionError: bad syntax, an unknown or reserved key, a bad value,
            a lossy codec, a ``LEVEL`` out of its codec's range, a key given twice.
    """
    pairs = (
        [(str(k).upper(), str(v)) for k, v in items.items()]
        if isinstance(items, Mapping)
        else [_split(item) for item in items or ()]
    )
    specs = driver_options(driver)
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise CreationOptionError(f"--co {key} given twice")
        if key in RESERVED:
            raise CreationOptionError(
                f"--co {key}: set by alosmap (it would change the map's grid or values)"
            )
        if specs is not None:
            spec = specs.get(key)
            if spec is None:
                known = ", ".join(sorted(set(specs) - RESERVED))
                raise CreationOptionError(
                    f"--co {key}: not a creation option of GDAL's {driver} driver "
                    f"(known: {known})"
                )
            value = _check_value(spec, value)
        options[key] = value
    _check_together(options)
    return options


_lock = threading.Lock()
_current: dict[str, str] = {}


def current_creation_options() -> dict[str, str]:
    """The options set by the innermost :func:`creation_options` block (a copy)."""
    with _lock:
        return dict(_current)


@contextlib.contextmanager
def creation_options(
    items: Iterable[str] | Mapping[str, str] | None,
) -> Iterator[dict[str, str]]:
    """Set the creation options of the map writers opened during the block.

    Process-wide (writers open in worker threads too), restored on exit.

    Args:
        items: ``KEY=VALUE`` strings or a mapping; checked by
            :func:`parse_creation_options`.

    Yields:
        The checked options.

    Raises:
        CreationOptionError: see :func:`parse_creation_options`.
    """
    global _current
    options = parse_creation_options(items)
    with _lock:
        previous, _current = _current, {**_current, **options}
    try:
        yield options
    finally:
        with _lock:
            _current = previous
