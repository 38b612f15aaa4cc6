"""The run skeleton that finetuning and pretraining share.

:class:`TrainingRun` is a template, like TorchGeo's ``BaseTask`` or a Lightning
module: it owns the device, AMP, DDP, the training sampler and loader, the learning
rate schedule, the epoch loop, ``log.csv``, TensorBoard and the exact-resume
checkpoint ``last.pt`` (resume, restore, save). A subclass supplies what differs:
the model and its optimiser settings, the training dataset, the loss of one batch,
validation, the columns of a log row and the end-of-epoch products. A fix to
resume, AMP or DDP is made here, once.

Per epoch: train on this rank's shard (the LR is set before every step: linear
warm-up, then a cosine), validate (if the subclass does), then on rank 0 only:
write the products, rewrite ``log.csv``, redraw the figures, add the TensorBoard
scalars and log a line; then ``last.pt`` is saved. Files are written atomically,
``last.pt`` last, so a kill at any point resumes from a consistent epoch. The loop
ends after the configured epochs, after ``stop_after`` epochs of this call, or when
the subclass says so (:meth:`TrainingRun.should_stop`: early stopping, decided
from the state ``last.pt`` holds, so a resumed run stops where a straight one
would); then the subclass's final line is logged.

Details:

* One process per device; under torchrun the process group is joined first
  (NCCL on CUDA, gloo on CPU) and the model wrapped in DDP. ``batch_size`` is per
  process; the global batch (``batch_size · world_size``) sets the LR through
  :func:`~alosmap.train.optim.scaled_lr` unless an absolute ``lr`` is given.
* Training shards come from :class:`~torch.utils.data.DistributedSampler`
  (``set_epoch`` every epoch, ``drop_last``), or, when the dataset's patches
  have unequal weights (the manifest's ``weight`` column), from
  ``distributed.WeightedSampler`` (drawn ∝ weight). The losses are batch-level
  statistics, so DDP optimises the mean of the per-rank losses, the usual
  data-parallel objective.
* AMP: bf16 autocast on CUDA when the GPU supports it, else fp16 with a
  GradScaler; fp32 on CPU. Without a scaler a non-finite loss stops the run.
* Seeds: the model is initialised from ``seed`` (the same on every rank), the
  per-rank random streams (dropout, drop path, augmentation) from ``seed + rank``.
  ``last.pt`` stores every rank's RNG states, so a resumed run continues exactly.
* The ``lr`` column of ``log.csv`` is the LR of the optimiser's last parameter
  group: the decoder and head, whose layer-wise scale is 1, so it is the
  schedule's own value (in pretraining, without layer-wise decay, every group has
  it).
* A run that fails before its first row is saved (a bad ``--pretrained`` file, a
  checkpoint of another shape, an interrupt in the first epoch) leaves nothing:
  the run directory (and its parents) that this run created are removed again. A
  directory that was there before is never removed, nor is anything in it.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import Field, asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import nn

from alosmap._dist import DistInfo
from alosmap._fileio import atomic_write_bytes
from alosmap._version import __version__
from alosmap.train import distributed as ddp
from alosmap.train.checkpoint import (
    atomic_torch_save,
    capture_rng,
    open_run,
    restore_rng,
)
from alosmap.train.data import PatchDataset, TrainingData
from alosmap.train.errors import TrainingError
from alosmap.train.optim import build_optimizer, lr_at, scaled_lr, set_lr

if TYPE_CHECKING:
    from alosmap.arch import ArchConfig

__all__ = [
    "RunConfig",
    "TrainingError",
    "TrainingRun",
    "amp_dtype",
    "resolve_device",
    "wants_cuda",
    "write_csv",
]

#: Receives progress lines (rank 0 only).
Log = Callable[[str], None]

#: The line a run logs once when the tensorboard package is not installed.
TENSORBOARD_MISSING = "TensorBoard logs skipped: pip install 'alosmap[train]'"
#: The line a run logs once when matplotlib is not installed (no PNG figures).
FIGURES_MISSING = "figures (PNG) skipped: pip install 'alosmap[plot]'"


class RunConfig(Protocol):
    """The options every run has (both configurations are dataclasses)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    data: Path
    out_dir: Path
    epochs: int
    warmup_epochs: int
    batch_size: int
    blr: float
    lr: float | None
    min_lr: float
    weight_decay: float
    augment: bool
    workers: int
    device: str
    amp: bool
    seed: int
    resume: bool
    stop_after: int | None
    progress: bool


ConfigT = TypeVar("ConfigT", bound=RunConfig)
ResultT = TypeVar("ResultT")


def resolve_device(name: str, local_rank: int) -> torch.device:
    """The torch device of ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    ``cuda`` picks GPU ``local_rank`` (one GPU per torchrun process).

    Raises:
        TrainingError: CUDA asked for but unavailable, or an unknown name.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available here")
        return torch.device("cuda", local_rank if name == "cuda" else int(name[5:]))
    if name != "cpu":
        raise TrainingError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device("cpu")


def wants_cuda(device: str) -> bool:
    """Whether ``--device`` resolves to CUDA (NCCL process group) here."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 (else fp16) on CUDA with ``amp``; None for fp32."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the per-epoch log atomically (the whole file from ``rows``).

    The columns are the keys of the last row, then any other key of the rows; a
    row without one (the epoch-0 row of a run that starts from a trained model has
    no training loss) leaves its cell empty.
    """
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in (rows[-1], *rows) for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def make_run_dir(path: Path) -> list[Path]:
    """Create the run directory and its missing parents, one by one.

    Returns:
        The directories this call created, outermost first (empty when ``path``
        was there). One made meanwhile by another process is not counted.
    """
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p) and p.parent != p:
        missing.append(p)
        p = p.parent
    made: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        made.append(d)
    path.mkdir(parents=True, exist_ok=True)  # an error when it is not a directory
    return made


def remove_made_dirs(made: list[Path]) -> None:
    """Remove what :func:`make_run_dir` created: the run directory, empty parents.

    The innermost (the run directory, with everything this run wrote in it) goes
    whole; each parent only while it is empty. Failures are only logged: the
    caller is already reporting the error that stopped the run.
    """
    if not made:
        return
    try:
        shutil.rmtree(made[-1])
        for d in reversed(made[:-1]):
            d.rmdir()
    except OSError as exc:
        logging.getLogger(__name__).debug("left %s: %s", made[-1], exc)


def _quiet(_msg: str) -> None:
    """The log of ranks other than 0."""


class TrainingRun(ABC, Generic[ConfigT, ResultT]):
    """One process of a training run: the skeleton, with hooks for subclasses.

    Subclasses set the class attributes, ``arch`` (in ``__init__``) and implement
    the abstract methods; the other hooks have defaults.

    Attributes:
        kind: ``kind`` of the resume checkpoint (refused by another kind of run).
        product: the file a finished run leaves; present without ``last.pt``, the
            directory is someone else's result and is refused.
        resume_keys: options that must not change between a run and its resume.
        betas: AdamW's betas.
        arch: the architecture (its depths group the layer-wise LR decay).
    """

    kind: ClassVar[str]
    product: ClassVar[str]
    resume_keys: ClassVar[tuple[str, ...]]
    betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    arch: ArchConfig

    def __init__(self, cfg: ConfigT, info: DistInfo, log: Log) -> None:
        self.cfg = cfg
        self.info = info
        self.log = log if info.primary else _quiet
        self.out = Path(cfg.out_dir)
        self.device = resolve_device(cfg.device, info.local_rank)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.data = TrainingData(cfg.data)
        self.check_data()  # may settle options (self.cfg) that do not fit the data
        cfg = self.cfg
        self.global_batch = cfg.batch_size * info.world_size
        self.base_lr = (
            cfg.lr if cfg.lr is not None else scaled_lr(cfg.blr, self.global_batch)
        )
        self.resumed = False
        self.epoch = 0
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.tb: Any = None
        self.figures = False  # matplotlib is there (rank 0): draw()
        #: directories this run created (rank 0), removed if it fails before a save
        self.made_dirs: list[Path] = []
        self.saved = False  # a row of this run was saved (its products, last.pt)

    # -- hooks -----------------------------------------------------------------------
    @abstractmethod
    def check_data(self) -> None:
        """Refuse data and options that cannot train (raise with a fix)."""

    @abstractmethod
    def create_model(self, fresh: bool) -> nn.Module:
        """The model on the CPU; ``fresh`` is False when a checkpoint will load."""

    def layer_decay(self) -> float:
        """Layer-wise LR decay of the optimiser (1: none)."""
        return 1.0

    def sync_batchnorm(self) -> bool:
        """Whether BatchNorm becomes SyncBatchNorm under DDP on CUDA."""
        return False

    def prepare(self) -> None:
        """Build what the steps need besides model and optimiser (loss, data)."""

    @abstractmethod
    def train_dataset(self) -> PatchDataset:
        """The dataset of the training split (augmented, seeded)."""

    @abstractmethod
    def training_step(
        self, batch: Any
    ) -> tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """The loss of one batch and the values to average over the epoch."""

    def set_train_mode(self) -> None:
        """Put the model in training mode before an epoch (all of it by default)."""
        self.ddp_model.train()

    def validate(self) -> dict[str, float]:
        """Validation metrics of the epoch (none by default)."""
        return {}

    @abstractmethod
    def log_columns(
        self, train: dict[str, float], val: dict[str, float]
    ) -> dict[str, Any]:
        """The metric columns of the epoch's ``log.csv`` row."""

    def save_products(self) -> None:
        """Write the epoch's products, before ``log.csv`` (rank 0)."""

    def draw(self) -> None:
        """Redraw the run's figures, after ``log.csv`` (rank 0)."""

    @abstractmethod
    def scalars(self, row: dict[str, Any]) -> dict[str, float]:
        """TensorBoard scalars (name → value) of the epoch's row."""

    @abstractmethod
    def epoch_message(self, row: dict[str, Any], secs: float) -> str:
        """The progress line of the epoch."""

    def resume_fields(self) -> dict[str, Any]:
        """The options recorded in ``last.pt`` and compared on resume."""
        d = {
            k: str(v) if isinstance(v, Path) else v  # last.pt holds no Path objects
            for k, v in asdict(self.cfg).items()
            if k in self.resume_keys
        }
        d["data"] = str(Path(self.cfg.data).resolve())
        d["global_batch"] = self.global_batch
        return d

    def rng_state(self) -> dict[str, Any]:
        """This rank's random states, saved in ``last.pt``."""
        return capture_rng()

    def checkpoint_state(self) -> dict[str, Any]:
        """Progress fields of ``last.pt`` (before the history)."""
        return {"epoch": self.epoch, "step": self.step}

    def restore_state(self, ckpt: dict[str, Any], rng: dict[str, Any]) -> None:
        """Take back what :meth:`checkpoint_state` and :meth:`rng_state` added."""

    def on_start(self) -> None:
        """Called after :meth:`setup`, before the first epoch."""

    def should_stop(self) -> bool:
        """Whether to end the run before the next epoch (early stopping).

        Checked before every epoch, on every rank: the answer must be the same on
        all of them (derive it from state every rank holds, such as all-reduced
        validation results) and follow from what ``last.pt`` restores.
        """
        return False

    def final_message(self) -> str | None:
        """The line logged when the loop ends (what was kept and why it stopped)."""
        return None

    @abstractmethod
    def result(self) -> ResultT:
        """What the run returns."""

    # -- entry -----------------------------------------------------------------------
    @classmethod
    def launch(cls, cfg: ConfigT, log: Log | None = None) -> ResultT:
        """Run one process of a torchrun job (or the only one): join, run, leave.

        Args:
            cfg: the run's configuration.
            log: receives progress lines on rank 0 (default: the ``info`` log of
                the subclass's module).
        """
        info = ddp.init_distributed("cuda" if wants_cuda(cfg.device) else "cpu")
        try:
            log = log or logging.getLogger(cls.__module__).info
            result = cls(cfg, info, log).run()
            # the ranks leave the group together: a rank of a DDP run that left and
            # exited while another was still ending its last epoch aborted in some
            # runs ("terminate called without an active exception", SIGABRT), a
            # finished run reported as a failed torchrun job
            ddp.barrier()
            return result
        finally:
            ddp.cleanup()

    # -- setup -----------------------------------------------------------------------
    def _resume_checkpoint(self) -> dict[str, Any] | None:
        now = self.resume_fields()
        return open_run(
            self.out,
            resume=self.cfg.resume,
            product=self.product,
            kind=self.kind,
            now={k: now[k] for k in self.resume_keys},
        )

    def setup(self) -> None:
        """Run directory, model (DDP), optimiser, loaders; resume from ``last.pt``."""
        cfg = self.cfg
        if self.info.primary:
            self.made_dirs = make_run_dir(self.out)
        ddp.barrier()
        ckpt = self._resume_checkpoint()
        self.resumed = ckpt is not None
        torch.manual_seed(cfg.seed)
        model = self.create_model(fresh=ckpt is None).to(self.device)
        cuda_ddp = self.info.distributed and self.device.type == "cuda"
        if cuda_ddp and self.sync_batchnorm():
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp_model: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        # dropout/drop-path/augmentation streams differ per rank; initialisation not
        torch.manual_seed(cfg.seed + self.info.rank)
        self.optimizer = build_optimizer(
            model,
            lr=self.base_lr,
            weight_decay=cfg.weight_decay,
            layer_decay=self.layer_decay(),
            depths=self.arch.depths,
            betas=self.betas,
        )
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.prepare()
        self._train_loader()
        if ckpt is not None:
            self._restore(ckpt)
        self.tb = self._tensorboard()
        self.figures = self._can_draw()

    def _train_loader(self) -> None:
        from torch.utils.data import DataLoader

        cfg, info = self.cfg, self.info
        self.train_ds = self.train_dataset()
        self.sampler = ddp.train_sampler(
            self.train_ds, info.world_size, info.rank, cfg.seed
        )
        self.train_loader = DataLoader(
            self.train_ds,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
        )
        self.iters = len(self.train_loader)
        self.total_steps = cfg.epochs * self.iters
        self.warmup_steps = cfg.warmup_epochs * self.iters

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.rows = [dict(r) for r in ckpt["history"]]
        rngs = ckpt["rng"]
        rng = rngs[min(self.info.rank, len(rngs) - 1)]
        restore_rng(rng)
        self.restore_state(ckpt, rng)
        if self.info.primary:
            write_csv(self.out / "log.csv", self.rows)  # drop rows after the ckpt
        self.log(f"resumed from {self.out / 'last.pt'} after epoch {self.epoch}")

    def _tensorboard(self) -> Any:
        """A TensorBoard writer on the primary process (None elsewhere / absent).

        Without the ``tensorboard`` package, one line says so (the CSV log and the
        figures are written all the same).
        """
        if not self.info.primary:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log(TENSORBOARD_MISSING)
            return None
        return SummaryWriter(str(self.out / "tb"), purge_step=self.epoch + 1)

    def _can_draw(self) -> bool:
        """Whether the figures can be drawn (primary process, matplotlib present).

        Without matplotlib (the ``plot`` extra), one line says so; the run, its
        CSV log and its model files are the same.
        """
        if not self.info.primary:
            return False
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.log(FIGURES_MISSING)
            return False
        return True

    def autocast(self) -> Any:
        """Autocast to the AMP dtype on CUDA; a no-op context otherwise."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    # -- one epoch -------------------------------------------------------------------
    def _progress_bar(self) -> Any:
        """The epoch's progress: a bar on a terminal, 10 % log lines at -v."""
        from alosmap._progress import progress_bar

        return progress_bar(
            self.iters,
            f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            self.cfg.progress and self.info.primary,
            unit="batch",
        )

    def _optimise(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (through the GradScaler)."""
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

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch; the logged values averaged over batches and ranks."""
        self.set_train_mode()
        self.sampler.set_epoch(self.epoch)
        self.train_ds.set_epoch(self.epoch)
        sums: dict[str, float] = {}
        batches = 0
        with self._progress_bar() as bar:
            for batch in self.train_loader:
                lr = lr_at(
                    self.step,
                    base_lr=self.base_lr,
                    min_lr=self.cfg.min_lr,
                    warmup_steps=self.warmup_steps,
                    total_steps=self.total_steps,
                )
                set_lr(self.optimizer, lr)
                loss, logged = self.training_step(batch)
                self._optimise(loss)
                batches += 1
                for k, v in logged.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.set_postfix(loss=f"{sums['loss'] / batches:.4f}", refresh=False)
                bar.update()
        sums["_batches"] = float(batches)
        total = ddp.reduce_sums(sums)
        n = max(1.0, total.pop("_batches"))
        return {k: v / n for k, v in total.items()}

    # -- bookkeeping (rank 0) --------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0; every rank contributes its RNG states)."""
        rng = ddp.all_gather_objects(self.rng_state())
        if not self.info.primary:
            return
        ckpt = {
            "kind": self.kind,
            "alosmap_version": __version__,
            "config": self.resume_fields(),
            **self.checkpoint_state(),
            "history": self.rows,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng,
        }
        atomic_torch_save(ckpt, self.out / "last.pt")

    def end_epoch(
        self, train: dict[str, float], val: dict[str, float], secs: float
    ) -> None:
        """Log the epoch, write its products (rank 0) and ``last.pt``."""
        self.epoch += 1
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[-1]["lr"],
            **self.log_columns(train, val),
            "seconds": round(secs, 3),
        }
        self.finish_row(row, secs)

    def finish_row(self, row: dict[str, Any], secs: float) -> None:
        """Keep a log row, write what follows from it (rank 0), then ``last.pt``.

        Rank 0 writes the products, ``log.csv``, the figures and the TensorBoard
        scalars and logs a line. :meth:`end_epoch` calls it after each epoch; a
        subclass may call it for an epoch-0 row (the model it starts from) with
        :attr:`epoch` still 0.
        """
        self.rows.append(row)
        if self.info.primary:
            self.save_products()
            write_csv(self.out / "log.csv", self.rows)
            if self.figures:
                self.draw()
            if self.tb is not None:
                for k, v in self.scalars(row).items():
                    self.tb.add_scalar(k, v, int(row["epoch"]))
                self.tb.flush()
            self.log(self.epoch_message(row, secs))
        self.save_checkpoint()
        self.saved = True

    def run(self) -> ResultT:
        """Set up, then train (and validate) epoch by epoch until done or stopped.

        Stops after ``epochs``, after ``stop_after`` epochs of this call, or when
        :meth:`should_stop` says so; then logs :meth:`final_message`.

        On a failure before the first saved row, the run directory this run
        created is removed (see the module docstring).
        """
        try:
            self.setup()
            done_now = 0
            try:
                self.on_start()
                while self.epoch < self.cfg.epochs and not self.should_stop():
                    stop = self.cfg.stop_after
                    if stop is not None and done_now >= stop:
                        break
                    t0 = time.perf_counter()
                    train = self.train_epoch()
                    val = self.validate()
                    self.end_epoch(train, val, time.perf_counter() - t0)
                    done_now += 1
                message = self.final_message()
                if message:
                    self.log(message)
            finally:
                if self.tb is not None:
                    self.tb.close()
        except BaseException:
            if not self.saved:
                remove_made_dirs(self.made_dirs)
            raise
        return self.result()
