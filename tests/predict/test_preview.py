import numpy as np
import pytest
import rasterio

from alosmap.arch import get_preset
from alosmap.errors import InputRasterError, OutputExistsError
from alosmap.io.writer import MapWriter
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
    with MapWriter(
        d / "map.tif",
        width=dn.shape[1],
        height=dn.shape[0],
        crs=crs,
        transform=transform,
        spec=spec,
    ) as mw:
        mw.write_rows(0, codes)
        map_path = mw.finalize()
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
