"""ONNX export of the segmentation model and its parity check against PyTorch.

:func:`export_onnx` writes a model with one fixed ``img_size × img_size`` tile and a
dynamic batch: input ``"input"`` [N, in_chans, H, W] float32, output ``"logits"``
[N, K, H, W]. The spec (any ``str → str`` mapping) goes into ``metadata_props``.
The file is checked with ``onnx.checker.check_model(full_check=True)`` and written
atomically (temporary file in the same folder, then rename).

Exporter: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, built on
``torch.export``) is the default. On torch 2.15 both exporters give numerically
identical models (max |Δprob| ~1e-8 on the tiny preset), but the dynamo graph is
clean: ~270 nodes for the tiny preset (no Shape/Gather/Constant chains), a symbolic
batch ``N`` and fully static C/H/W on input and output. The legacy TorchScript
exporter (``exporter="torchscript"``, deprecated in torch 2.15) produces ~900 nodes
with per-op shape arithmetic, many tracer warnings, and labels the output's H axis
as ``N``; its output dims are rewritten here so that both exporters produce the same
signature. Its advantage is speed (~0.5 s vs ~6 s for the tiny preset) and no
``onnxscript`` dependency. Opset 18 is the dynamo exporter's native opset; 17 also
works (converted by onnxscript).

:func:`check_parity` runs the file in ONNX Runtime (CPU execution provider) and
compares probabilities (softmax for K > 1, sigmoid for K = 1) with eager PyTorch.

FP16 (``fp16=True``): the fp32 graph is converted by
:func:`alosmap.export.fp16.convert_fp16`, which keeps the graph input and output
float32 and LayerNorm/Softmax (and decomposed LayerNorm chains) in fp32.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alosmap.errors import ModelFileError, SpecError
from alosmap.export.fp16 import convert_fp16, name_nodes

if TYPE_CHECKING:
    import numpy as np
    import torch

logger = logging.getLogger(__name__)

#: Default opset: 18 is the dynamo exporter's native opset (no version conversion),
#: supported by ONNX Runtime >= 1.14 and TensorRT 10 (use opset=17 for older TensorRT).
DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: Metadata key recording the weight/compute precision of the file (fp32 or fp16).
PRECISION_KEY = "alosmap.precision"
#: Largest max |Δprob| (vs eager PyTorch fp32) ``alosmap export onnx`` accepts by
#: default. fp32 differences are float rounding (measured ≤ 1.1e-6 on 24
#: sample_data tiles with the bundled models); fp16 ones come from fp16 weights and
#: activations (measured ≤ 1.2e-3, argmax agreement ≥ 99.994 %), so fp16 gets a
#: looser bound with ~8x headroom.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}


def _model_arch(model: torch.nn.Module) -> Any:
    arch = getattr(model, "arch", None)
    if arch is None:
        raise SpecError(
            "export_onnx needs an alosmap SegmentationModel (with an .arch); got "
            f"{type(model).__name__}"
        )
    return arch


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, str] | None = None,
    dynamic_batch: bool = True,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    fp16: bool = False,
) -> Path:
    """Export ``model`` to ONNX with a fixed tile and a dynamic batch axis.

    The model is exported in eval mode on CPU (a copy is not made: the caller's model
    is switched to eval and back). Unnamed nodes get unique names (the FP16 and
    TensorRT precision rules address nodes by name).

    Args:
        model: a :class:`~alosmap.models.SegmentationModel`.
        path: output ``.onnx`` file; replaced atomically if it exists.
        opset: ONNX opset.
        metadata: string pairs written to ``metadata_props`` (e.g. the model spec
            JSON under one key); :data:`PRECISION_KEY` is added.
        dynamic_batch: make the batch axis ``N`` dynamic (otherwise fixed at 1).
        exporter: ``"dynamo"`` (default) or ``"torchscript"``.
        fp16: store weights and compute in float16, except the nodes of
            :func:`~alosmap.export.fp16.fp32_sensitive_nodes`; input and output
            stay float32.

    Returns:
        The written path.

    Raises:
        SpecError: for a model without ``arch`` or non-string metadata.
        ModelFileError: if the export, the FP16 conversion or the ONNX checker fails.
    """
    from alosmap._fileio import atomic_write

    arch = _model_arch(model)
    if exporter not in ("dynamo", "torchscript"):
        raise SpecError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    meta = _checked_metadata(metadata, fp16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        _run_exporter(model, arch, tmp, opset, exporter, dynamic_batch)
        _finish_graph(tmp, arch, meta, fp16)

    was_training = model.training
    model.eval()
    try:
        atomic_write(path, write)
    except (SpecError, ModelFileError):
        raise
    except Exception as exc:
        raise ModelFileError(f"ONNX export to {path} failed: {exc}") from exc
    finally:
        model.train(was_training)
    precision = meta[PRECISION_KEY]
    logger.info("wrote %s (opset %d, %s, %s)", path, opset, exporter, precision)
    return path


def _checked_metadata(metadata: Mapping[str, str] | None, fp16: bool) -> dict[str, str]:
    """``metadata`` as a dict plus :data:`PRECISION_KEY`.

    Raises:
        SpecError: a key or value that is not a string.
    """
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError(
                f"ONNX metadata must map str to str; got {k!r}: {type(v).__name__}"
            )
    meta[PRECISION_KEY] = "fp16" if fp16 else "fp32"
    return meta


def _run_exporter(
    model: torch.nn.Module,
    arch: Any,
    path: Path,
    opset: int,
    exporter: str,
    dynamic_batch: bool,
) -> None:
    """Trace the model (in eval mode) with one exporter and write ``path``.

    The dummy input has the model's tile and channels (``arch``), a batch of 2 for a
    dynamic batch axis (1 otherwise), on the model's device.
    """
    import torch

    dummy = torch.zeros(
        2 if dynamic_batch else 1, arch.in_chans, arch.img_size, arch.img_size
    )
    param = next(model.parameters(), None)
    if param is not None:
        dummy = dummy.to(param.device)
    with torch.no_grad():
        if exporter == "dynamo":
            dyn = {"x": {0: torch.export.Dim("N", min=1)}} if dynamic_batch else None
            program = torch.onnx.export(
                model,
                (dummy,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dyn,
                optimize=True,
                verbose=False,
            )
            if program is None:
                raise ModelFileError("the dynamo exporter returned no ONNX program")
            program.save(str(path))
            return
        axes = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}
        # the trace sees static tile sizes on purpose: silence its warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes if dynamic_batch else None,
                do_constant_folding=True,
            )


def _finish_graph(path: Path, arch: Any, meta: dict[str, str], fp16: bool) -> None:
    """Fix the output signature, name the nodes, convert to fp16, set the metadata.

    The file is rewritten in place and checked with ``onnx.checker``
    (``full_check=True``).
    """
    import onnx

    proto = onnx.load(str(path))
    # the TorchScript exporter can mislabel static output dims (H as "N")
    static = (arch.num_classes, arch.img_size, arch.img_size)
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(out_dims[1:], static, strict=True):
        dim.dim_value = value
    name_nodes(proto.graph)
    if fp16:
        proto = convert_fp16(proto)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the ``metadata_props`` of an ONNX file as a dict.

    Args:
        path: ``.onnx`` file.

    Returns:
        Key → value.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 for K > 1, sigmoid for K = 1 (float64)."""
    import numpy as np

    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def compare_probs(p_ref: np.ndarray, p_test: np.ndarray) -> dict[str, float]:
    """Agreement of two probability batches ``[N, K, H, W]``.

    Returns:
        ``max_abs_prob_diff`` (max |Δprob| over all pixels and classes) and
        ``argmax_agreement`` (fraction of pixels with the same class; for K = 1 the
        same side of 0.5).
    """
    import numpy as np

    if p_ref.shape != p_test.shape:
        raise ValueError(f"shape mismatch: {p_ref.shape} vs {p_test.shape}")
    a, b = p_ref.astype(np.float64), p_test.astype(np.float64)
    if a.shape[1] == 1:
        agree = (a[:, 0] > 0.5) == (b[:, 0] > 0.5)
    else:
        agree = a.argmax(axis=1) == b.argmax(axis=1)
    return {
        "max_abs_prob_diff": float(np.abs(a - b).max()),
        "argmax_agreement": float(agree.mean()),
    }


def onnx_logits(onnx_path: str | os.PathLike[str], inputs: np.ndarray) -> np.ndarray:
    """Logits of ``inputs`` from ONNX Runtime's CPU execution provider (the reference).

    Raises:
        BackendUnavailableError: if ONNX Runtime is not installed.
    """
    import numpy as np

    from alosmap._imports import lazy_import

    ort = lazy_import("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], np.float32)


def check_parity(
    model: torch.nn.Module,
    onnx_path: str | os.PathLike[str],
    inputs: np.ndarray,
) -> dict[str, float]:
    """Compare ONNX Runtime (CPU EP) with eager PyTorch on ``inputs``.

    Args:
        model: the PyTorch model that was exported (run in eval mode, fp32).
        onnx_path: the exported file (fp32 or fp16; its I/O is float32).
        inputs: batch [N, in_chans, H, W] (cast to float32).

    Returns:
        ``max_abs_prob_diff``, ``argmax_agreement`` (see :func:`compare_probs`),
        ``max_abs_logit_diff``, ``batch``.

    Raises:
        BackendUnavailableError: if ONNX Runtime is not installed.
    """
    import numpy as np
    import torch

    x = np.ascontiguousarray(inputs, dtype=np.float32)
    ort_logits = onnx_logits(onnx_path, x)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            ref_logits = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    finally:
        model.train(was_training)
    return {
        **compare_probs(probabilities(ref_logits), probabilities(ort_logits)),
        "max_abs_logit_diff": float(np.abs(ref_logits - ort_logits).max()),
        "batch": float(x.shape[0]),
    }


@dataclass
class OnnxExport:
    """What :func:`export_onnx_file` wrote and how it compared with PyTorch.

    Attributes:
        path: the ONNX file.
        precision: ``fp32`` or ``fp16``.
        seconds: export time (without the parity check).
        parity: :func:`check_parity` result, or None when not checked.
        parity_source: where the parity tiles came from.
        tolerance: the max |Δprob| that was accepted.
    """

    path: Path
    precision: str
    seconds: float
    parity: dict[str, float] | None = None
    parity_source: str = ""
    tolerance: float | None = None


def export_onnx_file(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    check: bool = True,
    tolerance: float | None = None,
    parity_scenes: Sequence[str | os.PathLike[str]] | None = None,
    parity_tiles: int | None = None,
    overwrite: bool = False,
) -> OnnxExport:
    """``alosmap export onnx``: model file → checked ONNX file, all or nothing.

    The ONNX file is written under a temporary name beside ``output``, checked for
    parity against eager PyTorch (fp32) on real tiles
    (:func:`alosmap.export.parity.parity_tiles`) and only then renamed to
    ``output``; a failed check leaves ``output`` as it was. Temporaries a killed
    export left beside ``output`` are removed first.

    Args:
        model_path: an alosmap ``.safetensors`` model.
        output: the ``.onnx`` file to write.
        opset: ONNX opset (>= 17).
        fp16: fp16 weights and compute (see :func:`~alosmap.export.fp16.convert_fp16`).
        check: run the parity check.
        tolerance: largest accepted max |Δprob|; :data:`DEFAULT_TOLERANCE` by
            precision when None.
        parity_scenes: scenes to cut parity tiles from (default ``sample_data/``).
        parity_tiles: number of parity tiles (default
            :data:`~alosmap.export.parity.DEFAULT_PARITY_TILES`).
        overwrite: replace an existing ``output``.

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is False.
        OutputPathError: ``output`` does not end in ``.onnx``, or is the model or a
            parity scene (whatever ``overwrite`` says).
        ModelFileError: ``model_path`` is not an alosmap model, or the export fails.
        ParityError: the parity check fails (nothing is written).
    """
    import time

    from alosmap._fileio import (
        atomic_write,
        check_not_input,
        check_overwrite,
        remove_stale_temps,
    )
    from alosmap.errors import OutputPathError
    from alosmap.export.parity import enforce_tolerance, export_parity_tiles
    from alosmap.spec import SPEC_KEY, load_model

    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise OutputPathError(f"--output {out}: expected a .onnx file name")
    check_not_input([out], [model_path, *(parity_scenes or ())])
    check_overwrite([out], overwrite)
    if opset < 17:
        raise SpecError(f"--opset {opset}: alosmap exports need opset 17 or later")
    precision = "fp16" if fp16 else "fp32"
    tol = DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    net, spec = load_model(model_path)
    tiles = export_parity_tiles(spec, check, parity_scenes, parity_tiles)
    report = OnnxExport(out, precision, 0.0, tolerance=tol if check else None)
    meta = {SPEC_KEY: spec.to_json()}

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        export_onnx(net, tmp, opset=opset, metadata=meta, fp16=fp16)
        report.seconds = time.perf_counter() - t0
        if tiles is None:
            return
        report.parity = check_parity(net, tmp, tiles.tiles)
        report.parity_source = tiles.source
        enforce_tolerance("ONNX", precision, report.parity, tol, tiles.source)

    atomic_write(out, write)
    return report
