"""``python -m alosmap``."""

from alosmap.cli.main import run

run()
