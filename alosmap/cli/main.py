"""Entry point of the ``alosmap`` command.

Exit codes: 0 success, 1 failure (an :class:`~alosmap.errors.AlosmapError` or a full
disk, reported as one line on stderr; traceback with ``-vv``), 2 usage error, 130
interrupted (Ctrl-C), 143 terminated (SIGTERM); a stopped command cleans up as it
does on a failure and says so in one line. ``--install-completion`` /
``--show-completion`` set up shell completion.

The ``train`` and ``export`` sub-apps are mounted lazily (:data:`LAZY_APPS`): their
modules are imported only when one of their commands (or their own ``--help``) runs,
so ``alosmap --help`` and ``alosmap predict ...`` never load training or export code.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NamedTuple

import typer
import typer.main
from typer.core import TyperGroup

from alosmap._version import __version__
from alosmap.cli import _common
from alosmap.cli.batch import batch
from alosmap.cli.bench import bench
from alosmap.cli.evaluate import evaluate
from alosmap.cli.info import info
from alosmap.cli.mosaic import mosaic
from alosmap.cli.predict import predict, water
from alosmap.cli.stats import stats
from alosmap.cli.synth import app as synth_app
from alosmap.cli.vectorize import vectorize

if TYPE_CHECKING:  # the click that Typer ships (typer._click) types its groups
    from typer._click import Command, Context


class LazyApp(NamedTuple):
    """A sub-app imported on first use.

    Attributes:
        module: the module that defines the Typer ``app``.
        help: the sub-app's help, shown by the parent's ``--help`` without importing
            the module (it must equal the sub-app's own; a test checks it).
    """

    module: str
    help: str


#: The sub-apps of ``alosmap`` mounted lazily, in the order ``--help`` lists them
#: (after the commands and groups registered on :data:`app`).
LAZY_APPS = {
    "train": LazyApp(
        "alosmap.cli.train",
        "Build training data, pretrain (SAR-W-MixMAE), finetune and evaluate models.",
    ),
    "export": LazyApp(
        "alosmap.cli.export",
        "Export models to ONNX and TensorRT, checked against the original.",
    ),
}


def mount(name: str, lazy: LazyApp, parent: TyperGroup) -> Command:
    """Import a lazy sub-app and build its click group as ``add_typer`` would.

    Args:
        name: the command name of the sub-app.
        lazy: where the sub-app lives.
        parent: the group it is mounted in (its Rich and suggestion settings pass
            down, as they do for a sub-app added with ``add_typer``).
    """
    settings: dict[str, Any] = {"rich_markup_mode": parent.rich_markup_mode}
    if hasattr(parent, "suggest_commands"):  # Typer releases that suggest names
        settings["suggest_commands"] = parent.suggest_commands
    holder = typer.Typer(**settings)
    holder.add_typer(importlib.import_module(lazy.module).app, name=name)
    command = typer.main.get_group(holder).commands[name]
    plain_flags(command, parent.context_settings.get("help_option_names"))
    return command


def plain_flags(command: Command, help_names: list[str] | None) -> None:
    """Show boolean flags as plain ``--flag``/``--no-flag`` in ``--help``.

    Typer's Rich help gives every option a type column, flags included
    (``<bool>``), as if ``--confidence true`` were taken (it is refused). An empty
    metavar leaves the column blank. Applied to ``command``, its help option and
    every subcommand already built (lazy sub-apps are done when mounted).

    Args:
        command: a command or group.
        help_names: the help option's names (the root's context settings), so
            that the help option built here is the one a run would build.
    """
    from typer._click import Context

    ctx = Context(command, help_option_names=help_names or ["--help"])
    _plain_flags([*command.params, command.get_help_option(ctx)])
    subcommands = getattr(command, "commands", {})
    lazy = getattr(command, "lazy_commands", None)
    for name in list(subcommands):
        if lazy is None or lazy.pending(name) is None:
            plain_flags(subcommands[name], help_names)


class LazyCommands(MutableMapping[str, "Command"]):
    """A group's subcommands by name, in order; lazy sub-apps load on first access.

    Listing names (iteration, ``in``, ``len``) imports nothing; looking a lazy name up
    (``commands[name]``, ``.get``, ``.items()``) imports and builds it once.
    """

    def __init__(
        self,
        commands: Mapping[str, Command],
        lazy: Mapping[str, LazyApp],
        parent: TyperGroup,
    ) -> None:
        self._items: dict[str, Command | LazyApp] = dict(commands)
        for name, entry in lazy.items():
            self._items.setdefault(name, entry)
        self._parent = parent

    def load(self, name: str) -> Command:
        """The command ``name``, mounting it first if it is a lazy sub-app.

        Raises:
            KeyError: no such command.
        """
        entry = self._items[name]
        if isinstance(entry, LazyApp):
            entry = self._items[name] = mount(name, entry, self._parent)
        return entry

    def pending(self, name: str) -> LazyApp | None:
        """The lazy entry of ``name`` if it is not loaded yet, else None."""
        entry = self._items.get(name)
        return entry if isinstance(entry, LazyApp) else None

    def __getitem__(self, name: str) -> Command:
        return self.load(name)

    def __setitem__(self, name: str, command: Command) -> None:
        self._items[name] = command

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _plain_flags(params: list[Any]) -> None:
    """An empty metavar for each boolean flag among ``params`` that has none."""
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""


class PlainFlagsGroup(TyperGroup):
    """A Typer group whose ``--help`` shows boolean flags plain (``plain_flags``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        plain_flags(self, (self.context_settings or {}).get("help_option_names"))

    def get_params(self, ctx: Context) -> list[Any]:
        """The options; also those Typer adds later (completion) made plain."""
        params = super().get_params(ctx)
        _plain_flags(params)
        return params


class LazyGroup(PlainFlagsGroup):
    """A Typer group that mounts the sub-apps of :attr:`lazy_apps` on first use.

    Help listings show a lazy sub-app from its :class:`LazyApp` help; resolving its
    name to run it (``alosmap train ...``, ``alosmap export onnx --help``) imports it.
    """

    lazy_apps: ClassVar[Mapping[str, LazyApp]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.lazy_commands = LazyCommands(self.commands, self.lazy_apps, self)
        self.commands = self.lazy_commands

    def list_commands(self, ctx: Context) -> list[str]:
        """Subcommand names in the order of creation (nothing is imported)."""
        return list(self.commands)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """The subcommand; a placeholder with the help of a sub-app not loaded yet."""
        lazy = self.lazy_commands.pending(cmd_name)
        if lazy is not None:
            return TyperGroup(name=cmd_name, help=lazy.help)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        """Load a lazy sub-app named by the first argument, then resolve as usual."""
        if args and self.lazy_commands.pending(args[0]) is not None:
            self.lazy_commands.load(args[0])
        return super().resolve_command(ctx, args)


class _RootGroup(LazyGroup):
    lazy_apps = LAZY_APPS


app = typer.Typer(
    cls=_RootGroup,
    name="alosmap",
    help=(
        "Land-use/land-cover and water maps from ALOS-2 PALSAR-2 HH SAR scenes, "
        "with the refined UPerNet-Swin model (SAR-W-MixMAE pretraining)."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"alosmap {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More log output on stderr (-v info, -vv debug and tracebacks).",
        ),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only errors; no progress bars."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Map ALOS-2 HH scenes to LULC and water GeoTIFFs; train and export the model."""
    _common.configure_logging(-1 if quiet else verbose)
    from alosmap._process import configure_process

    # GDAL's block cache (the environment wins); libtiff's own lines below -vv
    configure_process(ctx.invoked_subcommand, verbosity=-1 if quiet else verbose)


app.command("predict")(predict)
app.command("water")(water)
app.command("batch")(batch)
app.command("mosaic")(mosaic)
app.command("evaluate")(evaluate)
app.command("stats")(stats)
app.command("vectorize")(vectorize)
app.command("info")(info)
app.command("bench")(bench)
app.add_typer(synth_app, name="synth")


def run() -> None:
    """Console-script entry point: run the app and map errors to exit codes.

    SIGTERM and Ctrl-C stop the command with its clean-up (see
    :func:`~alosmap._process.sigterm_interrupts`), then one line and 143 or 130.
    """
    from alosmap._process import INTERRUPTED_EXIT, TERMINATED_EXIT, sigterm_interrupts

    with sigterm_interrupts() as signals:
        try:
            _run()
        except BaseException as exc:
            if not signals and not _interrupted(exc):
                raise
    if signals:
        _common.error_line("terminated")
        sys.exit(TERMINATED_EXIT)
    _common.error_line("interrupted")
    sys.exit(INTERRUPTED_EXIT)


def _run() -> None:
    """Run the app; report an error as one line and exit 1 (see :func:`_fail`)."""
    from alosmap.errors import AlosmapError

    try:
        app()
    except AlosmapError as exc:
        _fail(exc, str(exc))
    except ImportError as exc:
        from alosmap._imports import missing_extra

        message = missing_extra(exc)  # torch without alosmap[torch], ...
        if message is None:
            raise
        _fail(exc, message)
    except Exception as exc:
        from alosmap._fileio import is_disk_full

        if not is_disk_full(exc):
            raise
        _fail(exc, str(exc))


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` comes of Ctrl-C: a ``KeyboardInterrupt`` or what it caused.

    Typer turns a ``KeyboardInterrupt`` into an exit (130) that silently chains it.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _fail(exc: Exception, message: str) -> None:
    """Report ``exc`` as one line (a full disk as such) and exit 1; raise at ``-vv``."""
    from alosmap._fileio import is_disk_full
    from alosmap.errors import DiskFullError

    if is_disk_full(exc) and not isinstance(exc, DiskFullError):
        message = (
            f"disk full while writing {_disk_full_target(exc)}; nothing was written"
        )
    _common.error_line(message)
    if _common.VERBOSITY >= 2:
        raise exc
    sys.exit(1)


def _disk_full_target(exc: BaseException) -> str:
    """The file a disk-full error names, else "the output".

    A hidden temporary (``.<name>.<kind>-<pid>-…``) is reported as its final path.
    """
    import re
    from pathlib import Path

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = getattr(e, "filename", None)
        if name:
            path = Path(os.fsdecode(name))
            final = re.match(r"^\.(.+)\.[a-z]+-\d+-", path.name)
            return str(path.with_name(final.group(1)) if final else path)
        e = e.__cause__ or e.__context__
    return "the output"


if __name__ == "__main__":  # pragma: no cover
    run()
