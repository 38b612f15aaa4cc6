"""Products open right in QGIS and GDAL: checked with the real clients.

Every product type is written by the real code (tiny models from conftest): a LULC
map with its confidence and probabilities, a water map with its probabilities (one
band), a mosaic cell with its confidence, the mosaic VRT and the confidence VRT,
water polygons (GeoJSON), and the maps (and mosaic VRT) of models trained with
users' own legends: ``landcover3`` (codes 10/20/30, 0 = no data) and a binary
``flood`` legend (0/1, 255 = no data). QGIS's Python bindings (the system
``/usr/bin/python3`` with Debian's ``python3-qgis``; not the venv) load each one
headless (``QT_QPA_PLATFORM=offscreen``, :mod:`qgis_check`) and render it into a PNG
at three screen pixels per map pixel:

* class products come up with a paletted renderer listing exactly the legend's codes,
  names and colours; the render shows the class colours of the codes present and no
  other opaque colour, and at sampled map pixels exactly the colour of that pixel's
  code (no data transparent);
* confidence and probabilities come up with their viridis ramp over the values QGIS
  sees (QGIS applies a band's scale: the probabilities' ramp runs over 0-1, the
  confidence's over 0-100); the render shows many colours of the ramp, and at
  sampled pixels the ramp's colour of that pixel's percent;
* polygons open as a polygon layer in WGS 84 with every feature, and render.

``gdal_translate -of PNG`` of every raster product keeps its pixels (class maps
also their palette, with no data transparent). The PNGs are kept under pytest's
temporary directory for a person to look at.

Skipped where QGIS (or ``gdal_translate``) is not installed; run by hand with
``pytest -m qgis tests/io/test_qgis.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import LANDCOVER3

from alosmap.classes import LULC9_CLASSES, WATER_CLASSES, ClassInfo, Legend
from alosmap.io.style import VIRIDIS, style_path
from alosmap.io.writer import PROBABILITY_SCALE, confidence_path

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK = Path(__file__).with_name("qgis_check.py")
PPD = 1200  # mosaic grid: 1/1200° pixels (same code path as JAXA's 12000)
#: Screen pixels per map pixel in the renders (a probe at the middle one of three
#: lies half a map pixel from the pixel's edges).
ZOOM = 3
#: Map pixels sampled per product (plus one no-data pixel where there is one).
PROBES = 40
#: Users' own legends (as a legend file would give them).
FLOOD = Legend(
    "flood",
    "Flood map",
    (
        ClassInfo(0, "Dry", (235, 235, 225), (0,)),
        ClassInfo(1, "Flooded", (0, 92, 230), (1,)),
    ),
    nodata=255,
    binary=True,
)


def _has_qgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    r = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"],
        capture_output=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    return r.returncode == 0


pytestmark = [
    pytest.mark.qgis,
    pytest.mark.skipif(not _has_qgis(), reason="QGIS python bindings not installed"),
]


@dataclass(frozen=True)
class Product:
    """A file to open: a class map (``legend``), a percent raster or polygons."""

    path: Path
    legend: tuple[ClassInfo, ...] | None = None
    #: a percent raster's band scale (1: confidence, 0.01: probabilities)
    scale: float | None = None
    vector: bool = False


def _varied_model(
    directory: Path,
    task: str | Legend,
    centre_on: Path | None = None,
    gain: float = 50.0,
) -> Path:
    """A tiny untrained model whose classes follow the input.

    As conftest's tiny models, with the classifier weights scaled (``gain``) so that
    several classes (and confidences) show up instead of one class everywhere; with
    ``centre_on`` (a scene) the classifier's bias is also set so that each output's
    mean logit on the scene's first tile is zero.
    """
    import torch

    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.radiometry import dn_to_db, normalize
    from alosmap.spec import Radiometry, default_spec, save_model

    spec = default_spec(
        task,
        get_preset("tiny", img_size=256),
        radiometry=Radiometry(mean_db=-12.0, std_db=7.0),
        name=f"tiny-varied-{spec_name(task)}",
    )
    torch.manual_seed(1)
    model = build_model(spec.arch).eval()
    with torch.no_grad():
        model.head.conv_seg.weight.mul_(gain)
        if centre_on is not None:
            with rasterio.open(centre_on) as ds:
                db = dn_to_db(ds.read(1, window=((0, 256), (0, 256))))
            x = normalize(db, spec.radiometry, np.isfinite(db))
            mean = model(torch.from_numpy(x)[None, None]).mean(dim=(0, 2, 3))
            model.head.conv_seg.bias.sub_(mean)
    return save_model(model, spec, directory / f"varied-{spec_name(task)}.safetensors")


def spec_name(task: str | Legend) -> str:
    return task if isinstance(task, str) else task.name


@pytest.fixture(scope="module")
def products(tmp_path_factory, small_scene) -> dict[str, Product]:
    """Every product type, written by predict, mosaic and vectorize.

    The LULC and water models have a high gain, so that their probabilities and
    confidence spread over most of 0-100 % (a ramp to see).
    """
    from alosmap.national.mosaic import mosaic_maps
    from alosmap.national.vectorize import vectorize_map
    from alosmap.predict.pipeline import predict_scene

    d = tmp_path_factory.mktemp("products")
    lulc = predict_scene(
        small_scene,
        d / "scene_lulc.tif",
        model=_varied_model(d, "lulc", centre_on=small_scene, gain=1000.0),
        confidence=True,
        probabilities=True,
    )
    water = predict_scene(
        small_scene,
        d / "scene_water.tif",
        model=_varied_model(d, "water", centre_on=small_scene, gain=1000.0),
        probabilities=True,
    )
    mos = mosaic_maps(
        [lulc.output], d / "mosaic", merge="latest", pixels_per_degree=PPD
    )
    own = {
        lg.name: predict_scene(
            small_scene,
            d / f"scene_{lg.name}.tif",
            model=_varied_model(d, lg, centre_on=small_scene),
        ).output
        for lg in (LANDCOVER3, FLOOD)
    }
    own_mos = mosaic_maps(
        [own["landcover3"]], d / "mosaic3", merge="latest", pixels_per_degree=PPD
    )
    polygons = vectorize_map(water.output, d / "water.geojson")
    assert lulc.confidence and lulc.probabilities and water.probabilities
    assert mos.confidence_vrt is not None
    return {
        "lulc map": Product(lulc.output, LULC9_CLASSES),
        "water map": Product(water.output, WATER_CLASSES),
        "confidence": Product(lulc.confidence, scale=1.0),
        "probabilities": Product(lulc.probabilities, scale=PROBABILITY_SCALE),
        "water probabilities": Product(water.probabilities, scale=PROBABILITY_SCALE),
        "mosaic cell": Product(mos.cells[0], LULC9_CLASSES),
        "mosaic cell confidence": Product(mos.confidence[0], scale=1.0),
        "mosaic vrt": Product(mos.vrt, LULC9_CLASSES),
        "mosaic confidence vrt": Product(mos.confidence_vrt, scale=1.0),
        "landcover3 map": Product(own["landcover3"], LANDCOVER3.classes),
        "flood map": Product(own["flood"], FLOOD.classes),
        "landcover3 mosaic vrt": Product(own_mos.vrt, LANDCOVER3.classes),
        "water polygons": Product(polygons.path, vector=True),
    }


@dataclass(frozen=True)
class View:
    """The window around a raster's data pixels, rendered at :data:`ZOOM`.

    Attributes:
        extent: ``[left, bottom, right, top]`` in the file's CRS.
        size: ``[width, height]`` of the render (screen pixels).
        values: band 1 in the window.
        valid: band 1's data mask in the window.
    """

    extent: list[float]
    size: list[int]
    values: np.ndarray
    valid: np.ndarray


def _view(path: Path) -> View:
    with rasterio.open(path) as ds:
        mask = ds.read_masks(1) > 0
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        left, bottom, right, top = rasterio.windows.bounds(window, ds.transform)
        values = ds.read(1, window=window)
    return View(
        [left, bottom, right, top],
        [int(ZOOM * (c1 - c0)), int(ZOOM * (r1 - r0))],
        values,
        mask[r0:r1, c0:c1],
    )


def _probe_pixels(view: View) -> list[tuple[int, int]]:
    """Map pixels (row, col) to sample: spread over the values, plus a no-data one."""
    rows, cols = np.nonzero(view.valid)
    order = np.argsort(view.values[rows, cols], kind="stable")  # every value range
    picks = order[np.linspace(0, len(order) - 1, PROBES).round().astype(int)]
    out = [(int(rows[i]), int(cols[i])) for i in picks]
    empty = np.argwhere(~view.valid)
    if len(empty):
        out.append(tuple(int(v) for v in empty[len(empty) // 2]))
    return out


def _vector_view(path: Path) -> View:
    from shapely.geometry import shape

    geoms = [shape(f["geometry"]) for f in json.loads(path.read_text())["features"]]
    x0, y0, x1, y1 = np.array([g.bounds for g in geoms]).T
    extent = [x0.min(), y0.min(), x1.max(), y1.max()]
    aspect = (extent[3] - extent[1]) / (extent[2] - extent[0])
    empty = np.zeros((0, 0))
    return View(extent, [800, max(1, round(800 * aspect))], empty, empty.astype(bool))


@pytest.fixture(scope="module")
def views(products) -> dict[str, View]:
    return {
        name: (_vector_view if p.vector else _view)(p.path)
        for name, p in products.items()
    }


@pytest.fixture(scope="module")
def qgis_report(products, views, tmp_path_factory):
    """What QGIS made of every product (one subprocess for all)."""
    out = tmp_path_factory.mktemp("qgis")
    job = []
    for name, p in products.items():
        view = views[name]
        probes = [] if p.vector else _probe_pixels(view)
        job.append(
            {
                "kind": "vector" if p.vector else "raster",
                "extent": view.extent,
                "size": view.size,
                "probes": [[ZOOM * c + 1, ZOOM * r + 1] for r, c in probes],
                "pixels": probes,
                "name": name,
                "path": str(p.path),
                "style": str(style_path(p.path)),
                "png": str(out / f"{name.replace(' ', '_')}.png"),
                "renderer": "paletted" if p.legend else "singlebandpseudocolor",
                "n_classes": len(p.legend) if p.legend else 0,
            }
        )
    (out / "job.json").write_text(json.dumps(job))
    r = subprocess.run(
        [SYSTEM_PYTHON, str(CHECK), str(out / "job.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return {
        item["name"]: {**res, "png": item["png"], "pixels": item["pixels"]}
        for item, res in zip(job, report, strict=True)
    }


CLASS_PRODUCTS = [
    "lulc map",
    "water map",
    "mosaic cell",
    "mosaic vrt",
    "landcover3 map",
    "flood map",
    "landcover3 mosaic vrt",
]
PERCENT_PRODUCTS = [
    "confidence",
    "probabilities",
    "water probabilities",
    "mosaic cell confidence",
    "mosaic confidence vrt",
]


def test_every_product_type_is_in_the_test(products):
    assert set(products) == {*CLASS_PRODUCTS, *PERCENT_PRODUCTS, "water polygons"}


def _probed(res) -> list[tuple[tuple[int, int], list[int]]]:
    return [
        (tuple(rc), rgba) for rc, rgba in zip(res["pixels"], res["probes"], strict=True)
    ]


@pytest.mark.parametrize("name", CLASS_PRODUCTS)
def test_class_products_render_as_paletted_class_maps(
    name, products, views, qgis_report
):
    legend = products[name].legend
    assert legend is not None
    res, view = qgis_report[name], views[name]
    assert res["valid"], res
    # QGIS picks up <name>.qml beside the file by itself
    assert res["auto_style"], res
    assert res["renderer"] == "paletted"
    assert res["classes"] == [[c.code, c.name, [*c.color, 255]] for c in legend]
    colours = {tuple(c): n for c, n in res["colours"]}
    by_code = {c.code: c.color for c in legend}
    present = {int(v) for v in np.unique(view.values[view.valid])}
    assert len(present) >= 2, present  # more than one class to tell apart
    for code in present:
        assert colours.get(by_code[code], 0) > 0, (code, res["colours"])
    # nothing else opaque: no data and unused codes are transparent
    assert set(colours) <= {by_code[c] for c in present}, res["colours"]
    # each sampled pixel shows its own class's colour; no data is transparent
    for (r, c), rgba in _probed(res):
        if view.valid[r, c]:
            assert rgba == [*by_code[int(view.values[r, c])], 255], (r, c)
        else:
            assert rgba[3] == 0, (r, c, rgba)


def _viridis(percent: np.ndarray) -> np.ndarray:
    """The ramp of the percent styles at ``percent`` (RGB, linear between stops)."""
    stops = np.array([v for v, _ in VIRIDIS], float)
    rgb = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for _, h in VIRIDIS])
    p = np.asarray(percent, float)
    return np.stack([np.interp(p, stops, rgb[:, k]) for k in range(3)], axis=-1)


@pytest.mark.parametrize("name", PERCENT_PRODUCTS)
def test_percent_products_render_with_their_ramp(name, products, views, qgis_report):
    """The ramp is over the values QGIS sees (its band scale applied)."""
    product, res, view = products[name], qgis_report[name], views[name]
    assert res["valid"] and res["auto_style"], res
    assert res["renderer"] == "singlebandpseudocolor"
    assert res["band_scale"] == pytest.approx(product.scale)
    ramp = res["ramp"]
    top = 100 * product.scale
    assert (ramp["band"], ramp["min"]) == (1, 0) and ramp["max"] == pytest.approx(top)
    assert [v for v, _ in ramp["items"]] == pytest.approx(
        [p * product.scale for p, _ in VIRIDIS]
    )
    # many colours of the ramp, not one flat colour
    valid = view.values[view.valid]
    assert len(np.unique(valid)) >= 20, "the file itself has varied values"
    on_ramp = _viridis(np.arange(101))
    assert len(res["colours"]) >= 20, res["colours"]
    for colour, _ in res["colours"]:  # every opaque colour lies on the ramp
        assert np.abs(on_ramp - colour).sum(axis=1).min() <= 12, colour
    # each sampled pixel shows the ramp's colour of its percent
    for (r, c), rgba in _probed(res):
        if view.valid[r, c]:
            want = _viridis(view.values[r, c])
            assert rgba[3] == 255 and np.abs(want - rgba[:3]).max() <= 3, (
                (r, c),
                int(view.values[r, c]),
                rgba,
                want,
            )
        else:
            assert rgba[3] == 0, (r, c, rgba)


def test_polygons_open_as_a_polygon_layer(products, qgis_report):
    res = qgis_report["water polygons"]
    features = json.loads(products["water polygons"].path.read_text())["features"]
    assert res["valid"] and res["features"] == len(features) > 0, res
    assert res["geometry"] == 2  # QgsWkbTypes.PolygonGeometry
    assert res["crs"] == "EPSG:4326"
    assert {"class", "code", "area_m2"} <= set(res["fields"])
    assert sum(n for _, n in res["colours"]) > 0  # they render


def test_rendered_png_is_a_class_map_with_transparent_no_data(qgis_report):
    """The LULC render as PNG (also written for a person to look at)."""
    from PIL import Image

    img = np.asarray(Image.open(qgis_report["lulc map"]["png"]).convert("RGBA"))
    assert (img[..., 3] == 255).any()
    assert (img[..., 3] == 0).any()  # the scene's no-data corners are transparent


def _gdal_translate(src: Path, dst: Path, *args: str) -> None:
    exe = shutil.which("gdal_translate")
    if exe is None:
        pytest.skip("gdal_translate not installed (apt-get install gdal-bin)")
    r = subprocess.run(
        [exe, "-q", "-of", "PNG", *args, str(src), str(dst)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", CLASS_PRODUCTS)
def test_gdal_translate_png_keeps_the_palette(name, products, tmp_path):
    product = products[name]
    legend = product.legend
    assert legend is not None
    png = tmp_path / "map.png"
    _gdal_translate(product.path, png)
    with rasterio.open(png) as ds:
        assert ds.colorinterp[0].name == "palette"
        cmap = ds.colormap(1)
        codes = ds.read(1)
    for c in legend:
        assert cmap[c.code] == (*c.color, 255)
    with rasterio.open(product.path) as ds:
        nodata = int(ds.nodata)
        np.testing.assert_array_equal(codes, ds.read(1))
    assert cmap[nodata][3] == 0  # no data transparent (PNG tRNS)
    # expanded to RGBA: the class colours where the codes are, no data transparent
    rgba_png = tmp_path / "map_rgba.png"
    _gdal_translate(product.path, rgba_png, "-expand", "rgba")
    with rasterio.open(rgba_png) as ds:
        rgba = ds.read()
    for c in legend:
        at = codes == c.code
        if at.any():
            seen = {tuple(v) for v in rgba[:, at].T.tolist()}
            assert seen == {(*c.color, 255)}, c
    assert (rgba[3][codes == nodata] == 0).all()


@pytest.mark.parametrize("name", PERCENT_PRODUCTS)
def test_gdal_translate_png_of_percent_rasters(name, products, tmp_path):
    """Band 1 to a PNG keeps the percent (no data 255) as grey levels."""
    product = products[name]
    png = tmp_path / "percent.png"
    _gdal_translate(product.path, png, "-b", "1")
    with rasterio.open(png) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8"
        grey = ds.read(1)
        nodata = ds.nodata
    with rasterio.open(product.path) as ds:
        values = ds.read(1)
        assert ds.nodata == nodata == 255
    np.testing.assert_array_equal(grey, values)
    assert values[values != 255].max() <= 100


def test_confidence_file_is_beside_its_map(products):
    assert confidence_path(products["lulc map"].path) == products["confidence"].path
