"""The documentation runs: its console examples, its code map, its size.

* Every fenced block marked ```` ```console ```` in README.md and docs/*.md is
  executed: each line starting with ``$ `` is a command (a trailing ``\\`` continues it
  on the next line; other lines are the output shown to the reader, not compared). The
  commands of one file run in order, in one temporary directory that holds links to
  ``sample_data/``, ``alosmap/weights/`` and ``scripts/`` (never written: outputs go
  to the temporary directory), with the virtual environment's ``bin/`` first on
  ``PATH``. Each must exit 0, and every file it names after ``-o``/``--output``/
  ``--preview`` must exist afterwards.
* A console block preceded by the line ``<!-- docs-test: slow -->`` runs only in the
  second, expensive test (training, export, benchmarks, many scenes, whole scenes).
  Both example tests are marked ``slow``: each command starts Python and torch
  (2-3 s), so even a page of cheap commands takes 10-20 s (measured: README 66 s,
  mapping 39 s, national 37 s, cli 9 s of wall time on the shared 2-core machine at
  load 11). The tests of the
  parsing, the code map and the README's length are fast.
* The code map of docs/development.md (between ``<!-- code-map:start -->`` and
  ``<!-- code-map:end -->``) is generated from the packages on disk and their
  docstrings; the test fails when it is stale (``python tests/test_docs.py`` rewrites
  it).

``mkdocs build --strict`` itself runs in CI (``make docs``), not here.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SLOW_MARK = "<!-- docs-test: slow -->"
OUTPUT_OPTIONS = ("-o", "--output", "--preview")
# what the examples read from a checkout: the sample scenes, the bundled models, scripts
CHECKOUT_LINKS = ("sample_data", "alosmap/weights", "scripts")
PACKAGE_ROOTS = {
    "alosmap": "alosmap",
    "train": "alosmap.train",
    "export": "alosmap.export",
}
MAP_START, MAP_END = "<!-- code-map:start -->", "<!-- code-map:end -->"
README_MAX_LINES = 250


@dataclass(frozen=True)
class Example:
    """One console block: where it is, its commands, whether it is slow."""

    path: Path
    line: int
    commands: tuple[str, ...]
    slow: bool


def console_blocks(path: Path) -> list[Example]:
    """The ```console blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Example] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        slow = start > 0 and lines[start - 1].strip() == SLOW_MARK
        blocks.append(Example(path, start + 1, tuple(_commands(body)), slow))
        i += 1
    return blocks


def _commands(body: list[str]) -> list[str]:
    """The ``$ `` lines of a block, continuation lines joined."""
    commands: list[str] = []
    pending: str | None = None
    for raw in body:
        line = raw.strip()
        if pending is not None:
            pending += " " + line
        elif line.startswith("$ "):
            pending = line[2:]
        else:
            continue  # output shown to the reader
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        else:
            commands.append(pending)
            pending = None
    if pending is not None:
        commands.append(pending)
    return commands


def named_outputs(command: str) -> list[str]:
    """The paths a command is asked to write (after -o, --output, --preview)."""
    words = shlex.split(command)
    found = []
    for i, word in enumerate(words):
        if word in OUTPUT_OPTIONS and i + 1 < len(words):
            found.append(words[i + 1])
        for option in OUTPUT_OPTIONS[1:]:
            if word.startswith(option + "="):
                found.append(word.split("=", 1)[1])
    return found


def checkout_links(workdir: Path) -> None:
    """Make ``workdir`` look like a checkout's root to the examples (links)."""
    for name in CHECKOUT_LINKS:
        link = workdir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT / name, target_is_directory=True)


def run_examples(examples: list[Example], workdir: Path) -> None:
    """Run the examples' commands in order in ``workdir``; fail on the first error."""
    checkout_links(workdir)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TQDM_DISABLE"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    for example in examples:
        for command in example.commands:
            where = f"{example.path.relative_to(ROOT)}:{example.line}: $ {command}"
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            assert done.returncode == 0, (
                f"{where}\nexit {done.returncode}\n{done.stderr[-3000:]}"
            )
            for output in named_outputs(command):
                assert (workdir / output).exists(), f"{where}: {output} was not written"


def _examples(slow: bool) -> dict[Path, list[Example]]:
    by_file: dict[Path, list[Example]] = {}
    for path in DOC_FILES:
        chosen = [b for b in console_blocks(path) if b.slow == slow]
        if chosen:
            by_file[path] = chosen
    return by_file


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


FAST = _examples(slow=False)
SLOW = _examples(slow=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(FAST), ids=_doc_id)
def test_console_examples_run(path: Path, tmp_path: Path) -> None:
    run_examples(FAST[path], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(SLOW), ids=_doc_id)
def test_slow_console_examples_run(path: Path, tmp_path: Path) -> None:
    # a slow block may use what the fast blocks of its page made (a map, a model)
    run_examples(FAST.get(path, []) + SLOW[path], tmp_path)


def test_every_command_has_an_example() -> None:
    """The README shows each user command at least once in an executed block."""
    commands = " ".join(
        c for b in console_blocks(ROOT / "README.md") for c in b.commands
    )
    for name in (
        "predict", "water", "batch", "mosaic", "stats", "vectorize",
        "evaluate", "info", "train", "export", "bench",
    ):  # fmt: skip
        assert re.search(rf"\balosmap {name}\b", commands), (
            f"no executed example of {name}"
        )


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES})"
    )


def test_marker_parsing(tmp_path: Path) -> None:
    """Continuations join, output lines are skipped, a slow mark marks one block."""
    page = tmp_path / "page.md"
    page.write_text(
        "```console\n$ alosmap info \\\n    sample_data/x.tif\nsize: 1\n$ true\n```\n"
        f"{SLOW_MARK}\n```console\n$ alosmap bench -o 'a b.json'\n```\n"
        "```bash\n$ no\n```\n",
        encoding="utf-8",
    )
    fast, slow = console_blocks(page)
    assert fast.commands == ("alosmap info sample_data/x.tif", "true") and not fast.slow
    assert slow.commands == ("alosmap bench -o 'a b.json'",) and slow.slow
    assert named_outputs(slow.commands[0]) == ["a b.json"]
    assert named_outputs("alosmap predict s.tif --preview=m.png") == ["m.png"]


def test_a_failing_example_fails(tmp_path: Path) -> None:
    example = Example(
        ROOT / "x.md", 1, ("alosmap info sample_data/missing.tif",), False
    )
    with pytest.raises(AssertionError, match=r"missing\.tif"):
        run_examples([example], tmp_path)


def _first_docstring_line(init: Path) -> str:
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0].replace("``", "`").replace("|", "\\|")


def code_map() -> str:
    """The code map: one row per package on disk, from its docstring."""
    rows = ["| folder | import name | what it holds (its docstring) |", "|---|---|---|"]
    for top, name in PACKAGE_ROOTS.items():
        for init in sorted((ROOT / top).rglob("__init__.py")):
            folder = init.parent
            if "__pycache__" in folder.parts:
                continue
            relative = folder.relative_to(ROOT / top)
            dotted = ".".join([name, *relative.parts])
            what = _first_docstring_line(init)
            rows.append(f"| `{folder.relative_to(ROOT)}/` | `{dotted}` | {what} |")
    return "\n".join(rows)


def _map_page() -> tuple[Path, str, str, str]:
    page = ROOT / "docs" / "development.md"
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(MAP_START, 1)
    block, tail = rest.split(MAP_END, 1)
    return page, head, block.strip(), tail


def test_code_map_is_current() -> None:
    _, _, block, _ = _map_page()
    expected = code_map()
    assert block == expected, (
        "docs/development.md's code map is stale: run `python tests/test_docs.py`\n"
        + expected
    )


if __name__ == "__main__":
    page, head, _, tail = _map_page()
    page.write_text(
        f"{head}{MAP_START}\n{code_map()}\n{MAP_END}{tail}", encoding="utf-8"
    )
    print(f"rewrote the code map in {page.relative_to(ROOT)}")
