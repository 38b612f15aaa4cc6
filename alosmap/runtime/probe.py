"""What can run here: backends, execution providers, devices, native precisions.

:func:`describe_backends` (``alosmap info``) imports each installed backend and, with
``probe=True``, checks each ONNX Runtime execution provider by opening a one-node
session with it: ``onnxruntime.get_available_providers()`` lists the providers the
wheel was built with, not the ones whose libraries (CUDA, cuDNN, TensorRT) and GPU
are present.

:func:`precision_problem` says why a 16-bit precision is not native on a device, so
that it is refused before any work instead of running many times slower than fp32:

* CPU, bf16 (torch): native only with AVX512-BF16 or AMX-BF16 in the CPU's flags and
  oneDNN allowed to use them (``ONEDNN_MAX_CPU_ISA`` not capped below
  ``AVX512_CORE_BF16``). Measured on the development machine (AMD EPYC with
  AVX512-BF16), two 64-channel 3×3 convolutions on 2×128² plus a linear layer, one
  core, CPU seconds fp32 / bf16: 0.093 / 0.037 as it is; 0.119 / 13.5 with
  ``ONEDNN_MAX_CPU_ISA=AVX2`` (no bf16 instructions: PyTorch's slow reference
  convolution, the 150× trap of an AVX2-only CPU); 0.104 / 0.173 with
  ``AVX512_CORE`` (bf16 emulated). ``ATEN_CPU_CAPABILITY=avx2`` changes nothing
  (0.103 / 0.041): the convolutions and matmuls are oneDNN's.
* CPU, fp16: PyTorch refuses it itself (no fast fp16 kernels); an fp16 ``.onnx``
  export runs on ONNX Runtime's CPU provider about as fast as fp32 (measured: the
  small demo model, 4 tiles, one core, 0.26 / 0.26-0.27 CPU s), so it is accepted.
* CUDA: bf16 from compute capability 8.0 (Ampere); fp16 from 7.0 (tensor cores) and
  on 5.3, 6.0 and 6.2, the older GPUs with full-rate fp16 (6.1, consumer Pascal, runs
  fp16 at 1/64 of its fp32 rate).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from importlib import metadata
from typing import Any

from alosmap.runtime.base import INSTALL_HINTS, backend_installed, physical_cores

logger = logging.getLogger(__name__)


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


#: CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: ``ONEDNN_MAX_CPU_ISA`` caps under which oneDNN uses no bf16 instructions.
ONEDNN_NO_BF16 = frozenset(
    {
        "SSE41",
        "AVX",
        "AVX2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
    }
)
#: CUDA compute capabilities below 7.0 with full-rate fp16 arithmetic.
_OLD_FP16_GPUS = frozenset({(5, 3), (6, 0), (6, 2)})


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """This CPU's model name and flags (``/proc/cpuinfo``; no flags elsewhere)."""
    import platform

    flags: frozenset[str] = frozenset()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, flags


def cpu_bf16_problem() -> str | None:
    """Why bf16 is not native on this CPU for PyTorch (None: it is).

    See the module docstring: the CPU's flags, and oneDNN's ISA cap.
    """
    model, flags = cpu_model_and_flags()
    if not flags & BF16_CPU_FLAGS:
        return (
            f"this CPU ({model}) has no native bf16 (AVX512-BF16 or AMX), where bf16 "
            "runs up to 150x slower than fp32"
        )
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = os.environ.get(var, "").strip().upper()
        if cap in ONEDNN_NO_BF16:
            return (
                f"{var}={cap} keeps oneDNN from this CPU's bf16 instructions, where "
                "bf16 runs up to 150x slower than fp32"
            )
    return None


def cuda_precision_problem(precision: str, device: str) -> str | None:
    """Why ``precision`` (bf16/fp16) is not native on the GPU ``device`` (None: it is).

    None too where PyTorch or the GPU is missing: opening the runtime says so.
    """
    try:
        import torch
    except ImportError:
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return None
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
    except Exception as exc:  # a broken driver: the runtime reports it
        logger.debug("CUDA capability unavailable: %s", exc)
        return None
    cc = (major, minor)
    if precision == "bf16" and cc < (8, 0):
        return (
            f"{name} (compute capability {major}.{minor}) has no native bf16 "
            "(8.0 and later have it); use fp16 or fp32"
        )
    if precision == "fp16" and cc < (7, 0) and cc not in _OLD_FP16_GPUS:
        return (
            f"{name} (compute capability {major}.{minor}) has no full-rate fp16 "
            "(7.0 and later have it); use fp32"
        )
    return None


def precision_problem(precision: str | None, device: str, backend: str) -> str | None:
    """Why ``precision`` is not native for ``backend`` on ``device`` (None: it is).

    Only the speed trap is judged here (see the module docstring); what a backend
    cannot run at all (bf16 on ONNX Runtime, fp16 in PyTorch on the CPU) its runtime
    refuses itself.

    Args:
        precision: ``fp32``, ``bf16``, ``fp16`` or None (the backend's default).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        backend: the resolved backend: ``torch``, ``onnx`` or ``tensorrt``.
    """
    if precision in (None, "fp32") or backend == "tensorrt":
        return None
    if device.startswith("cuda"):
        return cuda_precision_problem(precision, device)
    if precision == "bf16" and backend == "torch":
        return cpu_bf16_problem()
    return None


def cpu_info() -> dict[str, Any]:
    """Cores, default threads and native bf16 support of this CPU."""
    model, _ = cpu_model_and_flags()
    return {
        "model": model,
        "logical": os.cpu_count() or 1,
        "physical": physical_cores(),
        "default_threads": physical_cores(),
        "native_bf16": cpu_bf16_problem() is None,
    }


def _torch_info() -> dict[str, Any]:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "device": f"cuda:{i}",
                    "name": p.name,
                    "capability": f"{p.major}.{p.minor}",
                    "memory_gb": round(p.total_memory / 2**30, 1),
                    "bf16": bool(torch.cuda.is_bf16_supported()),
                }
            )
    devices = ["cpu"] + [g["device"] for g in gpus]
    precisions = {"cpu": ["fp32"] + (["bf16"] if cpu_bf16_problem() is None else [])}
    if gpus:
        precisions["cuda"] = ["fp32"] + [
            p for p in ("fp16", "bf16") if cuda_precision_problem(p, "cuda") is None
        ]
    return {
        "name": "torch",
        "installed": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "devices": devices,
        "gpus": gpus,
        "precisions": precisions,
        "compile": shutil.which(os.environ.get("CXX", "g++")) is not None or bool(gpus),
    }


def probe_graph_bytes(opset: int = 17) -> bytes:
    """A one-node ONNX graph (a softmax over ``[N, 2, H, W]``) to open sessions with."""
    from onnx import TensorProto, helper

    shape: list[str | int] = ["N", 2, "H", "W"]
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "alosmap_probe",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _probe_provider(ort: Any, provider: str) -> tuple[bool, str | None]:
    """Open a one-node session with ``provider``; (loads, reason if not)."""
    from alosmap.runtime.onnx_backend import (
        CPU_EP,
        TRT_EP,
        capture_native_output,
        prepare_gpu_libraries,
        provider_failure_reason,
        session_options,
        tensorrt_libraries_present,
    )

    if provider == TRT_EP and not tensorrt_libraries_present():
        return False, INSTALL_HINTS["tensorrt"]
    sink: list[str] = []
    try:
        with capture_native_output(sink):
            if provider != CPU_EP:
                prepare_gpu_libraries(ort, provider == TRT_EP)
            session = ort.InferenceSession(
                probe_graph_bytes(),
                sess_options=session_options(ort, 1),
                providers=[provider, CPU_EP] if provider != CPU_EP else [CPU_EP],
                enable_fallback=0,
            )
    except Exception as exc:  # any failure means "does not load here"
        why = provider_failure_reason("".join(sink)) or " ".join(str(exc).split())
        return False, why[:200]
    if provider in session.get_providers():
        return True, None
    reason = provider_failure_reason("".join(sink))
    return False, reason or "listed, but did not load (no GPU or libraries missing?)"


def _onnx_info(probe: bool) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        from onnxruntime.capi import build_and_package_info as build

        package = getattr(build, "package_name", "onnxruntime")
        cuda = getattr(build, "cuda_version", None)
    except ImportError:
        package, cuda = "onnxruntime", None
    providers = []
    for name in ort.get_available_providers():
        entry: dict[str, Any] = {"name": name}
        if probe:
            entry["loads"], entry["reason"] = _probe_provider(ort, name)
        providers.append(entry)
    gpu_eps = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    cuda_ok = any(p.get("loads") and p["name"] in gpu_eps for p in providers)
    return {
        "name": "onnx",
        "installed": True,
        "version": ort.__version__,
        "package": package,
        "cuda_build": cuda,
        "providers": providers,
        "devices": ["cpu", "cuda"] if cuda_ok else ["cpu"],
        "precisions": ["fp32", "fp16 (fp16 export, or TensorRT EP)"],
    }


def _tensorrt_info(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    version = None
    try:
        from alosmap.runtime.tensorrt_backend import tensorrt_version

        version = tensorrt_version()
    except Exception as exc:  # the TensorRT runtime module may be absent
        logger.debug("tensorrt_version unavailable: %s", exc)
    version = version or _version("tensorrt", "tensorrt-cu13", "tensorrt-cu12")
    return {
        "name": "tensorrt",
        "installed": True,
        "version": version,
        "devices": [g["device"] for g in gpus],
        "precisions": ["fixed when the engine is built"],
        "note": None if gpus else "no GPU visible: engines cannot run here",
    }


def describe_backend(name: str, probe: bool = True) -> dict[str, Any]:
    """One entry of :func:`describe_backends` (``torch``, ``onnx`` or ``tensorrt``)."""
    if not backend_installed(name):
        return {"name": name, "installed": False, "install": INSTALL_HINTS[name]}
    try:
        if name == "torch":
            return _torch_info()
        if name == "onnx":
            return _onnx_info(probe)
        gpus = _torch_info()["gpus"] if backend_installed("torch") else []
        return _tensorrt_info(gpus)
    except Exception as exc:  # an installed but broken backend
        return {
            "name": name,
            "installed": True,
            "error": " ".join(str(exc).split())[:200],
        }


def describe_backends(probe: bool = True) -> dict[str, Any]:
    """Backends, providers, devices and versions available on this machine.

    Args:
        probe: check that each ONNX Runtime provider really loads (a few hundred ms;
            creates a CUDA context where there is a GPU).

    Returns:
        ``{"backends": [...], "cpu": {...}, "gpus": [...]}``; a backend that is not
        installed has ``installed: False`` and the ``install`` line.
    """
    backends = [describe_backend(n, probe) for n in ("torch", "onnx", "tensorrt")]
    gpus: list[dict[str, Any]] = next(
        (b.get("gpus", []) for b in backends if b["name"] == "torch"), []
    )
    return {"backends": backends, "cpu": cpu_info(), "gpus": gpus}
