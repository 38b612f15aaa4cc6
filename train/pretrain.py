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
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alosmap._fileio import atomic_write_bytes
from alosmap._version import __version__
from alosmap.arch import ArchConfig, get_preset
from alosmap.train import distributed as ddp
from alosmap.train.checkpoint import (
    atomic_torch_save,
    capture_rng,
    open_run,
    restore_rng,
    save_encoder,
)
from alosmap.train.data import DatasetFormatError, PatchDataset, TrainingData
from alosmap.train.loop import (
    RunCommon,
    TrainingError,
    _amp_dtype,
    _device,
    _wants_cuda,
    write_csv,
)
from alosmap.train.mixmae import (
    DECODER_PRESETS,
    DecoderConfig,
    MixMAE,
    mix_images,
    normalize_patches,
    patchify,
    random_pair_masks,
    reconstruction_loss,
    sar_w_weights,
    unpatchify,
)
from alosmap.train.optim import build_optimizer, lr_at, scaled_lr, set_lr

logger = logging.getLogger(__name__)

__all__ = [
    "RESUME_KIND",
    "PretrainConfig",
    "PretrainResult",
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
        workers: DataLoader workers per process.
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
    workers: int = 4
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


def _resume_fields(cfg: PretrainConfig, global_batch: int) -> dict[str, Any]:
    d = {k: v for k, v in asdict(cfg).items() if k in _RESUME_KEYS}
    d["data"] = str(Path(cfg.data).resolve())
    dec = cfg.decoder()
    d.update(decoder_dim=dec.dim, decoder_depth=dec.depth, decoder_heads=dec.heads)
    d["global_batch"] = global_batch
    return d


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
        _, mean, scale = normalize_patches(
            patchify(images, patch), patchify(valid, patch)
        )
        rec = rec * scale + mean
    rec = unpatchify(rec, patch, size)
    mixed = mix_images(images, mask)
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


class _Run(RunCommon):
    """State of one pretraining process (see :func:`run_pretrain`)."""

    def __init__(
        self, cfg: PretrainConfig, info: ddp.DistInfo, log: Callable[[str], None]
    ):
        self.cfg = cfg
        self.info = info
        self.log = log if info.primary else (lambda _msg: None)
        self.out = Path(cfg.out_dir)
        self.device = _device(cfg.device, info.local_rank)
        self.amp_dtype = _amp_dtype(cfg, self.device)  # type: ignore[arg-type]
        self.data = TrainingData(cfg.data)
        self.n_patches = _check(self.data, cfg, info.world_size)
        self.global_batch = cfg.batch_size * info.world_size
        self.base_lr = (
            cfg.lr if cfg.lr is not None else scaled_lr(cfg.blr, self.global_batch)
        )
        self.arch = get_preset(cfg.preset, img_size=self.data.patch_size)
        self.clip_db = (-40.0, 20.0)

    # -- setup ---------------------------------------------------------------------
    def _resume_checkpoint(self) -> dict[str, Any] | None:
        now = _resume_fields(self.cfg, self.global_batch)
        return open_run(
            self.out,
            resume=self.cfg.resume,
            product="encoder.safetensors",
            kind=RESUME_KIND,
            now={k: now[k] for k in _RESUME_KEYS},
        )

    def setup(self) -> None:
        cfg = self.cfg
        if self.info.primary:
            self.out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()
        self.ckpt = self._resume_checkpoint()
        torch.manual_seed(cfg.seed)
        model = build_pretrain_model(self.arch, cfg.decoder()).to(self.device)
        self.model = model
        self.ddp_model: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        torch.manual_seed(cfg.seed + self.info.rank)
        self.mask_gen = mask_generator(cfg.seed, self.info.rank)
        # no layer-wise decay in pretraining; no weight decay on norms, biases,
        # relative position tables and the mask token (optim.no_weight_decay)
        self.optimizer = build_optimizer(
            model,
            lr=self.base_lr,
            weight_decay=cfg.weight_decay,
            layer_decay=1.0,
            depths=self.arch.depths,
            betas=(0.9, 0.95),
        )
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self._loader()
        self.epoch = 0
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        if self.ckpt is not None:
            self._restore(self.ckpt)
        self.tb = self._tensorboard()

    def _loader(self) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        cfg, info = self.cfg, self.info
        self.ds = PatchDataset(
            self.data,
            "pretrain",
            augment=cfg.augment,
            clip_db=self.clip_db,
            return_db=True,
            seed=cfg.seed,
        )
        self.sampler = DistributedSampler(
            self.ds,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.loader = DataLoader(
            self.ds,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
        )
        self.iters = len(self.loader)
        self.total_steps = cfg.epochs * self.iters
        self.warmup_steps = cfg.warmup_epochs * self.iters

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.rows = [dict(r) for r in ckpt["history"]]
        rngs = ckpt["rng"]
        rng = rngs[min(self.info.rank, len(rngs) - 1)]
        restore_rng(rng)
        self.mask_gen.set_state(rng["mask"])
        if self.info.primary:
            write_csv(self.out / "log.csv", self.rows)  # drop rows after the ckpt
        self.log(f"resumed from {self.out / 'last.pt'} after epoch {self.epoch}")

    # -- one epoch -----------------------------------------------------------------
    def _batch(
        self, x: torch.Tensor, db: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Inputs, SAR-W weights (or None) and validity, on the device."""
        x = x.to(self.device, non_blocking=True)
        db = db.to(self.device, non_blocking=True)
        valid = torch.isfinite(db).float()
        w = None
        if self.cfg.sar_w:
            w = sar_w_weights(db, scale=self.cfg.sar_w_scale, clip_db=self.clip_db)
        return x, w, valid

    def train_epoch(self) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg
        self.ddp_model.train()
        self.sampler.set_epoch(self.epoch)
        self.ds.set_epoch(self.epoch)
        sums = {"loss": 0.0, "mse": 0.0}
        batches = 0
        bar = tqdm(
            total=self.iters,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
            disable=not (cfg.progress and self.info.primary),
        )
        with bar:
            for x, _y, db in self.loader:
                lr = lr_at(
                    self.step,
                    base_lr=self.base_lr,
                    min_lr=cfg.min_lr,
                    warmup_steps=self.warmup_steps,
                    total_steps=self.total_steps,
                )
                set_lr(self.optimizer, lr)
                x, w, valid = self._batch(x, db)
                mask = random_pair_masks(
                    x.shape[0],
                    self.model.grid,
                    cfg.mask_ratio,
                    generator=self.mask_gen,
                ).to(self.device)
                with self._autocast():
                    pred = self.ddp_model(x, mask)
                loss, mse = reconstruction_loss(
                    pred,
                    x,
                    patch=self.model.patch,
                    weight=w,
                    valid=valid,
                    norm_pix=cfg.norm_pix,
                )
                if not self.scaler.is_enabled() and not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {float(loss)} at epoch {self.epoch + 1}, "
                        f"step {self.step}; lower the learning rate (--lr/--blr)"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.step += 1
                batches += 1
                sums["loss"] += float(loss.detach())
                sums["mse"] += float(mse)
                bar.set_postfix(loss=f"{sums['loss'] / batches:.4f}", refresh=False)
                bar.update()
        sums["_batches"] = float(batches)
        total = ddp.reduce_sums(sums)
        n = max(1.0, total.pop("_batches"))
        return {k: v / n for k, v in total.items()}

    # -- bookkeeping (rank 0) ------------------------------------------------------
    @torch.no_grad()
    def visualise(self) -> None:
        """Redraw ``reconstruction.png`` on fixed patches with a fixed mask."""
        n = min(_VIS_PATCHES, self.n_patches) // 2 * 2
        ds = PatchDataset(self.data, "pretrain", clip_db=self.clip_db, return_db=True)
        items = [ds[i] for i in range(n)]
        x = torch.stack([it[0] for it in items])
        db = torch.stack([it[2] for it in items])
        x, w, valid = self._batch(x, db)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        mask = random_pair_masks(n, self.model.grid, self.cfg.mask_ratio, generator=gen)
        mask = mask.to(self.device)
        model = self.model.eval()
        with self._autocast():
            pred = model(x, mask)
        loss, _ = reconstruction_loss(
            pred,
            x,
            patch=model.patch,
            weight=w,
            valid=valid,
            norm_pix=self.cfg.norm_pix,
        )
        plot_reconstructions(
            self.out / "reconstruction.png",
            x.cpu(),
            mask.cpu(),
            pred.float().cpu(),
            None if w is None else w.cpu(),
            valid.cpu(),
            patch=model.patch,
            norm_pix=self.cfg.norm_pix,
            title=f"epoch {self.epoch}: loss {float(loss):.4f} on these patches",
        )

    def save_checkpoint(self) -> None:
        state = capture_rng()
        state["mask"] = self.mask_gen.get_state()
        rng = ddp.all_gather_objects(state)
        if not self.info.primary:
            return
        ckpt = {
            "kind": RESUME_KIND,
            "alosmap_version": __version__,
            "config": _resume_fields(self.cfg, self.global_batch),
            "arch": self.arch.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.rows,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
        }
        atomic_torch_save(ckpt, self.out / "last.pt")

    def end_epoch(self, train: dict[str, float], secs: float) -> None:
        self.epoch += 1
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": train["loss"],
            "mse": train["mse"],
            "seconds": round(secs, 3),
        }
        self.rows.append(row)
        if self.info.primary:
            save_encoder(
                self.model.encoder, self.arch, self.out / "encoder.safetensors"
            )
            write_csv(self.out / "log.csv", self.rows)
            self.visualise()
            if self.tb is not None:
                for k in ("lr", "loss", "mse"):
                    self.tb.add_scalar(f"pretrain/{k}", row[k], self.epoch)
                self.tb.flush()
            self.log(
                f"epoch {self.epoch}/{self.cfg.epochs}  loss {train['loss']:.4f}  "
                f"mse {train['mse']:.4f}  lr {row['lr']:.3g}  {secs:.1f}s"
            )
        self.save_checkpoint()

    def run(self) -> PretrainResult:
        self.setup()
        if self.ckpt is None:
            self.log(
                f"pretraining {self.cfg.preset} encoder ({self.arch.img_size} px) on "
                f"{self.n_patches} patches: {self.iters} steps/epoch, global batch "
                f"{self.global_batch}, lr {self.base_lr:.3g}"
            )
        done_now = 0
        try:
            while self.epoch < self.cfg.epochs:
                if self.cfg.stop_after is not None and done_now >= self.cfg.stop_after:
                    break
                t0 = time.perf_counter()
                train = self.train_epoch()
                self.end_epoch(train, time.perf_counter() - t0)
                done_now += 1
        finally:
            if self.tb is not None:
                self.tb.close()
        last = float(self.rows[-1]["loss"]) if self.rows else math.nan
        return PretrainResult(
            encoder_path=self.out / "encoder.safetensors",
            epochs_done=self.epoch,
            finished=self.epoch >= self.cfg.epochs,
            last_loss=last,
        )


def run_pretrain(
    cfg: PretrainConfig, log: Callable[[str], None] | None = None
) -> PretrainResult:
    """Pretrain an encoder (one process of a torchrun job, or the only one).

    Args:
        cfg: the run.
        log: receives progress lines on rank 0 (default: ``logger.info``).

    Returns:
        Where the encoder is and how far the run got.

    Raises:
        DatasetFormatError: not a dataset, or no ``pretrain`` split.
        TrainingError: an odd or too large batch, a bad option, a diverged loss.
        CheckpointError: a resume checkpoint of another kind or other options
            (another preset, say).
        OutputExistsError: ``out_dir`` holds another run.
    """
    info = ddp.init_distributed("cuda" if _wants_cuda(cfg.device) else "cpu")
    try:
        return _Run(cfg, info, log or logger.info).run()
    finally:
        ddp.cleanup()


def pretrain(
    data: str | Path,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> PretrainResult:
    """Pretrain with SAR-W-MixMAE; ``options`` are :class:`PretrainConfig` fields."""
    cfg = PretrainConfig(data=Path(data), out_dir=Path(out_dir), **options)
    return run_pretrain(cfg, log=log)
