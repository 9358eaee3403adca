"""Reading spec files: regular files only, bounded in size, UTF-8 (docs/language.md, "Limits");
and the checks every spec text passes, wherever it came from (a file, `sedsl.loads`, an
editor's buffer): Unicode that UTF-8 can hold, and line ends as Python reads them."""

from __future__ import annotations

import re
from pathlib import Path

from sedsl import files
from sedsl.errors import Span, SpecError
from sedsl.limits import current, exceeded


def read_spec(path: Path, span: Span | None = None) -> str:
    """The text of a spec file: a regular file, at most `spec_bytes`, UTF-8 (a BOM is dropped).

    Devices, FIFOs and directories are refused before they are opened for reading, so that
    /dev/zero cannot fill memory and a FIFO cannot block forever."""
    shown = str(path)
    limit = current().spec_bytes
    try:
        data = files.read_bytes(path, limit)
    except files.Unusable as err:
        raise SpecError(f"cannot read {files.shown(path)}: {err.reason}", span) from None
    if len(data) > limit:
        raise exceeded(f"{files.shown(path)} is too large for a spec", "spec_bytes", span)
    return decode(data, shown, span)


def decode(data: bytes, shown: str, span: Span | None = None) -> str:
    """Spec bytes as text: UTF-8, with or without a BOM. (A NUL byte decodes, and the lexer
    then points at it: `unexpected character U+0000`.)"""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        before = data[:err.start].decode("utf-8-sig")  # valid: the error is the first
        line, col = position(before, len(before))
        where = Span(shown, line, col, line, col + 1)
        raise SpecError(f"cannot read {files.shown(shown)}: not UTF-8 text "
                        f"(byte 0x{data[err.start]:02x})", where, "save the file as UTF-8") \
            from None


# A line ends at \n, \r\n or a lone \r (old Mac files), as Python's universal newlines read it.
_LONE_CR = re.compile(r"\r(?!\n)")


def line_ends(text: str) -> str:
    """The text with each lone \\r made a \\n: the same length, every offset and column kept,
    and the lines those Python (and the Language Server Protocol) see."""
    return _LONE_CR.sub("\n", text) if "\r" in text else text


def check_text(text: str, file: str) -> None:
    """Refuse text that is not Unicode UTF-8 can hold: a lone surrogate (U+D800..U+DFFF),
    which a file cannot contain but a string passed to `sedsl.loads` or an editor can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        line, col = position(text, err.start)
        raise SpecError(f"the text holds U+{ord(text[err.start]):04X}, a lone surrogate, which "
                        "is not a character", Span(file, line, col, line, col + 1),
                        "a spec is UTF-8 text; remove it") from None


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in text whose line ends are \\n (see line_ends)."""
    text = line_ends(text[:offset])
    return text.count("\n") + 1, offset - (text.rfind("\n") + 1) + 1


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file; False for a path the OS cannot even look up."""
    return files.is_file(path)
