"""Styles beside every raster alosmap writes: QGIS ``.qml`` files and GDAL PAM sidecars.

A GeoTIFF colour table has no alpha: GDAL reads every entry of it as opaque except
the no-data value's (from the no-data tag), so a map's codes that are not in its
legend would show as opaque black, and QGIS would list all 256 entries of the table
in its legend. The truth is therefore carried beside the map as well:

* ``<map>.tif.aux.xml`` (GDAL's PAM sidecar, :func:`write_pam`): the category names
  (index = pixel value, empty for codes outside the legend) and an RGBA colour table
  in which only the legend's codes are opaque. GDAL (and through it QGIS,
  ``gdal_translate``, rasterio) prefers this table to the one inside the TIFF.
* ``<map>.qml`` (:func:`class_qml`): a QGIS style with a paletted renderer listing
  exactly the legend's codes, names and colours (no data and any other value are
  transparent). QGIS loads ``<name>.qml`` next to ``<name>.tif`` (or ``.vrt``) by
  itself when the layer is added.
* confidence and probabilities files get a viridis ramp over 0-100 %
  (:func:`percent_qml`), in the values QGIS sees: QGIS applies a band's scale
  before rendering, so the ramp of the probabilities (stored as percent with
  scale 0.01) runs over 0-1, that of the confidence (no scale) over 0-100.

Every file is written atomically (:func:`alosmap._fileio.atomic_write_bytes`).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from alosmap._fileio import atomic_write_bytes
from alosmap.classes import ClassInfo
from alosmap.io.maps import sidecar_path

__all__ = [
    "VIRIDIS",
    "class_qml",
    "colour_table",
    "pam_xml",
    "percent_qml",
    "style_path",
    "write_class_styles",
    "write_percent_style",
]

#: Stops of the viridis colour ramp (value in percent, colour).
VIRIDIS: tuple[tuple[int, str], ...] = (
    (0, "#440154"),
    (25, "#3b528b"),
    (50, "#21918c"),
    (75, "#5ec962"),
    (100, "#fde725"),
)
_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def style_path(path: str | os.PathLike[str]) -> Path:
    """The QGIS style QGIS loads by itself for ``path``: ``<stem>.qml`` beside it."""
    p = Path(path)
    return p.with_name(p.stem + ".qml")


def colour_table(classes: Iterable[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """256-entry RGBA table: the legend's codes opaque, all other values transparent."""
    table = {i: (0, 0, 0, 0) for i in range(256)}
    for c in classes:
        table[c.code] = (*c.color, 255)
    return table


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def pam_xml(classes: Iterable[ClassInfo], nodata: int) -> bytes:
    """PAM document for band 1: category names and the RGBA colour table.

    Args:
        classes: the legend.
        nodata: the map's no-data value (its category name stays empty).
    """
    legend = sorted(classes, key=lambda c: c.code)
    names = {c.code: c.name for c in legend if c.code != nodata}
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for code in range(max(names) + 1 if names else 0):
        ET.SubElement(cats, "Category").text = names.get(code, "")
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    for _, (r, g, b, a) in sorted(colour_table(legend).items()):
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _qml(renderer: ET.Element) -> bytes:
    """A QGIS style document around ``renderer`` (nearest-neighbour resampling)."""
    root = ET.Element(
        "qgis",
        version="3.22.0",
        styleCategories="AllStyleCategories",
        hasScaleBasedVisibilityFlag="0",
        maxScale="0",
        minScale="1e+08",
    )
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        maxOversampling="2",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
    )
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return _QML_HEAD.encode() + ET.tostring(root, encoding="utf-8") + b"\n"


def _renderer(kind: str, band: int, **attrs: str) -> ET.Element:
    attrib = {
        "type": kind,
        "opacity": "1",
        "band": str(band),
        "alphaBand": "-1",
        "nodataColor": "",
        **attrs,
    }
    return ET.Element("rasterrenderer", attrib)


def class_qml(classes: Iterable[ClassInfo], nodata: int) -> bytes:
    """QGIS style: a paletted renderer of band 1 with exactly the legend's classes.

    Values that are not in the legend (no data among them) are transparent.
    """
    renderer = _renderer("paletted", 1)
    palette = ET.SubElement(renderer, "colorPalette")
    for c in sorted(classes, key=lambda c: c.code):
        if c.code == nodata:
            continue
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(c.code),
            color=_hex(c.color),
            alpha="255",
            label=c.name,
        )
    return _qml(renderer)


def percent_qml(band: int = 1, title: str = "confidence", scale: float = 1.0) -> bytes:
    """QGIS style: viridis ramp over 0-100 % of ``band`` (no data transparent).

    Args:
        band: the band the style shows.
        title: what the percent is of, for the labels of the ramp's ends.
        scale: the band's scale (GDAL ``scale``: a pixel means ``value * scale``);
            QGIS's GDAL provider applies it before any renderer sees a pixel (the
            band reads as Float32 ``value * scale + offset``; QGIS 3.22, measured:
            a uint8 50 with scale 0.01 samples as 0.5), so the ramp's values are
            ``percent * scale``: 0-1 for the probabilities (scale 0.01), 0-100 for
            the confidence (no scale). The labels stay in percent.
    """
    top = _number(100 * scale)
    renderer = _renderer(
        "singlebandpseudocolor",
        band,
        classificationMin="0",
        classificationMax=top,
    )
    shader = ET.SubElement(renderer, "rastershader")
    ramp = ET.SubElement(
        shader,
        "colorrampshader",
        colorRampType="INTERPOLATED",
        classificationMode="1",
        clip="1",
        minimumValue="0",
        maximumValue=top,
        labelPrecision="0",
    )
    for value, colour in VIRIDIS:
        ET.SubElement(
            ramp,
            "item",
            value=_number(value * scale),
            color=colour,
            alpha="255",
            label=f"{value} % {title}" if value in (0, 100) else f"{value} %",
        )
    return _qml(renderer)


def _number(x: float) -> str:
    """``x`` as QGIS writes numbers in a style: shortest form, no float noise."""
    return f"{round(x, 10):g}"


def write_class_styles(
    path: str | os.PathLike[str],
    classes: Iterable[ClassInfo],
    nodata: int,
    *,
    pam: bool = True,
) -> list[Path]:
    """Write the ``.qml`` (and, with ``pam``, the ``.aux.xml``) of class map ``path``.

    Returns:
        The files written.
    """
    legend = tuple(classes)
    written = [atomic_write_bytes(style_path(path), class_qml(legend, nodata))]
    if pam:
        written.append(atomic_write_bytes(sidecar_path(path), pam_xml(legend, nodata)))
    return written


def write_percent_style(
    path: str | os.PathLike[str], title: str = "confidence", scale: float = 1.0
) -> Path:
    """Write the viridis ``.qml`` of a percent raster (confidence, probabilities).

    ``scale`` is the band's scale (see :func:`percent_qml`).
    """
    return atomic_write_bytes(style_path(path), percent_qml(1, title, scale))
