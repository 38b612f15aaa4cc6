"""alosmap export tensorrt and the TensorRT runtime.

TensorRT cannot be installed on the CI machines (no GPU, no NVIDIA libraries), so
the default run tests everything around the engine: profile checks, the FP32 layer
selection on real ONNX graphs, the spec sidecar, atomic writes, the compatibility
check and the error paths, including the real "TensorRT is not installed" one. The
engine build and run are in the ``gpu`` tests at the end, skipped without TensorRT
and a CUDA GPU.
"""

import importlib.util
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alosmap.arch import get_preset
from alosmap.cli.main import app
from alosmap.errors import (
    BackendUnavailableError,
    ExportError,
    ModelFileError,
    OutputExistsError,
    OutputPathError,
)
from alosmap.export.fp16 import fp32_sensitive_nodes
from alosmap.export.onnx import export_onnx
from alosmap.export.tensorrt import (
    build_engine,
    build_sidecar,
    check_output,
    check_profile,
    default_opt_batch,
    inspect_onnx,
    keep_layer_fp32,
    layer_onnx_nodes,
    write_engine,
)
from alosmap.models import build_model
from alosmap.runtime.base import run_numpy
from alosmap.runtime.tensorrt_backend import (
    TensorRTRuntime,
    check_engine_compatible,
    profile_batches,
    split_batches,
    tensorrt_version,
)
from alosmap.spec import (
    ENGINE_SIDECAR_FORMAT,
    SPEC_KEY,
    default_spec,
    engine_sidecar_path,
    load_spec,
    read_engine_sidecar,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
runner = CliRunner()
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
no_trt = pytest.mark.skipif(HAVE_TRT, reason="tests the path without TensorRT")


@pytest.fixture(scope="module")
def tiny():
    """A tiny LULC model and its spec (highres and refine_up on)."""
    spec = default_spec("lulc", get_preset("tiny"), name="tiny-trt-test")
    torch.manual_seed(0)
    return build_model(spec.arch).eval(), spec


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    """The tiny model exported like `alosmap export onnx` does (dynamo, opset 18)."""
    model, spec = tiny
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(model, path, metadata={SPEC_KEY: spec.to_json()})


def _sidecar(spec, **over):
    kw = {
        "trt_version": "10.3.0",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": (9, 0),
        "precision": "fp16",
        "profile": (1, 8, 32),
        "workspace_mib": 4096,
        "build_seconds": 42.123,
        "fp32_layers": 40,
        "onnx_name": "tiny.onnx",
        "onnx_sha256": "0" * 64,
    }
    kw.update(over)
    return build_sidecar(spec, **kw)


# --------------------------------------------------------------------------------------
# profile and batching
# --------------------------------------------------------------------------------------


def test_check_profile():
    check_profile(1, 8, 32)
    check_profile(4, 4, 4)
    for bad in ((8, 8, 4), (1, 16, 8), (2, 1, 4)):
        with pytest.raises(ExportError, match="min <= opt <= max"):
            check_profile(*bad)
    with pytest.raises(ExportError, match="--min-batch 0"):
        check_profile(0, 8, 32)
    with pytest.raises(ExportError, match="--max-batch"):
        check_profile(1, 1, 2.5)
    assert default_opt_batch(1, 32) == 8
    assert default_opt_batch(1, 4) == 4
    assert default_opt_batch(16, 64) == 16


def test_split_batches_cover_every_tile_within_the_profile():
    assert split_batches(70, 1, 32) == [(0, 32, 32), (32, 64, 32), (64, 70, 6)]
    assert split_batches(3, 4, 8) == [(0, 3, 4)]  # padded up to min_batch
    assert split_batches(0, 1, 8) == []
    for n, lo, hi in ((1, 1, 1), (33, 2, 16), (100, 7, 7)):
        calls = split_batches(n, lo, hi)
        assert [c[0] for c in calls] == list(range(0, n, hi))
        assert calls[-1][1] == n
        assert all(lo <= size <= hi and size >= b - a for a, b, size in calls)


def test_profile_batches_reads_the_sidecar(tiny):
    side = _sidecar(tiny[1], profile=(2, 4, 16))
    assert profile_batches(side) == (2, 4, 16)
    side["tensorrt"]["opt_batch"] = 64
    with pytest.raises(ModelFileError, match="invalid batch profile 2/64/16"):
        profile_batches(side)
    del side["tensorrt"]["max_batch"]
    with pytest.raises(ModelFileError, match="max_batch"):
        profile_batches(side)


# --------------------------------------------------------------------------------------
# FP32 layer selection (FP16 engines)
# --------------------------------------------------------------------------------------


def test_layer_onnx_nodes_parses_tensorrt_metadata():
    assert layer_onnx_nodes("[ONNX Layer: node_layer_norm]") == ["node_layer_norm"]
    fused = "[ONNX Layer: /a/Sub]\x1f[ONNX Layer: /a/Pow]\x1e[ONNX Layer: /a/Div]"
    assert layer_onnx_nodes(fused) == ["/a/Sub", "/a/Pow", "/a/Div"]
    assert layer_onnx_nodes("") == [] and layer_onnx_nodes(None) == []


def test_keep_layer_fp32_rules():
    keep = {"/norm/Pow", "node_softmax"}
    assert keep_layer_fp32("NORMALIZATION", "anything", "", set())
    assert keep_layer_fp32("SOFTMAX", "x", "", set())
    assert keep_layer_fp32("ELEMENTWISE", "/norm/Pow", "", keep)  # by layer name
    assert keep_layer_fp32(
        "ELEMENTWISE", "/norm/Pow_1", "[ONNX Layer: /norm/Pow]", keep
    )
    assert not keep_layer_fp32(
        "ELEMENTWISE", "/attn/Mul", "[ONNX Layer: /attn/Mul]", keep
    )
    assert not keep_layer_fp32("MATRIX_MULTIPLY", "node_linear", "", keep)
    # a constant (the Pow exponent) made for a selected node computes nothing
    assert not keep_layer_fp32(
        "CONSTANT", "/norm/Pow_c", "[ONNX Layer: /norm/Pow]", keep
    )


def test_fp32_selection_on_a_graph_with_layernorm_ops(tiny_onnx):
    graph = onnx.load(str(tiny_onnx)).graph
    selected = set(fp32_sensitive_nodes(graph))
    by_op = {}
    for n in graph.node:
        by_op.setdefault(n.op_type, []).append(n.name)
    # opset 18: LayerNorm and softmax are single ops, nothing else is pinned
    assert selected == set(by_op["LayerNormalization"]) | set(by_op["Softmax"])
    assert len(by_op["LayerNormalization"]) > 10 and by_op["Softmax"]
    # what the TensorRT build sees: one layer per node, named after it
    pinned = {
        n.name
        for n in graph.node
        if keep_layer_fp32("X", n.name, f"[ONNX Layer: {n.name}]", selected)
    }
    assert pinned == selected


def test_fp32_selection_finds_decomposed_layernorms(tiny, tmp_path):
    # opset 16 has no LayerNormalization: the exporter writes the 9-op chain
    path = export_onnx(tiny[0], tmp_path / "t16.onnx", opset=16, exporter="torchscript")
    graph = onnx.load(str(path)).graph
    nodes = {n.name: n for n in graph.node}
    selected = fp32_sensitive_nodes(graph)
    sqrt = [n for n in graph.node if n.op_type == "Sqrt"]
    n_norm = sum(isinstance(m, torch.nn.LayerNorm) for m in tiny[0].modules())
    assert len(sqrt) == n_norm > 10
    ops = [nodes[s].op_type for s in selected]
    assert ops.count("Softmax") == sum(n.op_type == "Softmax" for n in graph.node)
    for op in ("ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div"):
        expected = 2 * n_norm if op == "ReduceMean" else n_norm
        assert ops.count(op) == expected, (op, ops.count(op))
    # the affine part (Mul by gamma, Add beta) and the rest of the graph stay fp16
    assert len(selected) == 7 * n_norm + ops.count("Softmax")
    assert "Mul" not in ops and "MatMul" not in ops
    # every pinned Div divides by a pinned Sqrt
    for s in selected:
        if nodes[s].op_type == "Div":
            producer = next(n for n in graph.node if nodes[s].input[1] in n.output)
            assert producer.name in selected and producer.op_type == "Sqrt"


# --------------------------------------------------------------------------------------
# the ONNX input of a build
# --------------------------------------------------------------------------------------


def test_inspect_onnx(tiny, tiny_onnx, tmp_path):
    info = inspect_onnx(tiny_onnx)
    assert info.spec == tiny[1]
    assert (info.input_name, info.output_name) == ("input", "logits")
    assert info.batch is None and info.precision == "fp32"
    assert len(info.sha256) == 64 and info.fp32_nodes

    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "nospec.onnx"))
    with pytest.raises(ModelFileError, match="without an alosmap spec"):
        inspect_onnx(tmp_path / "nospec.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(ModelFileError, match="not a readable ONNX"):
        inspect_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match="not found"):
        inspect_onnx(tmp_path / "missing.onnx")


def test_fixed_batch_onnx_needs_a_matching_profile(tiny, tmp_path):
    model, spec = tiny
    path = export_onnx(
        model,
        tmp_path / "fixed.onnx",
        metadata={SPEC_KEY: spec.to_json()},
        dynamic_batch=False,
        exporter="torchscript",
    )
    assert inspect_onnx(path).batch == 1
    # refused before TensorRT is even imported
    with pytest.raises(ExportError, match="fixed batch of 1"):
        build_engine(path, tmp_path / "m.engine", max_batch=8)
    with pytest.raises(ExportError, match="--workspace 8"):
        build_engine(path, tmp_path / "m.engine", workspace_mib=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.onnx"]


# --------------------------------------------------------------------------------------
# sidecar, atomic writes and the compatibility check
# --------------------------------------------------------------------------------------


def test_sidecar_round_trip(tiny, tmp_path):
    spec = tiny[1]
    side = _sidecar(spec, parity={"max_abs_prob_diff": 1e-3})
    engine = write_engine(tmp_path / "m.engine", b"engine bytes", side)
    assert engine.read_bytes() == b"engine bytes"
    assert engine_sidecar_path(engine) == tmp_path / "m.engine.json"
    data = read_engine_sidecar(engine)
    assert data == json.loads(json.dumps(side))
    assert data["format"] == ENGINE_SIDECAR_FORMAT
    trt = data["tensorrt"]
    assert trt["compute_capability"] == [9, 0] and trt["gpu_name"].startswith("NVIDIA")
    assert (trt["min_batch"], trt["opt_batch"], trt["max_batch"]) == (1, 8, 32)
    assert trt["precision"] == "fp16" and trt["build_seconds"] == 42.12
    assert trt["tile"] == 256 and trt["built_at"].endswith("+00:00")
    assert load_spec(engine) == spec  # `alosmap info` and load_runtime read this
    # a hand-made sidecar holding only the spec is accepted by load_spec
    (tmp_path / "bare.plan").write_bytes(b"x")
    (tmp_path / "bare.plan.json").write_text(spec.to_json())
    assert load_spec(tmp_path / "bare.plan") == spec


def test_write_engine_is_all_or_nothing(tiny, tmp_path):
    spec = tiny[1]
    out = write_engine(tmp_path / "m.engine", b"old", _sidecar(spec))
    old_side = engine_sidecar_path(out).read_text()
    bad = _sidecar(spec, parity={"not json": object()})
    with pytest.raises(TypeError):
        write_engine(out, b"new", bad)
    assert out.read_bytes() == b"old"
    assert engine_sidecar_path(out).read_text() == old_side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]


def test_check_output(tmp_path):
    assert check_output(tmp_path / "a.engine", overwrite=False) == tmp_path / "a.engine"
    with pytest.raises(OutputPathError, match=r"\.engine, \.plan, \.trt"):
        check_output(tmp_path / "a.onnx", overwrite=False)
    (tmp_path / "b.engine.json").write_text("{}")  # a stale sidecar alone
    with pytest.raises(OutputExistsError, match=r"b\.engine\.json exists"):
        check_output(tmp_path / "b.engine", overwrite=False)
    check_output(tmp_path / "b.engine", overwrite=True)


def test_engine_compatibility(tiny, caplog):
    side = _sidecar(tiny[1])
    here = {"trt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3"}
    check_engine_compatible(side, compute_capability=(9, 0), **here)

    with pytest.raises(ModelFileError, match=r"TensorRT 10\.3\.0 but this is TensorRT"):
        check_engine_compatible(
            side,
            trt_version="10.7.0",
            gpu_name=here["gpu_name"],
            compute_capability=(9, 0),
        )
    with pytest.raises(ModelFileError) as err:
        check_engine_compatible(
            side,
            trt_version="10.3.0",
            gpu_name="NVIDIA GeForce RTX 3090",
            compute_capability=(8, 6),
            source="m.engine",
        )
    msg = str(err.value)
    assert "m.engine was built for NVIDIA H100" in msg and "8.6" in msg
    assert "alosmap export tensorrt" in msg and "\n" not in msg

    with caplog.at_level(logging.WARNING):  # same architecture, other GPU: works
        check_engine_compatible(
            side,
            trt_version="10.3.0",
            gpu_name="NVIDIA H100 PCIe",
            compute_capability=(9, 0),
        )
    assert "built on NVIDIA H100 80GB HBM3" in caplog.text

    for broken, match in (
        ({}, "no TensorRT build record"),
        ({"tensorrt": {"compute_capability": [9, 0]}}, "which TensorRT built it"),
        ({"tensorrt": {"version": "10.3.0"}}, "no valid compute_capability"),
    ):
        with pytest.raises(ModelFileError, match=match):
            check_engine_compatible(broken, compute_capability=(9, 0), **here)


# --------------------------------------------------------------------------------------
# the runtime and the CLI without TensorRT
# --------------------------------------------------------------------------------------


@no_trt
def test_runtime_without_tensorrt(tiny, tmp_path):
    assert tensorrt_version() is None
    engine = write_engine(
        tmp_path / "m.engine", b"never deserialised", _sidecar(tiny[1])
    )
    with pytest.raises(BackendUnavailableError) as err:
        TensorRTRuntime(engine)
    assert "pip install 'alosmap[tensorrt]'" in str(err.value)
    with pytest.raises(BackendUnavailableError, match="GPUs only"):
        TensorRTRuntime(engine, device="cpu")
    engine_sidecar_path(engine).unlink()
    with pytest.raises(ModelFileError, match="without its spec sidecar"):
        TensorRTRuntime(engine)


@no_trt
def test_cli_tensorrt_missing_is_one_line(tiny_onnx, tmp_path):
    res = subprocess.run(
        [
            *(sys.executable, "-m", "alosmap", "export", "tensorrt"),
            *(str(tiny_onnx), "-o", str(tmp_path / "m.engine")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "alosmap: error: TensorRT is not installed (No module named 'tensorrt'): "
        "pip install 'alosmap[tensorrt]'"
    ]
    assert not list(tmp_path.iterdir())


def test_cli_tensorrt_bad_input(tiny_onnx, tmp_path):
    base = ["export", "tensorrt", str(tiny_onnx), "-o"]
    engine = str(tmp_path / "m.engine")
    res = runner.invoke(app, [*base, engine, "--min-batch", "8", "--max-batch", "4"])
    assert res.exit_code == 2 and "min <= opt <= max" in res.output
    res = runner.invoke(app, [*base, str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and isinstance(res.exception, OutputPathError)
    (tmp_path / "m.engine").write_bytes(b"")
    res = runner.invoke(app, [*base, engine])
    assert res.exit_code == 1 and isinstance(res.exception, OutputExistsError)
    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    res = runner.invoke(
        app,
        [
            "export",
            "tensorrt",
            str(tmp_path / "plain.onnx"),
            "-o",
            str(tmp_path / "p.engine"),
        ],
    )
    assert res.exit_code == 1 and "without an alosmap spec" in str(res.exception)
    res = runner.invoke(app, [*base, engine, "--overwrite", "--device", "cpu"])
    assert res.exit_code == 1 and "GPUs only" in str(res.exception)


# --------------------------------------------------------------------------------------
# on a GPU with TensorRT
# --------------------------------------------------------------------------------------


def _need_trt_gpu():
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (pip install 'alosmap[tensorrt]')"
    )
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_run_and_parity(tiny_onnx, tmp_path, fp16):
    _need_trt_gpu()
    from alosmap.export.onnx import compare_probs, onnx_logits, probabilities

    res = build_engine(
        tiny_onnx, tmp_path / "m.engine", fp16=fp16, min_batch=2, max_batch=4
    )
    side = read_engine_sidecar(res.path)
    assert side["tensorrt"]["precision"] == ("fp16" if fp16 else "fp32")
    assert side["parity"]["max_abs_prob_diff"] <= side["parity"]["tolerance"]
    if fp16:
        assert side["tensorrt"]["fp32_layers"] >= len(
            inspect_onnx(tiny_onnx).fp32_nodes
        )
    rt = TensorRTRuntime(res.path)
    assert (rt.min_batch, rt.max_batch) == (2, 4)
    x = np.random.default_rng(0).standard_normal((9, 1, 256, 256), dtype=np.float32)
    probs = run_numpy(rt, x)  # 9 tiles: chunks of 4, 4 and 1 (padded to 2)
    assert probs.shape == (9, 9, 256, 256) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    cmp = compare_probs(probabilities(onnx_logits(tiny_onnx, x)), probs)
    assert cmp["max_abs_prob_diff"] < 5e-2 and cmp["argmax_agreement"] > 0.99
    np.testing.assert_allclose(run_numpy(rt, x[:1]), probs[:1], atol=1e-5)
    # the tensor protocol: a device tensor in, float32 probabilities on the device
    # out, queued on the current stream (a side stream here)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        xd = torch.from_numpy(x).cuda()
        p = rt.run(xd)
        kept = p.clone()
        rt.run(xd[:3].flip(0))  # reuses the engine's buffers
    side.synchronize()
    assert p.device.type == "cuda" and p.dtype == torch.float32
    np.testing.assert_allclose(kept.cpu().numpy(), probs, atol=1e-5)
    rt.close()


@pytest.mark.gpu
def test_engine_from_another_tensorrt_is_refused(tiny_onnx, tmp_path):
    _need_trt_gpu()
    res = build_engine(tiny_onnx, tmp_path / "m.engine", max_batch=2, check=False)
    side_path = engine_sidecar_path(res.path)
    side = json.loads(side_path.read_text())
    side["tensorrt"]["version"] = "9.0.0"
    side_path.write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"built with TensorRT 9\.0\.0"):
        TensorRTRuntime(res.path)
