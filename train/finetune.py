"""``alosmap train finetune``: the segmentation model trained on a labelled dataset.

Defaults follow the paper (Section III-B): AdamW, weight decay 0.05, base LR 6e-4,
layer-wise decay 0.7, min LR 1e-6, 10 warm-up epochs, 200 epochs for LULC and 100
for water, α-scale 2.25.

**LR scaling rule.** ``lr = blr · global_batch / 256`` (MixMIM/MAE's
``main_finetune``, which SAR-W-MixMAE reuses). The paper uses "base learning rate"
in this sense for pretraining ("1.5e-4, scaled linearly by global_batch/256") and
gives the finetuning value in the same words, so at its global batch of 512
(64 × 8 GPUs) the absolute LR is ``6e-4 · 512/256 = 1.2e-3``. Under the other
reading (6e-4 absolute at batch 512) pass ``--lr 6e-4``, or ``--blr 3e-4``.
``--lr`` is an absolute LR used as given, whatever the batch. The global batch is
``--batch-size`` (per process) × the number of torchrun processes.

Per epoch (the skeleton is :class:`~alosmap.train.engine.TrainingRun`): train on the
``train`` split (flips/rot90, warm-up + cosine LR updated every iteration, AdamW
with layer-wise decay, AMP on CUDA), validate on ``val`` (confusion matrices summed
over ranks), then on rank 0 only: save ``model.safetensors`` when the score
improves, append the CSV log, redraw the validation curve, TensorBoard scalars, and
save ``last.pt`` for an exact resume.

Distributed details beyond the skeleton's:

* Validation patches are split ``rank::world_size`` without padding, so each is
  counted exactly once.
* **BatchNorm**: on CUDA the decoder's BatchNorm layers become
  :class:`~torch.nn.SyncBatchNorm` (statistics over the global batch, like a single
  process). SyncBatchNorm only runs on GPUs, so on CPU (gloo) each rank normalises
  with its own batch statistics; DDP then broadcasts rank 0's running statistics.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alosmap._dist import DistInfo
from alosmap._fileio import atomic_write_bytes
from alosmap._version import __version__
from alosmap.arch import get_preset
from alosmap.classes import Task, get_task
from alosmap.metrics import ConfusionMatrix, threshold_probabilities, water_metrics
from alosmap.models import build_model
from alosmap.spec import ModelSpec, default_spec, save_model
from alosmap.train.checkpoint import load_pretrained_encoder
from alosmap.train.data import PatchDataset
from alosmap.train.engine import Log, TrainingRun
from alosmap.train.errors import DatasetFormatError, TrainingError
from alosmap.train.losses import build_loss

__all__ = [
    "DEFAULT_EPOCHS",
    "FinetuneConfig",
    "FinetuneResult",
    "FinetuneRun",
    "TrainingError",
    "finetune",
    "make_config",
    "plot_curve",
    "run_finetune",
]

#: Paper's finetuning length per task.
DEFAULT_EPOCHS = {"lulc": 200, "water": 100}

#: ``kind`` of a finetuning resume checkpoint.
RESUME_KIND = "alosmap-finetune"

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
        progress: draw a progress bar per epoch (rank 0, stderr).
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
    progress: bool = False


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


def plot_curve(path: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """Training loss and validation score per epoch (like the paper's Fig. 2).

    Two panels: the training loss (``train_loss``, when the rows have it) and the
    validation score ``metric`` (a fraction in the rows) plotted in percent on a
    0-100 % axis, its best epoch marked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in rows]
    score = [100.0 * float(r[metric]) for r in rows]
    loss = [float(r.get("train_loss", math.nan)) for r in rows]
    has_loss = any(math.isfinite(v) for v in loss)
    fig = Figure(figsize=(10 if has_loss else 6, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_loss else 1, squeeze=False)[0]
    label = "mIoU" if metric.endswith("miou") else "IoU_water"
    if has_loss:
        ax = axes[0]
        ax.plot(epochs, loss, lw=1.5, color="C1", marker="." if len(rows) < 30 else "")
        ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax = axes[-1]
    ax.plot(epochs, score, lw=1.5, marker="." if len(rows) < 30 else "")
    finite = [(s, e) for s, e in zip(score, epochs, strict=True) if math.isfinite(s)]
    if finite:
        s, e = max(finite)
        ax.scatter([e], [s], color="C3", zorder=3, label=f"best {s:.1f} % (epoch {e})")
        ax.legend(loc="lower right")
    ax.set(
        xlabel="epoch",
        ylabel=f"validation {label} (%)",
        title=f"Validation {label}",
        ylim=(0.0, 100.0),
    )
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _val_score(task: Task, cm: ConfusionMatrix) -> dict[str, float]:
    if task.binary:
        return water_metrics(cm)
    return {"miou": cm.miou(), "macc": cm.macc()}


class FinetuneRun(TrainingRun[FinetuneConfig, FinetuneResult]):
    """One finetuning process (see :func:`finetune`)."""

    kind = RESUME_KIND
    product = "model.safetensors"
    resume_keys = _RESUME_KEYS

    def __init__(self, cfg: FinetuneConfig, info: DistInfo, log: Log) -> None:
        super().__init__(cfg, info, log)
        self.metric = self.task.metric
        arch = get_preset(
            cfg.preset,
            img_size=self.data.patch_size,
            highres=cfg.highres,
            refine_up=cfg.refine_up,
            drop_path_rate=cfg.drop_path,
            dropout=cfg.dropout,
        )
        self.arch = default_spec(cfg.task, arch).arch  # outputs: 9 or 1 (water)
        self.best_score = -math.inf
        self.best_epoch = 0
        self.improved = False

    @property
    def task(self) -> Task:
        """The task's record."""
        return get_task(self.cfg.task)

    # -- setup -----------------------------------------------------------------------
    def check_data(self) -> None:
        """Train and val patches, a batch that fits, class counts for the loss."""
        data, cfg, world = self.data, self.cfg, self.info.world_size
        for split in ("train", "val"):
            if len(data.indices(split)) == 0:
                raise DatasetFormatError(
                    f"{data.root}: no {split!r} patches; finetuning needs train and "
                    "val splits (build the dataset with a finetuning month)"
                )
        n_train = len(data.indices("train"))
        if cfg.batch_size < 1 or cfg.batch_size * world > n_train:
            raise TrainingError(
                f"--batch-size {cfg.batch_size} × {world} process(es) is larger than "
                f"the {n_train} training patches; use --batch-size "
                f"{max(1, n_train // world)} or less"
            )
        task = self.task
        if not task.binary and task.name not in data.meta.get("class_counts", {}):
            raise DatasetFormatError(
                f"{data.root}: dataset.json has no {task.name} class counts"
            )

    def create_model(self, fresh: bool) -> nn.Module:
        """The segmentation model, with the pretrained encoder on a fresh run."""
        model = build_model(self.arch)
        if self.cfg.pretrained is not None and fresh:
            report = load_pretrained_encoder(model.encoder, self.cfg.pretrained)
            self.log(report.summary())
        return model

    def layer_decay(self) -> float:
        """``--layer-decay`` over the Swin blocks."""
        return self.cfg.layer_decay

    def sync_batchnorm(self) -> bool:
        """``sync_bn``."""
        return self.cfg.sync_bn

    def prepare(self) -> None:
        """The task's loss (class weights from the training split) and val data."""
        cfg, task = self.cfg, self.task
        counts = None if task.binary else self.data.class_counts(task.name)
        extra = {} if task.binary else {"alpha_scale": cfg.alpha_scale}
        self.loss_fn = build_loss(task, class_counts=counts, **extra).to(self.device)
        self._val_loader()

    def _val_loader(self) -> None:
        from torch.utils.data import DataLoader, Subset

        info = self.info
        val = PatchDataset(self.data, "val", self.cfg.task)
        shard = Subset(val, range(info.rank, len(val), info.world_size))
        self.val_loader = DataLoader(
            shard,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )

    def train_dataset(self) -> PatchDataset:
        """The ``train`` split, labels of the task."""
        cfg = self.cfg
        return PatchDataset(
            self.data, "train", cfg.task, augment=cfg.augment, seed=cfg.seed
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """Progress and the best score so far."""
        return {
            **super().checkpoint_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
        }

    def restore_state(self, ckpt: dict[str, Any], rng: dict[str, Any]) -> None:
        """The best score so far."""
        self.best_score = float(ckpt["best_score"])
        self.best_epoch = int(ckpt["best_epoch"])

    # -- one epoch -------------------------------------------------------------------
    def training_step(
        self, batch: Any
    ) -> tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """The task's loss on one batch; logs the total and its terms."""
        x, y = batch
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.ddp_model(x)
        parts = self.loss_fn(logits, y, return_parts=True)
        return parts.total, parts.as_floats()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The task's scores on ``val`` (mIoU and mAcc, or water IoU and more)."""
        task = self.task
        model = self.model.eval()
        cm = ConfusionMatrix(task.num_train_classes)
        for x, y in self.val_loader:
            with self.autocast():
                logits = model(x.to(self.device, non_blocking=True))
            if task.binary:
                pred = threshold_probabilities(torch.sigmoid(logits[:, 0].float()))
            else:
                pred = logits.argmax(1).cpu()
            cm.update(pred, y)
        cm.all_reduce_()
        return _val_score(task, cm)

    # -- bookkeeping -----------------------------------------------------------------
    def end_epoch(
        self, train: dict[str, float], val: dict[str, float], secs: float
    ) -> None:
        """Keep the best score, then the skeleton's end of epoch."""
        score = val[self.metric]
        self.improved = math.isfinite(score) and score > self.best_score
        if self.improved:
            self.best_score, self.best_epoch = score, self.epoch + 1
        super().end_epoch(train, val, secs)

    def log_columns(
        self, train: dict[str, float], val: dict[str, float]
    ) -> dict[str, Any]:
        """``train_<loss term>`` and ``val_<metric>`` columns."""
        return {
            **{f"train_{k}": v for k, v in train.items()},
            **{f"val_{k}": v for k, v in val.items()},
        }

    def _spec(self) -> ModelSpec:
        cfg = self.cfg
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
            radiometry=self.data.radiometry,
            name=f"{cfg.preset}-{cfg.task}",
            provenance=provenance,
        )

    def save_products(self) -> None:
        """``model.safetensors`` when the score improved."""
        if self.improved:
            path = self.out / "model.safetensors"
            inputs = [self.cfg.pretrained] if self.cfg.pretrained else []
            save_model(self.model, self._spec(), path, overwrite=True, inputs=inputs)

    def draw(self) -> None:
        """``val_curve.png``."""
        plot_curve(self.out / "val_curve.png", self.rows, f"val_{self.metric}")

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """Every column but the epoch."""
        return {k: v for k, v in row.items() if k != "epoch"}

    def epoch_message(self, row: dict[str, Any], secs: float) -> str:
        """Loss, validation score, best so far, time."""
        loss = row.get("train_loss", math.nan)
        score = row[f"val_{self.metric}"]
        return (
            f"epoch {self.epoch}/{self.cfg.epochs}  loss {loss:.4f}  "
            f"val {self.metric} {100 * score:.2f}%  "
            f"best {100 * self.best_score:.2f}% (epoch {self.best_epoch})  "
            f"{secs:.1f}s"
        )

    def result(self) -> FinetuneResult:
        """The best model's path, epoch and score."""
        return FinetuneResult(
            model_path=self.out / "model.safetensors",
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            epochs_done=self.epoch,
            finished=self.epoch >= self.cfg.epochs,
        )


#: Run one process of a torchrun job (or the only one); see :func:`finetune`.
run_finetune = FinetuneRun.launch


def make_config(
    data: str | Path,
    task: str,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    **options: Any,
) -> FinetuneConfig:
    """Build the run configuration, filling the per-task defaults.

    Args:
        data: dataset directory.
        task: ``lulc`` or ``water``.
        out_dir: run directory.
        epochs: total epochs; default 200 (LULC) or 100 (water).
        **options: any other :class:`FinetuneConfig` field.
    """
    if task not in DEFAULT_EPOCHS:
        raise ValueError(f"unknown task {task!r}; choose lulc or water")
    pretrained = options.pop("pretrained", None)
    return FinetuneConfig(
        data=Path(data),
        task=task,
        out_dir=Path(out_dir),
        pretrained=Path(pretrained) if pretrained else None,
        epochs=DEFAULT_EPOCHS[task] if epochs is None else int(epochs),
        **options,
    )


def finetune(
    data: str | Path,
    task: str,
    out_dir: str | Path,
    *,
    log: Log | None = None,
    **options: Any,
) -> FinetuneResult:
    """Finetune a model; see :func:`make_config` and :class:`FinetuneConfig`.

    Under torchrun every process calls this (:meth:`TrainingRun.launch
    <alosmap.train.engine.TrainingRun.launch>`, which also says where ``log`` goes).

    Returns:
        The best model's path, epoch and validation score (meaningful on rank 0).

    Raises:
        DatasetFormatError: the data directory is not a dataset, or lacks a split.
        TrainingError: an option does not fit the data, or the loss diverged.
        CheckpointError: a bad ``--pretrained`` file or resume checkpoint.
        OutputExistsError: ``out_dir`` holds another run.
    """
    return run_finetune(make_config(data, task, out_dir, **options), log=log)
