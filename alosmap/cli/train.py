"""``alosmap train``: build datasets, pretrain, finetune and evaluate models."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap.cli.options import Task, input_file

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
        min=0, help="Data-loading workers per process (default: min(4, CPUs))."
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

    ``workers`` defaults to min(4, CPUs).
    """
    return {
        "augment": augment,
        "workers": workers if workers is not None else min(4, os.cpu_count() or 1),
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
    "reconstruction.png",
    "val_curve.png",
)


def _check_run_dir(output: Path, data: Path, pretrained: Path | None = None) -> None:
    """Check the run directory before any work: writable, and no input replaced.

    Temporaries a killed run left beside the run's files are removed.

    Raises:
        OutputPathError: the directory cannot be made or written, it is the dataset
            directory, or a file the run writes is ``pretrained`` (whatever
            ``--resume`` says).
    """
    from alosmap._fileio import check_not_input, remove_stale_temps
    from alosmap.cli._common import check_output_dir

    check_output_dir(output, create=True)
    check_not_input([output], [data])
    files = [output / name for name in RUN_FILES]
    if pretrained is not None:
        check_not_input(files, [pretrained])
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

    arch = get_preset(preset, highres=not no_highres, refine_up=not no_refine_up)
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


@app.command("build-dataset")
def build_dataset_cmd(
    sar: Annotated[
        list[Path],
        typer.Option(
            "--sar",
            metavar="<path>",
            help="ALOS-2 HH scene, or a directory of them (its *.tif except LC_*); "
            "repeat for more.",
        ),
    ],
    lulc: Annotated[
        Path,
        typer.Option(help="Directory of JAXA HRLULC label tiles (LC_*.tif)."),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", file_okay=False, help="Dataset directory."),
    ],
    anchors: Annotated[
        int, typer.Option(min=1, help="Anchor points drawn (the paper: 1,000,000).")
    ] = 1_000_000,
    pretrain_months: Annotated[
        str, typer.Option(help="Months whose scenes give pretraining patches.")
    ] = "10,11",
    finetune_months: Annotated[
        str, typer.Option(help="Months whose scenes give train/val/test patches.")
    ] = "9",
    split: Annotated[
        str, typer.Option(help="Train/val/test fractions of the finetuning patches.")
    ] = "0.7/0.15/0.15",
    patch_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 256,
    max_nodata: Annotated[
        float,
        typer.Option(help="Drop patches with a larger fraction of SAR no-data."),
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of anchors and splits.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset.")
    ] = False,
) -> None:
    """Build a training dataset by label-guided sampling (paper Section III-A).

    Anchors are drawn from the label tiles with probability ∝ 1/frequency of their
    class; non-overlapping patches of each scene that hold an anchor are kept
    (unless mostly no data) with their nearest-resampled label patch. Scenes of the
    pretraining months give the pretrain split, those of the finetuning months
    train/val/test (per patch). Prints the dataset path; the summary goes to stderr
    and summary.txt.
    """
    from alosmap.cli import _common
    from alosmap.train.build_dataset import (
        BuildConfig,
        build_dataset,
        parse_months,
        parse_split,
        scene_files,
    )

    _common.check_output_dir(output, create=False)
    config = BuildConfig(
        anchors=anchors,
        pretrain_months=parse_months(pretrain_months, "--pretrain-months"),
        finetune_months=parse_months(finetune_months, "--finetune-months"),
        split=parse_split(split),
        patch_size=patch_size,
        max_nodata=max_nodata,
        seed=seed,
    )
    result = build_dataset(
        scene_files(sar),
        lulc,
        output,
        config,
        overwrite=overwrite,
        progress=_common.show_progress(),
    )
    _common.info_line(result.summary_text.rstrip())
    typer.echo(str(result.path))


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


@app.command("finetune")
def finetune_cmd(
    data: Annotated[
        Path,
        typer.Option(file_okay=False, help="Dataset directory (from build-dataset)."),
    ],
    task: Annotated[Task, typer.Option(help="lulc (9 classes) or water.")],
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
    pretrained: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Encoder checkpoint: an alosmap encoder .safetensors (from "
            "pretraining) or a MixMIM/SAR-W-MixMAE .pth. Default: random init.",
        ),
    ] = None,
    preset: Annotated[
        Preset, typer.Option(help="Architecture preset (paper = Swin-B + UPerNet).")
    ] = Preset.paper,
    no_highres: Annotated[
        bool, typer.Option("--no-highres", help="Do not inject the high-res map.")
    ] = False,
    no_refine_up: Annotated[
        bool, typer.Option("--no-refine-up", help="Plain head (×4 interpolation).")
    ] = False,
    alpha_scale: Annotated[
        float, typer.Option(help="α-scale of the focal class weights (LULC).")
    ] = 2.25,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Epochs (default: 200 for lulc, 100 for water)."),
    ] = None,
    warmup_epochs: Annotated[
        int, typer.Option(min=0, help="Linear warm-up epochs (then cosine).")
    ] = 10,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Patches per process (GPU); global batch = this × processes.",
        ),
    ] = 64,
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
    iteration), focal+dice (LULC, class weights from the training split) or
    BCE+dice (water), flips/rot90 augmentation, AMP on CUDA. The best epoch by
    validation mIoU (IoU_water for water) is saved as OUTPUT/model.safetensors,
    ready for `alosmap predict`. Runs under `torchrun --nproc_per_node N -m alosmap
    train finetune ...` for DDP. Prints the model path.
    """
    from alosmap.cli import _common
    from alosmap.train.finetune import finetune

    _check_run_dir(output, data, pretrained)
    result = finetune(
        data,
        task.value,
        output,
        log=_common.info_line,
        pretrained=pretrained,
        preset=preset.value,
        highres=not no_highres,
        refine_up=not no_refine_up,
        alpha_scale=alpha_scale,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        batch_size=batch_size,
        lr=lr,
        blr=blr,
        layer_decay=layer_decay,
        min_lr=min_lr,
        weight_decay=weight_decay,
        drop_path=drop_path,
        dropout=dropout,
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

    LULC: per-class IoU and accuracy, mIoU and mAcc (Table II); water: IoU_water,
    precision and recall (Table III), in percent. The model's spec sets the task and
    the input normalisation (the statistics the model was trained with).
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
