"""``alosmap train finetune``: turn options into a :class:`FinetuneConfig`, run it.

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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alosmap.train.loop import FinetuneConfig, FinetuneResult, run_finetune

__all__ = ["DEFAULT_EPOCHS", "finetune", "make_config"]

#: Paper's finetuning length per task.
DEFAULT_EPOCHS = {"lulc": 200, "water": 100}


def make_config(
    data: str | Path,
    task: str,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    **options: object,
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
        pretrained=Path(pretrained) if pretrained else None,  # type: ignore[arg-type]
        epochs=DEFAULT_EPOCHS[task] if epochs is None else int(epochs),
        **options,  # type: ignore[arg-type]
    )


def finetune(
    data: str | Path,
    task: str,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] | None = None,
    **options: object,
) -> FinetuneResult:
    """Finetune a model; see :func:`make_config` and :class:`FinetuneConfig`.

    Returns:
        The best model's path, epoch and validation score.
    """
    return run_finetune(make_config(data, task, out_dir, **options), log=log)
