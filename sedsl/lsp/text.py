"""Positions three ways: offsets into the text, LSP positions (0-based lines split at \\r\\n, \\r
and \\n; characters counted in the negotiated encoding, UTF-16 by default) and sedsl spans
(1-based lines split at \\n and a lone \\r, as the parser reads them (sedsl.language.source.
line_ends); columns in code points; end exclusive). Every conversion goes through the offset,
so the two line models never mix."""

from __future__ import annotations

import bisect
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp

from sedsl.errors import Span

_LSP_BREAK = re.compile(r"\r\n|\r|\n")
_SEDSL_BREAK = re.compile(r"\n|\r(?!\n)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Text:
    """One document's text with both line tables."""

    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.encoding = encoding
        self._lsp = [0, *(m.end() for m in _LSP_BREAK.finditer(text))]
        self._sedsl = [0, *(m.end() for m in _SEDSL_BREAK.finditer(text))]

    # -- offsets and LSP positions --

    def offset(self, pos: lsp.Position) -> int:
        """The offset of an LSP position, clamped into its line (before the line break)."""
        if pos.line >= len(self._lsp):
            return len(self.text)
        start = self._lsp[max(pos.line, 0)]
        line = self.text[start:self._line_end(max(pos.line, 0))]
        return start + _chars(line, pos.character, self.encoding)

    def position(self, offset: int) -> lsp.Position:
        offset = min(max(offset, 0), len(self.text))
        line = bisect.bisect_right(self._lsp, offset) - 1
        start = self._lsp[line]
        offset = min(offset, self._line_end(line))  # not inside a \r\n
        return lsp.Position(line, _units(self.text[start:offset], self.encoding))

    def _line_end(self, line: int) -> int:
        """The offset where LSP line `line`'s break (or the text) starts."""
        if line + 1 >= len(self._lsp):
            return len(self.text)
        end = self._lsp[line + 1]
        return end - (2 if self.text[end - 2:end] == "\r\n" else 1)

    def line_count(self) -> int:
        return len(self._lsp)

    def line_text(self, line: int) -> str:
        if not 0 <= line < len(self._lsp):
            return ""
        return self.text[self._lsp[line]:self._line_end(line)]

    def end_of_line(self, line: int) -> lsp.Position:
        return self.position(self._line_end(min(max(line, 0), len(self._lsp) - 1)))

    # -- sedsl spans --

    def span_offset(self, line: int, col: int) -> int:
        """The offset of a 1-based sedsl (line, col), clamped into the text."""
        if line < 1:
            return 0
        if line > len(self._sedsl):
            return len(self.text)
        start = self._sedsl[line - 1]
        end = self._sedsl[line] - 1 if line < len(self._sedsl) else len(self.text)
        return min(start + max(col - 1, 0), end)

    def range(self, span: Span) -> lsp.Range:
        start = self.span_offset(span.line, span.col)
        end = max(start, self.span_offset(span.end_line, span.end_col))
        return lsp.Range(self.position(start), self.position(end))

    def to_span(self, file: str, start: int, end: int) -> Span:
        """Offsets as a sedsl span (to compare with the compiler's)."""
        (l1, c1), (l2, c2) = self._line_col(start), self._line_col(end)
        return Span(file, l1, c1, l2, c2)

    def _line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._sedsl, offset) - 1
        return line + 1, offset - self._sedsl[line] + 1

    def span_at(self, file: str, pos: lsp.Position) -> tuple[int, int]:
        """An LSP position as a sedsl (line, col)."""
        return self._line_col(self.offset(pos))

    # -- words --

    def word_at(self, pos: lsp.Position) -> tuple[str, int, int] | None:
        """The identifier under (or just before) the position: (word, start, end offsets)."""
        offset = self.offset(pos)
        line_start = self._lsp[min(pos.line, len(self._lsp) - 1)] if pos.line >= 0 else 0
        line = self.text[line_start:self._line_end(min(pos.line, len(self._lsp) - 1))]
        for m in _WORD.finditer(line):
            if m.start() <= offset - line_start <= m.end():
                return m.group(), line_start + m.start(), line_start + m.end()
        return None


def contains(span: Span, line: int, col: int) -> bool:
    """Whether the 1-based (line, col) lies in the span (its end included: a cursor right after
    a word is on it)."""
    return (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col)


def _units(s: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(s.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(s)
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def _chars(line: str, units: int, encoding: str) -> int:
    """How many characters of `line` the first `units` code units cover."""
    if encoding == "utf-32":
        return min(max(units, 0), len(line))
    count = 0
    for i, c in enumerate(line):
        width = len(c.encode("utf-8", "surrogatepass")) if encoding == "utf-8" \
            else (2 if ord(c) > 0xFFFF else 1)
        if count + width > units:
            return i
        count += width
    return len(line)


def uri_to_path(uri: str) -> str:
    """A file URI's path; other URIs (untitled:...) stand for themselves."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return uri
    return unquote(parsed.path)


def path_to_uri(path: str) -> str:
    """A spec file's name as errors show it (relative to the working folder, or absolute) as a
    URI; a name that is a URI already (untitled:...) stays as it is."""
    if urlparse(path).scheme not in ("", "file") and not Path(path).is_absolute():
        return path
    if path.startswith("file:"):
        return path
    return Path(os.path.abspath(path)).as_uri()
