"""``alosmap train pretrain`` and ``alosmap train finetune``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from alosmap.cli.options import Task, input_file, output_option
from alosmap.cli.train import app
from alosmap.cli.train._options import (
    DataOpt,
    LrOpt,
    MinLrOpt,
    NoHighresOpt,
    NoRefineUpOpt,
    Preset,
    WeightDecayOpt,
    check_run_dir,
    echo_primary,
    with_run_options,
)
from alosmap.train import defaults


@app.command("pretrain")
@with_run_options("Seed of initialisation, shuffling, augmentation, masks.")
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
        output_option(
            "Run directory: encoder.safetensors, last.pt, log.csv, reconstruction.png.",
            directory=True,
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
    *,
    run: Any,
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

    check_run_dir(output, data)
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
        **run.options(),
    )
    echo_primary(result.encoder_path)


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
@with_run_options("Seed of initialisation, shuffling, augmentation.")
def finetune_cmd(
    data: DataOpt,
    output: Annotated[
        Path,
        output_option(
            "Run directory: model.safetensors (best epoch), last.pt, log.csv, "
            "val_curve.png.",
            directory=True,
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
            "pretraining, at any patch size: window biases are resized as with "
            "--init-from) or a MixMIM/SAR-W-MixMAE .pth. Default: random init.",
        ),
    ] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Architecture preset: small (default, CPU-friendly), tiny, or paper "
            "(the paper's Swin-B + UPerNet). With --init-from: the model's own."
        ),
    ] = None,
    no_highres: NoHighresOpt = False,
    no_refine_up: NoRefineUpOpt = False,
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
    *,
    run: Any,
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

    check_run_dir(output, data, pretrained, init_from)
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
        **run.options(),
    )
    echo_primary(result.model_path)
