"""The command tree as a whole: plain boolean flags, one meaning per short option."""

from __future__ import annotations

from collections import defaultdict

import pytest
import typer.main
from typer._click import Context

from alosmap.cli.main import app


def _tree() -> list[tuple[list[str], object]]:
    """Every command and group of ``alosmap`` (lazy sub-apps loaded) with its path."""
    root = typer.main.get_command(app)
    found: list[tuple[list[str], object]] = []

    def walk(command, path):
        found.append((path, command))
        lazy = getattr(command, "lazy_commands", None)
        for name in list(getattr(command, "commands", {})):
            sub = lazy.load(name) if lazy is not None else command.commands[name]
            walk(sub, [*path, name])

    walk(root, [])
    return found


def _options(command) -> list:
    ctx = Context(command, help_option_names=["-h", "--help"])
    return [p for p in command.get_params(ctx) if p.param_type_name == "option"]


def test_every_command_is_walked():
    paths = {" ".join(p) for p, _ in _tree()}
    assert {"predict", "batch", "mosaic", "train finetune", "export onnx"} <= paths


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _tree()])
def test_help_shows_no_bool_metavar(cli, monkeypatch, path):
    """Flags are plain --flag / --no-flag: no <bool> or BOOLEAN type in --help."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli(*path.split(), "--help")
    assert code == 0, err
    assert "Usage" in out
    for word in ("<bool>", "BOOLEAN", "<boolean>"):
        assert word not in out, f"alosmap {path} --help shows {word}"


def test_each_short_option_has_one_meaning():
    """A short option means one long option, whichever command it is given to."""
    meanings: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for path, command in _tree():
        for opt in _options(command):
            longs = [o for o in opt.opts if o.startswith("--")]
            for short in (o for o in opt.opts if not o.startswith("--")):
                meanings[short].add(longs[0] if longs else short)
                where[short].append(" ".join(path) or "alosmap")
    clashes = {s: sorted(m) for s, m in meanings.items() if len(m) > 1}
    assert not clashes, {s: (m, where[s]) for s, m in clashes.items()}
    assert meanings["-o"] == {"--output"} and meanings["-f"] == {"--format"}


def test_batch_takes_output_dir_and_output(cli, tmp_path):
    """``--output`` (as -o) and the older ``--output-dir`` are one option of batch."""
    for flag in ("--output", "--output-dir", "-o"):
        code, _, err = cli("batch", "--manifest", tmp_path / "none.txt", flag, tmp_path)
        assert code == 1 and "none.txt" in err  # got past parsing: the manifest
    code, _, err = cli("batch", "-f", tmp_path / "x.txt", "-o", tmp_path)
    assert code == 2 and "No such option" in err
