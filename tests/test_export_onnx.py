"""Tests for alosmap.export.onnx: export, dynamic batch, metadata, parity."""

import time

import numpy as np
import pytest
import torch

from alosmap.arch import get_preset
from alosmap.errors import SpecError
from alosmap.export.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    check_parity,
    export_onnx,
    read_metadata,
)
from alosmap.models import build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics and enlarge the classifier.

    Freshly initialised models have identity BN and near-zero logits, which makes
    parity too easy; this exercises BN folding and gives confident predictions.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
        model.head.conv_seg.weight.mul_(20.0)


def _inputs(batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 1, 256, 256)).astype(np.float32)


def _shape(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    ("highres", "refine_up", "num_classes"),
    [(False, False, 9), (True, False, 1), (False, True, 1), (True, True, 9)],
)
def test_export_parity_tiny(tmp_path, highres, refine_up, num_classes):
    torch.manual_seed(0)
    arch = get_preset(
        "tiny", highres=highres, refine_up=refine_up, num_classes=num_classes
    )
    model = build_model(arch).eval()
    _randomise_norm_stats(model)
    meta = {"alosmap.spec": '{"task": "lulc", "ü": "ß"}', "producer": "test"}
    path = export_onnx(model, tmp_path / "m.onnx", metadata=meta)
    assert path == tmp_path / "m.onnx" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp left

    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    in_shape, out_shape = _shape(proto.graph.input[0]), _shape(proto.graph.output[0])
    assert isinstance(in_shape[0], str) and in_shape[1:] == [1, 256, 256]
    assert out_shape[0] == in_shape[0] and out_shape[1:] == [num_classes, 256, 256]
    assert read_metadata(path) == meta

    for batch in (1, 3):  # the batch axis is dynamic
        res = check_parity(model, path, _inputs(batch, seed=batch))
        assert res["batch"] == batch
        assert res["max_abs_prob_diff"] < 1e-4, res
        assert res["argmax_agreement"] > 0.999, res
    assert model.training is False


def test_export_restores_train_mode_and_overwrites(tmp_path):
    model = build_model(get_preset("tiny", num_classes=1)).train()
    path = tmp_path / "sub" / "m.onnx"
    export_onnx(model, path, exporter="torchscript", metadata={"a": "1"})
    export_onnx(model, path, exporter="torchscript", metadata={"a": "2"})
    assert model.training
    assert read_metadata(path) == {"a": "2"}
    res = check_parity(model, path, _inputs(2, seed=0))
    assert res["max_abs_prob_diff"] < 1e-4
    assert model.training


def test_export_rejects_bad_metadata_and_models(tmp_path):
    model = build_model(get_preset("tiny"))
    with pytest.raises(SpecError, match="str to str"):
        export_onnx(model, tmp_path / "m.onnx", metadata={"n": 1})
    with pytest.raises(SpecError, match="SegmentationModel"):
        export_onnx(torch.nn.Conv2d(1, 1, 1), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


# Part of the default run: the Foundation issue's "done when" (about 45 s on 2 cores).
def test_paper_preset_onnx_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(get_preset("paper")).eval()
    _randomise_norm_stats(model)
    t0 = time.perf_counter()
    path = export_onnx(model, tmp_path / "paper.onnx", metadata={"k": "v"})
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = check_parity(model, path, _inputs(2, seed=0))
    t_parity = time.perf_counter() - t0
    print(f"paper ONNX: export {t_export:.1f} s, parity (B=2) {t_parity:.1f} s, {res}")
    assert res["max_abs_prob_diff"] < 1e-3, res
    assert res["argmax_agreement"] > 0.999, res
