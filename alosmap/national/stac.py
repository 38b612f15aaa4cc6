"""A STAC catalog of the maps of a batch (needs ``pip install 'alosmap[stac]'``).

:func:`write_catalog` turns batch records (:mod:`alosmap.national.batch`) into a static,
self-contained STAC catalog inside the batch's output directory::

    OUT_DIR/stac/catalog.json                      root catalog
    OUT_DIR/stac/alosmap-<task>/collection.json    one collection per task
    OUT_DIR/stac/alosmap-<task>/<item>/<item>.json one item per map

An item (id = the map's stem, ``<scene stem>_<task>``) has the footprint of the
map's valid pixels (EPSG:4326) as geometry, the source scene's acquisition time as
``datetime``, and assets ``map`` (COG; classification extension with the class codes,
names, colours and pixel counts; raster extension ``raster:bands`` describing each
band: data type, no data, resolution, name and description; projection extension;
file size and SHA-256 multihash) and, when written, ``confidence`` (percent, raster
band with unit ``%``), ``probabilities`` and ``preview`` (the PNG quicklook, roles
``thumbnail`` and ``overview``, which STAC viewers show as the item's picture).
Each collection has summaries: the legend (``classification:classes``), the
acquisition date range (``datetime``), the tasks and platforms. Asset links are
relative (``../../../``), so the output directory can be moved or served as it
is. Properties in the ``alosmap:`` namespace give the task, model, its SHA-256,
the alosmap version, the source scene, the km² mapped and the pixel count of every
class.

Each JSON file is written atomically, so readers never see half a file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alosmap._fileio import atomic_write_bytes
from alosmap._imports import lazy_import
from alosmap.classes import LULC, TASK_RECORDS, WATER, Legend, LegendError
from alosmap.io.raster import L21_NAME, parse_utc

logger = logging.getLogger(__name__)

#: Directory of the catalog inside the batch output directory.
STAC_DIR = "stac"
#: Description of the bundled tasks' collections (others: :func:`_description`).
_COLLECTION_DESCRIPTION = {
    LULC.name: "9-class LULC maps (JAXA HRLULC-derived legend), codes 1-9, 0 = no data",
    WATER.name: "Water maps: 1 water, 0 not water, 255 no data",
}


def record_legend(rec: dict[str, Any]) -> Legend:
    """The legend of a batch record's map: the record's, else its bundled task's.

    Records of earlier releases carry no legend (their task is ``lulc`` or
    ``water``); a record of a user's legend whose legend is unreadable falls back
    to the map's own tags.

    Raises:
        InputRasterError: a record whose legend cannot be found.
    """
    data = rec.get("legend")
    if isinstance(data, dict):
        try:
            return Legend.from_dict(data, source=f"record {rec.get('key')}")
        except LegendError as exc:
            logger.debug("record %s: %s", rec.get("key"), exc)
    task = str(rec.get("task"))
    if task in TASK_RECORDS:
        return TASK_RECORDS[task]
    from alosmap.errors import InputRasterError

    raise InputRasterError(
        f"record {rec.get('key')} of task {task!r} carries no readable legend"
    )


def _description(legend: Legend) -> str:
    """A collection's description: the bundled task's, else the user's legend."""
    if legend.name in _COLLECTION_DESCRIPTION:  # the name of a bundled legend
        return _COLLECTION_DESCRIPTION[legend.name]
    classes = ", ".join(f"{c.code} {c.name}" for c in legend.classes)
    kind = "binary legend" if legend.binary else "legend"
    return (
        f"{legend.title}: maps of a model trained with the user's own {kind} "
        f"{legend.name!r}: {classes}; {legend.nodata} = no data"
    )


def _stac_io() -> Any:
    """A pystac StacIO that writes every file atomically."""
    pystac = lazy_import("pystac")

    class AtomicStacIO(pystac.stac_io.DefaultStacIO):  # type: ignore[name-defined]
        def write_text_to_href(self, href: str, txt: str) -> None:
            path = Path(href)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, txt.encode("utf-8"))

    return AtomicStacIO()


def _hex(rgb: tuple[int, int, int]) -> str:
    return "".join(f"{v:02X}" for v in rgb)


def _datetime(rec: dict[str, Any]) -> tuple[datetime, bool]:
    """Acquisition time of a record (processing time when unknown) and whether known."""
    for key, known in (("acquired", True), ("finished", False)):
        value = rec.get(key)
        if value:
            return parse_utc(str(value)), known
    return datetime.now(timezone.utc), False


def make_item(rec: dict[str, Any], out_dir: Path) -> Any:
    """A pystac Item for one batch record (asset hrefs absolute until saved)."""
    pystac = lazy_import("pystac")
    from pystac.extensions.projection import ProjectionExtension

    when, known = _datetime(rec)
    geometry = rec.get("footprint")
    if geometry:
        from shapely.geometry import shape

        bbox = [round(v, 6) for v in shape(geometry).bounds]
    else:
        bbox = None
    item = pystac.Item(
        id=rec["key"],
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=_properties(rec, known),
    )
    _add_map_asset(item, rec, out_dir)
    crs = rec.get("crs")
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=crs if crs and ":" in crs else None,
        wkt2=None if crs and ":" in crs else crs,
        shape=rec.get("shape"),
        transform=rec.get("transform"),
    )
    _add_confidence_asset(item, rec, out_dir)
    for name, roles, media, title in (
        ("probabilities", ["data"], pystac.MediaType.COG, "class probabilities (%)"),
        (
            "preview",
            ["thumbnail", "overview"],
            pystac.MediaType.PNG,
            "quicklook: SAR scene, map and legend",
        ),
    ):
        if rec.get(name):
            item.add_asset(
                name,
                pystac.Asset(
                    href=str((out_dir / rec[name]).resolve()),
                    media_type=media,
                    roles=roles,
                    title=title,
                ),
            )
    return item


def _band_info(path: Path) -> list[dict[str, Any]]:
    """Data type, no data, resolution and description of each band of ``path``.

    Empty when the file cannot be read (the item is still written, without
    ``raster:bands``).
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as ds:
            res = abs(ds.transform.a) if ds.crs is not None else None
            return [
                {
                    "data_type": ds.dtypes[i],
                    "nodata": ds.nodatavals[i],
                    "spatial_resolution": res,
                    "description": ds.descriptions[i],
                }
                for i in range(ds.count)
            ]
    except (RasterioError, OSError):
        return []


def _apply_raster_bands(
    asset: Any, bands: list[dict[str, Any]], described: list[tuple[str, str, str]]
) -> None:
    """Set ``raster:bands`` of ``asset``, one entry per band of the file.

    ``described`` gives (name, description, unit) per band in order; the unit may
    be empty.
    """
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    out = []
    for info, (name, text, unit) in zip(bands, described, strict=False):
        nodata = info["nodata"]
        band = RasterBand.create(
            nodata=None if nodata is None else int(nodata),
            data_type=DataType(info["data_type"]),
            spatial_resolution=info["spatial_resolution"],
            unit=unit or None,
        )
        band.properties["name"] = name
        band.properties["description"] = text
        out.append(band)
    if out:
        RasterExtension.ext(asset, add_if_missing=True).bands = out


def _add_confidence_asset(item: Any, rec: dict[str, Any], out_dir: Path) -> None:
    """The ``confidence`` asset: ``<map stem>_confidence.tif`` when it exists."""
    pystac = lazy_import("pystac")

    map_path = out_dir / rec["output"]
    name = rec.get("confidence") or f"{Path(rec['output']).stem}_confidence.tif"
    path = out_dir / name
    if not path.is_file() or path == map_path:
        return
    asset = pystac.Asset(
        href=str(path.resolve()),
        media_type=pystac.MediaType.COG,
        roles=["data", "confidence"],
        title="confidence: probability of the mapped class (%)",
    )
    item.add_asset("confidence", asset)
    _apply_raster_bands(
        asset,
        _band_info(path),
        [("confidence", "probability of the mapped class, percent 0-100", "%")],
    )


def _properties(rec: dict[str, Any], known: bool) -> dict[str, Any]:
    """Item properties: ``alosmap:*``, creation time, ALOS-2 platform when known."""
    props: dict[str, Any] = {
        "alosmap:task": rec["task"],
        "alosmap:model": rec.get("model"),
        "alosmap:model_name": rec.get("model_name"),
        "alosmap:model_sha256": rec.get("model_sha256"),
        "alosmap:version": rec.get("alosmap_version"),
        "alosmap:source_scene": rec.get("scene_name"),
        "alosmap:area_km2": round(float(rec.get("area_km2", 0.0)), 3),
        "alosmap:class_pixels": {
            str(c["code"]): c["pixels"] for c in rec.get("classes", [])
        },
        "created": rec.get("finished"),
    }
    if not known:
        props["alosmap:datetime_is_processing_time"] = True
    if L21_NAME.search(rec.get("scene_name", "")):
        props.update(
            {
                "constellation": "alos",
                "platform": "alos-2",
                "instruments": ["palsar-2"],
            }
        )
    return props


def _add_map_asset(item: Any, rec: dict[str, Any], out_dir: Path) -> None:
    """Add the ``map`` asset: the COG, its classes (classification) and file info."""
    pystac = lazy_import("pystac")
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.file import FileExtension

    task = record_legend(rec)
    path = out_dir / rec["output"]
    bands = _band_info(path)
    two_band = len(bands) == 2  # the layout of older releases: band 2 confidence
    asset = pystac.Asset(
        href=str(path.resolve()),
        media_type=pystac.MediaType.COG,
        roles=["data"],
        title=f"{task.title}" + (" with confidence (band 2)" if two_band else ""),
    )
    item.add_asset("map", asset)
    ClassificationExtension.ext(asset, add_if_missing=True).classes = _classes(
        task, rec.get("classes")
    )
    _apply_raster_bands(
        asset,
        bands,
        [
            ("class", f"{task.title}: class code (see classification:classes)", ""),
            ("confidence", "probability of the mapped class, percent 0-100", "%"),
        ],
    )
    FileExtension.ext(asset, add_if_missing=True).apply(
        size=rec.get("size"),
        checksum="1220" + rec["sha256"] if rec.get("sha256") else None,
    )


def _classes(task: Legend, counts: list[dict[str, Any]] | None = None) -> list[Any]:
    """The legend as classification classes, no data last.

    With ``counts`` (batch records' ``classes``), each class also gets its pixel
    count and its percentage of the mapped pixels.
    """
    from pystac.extensions.classification import Classification

    pixels = {int(c["code"]): int(c["pixels"]) for c in counts or []}
    total = sum(pixels.values())
    out = []
    for c in task.classes:
        extra: dict[str, Any] = {}
        if counts is not None:
            n = pixels.get(c.code, 0)
            extra = {
                "count": n,
                "percentage": round(100.0 * n / total, 4) if total else 0.0,
            }
        out.append(
            Classification.create(
                value=c.code,
                description=c.name,
                name=_slug(c.name),
                color_hint=_hex(c.color),
                **extra,
            )
        )
    out.append(
        Classification.create(
            value=task.nodata, description="No data", name="no_data", nodata=True
        )
    )
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def _summarise(collection: Any, legend: Legend, items: list[Any]) -> None:
    """Collection summaries: legend, acquisition date range, task, platforms."""
    pystac = lazy_import("pystac")
    from pystac.extensions.classification import ClassificationExtension

    task = legend.name
    ClassificationExtension.summaries(
        collection, add_if_missing=True
    ).classes = _classes(legend)
    times = sorted(i.datetime for i in items if i.datetime is not None)
    if times:
        collection.summaries.add(
            "datetime",
            pystac.RangeSummary(
                minimum=times[0].isoformat(), maximum=times[-1].isoformat()
            ),
        )
    collection.summaries.add("alosmap:task", [task])
    for key in ("constellation", "platform"):
        values = sorted({i.properties[key] for i in items if key in i.properties})
        if values:
            collection.summaries.add(key, values)


def write_catalog(
    out_dir: str | os.PathLike[str], records: list[dict[str, Any]]
) -> Path:
    """Write the STAC catalog of ``records`` into ``OUT_DIR/stac``.

    Args:
        out_dir: the batch output directory (the maps are there).
        records: batch records (:func:`alosmap.national.batch.read_records`).

    Returns:
        The root ``catalog.json``.

    Raises:
        BackendUnavailableError: pystac is not installed.
    """
    pystac = lazy_import("pystac")
    out = Path(out_dir).resolve()
    root_dir = out / STAC_DIR
    catalog = pystac.Catalog(
        id="alosmap",
        title="alosmap maps",
        description=(
            f"Land-use/land-cover and water maps (and maps of users' own legends) "
            f"made by alosmap from SAR scenes in {out.name}"
        ),
    )
    by_task: dict[str, list[Any]] = {}
    legends: dict[str, Legend] = {}
    for rec in records:
        by_task.setdefault(rec["task"], []).append(make_item(rec, out))
        legends.setdefault(rec["task"], record_legend(rec))
    for task, items in sorted(by_task.items()):
        collection = pystac.Collection(
            id=f"alosmap-{task}",
            title=f"alosmap {task} maps",
            description=_description(legends[task]),
            extent=pystac.Extent.from_items(items),
            license="other",
        )
        _summarise(collection, legends[task], items)
        collection.add_items(items)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(root_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=_stac_io())
    path = root_dir / "catalog.json"
    logger.info("wrote %s (%d items)", path, len(records))
    return path


__all__ = ["STAC_DIR", "make_item", "write_catalog"]
