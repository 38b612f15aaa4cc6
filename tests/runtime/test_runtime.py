"""Runtimes: the array protocol (torch tensors; NumPy arrays for ONNX Runtime on the
CPU), backend selection and its errors, ONNX Runtime sessions and providers, torch
precision, `alosmap info` backends, and onnx == torch on sample_data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SAMPLE_SCENES

from alosmap.errors import (
    BackendOptionError,
    BackendUnavailableError,
    ModelFileError,
    SpecMismatchError,
)
from alosmap.runtime import base, load_runtime, resolve_backend
from alosmap.runtime.base import logits_to_probs, run_numpy
from alosmap.runtime.onnx_backend import (
    CPU_EP,
    CUDA_EP,
    TRT_EP,
    OnnxRuntime,
    build_providers,
    provider_failure_reason,
    supports_user_stream,
    trt_cache_path,
    with_compute_stream,
)
from alosmap.runtime.probe import cpu_bf16_problem

ort = pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]
TRT_INSTALLED = base.backend_installed("tensorrt")


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _export(model_path: Path, out: Path, **kw) -> Path:
    from alosmap.export.onnx import export_onnx
    from alosmap.spec import SPEC_KEY, load_model

    net, spec = load_model(model_path)
    return export_onnx(net, out, metadata={SPEC_KEY: spec.to_json()}, **kw)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_lulc_model, tmp_path_factory):
    """The tiny LULC model as ONNX (TorchScript exporter: fast, same numerics)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny-lulc.onnx"
    return _export(tiny_lulc_model, out, exporter="torchscript")


@pytest.fixture(scope="module")
def tiny_water_onnx(tiny_water_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny-water.onnx"
    return _export(tiny_water_model, out, exporter="torchscript")


@pytest.fixture(scope="session")
def demo_lulc_onnx():
    """The bundled demo LULC model (small preset) as ONNX: the bundled export."""
    return REPO / "alosmap" / "weights" / "lulc.onnx"


def _tiles(n=3, size=256, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1, size, size), np.float32)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alosmap: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- the tensor protocol -------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_runtimes(tiny_lulc_model, tiny_onnx):
    """The tiny LULC model through torch, ONNX Runtime and ONNX Runtime IO binding."""
    rts = {
        "torch": load_runtime(tiny_lulc_model),
        "onnx": load_runtime(tiny_onnx),
        "onnx-bound": OnnxRuntime(tiny_onnx, io_binding=True),
    }
    yield rts
    for rt in rts.values():
        rt.close()


@pytest.mark.parametrize("which", ["torch", "onnx", "onnx-bound"])
def test_cpu_tensor_in_cpu_tensor_out(which, cpu_runtimes):
    rt = cpu_runtimes[which]
    x = torch.from_numpy(_tiles(2))
    p = rt.run(x)
    assert isinstance(p, torch.Tensor) and p.device.type == "cpu"
    assert p.dtype == torch.float32 and tuple(p.shape) == (2, 9, 256, 256)
    assert torch.allclose(p.sum(1), torch.ones(2, 256, 256), atol=1e-5)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    # the input is left alone; another dtype or a non-contiguous view is accepted
    assert torch.equal(x, torch.from_numpy(_tiles(2)))
    wide = torch.zeros(2, 1, 256, 512, dtype=torch.float64)
    wide[..., ::2] = x
    assert torch.allclose(rt.run(wide[..., ::2]), p, atol=1e-5)
    p.mul_(2.0)  # the caller may work on the result in place


@pytest.mark.parametrize("which", ["torch", "onnx", "onnx-bound"])
def test_a_copied_result_survives_the_next_run(which, cpu_runtimes):
    rt = cpu_runtimes[which]
    a, b = _tiles(3, seed=1), _tiles(3, seed=2)
    kept = rt.run(torch.from_numpy(a)).clone()  # valid until the next run: copied
    rt.run(torch.from_numpy(b))
    rt.run(torch.from_numpy(b[:1]))
    assert torch.equal(kept, torch.from_numpy(run_numpy(rt, a)))


def test_torch_and_onnx_agree_through_run_numpy(cpu_runtimes):
    x = _tiles(3, seed=3)
    ref = run_numpy(cpu_runtimes["torch"], x)
    for which in ("onnx", "onnx-bound"):
        p = run_numpy(cpu_runtimes[which], x)
        assert p.dtype == np.float32 and p.shape == ref.shape
        assert np.abs(p - ref).max() < 1e-4
        assert (p.argmax(1) == ref.argmax(1)).mean() > 0.999


def test_one_output_is_a_sigmoid(tiny_water_model, tiny_water_onnx):
    from alosmap.spec import load_model

    net, _ = load_model(tiny_water_model)
    x = _tiles(2, seed=4)
    with torch.no_grad():
        want = torch.sigmoid(net.eval()(torch.from_numpy(x)).float())
    for rt in (load_runtime(tiny_water_model), OnnxRuntime(tiny_water_onnx)):
        p = rt.run(torch.from_numpy(x))
        assert tuple(p.shape) == (2, 1, 256, 256) and p.dtype == torch.float32
        assert torch.allclose(p, want, atol=1e-4), rt.name


def test_run_refuses_wrong_shapes_and_numpy_in_torch(cpu_runtimes):
    assert cpu_runtimes["torch"].array_kind == "torch"
    with pytest.raises(TypeError, match="run_numpy"):
        cpu_runtimes["torch"].run(_tiles(1))
    for rt in cpu_runtimes.values():
        bad = [torch.zeros(1, 1, 128, 128)]
        if rt.array_kind == "numpy":
            bad.append(np.zeros((1, 1, 128, 128)))
        for x in bad:
            with pytest.raises(SpecMismatchError, match=r"\[B, 1, 256, 256\]"):
                rt.run(x)
        with pytest.raises(SpecMismatchError, match=r"got \[1, 256, 256\]"):
            rt.run(torch.zeros(1, 256, 256))


@pytest.mark.parametrize("which", ["onnx", "onnx-bound"])
def test_onnx_on_the_cpu_runs_numpy_arrays(which, cpu_runtimes):
    """The host path: NumPy in, NumPy out, the same numbers as the tensor path."""
    rt = cpu_runtimes[which]
    assert rt.array_kind == "numpy"
    x = _tiles(2, seed=5)
    p = rt.run(x)
    assert type(p) is np.ndarray and p.dtype == np.float32
    assert p.shape == (2, 9, 256, 256) and p.flags.c_contiguous
    assert np.array_equal(p, rt.run(torch.from_numpy(x)).numpy())
    assert np.array_equal(x, _tiles(2, seed=5))  # the input is left alone
    # float64 and strided views are taken as float32
    wide = np.zeros((2, 1, 256, 512))
    wide[..., ::2] = x
    assert np.array_equal(rt.run(wide[..., ::2]), p)
    assert np.array_equal(run_numpy(rt, x), p)


def test_logits_to_probs_in_numpy_as_in_torch():
    g = np.random.default_rng(0)
    logits = (g.standard_normal((2, 4, 3, 3)) * 30).astype(np.float16)
    p = logits_to_probs(logits)
    want = logits_to_probs(torch.from_numpy(logits)).numpy()
    assert type(p) is np.ndarray and p.dtype == np.float32
    assert np.allclose(p, want, atol=1e-6) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.array_equal(p.argmax(1), want.argmax(1))
    x = np.array([[[[-200.0, 0.0, 200.0]]]], np.float32)
    assert logits_to_probs(x).tolist() == [[[[0.0, 0.5, 1.0]]]]  # sigmoid, no overflow
    assert x.tolist() == [[[[-200.0, 0.0, 200.0]]]]  # never the logits themselves


def test_logits_to_probs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, generator=g) * 30
    p = logits_to_probs(logits.half())
    assert p.dtype == torch.float32
    assert torch.allclose(p.sum(1), torch.ones(2, 3, 3), atol=1e-5)
    assert torch.equal(p.argmax(1), logits.half().float().argmax(1))
    q = logits_to_probs(logits)
    assert q.data_ptr() != logits.data_ptr()  # never the logits themselves
    one = logits_to_probs(torch.tensor([[[[-200.0, 0.0, 200.0]]]]))
    assert one.tolist() == [[[[0.0, 0.5, 1.0]]]]  # K = 1: sigmoid, no overflow


def test_run_numpy_copies_a_reused_buffer():
    class Reusing:
        """A runtime whose result is a view of one buffer (as the protocol allows)."""

        array_kind = "torch"
        buf = torch.zeros(4, 9, 256, 256)

        def run(self, batch):
            self.buf[: len(batch)] = batch.mean()
            return self.buf[: len(batch)]

    rt = Reusing()
    first = run_numpy(rt, np.ones((2, 1, 256, 256)))  # float64 in, float32 out
    second = run_numpy(rt, np.full((2, 1, 256, 256), 3.0, np.float32))
    assert first.dtype == np.float32 and first.shape == (2, 9, 256, 256)
    assert float(first.max()) == 1.0 and float(second.min()) == 3.0


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["torch", "onnx"])
def test_cuda_tensors_stay_on_the_device(which, tiny_lulc_model, tiny_onnx):
    if not _gpu():
        pytest.skip("needs a CUDA GPU")
    if which == "onnx" and CUDA_EP not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no CUDA execution provider")
    path = tiny_lulc_model if which == "torch" else tiny_onnx
    x = _tiles(5, seed=5)
    ref = run_numpy(load_runtime(path), x)  # on the CPU
    rt = load_runtime(path, device="cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        src = torch.from_numpy(x).cuda()
        xd = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)  # a run that did not wait would read zeros
        xd.copy_(src)
        p = rt.run(xd)
        kept = p.clone()  # queued after run() on the same stream: sees the result
        rt.run(xd.flip(0))
        from_host = rt.run(torch.from_numpy(x))  # a CPU batch is copied over
    side.synchronize()
    assert p.device.type == "cuda" and p.dtype == torch.float32
    for got in (kept, from_host):
        got = got.cpu().numpy()
        assert np.abs(got - ref).max() < 2e-2
        assert (got.argmax(1) == ref.argmax(1)).mean() > 0.99
    rt.close()


# --- selection -------------------------------------------------------------------


def test_auto_goes_by_file_type():
    assert resolve_backend(Path("m.safetensors"), "auto") == "torch"
    assert resolve_backend(Path("m.ONNX"), "auto") == "onnx"
    assert resolve_backend(Path("m.onnx"), "onnx") == "onnx"
    if TRT_INSTALLED:
        assert resolve_backend(Path("m.engine"), "auto") == "tensorrt"
        assert resolve_backend(Path("m.plan"), "tensorrt") == "tensorrt"


def test_every_backend_has_the_runtime_protocol(tiny_lulc_model, tiny_onnx):
    from alosmap.runtime import loader
    from alosmap.runtime.base import Runtime
    from alosmap.runtime.tensorrt_backend import TensorRTRuntime

    assert load_runtime is loader.load_runtime
    assert not hasattr(base, "load_runtime")  # the protocol module opens nothing
    members = {n for n in vars(Runtime) if not n.startswith("_")}
    assert members == {
        "name", "spec", "device", "precision", "path", "threads", "array_kind",
        "run", "close",
    }  # fmt: skip
    for path in (tiny_lulc_model, tiny_onnx):
        rt = load_runtime(path)
        try:
            assert all(hasattr(rt, m) for m in members), rt.name
            assert rt.path == Path(path) and rt.precision == "fp32"
            assert rt.threads is not None and rt.threads >= 1
            assert rt.array_kind == {"torch": "torch", "onnx": "numpy"}[rt.name]
        finally:
            rt.close()
    # an engine's precision is fixed when it is built; it runs on the GPU only
    assert TensorRTRuntime.precision is None and TensorRTRuntime.threads is None
    assert TensorRTRuntime.array_kind == "torch"


def test_backend_file_mismatch_says_what_to_do():
    with pytest.raises(ModelFileError, match=r"alosmap export onnx"):
        resolve_backend(Path("m.safetensors"), "onnx")
    with pytest.raises(ModelFileError, match=r"--backend onnx.*--device cuda"):
        resolve_backend(Path("m.onnx"), "tensorrt")
    with pytest.raises(ModelFileError, match=r"\.safetensors"):
        resolve_backend(Path("m.onnx"), "torch")
    with pytest.raises(ModelFileError, match=r"unknown model file type '\.pt'"):
        resolve_backend(Path("m.pt"), "auto")
    with pytest.raises(BackendOptionError, match=r"auto, torch, onnx, tensorrt"):
        resolve_backend(Path("m.onnx"), "tpu")


@pytest.mark.skipif(TRT_INSTALLED, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_line_with_the_extra(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(engine)
    assert str(info.value) == (
        "TensorRT is not installed: pip install 'alosmap[tensorrt]'"
    )
    with pytest.raises(BackendUnavailableError, match="alosmap\\[tensorrt\\]"):
        resolve_backend(engine, "tensorrt")


def test_missing_onnxruntime_names_the_package(monkeypatch, tiny_onnx):
    # as if onnxruntime were not installed: its module cannot be found
    monkeypatch.setitem(base.BACKEND_MODULES, "onnx", "onnxruntime_absent_for_test")
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(tiny_onnx)
    msg = str(info.value)
    assert msg.startswith("ONNX Runtime is not installed: pip install onnxruntime")
    assert "\n" not in msg


def test_options_a_backend_cannot_honour(tiny_lulc_model, tiny_onnx):
    with pytest.raises(BackendOptionError, match=r"--compile is for the torch"):
        load_runtime(tiny_onnx, compile=True)
    with pytest.raises(BackendOptionError, match=r"bf16 is not supported with ONNX"):
        load_runtime(tiny_onnx, precision="bf16")
    with pytest.raises(BackendOptionError, match=r"fp32 graph; on the CPU"):
        load_runtime(tiny_onnx, precision="fp16")
    with pytest.raises(BackendOptionError, match=r"fp16 needs --device cuda"):
        load_runtime(tiny_lulc_model, precision="fp16")
    with pytest.raises(BackendOptionError, match=r"unknown precision 'fp8'"):
        load_runtime(tiny_lulc_model, precision="fp8")
    with pytest.raises(BackendOptionError, match=r"use cpu, cuda or cuda:N"):
        load_runtime(tiny_lulc_model, device="gpu")
    with pytest.raises(ModelFileError, match="not found"):
        load_runtime(tiny_onnx.with_name("absent.onnx"))


@pytest.mark.skipif(_gpu(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(tiny_lulc_model, tiny_onnx, capfd):
    with pytest.raises(BackendUnavailableError, match=r"PyTorch sees no CUDA GPU"):
        load_runtime(tiny_lulc_model, device="cuda")
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(tiny_onnx, device="cuda:0")
    msg = str(info.value)
    assert msg.startswith("--device cuda:0: ") and "use --device cpu" in msg
    assert "\n" not in msg
    out, err = capfd.readouterr()
    # ONNX Runtime's multi-line provider messages are turned into that one line
    assert "EP Error" not in out and "provider_bridge" not in err, (out, err)


# --- ONNX Runtime ------------------------------------------------------------------


def test_onnx_metadata_is_read_without_the_onnx_package(tiny_onnx, tmp_path):
    import onnx

    from alosmap.spec import read_onnx_props

    for path in (tiny_onnx, REPO / "alosmap" / "weights" / "water.onnx"):
        model = onnx.load(str(path), load_external_data=False)
        meta, first = read_onnx_props(path)
        assert meta == {p.key: p.value for p in model.metadata_props}
        assert first == model.graph.input[0].name
    for i, junk in enumerate((b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x0b")):
        bad = tmp_path / f"bad{i}.onnx"
        bad.write_bytes(junk)
        with pytest.raises(ModelFileError, match="not a readable ONNX model"):
            read_onnx_props(bad)
        with pytest.raises(ModelFileError, match="not a readable ONNX model"):
            load_runtime(bad)
    with pytest.raises(ModelFileError, match="not found"):
        read_onnx_props(tmp_path / "absent.onnx")


def test_onnx_cpu_session_settings(tiny_onnx):
    rt = load_runtime(tiny_onnx)
    assert rt.providers == [CPU_EP]
    opts = rt.session.get_session_options()
    assert opts.intra_op_num_threads == base.physical_cores()
    assert opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert (
        load_runtime(tiny_onnx, threads=1)
        .session.get_session_options()
        .intra_op_num_threads
        == 1
    )
    assert 1 <= base.physical_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("task", ["lulc", "water"])
def test_onnx_matches_torch_with_and_without_io_binding(
    task, tiny_lulc_model, tiny_water_model, tiny_onnx, tiny_water_onnx
):
    model, onnx_path = {
        "lulc": (tiny_lulc_model, tiny_onnx),
        "water": (tiny_water_model, tiny_water_onnx),
    }[task]
    x = _tiles()
    ref = run_numpy(load_runtime(model), x)
    plain = OnnxRuntime(onnx_path)
    bound = OnnxRuntime(onnx_path, io_binding=True)  # the GPU code path, on the CPU
    for rt in (plain, bound):
        p = run_numpy(rt, x)
        assert p.dtype == np.float32 and p.shape == ref.shape
        assert np.abs(p - ref).max() < 1e-4
    # a batch of another size through the same bindings (a prefix of the buffer),
    # then a larger one (a new buffer)
    assert np.abs(run_numpy(bound, x[:1]) - ref[:1]).max() < 1e-4
    x5 = _tiles(5, seed=1)
    assert np.abs(run_numpy(bound, x5) - run_numpy(plain, x5)).max() < 1e-5


def test_onnx_fp16_file_runs_as_fp16(tiny_lulc_model, tiny_onnx, tmp_path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # an fp16 graph with float32 I/O and the precision in its metadata, as
    # `alosmap export onnx --fp16` writes it
    m16 = convert_float_to_float16(onnx.load(tiny_onnx), keep_io_types=True)
    entry = m16.metadata_props.add()
    entry.key, entry.value = "alosmap.precision", "fp16"
    path = tmp_path / "m16.onnx"
    onnx.save(m16, path)
    rt = load_runtime(path)
    assert rt.precision == "fp16"
    x = _tiles(2)
    ref = run_numpy(load_runtime(tiny_lulc_model), x)
    p = run_numpy(rt, x)
    assert p.dtype == np.float32
    assert np.abs(p - ref).max() < 0.05
    assert (p.argmax(1) == ref.argmax(1)).mean() > 0.99
    with pytest.raises(BackendOptionError, match=r"is an fp16 export"):
        load_runtime(path, precision="fp32")
    assert load_runtime(tiny_onnx).precision == "fp32"


def test_onnx_graph_with_fp16_io(tiny_lulc_model, tiny_onnx, tmp_path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # not what `alosmap export onnx --fp16` writes (its I/O stays float32), but a
    # graph taking and giving float16 still runs: converted on the device, both paths
    m16 = convert_float_to_float16(onnx.load(tiny_onnx), keep_io_types=False)
    path = tmp_path / "io16.onnx"
    onnx.save(m16, path)
    x = _tiles(2)
    ref = run_numpy(load_runtime(tiny_lulc_model), x)
    for rt in (OnnxRuntime(path), OnnxRuntime(path, io_binding=True)):
        assert rt.session.get_inputs()[0].type == "tensor(float16)"
        p = rt.run(torch.from_numpy(x))
        assert p.dtype == torch.float32 and p.device.type == "cpu"
        assert (p.numpy().argmax(1) == ref.argmax(1)).mean() > 0.99
        assert np.abs(p.numpy() - ref).max() < 0.05


def test_provider_order_and_options(tmp_path):
    assert build_providers("cpu", [TRT_EP, CUDA_EP, CPU_EP]) == [(CPU_EP, {})]
    provs = build_providers(
        "cuda:1",
        [TRT_EP, CUDA_EP, CPU_EP],
        input_name="input",
        input_chw=(1, 256, 256),
        batch_range=(1, 16, 64),
        precision="fp16",
        trt_cache=tmp_path / "c",
    )
    assert [p[0] for p in provs] == [TRT_EP, CUDA_EP, CPU_EP]
    trt, cuda = provs[0][1], provs[1][1]
    assert trt["device_id"] == "1" and cuda == {"device_id": "1"}
    assert trt["trt_profile_min_shapes"] == "input:1x1x256x256"
    assert trt["trt_profile_opt_shapes"] == "input:16x1x256x256"
    assert trt["trt_profile_max_shapes"] == "input:64x1x256x256"
    assert trt["trt_fp16_enable"] == "True"
    assert trt["trt_layer_norm_fp32_fallback"] == "True"
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "c")
    assert trt["trt_timing_cache_path"] == str(tmp_path / "c")
    fp32 = build_providers("cuda", [TRT_EP, CUDA_EP, CPU_EP])[0][1]
    assert fp32["trt_fp16_enable"] == "False" and "trt_engine_cache_path" not in fp32
    no_trt = build_providers("cuda", [TRT_EP, CUDA_EP, CPU_EP], use_tensorrt=False)
    assert [p[0] for p in no_trt] == [CUDA_EP, CPU_EP]
    assert [p[0] for p in build_providers("cuda", [CUDA_EP, CPU_EP])] == [
        CUDA_EP,
        CPU_EP,
    ]
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime-gpu"):
        build_providers("cuda", [CPU_EP])


def test_onnx_on_the_gpu_needs_a_pytorch_that_sees_it(monkeypatch):
    from alosmap.runtime.onnx_backend import session_stream

    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BackendUnavailableError, match=r"is a CPU build.*--device cpu"):
        session_stream("cuda")
    if not _gpu():
        monkeypatch.setattr(torch.version, "cuda", "13.0")
        with pytest.raises(BackendUnavailableError, match=r"sees no CUDA GPU here"):
            session_stream("cuda:1")


def test_gpu_providers_run_on_a_given_stream():
    provs = build_providers("cuda", [TRT_EP, CUDA_EP, CPU_EP])
    streamed = with_compute_stream(provs, 0x7F00DEAD)
    assert [p[0] for p in streamed] == [TRT_EP, CUDA_EP, CPU_EP]
    for name, opts in streamed[:2]:
        assert opts["user_compute_stream"] == str(0x7F00DEAD), name
        assert opts["has_user_compute_stream"] == "1"
    assert streamed[1][1]["device_id"] == "0"  # the other options are kept
    assert streamed[2] == (CPU_EP, {}) and "user_compute_stream" not in provs[1][1]
    with pytest.raises(ValueError, match="stream 0"):
        with_compute_stream(provs, 0)  # the legacy default stream
    assert supports_user_stream("1.18.0") and supports_user_stream("1.31.1")
    assert supports_user_stream("2.0.0.dev20270101")
    assert not supports_user_stream("1.17.3") and not supports_user_stream("dev")


def test_engine_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("ALOSMAP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert base.cache_dir() == tmp_path / "xdg" / "alosmap"
    kw = dict(
        precision="fp16",
        batch_range=(1, 8, 64),
        gpu="NVIDIA H100 80GB HBM3",
        trt_version="10.9.0",
        ort_version="1.31.1",
    )
    p = trt_cache_path("0123abcd", **kw)
    assert p.parent == tmp_path / "xdg" / "alosmap" / "ort-trt" / "0123abcd"
    assert p.name == "NVIDIA_H100_80GB_HBM3-trt10.9.0-ort1.31.1-fp16-b1-8-64"
    # anything that invalidates an engine gives another folder
    for change in (
        {"precision": "fp32"},
        {"gpu": "NVIDIA A100"},
        {"trt_version": "10.10"},
        {"batch_range": (1, 8, 128)},
    ):
        assert trt_cache_path("0123abcd", **{**kw, **change}) != p
    monkeypatch.setenv("ALOSMAP_CACHE_DIR", str(tmp_path / "own"))
    assert base.cache_dir() == tmp_path / "own"
    assert len(base.file_sha256(Path(__file__))) == 16


def test_provider_failure_reason():
    text = (
        "\x1b[1;31m2026-11-24 [E:onnxruntime:Default, provider_bridge_ort.cc:2458] "
        "Failed to load library libonnxruntime_providers_cuda.so with error: "
        "libcublasLt.so.13: cannot open shared object file: No such file or "
        "directory\n\x1b[m\n"
    )
    assert provider_failure_reason(text) == (
        "libcublasLt.so.13: cannot open shared object file: No such file or directory"
    )
    assert provider_failure_reason(
        "CUDA failure 100: no CUDA-capable device is detected ; GPU=0"
    ) == ("CUDA failure 100: no CUDA-capable device is detected")
    assert provider_failure_reason("all fine") is None


# --- torch -------------------------------------------------------------------------


@pytest.mark.skipif(cpu_bf16_problem() is not None, reason="no native bf16 on this CPU")
def test_torch_bf16_on_cpu_is_close_to_fp32(tiny_lulc_model):
    x = _tiles(2)
    ref = run_numpy(load_runtime(tiny_lulc_model), x)
    rt = load_runtime(tiny_lulc_model, precision="bf16")
    assert rt.precision == "bf16"
    p = run_numpy(rt, x)
    assert p.dtype == np.float32
    assert np.abs(p - ref).max() < 0.05
    assert (p.argmax(1) == ref.argmax(1)).mean() > 0.99


@pytest.mark.slow
def test_torch_compile_pads_partial_batches(tiny_lulc_model):
    x = _tiles(3)
    ref = run_numpy(load_runtime(tiny_lulc_model), x)
    rt = load_runtime(tiny_lulc_model, compile=True)
    assert np.abs(run_numpy(rt, x) - ref).max() < 1e-4
    p = run_numpy(rt, x[:2])  # padded to 3: no second compilation
    assert p.shape[0] == 2 and np.abs(p - ref[:2]).max() < 1e-4


# --- command line ------------------------------------------------------------------


def test_predict_backend_errors_are_one_line(cli, small_scene, tiny_onnx, tmp_path):
    out = tmp_path / "m.tif"
    code, _, err = cli("predict", small_scene, "-m", tiny_onnx, "--backend", "torch")
    assert code == 1 and "cannot run tiny-lulc.onnx" in _one_error_line(err)
    code, _, err = cli("predict", small_scene, "-m", tiny_onnx, "--compile", "-o", out)
    assert code == 1 and "--compile is for the torch" in _one_error_line(err)
    code, _, err = cli(
        "predict", small_scene, "--backend", "torch", "--precision", "fp16", "-o", out
    )
    assert code == 1 and "fp16 needs --device cuda" in _one_error_line(err)
    # the bundled default model is the fp32 .onnx
    code, _, err = cli("predict", small_scene, "--precision", "fp16", "-o", out)
    assert code == 1 and "lulc.onnx is an fp32 graph" in _one_error_line(err)
    assert cli("predict", small_scene, "--precision", "fp8")[0] == 2
    if not TRT_INSTALLED:
        engine = tmp_path / "m.engine"
        engine.write_bytes(b"\0")
        code, _, err = cli("predict", small_scene, "-m", engine, "-o", out)
        assert code == 1
        assert _one_error_line(err).endswith(
            "TensorRT is not installed: pip install 'alosmap[tensorrt]'"
        )
    assert not out.exists()


def test_info_lists_backends(cli, tiny_onnx):
    code, out, err = cli("info")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("torch ") and "devices: cpu" in lines[0]
    assert any(ln.startswith("onnx ") for ln in lines)
    assert any("CPUExecutionProvider" in ln and ln.endswith("loads") for ln in lines)
    trt = next(ln for ln in lines if ln.startswith("tensorrt "))
    if not TRT_INSTALLED:
        assert trt == "tensorrt  not installed: pip install 'alosmap[tensorrt]'"
    code, out, _ = cli("info", "--backends", "--json")
    report = json.loads(out)
    onnx = next(b for b in report["backends"] if b["name"] == "onnx")
    cpu_ep = next(p for p in onnx["providers"] if p["name"] == CPU_EP)
    assert cpu_ep["loads"] is True and onnx["version"] == ort.__version__
    assert report["cpu"]["physical"] == base.physical_cores()
    code, out, _ = cli("info", tiny_onnx)
    assert code == 0 and "backend     onnx: runs here on cpu" in out
    code, out, _ = cli("info", "--json", tiny_onnx)
    assert json.loads(out)["backend"]["runs_here"]["devices"][:1] == ["cpu"]


# --- onnx == torch on sample_data ----------------------------------------------------


def _agree(a: Path, b: Path) -> float:
    with rasterio.open(a) as da, rasterio.open(b) as db:
        x, y = da.read(1), db.read(1)
    return float((x == y).mean())


@pytest.mark.skipif(not SAMPLE_SCENES, reason="sample_data missing")
def test_predict_onnx_equals_torch_on_sample_data(cli, demo_lulc_onnx, tmp_path):
    scene = SAMPLE_SCENES[0]
    a, b = tmp_path / "torch.tif", tmp_path / "onnx.tif"
    code, _, err = cli("-q", "predict", scene, "--backend", "torch", "-o", a)
    assert code == 0, err
    code, _, err = cli(
        "-q", "predict", scene, "-m", demo_lulc_onnx, "--backend", "onnx", "-o", b
    )
    assert code == 0, err
    assert _agree(a, b) >= 0.9999


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_SCENES, reason="sample_data missing")
def test_predict_onnx_equals_torch_on_every_sample_scene(demo_lulc_onnx, tmp_path):
    from alosmap.predict.pipeline import predict_scene

    for i, scene in enumerate(SAMPLE_SCENES):
        a, b = tmp_path / f"t{i}.tif", tmp_path / f"o{i}.tif"
        predict_scene(scene, a, backend="torch")
        predict_scene(scene, b, model=demo_lulc_onnx, backend="onnx")
        assert _agree(a, b) >= 0.9999, scene.name
