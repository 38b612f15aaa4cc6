"""ONNX Runtime backend for ``.onnx`` files written by ``alosmap export onnx``.

Execution providers, in order of preference:

* ``--device cpu``: the CPU EP, with ``intra_op_num_threads`` = the physical cores
  (or ``threads``), ``inter_op_num_threads`` = 1 (the graph is one chain) and every
  graph optimisation (``ORT_ENABLE_ALL``).
* ``--device cuda[:N]``: the TensorRT EP (when TensorRT's libraries are installed),
  then the CUDA EP, then the CPU EP for any node the GPU providers do not take. The
  TensorRT EP gets an optimisation profile over batches ``1..max(64, batch_size)``
  and an engine and timing cache under ``<cache>/ort-trt/<model sha>/<key>``
  (:func:`~alosmap.runtime.base.cache_dir`; the key names the GPU, the TensorRT and
  ONNX Runtime versions, the precision and the profile), so the engine is built once,
  not at every start.

Arrays (the protocol of :mod:`alosmap.runtime.base`): on the CPU a NumPy batch goes to
``session.run`` as it is and the probabilities come back as a NumPy array, computed
in NumPy (:func:`~alosmap.runtime.base.logits_to_probs`): this path imports no
PyTorch, so ``pip install alosmap`` maps with ``.onnx`` models on ONNX Runtime alone
(:attr:`OnnxRuntime.array_kind` is ``numpy``). A torch tensor on the CPU takes the
same path (``tensor.numpy()``: no copy for a contiguous float32 CPU tensor) and its
probabilities, the same numbers, come back as a tensor. On the GPU input and output
are bound to PyTorch device memory (IO binding with ``data_ptr()``): the batch as it
lies on the device, the logits into a buffer kept for the next batches; the
softmax/sigmoid (:func:`~alosmap.runtime.base.logits_to_probs`) then runs in PyTorch
on the device.
Nothing crosses to the host. Both GPU providers run on a CUDA stream of PyTorch made
for the session (the ``user_compute_stream`` provider option), which waits for the
caller's current stream before each run, and the current stream waits for it after;
ONNX Runtime's run itself returns only when the GPU work is done (with an ONNX Runtime
older than 1.18, which lacks the option, the current stream is synchronised before
the run instead). An fp16 graph input or output (``alosmap export onnx --fp16``
keeps both float32) is converted on the device.

If ``--device cuda`` is asked for and neither GPU provider loads (no GPU, or the
CUDA/cuDNN libraries are missing), that is an error naming the reason, never a silent
fall-back to the CPU; a TensorRT EP that does not load only gives a warning (the CUDA
EP then runs the model). PyTorch must see the GPU too (it owns the device memory).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alosmap._imports import lazy_import, require_torch
from alosmap.errors import BackendOptionError, BackendUnavailableError, ModelFileError
from alosmap.runtime.base import (
    cache_dir,
    check_device,
    check_precision,
    device_batch,
    device_index,
    file_sha256,
    host_batch,
    logits_to_probs,
    physical_cores,
)
from alosmap.spec import SPEC_KEY, ModelSpec, read_onnx_props

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
#: Metadata key of the file's compute precision (written by ``alosmap export onnx``).
PRECISION_KEY = "alosmap.precision"
#: Largest batch of the TensorRT EP's optimisation profile unless a larger batch
#: size is given.
DEFAULT_MAX_BATCH = 64
#: The first ONNX Runtime whose CUDA and TensorRT EPs take ``user_compute_stream``
#: from Python.
USER_STREAM_MIN_ORT = (1, 18)
#: Graph I/O element types: ONNX type name → NumPy dtype (the same name in PyTorch).
_ELEMENT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


def session_options(ort: Any, threads: int | None = None) -> Any:
    """``SessionOptions`` for alosmap models: all graph optimisations, CPU threads.

    Args:
        ort: the ``onnxruntime`` module.
        threads: intra-op threads; default the physical cores.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return opts


def tensorrt_libraries_present() -> bool:
    """Whether TensorRT's Python package (which ships its libraries) is installed."""
    return any(
        importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_libs")
    )


def trt_cache_path(
    model_sha: str,
    *,
    precision: str,
    batch_range: tuple[int, int, int],
    gpu: str,
    trt_version: str,
    ort_version: str,
    root: Path | None = None,
) -> Path:
    """Where the TensorRT EP keeps the engine (and timing cache) of one model.

    An engine is valid only for one GPU model, TensorRT version, precision and
    profile, so each combination gets its own folder and a change never reuses a
    stale engine.

    Args:
        model_sha: :func:`~alosmap.runtime.base.file_sha256` of the ``.onnx`` file.
        precision: ``fp32`` or ``fp16``.
        batch_range: the profile's (min, opt, max) batch.
        gpu: the GPU's name (``NVIDIA H100 80GB HBM3``).
        trt_version: TensorRT version.
        ort_version: ONNX Runtime version.
        root: the cache root (default :func:`~alosmap.runtime.base.cache_dir`).
    """
    lo, opt, hi = batch_range
    key = "-".join(
        [
            re.sub(r"[^A-Za-z0-9.]+", "_", gpu).strip("_") or "gpu",
            f"trt{trt_version}",
            f"ort{ort_version}",
            precision,
            f"b{lo}-{opt}-{hi}",
        ]
    )
    return (root or cache_dir()) / "ort-trt" / model_sha / key


def build_providers(
    device: str,
    available: Sequence[str],
    *,
    input_name: str = "input",
    input_chw: tuple[int, int, int] = (1, 256, 256),
    batch_range: tuple[int, int, int] = (1, 8, DEFAULT_MAX_BATCH),
    precision: str = "fp32",
    trt_cache: Path | None = None,
    use_tensorrt: bool = True,
) -> list[tuple[str, dict[str, Any]]]:
    """The execution providers (with options) to ask ONNX Runtime for, in order.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        available: ``onnxruntime.get_available_providers()``.
        input_name: the graph input (for the TensorRT profile).
        input_chw: channels, height and width of one tile.
        batch_range: (min, opt, max) batch of the TensorRT profile.
        precision: ``fp16`` enables TensorRT's fp16 kernels (LayerNorm kept fp32).
        trt_cache: engine cache folder of the TensorRT EP (no cache if None).
        use_tensorrt: offer the TensorRT EP when it is available.

    Returns:
        ``[(name, options), ...]``, ending with the CPU EP.

    Raises:
        BackendUnavailableError: ``cuda`` with an ONNX Runtime built without CUDA.
    """
    cpu: tuple[str, dict[str, Any]] = (CPU_EP, {})
    if device == "cpu":
        return [cpu]
    if CUDA_EP not in available:
        raise BackendUnavailableError(
            "--device cuda: this ONNX Runtime has no CUDA execution provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu in place "
            "of onnxruntime (pip uninstall onnxruntime; pip install "
            "'alosmap[gpu]'), or use --device cpu"
        )
    dev = str(device_index(device))
    out: list[tuple[str, dict[str, Any]]] = []
    if use_tensorrt and TRT_EP in available:
        c, h, w = input_chw
        shapes = [f"{input_name}:{b}x{c}x{h}x{w}" for b in batch_range]
        trt: dict[str, Any] = {
            "device_id": dev,
            "trt_profile_min_shapes": shapes[0],
            "trt_profile_opt_shapes": shapes[1],
            "trt_profile_max_shapes": shapes[2],
            "trt_fp16_enable": "True" if precision == "fp16" else "False",
        }
        if precision == "fp16":
            trt["trt_layer_norm_fp32_fallback"] = "True"
        if trt_cache is not None:
            trt.update(
                trt_engine_cache_enable="True",
                trt_engine_cache_path=str(trt_cache),
                trt_timing_cache_enable="True",
                trt_timing_cache_path=str(trt_cache),
            )
        out.append((TRT_EP, trt))
    out.append((CUDA_EP, {"device_id": dev}))
    out.append(cpu)
    return out


def with_compute_stream(
    providers: list[tuple[str, dict[str, Any]]], stream: int
) -> list[tuple[str, dict[str, Any]]]:
    """``providers`` with the GPU providers set to run on the CUDA stream ``stream``.

    Args:
        providers: :func:`build_providers`' list.
        stream: the ``cudaStream_t`` handle (``torch.cuda.Stream.cuda_stream``); 0, the
            legacy default stream, is not accepted by ONNX Runtime.
    """
    if not stream:
        raise ValueError("user_compute_stream: ONNX Runtime refuses stream 0")
    extra = {"has_user_compute_stream": "1", "user_compute_stream": str(stream)}
    return [
        (name, {**opts, **extra}) if name in (TRT_EP, CUDA_EP) else (name, opts)
        for name, opts in providers
    ]


def supports_user_stream(ort_version: str) -> bool:
    """Whether this ONNX Runtime takes ``user_compute_stream`` (see the module doc)."""
    m = re.match(r"(\d+)\.(\d+)", ort_version)
    return m is not None and (int(m[1]), int(m[2])) >= USER_STREAM_MIN_ORT


def session_stream(device: str) -> torch.cuda.Stream:
    """A new CUDA stream of PyTorch on ``device`` for ONNX Runtime to run on.

    Raises:
        BackendUnavailableError: PyTorch is not installed, or sees no such GPU (a CPU
            build of PyTorch, or no GPU at all).
    """
    torch = require_torch(f"--device {device} with an .onnx model")
    if torch.version.cuda is None:
        raise BackendUnavailableError(
            f"--device {device}: this PyTorch ({torch.__version__}) is a CPU build, "
            "and ONNX Runtime on the GPU works on PyTorch tensors in device memory: "
            "install a CUDA build of PyTorch, or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"--device {device}: PyTorch sees no CUDA GPU here (torch "
            f"{torch.__version__}: no GPU, or no NVIDIA driver); use --device cpu"
        )
    index = device_index(device)
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
            "device(s); use --device cpu or another cuda:N"
        )
    return torch.cuda.Stream(device=index)


@contextlib.contextmanager
def capture_native_output(sink: list[str]) -> Iterator[None]:
    """Collect what native code writes to stderr (fd 2) and Python prints on stdout.

    ONNX Runtime reports a provider library it cannot load with multi-line messages on
    stderr (and its Python layer prints fall-back notices on stdout, which carries
    results). They are gathered into ``sink`` instead, so the caller can turn them
    into one clear line. Only used while a session is being created.
    """
    buf = io.StringIO()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2
        with contextlib.redirect_stdout(buf):
            yield
        sink.append(buf.getvalue())
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stdout(buf):
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace") + buf.getvalue())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def provider_failure_reason(text: str) -> str | None:
    """The short reason in ONNX Runtime's provider-loading messages, if any."""
    text = _ANSI.sub("", text)
    for pattern in (
        r"with error: ([^\n]+?)\s*$",
        r"(CUDA failure \d+: [^;\n]+)",
        r"(Require cuDNN [^.]+\.\* and CUDA [^.]+\.\*)",
        r"(Please install TensorRT libraries)",
    ):
        m = re.search(pattern, text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return None


def prepare_gpu_libraries(ort: Any, tensorrt: bool) -> None:
    """Make the CUDA/cuDNN (and TensorRT) libraries of pip wheels loadable.

    ``onnxruntime.preload_dlls()`` (ONNX Runtime >= 1.21) loads CUDA and cuDNN from the
    ``nvidia-*`` wheels, and importing ``tensorrt`` loads ``libnvinfer`` from its
    wheel, so the providers find them without ``LD_LIBRARY_PATH``. Failures are left
    to the session, which reports them.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # best effort; the session reports what is missing
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)
    if tensorrt:
        try:
            importlib.import_module("tensorrt")
        except Exception as exc:  # best effort, as above
            logger.debug("import tensorrt failed: %s", exc)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every ``TensorProto`` of a graph: initializers, sparse ones, node attributes.

    Subgraphs (``If``/``Loop`` bodies) are walked too.
    """
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    """The tensors in a node's attributes (and in its subgraphs)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [attr.sparse_tensor, *attr.sparse_tensors]:
            yield from (sparse.values, sparse.indices)
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _external_data_problem(
    entries: dict[str, str], folder: Path, real_folder: str
) -> str | None:
    """Why ONNX Runtime would refuse one tensor's external data (None: it is fine).

    The rules of ONNX Runtime (``ValidateExternalDataPath``): a location relative to
    the model's folder, that stays inside it once resolved (no ``..``, no symbolic
    link out of it), naming a file that exists and holds ``offset + length`` bytes.
    """
    import ntpath
    import posixpath

    location = entries.get("location", "")
    if not location:
        return "no location"
    if (
        posixpath.isabs(location)
        or ntpath.isabs(location)
        or ntpath.splitdrive(location)[0]
    ):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", location):
        return "outside the model's folder (..)"
    try:
        real = os.path.realpath(folder / location)
    except (OSError, ValueError):  # a NUL byte, a name too long
        return "not a valid file name"
    if os.path.commonpath([real, real_folder]) != real_folder or real == real_folder:
        return "outside the model's folder"
    if not os.path.isfile(real):
        return "no such file beside the model"
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else 0
    except ValueError:
        return "a malformed offset or length"
    if offset < 0 or length < 0 or offset + length > os.path.getsize(real):
        return "beyond the end of the file"
    return None


def check_external_data(model: Any, path: Path) -> None:
    """Refuse an ONNX model whose external data ONNX Runtime would not load.

    Tensors stored outside the ``.onnx`` file name their file in ``external_data``.
    ONNX Runtime only reads such a file inside the model's folder (by a relative
    location, resolved without leaving the folder), so a location elsewhere (an
    absolute path, ``../secret.bin``, a link out of the folder) or a missing file is
    refused here, before any session is made, with the tensor and the location.

    Args:
        model: the ``ModelProto``, loaded without its external data.
        path: the ``.onnx`` file.

    Raises:
        ModelFileError: one line naming the tensor, the location and why.
    """
    onnx = lazy_import("onnx")
    folder = Path(path).parent
    real_folder = os.path.realpath(folder)
    tensors = [
        *_graph_tensors(model.graph),
        *(t for f in model.functions for n in f.node for t in _node_tensors(n)),
    ]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        why = _external_data_problem(entries, folder, real_folder)
        if why is not None:
            location = entries.get("location", "")
            raise ModelFileError(
                f"{path}: cannot run: tensor {tensor.name!r} keeps its data in "
                f"{location!r}, {why}; ONNX Runtime only loads external data from a "
                "file inside the model's folder, named relative to it"
            )


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file and its graph input name/shape.

    The external data locations are checked too (:func:`check_external_data`).

    Returns:
        The string pairs, plus ``"__input__"`` (the first graph input's name).

    Raises:
        ModelFileError: not a readable ONNX file, or external data ONNX Runtime
            would refuse.
    """
    meta, first_input = read_onnx_props(path)
    # a tensor's external data is named by a "location" entry: a file without those
    # bytes has none, and needs no graph walk (nor the onnx package: ~0.7 CPU s)
    if b"location" in Path(path).read_bytes():
        onnx = lazy_import("onnx")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ModelFileError(f"{path}: not a readable ONNX model ({exc})") from exc
        check_external_data(model, path)
    meta["__input__"] = first_input
    return meta


class OnnxRuntime:
    """An ONNX Runtime session for one ``.onnx`` model (see the module docstring).

    Args:
        path: the ``.onnx`` file (with the alosmap spec in its metadata).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op CPU threads (default: the physical cores).
        precision: None (the file's own), ``fp32`` or ``fp16``; see
            :mod:`alosmap.runtime.base`.
        batch_size: the batch size to be used; the TensorRT EP profile covers
            ``1..max(64, batch_size)``, optimised for ``batch_size`` (default 8).
        providers: execution provider names to use instead of the default order.
        io_binding: on the CPU, run through IO binding as on the GPU (which always
            binds input and output); for tests of that code path.
        cache_root: root of the TensorRT EP engine cache (default
            :func:`~alosmap.runtime.base.cache_dir`).

    Raises:
        ModelFileError: the file is not a readable alosmap ONNX model.
        BackendUnavailableError: ``cuda`` asked for and no GPU provider loads, or
            PyTorch does not see the GPU.
        BackendOptionError: a precision the file and providers cannot give.
    """

    name = "onnx"

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        providers: Sequence[str] | None = None,
        io_binding: bool | None = None,
        cache_root: Path | None = None,
    ):
        ort = lazy_import("onnxruntime")
        self.path = Path(path)
        self.device = check_device(device)
        meta = read_onnx_metadata(self.path)
        if SPEC_KEY not in meta:
            raise ModelFileError(f"{self.path}: an ONNX model without an alosmap spec")
        self.spec = ModelSpec.from_json(meta[SPEC_KEY])
        self.file_precision = meta.get(PRECISION_KEY, "fp32")
        self.precision = self._precision(
            check_precision(precision), self.file_precision
        )
        self.threads = threads or physical_cores()
        gpu = self.device.startswith("cuda")
        wanted, use_trt = self._wanted(
            ort, meta["__input__"], batch_size, providers, cache_root
        )
        #: PyTorch's stream the GPU providers run on (None: on their own stream)
        self._stream: torch.cuda.Stream | None = None
        if gpu:
            stream = session_stream(self.device)
            if supports_user_stream(ort.__version__):
                self._stream = stream
                wanted = with_compute_stream(wanted, stream.cuda_stream)
        self.session, notes = self._create(ort, wanted, gpu, use_trt)
        self.providers: list[str] = list(self.session.get_providers())
        self._check_active(wanted, notes)
        inp, outp = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, outp.name
        self._in_np = _element_type(inp, self.path)
        self._out_np = _element_type(outp, self.path)
        self._io_device = "cuda" if gpu else "cpu"
        self._device_id = device_index(self.device)
        #: the batches :meth:`run` is given: NumPy arrays on the CPU, torch tensors
        #: in device memory on a GPU
        self.array_kind = "torch" if gpu else "numpy"
        self._io = gpu or bool(io_binding)
        self._binding: Any = self.session.io_binding() if self._io else None
        #: logits buffer of the bound runs (the largest batch so far)
        self._out: torch.Tensor | None = None
        logger.info(
            "ONNX Runtime %s: %s (%s, %d threads)",
            ort.__version__,
            ", ".join(self.providers),
            self.precision,
            self.threads,
        )

    def _wanted(
        self,
        ort: Any,
        input_name: str,
        batch_size: int | None,
        providers: Sequence[str] | None,
        cache_root: Path | None,
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The providers to ask for (with options), and whether TensorRT's is one."""
        gpu = self.device.startswith("cuda")
        available = ort.get_available_providers()
        opt = batch_size or 8
        batch_range = (1, opt, max(DEFAULT_MAX_BATCH, opt))
        use_trt = gpu and TRT_EP in available and tensorrt_libraries_present()
        if gpu and TRT_EP in available and not use_trt:
            logger.info(
                "TensorRT EP skipped: TensorRT is not installed "
                "(pip install 'alosmap[tensorrt]')"
            )
        trt_cache = None
        if use_trt:
            trt_cache = trt_cache_path(
                file_sha256(self.path),
                precision=self.precision,
                batch_range=batch_range,
                gpu=_gpu_name(self.device),
                trt_version=_tensorrt_version(),
                ort_version=ort.__version__,
                root=cache_root,
            )
            trt_cache.mkdir(parents=True, exist_ok=True)
        a = self.spec.arch
        wanted = build_providers(
            self.device,
            available,
            input_name=input_name,
            input_chw=(a.in_chans, a.img_size, a.img_size),
            batch_range=batch_range,
            precision=self.precision,
            trt_cache=trt_cache,
            use_tensorrt=use_trt,
        )
        if providers is not None:
            names = list(providers)
            if not gpu and set(names) - {CPU_EP}:
                raise BackendOptionError(
                    f"execution providers {', '.join(names)} need --device cuda"
                )
            wanted = [p for p in wanted if p[0] in names] or [(n, {}) for n in names]
        return wanted, use_trt

    def _precision(self, asked: str | None, in_file: str) -> str:
        if asked is None or asked == in_file:
            return in_file
        if asked == "bf16":
            raise BackendOptionError(
                "--precision bf16 is not supported with ONNX Runtime; use fp16 (an "
                "fp16 export, or the TensorRT EP) or the torch backend for bf16"
            )
        if in_file == "fp16":
            raise BackendOptionError(
                f"--precision {asked}: {self.path.name} is an fp16 export; use the "
                "fp32 .onnx file for fp32"
            )
        # fp16 asked for an fp32 graph: only TensorRT can build that
        if not self.device.startswith("cuda"):
            raise BackendOptionError(
                f"--precision fp16: {self.path.name} is an fp32 graph; on the CPU use "
                "an fp16 export (`alosmap export onnx --fp16`) or fp32"
            )
        return "fp16"

    def _create(
        self, ort: Any, wanted: list[tuple[str, dict[str, Any]]], gpu: bool, trt: bool
    ) -> tuple[Any, str]:
        opts = session_options(ort, self.threads)
        names = [p[0] for p in wanted]
        options = [p[1] for p in wanted]
        if not gpu:
            return self._session(ort, opts, names, options), ""
        sink: list[str] = []
        with capture_native_output(sink):
            prepare_gpu_libraries(ort, trt)
            try:
                session = self._session(ort, opts, names, options)
            except BackendUnavailableError:
                if TRT_EP not in names:
                    raise
                # the TensorRT EP failed to register: go on with CUDA (and CPU)
                i = names.index(TRT_EP)
                session = self._session(
                    ort,
                    opts,
                    names[:i] + names[i + 1 :],
                    options[:i] + options[i + 1 :],
                )
        notes = "".join(sink)
        if notes.strip():
            logger.debug("ONNX Runtime while loading providers:\n%s", notes.strip())
        return session, notes

    def _session(
        self, ort: Any, opts: Any, names: list[str], options: list[dict[str, Any]]
    ) -> Any:
        try:
            return ort.InferenceSession(
                str(self.path),
                sess_options=opts,
                providers=names,
                provider_options=options,
                enable_fallback=0,  # our own fall-back keeps the provider options
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc)
            if "ExecutionProvider" in text or "TensorRT" in text:
                raise BackendUnavailableError(
                    f"ONNX Runtime cannot use {', '.join(names[:-1])} "
                    f"({' '.join(text.split())[:300]})"
                ) from exc
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load it ({exc})"
            ) from exc

    def _check_active(
        self, wanted: list[tuple[str, dict[str, Any]]], notes: str
    ) -> None:
        asked = [p[0] for p in wanted]
        if not self.device.startswith("cuda"):
            return
        reason = provider_failure_reason(notes)
        why = f" ({reason})" if reason else ""
        if CUDA_EP in asked and not ({CUDA_EP, TRT_EP} & set(self.providers)):
            from onnxruntime.capi import build_and_package_info as build

            cuda = getattr(build, "cuda_version", None) or "12"
            raise BackendUnavailableError(
                f"--device {self.device}: ONNX Runtime's CUDA execution provider did "
                f"not load{why}; it needs an NVIDIA GPU and the CUDA {cuda} / cuDNN 9 "
                "libraries (pip install 'alosmap[gpu]'); or use --device cpu"
            )
        if TRT_EP in self.providers:
            return
        if self.precision == "fp16" and self.file_precision == "fp32":
            state = "did not load" + why if TRT_EP in asked else "is not installed"
            raise BackendOptionError(
                f"--precision fp16: ONNX Runtime's TensorRT EP {state}, and the CUDA "
                f"EP runs {self.path.name} (an fp32 graph) in fp32; use an fp16 "
                "export (`alosmap export onnx --fp16`) for fp16 on the CUDA EP"
            )
        if TRT_EP in asked:
            logger.warning(
                "ONNX Runtime's TensorRT EP did not load%s; using the CUDA EP", why
            )

    def run(self, batch: Any) -> Any:
        """Probabilities ``[B, K, H, W]`` for normalised tiles ``[B, 1, H, W]``.

        Float32, on this runtime's device, of the batch's kind: a NumPy array for a
        NumPy batch (CPU only), a torch tensor for a tensor; see the module
        docstring.
        """
        if self.session is None:
            raise BackendUnavailableError("this ONNX Runtime session was closed")
        if isinstance(batch, np.ndarray):
            return self._run_numpy(batch)
        import torch

        if self._io_device == "cpu" and isinstance(batch, torch.Tensor):
            # the host path whatever the batch's kind: the same numbers for both
            host = batch.detach().to("cpu").numpy()
            return torch.from_numpy(self._run_numpy(host))
        dev = torch.device(self._io_device, self._device_id)
        x = device_batch(batch, dev, self.spec).to(getattr(torch, self._in_np.__name__))
        return logits_to_probs(self._run_bound(x))

    def _run_numpy(self, batch: np.ndarray) -> np.ndarray:
        """The NumPy path of :meth:`run` (ONNX Runtime on the CPU; no PyTorch)."""
        if self._io_device != "cpu":
            raise TypeError(
                f"ONNX Runtime on {self.device} runs torch tensors in device memory; "
                "NumPy batches run on the CPU (--device cpu)"
            )
        x = host_batch(batch, self.spec).astype(self._in_np, copy=False)
        if self._io:
            binding = self._binding
            binding.bind_cpu_input(self.input_name, x)
            binding.bind_output(self.output_name, "cpu")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            (out,) = self.session.run([self.output_name], {self.input_name: x})
        return logits_to_probs(out)

    def _run_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` through IO binding, in the reused buffer (see the module).

        ``x`` is contiguous, of the graph input's dtype, on the runtime's GPU.
        """
        import torch

        n = x.shape[0]
        dev = torch.device(self._io_device, self._device_id)
        if self._out is None or self._out.shape[0] < n:
            k, tile = self.spec.num_outputs, self.spec.tile_size
            dtype = getattr(torch, self._out_np.__name__)
            self._out = torch.empty((n, k, tile, tile), dtype=dtype, device=dev)
        out = self._out[:n]
        binding = self._binding
        where = (self._io_device, self._device_id)
        binding.bind_input(
            self.input_name, *where, self._in_np, tuple(x.shape), x.data_ptr()
        )
        binding.bind_output(
            self.output_name, *where, self._out_np, tuple(out.shape), out.data_ptr()
        )
        current = torch.cuda.current_stream(dev)
        if self._stream is None:  # ONNX Runtime runs on a stream of its own
            current.synchronize()
            self.session.run_with_iobinding(binding)
            return out
        self._stream.wait_stream(current)  # what the caller queued comes first
        self.session.run_with_iobinding(binding)
        current.wait_stream(self._stream)  # and what it queues next sees the logits
        return out

    def close(self) -> None:
        """Drop the session and the device buffers."""
        self.session = None
        self._binding = None
        self._out = None
        self._stream = None


def _element_type(arg: Any, path: Path) -> Any:
    """The NumPy dtype of a graph input or output (float32 or float16).

    Raises:
        ModelFileError: another element type.
    """
    try:
        return _ELEMENT_TYPES[arg.type]
    except KeyError:
        raise ModelFileError(
            f"{path}: graph {arg.name!r} is {arg.type}; alosmap models take and give "
            "float32 (or float16) tensors"
        ) from None


def _gpu_name(device: str) -> str:
    """The GPU's name through PyTorch when it sees the GPU, else ``gpuN``."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(device_index(device)))
    except Exception as exc:  # any failure only makes the cache key less specific
        logger.debug("GPU name unavailable: %s", exc)
    return f"gpu{device_index(device)}"


def _tensorrt_version() -> str:
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_libs"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
