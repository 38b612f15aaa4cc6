"""Opening rasters and reading their metadata: acquisition date and time, summary.

The acquisition date of a raster from its own metadata is read here: the
``ACQUISITION_DATE``/``ACQUISITION_DATETIME``/``TIFFTAG_DATETIME`` tags, else the
date in an ALOS-2 Level 2.1 file name. A JAXA 25 m mosaic tile's date lives in the
files beside it (:mod:`alosmap.io.alos2_mosaic`, which builds on this module): the
scene supplies it (:attr:`alosmap.io.scene.SceneInfo.date`,
:func:`alosmap.io.scene.scene_date`), so this module imports no sibling reader.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from alosmap.errors import InputRasterError

#: ALOS-2 Level 2.1 file name: ``IMG-<pol>-ALOS2<orbit:5><frame:4>-<YYMMDD>-``
#: ``<mode:3><look L|R><level>`` then processing, projection and orbit direction
#: letters, e.g. ``IMG-HH-ALOS2237752900-181018-UBSR2.1GUD.tif``.
L21_NAME = re.compile(
    r"IMG-(?P<pol>HH|HV|VH|VV)-ALOS2(?P<orbit>\d{5})(?P<frame>\d{4})-"
    r"(?P<date>\d{6})-(?P<mode>[A-Z]{3})(?P<look>[LR])(?P<level>\d\.\d)"
    r"(?P<proc>[GR_])(?P<proj>[UPML_])(?P<dir>[AD])"
)
_DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITION_DATETIME", "TIFFTAG_DATETIME")


#: URL schemes GDAL reads through a virtual file system, and the prefix of each.
URL_PREFIXES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
#: ``scheme:/`` or ``scheme://`` (``pathlib.Path`` collapses the double slash).
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/+(?P<rest>.*)$", re.S)


def is_virtual(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a GDAL virtual path (``/vsi...``) or a URL, not a file.

    ``s3://``, ``https://`` and the like count, also when ``pathlib.Path`` has
    collapsed their ``//`` into ``/``.
    """
    text = os.fspath(path)
    if text.startswith("/vsi"):
        return True
    m = _URL.match(text)
    return m is not None and m["scheme"].lower() in URL_PREFIXES


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The name GDAL opens for ``path``: URLs become ``/vsicurl/``, ``/vsis3/`` ...

    ``https://h/x.tif`` → ``/vsicurl/https://h/x.tif``, ``s3://b/k.tif`` →
    ``/vsis3/b/k.tif`` (also ``gs://``, ``az://``, ``http://``, ``ftp://``). A path
    that went through ``pathlib.Path``, which collapses ``//``, gets it back: in a
    URL (``https:/h`` → ``https://h``), before a nested ``/vsi`` path, and before an
    absolute archive path (``/vsizip/tmp/a.zip/x.tif`` → ``/vsizip//tmp/a.zip/x.tif``
    when ``tmp`` exists at the root and not in the current directory). Local paths
    are returned as they are.
    """
    text = os.fspath(path)
    if not is_virtual(text):
        return text
    if text.startswith("/vsi"):
        return _uncollapse(text)
    m = _URL.match(text)
    if m is None:  # pragma: no cover - is_virtual matched one of the two
        return text
    prefix = URL_PREFIXES[m["scheme"].lower()]
    if prefix == "/vsicurl/":
        return prefix + _full_url(text)
    return prefix + m["rest"]


_VSI = re.compile(r"^(?P<vsi>/vsi[a-z0-9_]+/)(?P<rest>.*)$", re.S)
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def _uncollapse(text: str) -> str:
    """Undo ``pathlib``'s ``//`` → ``/`` in a ``/vsi...`` path (see gdal_path)."""
    m = _VSI.match(text)
    if m is None:
        return text
    vsi, rest = m["vsi"], m["rest"]
    if rest.startswith("/vsi") or re.match(r"vsi[a-z0-9_]+/", rest):
        return vsi + _uncollapse("/" + rest.lstrip("/"))
    if _URL.match(rest):
        return vsi + _full_url(rest)
    first = rest.split("/", 1)[0]
    if (
        vsi in _ARCHIVES
        and first
        and not rest.startswith(("/", "{"))
        and not os.path.exists(first)
        and os.path.exists("/" + first)
    ):
        return vsi + "/" + rest
    return text


def _full_url(text: str) -> str:
    """``scheme:/host/...`` (collapsed by ``pathlib``) → ``scheme://host/...``."""
    m = _URL.match(text)
    if m is None:
        return text
    return f"{m['scheme']}://{m['rest']}"


def raster_stem(path: str | os.PathLike[str]) -> str:
    """The file name of ``path`` without its suffix, also for URLs and ``/vsi`` paths.

    ``/vsizip/a.zip/scene.tif`` → ``scene``; ``https://h/x/scene.tif?sig=1`` →
    ``scene`` (query and fragment dropped).
    """
    text = os.fspath(path)
    if is_virtual(text):
        text = re.split(r"[?#]", gdal_path(text), maxsplit=1)[0].rstrip("/")
    return Path(text).stem


def check_input_file(
    path: str | os.PathLike[str],
    what: str = "input",
    error: type[Exception] = InputRasterError,
) -> None:
    """Refuse a local ``path`` that is missing, a directory or unreadable.

    GDAL virtual paths and URLs are not checked here (GDAL reports on them when
    they are opened).

    Args:
        path: the file.
        what: what the file is, for the message (``scene``, ``map``, ``model``).
        error: the exception to raise (an :class:`~alosmap.errors.AlosmapError`).

    Raises:
        InputRasterError: (or ``error``) the file is missing, a directory, or not
            readable.
    """
    if is_virtual(path):
        return
    p = Path(path)
    if not p.exists():
        raise error(f"{what} not found: {p}")
    if p.is_dir():
        raise error(f"{what} is a directory, not a file: {p}")
    if not os.access(p, os.R_OK):
        raise error(f"{what} is not readable (permissions): {p}")


def open_raster(
    path: str | os.PathLike[str], *, decode_threads: bool = False
) -> rasterio.io.DatasetReader:
    """Open a raster for reading; every failure becomes an :class:`InputRasterError`.

    Args:
        path: a local file (GeoTIFF, VRT, anything GDAL reads), a GDAL virtual
            path (``/vsizip/``, ``/vsicurl/``, ``/vsis3/`` ...) or a URL
            (``https://``, ``s3://``, ``gs://``; see :func:`gdal_path`).
        decode_threads: a compressed GeoTIFF decodes the blocks of each read on all
            cores (GDAL's ``NUM_THREADS`` open option; GDAL releases the GIL, so
            a reader thread then overlaps the model). Other formats, and remote
            files (:func:`is_remote`), open as usual.

    Raises:
        InputRasterError: the file is missing or GDAL cannot open it (the message
            says why: :func:`read_error`).
    """
    check_input_file(path)
    name = gdal_path(path)
    try:
        ds = rasterio.open(name)
        if (
            decode_threads
            and ds.driver == "GTiff"
            and ds.compression is not None
            and not is_remote(name)
        ):
            ds.close()
            ds = rasterio.open(name, NUM_THREADS="ALL_CPUS")
        return ds
    except (RasterioError, OSError) as exc:
        raise InputRasterError(
            f"cannot read {name} as a raster: {read_error(exc, name)}"
        ) from exc


#: GDAL's network file systems (a ``/vsizip/`` path may hold one: nested).
_REMOTE_VSI = (
    "/vsicurl",
    "/vsis3",
    "/vsigs",
    "/vsiaz",
    "/vsiadls",
    "/vsioss",
    "/vsiswift",
    "/vsiwebhdfs",
    "/vsihdfs",
)
#: What rasterio says when GDAL's own error is in the exception's causes.
_SEE_CAUSE = "See previous exception"
#: GDAL's words for a server that answers a ``Range`` request with the whole file.
_NO_RANGE = "Range downloading not supported"
#: GDAL's (and curl's) words for a connection that failed or broke off: a short
#: read, no answer (not an HTTP error status such as 404, which speaks for itself).
_NETWORK_FAILURE = re.compile(
    r"got \d+ bytes, expected \d+|CURL error|connect|Empty reply|timed out|"
    r"Timeout|transfer closed|Recv failure|response_code=(0|206)\b",
    re.I,
)


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether GDAL reads ``path`` over the network (``/vsicurl/``, URLs, ``s3://``).

    Remote GeoTIFFs are opened without GDAL's multi-threaded decoding
    (:func:`open_raster`): its worker threads fetch the blocks, and a failed
    request there reaches stderr as a bare ``ERROR 1:`` line while the read
    itself reports a misleading decoding error.
    """
    name = gdal_path(path)
    return any(vsi + "/" in name for vsi in _REMOTE_VSI)


def read_error(
    exc: BaseException,
    source: str | os.PathLike[str],
    driver: str | None = None,
    hint: str | None = None,
) -> str:
    """What made a GDAL open or read fail, in GDAL's words, with a hint.

    rasterio raises ``Read failed. See previous exception for details.`` with
    GDAL's errors chained as causes; the deepest one names what went wrong: the
    missing source file of a VRT, a short read from a server. A server that
    ignores HTTP ``Range`` requests is said to be one (GDAL needs them to read a
    remote file in parts).

    Args:
        exc: the exception rasterio raised.
        source: the path GDAL opened (a network path gets the hint that the
            connection failed, where GDAL's words say so).
        driver: the dataset's GDAL driver when it is open (a ``VRT``'s missing
            file is one of its sources).
        hint: said in parentheses when none of the hints above applies.

    Returns:
        One line: the cause, then a hint in parentheses where one helps.
    """
    causes: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = " ".join(str(e).split())
        if text and _SEE_CAUSE not in text and text not in causes:
            causes.append(text)
        nxt = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        # GDAL's errors (rasterio's CPLE_* classes) and I/O errors, nothing else
        gdal = nxt is not None and type(nxt).__module__.startswith("rasterio")
        e = nxt if gdal or isinstance(nxt, OSError) else None
    cause = causes[-1] if causes else type(exc).__name__
    name = os.fspath(source)
    if any(_NO_RANGE in c for c in causes):
        return (
            f"the server does not support HTTP Range requests ({cause.rstrip('!')}); "
            "GDAL needs them to read a file over HTTP: serve it from a server that "
            "supports them, or download it and map the local copy"
        )
    if is_remote(name) and _NETWORK_FAILURE.search(" ".join(causes)):
        return (
            f"{cause} (reading over the network failed: did the server stop, or "
            "cut the connection?)"
        )
    if driver == "VRT" and re.search(
        r"No such file|does not exist|not recognized as", cause
    ):
        return f"{cause} (a source file of the VRT is missing or unreadable)"
    return f"{cause} ({hint})" if hint else cause


def acquisition_date(path: str | os.PathLike[str], tags: dict[str, str]) -> date | None:
    """Acquisition date from the metadata tags, else an ALOS-2 L2.1 file name.

    None otherwise; a mosaic tile's date comes from its date file, through the
    scene (:func:`alosmap.io.scene.scene_date`).
    """
    for key in _DATE_TAGS:
        value = tags.get(key)
        if value:
            m = re.match(r"(\d{4})[-:]?(\d{2})[-:]?(\d{2})", value)
            if m:
                try:
                    return date(int(m[1]), int(m[2]), int(m[3]))
                except ValueError:
                    pass
    m = L21_NAME.search(raster_stem(path))
    if m:
        d = m["date"]
        try:
            return date(2000 + int(d[:2]), int(d[2:4]), int(d[4:]))
        except ValueError:
            return None
    return None


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (a trailing ``Z`` allowed); one without a zone is UTC.

    Raises:
        ValueError: ``text`` is not ISO 8601.
    """
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def acquisition_datetime(
    path: str | os.PathLike[str], tags: dict[str, str]
) -> datetime | None:
    """Acquisition time from the tags, else from an ALOS-2 L2.1 file name (UTC).

    ``ACQUISITION_DATETIME`` (ISO 8601) gives the time of day; a date alone
    (``ACQUISITION_DATE`` or the ``YYMMDD`` of the file name) gives midnight UTC.
    """
    text = tags.get("ACQUISITION_DATETIME", "")
    if text:
        with contextlib.suppress(ValueError):
            return parse_utc(text)
    d = acquisition_date(path, tags)
    if d is None:
        return None
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def describe_raster(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a raster: size, bands, CRS, pixel size, no-data, units guess, date.

    Reads only a decimated overview of the first band for the units guess.
    """
    from alosmap.radiometry import guess_units

    with open_raster(path) as ds:
        tags = ds.tags()
        t = ds.transform
        out: dict[str, Any] = {
            "path": str(path),
            "driver": ds.driver,
            "size": f"{ds.width} x {ds.height} px",
            "bands": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs.to_string() if ds.crs else None,
            "pixel_size": (abs(t.a), abs(t.e)) if ds.crs else None,
            "bounds": tuple(round(v, 6) for v in ds.bounds),
            "nodata": ds.nodata,
            "band_descriptions": [d for d in ds.descriptions],
        }
        f = max(1, max(ds.width, ds.height) // 1024)
        h, w = max(1, ds.height // f), max(1, ds.width // f)
        try:
            sample = ds.read(
                1, out_shape=(h, w), window=Window(0, 0, ds.width, ds.height)
            )
        except (RasterioError, OSError) as exc:
            raise InputRasterError(
                f"cannot read pixels of {path}: {read_error(exc, path, ds.driver)}"
            ) from exc
        valid = (
            np.isfinite(sample)
            if sample.dtype.kind == "f"
            else np.ones_like(sample, dtype=bool)
        )
        if ds.nodata is not None:
            valid &= sample != ds.nodata
        out["valid_fraction"] = round(float(valid.mean()), 4)
        out["units_guess"] = (
            guess_units(sample[valid], ds.dtypes[0]) if valid.any() else None
        )
        d = acquisition_date(path, tags)
        out["acquisition_date"] = d.isoformat() if d else None
        if ds.crs is not None and valid.any():
            out["footprint_wgs84"] = _footprint_wkt(valid, ds, f)
    return out


def _footprint_wkt(valid: np.ndarray, ds: Any, factor: int) -> str:
    """Outline of the valid pixels (decimated mask) as WKT in EPSG:4326."""
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    h, w = valid.shape
    t = ds.transform @ ds.transform.scale(ds.width / w, ds.height / h)
    polys = [
        shape(geom)
        for geom, v in shapes(valid.astype(np.uint8), mask=valid, transform=t)
        if v == 1
    ]
    outline = unary_union(polys).convex_hull
    geom = transform_geom(ds.crs, "EPSG:4326", mapping(outline))
    from shapely import wkt

    return wkt.dumps(shape(geom).simplify(2e-4), rounding_precision=5)
