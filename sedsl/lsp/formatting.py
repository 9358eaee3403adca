"""Formatting through the spec printer (`sedsl fmt`): `sedsl.language.printer.format_text`, or
`unparse` of the parsed module, whichever the printer offers. Without a printer, or for text
that does not parse, there are no edits: a formatter never guesses."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp

from sedsl.errors import SpecError
from sedsl.language.parse import parse
from sedsl.lsp.text import Text

log = logging.getLogger("sedsl.lsp")


def printer() -> Callable[[str, str], str] | None:
    """text, file name -> formatted text, from the spec printer if sedsl has one."""
    try:
        module: Any = importlib.import_module("sedsl.language.printer")
    except ImportError:
        return None
    if hasattr(module, "format_text"):
        fmt = module.format_text
        return lambda text, name: str(fmt(text))
    if hasattr(module, "unparse"):
        unparse = module.unparse
        return lambda text, name: str(unparse(parse(text, name)))
    return None


def format_document(text: Text, name: str) -> list[lsp.TextEdit]:
    """One edit replacing the whole text, or none (no printer, a syntax error, no change)."""
    fmt = printer()
    if fmt is None:
        return []
    try:
        formatted = fmt(text.text, name)
    except SpecError:
        return []  # the diagnostics already say what is wrong
    if formatted == text.text:
        return []
    whole = lsp.Range(lsp.Position(0, 0), text.position(len(text.text)))
    return [lsp.TextEdit(whole, formatted)]
