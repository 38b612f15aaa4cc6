"""The finetuning loop: one process per device, DDP when launched by torchrun.

Per epoch: train on the ``train`` split (flips/rot90, warm-up + cosine LR updated
every iteration, AdamW with layer-wise decay, AMP on CUDA), validate on ``val``
(confusion matrices summed over ranks), then on rank 0 only: append the CSV log,
TensorBoard scalars, redraw the validation curve, save ``model.safetensors`` when
the score improves, and save ``last.pt`` for an exact resume. Files are written
atomically, ``last.pt`` last, so a kill at any point resumes from a consistent epoch.

Distributed details:

* ``batch_size`` is per process; the global batch (``batch_size · world_size``) sets
  the LR through :func:`~alosmap.train.optim.scaled_lr`.
* Training shards come from :class:`~torch.utils.data.DistributedSampler`
  (``set_epoch`` every epoch, ``drop_last``); validation patches are split
  ``rank::world_size`` without padding, so each is counted exactly once.
* **BatchNorm**: on CUDA the decoder's BatchNorm layers become
  :class:`~torch.nn.SyncBatchNorm` (statistics over the global batch, like a single
  process). SyncBatchNorm only runs on GPUs, so on CPU (gloo) each rank normalises
  with its own batch statistics; DDP then broadcasts rank 0's running statistics.
* The losses are batch-level statistics (dice, the valid-pixel normaliser), so DDP
  optimises the mean of the per-rank losses, the usual data-parallel objective.
* AMP: bf16 autocast on CUDA when the GPU supports it, else fp16 with a GradScaler;
  fp32 on CPU.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alosmap._fileio import atomic_write_bytes
from alosmap._version import __version__
from alosmap.arch import get_preset
from alosmap.errors import AlosmapError
from alosmap.metrics import ConfusionMatrix, threshold_probabilities, water_metrics
from alosmap.models import build_model
from alosmap.spec import Radiometry, default_spec, save_model
from alosmap.train import distributed as ddp
from alosmap.train.checkpoint import (
    atomic_torch_save,
    capture_rng,
    load_pretrained_encoder,
    open_run,
    restore_rng,
)
from alosmap.train.data import DatasetFormatError, PatchDataset, TrainingData
from alosmap.train.losses import build_loss
from alosmap.train.optim import build_optimizer, lr_at, scaled_lr, set_lr

logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "FinetuneResult", "TrainingError", "run_finetune"]

#: Options that must not change between a run and its resume.
_RESUME_KEYS = (
    "data",
    "task",
    "preset",
    "highres",
    "refine_up",
    "alpha_scale",
    "epochs",
    "warmup_epochs",
    "blr",
    "lr",
    "layer_decay",
    "min_lr",
    "weight_decay",
    "drop_path",
    "dropout",
    "seed",
    "augment",
    "global_batch",
)


class TrainingError(AlosmapError, ValueError):
    """Training cannot start or go on (bad option for this data, diverged loss)."""


@dataclass
class FinetuneConfig:
    """Everything a finetuning run needs (see ``alosmap train finetune --help``).

    Attributes:
        data: dataset directory (``train``/``val`` splits required).
        task: ``lulc`` or ``water``.
        out_dir: run directory (``model.safetensors``, ``last.pt``, ``log.csv``,
            ``val_curve.png``, ``tb/``).
        pretrained: encoder checkpoint, or None for random initialisation.
        preset: architecture preset.
        highres: decoder high-resolution injection.
        refine_up: refine-up head.
        alpha_scale: α-scale of the focal term (LULC).
        epochs: total epochs.
        warmup_epochs: linear warm-up epochs.
        batch_size: patches per process and step.
        blr: base LR per 256 samples of global batch.
        lr: absolute LR (overrides ``blr``), or None.
        layer_decay: layer-wise LR decay.
        min_lr: LR at the end of the cosine.
        weight_decay: AdamW weight decay.
        drop_path: stochastic depth during training (0 in the saved spec).
        dropout: Dropout2d before the classifier (mmseg's 0.1).
        workers: DataLoader workers per process.
        device: ``auto``, ``cpu``, ``cuda``.
        amp: mixed precision on CUDA.
        seed: seed of initialisation, shuffling and augmentation.
        resume: continue from ``out_dir/last.pt`` when it exists.
        augment: random flips/rot90 of training patches.
        sync_bn: SyncBatchNorm under DDP on CUDA.
        stop_after: stop after this many epochs in this invocation (resume later).
    """

    data: Path
    task: str
    out_dir: Path
    pretrained: Path | None = None
    preset: str = "paper"
    highres: bool = True
    refine_up: bool = True
    alpha_scale: float = 2.25
    epochs: int = 200
    warmup_epochs: int = 10
    batch_size: int = 64
    blr: float = 6e-4
    lr: float | None = None
    layer_decay: float = 0.7
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    drop_path: float = 0.1
    dropout: float = 0.1
    workers: int = 4
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = True
    augment: bool = True
    sync_bn: bool = True
    stop_after: int | None = None


@dataclass
class FinetuneResult:
    """Outcome of :func:`run_finetune` (meaningful on rank 0).

    Attributes:
        model_path: the best model file.
        best_epoch: 1-based epoch of the best validation score.
        best_score: best validation mIoU (LULC) or IoU_water (water), in [0, 1].
        epochs_done: epochs completed so far (all invocations).
        finished: True when every configured epoch has run.
    """

    model_path: Path
    best_epoch: int
    best_score: float
    epochs_done: int
    finished: bool


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available here")
        return torch.device("cuda", local_rank if name == "cuda" else int(name[5:]))
    if name != "cpu":
        raise TrainingError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device("cpu")


def _amp_dtype(cfg: FinetuneConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the per-epoch log atomically (the whole file from ``rows``)."""
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def plot_curve(path: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """Validation score per epoch, best epoch marked (like the paper's Fig. 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in rows]
    score = [100.0 * float(r[metric]) for r in rows]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, score, lw=1.5)
    finite = [(s, e) for s, e in zip(score, epochs, strict=True) if math.isfinite(s)]
    if finite:
        s, e = max(finite)
        ax.scatter([e], [s], color="C3", zorder=3, label=f"best {s:.2f}% (epoch {e})")
        ax.legend(loc="lower right")
    label = "mIoU" if metric.endswith("miou") else "IoU_water"
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(
        xlabel="epoch", ylabel=f"validation {label} (%)", title=f"Validation {label}"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _check_data(data: TrainingData, cfg: FinetuneConfig, world: int) -> None:
    for split in ("train", "val"):
        if len(data.indices(split)) == 0:
            raise DatasetFormatError(
                f"{data.root}: no {split!r} patches; finetuning needs train and val "
                "splits (build the dataset with a finetuning month)"
            )
    n_train = len(data.indices("train"))
    if cfg.batch_size < 1 or cfg.batch_size * world > n_train:
        raise TrainingError(
            f"--batch-size {cfg.batch_size} × {world} process(es) is larger than the "
            f"{n_train} training patches; use --batch-size {max(1, n_train // world)} "
            "or less"
        )
    if cfg.task == "lulc" and "lulc" not in data.meta.get("class_counts", {}):
        raise DatasetFormatError(f"{data.root}: dataset.json has no lulc class counts")


def _resume_fields(cfg: FinetuneConfig, global_batch: int) -> dict[str, Any]:
    d = {k: v for k, v in asdict(cfg).items() if k in _RESUME_KEYS}
    d["data"] = str(Path(cfg.data).resolve())
    d["global_batch"] = global_batch
    return d


def _val_score(task: str, cm: ConfusionMatrix) -> dict[str, float]:
    if task == "water":
        return water_metrics(cm)
    return {"miou": cm.miou(), "macc": cm.macc()}


class RunCommon:
    """What the finetuning and pretraining processes share (both ``_Run``).

    Subclasses set ``info``, ``out``, ``device``, ``amp_dtype`` and ``epoch``.
    """

    info: ddp.DistInfo
    out: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    epoch: int

    def _tensorboard(self) -> Any:
        """A TensorBoard writer on the primary process (None elsewhere / absent)."""
        if not self.info.primary:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tb"), purge_step=self.epoch + 1)

    def _autocast(self) -> Any:
        """Autocast to the AMP dtype on CUDA; a no-op context otherwise."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )


class _Run(RunCommon):
    """State of one finetuning process (kept small; see :func:`run_finetune`)."""

    def __init__(
        self, cfg: FinetuneConfig, info: ddp.DistInfo, log: Callable[[str], None]
    ):
        self.cfg = cfg
        self.info = info
        self.log = log if info.primary else (lambda _msg: None)
        self.out = Path(cfg.out_dir)
        self.device = _device(cfg.device, info.local_rank)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.data = TrainingData(cfg.data)
        _check_data(self.data, cfg, info.world_size)
        self.global_batch = cfg.batch_size * info.world_size
        self.base_lr = (
            cfg.lr if cfg.lr is not None else scaled_lr(cfg.blr, self.global_batch)
        )
        self.metric = "iou_water" if cfg.task == "water" else "miou"
        arch = get_preset(
            cfg.preset,
            img_size=self.data.patch_size,
            highres=cfg.highres,
            refine_up=cfg.refine_up,
            drop_path_rate=cfg.drop_path,
            dropout=cfg.dropout,
        )
        self.arch = default_spec(cfg.task, arch).arch  # outputs: 9 or 1 (water)

    # -- setup ---------------------------------------------------------------------
    def _resume_checkpoint(self) -> dict[str, Any] | None:
        now = _resume_fields(self.cfg, self.global_batch)
        return open_run(
            self.out,
            resume=self.cfg.resume,
            product="model.safetensors",
            kind="alosmap-finetune",
            now={k: now[k] for k in _RESUME_KEYS},
        )

    def setup(self) -> None:
        cfg = self.cfg
        if self.info.primary:
            self.out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()
        self.ckpt = self._resume_checkpoint()
        torch.manual_seed(cfg.seed)
        model = build_model(self.arch)
        if cfg.pretrained is not None and self.ckpt is None:
            report = load_pretrained_encoder(model.encoder, cfg.pretrained)
            self.log(report.summary())
        model.to(self.device)
        if self.info.distributed and self.device.type == "cuda" and cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp_model: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        # dropout/drop-path streams differ per rank; initialisation did not
        torch.manual_seed(cfg.seed + self.info.rank)
        self.optimizer = build_optimizer(
            model,
            lr=self.base_lr,
            weight_decay=cfg.weight_decay,
            layer_decay=cfg.layer_decay,
            depths=self.arch.depths,
        )
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        counts = self.data.class_counts("lulc") if cfg.task == "lulc" else None
        extra = {"alpha_scale": cfg.alpha_scale} if cfg.task == "lulc" else {}
        self.loss_fn = build_loss(cfg.task, class_counts=counts, **extra).to(
            self.device
        )
        self._loaders()
        self.epoch = 0
        self.step = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.rows: list[dict[str, Any]] = []
        if self.ckpt is not None:
            self._restore(self.ckpt)
        self.tb = self._tensorboard()

    def _loaders(self) -> None:
        from torch.utils.data import DataLoader, DistributedSampler, Subset

        cfg, info = self.cfg, self.info
        self.train_ds = PatchDataset(
            self.data, "train", cfg.task, augment=cfg.augment, seed=cfg.seed
        )
        self.sampler = DistributedSampler(
            self.train_ds,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            drop_last=True,
            pin_memory=pin,
        )
        val = PatchDataset(self.data, "val", cfg.task)
        shard = Subset(val, range(info.rank, len(val), info.world_size))
        self.val_loader = DataLoader(
            shard, batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=pin
        )
        self.iters = len(self.train_loader)
        self.total_steps = cfg.epochs * self.iters
        self.warmup_steps = cfg.warmup_epochs * self.iters

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.best_score = float(ckpt["best_score"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.rows = [dict(r) for r in ckpt["history"]]
        rng = ckpt["rng"]
        restore_rng(rng[min(self.info.rank, len(rng) - 1)])
        if self.info.primary:
            write_csv(self.out / "log.csv", self.rows)  # drop rows after the ckpt
        self.log(f"resumed from {self.out / 'last.pt'} after epoch {self.epoch}")

    # -- one epoch -----------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        self.ddp_model.train()
        self.sampler.set_epoch(self.epoch)
        self.train_ds.set_epoch(self.epoch)
        sums: dict[str, float] = {}
        batches = 0
        for x, y in self.train_loader:
            lr = lr_at(
                self.step,
                base_lr=self.base_lr,
                min_lr=self.cfg.min_lr,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
            )
            set_lr(self.optimizer, lr)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.ddp_model(x)
            parts = self.loss_fn(logits, y, return_parts=True)
            if not self.scaler.is_enabled() and not torch.isfinite(parts.total):
                raise TrainingError(
                    f"the loss became {float(parts.total)} at epoch {self.epoch + 1}, "
                    f"step {self.step}; lower the learning rate (--lr/--blr)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(parts.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            batches += 1
            for k, v in parts.as_floats().items():
                sums[k] = sums.get(k, 0.0) + v
        sums["_batches"] = float(batches)
        total = ddp.reduce_sums(sums)
        n = max(1.0, total.pop("_batches"))
        return {k: v / n for k, v in total.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        model = self.model.eval()
        k = 2 if self.cfg.task == "water" else self.arch.num_classes
        cm = ConfusionMatrix(k)
        for x, y in self.val_loader:
            with self._autocast():
                logits = model(x.to(self.device, non_blocking=True))
            if self.cfg.task == "water":
                pred = threshold_probabilities(torch.sigmoid(logits[:, 0].float()))
            else:
                pred = logits.argmax(1).cpu()
            cm.update(pred, y)
        cm.all_reduce_()
        return _val_score(self.cfg.task, cm)

    # -- bookkeeping (rank 0) ------------------------------------------------------
    def _spec(self) -> Any:
        cfg, data = self.cfg, self.data
        provenance = {
            "alosmap_version": __version__,
            "command": "alosmap train finetune",
            "data": str(Path(cfg.data).resolve()),
            "pretrained": str(cfg.pretrained) if cfg.pretrained else "none (scratch)",
            "preset": cfg.preset,
            "epochs": str(cfg.epochs),
            "best_epoch": str(self.best_epoch),
            f"val_{self.metric}": f"{self.best_score:.6f}",
            "global_batch": str(self.global_batch),
            "lr": f"{self.base_lr:.3g}",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return default_spec(
            cfg.task,
            self.arch.replace(drop_path_rate=0.0),
            radiometry=Radiometry(mean_db=data.mean_db, std_db=data.std_db),
            name=f"{cfg.preset}-{cfg.task}",
            provenance=provenance,
        )

    def save_checkpoint(self) -> None:
        rng = ddp.all_gather_objects(capture_rng())
        if not self.info.primary:
            return
        ckpt = {
            "kind": "alosmap-finetune",
            "alosmap_version": __version__,
            "config": _resume_fields(self.cfg, self.global_batch),
            "epoch": self.epoch,
            "step": self.step,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.rows,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
        }
        atomic_torch_save(ckpt, self.out / "last.pt")

    def end_epoch(self, train: dict[str, float], val: dict[str, float], secs: float):
        self.epoch += 1
        score = val[self.metric]
        improved = math.isfinite(score) and score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, self.epoch
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[-1]["lr"],
        }
        row.update({f"train_{k}": v for k, v in train.items()})
        row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = round(secs, 3)
        self.rows.append(row)
        if self.info.primary:
            if improved:
                save_model(
                    self.model,
                    self._spec(),
                    self.out / "model.safetensors",
                    overwrite=True,
                )
            write_csv(self.out / "log.csv", self.rows)
            plot_curve(self.out / "val_curve.png", self.rows, f"val_{self.metric}")
            if self.tb is not None:
                for k, v in row.items():
                    if k != "epoch":
                        self.tb.add_scalar(k, v, self.epoch)
                self.tb.flush()
            loss = train.get("loss", math.nan)
            self.log(
                f"epoch {self.epoch}/{self.cfg.epochs}  loss {loss:.4f}  "
                f"val {self.metric} {100 * score:.2f}%  "
                f"best {100 * self.best_score:.2f}% (epoch {self.best_epoch})  "
                f"{secs:.1f}s"
            )
        self.save_checkpoint()

    def run(self) -> FinetuneResult:
        self.setup()
        done_now = 0
        try:
            while self.epoch < self.cfg.epochs:
                if self.cfg.stop_after is not None and done_now >= self.cfg.stop_after:
                    break
                t0 = time.perf_counter()
                train = self.train_epoch()
                val = self.validate()
                self.end_epoch(train, val, time.perf_counter() - t0)
                done_now += 1
        finally:
            if self.tb is not None:
                self.tb.close()
        return FinetuneResult(
            model_path=self.out / "model.safetensors",
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            epochs_done=self.epoch,
            finished=self.epoch >= self.cfg.epochs,
        )


def run_finetune(
    cfg: FinetuneConfig, log: Callable[[str], None] | None = None
) -> FinetuneResult:
    """Finetune a model (one process of a torchrun job, or the only one).

    Args:
        cfg: the run.
        log: receives progress lines on rank 0 (default: ``logger.info``).

    Returns:
        Where the best model is and how good it was.

    Raises:
        DatasetFormatError: the data directory is not a dataset, or lacks a split.
        TrainingError: an option does not fit the data, or the loss diverged.
        CheckpointError: a bad ``--pretrained`` file or resume checkpoint.
        OutputExistsError: ``out_dir`` holds another run.
    """
    info = ddp.init_distributed("cuda" if _wants_cuda(cfg.device) else "cpu")
    try:
        return _Run(cfg, info, log or logger.info).run()
    finally:
        ddp.cleanup()


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
