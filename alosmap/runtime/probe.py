"""What can run here: backends, execution providers, devices (``alosmap info``).

:func:`describe_backends` imports each installed backend and, with ``probe=True``,
checks each ONNX Runtime execution provider by opening a one-node session with it:
``onnxruntime.get_available_providers()`` lists the providers the wheel was built
with, not the ones whose libraries (CUDA, cuDNN, TensorRT) and GPU are present.
"""

from __future__ import annotations

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


def cpu_info() -> dict[str, Any]:
    """Cores, default threads and native bf16 support of this CPU."""
    import platform

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "model": model,
        "logical": os.cpu_count() or 1,
        "physical": physical_cores(),
        "default_threads": physical_cores(),
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
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
    precisions = {"cpu": ["fp32", "bf16"]}
    if gpus:
        precisions["cuda"] = ["fp32", "fp16"] + (["bf16"] if gpus[0]["bf16"] else [])
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
