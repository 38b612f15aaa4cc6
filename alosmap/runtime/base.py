"""The runtime protocol, backend selection and the checks every backend shares.

This module imports no backend (opening one is :mod:`alosmap.runtime.loader`'s job),
so the backends can import it without a circle.

Selection (:func:`resolve_backend`): each model file type runs on exactly one backend,
so ``--backend auto`` goes by the file: ``.engine``/``.plan``/``.trt`` → TensorRT,
``.onnx`` → ONNX Runtime (which on ``--device cuda`` itself tries its TensorRT
execution provider, then CUDA, then CPU), ``.safetensors`` → PyTorch. TensorRT, then
ONNX Runtime, then torch is the order in which to *export* a model for speed; for a
given file only the backend that reads it applies. Naming a backend that cannot read
the file, or one that is not installed, is an error that says what to run instead.

Precision (``precision=None`` means the backend's natural one):

* torch: ``fp32`` (default), ``bf16`` or ``fp16`` through ``torch.autocast``;
  ``fp16`` only on CUDA. ``bf16`` also works on the CPU, but only CPUs with native
  bf16 (AVX512-BF16/AMX) take it: elsewhere it would run up to 150x slower than fp32,
  so it is refused (:func:`~alosmap.runtime.probe.precision_problem`; CUDA by compute
  capability). Softmax is always computed in fp32.
* onnx: the file decides (``alosmap export onnx`` writes fp32 or fp16 graphs);
  ``fp16`` with an fp32 file asks the TensorRT execution provider to build in fp16.
* tensorrt: fixed when the engine is built; only ``None`` is accepted.

The array protocol (:class:`Runtime`): :attr:`Runtime.array_kind` says what ``run``
works on: ``numpy`` (ONNX Runtime on the CPU: NumPy arrays in and out, no PyTorch
imported) or ``torch``. ``run`` takes normalised tiles ``[B, 1, H, W]`` of that kind;
a torch tensor may lie on the runtime's device (used as it is) or on the
CPU (copied to the device with ``non_blocking=True``; pinning host memory is the
caller's business), and returns probabilities ``[B, K, H, W]`` float32 on the
runtime's device, computed there by :func:`logits_to_probs`. The result may be a view
of a buffer the runtime reuses: it is valid until the next ``run``. On CUDA the work is
ordered after what the caller queued on ``torch.cuda.current_stream(device)`` before
``run`` and before what it queues there afterwards, without a host synchronisation
(unless the backend forces one). :func:`run_numpy` is the NumPy convenience (tests,
parity checks, the benchmark).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from alosmap._fileio import sha256_file
from alosmap.errors import (
    BackendOptionError,
    BackendUnavailableError,
    ModelFileError,
    SpecMismatchError,
)
from alosmap.spec import ModelSpec

if TYPE_CHECKING:
    import torch

#: Backends ``--backend`` accepts (``auto`` picks one by the model file).
BACKENDS = ("auto", "torch", "onnx", "tensorrt")
#: Compute precisions ``--precision`` accepts.
PRECISIONS = ("fp32", "bf16", "fp16")
#: The backend that reads each model file type.
SUFFIX_BACKEND = {
    ".safetensors": "torch",
    ".onnx": "onnx",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
}
#: The Python module each backend needs.
BACKEND_MODULES = {"torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
#: The one line a user sees when a backend is missing.
INSTALL_HINTS = {
    "torch": "PyTorch is not installed, and .safetensors models need it: pip install "
    "'alosmap[torch]' (or map with an .onnx model)",
    "onnx": "ONNX Runtime is not installed: pip install onnxruntime-gpu (Linux and "
    "Windows x86-64; it also runs on the CPU) or pip install onnxruntime (elsewhere)",
    "tensorrt": "TensorRT is not installed: pip install 'alosmap[tensorrt]'",
}
_FILE_KIND = {
    "torch": ".safetensors files",
    "onnx": ".onnx files",
    "tensorrt": ".engine files",
}


class Runtime(Protocol):
    """An opened model: what the tiler, batch mode and the benchmark need from it.

    Every backend (torch, onnx, tensorrt) satisfies it;
    :func:`~alosmap.runtime.loader.load_runtime` returns one.
    """

    @property
    def name(self) -> str:
        """The backend: ``torch``, ``onnx`` or ``tensorrt``."""
        ...

    @property
    def spec(self) -> ModelSpec:
        """The model's spec (task, tile size, radiometry, classes)."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs: ``cpu``, ``cuda`` or ``cuda:N``."""
        ...

    @property
    def precision(self) -> str | None:
        """``fp32``, ``bf16`` or ``fp16``; None where the model file fixes it."""
        ...

    @property
    def path(self) -> Path | None:
        """The model file (None for an engine held only in memory)."""
        ...

    @property
    def threads(self) -> int | None:
        """Intra-op CPU threads (None where the backend runs on the GPU only)."""
        ...

    @property
    def array_kind(self) -> str:
        """What :meth:`run` takes and returns: ``numpy`` (host) or ``torch``."""
        ...

    def run(self, batch: Any) -> Any:
        """Probabilities ``[B, K, H, W]`` float32 for normalised tiles ``[B, 1, H, W]``.

        ``batch`` is of :attr:`array_kind` (a torch tensor on this runtime's device or
        on the CPU); the result is of the same kind, on the runtime's device, and may
        be a view of a reused buffer, valid until the next call (see the module
        docstring for the CUDA stream order).
        """
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def logits_to_probs(logits: Any) -> Any:
    """Softmax over dim 1, or the sigmoid when there is one channel (float32).

    Computed where ``logits`` lie, in their library (a NumPy array or a torch tensor;
    any float dtype; the maths is float32). The result is a new array, never
    ``logits`` itself.
    """
    if isinstance(logits, np.ndarray):
        return _numpy_probs(logits)
    import torch

    x = logits.float()
    if x.shape[1] == 1:
        return torch.sigmoid(x)
    return torch.softmax(x, dim=1)


def _numpy_probs(logits: np.ndarray) -> np.ndarray:
    """:func:`logits_to_probs` in NumPy (float32, a new array)."""
    x = np.array(logits, dtype=np.float32)  # a copy: the result is never ``logits``
    if x.shape[1] == 1:
        np.negative(x, out=x)
        with np.errstate(over="ignore"):  # exp(large) = inf: the probability is 0
            np.exp(x, out=x)
        x += 1.0
        return np.reciprocal(x, out=x)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def check_tile_shape(shape: tuple[int, ...], spec: ModelSpec) -> None:
    """Check a batch's shape against the model's ``[B, in_chans, tile, tile]``.

    Raises:
        SpecMismatchError: another shape.
    """
    tile, chans = spec.tile_size, spec.arch.in_chans
    if len(shape) != 4 or tuple(shape[1:]) != (chans, tile, tile):
        raise SpecMismatchError(
            f"the model takes tiles [B, {chans}, {tile}, {tile}], got {list(shape)}"
        )


def host_batch(batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """``batch`` as a C-contiguous float32 NumPy array, checked against ``spec``.

    No copy where it already is one.

    Raises:
        SpecMismatchError: not ``[B, 1, tile, tile]`` with the model's tile.
    """
    check_tile_shape(batch.shape, spec)
    return np.ascontiguousarray(batch, dtype=np.float32)


def device_batch(
    batch: torch.Tensor, device: str | torch.device, spec: ModelSpec
) -> torch.Tensor:
    """``batch`` as a contiguous float32 tensor on ``device``, checked against ``spec``.

    A tensor already there (contiguous, float32) is returned as it is; one elsewhere is
    copied with ``non_blocking=True``.

    Raises:
        TypeError: ``batch`` is not a torch tensor (NumPy goes through
            :func:`run_numpy`).
        SpecMismatchError: not ``[B, 1, tile, tile]`` with the model's tile.
    """
    import torch

    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"Runtime.run takes a torch.Tensor, got {type(batch).__name__}; use "
            "alosmap.runtime.base.run_numpy for NumPy arrays"
        )
    check_tile_shape(tuple(batch.shape), spec)
    x = batch.detach().to(device=device, dtype=torch.float32, non_blocking=True)
    return x.contiguous()


def run_numpy(rt: Runtime, batch: np.ndarray) -> np.ndarray:
    """Probabilities of ``batch`` (NumPy in, float32 NumPy out, always a copy).

    For tests, parity checks and the benchmark; the pipeline keeps tensors on the
    device and calls :meth:`Runtime.run` itself. A ``numpy`` runtime runs the array
    as it is (no PyTorch imported).
    """
    if getattr(rt, "array_kind", "torch") == "numpy":  # a fake may leave it out
        return np.array(rt.run(np.ascontiguousarray(batch, dtype=np.float32)))
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    probs = rt.run(x)
    host = probs.detach().to("cpu", dtype=torch.float32, copy=True)
    out: np.ndarray = host.numpy()
    return out


def backend_installed(name: str) -> bool:
    """Whether the module ``name`` (a backend) needs can be found (nothing imported)."""
    try:
        return importlib.util.find_spec(BACKEND_MODULES[name]) is not None
    except (ImportError, ValueError):
        return False


def require_backend(name: str) -> None:
    """Raise the one-line install hint if backend ``name`` is not installed.

    Raises:
        BackendUnavailableError: naming the package or pip extra to install.
    """
    if not backend_installed(name):
        raise BackendUnavailableError(INSTALL_HINTS[name])


def available_backends() -> dict[str, str]:
    """Installed backends, with their version (nothing is probed or loaded)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name, dists in (
        ("torch", ("torch",)),
        ("onnx", ("onnxruntime-gpu", "onnxruntime")),
        ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
    ):
        if not backend_installed(name):
            continue
        for dist in dists:
            try:
                out[name] = f"{dist} {metadata.version(dist)}"
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            out[name] = BACKEND_MODULES[name]
    return out


def resolve_backend(model_path: Path, backend: str) -> str:
    """The backend that runs ``model_path`` (``auto`` goes by the file type).

    Also checks that the backend is installed.

    Raises:
        BackendOptionError: an unknown backend name.
        ModelFileError: an unknown file type, or a backend that cannot read it.
        BackendUnavailableError: the backend is not installed (one line naming the
            pip package or extra).
    """
    if backend not in BACKENDS:
        raise BackendOptionError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    suffix = model_path.suffix.lower()
    by_file = SUFFIX_BACKEND.get(suffix)
    if by_file is None:
        raise ModelFileError(
            f"{model_path}: unknown model file type {suffix!r}; expected .safetensors "
            "(PyTorch), .onnx (ONNX Runtime) or .engine (TensorRT)"
        )
    if backend not in ("auto", by_file):
        hint = {
            "onnx": " (export one with `alosmap export onnx`)",
            "tensorrt": " (build one with `alosmap export tensorrt`; to use TensorRT "
            "through ONNX Runtime, pass the .onnx file with --device cuda)",
            "torch": " (PyTorch needs the .safetensors model file)",
        }[backend]
        raise ModelFileError(
            f"--backend {backend} cannot run {model_path.name}: {suffix} files run "
            f"with --backend {by_file}; --backend {backend} runs "
            f"{_FILE_KIND[backend]}{hint}"
        )
    require_backend(by_file)
    return by_file


def check_device(device: str) -> str:
    """Validate a ``--device`` value (``cpu``, ``cuda`` or ``cuda:N``).

    Raises:
        BackendOptionError: for anything else.
    """
    if (
        device == "cpu"
        or device == "cuda"
        or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        return device
    raise BackendOptionError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def require_torch_device(device: str) -> str:
    """Validate ``device`` and check that PyTorch can use it.

    Raises:
        BackendOptionError: not ``cpu``, ``cuda`` or ``cuda:N``.
        BackendUnavailableError: a CUDA device PyTorch does not see.
    """
    device = check_device(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"--device {device}: PyTorch sees no CUDA GPU here "
                f"(torch {torch.__version__}); use --device cpu"
            )
    return device


def device_index(device: str) -> int:
    """The GPU index of ``cuda:N`` (0 for ``cuda``)."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def check_precision(precision: str | None) -> str | None:
    """Validate a ``--precision`` value (None means the backend's default).

    Raises:
        BackendOptionError: for an unknown precision.
    """
    if precision is None or precision in PRECISIONS:
        return precision
    raise BackendOptionError(
        f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
    )


def physical_cores() -> int:
    """CPU cores this process may use, counting SMT siblings once.

    Honours the CPU affinity mask (``taskset``, cgroup cpusets); falls back to the
    logical count where the topology is not readable.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(topo.read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def cache_dir() -> Path:
    """The cache folder of alosmap (TensorRT EP engines, ...), not created here.

    ``$ALOSMAP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/alosmap``, else
    ``~/.cache/alosmap``.
    """
    if os.environ.get("ALOSMAP_CACHE_DIR"):
        return Path(os.environ["ALOSMAP_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "alosmap"


def file_sha256(path: Path, length: int = 16) -> str:
    """The first ``length`` hex digits of the SHA-256 of a file's bytes."""
    return sha256_file(path)[:length]
