"""Run by tests/io/test_qgis.py under the system Python that has QGIS (not the venv).

Reads a JSON job from argv[1]: a list of products ``{"path", "png", "style"}``;
loads each raster with QgsRasterLayer (QGIS picks up ``<name>.qml`` beside it by
itself), and, unless that gave the expected renderer, loads the style with
loadNamedStyle; renders ``extent`` (layer CRS) at ``size`` pixels into a PNG with
QgsMapRendererParallelJob; prints one JSON
object per product: renderer type, paletted classes (value, label, RGBA), whether the
style was loaded by QGIS itself, and the opaque colours of the rendered image.
"""

import json
import os
import sys
from collections import Counter

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage


def classes(layer):
    r = layer.renderer()
    if r.type() != "paletted":
        return []
    return [
        [
            c.value,
            c.label,
            [c.color.red(), c.color.green(), c.color.blue(), c.color.alpha()],
        ]
        for c in r.classes()
    ]


def render(layer, item):
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
    colours = Counter()
    for y in range(img.height()):
        for x in range(img.width()):
            c = img.pixelColor(x, y)
            if c.alpha() == 255:
                colours[(c.red(), c.green(), c.blue())] += 1
    return [[list(k), n] for k, n in colours.items()]


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    app = QgsApplication([], False)
    app.initQgis()
    out = []
    for item in job:
        layer = QgsRasterLayer(item["path"], "product")
        auto = layer.isValid() and layer.renderer().type() == item["renderer"]
        if item["renderer"] == "paletted" and auto:
            auto = len(layer.renderer().classes()) == item["n_classes"]
        loaded = None
        if not auto:
            loaded = layer.loadNamedStyle(item["style"])
        out.append(
            {
                "path": item["path"],
                "valid": layer.isValid(),
                "auto_style": auto,
                "loaded": str(loaded),
                "renderer": layer.renderer().type(),
                "classes": classes(layer),
                "colours": render(layer, item),
            }
        )
    print(json.dumps(out), flush=True)
    # QGIS 3.22 may crash while tearing down (exitQgis) after a render job: the
    # result is out, so leave without the teardown
    os._exit(0)


main()
