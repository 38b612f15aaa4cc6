"""The ``alosmap`` command line (Typer); heavy imports happen inside commands."""
