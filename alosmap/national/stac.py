"""STAC catalogs of alosmap's maps (needs ``pip install 'alosmap[stac]'``).

:func:`write_catalog` turns batch records (:mod:`alosmap.national.batch`) into a static,
self-contained STAC catalog inside the batch's output directory::

    OUT_DIR/stac/catalog.json                      root catalog
    OUT_DIR/stac/license.txt                       what the licence link says (default)
    OUT_DIR/stac/alosmap-<task>/collection.json    one collection per task
    OUT_DIR/stac/alosmap-<task>/<item>/<item>.json one item per map

:func:`write_mosaic_catalog` does the same for a mosaic (:mod:`alosmap.national.mosaic`
calls it): one item per cell, the VRTs as assets of the collection::

    MOSAIC_DIR/stac/catalog.json, license.txt, alosmap-<task>-mosaic/collection.json,
    MOSAIC_DIR/stac/alosmap-<task>-mosaic/LC_N35E139/LC_N35E139.json

An item (id = the map's stem, ``<scene stem>_<task>``) has the footprint of the
map's valid pixels (EPSG:4326) as geometry, the source scene's acquisition time as
``datetime``, and assets ``map`` (COG; classification extension with the class codes,
names, colours and pixel counts; raster extension ``raster:bands`` describing each
band: data type, no data, resolution, name and description; projection extension),
and, when written, ``confidence`` (percent, raster band with unit ``%``),
``probabilities`` (one band per class, scale 0.01) and ``preview`` (the PNG
quicklook, roles ``thumbnail`` and ``overview``, which STAC viewers show as the
item's picture). Every asset has ``file:size`` and ``file:checksum`` (SHA-256 as a
multihash: ``1220`` + hex digest). Provenance, from the map's own tags
(:func:`alosmap.io.writer.provenance`): the processing extension
(``processing:software`` ``{"alosmap": version}``, ``processing:level`` ``L4``: model
output, ``processing:lineage``: model, its SHA-256, the input and the options,
``processing:datetime``), a ``derived_from`` link to the source scene as given (a
path, or its URL without secrets) and the scientific extension's citation of the
paper the model comes from (no DOI is given for it, so none is written:
:data:`PAPER_DOI`).

Each collection has ``item_assets`` (what every item's assets are: title, type,
roles, bands, classes), ``providers`` (alosmap as processor; JAXA as producer and
licensor of ALOS-2 scenes), a ``license`` and its link (``license.txt`` beside
the catalog unless a licence is given: the maps' terms are their publisher's and
those of their source scenes), the citation, and summaries: the legend
(``classification:classes``), the acquisition date range (``datetime``), the
tasks and platforms. Asset links are relative (``../../../``), so the output
directory can be moved or served as it is. Properties in the ``alosmap:``
namespace give the task, model, its SHA-256, the alosmap version, the source
scene, the km² mapped and the pixel count of every class.

Each JSON file is written atomically, so readers never see half a file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alosmap._fileio import atomic_write_bytes, sha256_file
from alosmap._imports import lazy_import
from alosmap._version import __version__
from alosmap.classes import LULC, TASK_RECORDS, WATER, Legend, LegendError
from alosmap.io.raster import L21_NAME, parse_utc

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.national.mosaic import MosaicResult, SourceMap

logger = logging.getLogger(__name__)

#: Directory of the catalog inside the batch (or mosaic) output directory.
STAC_DIR = "stac"
#: Description of the bundled tasks' collections (others: :func:`_description`).
_COLLECTION_DESCRIPTION = {
    LULC.name: "9-class LULC maps (JAXA HRLULC-derived legend), codes 1-9, 0 = no data",
    WATER.name: "Water maps: 1 water, 0 not water, 255 no data",
}
#: The processing extension (pystac has no class for it: its fields are set by hand).
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
#: ``processing:level`` of a map: model output derived from lower-level data.
PROCESSING_LEVEL = "L4"
#: The paper of the model (``sci:citation``).
PAPER_CITATION = (
    'A. Caglayan, N. Imamoglu, T. Kouyama, "Enhanced LULC Segmentation via '
    'Lightweight Model Refinements on ALOS-2 SAR Data", National Institute of '
    "Advanced Industrial Science and Technology (AIST)"
)
#: The paper's DOI: None, as none is given for it (``sci:doi`` is then left out
#: rather than invented).
PAPER_DOI: str | None = None
#: Licence of the collections unless one is given (SPDX id or ``other``).
DEFAULT_LICENSE = "other"
#: What ``license.txt`` says when no licence is given.
_LICENSE_TEXT = """\
Terms of use of these maps

The publisher of this catalog has not set a licence for these maps. They were
made by alosmap {version} (software under the Apache-2.0 licence) from the
source scenes that each item links to (rel "derived_from"); the terms of use of
those scenes apply to the maps too (ALOS-2 PALSAR-2 data: JAXA's terms).
"""
#: SHA-256 multihash prefix (``file:checksum``): function 0x12, 32 bytes.
_MULTIHASH_SHA256 = "1220"


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


# --------------------------------------------------------------------------------------
# assets
# --------------------------------------------------------------------------------------

#: Each asset kind: title, media type key, roles, description (item_assets too).
_ASSETS: dict[str, tuple[str, str, list[str], str]] = {
    "map": ("class map", "COG", ["data"], "class codes (see classification:classes)"),
    "confidence": (
        "confidence: probability of the mapped class (%)",
        "COG",
        ["data", "confidence"],
        "percent 0-100, 255 = no data",
    ),
    "probabilities": (
        "class probabilities (%)",
        "COG",
        ["data"],
        "one band per class: percent 0-100 (scale 0.01: a probability), 255 = no data",
    ),
    "preview": (
        "quicklook: SAR scene, map and legend",
        "PNG",
        ["thumbnail", "overview"],
        "PNG picture of the scene and its map",
    ),
}


def _asset(name: str, path: Path, title: str | None = None) -> Any:
    """An asset of kind ``name`` for ``path`` (href absolute until saved)."""
    pystac = lazy_import("pystac")

    default_title, media, roles, description = _ASSETS[name]
    return pystac.Asset(
        href=str(path.resolve()),
        media_type=getattr(pystac.MediaType, media),
        roles=list(roles),
        title=title or default_title,
        description=description,
    )


def _file_info(
    asset: Any, path: Path, size: int | None = None, sha256: str | None = None
) -> None:
    """``file:size`` and ``file:checksum`` (SHA-256 multihash) of ``asset``.

    ``size`` and ``sha256`` as a batch record gives them, else read from the file
    (left out where it cannot be read).
    """
    from pystac.extensions.file import FileExtension

    if size is None or sha256 is None:
        try:
            size, sha256 = path.stat().st_size, sha256_file(path)
        except OSError as exc:
            logger.debug("%s: no file:size/checksum (%s)", path, exc)
            return
    FileExtension.ext(asset, add_if_missing=True).apply(
        size=int(size), checksum=_MULTIHASH_SHA256 + sha256
    )


def _read_file(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each band's data type, no data, resolution, scale; the provenance tags.

    The tags as :func:`alosmap.io.writer.provenance` gives them, plus ``tags``
    (all of the file's). Empty when the file cannot be read (the item is still
    written, without ``raster:bands`` and the provenance the tags would give).
    """
    import rasterio
    from rasterio.errors import RasterioError

    from alosmap.io.writer import provenance

    try:
        with rasterio.open(path) as ds:
            res = abs(ds.transform.a) if ds.crs is not None else None
            bands = [
                {
                    "data_type": ds.dtypes[i],
                    "nodata": ds.nodatavals[i],
                    "spatial_resolution": res,
                    "description": ds.descriptions[i],
                    "scale": ds.scales[i],
                    "offset": ds.offsets[i],
                }
                for i in range(ds.count)
            ]
            return bands, {**provenance(ds.tags()), "tags": ds.tags()}
    except (RasterioError, OSError):
        return [], {}


def _band_info(path: Path) -> list[dict[str, Any]]:
    """Data type, no data, resolution and description of each band of ``path``."""
    return _read_file(path)[0]


def _apply_raster_bands(
    asset: Any, bands: list[dict[str, Any]], described: list[tuple[str, str, str]]
) -> None:
    """Set ``raster:bands`` of ``asset``, one entry per band of the file.

    ``described`` gives (name, description, unit) per band in order; the unit may
    be empty. A band with a scale other than 1 also gets ``scale`` and ``offset``.
    """
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    out = []
    for info, (name, text, unit) in zip(bands, described, strict=False):
        nodata = info["nodata"]
        scaled = info.get("scale", 1.0) not in (None, 1.0)
        band = RasterBand.create(
            nodata=None if nodata is None else int(nodata),
            data_type=DataType(info["data_type"]),
            spatial_resolution=info["spatial_resolution"],
            unit=unit or None,
            scale=info["scale"] if scaled else None,
            offset=info.get("offset") or 0.0 if scaled else None,
        )
        band.properties["name"] = name
        band.properties["description"] = text
        out.append(band)
    if out:
        RasterExtension.ext(asset, add_if_missing=True).bands = out


def _add_extra_assets(item: Any, rec: dict[str, Any], out_dir: Path) -> None:
    """``confidence``, ``probabilities`` and ``preview`` where they exist."""
    map_path = out_dir / rec["output"]
    stem = Path(rec["output"]).stem
    wanted = {
        "confidence": rec.get("confidence") or f"{stem}_confidence.tif",
        "probabilities": rec.get("probabilities"),
        "preview": rec.get("preview"),
    }
    for name, file in wanted.items():
        if not file:
            continue
        path = out_dir / file
        if not path.is_file() or path == map_path:
            continue
        asset = _asset(name, path)
        item.add_asset(name, asset)
        _file_info(asset, path)
        if name == "confidence":
            _apply_raster_bands(
                asset,
                _band_info(path),
                [("confidence", "probability of the mapped class, percent 0-100", "%")],
            )
        elif name == "probabilities":
            bands = _band_info(path)
            what = "probability of the class: percent, times the scale 0-1"
            _apply_raster_bands(
                asset,
                bands,
                [
                    (b["description"] or f"band {i}", what, "")
                    for i, b in enumerate(bands, start=1)
                ],
            )


def _add_map_asset(item: Any, rec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Add the ``map`` asset (classes, bands, file info); the map's provenance."""
    from pystac.extensions.classification import ClassificationExtension

    task = record_legend(rec)
    path = out_dir / rec["output"]
    bands, prov = _read_file(path)
    two_band = len(bands) == 2  # the layout of older releases: band 2 confidence
    asset = _asset(
        "map", path, task.title + (" with confidence (band 2)" if two_band else "")
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
    _file_info(asset, path, rec.get("size"), rec.get("sha256"))
    return prov


# --------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------


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
    prov = _add_map_asset(item, rec, out_dir)
    crs = rec.get("crs")
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=crs if crs and ":" in crs else None,
        wkt2=None if crs and ":" in crs else crs,
        shape=rec.get("shape"),
        transform=rec.get("transform"),
    )
    _add_extra_assets(item, rec, out_dir)
    _add_provenance(item, prov, rec, _scene_lineage(prov, rec))
    source = prov.get("SOURCE_INPUT") or _source_of_record(rec)
    if source:
        item.add_link(_derived_from(source, "source scene"))
    return item


def _source_of_record(rec: dict[str, Any]) -> str | None:
    """The scene of a record as a link target: URL, GDAL path or file path."""
    scene = rec.get("scene")
    if not scene:
        return None
    from alosmap.io.writer import input_as_given

    scene = input_as_given(str(scene))
    return scene.removeprefix("/vsicurl/") if "://" in scene else scene


def _derived_from(href: str, title: str) -> Any:
    """A ``derived_from`` link to ``href`` (a URL, or a path made absolute)."""
    pystac = lazy_import("pystac")

    if "://" not in href and not href.startswith("/vs"):
        href = str(Path(href).resolve())
    return pystac.Link(rel=pystac.RelType.DERIVED_FROM, target=href, title=title)


def _scene_lineage(prov: dict[str, Any], rec: dict[str, Any]) -> str:
    """``processing:lineage`` of a scene's map: model, its SHA-256, input, options."""
    params = prov.get("ALOSMAP_PARAMS")
    options = params if isinstance(params, dict) else rec.get("options") or {}
    wanted = ("tile", "overlap", "precision", "backend", "band", "input_units")
    said = ", ".join(f"{k} {options[k]}" for k in wanted if options.get(k) is not None)
    model = prov.get("ALOSMAP_MODEL_FILE") or rec.get("model") or "?"
    sha = prov.get("ALOSMAP_MODEL_SHA256") or rec.get("model_sha256") or "?"
    source = prov.get("SOURCE_INPUT") or rec.get("scene_name") or "?"
    version = prov.get("ALOSMAP_VERSION") or rec.get("alosmap_version")
    return (
        f"Classified by alosmap {version}"
        f" with the model {prov.get('ALOSMAP_MODEL') or rec.get('model_name')}"
        f" ({model}, SHA-256 {sha}) from the SAR scene {source}"
        + (f"; {said}" if said else "")
    )


def _add_provenance(
    obj: Any, prov: dict[str, Any], rec: dict[str, Any], lineage: str
) -> None:
    """Processing and scientific extension fields of an item (or collection)."""
    from pystac.extensions.scientific import ScientificExtension

    version = prov.get("ALOSMAP_VERSION") or rec.get("alosmap_version") or __version__
    fields = {
        "processing:level": PROCESSING_LEVEL,
        "processing:lineage": lineage,
        "processing:software": {"alosmap": str(version)},
    }
    if rec.get("finished"):
        fields["processing:datetime"] = parse_utc(str(rec["finished"])).isoformat()
    target = obj.properties if hasattr(obj, "properties") else obj.extra_fields
    target.update(fields)
    if PROCESSING_SCHEMA not in obj.stac_extensions:
        obj.stac_extensions.append(PROCESSING_SCHEMA)
    ScientificExtension.ext(obj, add_if_missing=True).apply(
        doi=PAPER_DOI, citation=PAPER_CITATION
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
        props.update(_ALOS2)
    return props


#: Platform fields of an ALOS-2 scene's map.
_ALOS2 = {"constellation": "alos", "platform": "alos-2", "instruments": ["palsar-2"]}


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


# --------------------------------------------------------------------------------------
# collections
# --------------------------------------------------------------------------------------


def _summarise(collection: Any, legend: Legend, items: list[Any]) -> None:
    """Collection summaries: legend, acquisition date range, task, platforms."""
    pystac = lazy_import("pystac")
    from pystac.extensions.classification import ClassificationExtension

    task = legend.name
    ClassificationExtension.summaries(
        collection, add_if_missing=True
    ).classes = _classes(legend)
    times = sorted(
        t
        for i in items
        for t in (i.datetime, i.common_metadata.start_datetime)
        if t is not None
    )
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


def _item_assets(legend: Legend, names: list[str]) -> dict[str, Any]:
    """``item_assets``: what the assets ``names`` of every item are."""
    pystac = lazy_import("pystac")

    out = {}
    for name in names:
        title, media, roles, description = _ASSETS[name]
        extra: dict[str, Any] = {}
        if name == "map":
            extra["classification:classes"] = [c.to_dict() for c in _classes(legend)]
            extra["raster:bands"] = [
                {"name": "class", "data_type": "uint8", "nodata": legend.nodata}
            ]
        elif name == "confidence":
            extra["raster:bands"] = [
                {"name": "confidence", "data_type": "uint8", "nodata": 255, "unit": "%"}
            ]
        out[name] = pystac.ItemAssetDefinition.create(
            title=title,
            description=description,
            media_type=str(getattr(pystac.MediaType, media)),
            roles=list(roles),
            extra_fields=extra,
        )
    return out


def _homepage() -> str | None:
    """The home page of alosmap, from the installed package's metadata."""
    from importlib import metadata

    try:
        urls = metadata.metadata("alosmap").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "homepage":
            return url.strip()
    return None


def _collection(
    collection_id: str,
    title: str,
    legend: Legend,
    items: list[Any],
    licence: tuple[str, str | None],
) -> Any:
    """A collection of ``items``: extent, providers, licence, item assets, citation."""
    pystac = lazy_import("pystac")

    licence_id, licence_href = licence
    alos2 = any(i.properties.get("platform") == "alos-2" for i in items)
    providers = [
        pystac.Provider(
            "alosmap",
            description=f"alosmap {__version__}: maps from SAR scenes",
            roles=[pystac.ProviderRole.PROCESSOR],
            url=_homepage(),
        )
    ]
    if alos2:
        providers.append(
            pystac.Provider(
                "JAXA",
                description="Japan Aerospace Exploration Agency: ALOS-2 PALSAR-2 data",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
            )
        )
    collection = pystac.Collection(
        id=collection_id,
        title=title,
        description=_description(legend),
        extent=pystac.Extent.from_items(items),
        license=licence_id,
        providers=providers,
        keywords=["land cover", "land use", "SAR", "segmentation", legend.name],
    )
    names = [n for n in _ASSETS if any(n in i.assets for i in items)]
    collection.item_assets = _item_assets(legend, names)
    if licence_href:
        if Path(licence_href).is_absolute() and Path(licence_href).is_file():
            licence_href = f"../{Path(licence_href).name}"  # beside the root catalog
        collection.add_link(
            pystac.Link(
                rel=pystac.RelType.LICENSE,
                target=licence_href,
                media_type="text/plain" if licence_href.endswith(".txt") else None,
                title=f"licence: {licence_id}",
            )
        )
    _add_provenance(collection, {}, {}, "alosmap maps of SAR scenes")
    from pystac.extensions.raster import RasterExtension

    collection.stac_extensions.append(RasterExtension.get_schema_uri())  # item_assets
    _summarise(collection, legend, items)
    collection.add_items(items)
    return collection


def _licence(root_dir: Path, licence: str, href: str | None) -> tuple[str, str | None]:
    """The licence id and the link target; writes ``license.txt`` when none is given.

    An SPDX id without ``href`` links to its SPDX page.
    """
    if href:
        return licence, href
    if licence not in ("other", "proprietary", "various"):
        return licence, f"https://spdx.org/licenses/{licence}.html"
    path = root_dir / "license.txt"
    root_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _LICENSE_TEXT.format(version=__version__).encode())
    return licence, str(path)


def _save(catalog: Any, root_dir: Path) -> Path:
    catalog.normalize_hrefs(str(root_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(lazy_import("pystac").CatalogType.SELF_CONTAINED, stac_io=_stac_io())
    return root_dir / "catalog.json"


def write_catalog(
    out_dir: str | os.PathLike[str],
    records: list[dict[str, Any]],
    *,
    license: str = DEFAULT_LICENSE,
    license_href: str | None = None,
) -> Path:
    """Write the STAC catalog of ``records`` into ``OUT_DIR/stac``.

    Args:
        out_dir: the batch output directory (the maps are there).
        records: batch records (:func:`alosmap.national.batch.read_records`).
        license: the maps' licence: an SPDX id, or ``other``.
        license_href: where the licence is; default the SPDX page of an SPDX id,
            else ``stac/license.txt`` (written: the maps' terms are their
            publisher's and their source scenes').

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
    licence = _licence(root_dir, license, license_href)
    for task, items in sorted(by_task.items()):
        catalog.add_child(
            _collection(
                f"alosmap-{task}", f"alosmap {task} maps", legends[task], items, licence
            )
        )
    path = _save(catalog, root_dir)
    logger.info("wrote %s (%d items)", path, len(records))
    return path


# --------------------------------------------------------------------------------------
# mosaics
# --------------------------------------------------------------------------------------


def _cell_item(path: Path, maps: list[SourceMap], legend: Legend, merge: str) -> Any:
    """The item of one mosaic cell (and its confidence file, when there is one)."""
    pystac = lazy_import("pystac")
    import rasterio
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from shapely.geometry import box, mapping

    from alosmap.io.writer import confidence_path

    bands, prov = _read_file(path)
    tags = prov.pop("tags", {})
    with rasterio.open(path) as ds:
        crs, shape = ds.crs.to_string(), [ds.height, ds.width]
        transform, bounds = list(ds.transform)[:6], ds.bounds
    names = _json_list(tags.get("SOURCE_MAPS"))
    mine = [m for m in maps if m.path.name in names] or list(maps)
    times = sorted(m.acquired for m in mine if m.acquired is not None)
    start, end = (times[0], times[-1]) if times else (None, None)
    item = pystac.Item(
        id=path.stem,
        geometry=mapping(box(*bounds)),
        bbox=list(bounds),
        datetime=None if start else datetime.now(timezone.utc),
        start_datetime=start,
        end_datetime=end,
        properties={
            "alosmap:task": legend.name,
            "alosmap:merge": merge,
            "alosmap:source_maps": [m.path.name for m in mine],
            **({} if start else {"alosmap:datetime_is_processing_time": True}),
        },
    )
    if start and end and start == end:
        item.datetime = start
    asset = _asset("map", path, f"{legend.title}, mosaic cell {path.stem}")
    item.add_asset("map", asset)
    ClassificationExtension.ext(asset, add_if_missing=True).classes = _classes(legend)
    _apply_raster_bands(
        asset,
        bands,
        [("class", f"{legend.title}: class code (see classification:classes)", "")],
    )
    _file_info(asset, path)
    conf = confidence_path(path)
    if conf.is_file():
        c = _asset("confidence", conf)
        item.add_asset("confidence", c)
        _apply_raster_bands(
            c,
            _band_info(conf),
            [("confidence", "probability of the mapped class, percent 0-100", "%")],
        )
        _file_info(c, conf)
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=crs, shape=shape, transform=transform
    )
    lineage = (
        f"Mosaic by alosmap {prov.get('ALOSMAP_VERSION', __version__)} of "
        f"{len(mine)} map(s) of the model(s) {tags.get('ALOSMAP_MODEL', '?')} onto "
        f"the JAXA 1° grid ({tags.get('MOSAIC_GRID', '')}), merge rule {merge}, "
        "nearest neighbour"
    )
    _add_provenance(item, prov, {}, lineage)
    for m in mine:
        item.add_link(_derived_from(str(m.path), f"map of {m.source_scene}"))
    return item


def _json_list(text: str | None) -> list[str]:
    import json

    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def write_mosaic_catalog(
    result: MosaicResult,
    *,
    license: str = DEFAULT_LICENSE,
    license_href: str | None = None,
) -> Path:
    """Catalog a mosaic: ``<its directory>/stac``, one item per cell.

    The collection ``alosmap-<task>-mosaic`` has the VRT (``vrt``) and, with
    confidence, the confidence VRT (``confidence_vrt``) as its assets; each cell
    is an item (assets ``map`` and ``confidence``) with a ``derived_from`` link to
    each map that went into it. Catalogs of the mosaics of other tasks in the same
    directory stay children of the root catalog.

    Args:
        result: what :func:`~alosmap.national.mosaic.mosaic_maps` wrote.
        license: as :func:`write_catalog`'s.
        license_href: as :func:`write_catalog`'s.

    Returns:
        The root ``catalog.json``.

    Raises:
        BackendUnavailableError: pystac is not installed.
    """
    pystac = lazy_import("pystac")
    out = result.vrt.parent.resolve()
    root_dir = out / STAC_DIR
    legend = result.maps[0].legend
    cid = f"alosmap-{result.task}-mosaic"
    items = [_cell_item(p, result.maps, legend, result.merge) for p in result.cells]
    collection = _collection(
        cid,
        f"alosmap {result.task} mosaic",
        legend,
        items,
        _licence(root_dir, license, license_href),
    )
    vrts = [("vrt", result.vrt, "class")]
    if result.confidence_vrt is not None:
        vrts.append(("confidence_vrt", result.confidence_vrt, "confidence"))
    for key, vrt, what in vrts:
        asset = pystac.Asset(
            href=str(vrt.resolve()),
            media_type="application/xml",
            roles=[
                "data",
                "virtual",
                *(["confidence"] if what == "confidence" else []),
            ],
            title=f"GDAL VRT over every {what} cell of the mosaic",
        )
        collection.add_asset(key, asset)
        _file_info(asset, vrt)  # adds the file extension to the collection
    catalog = pystac.Catalog(
        id="alosmap-mosaics",
        title="alosmap mosaics",
        description=f"Mosaics of alosmap maps on the JAXA 1° grid in {out.name}",
    )
    catalog.add_child(collection)
    for other in sorted(root_dir.glob("alosmap-*-mosaic/collection.json")):
        if other.parent.name != cid:  # another task's mosaic in this directory
            catalog.add_link(
                pystac.Link(
                    rel=pystac.RelType.CHILD,
                    target=str(other),
                    media_type=pystac.MediaType.JSON,
                    title=other.parent.name,
                )
            )
    path = _save(catalog, root_dir)
    logger.info("wrote %s (%d cells)", path, len(items))
    return path


__all__ = [
    "PAPER_CITATION",
    "PAPER_DOI",
    "STAC_DIR",
    "make_item",
    "write_catalog",
    "write_mosaic_catalog",
]
