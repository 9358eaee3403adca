"""One compiled version of a document, as the features read it: the analysis, the facts about
its network, and its text with both line tables. Built in the worker thread, read-only after."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sedsl.errors import Span
from sedsl.language import ast
from sedsl.lsp.compiler import Analysis, LibraryCache, Snapshot, analyse
from sedsl.lsp.facts import Facts
from sedsl.lsp.text import Text, contains
from sedsl.record import Record


class View(Record):
    analysis: Analysis
    facts: Facts | None  # None: no compiled network (an error, or a library file)
    text: Text

    @property
    def path(self) -> str:
        return self.analysis.snapshot.path

    @property
    def module(self) -> ast.Module | None:
        return self.analysis.module

    @property
    def version(self) -> int:
        return self.analysis.version

    def source(self, span: Span) -> Text | None:
        """The text a span points into: this document's, or a `use`d file's."""
        if span.file == self.path:
            return self.text
        source = self.analysis.sources.get(span.file)
        return Text(source, self.text.encoding) if source is not None else None

    def snippet(self, span: Span) -> str:
        """The source text of a span (in this file or a `use`d one)."""
        text = self.source(span)
        if text is None:
            return ""
        start = text.span_offset(span.line, span.col)
        return text.text[start:text.span_offset(span.end_line, span.end_col)]

    def inside(self, span: Span, line: int, col: int) -> bool:
        return span.file == self.path and contains(span, line, col)


def build(snap: Snapshot, cache: LibraryCache, cancel: threading.Event, encoding: str,
          on_syntax: Callable[[View], None]) -> View:
    """Compile a snapshot into a View (the worker thread's job); raises Cancelled only."""
    text = Text(snap.text, encoding)
    analysis = analyse(snap, cache, cancel, lambda a: on_syntax(View(a, None, text)))
    facts = None
    if analysis.network is not None and analysis.error is None:
        try:
            facts = Facts(analysis, snap.settings.convention)
        except Exception:
            logging.getLogger("sedsl.lsp").exception("cannot cost %s", snap.uri)
    return View(analysis, facts, text)
