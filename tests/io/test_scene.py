"""Scene checks: uint8 scenes, the dB plausibility message, the demo-model warning."""

from __future__ import annotations

import numpy as np
import pytest

from alosmap.errors import InputRasterError
from alosmap.io.scene import Scene
from alosmap.predict.options import InferenceOptions, bundled_model_warning
from alosmap.spec import Radiometry


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alosmap: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_uint8_scene_is_refused_unless_units_are_given(
    cli, make_geotiff, tiny_lulc_model, tmp_path
):
    rng = np.random.default_rng(0)
    u8 = make_geotiff(rng.integers(1, 255, (64, 64), dtype=np.uint8), "u8.tif")
    out = tmp_path / "m.tif"
    code, stdout, err = cli("predict", u8, "-m", tiny_lulc_model, "-o", out)
    line = _one_error_line(err)
    assert code == 1 and stdout == "" and not out.exists()
    assert "uint8 data is not ALOS-2 amplitude DN (uint16)" in line
    assert "--input-units dn|db|linear" in line
    # told the units, the scene is read
    db8 = make_geotiff(
        rng.integers(0, 30, (64, 64), dtype=np.uint8), "db8.tif", nodata=None
    )
    with pytest.raises(InputRasterError, match="uint8 data is not ALOS-2"):
        Scene(db8, Radiometry())
    with Scene(db8, Radiometry(), input_units="db") as sc:
        assert sc.units == "db" and sc.units_source == "--input-units"


def test_db_plausibility_names_the_share_outside_the_range(make_geotiff):
    # median -12 dB (inside -80..40) but 10 % of the values at +60 dB
    db = np.full((100, 100), -12.0, np.float32)
    db[:10] = 60.0
    scene = make_geotiff(db, "db.tif", nodata=None, tags={"UNITS": "db"})
    with pytest.raises(InputRasterError) as e:
        Scene(scene, Radiometry())
    msg = str(e.value)
    assert "10 % of values outside -80..40 dB" in msg, msg
    assert "median" not in msg
    # a median outside the range is still named as such
    db[:] = 70.0
    scene = make_geotiff(db, "db2.tif", nodata=None, tags={"UNITS": "db"})
    with pytest.raises(InputRasterError, match=r"median 70\.0 dB"):
        Scene(scene, Radiometry())
    # 3 % outside is accepted
    db[:] = -12.0
    db[:3] = 60.0
    scene = make_geotiff(db, "db3.tif", nodata=None, tags={"UNITS": "db"})
    with Scene(scene, Radiometry()) as sc:
        assert sc.units == "db"


def test_bundled_model_warning(make_geotiff, small_scene, tiny_lulc_model):
    rng = np.random.default_rng(0)
    real = make_geotiff(rng.integers(1200, 9000, (32, 32), dtype=np.uint16))
    with Scene(real, Radiometry()) as sc:
        real_tags = sc.tags
    with Scene(small_scene, Radiometry()) as sc:
        synthetic_tags = sc.tags
    assert synthetic_tags.get("SYNTHETIC") == "true"  # what alosmap.synthetic writes
    msg = bundled_model_warning(InferenceOptions(), real_tags)
    assert msg is not None and "\n" not in msg
    assert "trained on synthetic data only" in msg and "--model" in msg
    water = bundled_model_warning(InferenceOptions(task="water"), real_tags)
    assert water is not None and "bundled water model" in water
    assert bundled_model_warning(InferenceOptions(), synthetic_tags) is None
    given = InferenceOptions(model=tiny_lulc_model)
    assert bundled_model_warning(given, real_tags) is None


def test_bundled_model_warning_is_printed_once(cli, make_geotiff, tmp_path):
    rng = np.random.default_rng(0)
    real = make_geotiff(rng.integers(1200, 9000, (64, 64), dtype=np.uint16))
    code, _, err = cli("predict", real, "-o", tmp_path / "m.tif")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "synthetic data only" in ln]
    assert len(warnings) == 1, err
