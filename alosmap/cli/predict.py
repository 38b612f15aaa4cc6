"""``alosmap predict`` and ``alosmap water``: map a whole scene.

Both commands share one parameter list: ``water`` is ``predict`` with the task fixed
(its signature is ``predict``'s without ``--task``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alosmap.cli import _common
from alosmap.cli.options import (
    AoiOpt,
    Backend,
    BackendOpt,
    BandOpt,
    BatchOpt,
    BboxCrsOpt,
    BboxOpt,
    CompileOpt,
    ConfOpt,
    CreationOpt,
    DeviceOpt,
    ModelOpt,
    OutputOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    PreviewOpt,
    ProbOpt,
    SceneArg,
    Task,
    TaskOpt,
    ThreadsOpt,
    TileOpt,
    Units,
    UnitsOpt,
    inference_options,
)

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.predict.pipeline import PredictResult


def _predict(params: dict[str, Any]) -> None:
    """Run predict_scene with the command's parameters; print summary and outputs."""
    from alosmap.io.cog_options import creation_options
    from alosmap.predict.pipeline import predict_scene

    options = inference_options(params)
    command = "predict" if params["task"] != Task.water else "water"
    with (
        _common.json_document(command, params["as_json"]) as doc,
        creation_options(params["co"]),
    ):
        res = predict_scene(
            params["scene"],
            params["output"],
            options,
            preview=params["preview"],
            progress=_common.show_progress(),
        )
        _summary(res)
        doc.update(_document(res, params["scene"]))
    _common.echo_paths(res.files, params["as_json"])


def _summary(res: PredictResult) -> None:
    """The one-line summary on stderr: tiles, time, class shares, masked pixels."""
    names = res.class_names
    total = max(1, res.valid_pixels)
    shares = ", ".join(
        f"{names.get(code, code)} {100 * n / total:.1f}%"
        for code, n in sorted(res.class_pixels.items(), key=lambda kv: -kv[1])
    )
    masked = ""
    if res.layover_pixels is not None and res.shadow_pixels is not None:
        masked = (
            f"; masked as no data: {res.layover_pixels} layover px, "
            f"{res.shadow_pixels} shadow px"
        )
    _common.info_line(
        f"{res.output.name}: {res.tiles_run}/{res.tiles_total} tiles in "
        f"{res.seconds:.1f} s ({res.tiles_per_second:.2f} tiles/s); {shares}{masked}"
    )


def _document(res: PredictResult, scene: Any) -> dict[str, Any]:
    """The ``--json`` figures of one mapped scene."""
    return {
        "scene": str(scene),
        "task": res.task,
        "outputs": res.files,
        "map": res.output,
        "confidence": res.confidence,
        "probabilities": res.probabilities,
        "preview": res.preview,
        "tiles": {"run": res.tiles_run, "total": res.tiles_total},
        "seconds": res.seconds,
        "model_seconds": res.model_seconds,
        "valid_pixels": res.valid_pixels,
        "classes": _common.class_counts(res.class_pixels, res.class_names),
        "masked_pixels": {"layover": res.layover_pixels, "shadow": res.shadow_pixels},
        "date_range": res.date_range,
    }


def predict(
    scene: SceneArg,
    task: TaskOpt = None,
    model: ModelOpt = None,
    output: OutputOpt = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    batch_size: BatchOpt = 8,
    backend: BackendOpt = Backend.auto,
    device: DeviceOpt = "cpu",
    precision: PrecisionOpt = None,
    compile: CompileOpt = False,
    confidence: ConfOpt = False,
    probabilities: ProbOpt = False,
    preview: PreviewOpt = None,
    input_units: UnitsOpt = Units.auto,
    band: BandOpt = None,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    bbox: BboxOpt = None,
    bbox_crs: BboxCrsOpt = "EPSG:4326",
    aoi: AoiOpt = None,
    co: CreationOpt = None,
    as_json: _common.JsonOpt = False,
) -> None:
    """Map land use / land cover (or water) of a whole scene to a COG GeoTIFF.

    The map has the scene's CRS, transform and size: one band of LULC codes 1-9
    (0 = no data) with a colour table, class names and a QGIS style (<map>.qml);
    water 1 / not water 0 / no data 255. --confidence writes <map>_confidence.tif.
    --bbox or --aoi map only the area's pixel window of the scene (same grid).
    A JAXA 25 m mosaic tile's HH file (<tile>_<yy>_sl_HH_<ver>.tif) uses the
    tile's files beside it: mask (layover and shadow become no data, counted in
    the summary), date (acquisition dates in the map's tags) and .xml.
    Prints the files written, one per line (--json: one JSON document).
    """
    _predict(dict(locals()))


def _without(func: Callable[..., Any], name: str) -> inspect.Signature:
    """The signature of ``func`` without its parameter ``name``."""
    sig = inspect.signature(func, eval_str=True)
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if n != name])


def water(**params: Any) -> None:
    """Map water of a whole scene (1 water, 0 not water, 255 no data) to a COG.

    The same as `alosmap predict --task water`.
    """
    predict(**params, task=Task.water)


# `water` takes predict's parameters but --task: Typer reads them from __signature__
setattr(water, "__signature__", _without(predict, "task"))  # noqa: B010
