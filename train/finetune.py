"""``alosmap train finetune``: the segmentation model trained on a labelled dataset.

The paper's values (Section III-B) are all options: AdamW, weight decay 0.05, base
LR 6e-4, layer-wise decay 0.7, min LR 1e-6, 10 warm-up epochs, 200 epochs for LULC
and 100 for water, α-scale 2.25, the ``paper`` preset at batch 64 per GPU
(``--preset paper --batch-size 64``). The defaults fit a laptop CPU: the ``small``
preset, batch 8 (never more than the training patches: a larger batch is lowered,
with a note), the threads torch picks (``--threads``).

**Where the model starts.** From random weights; from an encoder checkpoint
(``--pretrained``: SAR-W-MixMAE pretraining); or from a complete trained model
(``--init-from``: the bundled models or an earlier run's ``model.safetensors``):
encoder, decoder and head, in that model's architecture. Its legend must give the
same outputs as the dataset's labels (``--reinit-head`` trains a new head for
another legend). The model it starts from is evaluated on ``val`` and logged as
epoch 0, and saved as ``model.safetensors`` first: an epoch replaces it only with
a validation gain beyond the noise (below), so a run that does not help leaves the
model unchanged. ``--freeze encoder`` (or ``encoder+decoder``) trains only the
rest: frozen parameters take no gradient and are not in the optimiser, and their
BatchNorm layers keep their statistics (eval mode).

**Transfer defaults** (``--init-from``; values in :mod:`alosmap.train.defaults`):
20 epochs (from scratch: the paper's 100/200), an absolute LR of 3e-4 unless
``--lr``/``--blr`` is given (from scratch: the paper's rule, 1.9e-5 at batch 8), 1
warm-up epoch (the paper's 10) and early stopping after 5 epochs without a change
of the kept model (from scratch: off). On a few validation scenes a trained model
peaks within a few epochs, and later "gains" are mostly their noise: the keep rule
below, not a lower LR, is what keeps the starting model when nothing beats it (a
lower LR, 1e-4, was measured: it only moved more slowly on held-out scenes; see
:data:`alosmap.train.defaults.INIT_LR`).

**Validation knows its noise.** Validation keeps one confusion matrix per ``val``
patch (summed over ranks as one ``[N, K, K]`` all-reduce), pools them for the score
(``val_<metric>``: ``val_miou``, or ``val_iou_<positive class>`` of a binary legend,
``val_iou_water`` for water) and sums them per scene of the manifest
(``val_<metric>@<scene>`` columns). The units of the bootstrap are the scenes when
``val`` has at least 3, else its patches (which understates the spread between
scenes: a note says so at the start); 1000 resamples of the units, the same seeded
draws every epoch, give the 90 % interval ``val_<metric>_lo``/``_hi``. The loss of
the training objective on ``val`` is ``val_loss``.

**The kept model changes only beyond the noise.** An epoch replaces the kept model
(``model.safetensors``, ``kept_epoch``) when the 5th percentile of the paired
bootstrap of its gain (its score minus the kept one's on the same resampled units,
``gain_lo``) is above 0: in 95 % of the resamples of the validation scenes the new
model is better. Pairing cancels what both models share, that some scenes are
harder than others, so a gain that holds on every scene passes even when the
intervals overlap, while a gain that one lucky scene carries does not. The simpler
rule "gain > half the interval's width" ignores the pairing: it asks a gain as
large as the spread between scenes even when every scene improved, yet takes a
large gain made on one scene only. The first defined score is kept (epoch 0 with
``--init-from``).

**Early stopping** (``--patience N``; default 5 with ``--init-from``, 0 = off from
scratch): the run ends when the kept model has not changed for N epochs, i.e. when
``epoch − kept_epoch ≥ N``. Both come back from ``last.pt``, so a resumed run
counts on where it stopped, and a run that stopped early is finished (its resume
does nothing). The final line names the kept epoch, its score and interval, the
starting model's score (``--init-from``) and why the run ended.

**Normalisation.** ``--normalization data`` trains with the dataset's
training-split mean/std (the default from scratch); ``model`` with those of the
``--init-from`` model (its default: its weights expect them). The saved spec
records the radiometry the model was trained on: the dataset's band, units,
calibration and backscatter kind (``dataset.json``'s ``radiometry`` record, else
the ALOS-2 L2.1 defaults) and the clip range, mean and std used.

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
with layer-wise decay, AMP on CUDA), validate on ``val`` (confusion matrices per
patch summed over ranks, the loss), decide whether the epoch replaces the kept model
(the same decision on every rank), then on rank 0 only: save ``model.safetensors``
when it does (``last.safetensors`` every epoch with ``save_last``, ``epoch_NNN``
every ``save_every`` epochs), append the CSV log, redraw the validation curve,
TensorBoard scalars, and save ``last.pt`` (with the kept model's per-unit matrices)
for an exact resume.

Distributed details beyond the skeleton's:

* Validation patches are split ``rank::world_size`` without padding, so each is
  counted exactly once.
* **BatchNorm**: on CUDA the decoder's BatchNorm layers become
  :class:`~torch.nn.SyncBatchNorm` (statistics over the global batch, like a single
  process). SyncBatchNorm only runs on GPUs, so on CPU (gloo) each rank normalises
  with its own batch statistics; DDP then broadcasts rank 0's running statistics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alosmap._dist import DistInfo
from alosmap._fileio import atomic_write_bytes
from alosmap._version import __version__
from alosmap.arch import ArchConfig, get_preset
from alosmap.classes import Legend
from alosmap.errors import SpecError
from alosmap.metrics import (
    ConfusionMatrix,
    all_reduce_sum,
    batched_score,
    binary_metrics,
    bootstrap_scores,
    confusion_per_item,
    percentile_interval,
    threshold_probabilities,
)
from alosmap.models import build_model
from alosmap.radiometry import Radiometry
from alosmap.spec import (
    ModelSpec,
    default_spec,
    provenance_file,
    provenance_name,
    save_model,
)
from alosmap.train import defaults
from alosmap.train import distributed as ddp
from alosmap.train.checkpoint import (
    InitModel,
    load_init_weights,
    load_pretrained_encoder,
    read_init_model,
)
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.engine import Log, TrainingRun
from alosmap.train.errors import DatasetFormatError, TrainingError
from alosmap.train.losses import build_loss

__all__ = [
    "DEFAULT_EPOCHS",
    "FREEZE_CHOICES",
    "INIT_EPOCHS",
    "INIT_LR",
    "INIT_PATIENCE",
    "NORMALIZATION_CHOICES",
    "FinetuneConfig",
    "FinetuneResult",
    "FinetuneRun",
    "TrainingError",
    "Validation",
    "default_epochs",
    "finetune",
    "gain_beyond_noise",
    "make_config",
    "plot_curve",
    "run_finetune",
    "score_name",
]

#: Paper's finetuning length per bundled task (other legends: by kind, see
#: :func:`default_epochs`); with ``init_from``: :data:`INIT_EPOCHS`.
DEFAULT_EPOCHS = {"lulc": 200, "water": 100}
#: Epochs with ``init_from`` unless given (see :mod:`alosmap.train.defaults`).
INIT_EPOCHS = defaults.INIT_EPOCHS
#: Warm-up epochs by default: the paper's 10, and 1 when starting from a trained
#: model (never more than half the epochs).
DEFAULT_WARMUP = 10
INIT_WARMUP = defaults.INIT_WARMUP
#: Absolute LR with ``init_from`` unless one is given (the paper's rule at a
#: laptop's batch of 8 gives 1.9e-5, too little to move a trained model).
INIT_LR = defaults.INIT_LR
#: Early-stopping patience with ``init_from`` unless given (from scratch: 0, off).
INIT_PATIENCE = defaults.INIT_PATIENCE
#: Base LR (per 256 samples of global batch) of the paper.
DEFAULT_BLR = 6e-4
#: Patches per process and step by default (fits a laptop CPU; the paper: 64).
DEFAULT_BATCH = 8
#: Architecture preset by default without ``--init-from`` (the paper: ``paper``).
DEFAULT_PRESET = "small"
#: What ``--freeze`` may keep fixed: the parts of the model it names.
FREEZE_CHOICES: dict[str, tuple[str, ...]] = {
    "none": (),
    "encoder": ("encoder",),
    "encoder+decoder": ("encoder", "decoder"),
}
#: Whose mean/std the inputs are normalised with (``--normalization``).
NORMALIZATION_CHOICES = ("model", "data")
#: Architecture fields that may differ between ``--init-from`` and the run
#: (training regularisation and the head's width).
_FREE_ARCH_FIELDS = ("drop_path_rate", "dropout", "num_classes", "extra")

#: ``kind`` of a finetuning resume checkpoint.
RESUME_KIND = "alosmap-finetune"

#: Options that must not change between a run and its resume.
_RESUME_KEYS = (
    "data",
    "task",
    "init_from",
    "reinit_head",
    "normalization",
    "freeze",
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
        task: the legend's name: ``lulc`` or ``water`` for a dataset of JAXA codes;
            None (or its own legend's name) for a dataset of the user's labels.
        out_dir: run directory (``model.safetensors``, ``last.pt``, ``log.csv``,
            ``val_curve.png``, ``tb/``).
        pretrained: encoder checkpoint, or None.
        init_from: a complete model file to start from, or None.
        reinit_head: with ``init_from``: a new head (for another legend).
        normalization: ``model`` or ``data`` (whose mean/std to train with); None:
            ``model`` with ``init_from``, else ``data``.
        freeze: what stays fixed: ``none``, ``encoder``, ``encoder+decoder``.
        preset: architecture preset; None: ``small``, or ``init_from``'s own.
        highres: decoder high-resolution injection (None: the preset's/model's).
        refine_up: refine-up head (None: the preset's/model's).
        alpha_scale: α-scale of the focal term (multi-class legends).
        epochs: total epochs.
        warmup_epochs: linear warm-up epochs.
        batch_size: patches per process and step (lowered to fit the data).
        blr: base LR per 256 samples of global batch.
        lr: absolute LR (overrides ``blr``), or None.
        layer_decay: layer-wise LR decay.
        min_lr: LR at the end of the cosine.
        weight_decay: AdamW weight decay.
        drop_path: stochastic depth during training (0 in the saved spec).
        dropout: Dropout2d before the classifier (mmseg's 0.1).
        workers: DataLoader workers per process (default: min(4, the CPUs it
            may use), :func:`~alosmap.train.defaults.data_workers`).
        device: ``auto``, ``cpu``, ``cuda``.
        amp: mixed precision on CUDA.
        seed: seed of initialisation, shuffling and augmentation.
        resume: continue from ``out_dir/last.pt`` when it exists.
        augment: random flips/rot90 of training patches.
        sync_bn: SyncBatchNorm under DDP on CUDA.
        stop_after: stop after this many epochs in this invocation (resume later).
        patience: stop when the kept model has not changed for this many epochs
            (0: never; a changed value on resume only moves where the run stops).
        progress: draw a progress bar per epoch (rank 0, stderr).
        save_last: also save every epoch's model as ``last.safetensors``.
        save_every: also save ``epoch_NNN.safetensors`` every this many epochs.
        threads: torch CPU threads (None: torch's choice).
    """

    data: Path
    task: str | None
    out_dir: Path
    pretrained: Path | None = None
    init_from: Path | None = None
    reinit_head: bool = False
    normalization: str | None = None
    freeze: str = "none"
    preset: str | None = None
    highres: bool | None = None
    refine_up: bool | None = None
    alpha_scale: float = 2.25
    epochs: int = 200
    warmup_epochs: int = DEFAULT_WARMUP
    batch_size: int = DEFAULT_BATCH
    blr: float = DEFAULT_BLR
    lr: float | None = None
    layer_decay: float = 0.7
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    drop_path: float = 0.1
    dropout: float = 0.1
    workers: int = dataclasses.field(default_factory=defaults.data_workers)
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = True
    augment: bool = True
    sync_bn: bool = True
    stop_after: int | None = None
    patience: int = 0
    progress: bool = False
    save_last: bool = False
    save_every: int | None = None
    threads: int | None = None


@dataclass
class FinetuneResult:
    """Outcome of :func:`run_finetune` (meaningful on rank 0).

    Attributes:
        model_path: the kept model file.
        best_epoch: epoch of the kept model (0: the ``--init-from`` model,
            unchanged).
        best_score: its validation mIoU (multi-class) or IoU of the positive class
            (binary), in [0, 1].
        epochs_done: epochs completed so far (all invocations).
        finished: True when every configured epoch has run or the run stopped
            early (a resume does nothing more).
        interval: the kept model's 90 % bootstrap interval (NaN, NaN: none).
        start_score: the ``--init-from`` model's score (epoch 0), else None.
        stopped_early: the run ended by early stopping (``--patience``).
    """

    model_path: Path
    best_epoch: int
    best_score: float
    epochs_done: int
    finished: bool
    interval: tuple[float, float] = (math.nan, math.nan)
    start_score: float | None = None
    stopped_early: bool = False


@dataclass
class Validation:
    """One pass over ``val``.

    Attributes:
        patches: int64 ``[N, K, K]``: one confusion matrix per ``val`` patch, in the
            split's order, summed over ranks (each patch is on one rank).
        loss: the training loss on ``val``, averaged over batches and ranks.
    """

    patches: np.ndarray
    loss: float


def _number(value: Any) -> float:
    """A CSV cell as a float (an empty cell: NaN)."""
    return float(value) if value not in (None, "") else math.nan


def plot_curve(path: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """Training loss and validation score per epoch (like the paper's Fig. 2).

    Two panels: the training loss (``train_loss``, when the rows have it) and the
    validation score ``metric`` (a fraction in the rows) plotted in percent on a
    0-100 % axis, with its interval (``<metric>_lo``/``_hi``) shaded when the rows
    have it; the kept epoch (the last row's ``kept_epoch``) is marked, else the
    best.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in rows]
    score = [100.0 * _number(r[metric]) for r in rows]
    loss = [_number(r.get("train_loss")) for r in rows]
    has_loss = any(math.isfinite(v) for v in loss)
    fig = Figure(figsize=(10 if has_loss else 6, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_loss else 1, squeeze=False)[0]
    name = metric.removeprefix("val_")
    label = "mIoU" if name == "miou" else "IoU_" + name.removeprefix("iou_")
    if has_loss:
        ax = axes[0]
        ax.plot(epochs, loss, lw=1.5, color="C1", marker="." if len(rows) < 30 else "")
        ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax = axes[-1]
    ax.plot(epochs, score, lw=1.5, marker="." if len(rows) < 30 else "")
    if f"{metric}_lo" in rows[-1]:
        lo = [100.0 * _number(r.get(f"{metric}_lo")) for r in rows]
        hi = [100.0 * _number(r.get(f"{metric}_hi")) for r in rows]
        ax.fill_between(epochs, lo, hi, alpha=0.2, label="90 % interval")
    finite = [(s, e) for s, e in zip(score, epochs, strict=True) if math.isfinite(s)]
    kept = rows[-1].get("kept_epoch")
    if kept not in (None, "") and int(kept) in epochs:
        e = int(kept)
        s = score[epochs.index(e)]
        ax.scatter([e], [s], color="C3", zorder=3, label=f"kept {s:.1f} % (epoch {e})")
        ax.legend(loc="lower right")
    elif finite:
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


def score_name(legend: Legend) -> str:
    """The selection score's name: ``miou``, or ``iou_<positive class>`` (binary).

    The water legend's is ``iou_water``; a binary legend whose positive class is
    *Flooded* gives ``iou_flooded``.
    """
    return legend.metric


def _val_score(legend: Legend, matrix: np.ndarray) -> dict[str, float]:
    """The score (:func:`score_name`) and its companions from a pooled matrix."""
    if legend.binary:
        return binary_metrics(matrix, legend.positive.name)
    cm = ConfusionMatrix(legend.num_train_classes)
    cm.matrix[...] = matrix
    return {"miou": cm.miou(), "macc": cm.macc()}


def gain_beyond_noise(
    new: np.ndarray,
    kept: np.ndarray | None,
    binary: bool,
    *,
    resamples: int = defaults.BOOTSTRAP_RESAMPLES,
    seed: int = defaults.BOOTSTRAP_SEED,
    level: float = defaults.INTERVAL_LEVEL,
) -> tuple[bool, float]:
    """Whether a model scored ``new`` replaces the kept one, and the gain's bound.

    The paired bootstrap of the module docstring: the same resamples of the units
    score both models; the gain's lower bound is the ``(1 − level)/2`` percentile
    of the differences (the 5th at ``level`` 0.9), and the model replaces the kept
    one when it is above 0. With no kept model (or one without a defined score) a
    defined score replaces it.

    Args:
        new: ``[U, K, K]`` per-unit confusion matrices of the candidate.
        kept: the kept model's, on the same units, or None.
        binary: binary legend (IoU of class 1) or mIoU.
        resamples: bootstrap resamples.
        seed: seed of the draws.
        level: two-sided level whose lower percentile bounds the gain.

    Returns:
        ``(replace, gain_lo)``; ``gain_lo`` is NaN when nothing was compared.
    """
    score = float(batched_score(new.sum(axis=0), binary))
    if not math.isfinite(score):
        return False, math.nan
    if kept is None or not math.isfinite(float(batched_score(kept.sum(0), binary))):
        return True, math.nan
    ours, theirs = bootstrap_scores([new, kept], binary, resamples=resamples, seed=seed)
    lo, _hi = percentile_interval(ours - theirs, level)
    return bool(lo > 0), lo


def default_epochs(legend: Legend, init_from: bool = False) -> int:
    """Epochs by default: the paper's per task, or :data:`INIT_EPOCHS` (transfer).

    From a trained model (``init_from``): :data:`INIT_EPOCHS`; else the paper's per
    bundled task, 100 for other binary legends, 200 otherwise.
    """
    if init_from:
        return INIT_EPOCHS
    return DEFAULT_EPOCHS.get(legend.name, 100 if legend.binary else 200)


def _column_label(scene: str) -> str:
    """A scene's name as part of a column name (runs of odd characters → ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", scene) or "_"


def dataset_radiometry(data: TrainingData, stats: Radiometry) -> Radiometry:
    """The radiometry of a model trained on ``data``, normalised with ``stats``.

    Band, units, calibration factor and backscatter kind are what the dataset's
    images held (:attr:`~alosmap.train.data.TrainingData.image_radiometry`: its
    ``radiometry`` record, else the ALOS-2 L2.1 defaults); the clip range, mean and
    std are ``stats``'.

    Raises:
        DatasetFormatError: a bad ``radiometry`` record.
    """
    return data.input_radiometry(stats.clip_db, stats.mean_db, stats.std_db)


def _arch_differences(model: ArchConfig, wanted: ArchConfig) -> list[str]:
    """``field model-value ≠ wanted-value`` for the fields that must agree."""
    a, b = model.to_dict(), wanted.to_dict()
    return [
        f"{k} {a[k]} ≠ {b[k]}" for k in a if k not in _FREE_ARCH_FIELDS and a[k] != b[k]
    ]


class FinetuneRun(TrainingRun[FinetuneConfig, FinetuneResult]):
    """One finetuning process (see :func:`finetune`)."""

    kind = RESUME_KIND
    product = "model.safetensors"
    resume_keys = _RESUME_KEYS
    cfg: FinetuneConfig

    def __init__(self, cfg: FinetuneConfig, info: DistInfo, log: Log) -> None:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.init: InitModel | None = (
            read_init_model(cfg.init_from) if cfg.init_from is not None else None
        )
        super().__init__(cfg, info, log)
        self.metric = score_name(self.legend)
        self.arch = self._architecture()
        self.radiometry = dataset_radiometry(
            self.data,
            self.init.spec.radiometry
            if self.normalization == "model" and self.init is not None
            else self.data.radiometry,
        )
        self.best_score = -math.inf
        self.best_epoch = 0
        self.improved = False
        #: the kept model's per-unit confusion matrices (the noise's reference)
        self.kept_units: np.ndarray | None = None
        #: the latest validation pass, and its keep decision's log columns
        self.val: Validation | None = None
        self.keep_columns: dict[str, Any] = {}

    @cached_property
    def legend(self) -> Legend:
        """The legend of the dataset's labels (the model's outputs)."""
        return self.data.legend(self.cfg.task)

    @property
    def normalization(self) -> str:
        """``model`` or ``data``: whose mean/std the inputs are normalised with."""
        return self.cfg.normalization or ("data" if self.init is None else "model")

    # -- setup -----------------------------------------------------------------------
    def check_data(self) -> None:
        """Train and val patches, a batch that fits, class counts, coherent options."""
        data = self.data
        for split in ("train", "val"):
            if len(data.indices(split)) == 0:
                raise DatasetFormatError(
                    f"{data.root}: no {split!r} patches; finetuning needs train and "
                    "val splits (see the --split options of build-dataset)"
                )
        self._fit_batch(len(data.indices("train")))
        legend = self.legend
        if not legend.binary and legend.name not in data.record.class_counts:
            raise DatasetFormatError(
                f"{data.root}: dataset.json has no {legend.name} class counts"
            )
        self._check_options()

    def _fit_batch(self, n_train: int) -> None:
        """Lower ``batch_size`` to what the training patches fill (with a note)."""
        cfg, world = self.cfg, self.info.world_size
        per = n_train // world
        if per < 2:
            raise TrainingError(
                f"{n_train} training patches for {world} process(es): each process "
                "needs at least 2 (BatchNorm); add patches or run fewer processes"
            )
        if cfg.batch_size > per:
            procs = f" × {world} processes" if world > 1 else ""
            self.log(
                f"note: --batch-size {cfg.batch_size}{procs} is more than the "
                f"{n_train} training patches; using --batch-size {per}"
            )
            self.cfg = dataclasses.replace(cfg, batch_size=per)

    def _check_options(self) -> None:
        """Refuse option combinations that make no sense (one line each)."""
        cfg = self.cfg
        if cfg.freeze not in FREEZE_CHOICES:
            raise TrainingError(
                f"--freeze {cfg.freeze!r}: choose {', '.join(FREEZE_CHOICES)}"
            )
        if cfg.normalization not in (None, *NORMALIZATION_CHOICES):
            raise TrainingError(
                f"--normalization {cfg.normalization!r}: choose model or data"
            )
        if cfg.save_every is not None and cfg.save_every < 1:
            raise TrainingError(f"--save-every {cfg.save_every}: expected >= 1")
        if cfg.patience < 0:
            raise TrainingError(f"--patience {cfg.patience}: expected >= 0 (0: off)")
        if self.init is not None:
            if cfg.pretrained is not None:
                raise TrainingError(
                    "--pretrained and --init-from both give the starting weights; "
                    "choose one"
                )
            return
        if cfg.normalization == "model":
            raise TrainingError(
                "--normalization model takes the mean/std of the --init-from model; "
                "without --init-from use --normalization data"
            )
        if cfg.reinit_head:
            raise TrainingError("--reinit-head re-initialises an --init-from model")
        if cfg.freeze == "encoder+decoder" or (
            cfg.freeze == "encoder" and cfg.pretrained is None
        ):
            raise TrainingError(
                f"--freeze {cfg.freeze} keeps trained weights fixed: it needs "
                "--init-from"
                + (" (or --pretrained)" if cfg.freeze == "encoder" else "")
            )

    def _switches(self) -> dict[str, bool]:
        """``highres``/``refine_up`` given explicitly."""
        cfg = self.cfg
        pairs = (("highres", cfg.highres), ("refine_up", cfg.refine_up))
        return {k: v for k, v in pairs if v is not None}

    def _architecture(self) -> ArchConfig:
        """The preset's or the ``--init-from`` model's architecture, for this run.

        Outputs of the legend; the run's drop path and dropout.
        """
        cfg = self.cfg
        if self.init is None:
            arch = get_preset(
                cfg.preset or DEFAULT_PRESET,
                img_size=self.data.patch_size,
                **self._switches(),
            )
        else:
            arch = self._init_architecture(self.init)
        return arch.replace(
            drop_path_rate=cfg.drop_path,
            dropout=cfg.dropout,
            num_classes=self.legend.num_outputs,
        )

    def _init_architecture(self, init: InitModel) -> ArchConfig:
        """``init``'s architecture, checked against the legend, options and data."""
        cfg, spec, legend = self.cfg, init.spec, self.legend
        if not spec.legend.same_outputs(legend) and not cfg.reinit_head:
            raise TrainingError(
                f"--init-from {init.path}: its outputs are the {spec.legend.name!r} "
                f"legend ({', '.join(spec.legend.names)}), the dataset's labels follow "
                f"{legend.name!r} ({', '.join(legend.names)}); pass --reinit-head to "
                "train a new head for them"
            )
        arch = spec.arch
        wanted = (
            get_preset(cfg.preset, img_size=arch.img_size, **self._switches())
            if cfg.preset is not None
            else arch.replace(**self._switches())
        )
        diff = _arch_differences(arch, wanted)
        if diff:
            what = f"--preset {cfg.preset}" if cfg.preset else "the options"
            raise TrainingError(
                f"--init-from {init.path} has another architecture than {what} "
                f"({'; '.join(diff[:3])}); leave --preset/--no-highres/--no-refine-up "
                "out to train the model's own"
            )
        patch = self.data.patch_size
        if patch % arch.img_size:  # the same weights, built for the patches' size
            try:
                arch = arch.with_tile_size(patch)
            except SpecError as exc:  # it lists the sizes that fit
                raise TrainingError(
                    f"{self.data.root}: its {patch}-px patches do not fit the model "
                    f"{init.path}: {exc}; build the dataset with a --patch-size of one "
                    "of those"
                ) from exc
            self.log(
                f"note: {init.path.name} maps {spec.tile_size}-px tiles; this run "
                f"and its model use {patch}-px tiles (the dataset's patches)"
            )
        return arch

    def create_model(self, fresh: bool) -> nn.Module:
        """The model; on a fresh run from ``--init-from`` or ``--pretrained``.

        The frozen parts take no gradient.
        """
        model = build_model(self.arch)
        if fresh and self.init is not None:
            self.log(
                load_init_weights(model, self.init, reinit_head=self.cfg.reinit_head)
            )
        elif fresh and self.cfg.pretrained is not None:
            report = load_pretrained_encoder(model.encoder, self.cfg.pretrained)
            self.log(report.summary())
        parts = FREEZE_CHOICES[self.cfg.freeze]
        for part in parts:
            getattr(model, part).requires_grad_(False)
        if parts:
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.log(f"frozen: {' and '.join(parts)}; {n:,} parameters train")
        return model

    def set_train_mode(self) -> None:
        """Training mode, but the frozen parts in eval (their BatchNorm stays)."""
        super().set_train_mode()
        for part in FREEZE_CHOICES[self.cfg.freeze]:
            getattr(self.model, part).eval()

    def layer_decay(self) -> float:
        """``--layer-decay`` over the Swin blocks."""
        return self.cfg.layer_decay

    def sync_batchnorm(self) -> bool:
        """``sync_bn``."""
        return self.cfg.sync_bn

    def prepare(self) -> None:
        """The legend's loss (class weights from the training split) and val data."""
        cfg, legend = self.cfg, self.legend
        counts = None if legend.binary else self.data.class_counts(legend)
        extra = {} if legend.binary else {"alpha_scale": cfg.alpha_scale}
        self.loss_fn = build_loss(legend, class_counts=counts, **extra).to(self.device)
        self._val_loader()
        self._val_units()

    def _patches(self, split: str, **options: Any) -> PatchDataset:
        """A split's patches, normalised with the run's radiometry."""
        return PatchDataset(
            self.data, split, self.legend, radiometry=self.radiometry, **options
        )

    def _val_loader(self) -> None:
        from torch.utils.data import DataLoader, Subset

        info = self.info
        val = self._patches("val")
        #: this rank's val patches: positions in the split, in the loader's order
        self.val_positions = np.arange(info.rank, len(val), info.world_size)
        shard = Subset(val, self.val_positions.tolist())
        self.val_loader = DataLoader(
            shard,
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )
        scene = {r.index: r.scene for r in self.data.records}
        names = [scene[int(j)] for j in val.idx]
        #: the val scenes in order of appearance, and each val patch's scene
        self.val_scenes = list(dict.fromkeys(names))
        where = {name: i for i, name in enumerate(self.val_scenes)}
        self.val_scene_of = np.array([where[n] for n in names], dtype=np.int64)

    def _val_units(self) -> None:
        """Scenes or patches as the bootstrap's units; a note when patches."""
        n_scenes, n = len(self.val_scenes), len(self.val_scene_of)
        self.by_scene = n_scenes >= defaults.MIN_VAL_SCENES
        if not self.by_scene:
            self.log(
                f"note: val holds {n} patches of {n_scenes} scene(s): the interval "
                "resamples patches, which understates how much scores vary between "
                f"scenes; hold out >= {defaults.MIN_VAL_SCENES} scenes for val"
            )

    def _units(self, patches: np.ndarray) -> np.ndarray:
        """The bootstrap units' matrices: per scene (summed), else per patch."""
        return self._per_scene(patches) if self.by_scene else patches

    def _per_scene(self, patches: np.ndarray) -> np.ndarray:
        """``[S, K, K]``: the patches' matrices summed per val scene."""
        out = np.zeros((len(self.val_scenes), *patches.shape[1:]), dtype=np.int64)
        np.add.at(out, self.val_scene_of, patches)
        return out

    def train_dataset(self) -> PatchDataset:
        """The ``train`` split, labels of the legend."""
        return self._patches("train", augment=self.cfg.augment, seed=self.cfg.seed)

    def on_start(self) -> None:
        """Epoch 0 of an ``--init-from`` run: the model it starts from, on val.

        It is the kept model (saved as ``model.safetensors``); an epoch replaces it
        only with a gain beyond the noise.
        """
        if self.init is None or self.resumed:
            return
        t0 = time.perf_counter()
        val = self.validate()
        self._keep(0)
        self.improved = True  # the starting model is the product until replaced
        secs = time.perf_counter() - t0
        row = {"epoch": 0, "lr": 0.0, **self.log_columns({}, val)}
        self.finish_row({**row, "seconds": round(secs, 3)}, secs)

    def checkpoint_state(self) -> dict[str, Any]:
        """Progress, the kept model's score, epoch and per-unit matrices."""
        kept = self.kept_units
        return {
            **super().checkpoint_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "kept_units": None if kept is None else torch.from_numpy(kept.copy()),
        }

    def restore_state(self, ckpt: dict[str, Any], rng: dict[str, Any]) -> None:
        """The kept model's score, epoch and per-unit matrices."""
        self.best_score = float(ckpt["best_score"])
        self.best_epoch = int(ckpt["best_epoch"])
        kept = ckpt["kept_units"]
        self.kept_units = None if kept is None else kept.numpy().astype(np.int64)

    # -- one epoch -------------------------------------------------------------------
    def training_step(
        self, batch: Any
    ) -> tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """The legend's loss on one batch; logs the total and its terms."""
        x, y = batch
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.ddp_model(x)
        parts = self.loss_fn(logits, y, return_parts=True)
        return parts.total, parts.as_floats()

    @torch.no_grad()
    def validation_pass(self) -> Validation:
        """Per-patch confusion matrices and the loss on ``val`` (every rank)."""
        legend = self.legend
        k = legend.num_train_classes
        model = self.model.eval()
        local = np.zeros((len(self.val_scene_of), k, k), dtype=np.int64)
        done, loss, batches = 0, 0.0, 0
        for x, y in self.val_loader:
            with self.autocast():
                logits = model(x.to(self.device, non_blocking=True))
            loss += float(self.loss_fn(logits, y.to(self.device, non_blocking=True)))
            batches += 1
            if legend.binary:
                pred = threshold_probabilities(torch.sigmoid(logits[:, 0].float()))
            else:
                pred = logits.argmax(1).cpu()
            at = self.val_positions[done : done + len(y)]
            local[at] = confusion_per_item(pred, y, k)
            done += len(y)
        sums = ddp.reduce_sums({"loss": loss, "batches": float(batches)})
        mean = sums["loss"] / sums["batches"] if sums["batches"] else math.nan
        return Validation(all_reduce_sum(local), mean)

    def validate(self) -> dict[str, float]:
        """The scores on ``val``: pooled, their interval, per scene, and the loss.

        Keys: ``loss``, the score (:func:`score_name`), ``<score>_lo``/``_hi``
        (the bootstrap interval), its companions (mAcc; precision and recall) and
        ``<score>@<scene>`` per val scene. The pass is kept for the keep decision.
        """
        self.val = val = self.validation_pass()
        legend, metric = self.legend, self.metric
        scores = _val_score(legend, val.patches.sum(axis=0))
        (samples,) = bootstrap_scores(
            [self._units(val.patches)],
            legend.binary,
            resamples=defaults.BOOTSTRAP_RESAMPLES,
            seed=defaults.BOOTSTRAP_SEED,
        )
        lo, hi = percentile_interval(samples, defaults.INTERVAL_LEVEL)
        per_scene = batched_score(self._per_scene(val.patches), legend.binary)
        return {
            "loss": val.loss,
            metric: scores.pop(metric),
            f"{metric}_lo": lo,
            f"{metric}_hi": hi,
            **scores,
            **{
                f"{metric}@{_column_label(name)}": float(v)
                for name, v in zip(self.val_scenes, per_scene, strict=True)
            },
        }

    # -- bookkeeping -----------------------------------------------------------------
    def _keep(self, epoch: int) -> None:
        """Whether the model just validated replaces the kept one (every rank).

        Sets :attr:`improved` and the ``gain_lo``/``kept_epoch`` log columns.
        """
        assert self.val is not None
        units = self._units(self.val.patches)
        kept = self.kept_units
        binary = self.legend.binary
        score = _val_score(self.legend, units.sum(axis=0))[self.metric]
        if kept is not None and kept.shape != units.shape:
            kept = None  # val changed under a resume: compare the scores alone
        if kept is None and math.isfinite(self.best_score):
            replace, gain_lo = score > self.best_score, math.nan
        else:
            replace, gain_lo = gain_beyond_noise(units, kept, binary)
        self.improved = replace
        if replace:
            self.best_score, self.best_epoch = score, epoch
            self.kept_units = units
        self.keep_columns = {"kept_epoch": self.best_epoch}
        if math.isfinite(gain_lo):
            self.keep_columns = {"gain_lo": gain_lo, **self.keep_columns}

    def end_epoch(
        self, train: dict[str, float], val: dict[str, float], secs: float
    ) -> None:
        """Decide on the kept model, then the skeleton's end of epoch."""
        self._keep(self.epoch + 1)
        super().end_epoch(train, val, secs)

    def log_columns(
        self, train: dict[str, float], val: dict[str, float]
    ) -> dict[str, Any]:
        """``train_<loss term>``, ``val_<...>``, ``gain_lo`` and ``kept_epoch``."""
        return {
            **{f"train_{k}": v for k, v in train.items()},
            **{f"val_{k}": v for k, v in val.items()},
            **self.keep_columns,
        }

    def should_stop(self) -> bool:
        """Early stopping: the kept model unchanged for ``patience`` epochs."""
        patience = self.cfg.patience
        return patience > 0 and self.epoch - self.best_epoch >= patience

    @cached_property
    def _inputs(self) -> dict[str, str]:
        """The provenance of the run's inputs (hashed once, not at every save).

        Files are named without this machine's paths: the dataset by its folder's
        name and the SHA-256 of its ``dataset.json``, the ``--pretrained`` and
        ``--init-from`` files by their names and SHA-256.
        """
        cfg = self.cfg
        data = provenance_file("data_json", Path(cfg.data) / "dataset.json")
        start = {
            "data": provenance_name(Path(cfg.data).resolve()),
            **{k: v for k, v in data.items() if k != "data_json"},
        }
        if cfg.pretrained is not None:
            start |= provenance_file("pretrained", cfg.pretrained)
        else:
            start["pretrained"] = "none"
        if self.init is not None:
            start |= provenance_file("init_from", self.init.path)
            start["init_from"] += f" ({self.init.spec.name})"
            if cfg.reinit_head:
                start["reinit_head"] = "yes"
        elif cfg.pretrained is None:
            start["pretrained"] = "none (scratch)"
        return start

    def _provenance(self) -> dict[str, str]:
        """Where the weights of the epoch being saved come from."""
        cfg = self.cfg
        score = float(self.rows[-1][f"val_{self.metric}"]) if self.rows else math.nan
        return {
            "alosmap_version": __version__,
            "command": "alosmap train finetune",
            **self._inputs,
            "preset": cfg.preset or ("init-from" if self.init else DEFAULT_PRESET),
            "normalization": self.normalization,
            "freeze": cfg.freeze,
            "epochs": str(cfg.epochs),
            "epoch": str(self.epoch),
            f"val_{self.metric}": f"{score:.6f}",
            "best_epoch": str(self.best_epoch),
            "global_batch": str(self.global_batch),
            "lr": f"{self.base_lr:.3g}",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _spec(self) -> ModelSpec:
        """The spec of the model as it is now (this epoch)."""
        name = (
            f"{self.cfg.preset or DEFAULT_PRESET}-{self.legend.name}"
            if self.init is None
            else f"{self.legend.name}-from-{self.init.path.stem}"
        )
        return default_spec(
            self.legend,
            self.arch.replace(drop_path_rate=0.0),
            radiometry=self.radiometry,
            name=name,
            provenance=self._provenance(),
        )

    def save_products(self) -> None:
        """The epoch's model files.

        ``model.safetensors`` when the score improved (and the epoch-0 model);
        ``last.safetensors`` and ``epoch_NNN.safetensors`` when asked.
        """
        cfg, e = self.cfg, self.epoch
        names = ["model.safetensors"] if self.improved else []
        if e >= 1 and cfg.save_last:
            names.append("last.safetensors")
        if e >= 1 and cfg.save_every and e % cfg.save_every == 0:
            names.append(f"epoch_{e:03d}.safetensors")
        if not names:
            return
        spec = self._spec()
        inputs = [p for p in (cfg.pretrained, cfg.init_from) if p is not None]
        for name in names:
            save_model(self.model, spec, self.out / name, overwrite=True, inputs=inputs)

    def draw(self) -> None:
        """``val_curve.png``."""
        plot_curve(self.out / "val_curve.png", self.rows, f"val_{self.metric}")

    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """Every column but the epoch."""
        return {k: v for k, v in row.items() if k != "epoch"}

    def _score_text(self, row: dict[str, Any]) -> str:
        """``76.60% [70.12-82.30]``: a row's score and interval, in percent."""
        m = f"val_{self.metric}"
        lo, hi = _number(row.get(f"{m}_lo")), _number(row.get(f"{m}_hi"))
        text = f"{100 * _number(row.get(m)):.2f}%"
        return text + (f" [{100 * lo:.2f}-{100 * hi:.2f}]" if math.isfinite(lo) else "")

    def epoch_message(self, row: dict[str, Any], secs: float) -> str:
        """Losses, validation score and interval, the kept model, time."""
        val = f"val loss {_number(row.get('val_loss')):.4f}  {self.metric} "
        val += self._score_text(row)
        if row["epoch"] == 0:
            return f"epoch 0 (the --init-from model)  {val}  {secs:.1f}s"
        loss = _number(row.get("train_loss"))
        gain = (
            f" (gain >= {100 * row['gain_lo']:+.2f} pts in 95 % of resamples)"
            if "gain_lo" in row
            else ""
        )
        if self.improved:
            kept = "kept" + gain
        else:
            kept = f"kept: epoch {self.best_epoch} {100 * self.best_score:.2f}%{gain}"
        return (
            f"epoch {self.epoch}/{self.cfg.epochs}  loss {loss:.4f}  {val}  {kept}  "
            f"{secs:.1f}s"
        )

    def _row(self, epoch: int) -> dict[str, Any] | None:
        """The log row of ``epoch`` (None: not in the log)."""
        return next((r for r in self.rows if int(r["epoch"]) == epoch), None)

    def _why_stopped(self) -> str:
        """Why the loop ended: all epochs, early stopping, or ``stop_after``."""
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            return f"all {cfg.epochs} epochs done"
        if self.should_stop():
            return (
                f"early stop after epoch {self.epoch} of {cfg.epochs}: "
                f"{self.epoch - self.best_epoch} epochs without a gain beyond the "
                f"noise (--patience {cfg.patience})"
            )
        return (
            f"paused after epoch {self.epoch} of {cfg.epochs} (--stop-after); run "
            "the same command again to resume"
        )

    def final_message(self) -> str:
        """The kept epoch, its score ± interval, the start's score, why it ended."""
        e = self.best_epoch
        kept, start = self._row(e), self._row(0)
        if kept is None:
            why = self._why_stopped()
            return f"no model kept (no defined val {self.metric}); {why}"
        what = " (the --init-from model, unchanged)" if e == 0 else ""
        units = "scenes" if self.by_scene else "patches"
        text = (
            f"kept epoch {e}{what}: {self.metric} {self._score_text(kept)} "
            f"(90 % interval over {units})"
        )
        if start is not None and e != 0:
            text += f"; the --init-from model (epoch 0): {self._score_text(start)}"
        return f"{text}; {self._why_stopped()}"

    def result(self) -> FinetuneResult:
        """The kept model's path, epoch, score and interval; the start's score."""
        m = f"val_{self.metric}"
        kept, start = self._row(self.best_epoch), self._row(0)
        lo = _number(kept.get(f"{m}_lo")) if kept else math.nan
        hi = _number(kept.get(f"{m}_hi")) if kept else math.nan
        early = self.should_stop() and self.epoch < self.cfg.epochs
        return FinetuneResult(
            model_path=self.out / "model.safetensors",
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            epochs_done=self.epoch,
            finished=self.epoch >= self.cfg.epochs or early,
            interval=(lo, hi),
            start_score=_number(start.get(m)) if start is not None else None,
            stopped_early=early,
        )


#: Run one process of a torchrun job (or the only one); see :func:`finetune`.
run_finetune = FinetuneRun.launch


def make_config(
    data: str | Path,
    task: str | None,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    warmup_epochs: int | None = None,
    patience: int | None = None,
    **options: Any,
) -> FinetuneConfig:
    """Build the run configuration, filling the defaults that depend on the data.

    Args:
        data: dataset directory.
        task: ``lulc`` or ``water`` for a dataset of JAXA codes; None for a
            dataset with its own legend.
        out_dir: run directory.
        epochs: total epochs; default :func:`default_epochs` (20 with
            ``init_from``; else 200 LULC, 100 water).
        warmup_epochs: default 10, or 1 with ``init_from``; at most half the
            epochs.
        patience: early stopping (epochs without a change of the kept model);
            default 5 with ``init_from``, else 0 (off).
        **options: any other :class:`FinetuneConfig` field; with ``init_from`` and
            neither ``lr`` nor another ``blr``, ``lr`` is :data:`INIT_LR`.

    Raises:
        DatasetFormatError: not a dataset, or one that cannot serve ``task``.
    """
    legend = TrainingData(data).legend(task)
    transfer = bool(options.get("init_from"))
    n_epochs = default_epochs(legend, transfer) if epochs is None else int(epochs)
    if warmup_epochs is None:
        start = INIT_WARMUP if transfer else DEFAULT_WARMUP
        warmup_epochs = min(start, n_epochs // 2)
    if patience is None:
        patience = INIT_PATIENCE if transfer else 0
    if (
        transfer
        and options.get("lr") is None
        and options.get("blr", DEFAULT_BLR) == DEFAULT_BLR
    ):
        options["lr"] = INIT_LR
    pretrained, init_from = (
        options.pop("pretrained", None),
        options.pop("init_from", None),
    )
    return FinetuneConfig(
        data=Path(data),
        task=legend.name,
        out_dir=Path(out_dir),
        pretrained=Path(pretrained) if pretrained else None,
        init_from=Path(init_from) if init_from else None,
        epochs=n_epochs,
        warmup_epochs=int(warmup_epochs),
        patience=int(patience),
        **options,
    )


def finetune(
    data: str | Path,
    task: str | None,
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
        DatasetFormatError: the data directory is not a dataset, lacks a split or
            cannot serve ``task``.
        TrainingError: an option does not fit the data or the ``--init-from``
            model, or the loss diverged.
        CheckpointError: a bad ``--pretrained``/``--init-from`` file or resume
            checkpoint.
        OutputExistsError: ``out_dir`` holds another run.
    """
    return run_finetune(make_config(data, task, out_dir, **options), log=log)
