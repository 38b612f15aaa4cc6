"""Products open right in QGIS and GDAL: checked with the real clients.

Every product type is written by the real code (a tiny model from conftest): a LULC
map, a water map, a confidence file, a mosaic cell and the mosaic VRT, and the maps
(and mosaic VRT) of models trained with users' own legends: ``landcover3`` (codes
10/20/30, 0 = no data) and a binary ``flood`` legend (0/1, 255 = no data). QGIS's Python
bindings (the system ``/usr/bin/python3`` with Debian's ``python3-qgis``; not the
venv) load each one headless (``QT_QPA_PLATFORM=offscreen``, :mod:`qgis_check`):
class products must come up with a paletted renderer listing exactly the legend's
codes, names and colours, the confidence with its viridis ramp, and a rendered PNG
must show the class colours of the codes present and no other opaque colour.
``gdal_translate -of PNG`` of a map must keep the palette.

Skipped where QGIS (or ``gdal_translate``) is not installed; run by hand with
``pytest -m qgis tests/io/test_qgis.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import LANDCOVER3

from alosmap.classes import LULC9_CLASSES, WATER_CLASSES, ClassInfo, Legend
from alosmap.io.style import VIRIDIS, style_path
from alosmap.io.writer import confidence_path

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK = Path(__file__).with_name("qgis_check.py")
PPD = 1200  # mosaic grid: 1/1200° pixels (same code path as JAXA's 12000)
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


def _varied_model(
    directory: Path, task: str | Legend, centre_on: Path | None = None
) -> Path:
    """A tiny untrained model whose classes follow the input.

    As conftest's tiny models, with the classifier weights scaled so that several
    classes (and confidences) show up instead of one class everywhere; with
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
        model.head.conv_seg.weight.mul_(50.0)
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
def products(tmp_path_factory, small_scene):
    """Every product type, written by predict and mosaic."""
    from alosmap.national.mosaic import mosaic_maps
    from alosmap.predict.pipeline import predict_scene

    d = tmp_path_factory.mktemp("products")
    lulc_model = _varied_model(d, "lulc")
    lulc = predict_scene(
        small_scene, d / "scene_lulc.tif", model=lulc_model, confidence=True
    )
    water = predict_scene(
        small_scene, d / "scene_water.tif", model=_varied_model(d, "water")
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
    assert lulc.confidence is not None
    return {
        "lulc map": (lulc.output, LULC9_CLASSES),
        "water map": (water.output, WATER_CLASSES),
        "confidence": (lulc.confidence, None),
        "mosaic cell": (mos.cells[0], LULC9_CLASSES),
        "mosaic vrt": (mos.vrt, LULC9_CLASSES),
        "landcover3 map": (own["landcover3"], LANDCOVER3.classes),
        "flood map": (own["flood"], FLOOD.classes),
        "landcover3 mosaic vrt": (own_mos.vrt, LANDCOVER3.classes),
    }


def _data_view(path: Path) -> tuple[list[float], list[int]]:
    """Extent (file CRS) and size in pixels that show every data pixel of ``path``.

    The window around the pixels with data, drawn at two screen pixels per raster
    pixel, so that no class is lost to downsampling.
    """
    with rasterio.open(path) as ds:
        rows, cols = np.nonzero(ds.read_masks(1))
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        left, bottom, right, top = rasterio.windows.bounds(window, ds.transform)
    return [left, bottom, right, top], [int(2 * (c1 - c0)), int(2 * (r1 - r0))]


def _present_codes(path: Path) -> set[int]:
    with rasterio.open(path) as ds:
        values = ds.read(1)
        nodata = ds.nodata
    return {int(v) for v in np.unique(values) if v != nodata}


@pytest.fixture(scope="module")
def qgis_report(products, tmp_path_factory):
    """What QGIS made of every product (one subprocess for all)."""
    out = tmp_path_factory.mktemp("qgis")
    job = []
    for name, (path, legend) in products.items():
        extent, size = _data_view(path)
        job.append(
            {
                "extent": extent,
                "size": size,
                "name": name,
                "path": str(path),
                "style": str(style_path(path)),
                "png": str(out / f"{name.replace(' ', '_')}.png"),
                "renderer": "paletted" if legend else "singlebandpseudocolor",
                "n_classes": len(legend) if legend else 0,
            }
        )
    (out / "job.json").write_text(json.dumps(job))
    r = subprocess.run(
        [SYSTEM_PYTHON, str(CHECK), str(out / "job.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return {
        item["name"]: {**res, "png": item["png"]}
        for item, res in zip(job, report, strict=True)
    }


@pytest.mark.parametrize(
    "name",
    [
        "lulc map",
        "water map",
        "mosaic cell",
        "mosaic vrt",
        "landcover3 map",
        "flood map",
        "landcover3 mosaic vrt",
    ],
)
def test_class_products_render_as_paletted_class_maps(name, products, qgis_report):
    path, legend = products[name]
    res = qgis_report[name]
    assert res["valid"], res
    # QGIS picks up <name>.qml beside the file by itself
    assert res["auto_style"], res
    assert res["renderer"] == "paletted"
    assert res["classes"] == [[c.code, c.name, [*c.color, 255]] for c in legend]
    colours = {tuple(c): n for c, n in res["colours"]}
    by_code = {c.code: c.color for c in legend}
    present = _present_codes(path)
    assert len(present) >= 2, present  # more than one class to tell apart
    for code in present:
        assert colours.get(by_code[code], 0) > 0, (code, res["colours"])
    # nothing else opaque: no data and unused codes are transparent
    assert set(colours) <= {by_code[c] for c in present}, res["colours"]


def _viridis_samples() -> np.ndarray:
    """The ramp of the confidence style, sampled at every percent (RGB)."""
    stops = np.array([v for v, _ in VIRIDIS], float)
    rgb = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for _, h in VIRIDIS])
    x = np.arange(101.0)
    return np.stack([np.interp(x, stops, rgb[:, k]) for k in range(3)], axis=1)


def test_confidence_renders_with_its_ramp(products, qgis_report):
    res = qgis_report["confidence"]
    assert res["valid"] and res["auto_style"], res
    assert res["renderer"] == "singlebandpseudocolor"
    assert res["colours"], "the confidence renders"
    ramp = _viridis_samples()
    for colour, _ in res["colours"]:  # every opaque colour lies on the ramp
        assert np.abs(ramp - colour).sum(axis=1).min() <= 12, colour


def test_rendered_png_is_a_class_map_with_transparent_no_data(qgis_report):
    """The LULC render as PNG (also written for a person to look at)."""
    from PIL import Image

    img = np.asarray(Image.open(qgis_report["lulc map"]["png"]).convert("RGBA"))
    assert (img[..., 3] == 255).any()
    assert (img[..., 3] == 0).any()  # the scene's no-data corners are transparent


def test_gdal_translate_png_keeps_the_palette(products, tmp_path):
    exe = shutil.which("gdal_translate")
    if exe is None:
        pytest.skip("gdal_translate not installed (apt-get install gdal-bin)")
    path, legend = products["lulc map"]
    png = tmp_path / "map.png"
    r = subprocess.run(
        [exe, "-q", "-of", "PNG", str(path), str(png)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    with rasterio.open(png) as ds:
        assert ds.colorinterp[0].name == "palette"
        cmap = ds.colormap(1)
        codes = ds.read(1)
    for c in legend:
        assert cmap[c.code] == (*c.color, 255)
    assert cmap[0][3] == 0  # no data transparent (PNG tRNS)
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(codes, ds.read(1))


def test_confidence_file_is_beside_its_map(products):
    path, _ = products["lulc map"]
    assert confidence_path(path) == products["confidence"][0]
