"""Shared command-line options: choice enums and Typer parameter types.

``predict``, ``water`` and ``batch`` (and any other command that maps scenes) declare
their parameters with these types, so a flag, its help and its checks are written
once. :func:`inference_options` turns the parsed values into the library's
:class:`~alosmap.predict.options.InferenceOptions`.

Input files: the parsers of :func:`input_file` accept a local file (a missing,
unreadable or directory path is an :class:`~alosmap.errors.AlosmapError`: one line,
exit 1) or, for rasters, a GDAL virtual path or URL (``/vsizip/``, ``/vsicurl/``,
``/vsis3/``, ``https://``, ``s3://``), passed on as the string it is (a
``pathlib.Path`` would collapse ``//``). Exit 2 stays for usage errors: unknown
options, bad syntax, numbers out of range. :func:`inference_options` also checks,
before any scene is opened, what needs more than one option or a file: the area
of interest (an ``--aoi`` file without polygons, an unknown ``--bbox-crs``, a
latitude beyond ±90) and ``--tile``/``--overlap`` against the model; those usage
errors are one line (:func:`usage_error`), exit 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from alosmap.cli import _common

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.predict.options import InferenceOptions


class Task(str, Enum):
    """Mapping task."""

    lulc = "lulc"
    water = "water"


class Backend(str, Enum):
    """Inference backend."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    tensorrt = "tensorrt"


class Precision(str, Enum):
    """Compute precision of the model."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Units(str, Enum):
    """Units of the scene's values."""

    auto = "auto"
    dn = "dn"
    db = "db"
    linear = "linear"


def input_file(
    what: str, *, virtual: bool = True, kind: str = "raster"
) -> Callable[[str], Any]:
    """A Typer ``parser`` for an input file argument or option.

    Args:
        what: what the file is, for messages (``scene``, ``map``, ``model``).
        virtual: accept GDAL virtual paths and URLs (rasters only); they are
            returned as strings, unchecked (GDAL reports on them when opened).
        kind: the error raised for a missing/unreadable local file: ``raster``
            (:class:`~alosmap.errors.InputRasterError`, also for other input
            files) or ``model`` (:class:`~alosmap.errors.ModelFileError`). Not a
            ``ValueError``: Typer would turn that into a usage error (exit 2).

    Returns:
        ``parse(text)``: a :class:`~pathlib.Path` for a local file, the string
        itself for a virtual path or URL.
    """

    def parse(text: str) -> Path | str:
        from alosmap import errors
        from alosmap.io.raster import check_input_file, is_virtual

        if virtual and is_virtual(text):
            return str(text)
        error = {
            "raster": errors.InputRasterError,
            "model": errors.ModelFileError,
        }[kind]
        path = Path(text).expanduser()
        check_input_file(path, what, error)
        return path

    return parse


def existing_path(what: str) -> Callable[[str], Path]:
    """A Typer ``parser`` for an input that may be a file or a directory.

    A missing path is an :class:`~alosmap.errors.InputRasterError` (exit 1), not a
    usage error.
    """

    def parse(text: str) -> Path:
        from alosmap.errors import InputRasterError

        path = Path(text).expanduser()
        if not path.exists():
            raise InputRasterError(f"{what} not found: {path}")
        return path

    return parse


def virtual_or_path(text: str) -> Path | str:
    """A Typer ``parser`` that keeps GDAL virtual paths and URLs as strings.

    Nothing is checked (``batch`` reports missing scenes as failed scenes).
    """
    from alosmap.io.raster import is_virtual

    return str(text) if is_virtual(text) else Path(text).expanduser()


TaskOpt = Annotated[
    Task | None,
    typer.Option(
        help="lulc (9 classes) or water. Default: the model's task (lulc without "
        "--model)."
    ),
]
SceneArg = Annotated[
    Path,
    typer.Argument(
        parser=input_file("scene"),
        metavar="SCENE",
        help="ALOS-2 HH scene (L2.1 GeoTIFF, amplitude DN) or any single-band "
        "raster; also a VRT, a GDAL virtual path (/vsizip/, /vsicurl/, /vsis3/) "
        "or a URL (https://, s3://).",
    ),
]
ScenesArg = Annotated[
    list[Path] | None,
    typer.Argument(
        parser=virtual_or_path,
        show_default=False,
        metavar="SCENE",
        help="Scenes to map (files, VRTs, GDAL virtual paths or URLs); a quoted "
        "glob ('data/**/IMG-HH-*.tif') is expanded here. Missing files are "
        "reported as failed scenes.",
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        parser=input_file("model file", virtual=False, kind="model"),
        help="Model file (.safetensors, .onnx or TensorRT .engine). Default: the "
        "bundled model (.onnx; its .safetensors with --backend torch).",
    ),
]


def output_option(help: str, *, directory: bool = False, **extra: Any) -> Any:
    """The ``-o/--output`` option with ``help``: a file, or a directory.

    ``directory``: the option names a directory; ``extra``: more
    :func:`typer.Option` arguments.
    """
    return typer.Option(
        "--output",
        "-o",
        file_okay=not directory,
        dir_okay=directory,
        help=help,
        **extra,
    )


OutputOpt = Annotated[
    Path | None, output_option("Map to write (.tif). Default: <scene>_<task>.tif here.")
]
TileOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Tile size in pixels; the model's own (256) by default."),
]
OverlapOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Pixels shared by neighbouring tiles, blended smoothly (about the "
        "model's receptive field). Default: a quarter of the model's tile (64 for "
        "256).",
        show_default=False,
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Tiles per model call.")
]
BackendOpt = Annotated[
    Backend,
    typer.Option(
        help="auto picks by the model file: .safetensors torch, .onnx onnx (on "
        "--device cuda: TensorRT EP, then CUDA EP, then CPU EP), .engine tensorrt. "
        "`alosmap info` lists what is installed."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="torch: fp32 (default), bf16 or fp16 autocast (fp16 on CUDA only; bf16 "
        "on the CPU is fast only with AVX512-BF16/AMX). onnx: the file's own "
        "(fp32 or an fp16 export); fp16 on an fp32 file = TensorRT EP fp16. "
        "tensorrt: fixed in the engine.",
        show_default=False,
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model (torch backend). Compiling takes about a "
        "minute per batch size on a CPU, where it gained only 2 % (small preset).",
    ),
]
ConfOpt = Annotated[
    bool,
    typer.Option(
        "--confidence",
        help="Also write <output>_confidence.tif: top class probability (percent).",
    ),
]
ProbOpt = Annotated[
    bool,
    typer.Option(
        "--probabilities",
        help="Also write <output>_probabilities.tif (uint8 percent per class).",
    ),
]


def _preview_path(value: Path | None) -> Path | None:
    """``--preview``: a suffix alosmap writes (.png, .jpg, .jpeg), else exit 2."""
    if value is not None:
        from alosmap.errors import OutputPathError
        from alosmap.predict.preview import preview_format

        try:
            preview_format(value)
        except OutputPathError as exc:
            usage_error(str(exc))
    return value


PreviewOpt = Annotated[
    Path | None,
    typer.Option(
        "--preview",
        dir_okay=False,
        callback=_preview_path,
        help="Also write a quicklook (SAR | map): PNG, or JPEG for .jpg/.jpeg.",
    ),
]
UnitsOpt = Annotated[
    Units,
    typer.Option(
        "--input-units",
        help="Units of the scene: dn (ALOS-2 amplitude), db (σ0 dB), linear power; "
        "auto reads the UNITS tag or guesses from the values.",
    ),
]
BandOpt = Annotated[
    int | None, typer.Option(min=1, help="Band holding HH (multi-band files).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads for the model (default: the physical cores)."
    ),
]


def _creation_options(value: list[str] | None) -> list[str] | None:
    """``--co``: checked against GDAL's list for COGs before any work, else exit 2."""
    if value:
        from alosmap.io.cog_options import CreationOptionError, parse_creation_options

        try:
            parse_creation_options(value)
        except CreationOptionError as exc:
            usage_error(str(exc))
    return value


def creation_option(help_text: str) -> Any:
    """The ``--co KEY=VALUE`` option (repeatable, checked before any work)."""
    return typer.Option(
        "--co",
        metavar="KEY=VALUE",
        callback=_creation_options,
        show_default=False,
        help=help_text,
    )


CreationOpt = Annotated[
    list[str] | None,
    creation_option(
        "GDAL creation option of the map COGs (class map, confidence, "
        "probabilities), e.g. --co LEVEL=9, --co COMPRESS=ZSTD; repeatable. Checked "
        "against GDAL's COG driver; lossy codecs and grid options are refused."
    ),
]


def _bbox(text: str) -> tuple[float, float, float, float]:
    """Typer ``parser`` of ``--bbox``: bad syntax is a usage error (exit 2)."""
    from alosmap.errors import InferenceOptionError
    from alosmap.predict.options import parse_bbox

    try:
        return parse_bbox(text)
    except InferenceOptionError as exc:
        raise typer.BadParameter(str(exc).removeprefix("bbox ")) from None


BboxOpt = Annotated[
    str | None,
    typer.Option(
        "--bbox",
        parser=_bbox,
        metavar="MINX,MINY,MAXX,MAXY",
        show_default=False,
        help="Area of interest: map only the scene's pixel window of this box (in "
        "--bbox-crs); pixels outside it are no data. Negative numbers: "
        "--bbox=-60.5,-3.2,-60.1,-2.9.",
    ),
]
BboxCrsOpt = Annotated[
    str,
    typer.Option(
        "--bbox-crs", metavar="CRS", help="CRS of --bbox (EPSG:32633, WKT, ...)."
    ),
]
AoiOpt = Annotated[
    Path | None,
    typer.Option(
        "--aoi",
        parser=input_file("AOI file", virtual=False),
        metavar="FILE",
        show_default=False,
        help="Area of interest (GeoJSON, GeoPackage, ...): map only the scene's "
        "pixel window of its polygons; pixels outside them are no data. Not with "
        "--bbox.",
    ),
]


def plain(value: Any) -> Any:
    """A choice enum's value (``Backend.onnx`` → ``"onnx"``); anything else as is."""
    return value.value if isinstance(value, Enum) else value


def usage_error(message: str) -> NoReturn:
    """Report a usage error as one line (``alosmap: error: message``); exit 2."""
    _common.error_line(message)
    raise typer.Exit(2)


def inference_options(values: Mapping[str, Any]) -> InferenceOptions:
    """:class:`~alosmap.predict.options.InferenceOptions` from a command's parameters.

    Checked here, before any scene is opened (usage errors, exit 2): the options'
    ranges, the area of interest (:func:`check_area`) and, when ``--tile`` or
    ``--overlap`` is given, their fit to the model (:func:`check_tiling`).

    Args:
        values: the parameters as the command received them (e.g. its
            ``locals()``); those that are not inference options (scene, output,
            ...) are left out, choice enums are turned into their values.
    """
    from alosmap.errors import InferenceOptionError
    from alosmap.predict.options import InferenceOptions, option_names

    if values.get("bbox") is not None and values.get("aoi") is not None:
        raise typer.BadParameter(
            "give at most one area of interest", param_hint="'--aoi' / '--bbox'"
        )
    names = option_names()
    try:
        options = InferenceOptions(
            **{k: plain(v) for k, v in values.items() if k in names}
        )
    except InferenceOptionError as exc:
        usage_error(flag_message(str(exc)))
    check_area(options)
    check_tiling(options)
    return options


def flag_message(message: str) -> str:
    """An option error of the library (``overlap 999: ...``) as the flag says it.

    The message's first word, when it is an inference option, becomes the flag
    (``--overlap 999: ...``); a flag said again in parentheses after the value
    (``tile 7 (--tile 7): ...``) is dropped.
    """
    import re

    from alosmap.predict.options import option_names

    name, _, rest = message.partition(" ")
    if name not in option_names():
        return message
    flag = "--" + name.replace("_", "-")
    value, _, tail = rest.partition(" ")
    if tail.startswith(f"({flag} "):
        tail = re.sub(r"^\([^)]*\)", "", tail)
        return f"{flag} {value}{tail}"
    return f"{flag} {rest}"


def check_area(options: InferenceOptions) -> None:
    """Read the area of interest once, before any scene: a bad one is a usage error.

    An ``--aoi`` file that is not GeoJSON (or a vector file), is empty, holds no
    polygon or is not longitude/latitude, an ``--bbox-crs`` that is not a CRS and
    a ``--bbox`` out of the longitude/latitude range stop the command with one
    line, exit 2. (A missing or unreadable file was refused when the option was
    parsed, exit 1; so is a vector AOI without pyogrio, a missing install.)
    """
    from alosmap.errors import AoiError
    from alosmap.io.aoi import parse_crs, read_area

    try:
        if options.bbox is None:  # --bbox-crs without --bbox: a typo all the same
            try:
                parse_crs(options.bbox_crs)
            except ValueError as exc:
                raise AoiError(
                    f"--bbox-crs {options.bbox_crs!r}: not a CRS ({exc})"
                ) from exc
        bbox = options.bbox if isinstance(options.bbox, tuple) else None
        read_area(bbox, options.bbox_crs, options.aoi)
    except AoiError as exc:
        if isinstance(exc.__cause__, ImportError):
            raise
        usage_error(str(exc))


def check_tiling(options: InferenceOptions) -> None:
    """``--tile``/``--overlap`` checked against the model's tile: a usage error.

    Only when one of them is given (the model's spec is read for it; a model that
    cannot be read is left to the command to report).
    """
    if options.tile is None and options.overlap is None:
        return
    from alosmap.errors import AlosmapError, InferenceOptionError
    from alosmap.predict.pipeline import model_file
    from alosmap.spec import load_spec

    try:
        path = model_file(options)
        spec = load_spec(path)
    except AlosmapError:
        return
    try:
        options.for_model(spec, path.name)
    except InferenceOptionError as exc:
        usage_error(flag_message(str(exc)))


__all__ = [
    "AoiOpt",
    "Backend",
    "BackendOpt",
    "BandOpt",
    "BatchOpt",
    "BboxCrsOpt",
    "BboxOpt",
    "CompileOpt",
    "ConfOpt",
    "CreationOpt",
    "DeviceOpt",
    "ModelOpt",
    "OutputOpt",
    "OverlapOpt",
    "OverwriteOpt",
    "Precision",
    "PrecisionOpt",
    "PreviewOpt",
    "ProbOpt",
    "SceneArg",
    "ScenesArg",
    "Task",
    "TaskOpt",
    "ThreadsOpt",
    "TileOpt",
    "Units",
    "UnitsOpt",
    "check_area",
    "check_tiling",
    "flag_message",
    "inference_options",
    "input_file",
    "output_option",
    "plain",
    "usage_error",
    "virtual_or_path",
]
