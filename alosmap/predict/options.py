"""The inference options of ``predict``, ``water`` and ``batch``, validated once.

:class:`InferenceOptions` holds every knob that changes how a scene is mapped (task,
model, tiling, runtime, extra outputs, input interpretation). It is frozen and checks
its values when it is made, so :func:`~alosmap.predict.pipeline.predict_scene`,
:func:`~alosmap.national.batch.run_batch` and the command line share one validation.
Checks that need the model (its task and tile size) are made by
:meth:`InferenceOptions.for_model`, which returns the options resolved against it
(:class:`ResolvedOptions`: task, tile and overlap set, the default overlap decided
there and only there); :meth:`ResolvedOptions.fingerprint` is the part of the
options that a batch records next to each map to decide whether a finished scene
can be skipped.

Errors name the option as a Python keyword (``overlap 300: must be in 0..255``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alosmap.classes import TASKS
from alosmap.errors import (
    BackendOptionError,
    InferenceOptionError,
    SpecMismatchError,
)
from alosmap.radiometry import INPUT_UNITS
from alosmap.runtime.base import BACKENDS, check_device, check_precision
from alosmap.spec import ModelSpec
from alosmap.tiling import default_overlap

#: Pixels shared by neighbouring windows of 256-pixel tiles unless told otherwise
#: (:func:`~alosmap.tiling.default_overlap`: a quarter of the tile).
DEFAULT_OVERLAP = default_overlap(256)
#: Tiles per model call unless told otherwise.
DEFAULT_BATCH = 8
#: ``input_units`` values: ``auto`` (the scene's tag, else a guess) or a unit.
UNITS_CHOICES: tuple[str, ...] = ("auto", *INPUT_UNITS)
#: The options a batch record's fingerprint holds besides the model's SHA-256, in
#: record order: a finished map is reused only when all of them are unchanged.
FINGERPRINT_FIELDS = (
    "task",
    "model_sha256",
    "tile",
    "overlap",
    "input_units",
    "band",
    "confidence",
    "probabilities",
    "precision",
)
#: Fingerprint fields of the area of interest, recorded only when one is set (so
#: records of whole-scene runs keep matching).
AOI_FINGERPRINT_FIELDS = ("bbox", "bbox_crs", "aoi_sha256")
#: Fingerprint fields recorded only when set: the area of interest and the COGs'
#: creation options (``--co``); a record that has one must match it.
OPTIONAL_FINGERPRINT_FIELDS = (*AOI_FINGERPRINT_FIELDS, "creation_options")
#: ``bbox_crs`` unless told otherwise: WGS 84 longitude/latitude.
DEFAULT_BBOX_CRS = "EPSG:4326"


@dataclass(frozen=True)
class InferenceOptions:
    """How scenes are mapped: model, tiling, runtime, outputs and input reading.

    Make one with keywords (every field has a default) and derive variants with
    :meth:`replace`; both validate.

    Attributes:
        task: ``lulc``, ``water`` or, with ``model``, the name of the model's own
            legend (``flood``, say); None for the model's task (``lulc`` without a
            model). Must match the model's task.
        model: ``.safetensors``, ``.onnx`` or TensorRT ``.engine`` model file; None
            for the bundled model of the task.
        tile: window size; None for the model's (the only one it accepts: its
            position embedding is fixed).
        overlap: pixels shared by neighbouring windows, blended smoothly
            (``0 <= overlap < tile``); None: a quarter of the model's tile
            (:func:`~alosmap.tiling.default_overlap`, 64 for 256-pixel tiles).
        batch_size: tiles per model call (does not change the result).
        backend: ``auto`` (by the model file), ``torch``, ``onnx`` or ``tensorrt``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``bf16`` or ``fp16``; None for the backend's default
            (torch fp32, ONNX the file's, TensorRT the engine's).
        compile: ``torch.compile`` the model (torch backend only).
        confidence: add a band with the top class probability (percent).
        probabilities: also write ``<output stem>_probabilities.tif``.
        input_units: ``auto``, ``dn``, ``db`` or ``linear``.
        band: 1-based band of a multi-band scene; None for a single-band scene.
        threads: CPU threads for the runtime; None for the physical cores.
        overwrite: replace existing outputs (a batch: remap scenes recorded with
            another model or options).
        bbox: area of interest ``(minx, miny, maxx, maxy)`` in ``bbox_crs`` (a
            ``"minx,miny,maxx,maxy"`` string is accepted); the map then covers
            the AOI's pixel window of the scene.
        bbox_crs: CRS of ``bbox`` (anything :meth:`rasterio.crs.CRS.from_user_input`
            reads; checked when a scene is opened).
        aoi: area of interest as a polygon file (GeoJSON, GeoPackage, ...; see
            :mod:`alosmap.io.aoi`); at most one of ``bbox`` and ``aoi``.

    Raises:
        InferenceOptionError: a value out of range (the message names it), or a
            16-bit precision the device has no native arithmetic for.
        BackendOptionError: an unknown backend, device or precision.
    """

    task: str | None = None
    model: str | os.PathLike[str] | None = None
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = DEFAULT_BATCH
    backend: str = "auto"
    device: str = "cpu"
    precision: str | None = None
    compile: bool = False
    confidence: bool = False
    probabilities: bool = False
    input_units: str = "auto"
    band: int | None = None
    threads: int | None = None
    overwrite: bool = False
    bbox: tuple[float, float, float, float] | str | None = None
    bbox_crs: str = DEFAULT_BBOX_CRS
    aoi: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        """Validate every option; store ``model`` as a :class:`~pathlib.Path`."""
        if self.model is not None and not isinstance(self.model, Path):
            object.__setattr__(self, "model", Path(self.model))
        if self.aoi is not None and not isinstance(self.aoi, Path):
            object.__setattr__(self, "aoi", Path(self.aoi))
        if self.bbox is not None:
            object.__setattr__(self, "bbox", parse_bbox(self.bbox))
            if self.aoi is not None:
                raise InferenceOptionError(
                    "bbox and aoi: give at most one area of interest"
                )
        if not isinstance(self.bbox_crs, str) or not self.bbox_crs.strip():
            raise InferenceOptionError(f"bbox_crs {self.bbox_crs!r}: expected a CRS")
        self._check_task()
        _at_least("tile", self.tile, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("band", self.band, 1)
        _at_least("threads", self.threads, 1)
        _at_least("overlap", self.overlap, 0)
        if self.tile is not None and self.overlap is not None:
            self._check_overlap(self.tile)
        if self.backend not in BACKENDS:
            raise BackendOptionError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        check_device(self.device)
        check_precision(self.precision)
        self._check_native_precision()
        if self.input_units not in UNITS_CHOICES:
            raise InferenceOptionError(
                f"input_units {self.input_units!r}: choose one of "
                f"{', '.join(UNITS_CHOICES)}"
            )

    def _check_native_precision(self) -> None:
        """bf16/fp16 only where the device runs them natively (a usage error if not).

        The backend is the one that will run the model: ``backend``, else the model
        file's (the bundled default models are ``.onnx``); see
        :func:`~alosmap.runtime.probe.precision_problem`.
        """
        if self.precision in (None, "fp32"):
            return
        from alosmap.runtime.base import SUFFIX_BACKEND
        from alosmap.runtime.probe import precision_problem

        backend = self.backend
        if backend == "auto":
            path = self.model_path
            backend = SUFFIX_BACKEND.get(path.suffix.lower(), "") if path else "onnx"
        why = precision_problem(self.precision, self.device, backend)
        if why is not None:
            raise InferenceOptionError(
                f"precision {self.precision} (--precision {self.precision}): "
                f"refused: {why}; use fp32"
            )

    def _check_task(self) -> None:
        """A bundled task, or (with a model) any legend name: the model decides."""
        if self.task is None or self.task in TASKS:
            return
        if self.model is None or not isinstance(self.task, str) or not self.task:
            raise InferenceOptionError(
                f"task {self.task!r}: choose one of {', '.join(TASKS)} (a model "
                "trained with its own legend is named with model=/--model)"
            )

    @property
    def model_path(self) -> Path | None:
        """``model`` as a path (None for the bundled model)."""
        return None if self.model is None else Path(self.model)

    def replace(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes`` (option names as keywords), validated again.

        Raises:
            TypeError: for a name that is not an inference option.
        """
        unknown = sorted(set(changes) - set(option_names()))
        if unknown:
            raise TypeError(
                f"unknown inference option(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(option_names())}"
            )
        return dataclasses.replace(self, **changes) if changes else self

    def for_model(self, spec: ModelSpec, model_name: str) -> ResolvedOptions:
        """These options checked against a model: ``task``, ``tile``, ``overlap`` set.

        Args:
            spec: the model's spec.
            model_name: the model file's name, for the messages.

        Raises:
            SpecMismatchError: the model is of another task, or runs on another
                tile size, or ``overlap`` does not fit its tile.
        """
        task = spec.task
        if self.task is not None and self.task != task:
            raise SpecMismatchError(
                f"the model {model_name} is a {task} model, not {self.task}; "
                f"pass a {self.task} model with --model (model=...)"
            )
        size = spec.tile_size
        if self.tile is not None and self.tile != size:
            raise InferenceOptionError(
                f"tile {self.tile} (--tile {self.tile}): this model runs on "
                f"{size}×{size} tiles (its position embedding is fixed); leave the "
                "tile unset"
            )
        return ResolvedOptions(
            **{
                **{f: getattr(self, f) for f in option_names()},
                "task": task,
                "tile": size,
                "overlap": default_overlap(size)
                if self.overlap is None
                else self.overlap,
            }
        )

    def _check_overlap(self, tile: int) -> None:
        if self.overlap is not None and not 0 <= self.overlap < tile:
            raise InferenceOptionError(
                f"overlap {self.overlap}: must be in 0..{tile - 1}"
            )


@dataclass(frozen=True)
class ResolvedOptions(InferenceOptions):
    """Inference options resolved against a model (:meth:`InferenceOptions.for_model`).

    ``task``, ``tile`` and ``overlap`` are set (the model's task and tile, the
    overlap given or :func:`~alosmap.tiling.default_overlap` of the tile): code
    that maps reads them as they are.

    Attributes:
        task: the model's task (its legend's name).
        tile: the model's tile size.
        overlap: pixels shared by neighbouring windows (``0 <= overlap < tile``).
    """

    task: str = "lulc"
    tile: int = 256
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        """Validate as :class:`InferenceOptions`; ``overlap`` must fit ``tile``."""
        super().__post_init__()
        if self.task is None or self.tile is None or self.overlap is None:
            raise InferenceOptionError(
                "resolved options need task, tile and overlap (for_model sets them)"
            )
        self._check_overlap(self.tile)

    def fingerprint(self, model_sha256: str) -> dict[str, Any]:
        """The output-changing options a batch records with each map.

        A finished map is reused only when the record's fingerprint equals this
        one. Batch size, backend, device, threads and ``compile`` do not change the
        map and are left out.

        Args:
            model_sha256: SHA-256 of the model file.

        Returns:
            ``{task, model_sha256, tile, overlap, input_units, band, confidence,
            probabilities, precision}`` (in that order), then ``bbox`` and
            ``bbox_crs`` or ``aoi_sha256`` (SHA-256 of the AOI file) only when an
            area of interest is set, and ``creation_options`` only inside a
            :func:`~alosmap.io.cog_options.creation_options` block that sets some
            (``--co``: they change the files).

        Raises:
            AoiError: the AOI file cannot be read.
        """
        values = {
            **{f: getattr(self, f) for f in FINGERPRINT_FIELDS if f != "model_sha256"},
            "model_sha256": model_sha256,
            "confidence": bool(self.confidence),
            "probabilities": bool(self.probabilities),
        }
        fp = {f: values[f] for f in FINGERPRINT_FIELDS}
        if self.bbox is not None:
            fp["bbox"] = list(self.bbox)
            fp["bbox_crs"] = self.bbox_crs
        elif self.aoi is not None:
            from alosmap._fileio import sha256_file

            try:
                fp["aoi_sha256"] = sha256_file(self.aoi)
            except OSError as exc:
                from alosmap.errors import AoiError

                raise AoiError(f"cannot read AOI {self.aoi}: {exc}") from exc
        from alosmap.io.cog_options import current_creation_options

        creation = current_creation_options()
        if creation:
            fp["creation_options"] = dict(sorted(creation.items()))
        return fp


#: Logger of :func:`warn_bundled_model`.
logger = logging.getLogger("alosmap.predict")


def bundled_model_warning(
    options: InferenceOptions, tags: Mapping[str, str]
) -> str | None:
    """The warning for the bundled demo model on a real scene, or None.

    The bundled models were trained on synthetic scenes only. Mapping a scene with
    them is fine for a demo or a test (scenes that :mod:`alosmap.synthetic` wrote
    carry ``SYNTHETIC=true``) but not for real mapping.

    Args:
        options: the inference options (``model`` None = the bundled model).
        tags: the scene's dataset metadata tags.

    Returns:
        One line to show, or None when a model was given or the scene is
        synthetic.
    """
    if options.model is not None:
        return None
    if str(tags.get("SYNTHETIC", "")).strip().lower() in ("true", "1", "yes"):
        return None
    task = options.task or "lulc"
    return (
        f"no --model given: the bundled {task} model was trained on synthetic "
        "data only and is not for real mapping; pass --model FILE"
    )


def warn_bundled_model(options: InferenceOptions, tags: Mapping[str, str]) -> None:
    """Log :func:`bundled_model_warning` (once per call) when there is one."""
    message = bundled_model_warning(options, tags)
    if message is not None:
        logger.warning("%s", message)


def option_names() -> tuple[str, ...]:
    """The names of the inference options (the fields of :class:`InferenceOptions`)."""
    return tuple(f.name for f in dataclasses.fields(InferenceOptions))


def parse_bbox(
    value: str | Sequence[float],
) -> tuple[float, float, float, float]:
    """``minx,miny,maxx,maxy`` (a string or four numbers) as four floats.

    Raises:
        InferenceOptionError: not four finite numbers, or ``min >= max``.
    """
    text = value if isinstance(value, str) else ",".join(map(str, value))
    try:
        if isinstance(value, str):
            nums = [float(v) for v in value.split(",")]
        else:
            nums = [float(v) for v in value]
    except (TypeError, ValueError):
        nums = []
    if len(nums) != 4 or not all(map(math.isfinite, nums)):
        raise InferenceOptionError(
            f"bbox {text!r}: expected four numbers minx,miny,maxx,maxy"
        )
    x0, y0, x1, y1 = nums
    if not (x0 < x1 and y0 < y1):
        raise InferenceOptionError(
            f"bbox {text!r}: expected minx < maxx and miny < maxy (minx,miny,maxx,maxy)"
        )
    return x0, y0, x1, y1


def _at_least(name: str, value: int | None, low: int) -> None:
    """Check an optional integer option is an integer ``>= low``."""
    if value is None:
        return
    try:
        if isinstance(value, bool):
            raise TypeError
        operator.index(value)
    except TypeError:
        raise InferenceOptionError(f"{name} {value!r}: expected an integer") from None
    if value < low:
        raise InferenceOptionError(f"{name} {value}: must be >= {low}")


__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_OVERLAP",
    "InferenceOptionError",
    "InferenceOptions",
    "ResolvedOptions",
    "bundled_model_warning",
    "default_overlap",
    "option_names",
    "parse_bbox",
    "warn_bundled_model",
]
