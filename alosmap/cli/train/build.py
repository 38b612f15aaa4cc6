"""``alosmap train build-dataset`` and ``alosmap train inspect``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from alosmap.cli.options import OverwriteOpt, Task, Units, output_option
from alosmap.cli.train import app
from alosmap.train import defaults

#: Help panels of `build-dataset`.
_PAPER = "The paper's path: ALOS-2 scenes + JAXA tiles (default)"
_OWN = "Your own data: (image, label) pairs + a legend"
_PATCHES = "Patches and splits (both paths)"
_IMAGES = "Reading the images (both paths)"
# build-dataset's defaults and help texts: alosmap.train.defaults (the dataclasses'
# own; a light module). The paper's options are `None` in the signature (given or
# not is checked): left out, BuildConfig fills them in.


def _joined(values: Iterable[float], sep: str) -> str:
    """``(0.7, 0.15, 0.15)`` → ``0.7/0.15/0.15``; ``(10, 11)`` → ``10,11``."""
    return sep.join(f"{v:g}" for v in values)


@app.command("build-dataset")
def build_dataset_cmd(
    output: Annotated[
        Path,
        output_option("Dataset directory.", directory=True),
    ],
    sar: Annotated[
        list[Path] | None,
        typer.Option(
            "--sar",
            metavar="<path>",
            help="ALOS-2 HH scene, or a directory of them (its *.tif except LC_*); "
            "repeat for more. With --labels: the images.",
            rich_help_panel=_PAPER,
        ),
    ] = None,
    lulc: Annotated[
        Path | None,
        typer.Option(
            help="Directory of JAXA HRLULC label tiles (LC_*.tif).",
            rich_help_panel=_PAPER,
        ),
    ] = None,
    anchors: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Anchor points drawn (default and the paper: {defaults.ANCHORS:,}).",
            rich_help_panel=_PAPER,
        ),
    ] = None,
    pretrain_months: Annotated[
        str | None,
        typer.Option(
            help="Months whose scenes give pretraining patches (default "
            f"{_joined(defaults.PRETRAIN_MONTHS, ',')}).",
            rich_help_panel=_PAPER,
        ),
    ] = None,
    finetune_months: Annotated[
        str | None,
        typer.Option(
            help="Months whose scenes give train/val/test patches (default "
            f"{_joined(defaults.FINETUNE_MONTHS, ',')}).",
            rich_help_panel=_PAPER,
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            metavar="<csv>",
            help="CSV of pairs: columns image, label (required), split, date, "
            "scene, exclude, weight (optional: the pair's sampling weight in "
            "training, ≥ 0, 0 leaves it out); relative paths are relative to the CSV.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option(
            "--images",
            metavar="<path>",
            help="Image raster, or a directory of them (*.tif, *.tiff); repeat for "
            "more. Paired with --labels.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            metavar="<dir>",
            help="Directory of label rasters, one per image (see --label-pattern).",
            rich_help_panel=_OWN,
        ),
    ] = None,
    label_pattern: Annotated[
        str | None,
        typer.Option(
            help="File name of an image's label in --labels: {name} = the image's "
            "file name, {stem} = without extension, {key} = the part "
            "--image-pattern leaves, e.g. '{stem}_label.tif' (default: '{name}', "
            "the same file name).",
            rich_help_panel=_OWN,
        ),
    ] = None,
    image_pattern: Annotated[
        str | None,
        typer.Option(
            help="File names of the images with {key}, the part shared with the "
            "label's name ('*': any other part), e.g. '{key}_S1Hand.tif' with "
            "--label-pattern '{key}_LabelHand.tif'; a directory of --images "
            "stands for its files that match.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    legend: Annotated[
        str | None,
        typer.Option(
            metavar="<preset|file>",
            help="What label values mean: a preset (jaxa-lulc9: the paper's 9 "
            "classes from JAXA codes, the default of --lulc; jaxa-water; "
            "water-binary: 0/1, 255 no label) or a YAML/JSON legend file. Needed "
            "with --manifest/--labels; values it does not name are refused.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    label_nodata: Annotated[
        list[float] | None,
        typer.Option(
            metavar="<value>",
            help="A label value meaning 'no label' (besides the legend's ignored "
            "values, the raster's no-data and NaN); repeat for more.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    label_band: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Band of the label rasters that holds the labels (default: the "
            "only one; label rasters of several bands are refused without it).",
            rich_help_panel=_OWN,
        ),
    ] = None,
    exclude_scene: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="Leave out the pairs of this scene (the manifest's scene/group, "
            "else the image file name; as the label check names it); repeat for "
            "more. The manifest's exclude column does the same per row.",
            rich_help_panel=_OWN,
        ),
    ] = None,
    allow_missing_classes: Annotated[
        bool,
        typer.Option(
            "--allow-missing-classes",
            help="Build even when a class of the legend has no training pixels "
            "(a warning; by default an error).",
            rich_help_panel=_OWN,
        ),
    ] = False,
    split: Annotated[
        str | None,
        typer.Option(
            help="Train/val/test fractions, each ≥ 0 (default "
            f"{_joined(defaults.DEFAULT_SPLIT, '/')}; 0/0/1: an all-test dataset for "
            "evaluation).",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    split_by: Annotated[
        str | None,
        typer.Option(
            metavar="month|scene|random",
            help="Paper's path: month (months pick pretrain or labelled scenes, "
            "labelled patches split per patch). Own data: scene (whole scenes), "
            "month (whole months), random (per patch); default scene with ≥ "
            f"{defaults.MIN_SCENES_FOR_SCENE_SPLIT} scenes, else random.",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(
            metavar="<file>",
            help="Own data: lines 'scene-or-image,split' (train/val/test) giving "
            "each image's split.",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    patch_size: Annotated[
        int, typer.Option(help="Patch side in pixels.", rich_help_panel=_PATCHES)
    ] = defaults.PATCH_SIZE,
    stride: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Own data: step of the patch grid (default: the patch size, no "
            "overlap). The paper's path keeps anchored, non-overlapping patches.",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    min_valid: Annotated[
        float | None,
        typer.Option(
            help="Keep patches with at least this fraction of valid SAR pixels "
            f"(default {1.0 - defaults.MAX_NODATA:g}; = 1 − --max-nodata).",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    max_nodata: Annotated[
        float | None,
        typer.Option(
            help="Drop patches with a larger fraction of SAR no-data (default "
            f"{defaults.MAX_NODATA:g}; the same rule as --min-valid, give one).",
            rich_help_panel=_PATCHES,
        ),
    ] = None,
    min_labelled: Annotated[
        float,
        typer.Option(
            help="Keep patches with labels on at least this fraction of their "
            "SAR-valid pixels (paper's path: labelled months only).",
            rich_help_panel=_PATCHES,
        ),
    ] = defaults.MIN_LABEL_FRACTION,
    band: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Band of the images to use (required for multi-band files).",
            rich_help_panel=_IMAGES,
        ),
    ] = None,
    input_units: Annotated[
        Units,
        typer.Option(
            "--input-units",
            help="Units of the images: dn (ALOS-2 amplitude), db (σ0 dB), linear "
            "power; auto reads the UNITS tag or guesses as predict does.",
            rich_help_panel=_IMAGES,
        ),
    ] = Units.auto,
    nodata: Annotated[
        float | None,
        typer.Option(
            help="No-data value of the images (default: the files' own).",
            rich_help_panel=_IMAGES,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of anchors and splits.")
    ] = defaults.SEED,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset.")
    ] = False,
) -> None:
    """Build a training dataset: the paper's path, or your own (image, label) pairs.

    The paper's path (--sar + --lulc; Section III-A): anchors are drawn from JAXA
    label tiles with probability ∝ 1/frequency of their class; non-overlapping
    patches of each scene that hold an anchor are kept (unless mostly no data) with
    their nearest-resampled labels. Scenes of the pretraining months give the
    pretrain split, those of the finetuning months train/val/test (per patch).

    Your own data (--manifest, or --images + --labels, and --legend): any rasters
    GDAL reads and label rasters on any grid (nearest-resampled onto each patch);
    labels are stored as the legend's classes, and values it does not name stop the
    build with a table of the values found. The summary gives every class's pixels
    per split and in the patches the filters dropped (a class without training
    pixels stops the build unless --allow-missing-classes), and the label check:
    per class and scene the σ0 distribution, flagging scenes where a class
    contradicts the same class elsewhere (leave them out with --exclude-scene or
    the manifest's exclude column; `alosmap train inspect` shows it again, with a
    figure). The files, dtypes, manifest columns and dataset.json keys:
    docs/dataset_format.md.

    Prints the dataset path; the summary goes to stderr and summary.txt.
    """
    from alosmap.cli import _common
    from alosmap.train.dataset.images import ImageOptions
    from alosmap.train.dataset.label_values import UnknownLabelValuesError
    from alosmap.train.dataset.request import BuildRequest, build

    _common.check_output_dir(output, create=False)
    request = BuildRequest(
        output=output,
        sar=tuple(sar or ()),
        lulc=lulc,
        anchors=anchors,
        pretrain_months=pretrain_months,
        finetune_months=finetune_months,
        manifest=manifest,
        images=tuple(images or ()),
        labels=labels,
        label_pattern=label_pattern,
        image_pattern=image_pattern,
        legend=legend,
        label_nodata=tuple(label_nodata or ()),
        label_band=label_band,
        exclude_scenes=tuple(exclude_scene or ()),
        allow_missing_classes=allow_missing_classes,
        split=split,
        split_by=split_by,
        split_file=split_file,
        patch_size=patch_size,
        stride=stride,
        min_valid=min_valid,
        max_nodata=max_nodata,
        min_labelled=min_labelled,
        image=ImageOptions(band, input_units.value, nodata),
        seed=seed,
        overwrite=overwrite,
    )
    try:
        result = build(request, progress=_common.show_progress())
    except UnknownLabelValuesError as exc:
        typer.echo(exc.table, err=True)  # the values found, above the error line
        raise
    _common.info_line(result.summary_text.rstrip())
    typer.echo(str(result.path))


@app.command("inspect")
def inspect_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET",
            exists=True,
            file_okay=False,
            help="Dataset directory (from build-dataset).",
        ),
    ],
    figure: Annotated[
        Path | None,
        output_option(
            "Also draw, per class, the σ0 histogram of each scene (flagged "
            "scenes in red; needs pip install 'alosmap[plot]').",
            metavar="FIGURE.png",
        ),
    ] = None,
    task: Annotated[
        Task | None,
        typer.Option(
            help="Datasets of JAXA codes (the paper's path): lulc (default) or "
            "water. Datasets of your own labels use their legend."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the check as JSON.")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Check a dataset's labels against the radar before training on them.

    Exit code 1 when a scene is flagged, as for any check (the report is printed
    either way).

    For each class and scene (train, val and test patches): its pixels and the
    median and quartiles of their σ0 (dB). A class is flagged in a scene when its
    median there lies beyond ±3.5 robust SD (at least 3.5 dB) from the class's
    median over the scenes, or inside another class's typical quartiles and outside
    its own: e.g. 'water' drawn from optical images over flooded fields or towns,
    as bright as land. A flag is not proof: look at the figure; if those labels are
    wrong, rebuild without the scene: build-dataset --exclude-scene NAME (or the
    input manifest's exclude column). The same check is in build-dataset's summary
    (a warning there: the dataset is still built).
    """
    import json

    from alosmap._fileio import check_output_place, check_overwrite
    from alosmap._imports import lazy_import
    from alosmap.train.dataset.label_checks import check_dataset, plot_label_check

    if figure is not None:
        if figure.suffix.lower() != ".png":
            from alosmap.cli.options import usage_error

            usage_error(f"--output {figure}: the figure is a PNG file; name it *.png")
        lazy_import("matplotlib")
        check_output_place(figure)
        check_overwrite([figure], overwrite)
    check = check_dataset(data, task.value if task is not None else None)
    if figure is not None:
        plot_label_check(check, figure)
    if as_json:
        typer.echo(json.dumps(check.to_dict(), indent=2, ensure_ascii=False))
    else:
        typer.echo(check.format(), nl=False)
    if check.flagged_scenes:
        raise typer.Exit(1)
