"""List functions longer than a limit (default 100 lines) in alosmap/, train/, export/.

A function's length runs from ``def`` to its last line. For Typer command functions
(in ``alosmap/cli/``) the parameter declarations are not counted: their length runs
from the first statement of the body. Exit code 1 when any function is too long.

Usage: ``python scripts/check_function_length.py [LIMIT]``
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOTS = ("alosmap", "train", "export")


def lengths(path: Path) -> list[tuple[int, str]]:
    """``(lines, "path:line name")`` of every function in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cli = path.parts[:2] == ("alosmap", "cli")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0].lineno if cli else node.lineno
            end = node.end_lineno or node.lineno
            out.append((end - first + 1, f"{path}:{node.lineno} {node.name}"))
    return out


def main(argv: list[str]) -> int:
    """Print the functions over the limit, longest first."""
    limit = int(argv[0]) if argv else 100
    found = sorted(
        (n, where)
        for root in ROOTS
        for path in sorted(Path(root).rglob("*.py"))
        for n, where in lengths(path)
        if n > limit
    )
    for n, where in reversed(found):
        print(f"{n:4d} {where}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
