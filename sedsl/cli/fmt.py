"""`sedsl fmt`: specs in the printer's canonical layout (sedsl.language.printer), comments kept."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sedsl.cli.app import SPEC_ERROR, _show, _write_file, app, out
from sedsl.errors import SpecError


@app.command("fmt")
def fmt(
    specs: Annotated[list[Path], typer.Argument(
        metavar="SPEC...", help="Spec files, or folders (their *.se files, recursively).")],
    write: Annotated[bool, typer.Option(
        "--write", help="Rewrite the files that change, in place, and list them.")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; list the files that would change; exit 1 if any.")
    ] = False,
) -> None:
    """Print SPECs in the canonical layout (comments kept), rewrite them, or check them."""
    if write and check:
        raise typer.BadParameter("--check writes nothing; give one of --check and --write",
                                 param_hint="--check")
    failed = changed = False
    for path in _spec_files(specs):
        try:
            text, formatted = format_file(path)
        except SpecError as e:
            _show(e)
            failed = True
            continue
        if check or write:
            if formatted != text:
                changed = True
                if write:
                    _rewrite(path, formatted)
                out().print(str(path), soft_wrap=True)
        else:
            sys.stdout.write(formatted)
    if failed or (check and changed):
        raise typer.Exit(SPEC_ERROR)


def format_file(path: Path) -> tuple[str, str]:
    """The text of the spec at `path` and that text formatted; a SpecError if it does not
    parse, or (a bug in the printer) if the formatted text would parse to another tree."""
    from sedsl.language.parse import parse
    from sedsl.language.printer import skeleton, unparse
    from sedsl.language.source import read_spec

    text = read_spec(path)
    shown = str(path)
    try:
        module = parse(text, shown)
    except SpecError as e:
        raise e.attach({shown: text}) from None
    formatted = unparse(module)
    if skeleton(parse(formatted, shown)) != skeleton(module):
        raise SpecError(f"{shown}: the formatted text would mean something else (a bug in "
                        "sedsl's printer); the file is left as it is")
    return text, formatted


def _spec_files(paths: list[Path]) -> list[Path]:
    """The files named, and the *.se files under the folders named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.se") if p.is_file())
        else:
            found.append(path)
    return found


def _rewrite(path: Path, text: str) -> None:
    """Replace the file whole (a temporary file renamed over it), keeping its permissions."""
    mode = path.stat().st_mode & 0o7777
    _write_file(path, text)
    if path.stat().st_mode & 0o7777 != mode:
        os.chmod(path, mode)
