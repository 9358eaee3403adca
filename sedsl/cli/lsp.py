"""`sedsl lsp`: the language server, for editors (docs/editors.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sedsl.cli.app import SetOption, app
from sedsl.errors import UsageError


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
    from sedsl import extras

    extras.require("pygls", "lsp", "sedsl lsp")
    from sedsl.lsp.compiler import Settings
    from sedsl.lsp.server import serve

    overrides = []
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"--set takes NAME=VALUE, got `{item}`", "e.g. --set ratio=8")
        overrides.append((name.strip(), value))
    serve(Settings(tuple(overrides), tuple(str(p) for p in search_path or ())))
