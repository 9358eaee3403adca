"""A compile's outcome as LSP diagnostics, per document: the SpecError at its exact range with
its hint as the message's second line, and related information where a second place is
involved. An error inside a `use`d file is shown on the line here that led to it (the statement
being placed, or the `use` line) and, for when that file is open, at its own place there."""

from __future__ import annotations

from lsprotocol import types as lsp

from sedsl.errors import Span, SpecError
from sedsl.language import ast
from sedsl.lsp.compiler import Analysis
from sedsl.lsp.syntax import walk
from sedsl.lsp.text import Text, contains, path_to_uri

SOURCE = "sedsl"
_TOP = lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))


def build(a: Analysis, text: Text) -> dict[str, list[lsp.Diagnostic]]:
    """Diagnostics by URI: the document's own, and those for the `use`d files involved."""
    uri = a.snapshot.uri
    if a.bug is not None:
        last = a.bug.strip().splitlines()[-1]
        return {uri: [_diagnostic(_TOP, f"sedsl failed on this spec: {last}\nthis is a bug in "
                                  "sedsl, not in the spec; the server log has the details")]}
    err = a.error
    if err is None:
        return {uri: []}
    message = err.message + (f"\nhint: {err.hint}" if err.hint else "")
    span = err.span
    if span is None or span.file not in a.sources:
        where = "" if span is None else f"{span.file}: "
        return {uri: [_diagnostic(_TOP, f"{where}{message}" if span is None or span.file
                                  != "<command line>" else f"settings (sedsl.set): {message}")]}
    if span.file == a.snapshot.path:
        return {uri: [_diagnostic(text.range(span), message, _related_here(a, err, text))]}
    return _elsewhere(a, err, message, text)


def _elsewhere(a: Analysis, err: SpecError, message: str,
               text: Text) -> dict[str, list[lsp.Diagnostic]]:
    """An error in a `use`d file: here on the statement or `use` line that reached it, and
    there at its place."""
    span = err.span
    assert span is not None
    there = Text(a.sources[span.file], text.encoding)
    other = lsp.Location(path_to_uri(span.file), there.range(span))
    anchor = a.context.span if a.context is not None else a.origins.get(span.file)
    how = "placing this" if a.context is not None else "this `use`"
    here = text.range(anchor) if anchor is not None else _TOP
    local = _diagnostic(here, f"{message}\n(in {span.file}:{span.line}:{span.col}, "
                        f"reached by {how})", [lsp.DiagnosticRelatedInformation(
                            other, f"the error is here, in {span.file}")])
    name = a.snapshot.path
    remote = _diagnostic(there.range(span), f"{message}\n(while compiling {name})",
                         [lsp.DiagnosticRelatedInformation(
                             lsp.Location(a.snapshot.uri, here), f"reached from {name}")])
    return {a.snapshot.uri: [local], other.uri: [remote]}


def _related_here(a: Analysis, err: SpecError,
                  text: Text) -> list[lsp.DiagnosticRelatedInformation]:
    """For an error in this document: the definition of the block a failing call calls, and
    the statement being placed when the error sits elsewhere (inside a block defined here)."""
    span = err.span
    assert span is not None
    related = []
    call = _call_at(a, span)
    if call is not None and a.library is not None and call.func in a.library.blocks:
        block = a.library.blocks[call.func]
        source = a.sources.get(block.span.file)
        if source is not None:
            where = Text(source, text.encoding).range(block.span)
            related.append(lsp.DiagnosticRelatedInformation(
                lsp.Location(path_to_uri(block.span.file), where),
                f"`{block.name}` is defined here"))
    ctx = a.context
    if ctx is not None and not contains(ctx.span, span.line, span.col):
        related.append(lsp.DiagnosticRelatedInformation(
            lsp.Location(a.snapshot.uri, text.range(ctx.span)), "while placing this statement"))
    return related


def _call_at(a: Analysis, span: Span) -> ast.Call | None:
    """The innermost call whose arguments hold the error's place."""
    if a.module is None:
        return None
    best: ast.Call | None = None
    for node in walk(a.module):
        if isinstance(node, ast.Call) and contains(node.span, span.line, span.col) and (
                best is None or contains(best.span, node.span.line, node.span.col)):
            best = node
    return best


def _diagnostic(where: lsp.Range, message: str,
                related: list[lsp.DiagnosticRelatedInformation] | None = None) -> lsp.Diagnostic:
    return lsp.Diagnostic(where, message, severity=lsp.DiagnosticSeverity.Error, source=SOURCE,
                          related_information=related or None)
