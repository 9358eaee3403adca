"""Reading the syntax tree for the editor: every node of it, the names that refer to blocks,
and the places of names the tree records no span for (a block's name after `block`, the block
kinds after a rule's `of`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sedsl.errors import Span
from sedsl.language import ast
from sedsl.lsp.text import Text, contains
from sedsl.record import Record

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEF = re.compile(r"(block|network)\s+([A-Za-z_][A-Za-z0-9_]*)")


def walk(root: Any) -> Iterator[Any]:
    """Every record below `root` (itself included), parents before children, in text order."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Record):
            yield node
            children = [getattr(node, f) for f in node._fields]
        elif isinstance(node, tuple | list):
            children = list(node)
        else:
            continue
        stack.extend(reversed(children))


class Reference(Record):
    """A name in the text that refers to a block: a call, a bare name, or a rule's `of`."""

    name: str
    span: Span  # the name itself


def references(module: ast.Module, text: Text) -> Iterator[Reference]:
    """Names that may refer to blocks: every call's and bare name's, and `of` clauses'; not the
    names of a `from` clause (they name statements)."""
    sources = {id(n) for node in walk(module) if isinstance(node, ast.From) for n in node.names}
    for node in walk(module):
        if isinstance(node, ast.Call):
            yield Reference(node.func, node.func_span)
        elif isinstance(node, ast.Name) and id(node) not in sources:
            yield Reference(node.id, node.span)
        elif isinstance(node, ast.Rule):
            yield from _kinds(node, text)


def bodies(module: ast.Module) -> Iterator[tuple[ast.Stmt, ...]]:
    """Every body of statements: blocks', networks', groups', residual and shortcut bodies
    (an `if` body is part of the body it is in)."""
    for node in walk(module):
        if isinstance(node, ast.BlockDef | ast.Group):
            yield node.body
        elif isinstance(node, ast.Residual):
            yield node.body
            if node.shortcut is not None:
                yield node.shortcut


def statements(body: tuple[ast.Stmt, ...]) -> Iterator[ast.Stmt]:
    """A body's statements, those of its `if` bodies in place."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            yield from statements(stmt.body + stmt.orelse)


def from_source(module: ast.Module, line: int, col: int) -> ast.Bind | None:
    """The statement a name of a `from` clause at (line, col) reads: the binding of that name
    before it in its body."""
    for body in bodies(module):
        seen: dict[str, ast.Bind] = {}
        for stmt in statements(body):
            if isinstance(stmt, ast.Bind | ast.Place) and stmt.source is not None:
                for n in stmt.source.names:
                    if contains(n.span, line, col):
                        return seen.get(n.id)
            if isinstance(stmt, ast.Bind):
                seen[stmt.name] = stmt
    return None


def _kinds(rule: ast.Rule, text: Text) -> Iterator[Reference]:
    if not rule.kinds:
        return
    start = text.span_offset(rule.span.line, rule.span.col)
    end = text.span_offset(rule.span.end_line, rule.span.end_col)
    source = text.text[start:end]
    clause = re.search(r"\bof\b", source)
    if clause is None:
        return
    base = start + clause.end()
    for m in _NAME.finditer(source[clause.end():].split("{", 1)[0]):
        if m.group() in rule.kinds:
            yield Reference(m.group(), text.to_span(rule.span.file, base + m.start(),
                                                    base + m.end()))


def name_span(block: ast.BlockDef, text: Text) -> Span:
    """The span of a block's (or network's) name, after its keyword."""
    start = text.span_offset(block.span.line, block.span.col)
    m = _DEF.match(text.text, start)
    if m is None or m.group(2) != block.name:
        return block.span
    return text.to_span(block.span.file, m.start(2), m.end(2))


def use_path_span(use: ast.Use, text: Text) -> Span:
    """The span of a `use` line's quoted path."""
    start = text.span_offset(use.span.line, use.span.col)
    end = text.span_offset(use.span.end_line, use.span.end_col)
    quote = text.text.find('"', start, end)
    return text.to_span(use.span.file, quote, end) if quote >= 0 else use.span
