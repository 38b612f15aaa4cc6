"""``alosmap train``: build datasets, pretrain, finetune and evaluate models."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap.cli.options import (
    OverwriteOpt,
    Task,
    Units,
    UnitsOpt,
    input_file,
)
from alosmap.train import defaults

app = typer.Typer(
    help="Build training data, pretrain (SAR-W-MixMAE), finetune and evaluate models.",
    no_args_is_help=True,
)


# Options shared by `pretrain` and `finetune`.
AugmentOpt = Annotated[
    bool,
    typer.Option("--augment/--no-augment", help="Random flips/rot90 of patches."),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help=f"Data-loading workers per process (default {defaults.MAX_WORKERS}; "
        "never more than the CPUs the process may use).",
    ),
]
TrainDeviceOpt = Annotated[
    str, typer.Option(help="auto, cpu or cuda (torchrun: one GPU per process).")
]
AmpOpt = Annotated[
    bool,
    typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16, else fp16)."),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Continue from OUTPUT/last.pt when present (--no-resume refuses "
        "an existing run).",
    ),
]
StopAfterOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Stop after this many epochs in this call (resume later)."
    ),
]
LrOpt = Annotated[
    float | None,
    typer.Option(help="Absolute learning rate; overrides --blr and batch scaling."),
]
MinLrOpt = Annotated[float, typer.Option(help="LR at the end of the cosine.")]
WeightDecayOpt = Annotated[
    float, typer.Option(help="AdamW weight decay (none on norms/biases/tables).")
]


def _run_options(
    augment: bool,
    workers: int | None,
    device: str,
    amp: bool,
    seed: int,
    resume: bool,
    stop_after: int | None,
) -> dict[str, Any]:
    """The options `pretrain` and `finetune` share, as library options.

    ``workers``: :func:`alosmap.train.defaults.data_workers` (capped at the CPUs).
    """
    return {
        "augment": augment,
        "workers": defaults.data_workers(workers),
        "device": device,
        "amp": amp,
        "seed": seed,
        "resume": resume,
        "stop_after": stop_after,
    }


#: The files a pretraining or finetuning run writes in its run directory.
RUN_FILES = (
    "last.pt",
    "log.csv",
    "encoder.safetensors",
    "model.safetensors",
    "last.safetensors",
    "reconstruction.png",
    "val_curve.png",
)


def _check_run_dir(output: Path, data: Path, *inputs: Path | None) -> None:
    """Check the run directory before any work: writable, and no input replaced.

    Temporaries a killed run left beside the run's files are removed.

    Raises:
        OutputPathError: the directory cannot be made or written, it is the dataset
            directory, or a file the run writes is one of ``inputs`` (the
            ``--pretrained`` or ``--init-from`` file; whatever ``--resume`` says).
    """
    from alosmap._fileio import check_not_input, remove_stale_temps
    from alosmap.cli._common import check_output_dir

    check_output_dir(output, create=True)
    check_not_input([output], [data])
    files = [output / name for name in RUN_FILES]
    files += sorted(output.glob("epoch_*.safetensors"))
    check_not_input(files, [p for p in inputs if p is not None])
    remove_stale_temps(*files)


def _echo_primary(path: Path) -> None:
    """Print the run's product on stdout, once (rank 0 of a torchrun job)."""
    from alosmap._dist import dist_info

    if dist_info().primary:
        typer.echo(str(path))


@app.command("init")
def init_model(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="Model file to write."),
    ],
    task: Annotated[Task, typer.Option(help="lulc (9 classes) or water.")] = Task.lulc,
    preset: Annotated[
        str, typer.Option(help="Architecture preset: paper, small or tiny.")
    ] = "small",
    no_highres: Annotated[
        bool, typer.Option("--no-highres", help="Do not inject the high-res map.")
    ] = False,
    no_refine_up: Annotated[
        bool,
        typer.Option("--no-refine-up", help="Plain head (×4 interpolation)."),
    ] = False,
    tile_size: Annotated[
        int,
        typer.Option(
            min=32,
            help="Tile size in pixels the model is built for (a multiple of 32).",
        ),
    ] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
) -> None:
    """Write a randomly initialised model file (untrained; for tests and export).

    The file carries a full spec, so it works with every other command; its maps are
    meaningless until it is trained.
    """
    import torch

    from alosmap._fileio import check_output_place
    from alosmap.arch import get_preset
    from alosmap.models import build_model
    from alosmap.spec import default_spec, save_model

    arch = get_preset(
        preset,
        img_size=tile_size,
        highres=not no_highres,
        refine_up=not no_refine_up,
    )
    spec = default_spec(
        task.value,
        arch,
        name=f"{preset}-{task.value}-untrained",
        provenance={"weights": "random initialisation (untrained)", "seed": str(seed)},
    )
    check_output_place(output)
    torch.manual_seed(seed)
    model = build_model(spec.arch).eval()
    out = save_model(model, spec, output, overwrite=overwrite)
    typer.echo(str(out))


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
        typer.Option("--output", "-o", file_okay=False, help="Dataset directory."),
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
            "scene, exclude (optional); relative paths are relative to the CSV.",
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
    from alosmap.train.images import ImageOptions

    _common.check_output_dir(output, create=False)
    image = ImageOptions(band, input_units.value, nodata)
    given = {
        "--manifest": manifest,
        "--images": images,
        "--labels": labels,
        "--label-pattern": label_pattern,
        "--image-pattern": image_pattern,
        "--label-nodata": label_nodata,
        "--label-band": label_band,
        "--split-file": split_file,
        "--stride": stride,
        "--exclude-scene": exclude_scene,
        "--allow-missing-classes": allow_missing_classes,
    }
    common = {
        "split": split,
        "patch_size": patch_size,
        "valid": _valid_rule(min_valid, max_nodata),
        "min_labelled": min_labelled,
        "seed": seed,
        "image": image,
        "overwrite": overwrite,
    }
    if manifest is None and labels is None:
        paper = {
            "anchors": anchors,
            "pretrain": pretrain_months,
            "finetune": finetune_months,
        }
        result = _build_paper(sar, lulc, output, legend, split_by, given, paper, common)
    else:
        if sar and images:
            raise _build_error("give the images with --images or --sar, not both")
        _refuse(
            "your own pairs (--manifest/--labels)",
            {
                "--lulc": lulc,
                "--anchors": anchors,
                "--pretrain-months": pretrain_months,
                "--finetune-months": finetune_months,
            },
        )
        own = {
            "manifest": manifest,
            "images": images or sar,
            "labels": labels,
            "pattern": label_pattern,
            "image_pattern": image_pattern,
            "legend": legend,
            "label_nodata": label_nodata,
            "label_band": label_band,
            "split_by": split_by,
            "split_file": split_file,
            "stride": stride,
            "exclude_scenes": tuple(exclude_scene or ()),
            "allow_missing_classes": allow_missing_classes,
        }
        result = _build_own(output, own, common)
    _common.info_line(result.summary_text.rstrip())
    typer.echo(str(result.path))


def _build_error(message: str) -> Exception:
    from alosmap.train.errors import DatasetBuildError

    return DatasetBuildError(message)


def _refuse(path: str, given: dict[str, Any]) -> None:
    """Refuse options of the other path (one line naming the first)."""
    for name, value in given.items():
        if value:
            raise _build_error(f"{name} does not apply to {path}")


def _valid_rule(
    min_valid: float | None, max_nodata: float | None
) -> tuple[float, float]:
    """``(min_valid, max_nodata)``: the one given and ``1 −`` it.

    Neither given: the default ``max_nodata`` and ``1 −`` it. Each is kept
    as given (the paper's path records ``max_nodata``).
    """
    if (
        min_valid is not None
        and max_nodata is not None
        and abs(min_valid - (1.0 - max_nodata)) > 1e-9
    ):
        raise _build_error(
            f"--min-valid {min_valid:g} and --max-nodata {max_nodata:g} disagree "
            "(--min-valid = 1 − --max-nodata); give one"
        )
    if min_valid is None:
        max_nodata = defaults.MAX_NODATA if max_nodata is None else max_nodata
        return 1.0 - max_nodata, max_nodata
    return min_valid, 1.0 - min_valid if max_nodata is None else max_nodata


def _build_paper(
    sar: list[Path] | None,
    lulc: Path | None,
    output: Path,
    legend: str | None,
    split_by: str | None,
    given: dict[str, Any],
    paper: dict[str, Any],
    common: dict[str, Any],
) -> Any:
    """The paper's path: ALOS-2 scenes, JAXA tiles, anchors, month split."""
    from alosmap.cli import _common
    from alosmap.train.build_dataset import build_dataset, scene_files

    if not sar or lulc is None:
        raise _build_error(
            "give --sar and --lulc (the paper's path: ALOS-2 scenes and JAXA tiles), "
            "or your own pairs with --manifest, or --images and --labels"
        )
    _refuse("the paper's path (--sar/--lulc)", given)
    if legend not in (None, "jaxa-lulc9", "jaxa-water"):
        raise _build_error(
            f"--legend {legend}: the paper's path (--lulc) stores JAXA codes, which "
            "serve jaxa-lulc9 and jaxa-water; for another legend list your pairs "
            "with --manifest or --images/--labels"
        )
    if split_by not in (None, "month"):
        raise _build_error(
            f"--split-by {split_by}: the paper's path splits by month "
            "(--pretrain-months/--finetune-months, then per patch); for scene or "
            "random splits list your pairs with --manifest or --images/--labels"
        )
    return build_dataset(
        scene_files(sar),
        lulc,
        output,
        _paper_config(paper, common),
        overwrite=common["overwrite"],
        progress=_common.show_progress(),
        image=common["image"],
    )


def _paper_config(paper: dict[str, Any], common: dict[str, Any]) -> Any:
    """The paper's ``BuildConfig`` from the options given.

    Options left out (or empty) are not passed: the dataclass's defaults fill them.
    """
    from alosmap.train.build_dataset import BuildConfig, parse_months
    from alosmap.train.splits import parse_split

    given: dict[str, Any] = {}
    if paper["anchors"]:
        given["anchors"] = paper["anchors"]
    for side in ("pretrain", "finetune"):
        if paper[side]:
            given[f"{side}_months"] = parse_months(paper[side], f"--{side}-months")
    if common["split"]:
        given["split"] = parse_split(common["split"])
    return BuildConfig(
        **given,
        patch_size=common["patch_size"],
        max_nodata=common["valid"][1],
        min_label_fraction=common["min_labelled"],
        seed=common["seed"],
    )


def _build_own(output: Path, own: dict[str, Any], common: dict[str, Any]) -> Any:
    """Your own (image, label) pairs and a legend."""
    from alosmap.cli import _common
    from alosmap.train.build_general import GeneralConfig, build_general
    from alosmap.train.label_values import UnknownLabelValuesError
    from alosmap.train.splits import parse_split

    pairs, inputs = _pairs(own)
    legend = _legend(own["legend"], own["label_nodata"])
    # NaN is always no label (and not JSON): only the integer values are recorded
    inputs["label_nodata"] = [
        int(v) for v in own["label_nodata"] or [] if float(v).is_integer()
    ]
    config = GeneralConfig(
        patch_size=common["patch_size"],
        stride=own["stride"],
        min_valid=common["valid"][0],
        min_labelled=common["min_labelled"],
        split=parse_split(common["split"]) if common["split"] else None,
        split_by=own["split_by"],
        split_file=str(own["split_file"]) if own["split_file"] else None,
        seed=common["seed"],
        label_band=own["label_band"],
        exclude_scenes=own["exclude_scenes"],
        allow_missing_classes=own["allow_missing_classes"],
    )
    try:
        return build_general(
            pairs,
            legend,
            output,
            config,
            image=common["image"],
            legend_source=str(own["legend"]),
            inputs=inputs,
            overwrite=common["overwrite"],
            progress=_common.show_progress(),
        )
    except UnknownLabelValuesError as exc:
        typer.echo(exc.table, err=True)  # the values found, above the error line
        raise


def _pairs(own: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The pairs of ``--manifest`` or ``--images`` + ``--labels``, and their record."""
    from alosmap.train.pairs import match_pairs, read_pairs_manifest

    if own["manifest"] is not None:
        if own["images"] or own["labels"] or own["pattern"] or own["image_pattern"]:
            raise _build_error(
                "give your pairs with --manifest or with --images and --labels, "
                "not both"
            )
        return read_pairs_manifest(own["manifest"]), {"manifest": str(own["manifest"])}
    if not own["images"]:
        raise _build_error("--labels needs the images: --images FILE_OR_DIR")
    pattern = own["pattern"] or "{name}"
    pairs = match_pairs(own["images"], own["labels"], pattern, own["image_pattern"])
    record = {"label_dir": str(own["labels"]), "label_pattern": pattern}
    if own["image_pattern"]:
        record["image_pattern"] = own["image_pattern"]
    return pairs, record


def _legend(name: str | None, label_nodata: list[float] | None) -> Any:
    """``--legend`` with the ``--label-nodata`` values ignored."""
    import math

    from alosmap.classes import LABEL_PRESETS, LegendError, load_legend

    if name is None:
        raise _build_error(
            "--legend is needed with --manifest/--labels: a preset "
            f"({', '.join(LABEL_PRESETS)}) or a YAML/JSON legend file "
            "(docs/dataset_format.md)"
        )
    extra = list(label_nodata or [])
    bad = [v for v in extra if not math.isnan(v) and not float(v).is_integer()]
    if bad:
        raise _build_error(
            f"--label-nodata {bad[0]:g}: label values are integers (NaN is always "
            "no label)"
        )
    try:
        legend = load_legend(name)
    except LegendError as exc:
        raise _build_error(f"--legend: {exc}") from exc
    try:
        return legend.with_ignore(v for v in extra if not math.isnan(v))
    except LegendError as exc:
        raise _build_error(f"--label-nodata: {exc}") from exc


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
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            metavar="FIGURE.png",
            help="Also draw, per class, the σ0 histogram of each scene (flagged "
            "scenes in red; needs pip install 'alosmap[plot]').",
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
    from alosmap.train.label_checks import check_dataset, plot_label_check

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


class Preset(str, Enum):
    """Architecture preset."""

    paper = "paper"
    small = "small"
    tiny = "tiny"


@app.command("pretrain")
def pretrain_cmd(
    data: Annotated[
        Path,
        typer.Option(
            file_okay=False,
            help="Dataset directory (from build-dataset) with a pretrain split.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help="Run directory: encoder.safetensors, last.pt, log.csv, "
            "reconstruction.png.",
        ),
    ],
    preset: Annotated[
        Preset,
        typer.Option(help="Encoder preset; finetune with the same --preset."),
    ] = Preset.paper,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the paper: 600).")] = 600,
    warmup_epochs: Annotated[
        int, typer.Option(min=0, help="Linear warm-up epochs (then cosine to 0).")
    ] = 40,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Patches per process (GPU), even (images are mixed in pairs); "
            "global batch = this × processes.",
        ),
    ] = 256,
    blr: Annotated[
        float,
        typer.Option(help="Base LR: lr = blr × global batch / 256 (MixMAE rule)."),
    ] = 1.5e-4,
    lr: LrOpt = None,
    min_lr: MinLrOpt = 0.0,
    weight_decay: WeightDecayOpt = 0.05,
    mask_ratio: Annotated[
        float,
        typer.Option(
            help="Share of each image's 32×32-pixel cells replaced by its partner's."
        ),
    ] = 0.5,
    sar_w: Annotated[
        bool,
        typer.Option(
            "--sar-w/--no-sar-w",
            help="Weight the reconstruction error by backscatter power (SAR-W); "
            "--no-sar-w gives plain MixMAE.",
        ),
    ] = True,
    sar_w_scale: Annotated[
        float,
        typer.Option(help="SAR-W exponent scale s: w = exp(s·(1 − min-max power))."),
    ] = 1.0,
    norm_pix: Annotated[
        bool,
        typer.Option(
            "--norm-pix/--no-norm-pix",
            help="Normalise each 32×32 target patch by its own mean and std.",
        ),
    ] = True,
    decoder_dim: Annotated[
        int | None,
        typer.Option(
            min=4, help="Decoder width (default: 512 paper, 128 small, 32 tiny)."
        ),
    ] = None,
    decoder_depth: Annotated[
        int | None,
        typer.Option(min=1, help="Decoder blocks (default: 8 paper, 2 small, 1 tiny)."),
    ] = None,
    decoder_heads: Annotated[
        int | None,
        typer.Option(min=1, help="Decoder heads (default: 16 paper, 4 small, 2 tiny)."),
    ] = None,
    augment: AugmentOpt = True,
    workers: WorkersOpt = None,
    device: TrainDeviceOpt = "auto",
    amp: AmpOpt = True,
    seed: Annotated[
        int,
        typer.Option(help="Seed of initialisation, shuffling, augmentation, masks."),
    ] = 0,
    resume: ResumeOpt = True,
    stop_after: StopAfterOpt = None,
) -> None:
    """Pretrain the Swin encoder with SAR-W-MixMAE on the unlabelled pretrain split.

    MixMAE: pairs of patches are mixed with complementary masks on 32×32-pixel
    cells, attention is kept inside each source image in every window of every
    stage, and a decoder un-mixes and reconstructs both patches (per-patch
    normalised targets). SAR-W: the squared error is weighted per pixel by
    exp(1 − min-max normalised linear σ0), so dark pixels (water) weigh most.
    AdamW (betas 0.9/0.95), warm-up then cosine to --min-lr, AMP on CUDA. After
    every epoch OUTPUT/encoder.safetensors is what `alosmap train finetune
    --pretrained` takes (same --preset). Runs under `torchrun --nproc_per_node N -m
    alosmap train pretrain ...` for DDP. Prints the encoder path.
    """
    from alosmap.cli import _common
    from alosmap.train.pretrain import pretrain

    _check_run_dir(output, data)
    result = pretrain(
        data,
        output,
        log=_common.info_line,
        preset=preset.value,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        batch_size=batch_size,
        blr=blr,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        mask_ratio=mask_ratio,
        sar_w=sar_w,
        sar_w_scale=sar_w_scale,
        norm_pix=norm_pix,
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_heads=decoder_heads,
        progress=_common.show_progress(),
        **_run_options(augment, workers, device, amp, seed, resume, stop_after),
    )
    _echo_primary(result.encoder_path)


class Freeze(str, Enum):
    """What `finetune --freeze` keeps fixed."""

    none = "none"
    encoder = "encoder"
    encoder_decoder = "encoder+decoder"


class Normalization(str, Enum):
    """Whose mean/std `finetune --normalization` trains with."""

    model = "model"
    data = "data"


@app.command("finetune")
def finetune_cmd(
    data: Annotated[
        Path,
        typer.Option(file_okay=False, help="Dataset directory (from build-dataset)."),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help="Run directory: model.safetensors (best epoch), last.pt, log.csv, "
            "val_curve.png.",
        ),
    ],
    task: Annotated[
        Task | None,
        typer.Option(
            help="lulc or water: the labels to train on a dataset of JAXA codes. "
            "Leave out for a dataset with its own legend (it names the task)."
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            parser=input_file("model", virtual=False, kind="model"),
            metavar="MODEL",
            help="Start from a complete trained model (.safetensors: a bundled model "
            "such as alosmap/weights/water.safetensors, or an earlier run's): "
            "encoder, decoder and head, in its architecture. It is evaluated and "
            "saved as epoch 0; an epoch replaces it only with a gain on val beyond "
            "the noise. Transfer defaults: "
            f"{defaults.INIT_EPOCHS} epochs, LR {defaults.INIT_LR:g}, "
            f"{defaults.INIT_WARMUP} warm-up epoch, --patience "
            f"{defaults.INIT_PATIENCE}.",
        ),
    ] = None,
    reinit_head: Annotated[
        bool,
        typer.Option(
            "--reinit-head",
            help="With --init-from: a new head for the dataset's legend (when it "
            "differs from the model's).",
        ),
    ] = False,
    normalization: Annotated[
        Normalization | None,
        typer.Option(
            help="Whose σ0 mean/std to train with and store: model (the --init-from "
            "model's; its default) or data (the dataset's; the default otherwise)."
        ),
    ] = None,
    freeze: Annotated[
        Freeze,
        typer.Option(
            help="Keep parts fixed (no gradient, BatchNorm statistics kept): none, "
            "encoder or encoder+decoder (needs --init-from; encoder: or --pretrained)."
        ),
    ] = Freeze.none,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Encoder checkpoint: an alosmap encoder .safetensors (from "
            "pretraining) or a MixMIM/SAR-W-MixMAE .pth. Default: random init.",
        ),
    ] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Architecture preset: small (default, CPU-friendly), tiny, or paper "
            "(the paper's Swin-B + UPerNet). With --init-from: the model's own."
        ),
    ] = None,
    no_highres: Annotated[
        bool, typer.Option("--no-highres", help="Do not inject the high-res map.")
    ] = False,
    no_refine_up: Annotated[
        bool, typer.Option("--no-refine-up", help="Plain head (×4 interpolation).")
    ] = False,
    alpha_scale: Annotated[
        float, typer.Option(help="α-scale of the focal class weights (multi-class).")
    ] = 2.25,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Epochs (default, the paper's: 200 for lulc, 100 for water; other "
            f"legends 100 binary, 200 multi-class; {defaults.INIT_EPOCHS} with "
            "--init-from).",
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Stop when the kept model (the best on val, changed only by a gain "
            "beyond the noise) has not changed for N epochs; 0: never (default: "
            f"{defaults.INIT_PATIENCE} with --init-from, else 0).",
        ),
    ] = None,
    warmup_epochs: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Linear warm-up epochs, then cosine (default: the paper's 10, 1 with "
            "--init-from; at most half the epochs).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Patches per process (GPU); global batch = this × processes. "
            "Lowered, with a note, to the training patches (the paper: 64).",
        ),
    ] = 8,
    lr: LrOpt = None,
    blr: Annotated[
        float,
        typer.Option(
            help="Base LR: lr = blr × global batch / 256 (MixMIM rule; 1.2e-3 at the "
            "paper's global batch 512)."
        ),
    ] = 6e-4,
    layer_decay: Annotated[
        float, typer.Option(help="Layer-wise LR decay over the Swin blocks.")
    ] = 0.7,
    min_lr: MinLrOpt = 1e-6,
    weight_decay: WeightDecayOpt = 0.05,
    drop_path: Annotated[
        float, typer.Option(help="Stochastic depth rate while training.")
    ] = 0.1,
    dropout: Annotated[
        float, typer.Option(help="Dropout before the classifier while training.")
    ] = 0.1,
    save_last: Annotated[
        bool,
        typer.Option(
            "--save-last",
            help="Also save the latest epoch as OUTPUT/last.safetensors (the final "
            "one when the run ends), besides the best.",
        ),
    ] = False,
    save_every: Annotated[
        int | None,
        typer.Option(
            min=1, help="Also save OUTPUT/epoch_NNN.safetensors every N epochs."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads of torch (default: torch's choice)."),
    ] = None,
    augment: AugmentOpt = True,
    workers: WorkersOpt = None,
    device: TrainDeviceOpt = "auto",
    amp: AmpOpt = True,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation, shuffling, augmentation.")
    ] = 0,
    resume: ResumeOpt = True,
    stop_after: StopAfterOpt = None,
) -> None:
    """Finetune the segmentation model (paper Section III-B) on a dataset.

    AdamW with layer-wise LR decay, linear warm-up then cosine to --min-lr (per
    iteration), focal+dice (multi-class, class weights from the training split) or
    BCE+dice (binary legends such as water), flips/rot90 augmentation, AMP on CUDA.
    The best epoch by validation mIoU (IoU_water for binary legends) is saved as
    OUTPUT/model.safetensors, ready for `alosmap predict`; its spec carries the
    dataset's legend and the radiometry trained on. Prints the model path.

    Defaults fit a laptop CPU (preset small, batch 8, torch's threads). The paper's
    settings: --preset paper --batch-size 64 (per GPU, 8 GPUs under `torchrun
    --nproc_per_node 8 -m alosmap train finetune ...`).

    Validation knows its noise: per-scene scores, a bootstrap interval over the val
    scenes (their patches with fewer than 3 scenes) and val_loss are logged; an
    epoch replaces the kept model only when its paired gain is above 0 in 95 % of
    the resamples. The last line names the kept epoch, its score and interval, the
    starting model's score and why the run ended (on stderr; stdout: the model).

    Transfer: --init-from MODEL starts from a trained model with its own defaults
    (fewer epochs, an absolute LR unless --lr/--blr is given, 1 warm-up epoch, early
    stopping: values under --init-from; its normalisation; epoch 0 = the model as
    it was); --freeze encoder trains only decoder and head.
    """
    from alosmap.cli import _common
    from alosmap.train.finetune import finetune

    _check_run_dir(output, data, pretrained, init_from)
    result = finetune(
        data,
        task.value if task is not None else None,
        output,
        log=_common.info_line,
        pretrained=pretrained,
        init_from=init_from,
        reinit_head=reinit_head,
        normalization=normalization.value if normalization is not None else None,
        freeze=freeze.value,
        preset=preset.value if preset is not None else None,
        highres=False if no_highres else None,
        refine_up=False if no_refine_up else None,
        alpha_scale=alpha_scale,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        blr=blr,
        layer_decay=layer_decay,
        min_lr=min_lr,
        weight_decay=weight_decay,
        drop_path=drop_path,
        dropout=dropout,
        save_last=save_last,
        save_every=save_every,
        threads=threads,
        **_run_options(augment, workers, device, amp, seed, resume, stop_after),
    )
    _echo_primary(result.model_path)


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[
        Path,
        typer.Option(
            parser=input_file("model", virtual=False, kind="model"),
            metavar="FILE",
            help="Model file (.safetensors).",
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(file_okay=False, help="Dataset directory (from build-dataset)."),
    ],
    split: Annotated[
        str, typer.Option(help="Split to evaluate: test, val or train.")
    ] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per batch.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help="Also write report.json and confusion_matrix.png here.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
) -> None:
    """Evaluate a model on a dataset split in the paper's table layout.

    LULC and other multi-class legends: per-class IoU and accuracy, mIoU and mAcc
    (Table II); water and other binary legends: IoU_water, precision and recall
    (Table III), in percent. The model's spec sets the legend (the dataset's labels
    must follow it) and the input normalisation (the statistics the model was
    trained with).
    """
    import json

    from alosmap._fileio import check_not_input, remove_stale_temps
    from alosmap.cli._common import check_output_dir
    from alosmap.train.evaluate import evaluate_file, format_table, write_report

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(
            f"{split!r}; use test, val or train", param_hint="--split"
        )
    if output is not None:
        check_output_dir(output, create=True)
        outputs = [output / "report.json", output / "confusion_matrix.png"]
        check_not_input(outputs, [model])
        remove_stale_temps(*outputs)
    report = evaluate_file(model, data, split, batch_size=batch_size, device=device)
    if output is not None:
        write_report(report, output)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        typer.echo(format_table(report))


@app.command("adapt")
def adapt_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            parser=input_file("model", virtual=False, kind="model"),
            metavar="MODEL",
            help="The model to adapt (.safetensors); it is not changed.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", dir_okay=False, help="The adapted model file to write."
        ),
    ],
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--images",
            metavar="SCENE",
            help="Representative scenes of the new sensor, season or region, "
            "without labels (--images A.tif B.tif ..., or repeated).",
        ),
    ] = None,
    more: Annotated[
        list[str] | None,
        typer.Argument(metavar="[SCENE]...", help="More scenes.", show_default=False),
    ] = None,
    band: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Band of the scenes to use (multi-band files): the one the model "
            "was trained on, e.g. HH for ALOS-2, VV or VH for Sentinel-1.",
        ),
    ] = None,
    input_units: UnitsOpt = Units.auto,
    max_tiles: Annotated[
        int,
        typer.Option(
            min=2, help="Most tiles (drawn at random) for the BatchNorm statistics."
        ),
    ] = 256,
    batch_size: Annotated[
        int, typer.Option(min=2, help="Tiles per forward pass (at least 2).")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the tile draw and order.")] = 0,
    no_bn: Annotated[
        bool,
        typer.Option("--no-bn", help="Keep the BatchNorm statistics (normalise only)."),
    ] = False,
    no_norm: Annotated[
        bool,
        typer.Option(
            "--no-norm", help="Keep the input mean/std (BatchNorm statistics only)."
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Adapt a model to new scenes without labels (sensor, season or region).

    Re-estimates the input normalisation (mean/std of σ0 dB, clipped like model
    input, over the valid pixels of the scenes) and the BatchNorm statistics of the
    network (forward passes over up to --max-tiles tiles of the scenes; no labels,
    no weight updates), and writes a new model file whose spec records the new
    radiometry and the provenance. Reports the input statistics before (the
    model's) and after, and warns when they differ much. Prints the path of the
    adapted model.

    Adapt or finetune? Adapt corrects shifted inputs (another sensor's
    calibration, season or region) given representative unlabelled scenes whose
    mix of classes is like the training data's. Do not adapt on the scenes to be
    mapped when their mix differs (e.g. flood scenes, 25 % water): the statistics
    then shift with the classes and the adapted model misses the change. With
    labelled patches, or when classes look different (another band or legend),
    use 'alosmap train finetune --init-from MODEL'.
    """
    from alosmap.cli import _common
    from alosmap.train.adapt import AdaptOptions, adapt

    scenes = [*(images or []), *(more or [])]
    if not scenes:
        raise typer.BadParameter("give the scenes to adapt to", param_hint="--images")
    opts = AdaptOptions(
        band=band,
        input_units=input_units.value,
        max_tiles=max_tiles,
        batch_size=batch_size,
        seed=seed,
        normalization=not no_norm,
        batchnorm=not no_bn,
        device=device,
    )
    result = adapt(
        model,
        [Path(s) for s in scenes],
        output,
        options=opts,
        overwrite=overwrite,
        log=_common.info_line,
    )
    typer.echo(str(result.path))
