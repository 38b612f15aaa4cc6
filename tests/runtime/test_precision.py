"""16-bit precisions only where the device runs them natively (runtime.probe).

The CPU's flags are this machine's (the development machine has AVX512-BF16); its
absence is emulated by replacing :func:`~alosmap.runtime.probe.cpu_model_and_flags`,
so these tests give the same answers on CPUs with and without native bf16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alosmap.errors import BackendOptionError, InferenceOptionError
from alosmap.predict.options import InferenceOptions
from alosmap.runtime import load_runtime, probe
from alosmap.runtime.probe import (
    cpu_bf16_problem,
    cuda_precision_problem,
    precision_problem,
)

AVX2_ONLY = ("AMD EPYC 7B12", frozenset({"avx", "avx2", "fma", "f16c"}))
WITH_BF16 = ("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16"}))
WITH_AMX = ("Intel Xeon 8480+", frozenset({"avx2", "amx_bf16", "amx_tile"}))


@pytest.fixture
def cpu(monkeypatch):
    """Make this CPU look like ``(model, flags)`` to the probe."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)

    def use(model_and_flags):
        monkeypatch.setattr(probe, "cpu_model_and_flags", lambda: model_and_flags)

    return use


def test_bf16_is_native_only_with_avx512_bf16_or_amx(cpu, monkeypatch):
    cpu(AVX2_ONLY)
    why = cpu_bf16_problem()
    assert why is not None and "AMD EPYC 7B12" in why and "AVX512-BF16" in why
    assert precision_problem("bf16", "cpu", "torch") == why
    assert probe.cpu_info()["native_bf16"] is False
    for flags in (WITH_BF16, WITH_AMX):
        cpu(flags)
        assert cpu_bf16_problem() is None
        assert precision_problem("bf16", "cpu", "torch") is None
    # oneDNN capped below its bf16 ISA: no bf16 instructions (measured 110x slower)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in precision_problem("bf16", "cpu", "torch")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert precision_problem("bf16", "cpu", "torch") is None
    # ATEN_CPU_CAPABILITY picks ATen's kernels, not oneDNN's convolutions: no change
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert precision_problem("bf16", "cpu", "torch") is None


def test_what_the_probe_leaves_to_the_runtimes(cpu):
    cpu(AVX2_ONLY)
    for precision in (None, "fp32"):
        assert precision_problem(precision, "cpu", "torch") is None
    # ONNX Runtime refuses bf16 itself; an fp16 .onnx runs about as fast as fp32 on
    # its CPU provider; a TensorRT engine's precision is fixed when it is built
    assert precision_problem("bf16", "cpu", "onnx") is None
    assert precision_problem("fp16", "cpu", "onnx") is None
    assert precision_problem("fp16", "cuda", "tensorrt") is None


def test_this_machines_answer_matches_its_flags():
    _, flags = probe.cpu_model_and_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert (cpu_bf16_problem() is None) == (
        native and not probe.os.environ.get("ONEDNN_MAX_CPU_ISA")
    )


@pytest.mark.parametrize(
    ("capability", "bf16", "fp16"),
    [((8, 0), True, True), ((7, 5), False, True), ((6, 1), False, False),
     ((6, 0), False, True), ((5, 3), False, True), ((5, 2), False, False)],
)  # fmt: skip
def test_cuda_precisions_by_compute_capability(monkeypatch, capability, bf16, fp16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    for precision, native in (("bf16", bf16), ("fp16", fp16)):
        why = cuda_precision_problem(precision, "cuda:1")
        assert (why is None) == native, (capability, precision, why)
        if why:
            cc = f"{capability[0]}.{capability[1]}"
            assert f"GPU1 (compute capability {cc})" in why
        for backend in ("torch", "onnx"):
            assert precision_problem(precision, "cuda:1", backend) == why
    # a GPU PyTorch does not see: the runtime says so, not the probe
    assert cuda_precision_problem("bf16", "cuda:5") is None


def test_options_refuse_a_slow_precision_before_any_work(cpu, tiny_lulc_model):
    cpu(AVX2_ONLY)
    with pytest.raises(InferenceOptionError, match=r"^precision bf16 .*no native bf16"):
        InferenceOptions(model=tiny_lulc_model, precision="bf16")
    with pytest.raises(InferenceOptionError, match="no native bf16"):
        InferenceOptions(precision="bf16", backend="torch")
    # the bundled default model is .onnx: ONNX Runtime's own refusal applies later
    assert InferenceOptions(precision="bf16").precision == "bf16"
    with pytest.raises(BackendOptionError, match=r"--precision bf16 refused: .*7B12"):
        load_runtime(tiny_lulc_model, precision="bf16")
    cpu(WITH_BF16)
    assert InferenceOptions(model=tiny_lulc_model, precision="bf16").precision == "bf16"


def test_predict_refuses_it_with_one_line_and_exit_2(
    cpu, cli, small_scene, tiny_lulc_model, tmp_path
):
    cpu(AVX2_ONLY)
    out = tmp_path / "map.tif"
    code, stdout, err = cli(
        "predict", small_scene, "-m", tiny_lulc_model, "--precision", "bf16", "-o", out
    )
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and stdout == "" and not out.exists(), err
    assert len(lines) == 1 and "Traceback" not in err
    assert "--precision bf16: refused: this CPU (AMD EPYC 7B12) has no native" in err
    code, _, err = cli(
        "batch", small_scene, "-m", tiny_lulc_model, "--precision", "bf16",
        "-o", tmp_path / "b", "--no-stac",
    )  # fmt: skip
    assert code == 2 and "no native bf16" in err
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_bench_skips_a_slow_precision_with_the_reason(cpu, tiny_lulc_model, tmp_path):
    from alosmap.predict.bench import (
        BenchFiles,
        BenchRequest,
        Variant,
        _Comparison,
    )

    cpu(AVX2_ONLY)
    request = BenchRequest(variants=(Variant("torch", "bf16"),), size=0)
    files = BenchFiles(name="m", torch=tiny_lulc_model)
    tiles = tmp_path / "tiles.npy"
    np.save(tiles, np.zeros((1, 1, 256, 256), np.float32))
    run = _Comparison(request, files, tmp_path, None, tiles)
    res, probs = run.variant(Variant("torch", "bf16"), True)  # no child is started
    assert probs is None and res.rows == []
    assert res.skipped == res.error and "no native bf16" in res.skipped
    assert not list(tmp_path.glob("probs_*"))


def test_bench_prints_a_skipped_variant(capsys):
    from alosmap.cli.bench import _print_variant

    why = "bf16 is not native here: this CPU (X) has no native bf16"
    _print_variant({"variant": "torch-bf16", "skipped": why, "error": why}, None, {})
    assert capsys.readouterr().out.split() == ["torch-bf16", "skipped:", *why.split()]
