"""TensorRT engines from alosmap ONNX files, with a spec sidecar and a parity check.

:func:`build_engine` parses an ONNX file written by ``alosmap export onnx`` with
TensorRT's ONNX parser, builds a serialised engine for one optimisation profile over
the batch axis (the tile is fixed), checks it against ONNX Runtime on real tiles and
writes ``model.engine`` plus ``model.engine.json``: the model spec, the build record
(TensorRT version, GPU name and compute capability, precision, profile, workspace,
build time, source ONNX hash) and the parity result.

FP16 and Swin: TensorRT warns that LayerNorm after self-attention can overflow in
FP16, and Softmax over 64-element windows loses accuracy too. With ``fp16=True`` the
layers that come from the ONNX nodes of
:func:`~alosmap.export.fp16.fp32_sensitive_nodes` (LayerNormalization, Softmax, the
ReduceMean/Sub/Pow/Add/Sqrt/Div chain of a decomposed LayerNorm), plus every
``NORMALIZATION`` and ``SOFTMAX`` layer, are pinned to FP32 with
``OBEY_PRECISION_CONSTRAINTS``. A network layer is traced to its ONNX node by the
``[ONNX Layer: name]`` metadata the TensorRT 10 parser attaches, or by its name.

Written to TensorRT 10's documented Python API. Not yet run on a GPU in alosmap's
tests (see the module docstring of :mod:`alosmap.runtime.tensorrt_backend`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from alosmap._fileio import (
    atomic_write,
    atomic_write_bytes,
    check_not_input,
    check_overwrite,
    remove_stale_temps,
)
from alosmap._version import __version__
from alosmap.errors import (
    ExportError,
    ModelFileError,
    OutputPathError,
)
from alosmap.spec import (
    ENGINE_SIDECAR_FORMAT,
    ENGINE_SUFFIXES,
    SPEC_KEY,
    ModelSpec,
    engine_sidecar_path,
)

if TYPE_CHECKING:
    from alosmap.export.parity import ParityTiles

logger = logging.getLogger(__name__)

#: Default optimisation profile over the batch axis (min, opt, max).
DEFAULT_PROFILE = (1, 8, 32)
#: Default builder workspace, MiB.
DEFAULT_WORKSPACE_MIB = 4096
#: Largest max |Δprob| against ONNX Runtime (CPU) accepted by default. FP32 engines
#: use TF32 matrix products on Ampere and later (TensorRT's default), hence more
#: than ONNX fp32. Provisional: not yet measured on a GPU.
DEFAULT_TOLERANCE = {"fp32": 1e-2, "fp16": 2e-2}
#: TensorRT layer types always kept in FP32 in FP16 engines.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")
#: Layer types never pinned, even when they come from a selected ONNX node: they
#: compute nothing in floating point or set their own output type.
NEVER_PINNED_TYPES = ("CONSTANT", "SHAPE", "CAST", "ASSERTION")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]+)\]")


# --------------------------------------------------------------------------------------
# pure pieces (no TensorRT needed)
# --------------------------------------------------------------------------------------


def check_profile(min_batch: int, opt_batch: int, max_batch: int) -> None:
    """Validate an optimisation profile over the batch axis.

    Raises:
        ExportError: unless ``1 <= min_batch <= opt_batch <= max_batch``.
    """
    values = {"--min-batch": min_batch, "--opt-batch": opt_batch}
    values["--max-batch"] = max_batch
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ExportError(f"{name} {v!r}: expected an integer >= 1")
    if not min_batch <= opt_batch <= max_batch:
        raise ExportError(
            f"batch profile --min-batch {min_batch} --opt-batch {opt_batch} "
            f"--max-batch {max_batch}: expected min <= opt <= max"
        )


def default_opt_batch(min_batch: int, max_batch: int) -> int:
    """The default ``opt`` batch (8) moved into ``[min_batch, max_batch]``."""
    return max(min_batch, min(DEFAULT_PROFILE[1], max_batch))


@dataclass(frozen=True)
class OnnxModelInfo:
    """What the engine build needs to know about an alosmap ONNX file.

    Attributes:
        spec: the model spec from ``metadata_props``.
        input_name, output_name: the graph's tensors.
        batch: fixed batch size, or None when the batch axis is dynamic.
        precision: ``fp32`` or ``fp16`` (from the metadata; fp32 when absent).
        fp32_nodes: nodes an FP16 build keeps in FP32.
        sha256: hash of the file.
    """

    spec: ModelSpec
    input_name: str
    output_name: str
    batch: int | None
    precision: str
    fp32_nodes: tuple[str, ...]
    sha256: str


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxModelInfo:
    """Read and check an ONNX file for an engine build (no TensorRT needed).

    Raises:
        ModelFileError: missing or unreadable file, no alosmap spec in its metadata,
            or input/output shapes that do not match the spec.
    """
    from alosmap._imports import lazy_import
    from alosmap.export.fp16 import fp32_sensitive_nodes
    from alosmap.export.onnx import PRECISION_KEY

    onnx = lazy_import("onnx")
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"ONNX file not found: {p}")
    data = p.read_bytes()
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise ModelFileError(f"{p}: not a readable ONNX model ({exc})") from exc
    meta = {m.key: m.value for m in proto.metadata_props}
    if SPEC_KEY not in meta:
        raise ModelFileError(
            f"{p}: an ONNX model without an alosmap spec in its metadata; export it "
            "with `alosmap export onnx MODEL.safetensors`"
        )
    spec = ModelSpec.from_json(meta[SPEC_KEY])
    graph = proto.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelFileError(
            f"{p}: expected one input and one output, got {len(inputs)} and "
            f"{len(graph.output)}"
        )

    def dims(value_info: Any) -> list[int | str]:
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim
        ]

    t, k = spec.tile_size, spec.num_outputs
    in_dims, out_dims = dims(inputs[0]), dims(graph.output[0])
    if len(in_dims) != 4 or in_dims[1:] != [1, t, t]:
        raise ModelFileError(
            f"{p}: input shape {in_dims} does not match the spec's [N, 1, {t}, {t}]"
        )
    if len(out_dims) != 4 or out_dims[1:] != [k, t, t]:
        raise ModelFileError(
            f"{p}: output shape {out_dims} does not match the spec's [N, {k}, {t}, {t}]"
        )
    batch = in_dims[0] if isinstance(in_dims[0], int) and in_dims[0] > 0 else None
    return OnnxModelInfo(
        spec=spec,
        input_name=inputs[0].name,
        output_name=graph.output[0].name,
        batch=batch,
        precision=meta.get(PRECISION_KEY, "fp32"),
        fp32_nodes=tuple(fp32_sensitive_nodes(proto)),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def layer_onnx_nodes(metadata: str) -> list[str]:
    """ONNX node names in a TensorRT layer's metadata (``[ONNX Layer: name]``...).

    TensorRT separates several entries with the ASCII unit or record separator.
    """
    return [m.strip() for m in _ONNX_LAYER.findall(metadata or "")]


def keep_layer_fp32(
    layer_type: str, layer_name: str, metadata: str, fp32_nodes: Iterable[str]
) -> bool:
    """Whether an FP16 build pins this network layer to FP32.

    Args:
        layer_type: ``trt.LayerType`` name, e.g. ``"NORMALIZATION"``.
        layer_name: the layer's name (the parser names a node's main layer after
            the node).
        metadata: the layer's metadata (``[ONNX Layer: node]`` in TensorRT 10).
        fp32_nodes: ONNX node names to keep in FP32
            (:func:`~alosmap.export.fp16.fp32_sensitive_nodes`).
    """
    if layer_type in FP32_LAYER_TYPES:
        return True
    if layer_type in NEVER_PINNED_TYPES:
        return False
    keep = set(fp32_nodes)
    return layer_name in keep or any(n in keep for n in layer_onnx_nodes(metadata))


def build_sidecar(
    spec: ModelSpec,
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: Sequence[int],
    precision: str,
    profile: Sequence[int],
    workspace_mib: int,
    build_seconds: float,
    fp32_layers: int,
    onnx_name: str,
    onnx_sha256: str,
    parity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object written beside an engine (``model.engine.json``)."""
    lo, opt, hi = (int(v) for v in profile)
    return {
        "format": ENGINE_SIDECAR_FORMAT,
        "spec": spec.to_dict(),
        "tensorrt": {
            "version": trt_version,
            "gpu_name": gpu_name,
            "compute_capability": [int(v) for v in compute_capability],
            "precision": precision,
            "fp32_layers": int(fp32_layers),
            "min_batch": lo,
            "opt_batch": opt,
            "max_batch": hi,
            "tile": spec.tile_size,
            "workspace_mib": int(workspace_mib),
            "build_seconds": round(float(build_seconds), 2),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "alosmap_version": __version__,
            "onnx_file": onnx_name,
            "onnx_sha256": onnx_sha256,
        },
        "parity": parity,
    }


def check_output(
    output: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Validate the engine path; refuse to replace the engine or its sidecar.

    Args:
        output: the engine file.
        overwrite: replace an existing engine and sidecar.
        inputs: the command's input files; neither output may be one of them.

    Raises:
        OutputPathError: the name does not end in ``.engine``, ``.plan`` or ``.trt``,
            or the engine or its sidecar is an input (whatever ``overwrite`` says).
        OutputExistsError: the engine or its sidecar exists and not ``overwrite``.
    """
    out = Path(output)
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise OutputPathError(
            f"--output {out}: expected an engine file name ending in "
            f"{', '.join(ENGINE_SUFFIXES)}"
        )
    side = engine_sidecar_path(out)
    check_not_input([out, side], inputs)
    check_overwrite([out, side], overwrite)
    return out


def write_engine(
    output: str | os.PathLike[str], engine: bytes, sidecar: dict[str, Any]
) -> Path:
    """Write the engine and its sidecar, both or neither.

    Both go to temporary files beside ``output`` first; the sidecar is renamed into
    place, then the engine. A failure before the renames (e.g. a sidecar that is not
    JSON) leaves the old pair as it was and no temporary file behind.
    """
    out = Path(output)
    side = engine_sidecar_path(out)
    text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_bytes(engine)
        atomic_write_bytes(side, text.encode("utf-8"))

    return atomic_write(out, write)


# --------------------------------------------------------------------------------------
# the build (TensorRT and a CUDA GPU)
# --------------------------------------------------------------------------------------


def mark_fp32_layers(trt: ModuleType, network: Any, fp32_nodes: Iterable[str]) -> int:
    """Pin the layers :func:`keep_layer_fp32` selects to FP32; return how many.

    Layers with a non-floating output (shape arithmetic) are left alone.
    """
    keep = set(fp32_nodes)
    floats = (trt.float32, trt.float16)
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        meta = str(getattr(layer, "metadata", "") or "")
        if not keep_layer_fp32(layer.type.name, layer.name, meta, keep):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(t.dtype not in floats for t in outputs):
            continue
        layer.precision = trt.float32
        for j in range(len(outputs)):
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


@dataclass
class EngineBuild:
    """What :func:`build_engine` wrote.

    Attributes:
        path: the engine; its sidecar is ``<path>.json``.
        sidecar: the sidecar's content.
        seconds: build time (without the parity check).
        size: engine size in bytes.
    """

    path: Path
    sidecar: dict[str, Any]
    seconds: float
    size: int


def build_engine(
    onnx_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    fp16: bool = False,
    min_batch: int = DEFAULT_PROFILE[0],
    opt_batch: int | None = None,
    max_batch: int = DEFAULT_PROFILE[2],
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    device: str = "cuda",
    check: bool = True,
    tolerance: float | None = None,
    parity_scenes: Sequence[str | os.PathLike[str]] | None = None,
    parity_tiles: int | None = None,
    overwrite: bool = False,
) -> EngineBuild:
    """``alosmap export tensorrt``: ONNX file → checked engine + sidecar.

    Everything that needs no GPU is checked first (output name, profile, the ONNX
    file and its spec), then TensorRT and CUDA, then the engine is built, run on
    real tiles against ONNX Runtime (CPU) and written only when it passes.

    Args:
        onnx_path: an ONNX file from ``alosmap export onnx``.
        output: the engine (``.engine``/``.plan``/``.trt``); the sidecar goes beside.
        fp16: allow FP16 kernels, keeping LayerNorm/Softmax layers in FP32.
        min_batch: smallest batch of the optimisation profile.
        opt_batch: batch the kernels are tuned for (:func:`default_opt_batch` when
            None).
        max_batch: largest batch of the profile.
        workspace_mib: builder workspace limit, MiB.
        device: the CUDA device to build on (``cuda`` or ``cuda:N``).
        check: run the parity check.
        tolerance: largest accepted max |Δprob|; :data:`DEFAULT_TOLERANCE` by
            precision when None.
        parity_scenes: scenes for the parity tiles (default ``sample_data/``).
        parity_tiles: number of parity tiles (default 12).
        overwrite: replace an existing engine and sidecar.

    Raises:
        OutputPathError, OutputExistsError: a bad or existing output.
        ExportError: a bad profile, or TensorRT cannot parse or build the model.
        ModelFileError: not an alosmap ONNX file.
        BackendUnavailableError: TensorRT or a CUDA GPU is missing.
        ParityError: the engine fails the parity check (nothing is written).
    """
    from alosmap.export.parity import export_parity_tiles
    from alosmap.runtime.tensorrt_backend import (
        check_gpu_device,
        cuda_device,
        gpu_identity,
        import_tensorrt,
    )

    out = check_output(
        output, overwrite=overwrite, inputs=[onnx_path, *(parity_scenes or ())]
    )
    profile = _checked_profile(min_batch, opt_batch, max_batch, workspace_mib)
    onnx_path = Path(onnx_path)
    info = inspect_onnx(onnx_path)
    _check_fixed_batch(onnx_path, info, profile)
    fp16 = _build_fp16(onnx_path, info, fp16)
    precision = "fp16" if fp16 else "fp32"
    tol = DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance
    check_gpu_device(device)
    trt = import_tensorrt()
    dev = cuda_device(device)
    gpu = gpu_identity(dev)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, engine_sidecar_path(out))
    tiles = export_parity_tiles(info.spec, check, parity_scenes, parity_tiles)

    data, sidecar, seconds = _build_with_sidecar(
        trt,
        dev,
        gpu,
        onnx_path,
        info,
        fp16=fp16,
        profile=profile,
        workspace_mib=workspace_mib,
    )
    if tiles is not None:
        sidecar["parity"] = _engine_parity(
            data, sidecar, onnx_path, tiles, str(dev), tol
        )
    write_engine(out, data, sidecar)
    return EngineBuild(out, sidecar, seconds, len(data))


def _build_with_sidecar(
    trt: ModuleType,
    dev: Any,
    gpu: tuple[str, Sequence[int]],
    onnx_path: Path,
    info: OnnxModelInfo,
    *,
    fp16: bool,
    profile: tuple[int, int, int],
    workspace_mib: int,
) -> tuple[bytes, dict[str, Any], float]:
    """Build the engine; return it, its sidecar (no parity yet) and the build time.

    ``gpu`` is the device's name and compute capability, for the sidecar.
    """
    gpu_name, cc = gpu
    precision = "fp16" if fp16 else "fp32"
    t0 = time.perf_counter()
    data, fp32_layers = _build_serialized(
        trt,
        dev,
        onnx_path,
        info,
        fp16=fp16,
        profile=profile,
        workspace_mib=workspace_mib,
    )
    seconds = time.perf_counter() - t0
    logger.info("built %s engine in %.1f s", precision, seconds)
    sidecar = build_sidecar(
        info.spec,
        trt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=cc,
        precision=precision,
        profile=profile,
        workspace_mib=workspace_mib,
        build_seconds=seconds,
        fp32_layers=fp32_layers,
        onnx_name=onnx_path.name,
        onnx_sha256=info.sha256,
    )
    return data, sidecar, seconds


def _checked_profile(
    min_batch: int, opt_batch: int | None, max_batch: int, workspace_mib: int
) -> tuple[int, int, int]:
    """The batch profile ``(min, opt, max)`` with ``opt`` defaulted, checked.

    Raises:
        ExportError: a bad profile or a workspace under 64 MiB.
    """
    if opt_batch is None:
        opt_batch = default_opt_batch(min_batch, max_batch)
    check_profile(min_batch, opt_batch, max_batch)
    if workspace_mib < 64:
        raise ExportError(f"--workspace {workspace_mib}: expected at least 64 MiB")
    return min_batch, opt_batch, max_batch


def _check_fixed_batch(
    onnx_path: Path, info: OnnxModelInfo, profile: tuple[int, int, int]
) -> None:
    """A file with a fixed batch needs a profile of exactly that batch.

    Raises:
        ExportError: the profile does not match the file's fixed batch.
    """
    min_batch, _, max_batch = profile
    if info.batch is not None and not min_batch == max_batch == info.batch:
        raise ExportError(
            f"{onnx_path} has a fixed batch of {info.batch}; use --min-batch, "
            f"--opt-batch and --max-batch {info.batch}, or re-export it (alosmap "
            "export onnx writes a dynamic batch)"
        )


def _build_fp16(onnx_path: Path, info: OnnxModelInfo, fp16: bool) -> bool:
    """Whether the build is FP16: asked for, or forced by fp16 weights in the file."""
    if info.precision == "fp16" and not fp16:
        logger.warning(
            "%s stores fp16 weights: building an FP16 engine (export an fp32 ONNX "
            "file for an FP32 engine)",
            onnx_path,
        )
        return True
    return fp16


def _engine_parity(
    data: bytes,
    sidecar: dict[str, Any],
    onnx_path: Path,
    tiles: ParityTiles,
    device: str,
    tolerance: float,
) -> dict[str, Any]:
    """Run the built engine on ``tiles`` against ONNX Runtime (CPU); the result.

    Raises:
        ParityError: max |Δprob| above ``tolerance`` (nothing is written).
    """
    from alosmap.export.onnx import compare_probs, onnx_logits, probabilities
    from alosmap.export.parity import enforce_tolerance
    from alosmap.runtime.base import run_numpy
    from alosmap.runtime.tensorrt_backend import TensorRTRuntime

    ref = probabilities(onnx_logits(onnx_path, tiles.tiles))
    rt = TensorRTRuntime.from_serialized(data, sidecar, device=device)
    try:
        res = compare_probs(ref, run_numpy(rt, tiles.tiles))
    finally:
        rt.close()
    precision = sidecar["tensorrt"]["precision"]
    enforce_tolerance(
        "TensorRT", precision, res, tolerance, tiles.source, reference="ONNX Runtime"
    )
    return {
        "reference": "onnxruntime CPUExecutionProvider",
        "tiles": tiles.source,
        "tolerance": tolerance,
        **res,
    }


def _build_serialized(
    trt: ModuleType,
    dev: Any,
    onnx_path: Path,
    info: OnnxModelInfo,
    *,
    fp16: bool,
    profile: tuple[int, int, int],
    workspace_mib: int,
) -> tuple[bytes, int]:
    """Parse, configure and build; return the serialised engine and FP32 layers."""
    import torch

    t = info.spec.tile_size
    trt_logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(dev):
        builder = trt.Builder(trt_logger)
        network = builder.create_network(0)  # explicit batch is the only mode in 10
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ExportError(
                f"TensorRT cannot parse {onnx_path}: "
                + ("; ".join(errors[:3]) or "no details")
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        fp32_layers = 0
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            fp32_layers = mark_fp32_layers(trt, network, info.fp32_nodes)
            logger.info("FP16 build: %d layers kept in FP32", fp32_layers)
        opt_profile = builder.create_optimization_profile()
        lo, opt, hi = profile
        opt_profile.set_shape(
            info.input_name, (lo, 1, t, t), (opt, 1, t, t), (hi, 1, t, t)
        )
        config.add_optimization_profile(opt_profile)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT could not build an engine from {onnx_path} (see the TensorRT "
            "messages above; a larger --workspace or a smaller --max-batch may help)"
        )
    return bytes(serialized), fp32_layers
