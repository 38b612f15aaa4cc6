import json
import struct

import pytest

from alosmap.arch import PRESETS, ArchConfig, get_preset
from alosmap.errors import ModelFileError, OutputExistsError, SpecError
from alosmap.spec import (
    SPEC_KEY,
    ModelSpec,
    Radiometry,
    default_spec,
    load_model,
    load_spec,
    read_safetensors_metadata,
    save_model,
)


def test_spec_json_round_trip_is_exact():
    spec = default_spec(
        "lulc",
        get_preset("tiny"),
        radiometry=Radiometry(mean_db=-9.5, std_db=5.25),
        provenance={"data": "synthetic"},
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert again.arch.num_classes == 9 and len(again.classes) == 9


def test_water_spec_defaults():
    spec = default_spec("water", get_preset("tiny"))
    assert spec.arch.num_classes == 1
    assert spec.threshold == 0.5
    assert [c.code for c in spec.classes] == [0, 1]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(task="forest"), "task"),
        (lambda d: d["arch"].update(depths=[2, 2]), "arch.num_heads"),
        (lambda d: d["arch"].update(img_size=250), "arch.img_size"),
        (lambda d: d["arch"].update(num_classes=4), "arch.num_classes"),
        (lambda d: d["arch"].update(bogus=1), "arch: unknown"),
        (lambda d: d["radiometry"].update(std_db=0), "radiometry.std_db"),
        (lambda d: d["radiometry"].update(units="volts"), "radiometry.units"),
        (lambda d: d["radiometry"].update(clip_db=[5, -5]), "radiometry.clip_db"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.pop("arch"), "arch: missing"),
        (lambda d: d.update(threshold=1.5), "threshold"),
    ],
)
def test_invalid_spec_names_the_field(mutate, field):
    d = json.loads(default_spec("lulc", get_preset("tiny")).to_json())
    mutate(d)
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(d)
    assert str(err.value).startswith(field)


def test_presets_validate():
    paper = PRESETS["paper"]
    assert paper.stage_channels == (128, 256, 512, 1024)
    assert paper.num_heads == (4, 8, 16, 32) and paper.depths == (2, 2, 18, 2)
    assert paper.stride == 32 and paper.decoder_channels == 512
    with pytest.raises(SpecError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(SpecError, match="num_heads"):
        ArchConfig(embed_dim=30, num_heads=(4, 8, 16, 32))


def test_model_file_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    from alosmap.models import build_model

    spec = default_spec("lulc", get_preset("tiny", img_size=64))
    torch.manual_seed(0)
    model = build_model(spec.arch).eval()
    path = save_model(model, spec, tmp_path / "m.safetensors")
    assert load_spec(path) == spec
    meta = read_safetensors_metadata(path)
    assert SPEC_KEY in meta
    loaded, spec2 = load_model(path)
    assert spec2 == spec
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # no overwrite without asking; no temporary files left behind
    with pytest.raises(OutputExistsError):
        save_model(model, spec, path)
    save_model(model, spec, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_spec(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelFileError, match="too short"):
        load_spec(junk)
    junk.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ModelFileError, match="bad header"):
        load_spec(junk)
    # a valid safetensors file that is not an alosmap model
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="without an alosmap spec"):
        load_spec(plain)


def test_weights_must_match_architecture(tmp_path):
    pytest.importorskip("torch")
    from safetensors.torch import save_file

    from alosmap.models import build_model

    spec = default_spec("lulc", get_preset("tiny", img_size=64))
    state = build_model(spec.arch).state_dict()
    state.pop(next(iter(state)))
    path = tmp_path / "bad.safetensors"
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(path),
        metadata={SPEC_KEY: spec.to_json()},
    )
    with pytest.raises(ModelFileError, match="1 missing"):
        load_model(path)


def test_spec_with_a_users_legend_round_trips(tmp_path):
    from alosmap.classes import Legend, get_task
    from alosmap.spec import ModelSpec, default_spec

    lg = Legend.from_dict(
        {
            "name": "landcover3",
            "nodata": 0,
            "ignore": [-1],
            "classes": [
                {"name": "Water", "values": [1], "code": 10},
                {"name": "Vegetation", "values": [2, 3], "code": 20},
                {"name": "Urban", "values": [4], "code": 30},
            ],
        }
    )
    spec = default_spec(lg, get_preset("tiny"))
    assert spec.task == "landcover3" and spec.num_outputs == 3
    back = ModelSpec.from_json(spec.to_json())
    assert back == spec and back.legend == lg and back.threshold is None
    # a bundled task's spec stores no legend object and reads back its preset
    water = default_spec("water", get_preset("tiny"))
    assert "legend" not in water.to_dict()
    assert ModelSpec.from_json(water.to_json()).legend is get_task("water")
    # a task that is neither bundled nor described
    data = spec.to_dict()
    del data["legend"]
    with pytest.raises(SpecError, match="not a bundled task"):
        ModelSpec.from_dict(data)
    data = spec.to_dict()
    data["legend"]["classes"][0]["color"] = "nope"
    with pytest.raises(SpecError, match="colour"):
        ModelSpec.from_dict(data)
