"""Options and checks shared by the commands of ``alosmap train``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer

from alosmap.train import defaults

# Options shared by `pretrain` and `finetune` (with_run_options declares the first).
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
#: The dataset a command reads (evaluate, finetune).
DataOpt = Annotated[
    Path,
    typer.Option(file_okay=False, help="Dataset directory (from build-dataset)."),
]
#: Architecture switches (init, finetune).
NoHighresOpt = Annotated[
    bool, typer.Option("--no-highres", help="Do not inject the high-res map.")
]
NoRefineUpOpt = Annotated[
    bool, typer.Option("--no-refine-up", help="Plain head (×4 interpolation).")
]
#: The device of a command that runs a model without training (evaluate, adapt).
EvalDeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]
WeightDecayOpt = Annotated[
    float, typer.Option(help="AdamW weight decay (none on norms/biases/tables).")
]


#: The options of :class:`alosmap.train.requests.RunOptions`, in their order.
_RUN_OPTIONS = ("augment", "workers", "device", "amp", "seed", "resume", "stop_after")
_F = TypeVar("_F", bound=Callable[..., Any])


def with_run_options(seed_help: str) -> Callable[[_F], _F]:
    """Give a command the options every training run has, declared once here.

    The command takes a ``run`` parameter instead: the options as one
    :class:`~alosmap.train.requests.RunOptions` (its defaults are theirs; the
    workers resolved against the CPUs). ``seed_help``: what the seed seeds.
    """
    shared = {
        "augment": (AugmentOpt, True),
        "workers": (WorkersOpt, None),
        "device": (TrainDeviceOpt, "auto"),
        "amp": (AmpOpt, True),
        "seed": (Annotated[int, typer.Option(help=seed_help)], 0),
        "resume": (ResumeOpt, True),
        "stop_after": (StopAfterOpt, None),
    }

    def decorate(func: _F) -> _F:
        sig = inspect.signature(func, eval_str=True)
        params = [p for p in sig.parameters.values() if p.name != "run"]
        params += [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a
            )
            for name, (a, d) in shared.items()
        ]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            from alosmap.train.requests import RunOptions

            run = RunOptions(**{k: kwargs.pop(k) for k in _RUN_OPTIONS})
            return func(**kwargs, run=run)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return cast(_F, command)

    return decorate


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


def check_run_dir(output: Path, data: Path, *inputs: Path | None) -> None:
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


def echo_primary(path: Path) -> None:
    """Print the run's product on stdout, once (rank 0 of a torchrun job)."""
    from alosmap._dist import dist_info

    if dist_info().primary:
        typer.echo(str(path))


class Preset(str, Enum):
    """Architecture preset."""

    paper = "paper"
    small = "small"
    tiny = "tiny"
