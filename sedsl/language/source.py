"""Reading spec files: regular files only, bounded in size, UTF-8 (docs/language.md, "Limits")."""

from __future__ import annotations

import stat
from pathlib import Path

from sedsl.errors import Span, SpecError
from sedsl.limits import current, exceeded


def read_spec(path: Path, span: Span | None = None) -> str:
    """The text of a spec file: a regular file, at most `spec_bytes`, UTF-8 (a BOM is dropped).

    Devices, FIFOs and directories are refused before they are opened for reading, so that
    /dev/zero cannot fill memory and a FIFO cannot block forever."""
    shown = str(path)
    try:
        info = path.stat()
    except (OSError, ValueError) as err:
        raise SpecError(f"cannot read {shown}: {_reason(err)}", span) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"cannot read {shown}: it is a directory", span)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"cannot read {shown}: not a regular file (a device, FIFO or socket)",
                        span)
    limit = current().spec_bytes
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise SpecError(f"cannot read {shown}: {_reason(err)}", span) from None
    if len(data) > limit:
        raise exceeded(f"{shown} is too large for a spec", "spec_bytes", span)
    return decode(data, shown, span)


def decode(data: bytes, shown: str, span: Span | None = None) -> str:
    """Spec bytes as text: UTF-8, with or without a BOM. (A NUL byte decodes, and the lexer
    then points at it: `unexpected character U+0000`.)"""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1  # in bytes
        where = Span(shown, line, col, line, col + 1)
        raise SpecError(f"cannot read {shown}: not UTF-8 text (byte 0x{data[err.start]:02x})",
                        where, "save the file as UTF-8") from None


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file; False for a path the OS cannot even look up."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return "not a valid path"  # ValueError: a NUL byte in it
