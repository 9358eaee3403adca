"""`sedsl lsp`: the language server, for editors (docs/editors.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sedsl.cli.app import USAGE_ERROR, SetOption, app


@app.command()
def lsp(
    sets: SetOption = None,
    search_path: Annotated[list[Path] | None, typer.Option(
        "--search-path", metavar="DIR", help="Another folder `use` looks in.")] = None,
    stdio: Annotated[bool, typer.Option(
        "--stdio", hidden=True, help="stdin/stdout, the only transport (editors pass it)")
    ] = False,
) -> None:
    """Run the language server over stdin/stdout: diagnostics, hover with shapes and exact
    cost, inlay hints, code lenses, definitions, completion (docs/editors.md)."""
    try:
        from sedsl.lsp.compiler import Settings
        from sedsl.lsp.server import serve
    except ImportError as e:
        sys.stderr.write(f"sedsl lsp needs pygls ({e.name} is missing): "
                         "pip install 'sedsl[lsp]'\n")
        raise typer.Exit(USAGE_ERROR) from None
    overrides = tuple((name.strip(), value) for name, _, value in
                      (item.partition("=") for item in sets or []))
    serve(Settings(overrides, tuple(str(p) for p in search_path or ())))
