"""``alosmap train pretrain``: SAR-W-MixMAE self-supervised pretraining.

Trains :class:`~alosmap.train.mixmae.MixMAE` (the finetuning encoder plus MixMAE's
un-mixing decoder) on the ``pretrain`` split of a dataset (the pretraining months of
``build-dataset``), one process per device, DDP when launched by torchrun.

Defaults follow the paper (Section III-B) and SAR-W-MixMAE: AdamW, weight decay
0.05, betas (0.9, 0.95), base LR 1.5e-4 scaled by ``global_batch / 256``, 40 warm-up
epochs then a cosine to 0 (both per iteration), mask ratio 0.5, normalised pixel
targets, SAR-W weights with ``exp_scale`` 1, 600 epochs, batch 256 per GPU. Drop
path is 0, as in MixMIM's pretraining.

Per epoch: shuffle the ``pretrain`` split (:class:`~torch.utils.data.DistributedSampler`
under DDP), flip/rot90 each patch and its σ0 dB jointly, draw one mask per pair from
this rank's own generator, take an AdamW step per batch (AMP on CUDA); then on rank
0: append ``log.csv`` (loss, unweighted MSE, LR, seconds), TensorBoard scalars,
redraw ``reconstruction.png`` (a few fixed patches, their mixes and reconstructions),
write ``encoder.safetensors`` (the encoder in the layout ``finetune --pretrained``
loads, every key matched) and ``last.pt`` for an exact resume (model, optimiser,
scaler, per-rank RNG states including the mask generators), all atomically and
``last.pt`` last.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from alosmap._dist import DistInfo
from alosmap._fileio import atomic_write_bytes
from alosmap.arch import ArchConfig, get_preset
from alosmap.train import defaults, mixmae
from alosmap.train.checkpoint import save_encoder
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.engine import Log, TrainingRun
from alosmap.train.errors import DatasetFormatError, TrainingError
from alosmap.train.mixmae import DECODER_PRESETS, DecoderConfig, MixMAE

__all__ = [
    "RESUME_KIND",
    "PretrainConfig",
    "PretrainResult",
    "PretrainRun",
    "build_pretrain_model",
    "mask_generator",
    "pretrain",
    "run_pretrain",
]

#: ``kind`` of a pretraining resume checkpoint.
RESUME_KIND = "alosmap-pretrain"

#: Options that must not change between a run and its resume.
_RESUME_KEYS = (
    "data",
    "preset",
    "decoder_dim",
    "decoder_depth",
    "decoder_heads",
    "epochs",
    "warmup_epochs",
    "blr",
    "lr",
    "min_lr",
    "weight_decay",
    "mask_ratio",
    "norm_pix",
    "sar_w",
    "sar_w_scale",
    "seed",
    "augment",
    "global_batch",
)

#: Patches shown in ``reconstruction.png``.
_VIS_PATCHES = 4


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs (see ``alosmap train pretrain --help``).

    Attributes:
        data: dataset directory (a ``pretrain`` split is required).
        out_dir: run directory (``encoder.safetensors``, ``last.pt``, ``log.csv``,
            ``reconstruction.png``, ``tb/``).
        preset: architecture preset of the encoder (the one finetuning will use).
        decoder_dim: decoder width (None: the preset's, see
            :data:`~alosmap.train.mixmae.DECODER_PRESETS`).
        decoder_depth: decoder blocks (None: the preset's).
        decoder_heads: decoder heads (None: the preset's).
        epochs: total epochs.
        warmup_epochs: linear warm-up epochs.
        batch_size: patches per process and step (even: images are mixed in pairs).
        blr: base LR per 256 samples of global batch.
        lr: absolute LR (overrides ``blr``), or None.
        min_lr: LR at the end of the cosine.
        weight_decay: AdamW weight decay.
        mask_ratio: share of each image's 32×32 cells hidden (given to its partner).
        norm_pix: per-patch normalised targets.
        sar_w: SAR-W backscatter weighting of the loss (off: plain MixMAE).
        sar_w_scale: the weighting's exponent scale (1: weights in [1, e]).
        augment: random flips/rot90 of the patches (and their weights).
        workers: DataLoader workers per process (default: min(4, the CPUs it
            may use), :func:`~alosmap.train.defaults.data_workers`).
        device: ``auto``, ``cpu``, ``cuda``.
        amp: mixed precision on CUDA.
        seed: seed of initialisation, shuffling, augmentation and masks.
        resume: continue from ``out_dir/last.pt`` when it exists.
        stop_after: stop after this many epochs in this invocation (resume later).
        progress: draw a progress bar per epoch (rank 0, stderr).
    """

    data: Path
    out_dir: Path
    preset: str = "paper"
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    epochs: int = 600
    warmup_epochs: int = 40
    batch_size: int = 256
    blr: float = 1.5e-4
    lr: float | None = None
    min_lr: float = 0.0
    weight_decay: float = 0.05
    mask_ratio: float = 0.5
    norm_pix: bool = True
    sar_w: bool = True
    sar_w_scale: float = 1.0
    augment: bool = True
    workers: int = field(default_factory=defaults.data_workers)
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = True
    stop_after: int | None = None
    progress: bool = False

    def decoder(self) -> DecoderConfig:
        """The decoder size: the preset's, with any override applied."""
        base = DECODER_PRESETS.get(self.preset, DECODER_PRESETS["paper"])
        return DecoderConfig(
            dim=self.decoder_dim or base.dim,
            depth=self.decoder_depth or base.depth,
            heads=self.decoder_heads or base.heads,
            mlp_ratio=base.mlp_ratio,
        )


@dataclass
class PretrainResult:
    """Outcome of :func:`run_pretrain` (meaningful on rank 0).

    Attributes:
        encoder_path: the encoder file (``finetune --pretrained`` takes it).
        epochs_done: epochs completed so far (all invocations).
        finished: True when every configured epoch has run.
        last_loss: training loss of the last epoch (NaN if none ran).
    """

    encoder_path: Path
    epochs_done: int
    finished: bool
    last_loss: float


def build_pretrain_model(arch: ArchConfig, decoder: DecoderConfig) -> MixMAE:
    """The MixMAE model for ``arch``, checking the decoder size.

    Raises:
        TrainingError: a decoder width not divisible by 4 or by its heads.
    """
    if decoder.dim < 4 or decoder.dim % 4 or decoder.dim % decoder.heads:
        raise TrainingError(
            f"--decoder-dim {decoder.dim}: needs a multiple of 4 (sin-cos position "
            f"table) divisible by --decoder-heads {decoder.heads}"
        )
    if decoder.depth < 1:
        raise TrainingError("--decoder-depth: need at least one block")
    return MixMAE(arch, decoder)


def mask_generator(seed: int, rank: int) -> torch.Generator:
    """The mask generator of ``rank`` (independent of every other random stream)."""
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + rank)


def _check(data: TrainingData, cfg: PretrainConfig, world: int) -> int:
    """Validate data and options; return the number of pretraining patches."""
    n = len(data.indices("pretrain"))
    if n == 0:
        counts = ", ".join(
            f"{s} {len(data.indices(s))}" for s in ("train", "val", "test")
        )
        raise DatasetFormatError(
            f"{data.root}: no 'pretrain' patches ({counts}); build the dataset with "
            "scenes of the --pretrain-months (default 10,11) to pretrain on"
        )
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        b = cfg.batch_size
        fix = "2" if b < 2 else f"{b - 1} or {b + 1}"
        raise TrainingError(
            f"--batch-size {b} is odd: MixMAE mixes the images of a batch in pairs, "
            f"so it must be even; use {fix}"
        )
    if cfg.batch_size * world > n:
        fit = max(2, (n // world) // 2 * 2)
        raise TrainingError(
            f"--batch-size {cfg.batch_size} × {world} process(es) is larger than the "
            f"{n} pretraining patches; use --batch-size {fit} or less"
        )
    if not 0.0 < cfg.mask_ratio < 1.0:
        raise TrainingError(
            f"--mask-ratio {cfg.mask_ratio}: expected a value in (0, 1)"
        )
    return n


def plot_reconstructions(
    path: Path,
    images: torch.Tensor,
    mask: torch.Tensor,
    pred: torch.Tensor,
    weights: torch.Tensor | None,
    valid: torch.Tensor,
    *,
    patch: int,
    norm_pix: bool,
    title: str,
) -> None:
    """Inputs, their mixes, reconstructions and SAR-W weights, one row per patch.

    With normalised targets the predicted patches are shown de-normalised with the
    true patch's mean and standard deviation (MAE's convention), so the panel shows
    the structure the model recovered, on the input's scale.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = (images.shape[-2], images.shape[-1])
    rec = pred.float()
    if norm_pix:
        _, mean, scale = mixmae.normalize_patches(
            mixmae.patchify(images, patch), mixmae.patchify(valid, patch)
        )
        rec = rec * scale + mean
    rec = mixmae.unpatchify(rec, patch, size)
    mixed = mixmae.mix_images(images, mask)
    cols = [("input (normalised σ0)", images), ("mixed with partner", mixed)]
    cols.append(("reconstruction (un-mixed)", rec))
    if weights is not None:
        cols.append(("SAR-W weight", weights))
    n = images.shape[0]
    fig = Figure(figsize=(2.4 * len(cols), 2.4 * n + 0.5), dpi=80)
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    for i in range(n):
        ref = images[i, 0][valid[i, 0] > 0]
        lo, hi = (
            (float(ref.quantile(0.02)), float(ref.quantile(0.98)))
            if ref.numel()
            else (-1.0, 1.0)
        )
        for j, (name, arr) in enumerate(cols):
            ax = fig.add_subplot(n, len(cols), i * len(cols) + j + 1)
            a = arr[i, 0].float().cpu().numpy()
            if name.startswith("SAR-W"):
                ax.imshow(a, cmap="magma", vmin=0.0, vmax=math.e)
            else:
                ax.imshow(a, cmap="gray", vmin=lo, vmax=hi)
            if i == 0:
                ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


class PretrainRun(TrainingRun[PretrainConfig, PretrainResult]):
    """One pretraining process (see :func:`pretrain`).

    AdamW with betas (0.9, 0.95) and no layer-wise decay; no weight decay on norms,
    biases, relative position tables and the mask token
    (:func:`~alosmap.train.optim.no_weight_decay`).
    """

    kind = RESUME_KIND
    product = "encoder.safetensors"
    resume_keys = _RESUME_KEYS
    betas = (0.9, 0.95)

    def __init__(self, cfg: PretrainConfig, info: DistInfo, log: Log) -> None:
        super().__init__(cfg, info, log)
        self.arch = get_preset(cfg.preset, img_size=self.data.patch_size)
        self.clip_db = self.data.clip_db  # as the dataset was normalised

    @property
    def mae(self) -> MixMAE:
        """The model (not its DDP wrapper)."""
        return cast(MixMAE, self.model)

    # -- setup -----------------------------------------------------------------------
    def check_data(self) -> None:
        """A ``pretrain`` split, an even batch that fits, a valid mask ratio."""
        self.n_patches = _check(self.data, self.cfg, self.info.world_size)

    def create_model(self, fresh: bool) -> nn.Module:
        """Encoder and un-mixing decoder (:func:`build_pretrain_model`)."""
        return build_pretrain_model(self.arch, self.cfg.decoder())

    def prepare(self) -> None:
        """This rank's mask generator."""
        self.mask_gen = mask_generator(self.cfg.seed, self.info.rank)

    def train_dataset(self) -> PatchDataset:
        """The ``pretrain`` split with σ0 dB for the SAR-W weights."""
        cfg = self.cfg
        return PatchDataset(
            self.data,
            "pretrain",
            augment=cfg.augment,
            return_db=True,
            seed=cfg.seed,
        )

    def resume_fields(self) -> dict[str, Any]:
        """The options, with the decoder size resolved from the preset."""
        d = super().resume_fields()
        dec = self.cfg.decoder()
        d.update(decoder_dim=dec.dim, decoder_depth=dec.depth, decoder_heads=dec.heads)
        return d

    def rng_state(self) -> dict[str, Any]:
        """The random states and the mask generator's."""
        state = super().rng_state()
        state["mask"] = self.mask_gen.get_state()
        return state

    def checkpoint_state(self) -> dict[str, Any]:
        """The architecture, then progress."""
        return {"arch": self.arch.to_dict(), **super().checkpoint_state()}

    def restore_state(self, ckpt: dict[str, Any], rng: dict[str, Any]) -> None:
        """The mask generator's state."""
        self.mask_gen.set_state(rng["mask"])

    def on_start(self) -> None:
        """Say what a fresh run does."""
        if not self.resumed:
            self.log(
                f"pretraining {self.cfg.preset} encoder ({self.arch.img_size} px) on "
                f"{self.n_patches} patches: {self.iters} steps/epoch, global batch "
                f"{self.global_batch}, lr {self.base_lr:.3g}"
            )

    # -- one epoch -------------------------------------------------------------------
    def _batch(
        self, x: torch.Tensor, db: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Inputs, SAR-W weights (or None) and validity, on the device."""
        x = x.to(self.device, non_blocking=True)
        db = db.to(self.device, non_blocking=True)
        valid = torch.isfinite(db).float()
        w = None
        if self.cfg.sar_w:
            w = mixmae.sar_w_weights(
                db, scale=self.cfg.sar_w_scale, clip_db=self.clip_db
            )
        return x, w, valid

    def _loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        mask: torch.Tensor,
        w: torch.Tensor | None,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prediction of ``model`` on the mixed pairs, loss and unweighted MSE."""
        with self.autocast():
            pred = model(x, mask)
        loss, mse = mixmae.reconstruction_loss(
            pred,
            x,
            patch=self.mae.patch,
            weight=w,
            valid=valid,
            norm_pix=self.cfg.norm_pix,
        )
        return pred, loss, mse

    def training_step(
        self, batch: Any
    ) -> tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """Mix pairs with fresh masks, reconstruct; logs loss and MSE."""
        x, _y, db = batch
        x, w, valid = self._batch(x, db)
        mask = mixmae.random_pair_masks(
            x.shape[0], self.mae.grid, self.cfg.mask_ratio, generator=self.mask_gen
        ).to(self.device)
        _, loss, mse = self._loss(self.ddp_model, x, mask, w, valid)
        return loss, {"loss": loss.detach(), "mse": mse}

    # -- bookkeeping (rank 0) --------------------------------------------------------
    @torch.no_grad()
    def draw(self) -> None:
        """Redraw ``reconstruction.png`` on fixed patches with a fixed mask."""
        n = min(_VIS_PATCHES, self.n_patches) // 2 * 2
        ds = PatchDataset(self.data, "pretrain", return_db=True)
        items = [ds[i] for i in range(n)]
        x = torch.stack([it[0] for it in items])
        db = torch.stack([it[2] for it in items])
        x, w, valid = self._batch(x, db)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        mask = mixmae.random_pair_masks(
            n, self.mae.grid, self.cfg.mask_ratio, generator=gen
        )
        mask = mask.to(self.device)
        pred, loss, _ = self._loss(self.mae.eval(), x, mask, w, valid)
        plot_reconstructions(
            self.out / "reconstruction.png",
            x.cpu(),
            mask.cpu(),
            pred.float().cpu(),
            None if w is None else w.cpu(),
            valid.cpu(),
            patch=self.mae.patch,
            norm_pix=self.cfg.norm_pix,
            title=f"epoch {self.epoch}: loss {float(loss):.4f} on these patches",
        )

    def log_columns(
        self, train: dict[str, float], val: dict[str, float]
    ) -> dict[str, Any]:
        """``loss`` and ``mse``."""
        return {"loss": train["loss"], "mse": train["mse"]}

    def save_products(self) -> None:
        """``encoder.safetensors`` (what ``finetune --pretrained`` loads)."""
        save_encoder(self.mae.encoder, self.arch, self.out / "encoder.safetensors")

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """``pretrain/lr``, ``pretrain/loss``, ``pretrain/mse``."""
        return {f"pretrain/{k}": row[k] for k in ("lr", "loss", "mse")}

    def epoch_message(self, row: dict[str, Any], secs: float) -> str:
        """Loss, MSE, LR, time."""
        return (
            f"epoch {self.epoch}/{self.cfg.epochs}  loss {row['loss']:.4f}  "
            f"mse {row['mse']:.4f}  lr {row['lr']:.3g}  {secs:.1f}s"
        )

    def result(self) -> PretrainResult:
        """The encoder's path and how far the run got."""
        last = float(self.rows[-1]["loss"]) if self.rows else math.nan
        return PretrainResult(
            encoder_path=self.out / "encoder.safetensors",
            epochs_done=self.epoch,
            finished=self.epoch >= self.cfg.epochs,
            last_loss=last,
        )


#: Run one process of a torchrun job (or the only one); see :func:`pretrain`.
run_pretrain = PretrainRun.launch


def pretrain(
    data: str | Path,
    out_dir: str | Path,
    *,
    log: Log | None = None,
    **options: Any,
) -> PretrainResult:
    """Pretrain with SAR-W-MixMAE; ``options`` are :class:`PretrainConfig` fields.

    Each torchrun process runs its share (see :meth:`PretrainRun.launch`); progress
    lines go to ``log`` on rank 0.

    Returns:
        Where the encoder is and how far the run got (meaningful on rank 0).

    Raises:
        DatasetFormatError: not a dataset, or no ``pretrain`` split.
        TrainingError: an odd or too large batch, a bad option, a diverged loss.
        CheckpointError: a resume checkpoint of another kind or other options
            (another preset, say).
        OutputExistsError: ``out_dir`` holds another run.
    """
    cfg = PretrainConfig(data=Path(data), out_dir=Path(out_dir), **options)
    return run_pretrain(cfg, log=log)
