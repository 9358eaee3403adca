"""The error family: every mistake sedsl reports to its user is a `SedslError` — a message and
a hint, printed by the command as `error: ...` without a traceback. `SpecError` is the one about
spec text (or an override of it): it carries a `Span` and renders the line with a caret. The
others say which input was wrong: a torch model or weights (`ModelError`), a data source
(`DataError`), a device (`DeviceError`), the command line (`UsageError`), or which optional
dependency is not installed (`MissingExtra`). A `CompilerError` is not in the family: it is a
bug in sedsl."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from difflib import get_close_matches

from sedsl.record import Record


class Span(Record):
    """Where something came from: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def to_json(self) -> list[object]:
        return [self.file, self.line, self.col, self.end_line, self.end_col]

    @classmethod
    def from_json(cls, data: list[object]) -> Span:
        file, line, col, end_line, end_col = data
        assert isinstance(file, str)
        return cls(file, int(str(line)), int(str(col)), int(str(end_line)), int(str(end_col)))


NOWHERE = Span("<command line>", 1, 1, 1, 1)


class SedslError(Exception):
    """A mistake in what the user gave sedsl: what went wrong, and a hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"<sedsl>: error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


class ModelError(SedslError):
    """A torch model, module or weights file that sedsl cannot take as given."""


class DataError(SedslError):
    """A data source (folder, dataset name, file) that cannot be read as asked."""


class DeviceError(SedslError):
    """A device that is not there, or cannot hold what was asked."""


class RunError(SedslError):
    """A run sedsl started that did not finish, or cannot start as asked: a failed trial, a
    cluster it cannot join, an output folder that holds other runs."""


class UsageError(SedslError):
    """A command line that does not say what to do (exit status 2, as click's)."""


class MissingExtra(SedslError):
    """An optional dependency a feature needs is not installed: the hint names the extra of
    sedsl's package that brings it (`pip install 'sedsl[png]'`; sedsl.extras)."""


class SpecError(SedslError):
    """A mistake in a spec (or in an override of one): what went wrong, where, and a hint."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.span = span
        self.rendered: str | None = None

    def render(self, sources: Mapping[str, str]) -> str:
        """`file:line:col: error: message`, the source line, a caret under the span, the hint."""
        lines = [f"{self.span or '<sedsl>'}: error: {self.message}"]
        text = sources.get(self.span.file) if self.span else None
        if self.span and text is not None:
            lines += _excerpt(text, self.span)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def attach(self, sources: Mapping[str, str]) -> SpecError:
        """Render once, against the texts of the files the error may point into."""
        if self.rendered is None:
            self.rendered = self.render(sources)
        return self

    def __str__(self) -> str:
        if self.rendered is not None:
            return self.rendered
        return f"{self.span or '<sedsl>'}: error: {self.message}" + (
            f"\nhint: {self.hint}" if self.hint else ""
        )


_LINE_END = re.compile(r"\r?\n|\r")


def _excerpt(text: str, span: Span) -> list[str]:
    # as the lexer counts lines: at \n, \r\n and a lone \r; not at \f, \x1c, U+2028...
    source_lines = _LINE_END.split(text)
    if not 1 <= span.line <= len(source_lines):
        return []
    line = _printable(source_lines[span.line - 1].rstrip())
    end = span.end_col if span.end_line == span.line else len(line) + 1
    width = max(1, min(end, len(line) + 1) - span.col)
    col = span.col
    if len(line) > _WIDE:  # a very long line: the part around the span, marked as cut
        start = max(0, col - 1 - _WIDE // 2)
        shown = line[start:start + _WIDE]
        line = ("..." if start else "") + shown + ("..." if start + _WIDE < len(line) else "")
        col = col - start + (3 if start else 0)
        width = min(width, _WIDE // 2)
    gutter = " " * len(str(span.line))
    return [
        f"{span.line} | {line}",
        f"{gutter} | {' ' * (col - 1)}{'^' * width}",
    ]


_WIDE = 400  # the most of one source line an excerpt shows


# Control characters (a NUL, an escape sequence) would corrupt the terminal or hide the caret:
# each is shown as its one-character Unicode picture, so the caret stays under its column.
_PICTURES = {c: chr(0x2400 + c) for c in range(32) if c != 9} | {127: "\u2421"}


_SURROGATE = re.compile("[\ud800-\udfff]")  # not a character: shown as U+FFFD, one column


def _printable(line: str) -> str:
    return _SURROGATE.sub("\ufffd", line.translate(_PICTURES))


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidates, or None."""
    close = get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"




class CompilerError(Exception):
    """A bug in sedsl, not in the spec: a pass left the graph breaking an IR invariant."""

    def __init__(self, message: str, pass_name: str, node: str | None = None):
        self.message, self.pass_name, self.node = message, pass_name, node
        where = f" at node `{node}`" if node else ""
        super().__init__(f"internal error: pass `{pass_name}` broke an IR invariant{where}: "
                         f"{message}\nthis is a bug in sedsl, not in your spec: please report it "
                         "on sedsl's issue tracker with the spec and this message")
