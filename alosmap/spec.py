"""The model spec that travels with every model file, and ``.safetensors`` model I/O.

A :class:`ModelSpec` says everything inference needs to use a model without the code
or configuration that trained it: the task, the classes (codes, names, colours), the
architecture (:class:`~alosmap.arch.ArchConfig`), the input radiometry (band, units,
calibration factor, clip range), the training-set normalisation and where the weights
came from. It is serialised as JSON:

* ``.safetensors``: in the file header's ``__metadata__`` under ``alosmap.spec``;
* ``.onnx``: in ``metadata_props`` under the same key;
* TensorRT ``.engine``: in a ``.engine.json`` sidecar (:func:`read_engine_sidecar`),
  beside the TensorRT build record.

Reading a spec never imports torch (nor ``onnx``: an ``.onnx`` file's metadata is read
from its protobuf here), and loading weights never unpickles anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from alosmap._fileio import (
    atomic_write,
    check_not_input,
    check_overwrite,
    remove_stale_temps,
    sha256_file,
)
from alosmap._version import __version__
from alosmap.arch import ArchConfig, check_fields
from alosmap.classes import (
    TASK_RECORDS,
    ClassInfo,
    Legend,
    LegendError,
    get_task,
)
from alosmap.errors import ModelFileError, SpecError
from alosmap.radiometry import Radiometry

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Key of the spec JSON in model file metadata.
SPEC_KEY = "alosmap.spec"
#: Version of the spec layout; bumped on incompatible changes.
SPEC_FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024
#: Suffixes of TensorRT engine files (their spec is in ``<engine>.json``).
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: ``format`` of the engine sidecar written by ``alosmap export tensorrt``.
ENGINE_SIDECAR_FORMAT = "alosmap-engine/1"


@dataclass(frozen=True)
class ModelSpec:
    """Everything inference needs to know about a model.

    Attributes:
        task: ``"lulc"`` (9 classes), ``"water"`` (1 logit, water vs not) or the
            name of a user's legend.
        arch: the architecture.
        classes: output classes (code, name, colour, label values) of the maps.
        radiometry: input conversion and normalisation.
        threshold: probability threshold for the water task (0.5 in the paper).
        name: short model name.
        provenance: free-form strings: what data, which command, when, version.
            Input files are named without this machine's paths, with their
            SHA-256 (:func:`provenance_file`).
        format_version: layout version of the spec.
        legend: the whole legend (map no data, binary, ignored label values);
            None for the bundled tasks' own legends. Read it as :attr:`legend`.
    """

    task: str
    arch: ArchConfig
    classes: tuple[ClassInfo, ...] = ()
    radiometry: Radiometry = field(default_factory=Radiometry)
    threshold: float | None = None
    name: str = "alosmap-model"
    provenance: dict[str, str] = field(default_factory=dict)
    format_version: int = SPEC_FORMAT_VERSION
    custom_legend: Legend | None = None
    _legend: Legend = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Fill defaults from the task and validate consistency."""
        task = self._resolve_legend()
        if self.threshold is None:
            object.__setattr__(self, "threshold", task.default_threshold())
        if self.format_version != SPEC_FORMAT_VERSION:
            raise SpecError(
                f"format_version: this alosmap ({__version__}) reads spec format "
                f"{SPEC_FORMAT_VERSION}, the file has {self.format_version}; "
                "upgrade alosmap or re-export the model"
            )
        k = self.arch.num_classes
        if not task.binary and k != len(self.classes):
            raise SpecError(
                f"arch.num_classes: {k} outputs but {len(self.classes)} classes"
            )
        if task.binary and (k != 1 or len(self.classes) != 2):
            raise SpecError(
                "arch.num_classes: the water task needs 1 output (a water logit) and "
                f"2 classes; got {k} outputs and {len(self.classes)} classes"
            )
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise SpecError(
                f"threshold: expected a value in (0, 1), got {self.threshold}"
            )
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes) or any(not 0 <= c <= 254 for c in codes):
            raise SpecError(f"classes: codes must be unique and in 0..254, got {codes}")
        if self.arch.in_chans != 1:
            raise SpecError(
                "arch.in_chans: alosmap models take one HH band, "
                f"got {self.arch.in_chans}"
            )

    def _resolve_legend(self) -> Legend:
        """The legend: the custom one, or the bundled task's with these classes."""
        lg = self.custom_legend
        if lg is not None:
            if lg.name != self.task:
                raise SpecError(
                    f"task: {self.task!r} but the legend is named {lg.name!r}"
                )
            if self.classes and [(c.code, c.name) for c in self.classes] != [
                (c.code, c.name) for c in lg.classes
            ]:
                raise SpecError("classes: differ from the legend's classes")
        elif self.task not in TASK_RECORDS:
            raise SpecError(
                f"task: {self.task!r} is not a bundled task "
                f"({', '.join(TASK_RECORDS)}) and the spec carries no legend"
            )
        else:
            lg = _preset_legend(get_task(self.task), tuple(self.classes))
        object.__setattr__(self, "classes", lg.classes)
        object.__setattr__(self, "_legend", lg)
        return lg

    @property
    def legend(self) -> Legend:
        """What the outputs, maps and labels of this model mean."""
        return self._legend

    @property
    def num_outputs(self) -> int:
        """Number of model output channels."""
        return self.arch.num_classes

    @property
    def tile_size(self) -> int:
        """Tile size (pixels) the model runs on."""
        return self.arch.img_size

    def replace(self, **changes: Any) -> ModelSpec:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "task": self.task,
            "arch": self.arch.to_dict(),
            "classes": [
                {"code": c.code, "name": c.name, "color": list(c.color)}
                for c in self.classes
            ],
            **(
                {"legend": self.custom_legend.to_dict()}
                if self.custom_legend is not None
                else {}
            ),
            "radiometry": {
                **dataclasses.asdict(self.radiometry),
                "clip_db": list(self.radiometry.clip_db),
            },
            "threshold": self.threshold,
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> str:
        """Serialise to compact, key-sorted JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Build and validate a spec from :meth:`to_dict` output.

        Raises:
            SpecError: naming the first bad or missing field.
        """
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(data).__name__}")
        bad = sorted({"custom_legend", "_legend"} & set(data))
        if bad:  # the legend is stored under "legend"
            raise SpecError(f"spec: unknown field(s) {', '.join(bad)}")
        check_fields({k: v for k, v in data.items() if k != "legend"}, cls, "spec")
        for required in ("task", "arch", "format_version"):
            if required not in data:
                raise SpecError(f"{required}: missing from the spec")
        try:
            classes = tuple(
                ClassInfo(
                    int(c["code"]),
                    str(c["name"]),
                    cast("tuple[int, int, int]", tuple(int(v) for v in c["color"])),
                )
                for c in data.get("classes", [])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"classes: malformed entry ({exc})") from exc
        if any(len(c.color) != 3 for c in classes):
            raise SpecError("classes: every colour needs three values (R, G, B)")
        rad = data.get("radiometry", {})
        if not isinstance(rad, dict):
            raise SpecError("radiometry: expected an object")
        rad_fields = {f.name for f in dataclasses.fields(Radiometry)}
        bad = sorted(set(rad) - rad_fields)
        if bad:
            raise SpecError(f"radiometry: unknown field(s) {', '.join(bad)}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise SpecError("provenance: expected an object of strings")
        legend = None
        if "legend" in data:
            try:
                legend = Legend.from_dict(data["legend"], source="spec legend")
            except LegendError as exc:
                raise SpecError(str(exc)) from exc
        try:
            return cls(
                task=data["task"],
                arch=ArchConfig.from_dict(data["arch"]),
                classes=classes,
                radiometry=Radiometry(**rad),
                threshold=data.get("threshold"),
                name=str(data.get("name", "alosmap-model")),
                provenance={str(k): str(v) for k, v in provenance.items()},
                format_version=data["format_version"],
                custom_legend=legend,
            )
        except TypeError as exc:
            raise SpecError(f"spec: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse and validate a spec from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec: not valid JSON ({exc})") from exc
        return cls.from_dict(data)


def _preset_legend(preset: Legend, classes: tuple[ClassInfo, ...]) -> Legend:
    """A bundled task's legend, with the classes a spec names (own colours, say)."""
    values = {c.code: c.values for c in preset.classes}
    filled = tuple(
        c if c.values else dataclasses.replace(c, values=values.get(c.code, ()))
        for c in classes
    )
    if not filled or filled == preset.classes:
        return preset
    try:
        return dataclasses.replace(preset, classes=filled)
    except LegendError as exc:
        raise SpecError(f"classes: {exc}") from exc


def default_spec(task: str | Legend, arch: ArchConfig, **kwargs: Any) -> ModelSpec:
    """A spec for ``task`` (a bundled task's name or any legend).

    ``arch``'s output count is set to match the task.
    """
    if isinstance(task, Legend):
        legend = task
        if TASK_RECORDS.get(legend.name) != legend:  # not a bundled task's own
            kwargs.setdefault("custom_legend", legend)
        else:
            kwargs.setdefault("classes", legend.classes)
        task = legend.name
    else:
        legend = get_task(task)
    k = legend.num_outputs
    if arch.num_classes != k:
        arch = arch.replace(num_classes=k)
    kwargs.setdefault("provenance", {"alosmap_version": __version__})
    return ModelSpec(task=task, arch=arch, **kwargs)


# --------------------------------------------------------------------------------------
# provenance: files named without the paths of the machine that made them
# --------------------------------------------------------------------------------------

#: A URL or a GDAL virtual path (``/vsicurl/…``, ``s3://…``): not a local file.
_NOT_LOCAL = re.compile(r"^(/vsi[a-z0-9_]+/|[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def provenance_name(
    path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None
) -> str:
    """How provenance names a file: never by an absolute path of this machine.

    Args:
        path: the file (or folder).
        base: a folder to name it relative to (a dataset's); None: its name only.

    Returns:
        ``path`` relative to ``base`` (``../scenes/a.tif``) when the two share a
        folder below the file system's root, else its last component (a relative
        path climbing to the root would be the absolute path in disguise). A URL
        or a GDAL virtual path is named by its last component too.
    """
    text = os.fspath(path)
    if _NOT_LOCAL.match(text):
        return text.rstrip("/").rsplit("/", 1)[-1]
    full = os.path.abspath(text)
    if base is not None:
        folder = os.path.abspath(base)
        with contextlib.suppress(ValueError):  # another drive (Windows)
            common = Path(os.path.commonpath([full, folder]))
            if common.parent != common:
                return Path(os.path.relpath(full, folder)).as_posix()
    return Path(full).name


def provenance_sha256(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 (hex) of a local file; None for a URL, a virtual path or a folder."""
    text = os.fspath(path)
    if _NOT_LOCAL.match(text) or not os.path.isfile(text):
        return None
    return sha256_file(text)


def provenance_file(key: str, path: str | os.PathLike[str]) -> dict[str, str]:
    """Provenance entries of one input file: its name and its SHA-256.

    Returns:
        ``{key: name}`` (:func:`provenance_name`) and ``{key}_sha256`` when the
        file is local.
    """
    out = {key: provenance_name(path)}
    digest = provenance_sha256(path)
    if digest is not None:
        out[f"{key}_sha256"] = digest
    return out


# --------------------------------------------------------------------------------------
# .safetensors model files
# --------------------------------------------------------------------------------------


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read the ``__metadata__`` of a safetensors file without loading tensors.

    Raises:
        ModelFileError: when the file is missing or not a safetensors file.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    try:
        with p.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ModelFileError(f"{p}: too short to be a .safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n <= 1 or n > _MAX_HEADER or n > p.stat().st_size - 8:
                raise ModelFileError(f"{p}: not a .safetensors file (bad header size)")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{p}: not a readable .safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{p}: not a .safetensors file (header is not an object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ModelFileError(f"{p}: malformed __metadata__")
    return {str(k): str(v) for k, v in meta.items()}


def load_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read the spec of a model file (``.safetensors``, ``.onnx`` or ``.engine``).

    Raises:
        ModelFileError: the file is missing, unreadable or carries no alosmap spec.
        SpecError: the spec is present but invalid (the message names the field).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        text = _onnx_spec_text(p)
    elif suffix in ENGINE_SUFFIXES:
        data = read_engine_sidecar(p)
        # a sidecar written by `alosmap export tensorrt` nests the spec; a bare spec
        # JSON (hand-made sidecar) is accepted too
        return ModelSpec.from_dict(data.get("spec", data))
    else:
        meta = read_safetensors_metadata(p)
        if SPEC_KEY not in meta:
            raise ModelFileError(
                f"{p}: a .safetensors file without an alosmap spec; is it an alosmap "
                "model? (encoder checkpoints go to "
                "`alosmap train finetune --pretrained`)"
            )
        text = meta[SPEC_KEY]
    return ModelSpec.from_json(text)


def engine_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an engine: ``model.engine`` → ``model.engine.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def read_engine_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the JSON sidecar of a TensorRT engine (not the engine itself).

    The sidecar written by ``alosmap export tensorrt`` is an object with
    ``format`` (:data:`ENGINE_SIDECAR_FORMAT`), ``spec`` (the model spec),
    ``tensorrt`` (TensorRT version, GPU name and compute capability, precision,
    optimisation profile, build time) and ``parity``.

    Args:
        path: the engine (``.engine``, ``.plan`` or ``.trt``).

    Raises:
        ModelFileError: the engine or its sidecar is missing, or the sidecar is not
            a JSON object.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    side = engine_sidecar_path(p)
    if not side.is_file():
        raise ModelFileError(
            f"{p}: TensorRT engine without its spec sidecar {side.name}; rebuild it "
            "with `alosmap export tensorrt`"
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{side}: not a readable engine sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{side}: not an engine sidecar (expected a JSON object)")
    return data


# --------------------------------------------------------------------------------------
# .onnx model files: the metadata without the onnx package
# --------------------------------------------------------------------------------------
# Importing ``onnx`` costs ~0.7 CPU s (most of a 256² scene's start-up), so the few
# fields inference needs are read from the protobuf wire format here: ModelProto
# ``graph`` (7) and ``metadata_props`` (14, StringStringEntryProto: key 1, value 2);
# GraphProto ``input`` (11, ValueInfoProto: name 1).
_MODEL_GRAPH, _MODEL_METADATA, _GRAPH_INPUT = 7, 14, 11


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of the length-delimited fields in ``buf[start:end]``.

    Varint and fixed-width fields are skipped; so is the content of the others
    until asked for (a 100 MB initializer costs nothing).

    Raises:
        ValueError: not protobuf wire format.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("a field runs past the end")
            yield field, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"wire type {wire}")
    if pos != end:
        raise ValueError("a field runs past the end")


def read_onnx_props(path: str | os.PathLike[str]) -> tuple[dict[str, str], str]:
    """An ONNX file's ``metadata_props`` and its first graph input's name.

    Read from the protobuf without importing ``onnx`` (see above).

    Raises:
        ModelFileError: a missing file, or not an ONNX model.
    """
    p = Path(path)
    try:
        buf = p.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {p}") from None
    except OSError as exc:
        raise ModelFileError(f"{p}: not a readable ONNX model ({exc})") from exc
    meta: dict[str, str] = {}
    inputs: list[str] = []
    try:
        for field, data in _proto_fields(buf, 0, len(buf)):
            if field == _MODEL_METADATA:
                entry = dict(_proto_fields(data, 0, len(data)))
                meta[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
            elif field == _MODEL_GRAPH and not inputs:
                inputs = [
                    dict(_proto_fields(d, 0, len(d))).get(1, b"").decode()
                    for f, d in _proto_fields(data, 0, len(data))
                    if f == _GRAPH_INPUT
                ]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{p}: not a readable ONNX model ({exc})") from exc
    return meta, inputs[0] if inputs else "input"


def _onnx_spec_text(path: Path) -> str:
    meta, _ = read_onnx_props(path)
    if SPEC_KEY not in meta:
        raise ModelFileError(f"{path}: an ONNX model without an alosmap spec")
    return meta[SPEC_KEY]


def _atomic_target(
    path: Path, overwrite: bool, inputs: Iterable[str | os.PathLike[str]]
) -> Path:
    check_not_input([path], inputs)
    check_overwrite([path], overwrite)
    if not path.parent.is_dir():
        raise ModelFileError(f"output directory does not exist: {path.parent}")
    remove_stale_temps(path)
    return path


def save_model(
    model: torch.nn.Module,
    spec: ModelSpec,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``model``'s weights and ``spec`` as one ``.safetensors`` file, atomically.

    Temporaries a killed save left beside ``path`` are removed first.

    Args:
        model: a :class:`~alosmap.models.SegmentationModel` (or anything whose
            state dict matches ``spec.arch``).
        spec: the spec stored in the header.
        path: destination; written to a temporary file beside it, then renamed.
        overwrite: replace an existing file.
        inputs: files the caller read (e.g. the model it started from); ``path``
            may not be one of them, whatever ``overwrite`` says.

    Raises:
        OutputPathError: ``path`` is one of ``inputs``.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        ModelFileError: the directory of ``path`` does not exist.
    """
    from alosmap._imports import lazy_import

    save_file = lazy_import("safetensors.torch").save_file
    out = _atomic_target(Path(path), overwrite, inputs)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: spec.to_json(), "format": "pt"}
    return atomic_write(
        out, lambda tmp: save_file(state, str(tmp), metadata=meta), replace=overwrite
    )


def load_model(
    path: str | os.PathLike[str], *, device: str = "cpu"
) -> tuple[torch.nn.Module, ModelSpec]:
    """Build the model a ``.safetensors`` file describes and load its weights.

    The weights are read with safetensors (no pickle); every parameter and buffer
    must match the spec's architecture.

    Returns:
        ``(model, spec)`` with the model in eval mode on ``device``.

    Raises:
        ModelFileError: not an alosmap model, or weights that do not match.
        BackendUnavailableError: PyTorch (``alosmap[torch]``) is not installed.
    """
    from alosmap._imports import lazy_import, require_torch

    spec = load_spec(path)
    require_torch(f"{Path(path).name} (a .safetensors model)")
    load_file = lazy_import("safetensors.torch").load_file
    from alosmap.models import build_model

    model = build_model(spec.arch)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read tensors ({exc})") from exc
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5])
        unexpected = ", ".join(result.unexpected_keys[:5])
        raise ModelFileError(
            f"{path}: weights do not match the spec's architecture "
            f"({len(result.missing_keys)} missing: {missing}; "
            f"{len(result.unexpected_keys)} unexpected: {unexpected})"
        )
    return model.to(device).eval(), spec
