"""TensorRT runtime for ``.engine`` files written by ``alosmap export tensorrt``.

An engine only runs with the TensorRT version that built it and on a GPU of the same
compute capability, so its JSON sidecar (``model.engine.json``, see
:func:`alosmap.spec.read_engine_sidecar`) records both; :func:`check_engine_compatible`
compares them with this machine before TensorRT is asked to deserialise anything,
which turns a TensorRT crash or a cryptic log line into one clear error.

Device memory and the CUDA stream come from PyTorch (CUDA tensors as I/O buffers,
a ``torch.cuda.Stream``), so no pycuda or cuda-python is needed.
:meth:`TensorRTRuntime.run` follows the tensor protocol of
:mod:`alosmap.runtime.base`: the batch (on the GPU, or copied there) is copied into
the engine's input buffer on the device, batches larger than the engine's
optimisation profile run in chunks of ``max_batch``, chunks smaller than
``min_batch`` are padded with zero tiles on the device, and the logits (fp16 or
float32, as the engine gives them) become float32 probabilities in PyTorch on the
device. The engine runs on a stream of its own (TensorRT synchronises more when it is
given the legacy default stream); that stream waits for the caller's current stream
before the engine reads its input, and the current stream waits for the engine before
the logits are read, so nothing synchronises the host.

Written against TensorRT 10's documented Python API (tensor-name I/O,
``execute_async_v3``). Not yet run on a GPU by the alosmap tests: the engine path
is covered only by the ``gpu``-marked tests, skipped where TensorRT or CUDA is
missing; everything around it (sidecar, compatibility check, error paths) is
tested everywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from alosmap.errors import (
    AlosmapError,
    BackendUnavailableError,
    ModelFileError,
)
from alosmap.spec import ModelSpec, read_engine_sidecar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: The pip extra that installs TensorRT's Python package.
INSTALL_HINT = "pip install 'alosmap[tensorrt]'"


def tensorrt_version() -> str | None:
    """Version of the installed TensorRT Python package, or None (never raises)."""
    try:
        import tensorrt
    except Exception:  # ImportError, or OSError when its libraries are missing
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` or raise a one-line error naming the pip extra.

    Raises:
        BackendUnavailableError: TensorRT or its libraries are not installed.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed ({exc}): {INSTALL_HINT}"
        ) from exc
    except OSError as exc:  # the package is there, libnvinfer is not
        raise BackendUnavailableError(
            f"TensorRT's libraries cannot be loaded ({exc}): {INSTALL_HINT} "
            "in this environment, with a CUDA 12 driver"
        ) from exc
    return tensorrt


def check_gpu_device(device: str, *, purpose: str = "TensorRT") -> str:
    """Validate ``device`` as ``cuda`` or ``cuda:N`` without touching CUDA.

    Raises:
        BackendUnavailableError: a malformed device or the CPU.
    """
    from alosmap.runtime.base import check_device

    device = check_device(device)
    if not device.startswith("cuda"):
        raise BackendUnavailableError(
            f"{purpose} runs on NVIDIA GPUs only (got --device {device}): use "
            "--device cuda, or the onnx or torch backend on the CPU"
        )
    return device


def cuda_device(device: str, *, purpose: str = "TensorRT") -> Any:
    """The ``torch.device`` for ``device`` (``cuda`` or ``cuda:N``), checked.

    Raises:
        BackendUnavailableError: ``device`` is not a CUDA device, or PyTorch sees no
            such GPU.
    """
    device = check_gpu_device(device, purpose=purpose)
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"{purpose} needs a CUDA GPU and PyTorch sees none here; use the onnx or "
            "torch backend on the CPU"
        )
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
            "device(s)"
        )
    return torch.device("cuda", index)


def gpu_identity(dev: Any) -> tuple[str, tuple[int, int]]:
    """``(name, (major, minor))`` of a CUDA ``torch.device``."""
    import torch

    major, minor = torch.cuda.get_device_capability(dev)
    return str(torch.cuda.get_device_name(dev)), (int(major), int(minor))


def check_engine_compatible(
    sidecar: dict[str, Any],
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int] | Sequence[int],
    source: str = "the engine",
) -> None:
    """Check that an engine's build record matches this TensorRT and GPU.

    TensorRT engines run only with the TensorRT version that built them, and only
    on GPUs of the compute capability they were built for. A different GPU model
    of the same compute capability works (possibly with slower kernels) and is only
    logged.

    Args:
        sidecar: the engine's sidecar (:func:`alosmap.spec.read_engine_sidecar`).
        trt_version: TensorRT version here (``tensorrt.__version__``).
        gpu_name: name of the GPU here.
        compute_capability: ``(major, minor)`` of the GPU here.
        source: how to name the engine in messages (its path).

    Raises:
        ModelFileError: the sidecar has no usable build record, or the engine was
            built by another TensorRT version or for another GPU architecture.
    """
    info = sidecar.get("tensorrt")
    rebuild = "rebuild it here with `alosmap export tensorrt MODEL.onnx`"
    if not isinstance(info, dict):
        raise ModelFileError(
            f"{source}: its sidecar has no TensorRT build record; {rebuild}"
        )
    built_version = info.get("version")
    built_cc = info.get("compute_capability")
    built_gpu = info.get("gpu_name", "an unknown GPU")
    if not isinstance(built_version, str) or not built_version:
        raise ModelFileError(
            f"{source}: its sidecar does not say which TensorRT built it; {rebuild}"
        )
    try:
        bcc = (int(built_cc[0]), int(built_cc[1]))  # type: ignore[index]
        here_cc = (int(compute_capability[0]), int(compute_capability[1]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ModelFileError(
            f"{source}: its sidecar has no valid compute_capability "
            f"({built_cc!r}); {rebuild}"
        ) from exc
    if built_version != trt_version:
        raise ModelFileError(
            f"{source} was built with TensorRT {built_version} but this is TensorRT "
            f"{trt_version}; engines run only on the TensorRT version that built "
            f"them: {rebuild}"
        )
    if bcc != here_cc:
        raise ModelFileError(
            f"{source} was built for {built_gpu} (compute capability "
            f"{bcc[0]}.{bcc[1]}) but this GPU is {gpu_name} (compute capability "
            f"{here_cc[0]}.{here_cc[1]}); engines are specific to the GPU "
            f"architecture: {rebuild}"
        )
    if built_gpu != gpu_name:
        logger.warning(
            "%s was built on %s and runs on %s (same compute capability %d.%d): "
            "it works, but kernels were tuned for the other GPU",
            source,
            built_gpu,
            gpu_name,
            *here_cc,
        )


def profile_batches(sidecar: dict[str, Any]) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch of the engine's optimisation profile (sidecar).

    Raises:
        ModelFileError: the sidecar lacks a valid profile.
    """
    info = sidecar.get("tensorrt") or {}
    try:
        lo, opt, hi = (int(info[k]) for k in ("min_batch", "opt_batch", "max_batch"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(
            "the engine sidecar has no valid min_batch/opt_batch/max_batch"
        ) from exc
    if not 1 <= lo <= opt <= hi:
        raise ModelFileError(
            f"the engine sidecar has an invalid batch profile {lo}/{opt}/{hi}"
        )
    return lo, opt, hi


def split_batches(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """How :meth:`TensorRTRuntime.run` cuts ``n`` tiles into engine calls.

    Returns:
        ``(start, stop, run_size)`` per call: tiles ``start:stop`` are run as a batch
        of ``run_size >= stop - start`` (zero tiles pad it up to ``min_batch``).
    """
    calls = []
    for start in range(0, n, max_batch):
        stop = min(start + max_batch, n)
        calls.append((start, stop, max(stop - start, min_batch)))
    return calls


class TensorRTRuntime:
    """A deserialised TensorRT engine with its execution context and buffers.

    Args:
        path: the ``.engine`` file (its ``.engine.json`` sidecar beside it).
        device: ``cuda`` or ``cuda:N``.
        threads: ignored (TensorRT runs on the GPU); accepted for the common
            runtime signature.

    Raises:
        ModelFileError: missing/invalid sidecar, an engine built by another
            TensorRT or for another GPU, or an engine TensorRT cannot load.
        BackendUnavailableError: TensorRT or a CUDA GPU is missing, or ``device``
            is the CPU.
    """

    name = "tensorrt"
    #: :meth:`run` works on torch tensors (see :class:`~alosmap.runtime.base.Runtime`)
    array_kind = "torch"
    #: Fixed when the engine is built (the sidecar records it), not chosen here.
    precision: str | None = None
    #: TensorRT runs on the GPU; no CPU thread count applies.
    threads: int | None = None
    #: The ``.engine`` file; None for an engine run from memory.
    path: Path | None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "cuda",
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        check_gpu_device(device)
        sidecar = read_engine_sidecar(path)
        spec = ModelSpec.from_dict(sidecar.get("spec", sidecar))
        trt = import_tensorrt()
        dev = cuda_device(device)
        gpu_name, cc = gpu_identity(dev)
        check_engine_compatible(
            sidecar,
            trt_version=trt.__version__,
            gpu_name=gpu_name,
            compute_capability=cc,
            source=str(path),
        )
        self.path = path
        self._setup(trt, path.read_bytes(), sidecar, spec, dev, source=str(path))

    @classmethod
    def from_serialized(
        cls,
        data: bytes,
        sidecar: dict[str, Any],
        *,
        device: str = "cuda",
        source: str = "the new engine",
    ) -> TensorRTRuntime:
        """Run an engine held in memory (the parity check of a fresh build)."""
        rt = cls.__new__(cls)
        spec = ModelSpec.from_dict(sidecar.get("spec", sidecar))
        rt.path = None
        rt._setup(import_tensorrt(), data, sidecar, spec, cuda_device(device), source)
        return rt

    def _setup(
        self,
        trt: ModuleType,
        data: bytes,
        sidecar: dict[str, Any],
        spec: ModelSpec,
        dev: Any,
        source: str,
    ) -> None:
        import torch

        self.spec = spec
        self.device = str(dev)
        self._torch = torch
        self._dev = dev
        self.min_batch, self.opt_batch, self.max_batch = profile_batches(sidecar)
        tile, k = spec.tile_size, spec.num_outputs
        with torch.cuda.device(dev):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise ModelFileError(
                    f"{source}: TensorRT could not deserialise the engine (see the "
                    "TensorRT message above); rebuild it with `alosmap export "
                    "tensorrt`"
                )
            self.engine = engine
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [
                n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            ]
            outputs = [n for n in names if n not in inputs]
            if len(inputs) != 1 or len(outputs) != 1:
                raise ModelFileError(
                    f"{source}: expected one input and one output tensor, got "
                    f"{inputs} and {outputs}"
                )
            self.input_name, self.output_name = inputs[0], outputs[0]
            out_shape = tuple(engine.get_tensor_shape(self.output_name))
            if tuple(out_shape[1:]) != (k, tile, tile):
                raise ModelFileError(
                    f"{source}: output shape {out_shape} does not match the spec "
                    f"([N, {k}, {tile}, {tile}])"
                )
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            if (int(lo[0]), int(hi[0])) != (self.min_batch, self.max_batch):
                raise ModelFileError(
                    f"{source}: engine profile batch {lo[0]}..{hi[0]} differs from "
                    f"its sidecar ({self.min_batch}..{self.max_batch})"
                )
            out_dtype = (
                torch.float16
                if engine.get_tensor_dtype(self.output_name) == trt.DataType.HALF
                else torch.float32
            )
            self.context = engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=dev)
            # device buffers for the largest batch; smaller batches use a prefix
            self._buffers: tuple[torch.Tensor, torch.Tensor] | None = (
                torch.empty(
                    (self.max_batch, 1, tile, tile), dtype=torch.float32, device=dev
                ),
                torch.empty(
                    (self.max_batch, k, tile, tile), dtype=out_dtype, device=dev
                ),
            )

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, K, H, W]`` for normalised tiles ``[B, 1, H, W]``.

        Float32, on this runtime's GPU; see the module docstring.
        """
        from alosmap.runtime.base import device_batch, logits_to_probs

        if self.context is None or self._buffers is None:
            raise AlosmapError("this TensorRT runtime was closed")
        torch = self._torch
        d_in, d_out = self._buffers
        with torch.cuda.device(self._dev):
            x = device_batch(batch, self._dev, self.spec)
            current = torch.cuda.current_stream(self._dev)
            parts = []
            for start, stop, size in split_batches(
                len(x), self.min_batch, self.max_batch
            ):
                n = stop - start
                d_in[:n].copy_(x[start:stop])  # on the current stream, after x
                d_in[n:size].zero_()
                self._execute(d_in[:size], d_out[:size], current)
                parts.append(logits_to_probs(d_out[:n]))
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts) if parts else logits_to_probs(d_out[:0])

    def _execute(
        self, d_in: torch.Tensor, d_out: torch.Tensor, current: torch.cuda.Stream
    ) -> None:
        """Run the engine on one batch within its profile: ``d_in`` → ``d_out``.

        Both are prefixes of the device buffers. The engine's stream waits for
        ``current`` (where the input was written), and ``current`` waits for the
        engine (before the logits are read).
        """
        self.context.set_input_shape(self.input_name, tuple(d_in.shape))
        self.context.set_tensor_address(self.input_name, d_in.data_ptr())
        self.context.set_tensor_address(self.output_name, d_out.data_ptr())
        self.stream.wait_stream(current)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise AlosmapError(
                "TensorRT failed to run the engine (see the TensorRT message above)"
            )
        current.wait_stream(self.stream)

    def close(self) -> None:
        """Release the context, the engine and the device buffers."""
        self.context = None
        self.engine = None
        self._runtime = None
        self._buffers = None
