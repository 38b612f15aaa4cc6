"""``alosmap batch``: map many scenes, resumable and sharded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alosmap.cli import _common
from alosmap.cli import options as opt

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.national.batch import BatchResult


def _parse_shard(value: str | None) -> str | None:
    if value is None:
        return None
    from alosmap.national.batch import Shard

    try:
        Shard.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return value


def batch(
    scenes: opt.ScenesArg = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            parser=opt.input_file("manifest", virtual=False),
            metavar="FILE",
            help="Text file of scenes, one path per line (relative to the file; "
            "blank lines and # comments skipped).",
        ),
    ] = None,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output",
            "--output-dir",
            "-o",
            file_okay=False,
            show_default=False,
            help="Directory for the maps <scene>_<task>.tif, the records "
            "(_alosmap/) and the STAC catalog (stac/); --output-dir is the same.",
        ),
    ] = ...,  # type: ignore[assignment]
    task: opt.TaskOpt = None,
    model: opt.ModelOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(
            callback=_parse_shard,
            metavar="I/N",
            help="Map only shard I of N (0-based; e.g. $SLURM_ARRAY_TASK_ID/10). "
            "Under torchrun each rank also takes its share.",
        ),
    ] = None,
    tile: opt.TileOpt = None,
    overlap: opt.OverlapOpt = None,
    batch_size: opt.BatchOpt = 8,
    backend: opt.BackendOpt = opt.Backend.auto,
    device: opt.DeviceOpt = "cpu",
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence/--no-confidence",
            help="Also write <map>_confidence.tif: top class probability "
            "(percent); `mosaic --merge confidence` needs it.",
        ),
    ] = True,
    probabilities: opt.ProbOpt = False,
    previews: Annotated[
        bool,
        typer.Option("--previews", help="Also write a PNG quicklook per scene."),
    ] = False,
    input_units: opt.UnitsOpt = opt.Units.auto,
    band: opt.BandOpt = None,
    threads: opt.ThreadsOpt = None,
    precision: opt.PrecisionOpt = None,
    compile: opt.CompileOpt = False,
    bbox: opt.BboxOpt = None,
    bbox_crs: opt.BboxCrsOpt = "EPSG:4326",
    aoi: opt.AoiOpt = None,
    stac: Annotated[
        bool,
        typer.Option(
            "--stac/--no-stac",
            help="Write a STAC catalog of the maps (stac/catalog.json; needs "
            "pystac, the stac extra of alosmap).",
        ),
    ] = True,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Remap scenes already mapped here with another model or options "
            "(otherwise the batch refuses to start).",
        ),
    ] = False,
    co: opt.CreationOpt = None,
    as_json: _common.JsonOpt = False,
) -> None:
    """Map many scenes into one directory: resumable, sharded, fault tolerant.

    Scenes already mapped with the same model and options are skipped, so
    re-running the command resumes an interrupted batch. Under torchrun every rank
    (one per GPU, --device cuda) maps its share; --shard I/N splits the list for
    array jobs. A scene that fails is reported and the batch goes on; the exit code
    is 1 when any scene failed. --bbox or --aoi map each scene's window of the
    area. Prints the maps, one per line (--json: one JSON document).
    """
    from alosmap.io.cog_options import creation_options
    from alosmap.national.batch import Shard, expand_scenes, read_manifest, run_batch

    params = dict(locals())

    if not scenes and manifest is None:
        raise typer.BadParameter(
            "give SCENES and/or --manifest FILE", param_hint="SCENES"
        )
    # the options, the area of interest and the tiling are checked before any scene
    options = opt.inference_options(params)
    all_scenes = expand_scenes(scenes or [])
    if manifest is not None:
        all_scenes += read_manifest(manifest)
    _refuse_directories(all_scenes)
    from alosmap._dist import dist_info

    # under torchrun only rank 0 reports (the others' results are merged into it)
    primary = dist_info().primary
    json_doc = _common.json_document("batch", as_json and primary)
    with json_doc as doc, creation_options(co):
        res = run_batch(
            all_scenes,
            output_dir,
            options,
            shard=Shard.parse(shard) if shard else None,
            previews=previews,
            stac=stac,
            progress=_common.show_progress(),
        )
        _report(res)
        doc.update(_document(res))
    if res.primary:
        _common.echo_paths(res.outputs, as_json)
    if res.failed:
        from alosmap.errors import BatchError

        if not res.primary:
            raise typer.Exit(1)
        total = len(res.done) + len(res.skipped) + len(res.failed)
        raise BatchError(
            f"{len(res.failed)} of {total} scenes failed; see {res.report}"
        )


def _refuse_directories(scenes: list[Path]) -> None:
    """A directory among the scenes is a usage error (exit 2), not a failed scene.

    Which of its files are scenes (HH, not HV, masks or date files) is the user's
    call: a quoted glob says it.
    """
    for p in scenes:
        if p.is_dir():
            raise typer.BadParameter(
                f"{p} is a directory: give its scenes, e.g. '{p / 'IMG-HH-*.tif'}' "
                "(quoted: expanded here, '**' for subfolders) or a --manifest",
                param_hint="SCENE",
            )


def _document(res: BatchResult) -> dict[str, Any]:
    """The ``--json`` figures of a batch (rank 0's, merged over ranks)."""
    return {
        "output_dir": res.out_dir,
        "task": res.task,
        "outputs": res.outputs,
        "done": res.done,
        "skipped": res.skipped,
        "failed": [{"scene": scene, "error": error} for scene, error in res.failed],
        "tiles": res.tiles,
        "seconds": res.seconds,
        "km2": res.km2,
        "report": res.report,
        "catalog": res.catalog,
        "world_size": res.world_size,
        "warnings": res.notes,
    }


def _report(res: BatchResult) -> None:
    """Print the batch's outcome on stderr (rank 0)."""
    if not res.primary:
        return
    for note in res.notes:
        _common.info_line(note)
    for scene, error in res.failed[:10]:
        _common.info_line(f"failed: {scene}: {error}")
    if len(res.failed) > 10:
        _common.info_line(f"failed: … and {len(res.failed) - 10} more (see the report)")
    _common.info_line(res.summary())
    if res.report is not None:
        _common.info_line(f"report: {res.report}")
    if res.catalog is not None:
        _common.info_line(f"STAC catalog: {res.catalog}")
