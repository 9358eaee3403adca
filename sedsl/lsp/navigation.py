"""Definitions, references and renames of blocks (across `use`d files), `use` paths and stage
names, and the document's outline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lsprotocol import types as lsp

from sedsl import files
from sedsl.errors import Span
from sedsl.ir.ops import OPS
from sedsl.language import ast
from sedsl.language.paths import LIBRARY_ROOT
from sedsl.lsp import words
from sedsl.lsp.show import shape
from sedsl.lsp.syntax import Reference, from_source, name_span, references, use_path_span
from sedsl.lsp.text import Text, contains, path_to_uri
from sedsl.lsp.view import View


class RenameRefused(Exception):
    """A rename that cannot be done; the message says why."""


# --- what is under the cursor -------------------------------------------------------------------


def block_at(view: View, pos: lsp.Position) -> tuple[ast.BlockDef, Span] | None:
    """The block named at the position (a call, a bare name, an `of`, or its definition), and
    the span of that name."""
    module, lib = view.module, view.analysis.library
    if module is None or lib is None:
        return None
    line, col = view.text.span_at(view.path, pos)
    for ref in references(module, view.text):
        if contains(ref.span, line, col) and ref.name in lib.blocks \
                and not _shadowed(module, ref):
            return lib.blocks[ref.name], ref.span
    for block in module.blocks:
        span = name_span(block, view.text)
        if contains(span, line, col):
            return block, span
    return None


def _shadowed(module: ast.Module, ref: Reference) -> bool:
    """A block's parameter of the same name hides the block inside that block."""
    for block in (*module.blocks, *module.networks):
        if contains(block.span, ref.span.line, ref.span.col):
            return any(p.name == ref.name for p in block.params)
    return False


# --- definition ---------------------------------------------------------------------------------


def definition(view: View, pos: lsp.Position) -> list[lsp.Location]:
    found = block_at(view, pos)
    if found is not None:
        return [_location(view, found[0].span.file, _def_span(view, found[0]))]
    return _use_target(view, pos) or _stage(view, pos) or _from_source(view, pos)


def _from_source(view: View, pos: lsp.Position) -> list[lsp.Location]:
    """A name in a `from` clause: the statement it reads."""
    assert view.module is not None
    line, col = view.text.span_at(view.path, pos)
    stmt = from_source(view.module, line, col)
    return [] if stmt is None else [_location(view, view.path, stmt.name_span)]


def _def_span(view: View, block: ast.BlockDef) -> Span:
    text = view.source(block.span)
    return name_span(block, text) if text is not None else block.span


def _use_target(view: View, pos: lsp.Position) -> list[lsp.Location]:
    module = view.module
    assert module is not None
    line, col = view.text.span_at(view.path, pos)
    for use in module.uses:
        if contains(use.span, line, col):
            file = next((f for f, s in view.analysis.origins.items() if s == use.span), None)
            if file is None:
                return []
            start = lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
            return [lsp.Location(path_to_uri(file), start)]
    return []


def _stage(view: View, pos: lsp.Position) -> list[lsp.Location]:
    """A stage named in a rule's `in` clause: the statement that places it."""
    module = view.module
    assert module is not None
    line, col = view.text.span_at(view.path, pos)
    word = view.text.word_at(pos)
    if word is None:
        return []
    for section in module.se:
        for rule in section.rules:
            if any(contains(r.span, line, col) for r in rule.ranges):
                for net in module.networks:
                    for stmt in _binds(net.body):
                        if stmt.name == word[0]:
                            return [_location(view, view.path, stmt.name_span)]
    return []


def _binds(body: tuple[ast.Stmt, ...]) -> Iterator[ast.Bind]:
    for stmt in body:
        if isinstance(stmt, ast.Bind):
            yield stmt
        elif isinstance(stmt, ast.If):
            yield from _binds(stmt.body)
            yield from _binds(stmt.orelse)


def _location(view: View, file: str, span: Span) -> lsp.Location:
    text = view.source(span)
    where = text.range(span) if text is not None else lsp.Range(lsp.Position(0, 0),
                                                                lsp.Position(0, 0))
    return lsp.Location(path_to_uri(file), where)


# --- references and rename ----------------------------------------------------------------------


def block_references(view: View, block: ast.BlockDef,
                     declaration: bool = True) -> list[tuple[str, Span]]:
    """(file, span) of every use of the block's name, in this document and the `use`d files;
    its definition's name first, if asked for."""
    found = [(block.span.file, _def_span(view, block))] if declaration else []
    module, lib = view.module, view.analysis.library
    assert module is not None and lib is not None
    found += [(view.path, r.span) for r in references(module, view.text)
              if r.name == block.name and not _shadowed(module, r)]
    for file, text in _library_files(view):
        tree = ast.Module(file, (), tuple(b for b in lib.blocks.values() if b.span.file == file),
                          (), ())
        found += [(file, r.span) for r in references(tree, text)
                  if r.name == block.name and not _shadowed(tree, r)]
    return found


def _library_files(view: View) -> Iterator[tuple[str, Text]]:
    for file, source in view.analysis.sources.items():
        if file != view.path:
            yield file, Text(source, view.text.encoding)


def references_at(view: View, pos: lsp.Position, declaration: bool) -> list[lsp.Location]:
    found = block_at(view, pos)
    if found is None:
        return []
    return [_location(view, file, span) for file, span in
            block_references(view, found[0], declaration)]


def prepare_rename(view: View, pos: lsp.Position) -> lsp.Range | None:
    found = block_at(view, pos)
    return view.text.range(found[1]) if found is not None else None


def rename(view: View, pos: lsp.Position, new: str) -> lsp.WorkspaceEdit | None:
    found = block_at(view, pos)
    if found is None:
        return None
    block = found[0]
    _check_rename(view, block, new)
    changes: dict[str, list[lsp.TextEdit]] = {}
    for file, span in block_references(view, block):
        text = view.source(span)
        if text is not None:
            changes.setdefault(path_to_uri(file), []).append(lsp.TextEdit(text.range(span), new))
    return lsp.WorkspaceEdit(changes=changes)


def _check_rename(view: View, block: ast.BlockDef, new: str) -> None:
    lib = view.analysis.library
    assert lib is not None
    if not new.isidentifier() or not new.isascii():
        raise RenameRefused(f"`{new}` is not a name")
    if new in OPS or new in words.BUILTINS or new in words.KEYWORDS or new in lib.blocks:
        raise RenameRefused(f"`{new}` is taken: an op, a built-in, a keyword or a block")
    try:
        where = files.resolve(Path.cwd() / block.span.file)
    except files.Unusable:
        where = Path(block.span.file)
    if where.is_relative_to(LIBRARY_ROOT.resolve()) and block.span.file != view.path:
        raise RenameRefused(f"`{block.name}` is defined in sedsl's block library "
                            f"({block.span.file}); copy it into your spec to rename it")


# --- the outline --------------------------------------------------------------------------------


def symbols(view: View) -> list[lsp.DocumentSymbol]:
    module = view.module
    if module is None:
        return []
    out = [_symbol(view, f'use "{u.path}"', lsp.SymbolKind.File, u.span,
                   use_path_span(u, view.text)) for u in module.uses]
    out += [_network(view, net) for net in module.networks]
    out += [_block(view, b) for b in module.blocks]
    out += [_section(view, s) for s in module.se]
    return sorted(out, key=lambda s: (s.range.start.line, s.range.start.character))


def _network(view: View, net: ast.BlockDef) -> lsp.DocumentSymbol:
    shapes = _shapes(view)
    children = [_symbol(view, p.name, lsp.SymbolKind.Property, p.span, p.span)
                for p in net.params]
    children += [_symbol(view, b.name, lsp.SymbolKind.Field, b.span, b.name_span,
                         shapes.get(b.span)) for b in _binds(net.body)]
    return _symbol(view, net.name, lsp.SymbolKind.Class, net.span, name_span(net, view.text),
                   "network", children)


def _shapes(view: View) -> dict[Span, str]:
    f = view.facts
    if f is None:
        return {}
    return {s.stmt.span: shape(f.shape(s.output)) for s in f.net.statements if s.end > s.start}


def _block(view: View, block: ast.BlockDef) -> lsp.DocumentSymbol:
    params = ", ".join(p.name for p in block.params)
    children = [_symbol(view, b.name, lsp.SymbolKind.Field, b.span, b.name_span)
                for b in _binds(block.body)]
    return _symbol(view, block.name, lsp.SymbolKind.Function, block.span,
                   name_span(block, view.text), f"({params})", children)


def _section(view: View, section: ast.SeSection) -> lsp.DocumentSymbol:
    children = [_symbol(view, s.name, lsp.SymbolKind.Property, s.span, s.span)
                for s in section.settings]
    children += [_symbol(view, f"{r.where} {r.target}", lsp.SymbolKind.Event, r.span, r.span)
                 for r in section.rules]
    return _symbol(view, "se", lsp.SymbolKind.Namespace, section.span, section.span, None,
                   children)


def _symbol(view: View, name: str, kind: lsp.SymbolKind, span: Span, selection: Span,
            detail: str | None = None,
            children: list[lsp.DocumentSymbol] | None = None) -> lsp.DocumentSymbol:
    whole = view.text.range(span)
    pick = view.text.range(selection)
    if not (_le(whole.start, pick.start) and _le(pick.end, whole.end)):
        pick = lsp.Range(whole.start, whole.start)
    return lsp.DocumentSymbol(name or "?", kind, whole, pick, detail=detail,
                              children=children or None)


def _le(a: lsp.Position, b: lsp.Position) -> bool:
    return (a.line, a.character) <= (b.line, b.character)
