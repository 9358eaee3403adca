"""The `sedsl` command: `app` (typer) and `main` (the console script), one module per command
family; importing them registers their commands."""

from __future__ import annotations

from sedsl.cli import analysis, build, compare, cost, fmt, lsp, model  # noqa: F401  (registers)
from sedsl.cli.app import app, main

__all__ = ["app", "main"]
