"""STAC catalogs of a batch and of a mosaic, as a catalog would take them.

Band descriptions, legend, thumbnail, summaries; item assets, providers, licence,
provenance (processing, citation, ``derived_from``), file checksums of every asset.
Every item, collection and catalog is validated by pystac against the STAC 1.1.0
core schemas shipped in ``tests/data/stac_schemas`` (no network), and its extension
fields against ``tests/data/stac_schemas/alosmap/fields.json`` (see the README
there: the extensions' own schemas are in no installable package).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from alosmap._version import __version__
from alosmap.arch import get_preset
from alosmap.io.writer import MapWriter
from alosmap.national.stac import PAPER_CITATION, write_catalog
from alosmap.spec import default_spec

pystac = pytest.importorskip("pystac")

UTM = rasterio.Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)
FOOTPRINT = {
    "type": "Polygon",
    "coordinates": [
        [[139.3, 35.3], [139.31, 35.3], [139.31, 35.31], [139.3, 35.31], [139.3, 35.3]]
    ],
}


#: The scene of the first map, as given (its signature is not recorded).
SOURCE_URL = (
    "https://data.example/alos2/IMG-HH-ALOS2448452890-220912-UBSR2.1GUD.tif"
    "?X-Amz-Signature=abc"
)
SCHEMAS = Path(__file__).parents[1] / "data" / "stac_schemas"
#: The model a map's tags name (as the pipeline writes them).
MODEL_SHA = "cd" * 32


def _map(path, task, codes, source=None, probabilities=False):
    spec = default_spec(task, get_preset("tiny"))
    h, w = codes.shape
    tags = {"ALOSMAP_MODEL_FILE": "m.safetensors", "ALOSMAP_MODEL_SHA256": MODEL_SHA}
    params = {"tile": 256, "overlap": 64, "precision": "fp32", "backend": "torch"}
    prob = None
    if probabilities:
        rng = np.random.default_rng(0)
        prob = rng.integers(0, 101, (spec.num_outputs, h, w), dtype=np.uint8)
    with MapWriter(path, width=w, height=h, crs="EPSG:32654", transform=UTM,
                   spec=spec, source_scene=source, tags=tags, params=params,
                   probabilities=probabilities) as mw:  # fmt: skip
        mw.write_rows(0, codes, probabilities=prob)
        return mw.finalize()


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _record(out, path, task, when, counts, **extra):
    return {
        "key": path.stem,
        "task": task,
        "output": path.name,
        "scene_name": path.stem.rsplit("_", 1)[0] + ".tif",
        "size": path.stat().st_size,
        "sha256": _sha256(path),
        "scene": f"/data/scenes/{path.stem.rsplit('_', 1)[0]}.tif",
        "acquired": when,
        "finished": "2024-01-01T00:00:00+00:00",
        "crs": "EPSG:32654",
        "transform": list(UTM)[:6],
        "shape": [64, 64],
        "footprint": FOOTPRINT,
        "classes": [
            {"code": c, "name": str(c), "pixels": n} for c, n in counts.items()
        ],
        "area_km2": 0.4,
        **extra,
    }


@pytest.fixture
def catalog(tmp_path):
    """Two LULC maps (one with a confidence file and a preview) and a water map."""
    codes = np.ones((64, 64), np.uint8)
    codes[:, 32:] = 5
    a = _map(
        tmp_path / "IMG-HH-ALOS2448452890-220912-UBSR2.1GUD_lulc.tif",
        "lulc",
        codes,
        source=SOURCE_URL,
        probabilities=True,
    )
    conf = tmp_path / f"{a.stem}_confidence.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "dtype": "uint8"}
    profile.update(crs="EPSG:32654", transform=UTM)
    with rasterio.open(conf, "w", count=1, nodata=255, **profile) as ds:
        ds.write(np.full((1, 64, 64), 90, np.uint8))
    (tmp_path / f"{a.stem}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    b = tmp_path / "old_lulc.tif"  # the two-band layout of older releases
    with rasterio.open(b, "w", count=2, nodata=0, **profile) as ds:
        ds.write(np.stack([codes, np.full_like(codes, 80)]))
        ds.descriptions = ("class", "confidence")
    w = _map(tmp_path / "w_water.tif", "water", (codes == 1).astype(np.uint8))
    records = [
        _record(
            tmp_path,
            a,
            "lulc",
            "2022-09-12T02:42:14+00:00",
            {1: 2048, 5: 2048},
            preview=f"{a.stem}.png",
            probabilities=f"{a.stem}_probabilities.tif",
        ),
        _record(tmp_path, b, "lulc", "2022-10-10T02:42:14+00:00", {1: 2048, 5: 2048}),
        _record(tmp_path, w, "water", "2022-11-17T02:42:14+00:00", {0: 2048, 1: 2048}),
    ]
    path = write_catalog(tmp_path, records)
    return tmp_path, path


def _items(path):
    cat = pystac.Catalog.from_file(path)
    return {i.id: i for i in cat.get_items(recursive=True)}, cat


def test_map_asset_has_band_descriptions_and_legend(catalog):
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.raster import RasterExtension

    _, path = catalog
    items, _ = _items(path)
    item = items["IMG-HH-ALOS2448452890-220912-UBSR2.1GUD_lulc"]
    assert RasterExtension.get_schema_uri() in item.stac_extensions
    assert ClassificationExtension.get_schema_uri() in item.stac_extensions
    asset = item.assets["map"]
    (band,) = RasterExtension.ext(asset).bands
    assert band.data_type == "uint8" and band.nodata == 0
    assert band.spatial_resolution == 10.0
    assert band.properties["name"] == "class"
    assert "classification:classes" in band.properties["description"]
    classes = ClassificationExtension.ext(asset).classes
    assert [c.value for c in classes] == [*range(1, 10), 0]
    forest = classes[4]
    assert (forest.description, forest.color_hint) == ("Forest", "147832")
    assert forest.count == 2048 and forest.percentage == 50.0
    assert classes[-1].nodata is True
    # the confidence file and the preview
    conf = item.assets["confidence"]
    (cband,) = RasterExtension.ext(conf).bands
    assert cband.unit == "%" and cband.nodata == 255
    preview = item.assets["preview"]
    assert set(preview.roles) == {"thumbnail", "overview"}
    assert preview.media_type == pystac.MediaType.PNG
    # an old two-band map: band 2 is described as confidence
    old = items["old_lulc"].assets["map"]
    assert [b.properties["name"] for b in RasterExtension.ext(old).bands] == [
        "class",
        "confidence",
    ]
    assert "confidence" not in items["old_lulc"].assets


def test_collection_summaries(catalog):
    from pystac.extensions.classification import ClassificationExtension

    _, path = catalog
    _, cat = _items(path)
    lulc = cat.get_child("alosmap-lulc")
    summaries = lulc.summaries
    dt = summaries.get_range("datetime")
    assert dt.minimum.startswith("2022-09-12") and dt.maximum.startswith("2022-10-10")
    assert summaries.get_list("alosmap:task") == ["lulc"]
    assert summaries.get_list("platform") == ["alos-2"]
    classes = ClassificationExtension.summaries(lulc).classes
    assert [c.description for c in classes][:3] == ["Water", "Built-up", "Cropland"]
    assert ClassificationExtension.get_schema_uri() in lulc.stac_extensions
    water = cat.get_child("alosmap-water")
    w_classes = ClassificationExtension.summaries(water).classes
    assert [c.value for c in w_classes] == [0, 1, 255]


# --------------------------------------------------------------------------------------
# validation against the shipped schemas
# --------------------------------------------------------------------------------------


def _validator():
    """pystac's validator with the shipped core schemas, refusing to fetch any."""
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    class Offline(JsonSchemaSTACValidator):
        def __init__(self):
            super().__init__()
            self.schema_cache = {}
            for f in (SCHEMAS / "stac-spec" / "v1.1.0").glob("*.json"):
                self.schema_cache[_core_uri(f.name)] = json.loads(f.read_text())
            for f in (SCHEMAS / "geojson").glob("*.json"):
                uri = f"https://geojson.org/schema/{f.name}"
                self.schema_cache[uri] = json.loads(f.read_text())

        def _get_schema(self, schema_uri):
            if schema_uri not in self.schema_cache:
                raise AssertionError(f"schema not shipped: {schema_uri}")
            return self.schema_cache[schema_uri]

    return Offline()


def _core_uri(name: str) -> str:
    kinds = {"item.json": "item", "catalog.json": "catalog"}
    kinds["collection.json"] = "collection"
    spec = kinds.get(name, "item")
    return f"https://schemas.stacspec.org/v1.1.0/{spec}-spec/json-schema/{name}"


def _fields_validator():
    import jsonschema

    schema = json.loads((SCHEMAS / "alosmap" / "fields.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _documents(root: Path) -> dict[str, list[dict]]:
    """Every JSON document under a catalog's folder, by type."""
    out: dict[str, list[dict]] = {"Catalog": [], "Collection": [], "Feature": []}
    for f in sorted(root.rglob("*.json")):
        d = json.loads(f.read_text())
        d["_file"] = f
        out[d["type"]].append(d)
    return out


def _validate_all(root: Path) -> dict[str, list[dict]]:
    """Core schemas through pystac (offline), then the extension fields."""
    import pystac.validation

    docs = _documents(root)
    validator, fields = _validator(), _fields_validator()
    for kind, objs in docs.items():
        for d in objs:
            body = {k: v for k, v in d.items() if k != "_file"}
            pystac.validation.validate_dict(
                body, extensions=[], href=str(d["_file"]), validator=validator
            )
            if kind != "Catalog":
                errors = sorted(fields.iter_errors(body), key=str)
                assert not errors, (d["_file"], [e.message for e in errors][:5])
    return docs


def test_core_schema_validation_works_offline_and_catches_errors(catalog):
    """The shipped schemas reject a broken item (so passing means something)."""
    import pystac.validation

    out, _path = catalog
    item = _documents(out / "stac")["Feature"][0]
    body = {k: v for k, v in item.items() if k != "_file"}
    pystac.validation.validate_dict(body, extensions=[], validator=_validator())
    broken = {**body, "properties": {**body["properties"], "datetime": "yesterday"}}
    with pytest.raises(pystac.errors.STACValidationError):
        pystac.validation.validate_dict(broken, extensions=[], validator=_validator())
    del broken["properties"]["datetime"]
    assert list(_fields_validator().iter_errors({**body, "assets": {"x": {}}}))


def test_batch_catalog_validates(catalog):
    out, _path = catalog
    docs = _validate_all(out / "stac")
    assert len(docs["Feature"]) == 3 and len(docs["Collection"]) == 2
    for d in docs["Feature"]:
        ext = set(d["stac_extensions"])
        props = d["properties"]
        # every extension whose fields are used is declared
        for prefix in ("processing", "sci", "file", "raster", "classification", "proj"):
            used = any(k.startswith(prefix + ":") for k in props) or any(
                k.startswith(prefix + ":") for a in d["assets"].values() for k in a
            )
            if used:
                assert any(f"/{_ext_name(prefix)}/" in e for e in ext), (prefix, ext)
        for asset in d["assets"].values():
            assert not asset["href"].startswith("/")  # relative links
    for d in docs["Collection"]:  # the licence beside the catalog, linked relative
        (licence,) = [ln for ln in d["links"] if ln["rel"] == "license"]
        assert licence["href"] == "../license.txt"
        assert (d["_file"].parent / licence["href"]).is_file()


def _ext_name(prefix: str) -> str:
    return {"proj": "projection", "sci": "scientific"}.get(prefix, prefix)


def test_every_asset_has_its_files_checksum_and_size(catalog):
    _out, path = catalog
    items, _ = _items(path)
    item = items["IMG-HH-ALOS2448452890-220912-UBSR2.1GUD_lulc"]
    assert set(item.assets) == {"map", "confidence", "probabilities", "preview"}
    for name, asset in item.assets.items():
        file = Path(asset.get_absolute_href())
        assert asset.extra_fields["file:size"] == file.stat().st_size, name
        assert asset.extra_fields["file:checksum"] == "1220" + _sha256(file), name
    from pystac.extensions.raster import RasterExtension

    bands = RasterExtension.ext(item.assets["probabilities"]).bands
    assert [b.properties["name"] for b in bands][:2] == ["Water", "Built-up"]
    assert len(bands) == 9 and {(b.scale, b.offset, b.unit) for b in bands} == {
        (0.01, 0.0, None)
    }


def test_items_record_their_provenance(catalog):
    _out, path = catalog
    items, _ = _items(path)
    item = items["IMG-HH-ALOS2448452890-220912-UBSR2.1GUD_lulc"]
    props = item.properties
    assert props["processing:software"] == {"alosmap": __version__}
    assert props["processing:level"] == "L4"
    lineage = props["processing:lineage"]
    assert MODEL_SHA in lineage and "m.safetensors" in lineage
    assert "tile 256, overlap 64, precision fp32, backend torch" in lineage
    assert props["sci:citation"] == PAPER_CITATION and "sci:doi" not in props
    (link,) = item.get_links("derived_from")
    # the scene as given, URL included, its signature left out
    assert link.href == SOURCE_URL.replace("=abc", "=REDACTED")
    # a map without provenance tags links the scene of its record
    (old,) = items["old_lulc"].get_links("derived_from")
    assert old.href == "/data/scenes/old.tif"


def test_collections_are_complete(catalog):
    _out, path = catalog
    _, cat = _items(path)
    lulc = cat.get_child("alosmap-lulc")
    assert set(lulc.item_assets) == {"map", "confidence", "probabilities", "preview"}
    classes = lulc.item_assets["map"].properties["classification:classes"]
    assert [c["value"] for c in classes] == [*range(1, 10), 0]
    assert lulc.item_assets["preview"].roles == ["thumbnail", "overview"]
    roles = {p.name: [str(r) for r in p.roles] for p in lulc.providers}
    assert roles["alosmap"] == ["processor"]
    assert set(roles["JAXA"]) == {"producer", "licensor"}  # ALOS-2 scenes
    assert "JAXA" not in {p.name for p in cat.get_child("alosmap-water").providers}
    assert lulc.license == "other"
    (licence,) = lulc.get_links("license")
    text = Path(licence.get_absolute_href()).read_text()
    assert "derived_from" in text and "JAXA" in text
    assert lulc.extra_fields["processing:software"] == {"alosmap": __version__}
    assert lulc.extra_fields["sci:citation"] == PAPER_CITATION


def test_an_spdx_licence_links_its_page(tmp_path):
    codes = np.ones((8, 8), np.uint8)
    m = _map(tmp_path / "s_water.tif", "water", codes)
    rec = _record(tmp_path, m, "water", None, {1: 64})
    rec["shape"] = [8, 8]
    path = write_catalog(tmp_path, [rec], license="CC-BY-4.0")
    col = pystac.Catalog.from_file(path).get_child("alosmap-water")
    assert col.license == "CC-BY-4.0"
    assert col.get_links("license")[0].href.endswith("/CC-BY-4.0.html")
    assert not (tmp_path / "stac" / "license.txt").exists()


# --------------------------------------------------------------------------------------
# mosaics
# --------------------------------------------------------------------------------------


@pytest.fixture
def mosaic(tmp_path):
    """Two overlapping LULC maps with confidence, mosaicked (catalog included)."""
    from alosmap.national.mosaic import mosaic_maps

    maps = []
    for i, when in enumerate(("2022-09-12", "2022-10-10")):
        codes = np.full((64, 64), 1 + 4 * i, np.uint8)
        path = tmp_path / f"scene{i}_lulc.tif"
        spec = default_spec("lulc", get_preset("tiny"))
        t = rasterio.Affine(10.0, 0, 350000.0 + 200 * i, 0, -10.0, 3910000.0)
        with MapWriter(path, width=64, height=64, crs="EPSG:32654", transform=t,
                       spec=spec, confidence=True, source_scene=f"scene{i}.tif",
                       tags={"ACQUISITION_DATE": when}) as mw:  # fmt: skip
            mw.write_rows(0, codes, confidence=np.full((64, 64), 80, np.uint8))
            maps.append(mw.finalize())
    res = mosaic_maps(maps, tmp_path / "mosaic", pixels_per_degree=1200)
    return res, maps


def test_mosaic_cells_and_vrts_are_catalogued(mosaic):
    res, maps = mosaic
    assert res.catalog == res.vrt.parent / "stac" / "catalog.json"
    docs = _validate_all(res.catalog.parent)
    cat = pystac.Catalog.from_file(res.catalog)
    (col,) = cat.get_children()
    assert col.id == "alosmap-lulc-mosaic"
    items = {i.id: i for i in col.get_items()}
    assert set(items) == {p.stem for p in res.cells}
    assert len(docs["Feature"]) == len(res.cells)
    for cell in res.cells:
        item = items[cell.stem]
        assert set(item.assets) == {"map", "confidence"}
        for asset in item.assets.values():
            file = Path(asset.get_absolute_href())
            assert asset.extra_fields["file:checksum"] == "1220" + _sha256(file)
        assert item.properties["proj:code"] == "EPSG:4326"
        assert {Path(link.href).name for link in item.get_links("derived_from")} == {
            m.name for m in maps
        }
        assert item.common_metadata.start_datetime.date().isoformat() == "2022-09-12"
        assert item.common_metadata.end_datetime.date().isoformat() == "2022-10-10"
    vrt = col.assets["vrt"]
    assert Path(vrt.get_absolute_href()) == res.vrt.resolve()
    assert vrt.extra_fields["file:checksum"] == "1220" + _sha256(res.vrt)
    conf_vrt = Path(col.assets["confidence_vrt"].get_absolute_href())
    assert conf_vrt == res.confidence_vrt.resolve()
    assert (
        "merge rule confidence"
        in items[res.cells[0].stem].properties["processing:lineage"]
    )


@pytest.mark.slow  # a batch run with preview: about 12 s on 2 shared cores
def test_a_batch_catalog_validates_end_to_end(tmp_path, small_scene, tiny_water_model):
    """Real records of a real batch run (confidence, probabilities, preview)."""
    from alosmap.national.batch import run_batch

    out = tmp_path / "out"
    res = run_batch(
        [small_scene], out, model=tiny_water_model, probabilities=True, previews=True
    )
    assert res.catalog is not None and not res.failed
    docs = _validate_all(out / "stac")
    (item,) = docs["Feature"]
    assert set(item["assets"]) == {"map", "confidence", "probabilities", "preview"}
    for asset in item["assets"].values():
        file = (item["_file"].parent / asset["href"]).resolve()
        assert asset["file:checksum"] == "1220" + _sha256(file)
    (link,) = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert link["href"] == str(small_scene.resolve())
    props = item["properties"]
    assert _sha256(tiny_water_model) in props["processing:lineage"]
    assert props["processing:software"] == {"alosmap": __version__}
