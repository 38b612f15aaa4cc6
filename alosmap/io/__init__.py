"""Raster input/output helpers (rasterio)."""
