"""The STAC catalog of a batch: band descriptions, legend, thumbnail, summaries."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio

from alosmap.arch import get_preset
from alosmap.io.writer import MapWriter
from alosmap.national.stac import write_catalog
from alosmap.spec import default_spec

pystac = pytest.importorskip("pystac")

UTM = rasterio.Affine(10.0, 0, 350000.0, 0, -10.0, 3910000.0)
FOOTPRINT = {
    "type": "Polygon",
    "coordinates": [
        [[139.3, 35.3], [139.31, 35.3], [139.31, 35.31], [139.3, 35.31], [139.3, 35.3]]
    ],
}


def _map(path, task, codes):
    spec = default_spec(task, get_preset("tiny"))
    h, w = codes.shape
    with MapWriter(path, width=w, height=h, crs="EPSG:32654", transform=UTM,
                   spec=spec) as mw:  # fmt: skip
        mw.write_rows(0, codes)
        return mw.finalize()


def _record(out, path, task, when, counts, **extra):
    return {
        "key": path.stem,
        "task": task,
        "output": path.name,
        "scene_name": path.stem.rsplit("_", 1)[0] + ".tif",
        "size": path.stat().st_size,
        "sha256": "ab" * 32,
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
        tmp_path / "IMG-HH-ALOS2448452890-220912-UBSR2.1GUD_lulc.tif", "lulc", codes
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


def test_items_are_valid_stac(catalog):
    """pystac's schema validation when jsonschema is there; else the structure."""
    out, path = catalog
    items, _ = _items(path)
    try:
        import jsonschema  # noqa: F401

        have_jsonschema = True
    except ImportError:
        have_jsonschema = False
    for item in items.values():
        if have_jsonschema:
            try:
                item.validate()
            except pystac.errors.STACValidationError:
                raise
            except Exception as exc:  # schemas not reachable offline
                pytest.skip(f"STAC schemas not reachable: {exc}")
            continue
        d = json.loads(
            (out / "stac" / item.get_self_href().split("/stac/")[1]).read_text()
        )
        assert d["type"] == "Feature" and d["stac_version"] == pystac.get_stac_version()
        for asset in d["assets"].values():
            assert not asset["href"].startswith("/")  # relative links
            for band in asset.get("raster:bands", []):
                assert band["data_type"] in {"uint8", "uint16", "int16", "float32"}
                assert isinstance(band["description"], str)
            for c in asset.get("classification:classes", []):
                assert isinstance(c["value"], int)
                assert re.fullmatch(r"[a-z0-9_-]+", c["name"])
                assert "color_hint" not in c or re.fullmatch(
                    r"[0-9A-F]{6}", c["color_hint"]
                )
