"""Files on disk, through rasterio/GDAL.

* :mod:`alosmap.io.raster`: opening rasters, acquisition date and time, summaries.
* :mod:`alosmap.io.scene`: reading SAR scenes strip by strip, in dB.
* :mod:`alosmap.io.writer`: :class:`~alosmap.io.writer.MapWriter`, the class map
  (confidence, probabilities) as Cloud-Optimized GeoTIFFs.
* :mod:`alosmap.io.maps`: reading class maps back: legend, class names, strips.
* :mod:`alosmap.io.style`: QGIS styles and GDAL colour tables / categories of maps.
"""
