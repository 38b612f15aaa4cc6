"""National scale: many scenes, mosaics on the JAXA grid, and products of maps.

``batch`` maps scene lists (resumable, sharded), ``mosaic`` merges maps onto the
JAXA 1° grid, ``stac`` catalogues them; ``evaluate``, ``stats`` and ``vectorize``
read class maps (restricted to areas of interest by :mod:`alosmap.io.aoi`).
"""
