"""``alosmap train``: build datasets, pretrain, finetune and evaluate models.

The commands live in one module per group (as rasterio's ``rio/`` does):
:mod:`.build` (``build-dataset``, ``inspect``), :mod:`.runs` (``pretrain``,
``finetune``), :mod:`.models` (``init``, ``evaluate``, ``adapt``); their shared
options in :mod:`._options`. Each command fills the library's request
(:class:`alosmap.train.dataset.request.BuildRequest`, the runs' configurations)
and calls it; nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Build training data, pretrain (SAR-W-MixMAE), finetune and evaluate models.",
    no_args_is_help=True,
)

# the commands register themselves on `app`; `alosmap train --help` lists them in
# the order of the work
from alosmap.cli.train import build, models, runs  # noqa: E402, F401

_ORDER = ("init", "build-dataset", "inspect", "pretrain", "finetune", "evaluate")
app.registered_commands.sort(
    key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else len(_ORDER)
)
