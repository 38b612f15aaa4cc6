import numpy as np
import pytest
import rasterio
from conftest import LANDCOVER3, write_map

from alosmap.arch import get_preset
from alosmap.errors import InputRasterError, OutputExistsError
from alosmap.spec import default_spec
from alosmap.synthetic import generate_scene

mpimg = pytest.importorskip("matplotlib.image")


@pytest.fixture(scope="module")
def scene_and_map(tmp_path_factory):
    """A synthetic scene (no-data corners outside the swath) and a LULC map of it."""
    d = tmp_path_factory.mktemp("preview")
    scene = generate_scene(d, seed=3, width=640, height=400, write_label_tiles=False)
    spec = default_spec("lulc", get_preset("tiny"))
    with rasterio.open(scene.path) as ds:
        dn = ds.read(1)
        crs, transform = ds.crs, ds.transform
    assert (dn == 0).any() and (dn > 0).any()  # the corners are no data
    codes = (np.clip(dn // 600, 0, 8) + 1).astype(np.uint8)
    codes[dn == 0] = 0
    map_path = write_map(d / "map.tif", codes, spec, crs=crs, transform=transform)
    return d, scene.path, map_path, spec


def test_preview_is_a_png_of_the_expected_size(scene_and_map):
    from alosmap.predict.preview import write_preview

    d, scene, map_path, spec = scene_and_map
    out = write_preview(d / "quick.png", scene, map_path, spec, max_size=200)
    assert out == d / "quick.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    h, w = img.shape[:2]
    # two 200 x 125 panels, a legend and a title
    assert 400 <= w <= 800 and 150 <= h <= 500
    assert not [p for p in d.iterdir() if p.name.startswith(".")]
    # no-data corners are white (top-left pixel of the SAR panel area)
    assert img[h // 2, 2, :3].min() > 0.95


def test_preview_overwrite_policy(scene_and_map):
    from alosmap.predict.preview import write_preview

    d, scene, map_path, spec = scene_and_map
    out = d / "again.png"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_preview(out, scene, map_path, spec, max_size=64)
    assert out.read_bytes() == b"old"
    write_preview(out, scene, map_path, spec, max_size=64, overwrite=True)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_preview_missing_input(scene_and_map):
    from alosmap.predict.preview import write_preview

    d, scene, _, spec = scene_and_map
    with pytest.raises(InputRasterError, match="not found"):
        write_preview(d / "x.png", scene, d / "missing.tif", spec)
    assert not (d / "x.png").exists()


def _nocrs_copy(src, dst):
    """``src`` rewritten without CRS or transform (colour table kept)."""
    with rasterio.open(src) as ds:
        profile = ds.profile.copy()
        data = ds.read()
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
    profile.update(driver="GTiff", crs=None, transform=rasterio.Affine.identity())
    profile.pop("photometric", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        if cmap:
            out.write_colormap(1, cmap)
    return dst


def test_preview_confidence_panel_and_geo_axes(scene_and_map):
    """A confidence file adds a third panel; lat/lon edge ticks match the grid."""
    from alosmap.predict.preview import _geo_axes, write_preview

    d, scene, map_path, spec = scene_and_map
    with rasterio.open(map_path) as ds:
        codes = ds.read(1)
        profile = dict(
            driver="GTiff",
            width=ds.width,
            height=ds.height,
            count=1,
            dtype="uint8",
            crs=ds.crs,
            transform=ds.transform,
            nodata=255,
        )
        crs, transform, shape = ds.crs, ds.transform, (ds.height, ds.width)
    conf = np.where(codes == 0, 255, 40 + codes * 5).astype(np.uint8)
    conf_path = d / "map_confidence.tif"
    with rasterio.open(conf_path, "w", **profile) as ds:
        ds.write(conf, 1)
    two = mpimg.imread(
        write_preview(d / "two.png", scene, map_path, spec, max_size=200)
    )
    three = mpimg.imread(
        write_preview(
            d / "three.png",
            scene,
            map_path,
            spec,
            max_size=200,
            confidence_path=conf_path,
        )
    )
    assert three.shape[0] == two.shape[0]
    assert three.shape[1] - two.shape[1] >= 200  # one more 200-pixel panel

    geo = _geo_axes(crs, transform, shape)
    assert geo.lon is not None and geo.lat is not None and geo.m_per_px is not None
    # the synthetic scene is UTM with 10 m pixels: the scale bar's ground size
    assert geo.m_per_px == pytest.approx(abs(transform.a), rel=0.01)
    from rasterio.warp import transform as warp

    x, y = transform.c, transform.f
    (lon,), (lat,) = warp(crs, "EPSG:4326", [x], [y])
    assert geo.lon[0, 0] == pytest.approx(lon) and geo.lat[0, 0] == pytest.approx(lat)


def test_preview_without_crs_has_pixel_axes(scene_and_map, tmp_path):
    from alosmap.predict.preview import _geo_axes, write_preview

    _, scene, map_path, spec = scene_and_map
    s2 = _nocrs_copy(scene, tmp_path / "scene.tif")
    m2 = _nocrs_copy(map_path, tmp_path / "map.tif")
    with rasterio.open(m2) as ds:
        geo = _geo_axes(ds.crs, ds.transform, (ds.height, ds.width))
    assert geo.lon is None and geo.m_per_px is None
    img = mpimg.imread(write_preview(tmp_path / "p.png", s2, m2, spec, max_size=120))
    assert img.shape[0] > 120 and img.shape[1] > 240


def test_preview_legend_lists_only_present_classes(tmp_path):
    """Classes absent from the map get no legend entry; rare ones still do."""
    from alosmap.predict.preview import _legend_entries

    spec = default_spec("lulc", get_preset("tiny"))
    codes = np.zeros((300, 300), dtype=np.uint8)
    codes[:, :150] = 5  # Forest
    codes[:, 150:] = 1  # Water
    codes[0, 0] = 7  # one Solar panel pixel: lost by decimation, kept in the legend
    path = write_map(
        tmp_path / "m.tif", codes, spec, transform=rasterio.Affine(10, 0, 0, 0, -10, 0)
    )
    colors = {c.code: (*c.color, 255) for c in spec.classes}
    labels = [label for label, _ in _legend_entries(spec, colors, path)]
    assert [lbl.split("  ")[0] for lbl in labels] == ["Water", "Forest", "Solar panel"]
    assert labels[1].endswith("(50.0 %)") and labels[2].endswith("(< 0.1 %)")


def test_degree_ticks_are_round_and_on_the_edge():
    from alosmap.predict.preview import _deg_label, _deg_levels, _edge_ticks

    levels, dec = _deg_levels(139.383, 139.497, 5)
    assert levels == [139.4, 139.42, 139.44, 139.46, 139.48] and dec == 2
    assert _deg_label(-3.5, 1, "N", "S") == "3.5°S"
    ticks = _edge_ticks(np.array([35.3, 35.2]), np.array([0.0, 100.0]), [35.25])
    assert ticks == [(50.0, 35.25)]


def test_preview_of_a_users_legend(tmp_path, monkeypatch):
    """A model's own legend: its title over the map panel, its names and colours."""
    from alosmap.predict import preview

    legend = LANDCOVER3
    spec = default_spec(legend, get_preset("tiny"))
    scene = generate_scene(
        tmp_path, seed=3, width=200, height=120, write_label_tiles=False
    ).path
    with rasterio.open(scene) as ds:
        dn = ds.read(1)
        crs, transform = ds.crs, ds.transform
    codes = np.where(dn > 0, np.where(dn > np.median(dn[dn > 0]), 30, 10), 0)
    path = write_map(
        tmp_path / "m.tif", codes.astype(np.uint8), spec, crs=crs, transform=transform
    )
    seen = {}
    figure = preview._figure

    def spy(title, panels, entries):
        seen.update(label=panels.map_label, entries=entries)
        return figure(title, panels, entries)

    monkeypatch.setattr(preview, "_figure", spy)
    out = preview.write_preview(tmp_path / "p.png", scene, path, spec, max_size=100)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert seen["label"] == "Land cover, 3 classes"
    entries = [(label.split("  ")[0], rgb) for label, rgb in seen["entries"]]
    assert entries == [
        ("Open water", (31 / 255, 95 / 255, 191 / 255)),
        ("Settlement", (200 / 255, 50 / 255, 50 / 255)),
    ]
