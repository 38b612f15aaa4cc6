"""Run by tests/io/test_qgis.py under the system Python that has QGIS (not the venv).

Reads a JSON job from argv[1]: a list of products ``{"kind", "path", "png", "style",
"extent", "size", "probes"}`` (``kind``: ``raster`` or ``vector``). A raster is loaded
with QgsRasterLayer (QGIS picks up ``<name>.qml`` beside it by itself) and, unless
that gave the expected renderer, its style is loaded with loadNamedStyle; a vector
with QgsVectorLayer (QGIS's default symbol). Each layer's ``extent`` (layer CRS) is
rendered at ``size`` pixels into a PNG with QgsMapRendererParallelJob. Prints one
JSON list, an object per product: renderer type, paletted classes (value, label,
RGBA), the pseudocolor ramp (classification range and items), whether QGIS loaded
the style by itself, the opaque colours of the rendered image with their pixel
counts, and the RGBA of the image at each of ``probes`` (``[x, y]`` image pixels).
"""

import json
import os
import sys

import numpy as np
from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage


def _rgba(c):
    return [c.red(), c.green(), c.blue(), c.alpha()]


def classes(layer):
    r = layer.renderer()
    if r.type() != "paletted":
        return []
    return [[c.value, c.label, _rgba(c.color)] for c in r.classes()]


def ramp(layer):
    """The pseudocolor renderer's range and ramp items (value, RGBA)."""
    r = layer.renderer()
    if r.type() != "singlebandpseudocolor":
        return None
    shader = r.shader().rasterShaderFunction()
    return {
        "band": r.band(),
        "min": r.classificationMin(),
        "max": r.classificationMax(),
        "items": [[i.value, _rgba(i.color)] for i in shader.colorRampItemList()],
    }


def render(layer, item):
    """Render ``item``'s extent; the image as ``[h, w, 4]`` RGBA uint8."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(QgsRectangle(*item["extent"]))
    settings.setOutputSize(QSize(*item["size"]))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    img = job.renderedImage().convertToFormat(QImage.Format_ARGB32)
    img.save(item["png"])
    w, h = img.width(), img.height()
    bits = img.constBits()
    bits.setsize(img.sizeInBytes())
    bgra = np.frombuffer(bits, np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :w]
    return bgra[..., [2, 1, 0, 3]].copy()  # little-endian ARGB32 is B, G, R, A


def colours(rgba):
    """Opaque colours of the image and how many pixels have each."""
    opaque = rgba[rgba[..., 3] == 255][:, :3]
    values, counts = np.unique(opaque, axis=0, return_counts=True)
    return [[v.tolist(), int(n)] for v, n in zip(values, counts, strict=True)]


def raster(item):
    layer = QgsRasterLayer(item["path"], "product")
    auto = layer.isValid() and layer.renderer().type() == item["renderer"]
    if item["renderer"] == "paletted" and auto:
        auto = len(layer.renderer().classes()) == item["n_classes"]
    loaded = None
    if not auto:
        loaded = layer.loadNamedStyle(item["style"])
    provider = layer.dataProvider()
    return layer, {
        "valid": layer.isValid(),
        "auto_style": auto,
        "loaded": str(loaded),
        "renderer": layer.renderer().type(),
        "classes": classes(layer),
        "ramp": ramp(layer),
        "band_scale": provider.bandScale(1),
    }


def vector(item):
    layer = QgsVectorLayer(item["path"], "product", "ogr")
    return layer, {
        "valid": layer.isValid(),
        "features": layer.featureCount(),
        "geometry": layer.geometryType(),  # 2 = polygon
        "crs": layer.crs().authid(),
        "fields": [f.name() for f in layer.fields()],
    }


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    app = QgsApplication([], False)
    app.initQgis()
    out = []
    for item in job:
        layer, res = (raster if item["kind"] == "raster" else vector)(item)
        image = render(layer, item)
        res["colours"] = colours(image)
        res["probes"] = [image[y, x].tolist() for x, y in item["probes"]]
        out.append({"path": item["path"], **res})
    print(json.dumps(out), flush=True)
    # QGIS 3.22 may crash while tearing down (exitQgis) after a render job: the
    # result is out, so leave without the teardown
    os._exit(0)


main()
