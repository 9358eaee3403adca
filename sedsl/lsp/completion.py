"""Completion. The context comes from the text before the cursor (a half-typed line does not
parse); what is in scope (blocks, stages, layer names) from the latest version that compiled.

- top level: the item keywords; `use "`: the .se files on the search path;
- a network or block body: ops, blocks, parameters in scope, built-ins; inside `name(`, that
  op's or block's arguments as `name = `;
- the se section: settings, `at`/`after`; after `setting =`, its values (variants, activations,
  squeezes); after `at`, the points; after `in`, the stages and their blocks; after `of`, the
  blocks; after `after`, the layer names of the network's block instances."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lsprotocol import types as lsp

from sedsl.ir.ops import OPS
from sedsl.ir.se import ALIASES, VARIANTS
from sedsl.ir.vocab import ACTIVATIONS, SQUEEZES
from sedsl.language import ast
from sedsl.language.library import search_path
from sedsl.lsp import words
from sedsl.lsp.show import arg_text
from sedsl.lsp.view import View

K = lsp.CompletionItemKind
_TOKENS = re.compile(r'#[^\n]*|"[^"\n]*"?|[{}]|\b(?:se|network|block)\b')


def complete(view: View, good: View | None, pos: lsp.Position) -> list[lsp.CompletionItem]:
    """Items for the position in `view`'s text; `good` is the latest version that parsed."""
    offset = view.text.offset(pos)
    before = view.text.text[:offset]
    line = before[before.rfind("\n") + 1:].replace("\r", "")
    section, depth = _section(before)
    scope = good if good is not None and good.module is not None else None
    use = re.match(r'\s*use\s+"([^"]*)$', line)
    if use:
        return _use_files(view, use.group(1))
    if section is None:
        return [_item(k, K.Keyword) for k in ("use", "block", "network", "se")]
    if section == "se":
        return _se(scope, line, depth)
    return _body(scope, before, section, offset)


def _section(before: str) -> tuple[str | None, int]:
    """The top-level item the cursor is inside (se, network, block) and the brace depth."""
    depth, keyword, section = 0, None, None
    for m in _TOKENS.finditer(before):
        token = m.group()
        if token == "{":
            if depth == 0:
                section = keyword
            depth += 1
        elif token == "}":
            depth = max(0, depth - 1)
            if depth == 0:
                section = None
        elif token in ("se", "network", "block") and depth == 0:
            keyword = token
    return (section if depth else None), depth


# --- the se section -----------------------------------------------------------------------------


def _se(scope: View | None, line: str, depth: int) -> list[lsp.CompletionItem]:
    value = re.search(r"\b([a-z_]+)\s*=\s*[\w.]*$", line)
    if value and value.group(1) in words.SETTINGS:
        return _values(value.group(1))
    clause = re.search(r"\b(at|after|in|of)\b[^{]*$", line)
    if clause:
        rest = line[clause.end(1):]
        last = re.findall(r"\b(in|of)\b", rest)
        kind = last[-1] if last else clause.group(1)
        if kind == "at":
            return _points()
        if kind == "in":
            return _stages(scope)
        if kind == "of":
            return _kinds(scope)
        return _layers(scope)  # after
    items = [_item(name, K.Property, takes, f"{meaning}\n\ndefault `{words.default(name)}`",
                   insert=f"{name} = ") for name, (meaning, takes) in words.SETTINGS.items()]
    if depth == 1:
        items += [_item("at", K.Keyword, "at POINT [in STAGES] [of BLOCKS] [{ settings }]",
                        insert="at "),
                  _item("after", K.Keyword, "after LAYER [in STAGES] [of BLOCKS]",
                        insert="after ")]
    return items


def _values(setting: str) -> list[lsp.CompletionItem]:
    docs: dict[str, str] = {}
    if setting == "variant":
        docs = {v.name: v.doc for v in VARIANTS.values()}
    elif setting in ("excite", "gate"):
        docs = {a.name: a.formula for a in ACTIVATIONS.values()}
    elif setting == "squeeze":
        docs = {s.name: s.formula for s in SQUEEZES.values()}
    return [_item(v, K.EnumMember, docs.get(v), None) for v in words.values(setting)]


def _points() -> list[lsp.CompletionItem]:
    names = [*words.POINTS, *ALIASES]
    return [_item(p, K.EnumMember, words.point(p), None) for p in names]


def _stages(scope: View | None) -> list[lsp.CompletionItem]:
    if scope is None or scope.facts is None:
        return []
    base = scope.facts.net.base
    instances = base.graph.get("blocks", {})
    stages = [s.stmt.name for s in scope.facts.net.statements
              if isinstance(s.stmt, ast.Bind) and s.end > s.start]
    items = [_item(s, K.Module, "stage", None) for s in stages]
    items += [_item(b, K.Class, kind or "block", None) for b, kind in instances.items()
              if "." in b and b.count(".") == 1]
    return items


def _kinds(scope: View | None) -> list[lsp.CompletionItem]:
    if scope is None or scope.analysis.library is None:
        return []
    return [_item(n, K.Class, f"block ({b.span.file})", None)
            for n, b in scope.analysis.library.blocks.items()]


def _layers(scope: View | None) -> list[lsp.CompletionItem]:
    """Layer names inside the network's block instances (`relu2`, `dw.relu1`)."""
    if scope is None or scope.facts is None:
        return []
    base = scope.facts.net.base
    instances = set(base.graph.get("blocks", {}))
    names: dict[str, str] = {}
    for node, data in base.nodes(data=True):
        parts = node.split(".")
        for k in range(1, len(parts)):
            if ".".join(parts[:k]) in instances:
                names.setdefault(".".join(parts[k:]), data["record"].op)
        if len(names) > 2000:
            break
    return [_item(n, K.Field, op, None) for n, op in sorted(names.items())[:500]]


# --- network and block bodies -------------------------------------------------------------------


def _body(scope: View | None, before: str, section: str,
          offset: int) -> list[lsp.CompletionItem]:
    callee = _open_call(before)
    items = _arguments(scope, callee) if callee else []
    items += [_item(n, K.Function, _signature(n), op.doc) for n, op in OPS.items() if op.user]
    if scope is not None and scope.analysis.library is not None:
        items += [_item(n, K.Class, f"({', '.join(p.name for p in b.params)})",
                        f"block, {b.span.file}:{b.span.line}")
                  for n, b in scope.analysis.library.blocks.items()]
    items += [_item(n, K.Function, doc, None) for n, doc in words.BUILTINS.items()]
    items += [_item(k, K.Keyword) for k in ("from", "residual", "shortcut", "parallel", "if",
                                             "then", "else", "identity", "true", "false", "and",
                                             "or", "not")]
    if section == "network":
        items.append(_item("input", K.Keyword, "input CxHxW", None, insert="input "))
    else:
        items += [_item(n, K.Variable, doc, None) for n, doc in words.LAYER_BUILTINS.items()]
    items += _parameters(scope, offset)
    return items


def _open_call(before: str) -> str | None:
    """The name before the innermost `(` still open at the cursor."""
    depth = 0
    for i in range(len(before) - 1, max(-1, len(before) - 2000), -1):
        c = before[i]
        if c == ")":
            depth += 1
        elif c == "(":
            if depth == 0:
                m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:i])
                return m.group(1) if m else None
            depth -= 1
        elif c in "{}":
            return None
    return None


def _arguments(scope: View | None, callee: str) -> list[lsp.CompletionItem]:
    if callee in OPS and OPS[callee].user:
        return [_item(f"{a.name} =", K.Field, arg_text(a), None, insert=f"{a.name} = ", sort="0")
                for a in OPS[callee].args]
    lib = scope.analysis.library if scope is not None else None
    if lib is not None and callee in lib.blocks:
        return [_item(f"{p.name} =", K.Field, f"parameter of {callee}", None,
                      insert=f"{p.name} = ", sort="0") for p in lib.blocks[callee].params]
    return []


def _parameters(scope: View | None, offset: int) -> list[lsp.CompletionItem]:
    """The parameters of the block or network the cursor is in (by the last good parse)."""
    if scope is None or scope.module is None:
        return []
    line, col = scope.text.span_at(scope.path, scope.text.position(offset))
    for b in (*scope.module.networks, *scope.module.blocks):
        if (b.span.line, b.span.col) <= (line, col) <= (b.span.end_line, b.span.end_col):
            return [_item(p.name, K.Variable, "parameter", None, sort="1") for p in b.params]
    return []


def _signature(name: str) -> str:
    args = OPS[name].args
    return f"({', '.join(arg_text(a) for a in args)})" if args else ""


# --- use paths ----------------------------------------------------------------------------------


def _use_files(view: View, typed: str) -> list[lsp.CompletionItem]:
    roots = search_path(view.path, list(view.analysis.snapshot.settings.search_path))
    seen: dict[str, str] = {}
    for root in roots:
        for path in _spec_files(root):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(typed) and Path(view.path).name != rel:
                seen.setdefault(rel, str(root))
    return [_item(rel, K.File, f"in {root}", None) for rel, root in sorted(seen.items())[:200]]


def _spec_files(root: Path) -> Iterable[Path]:
    try:
        found = [*root.glob("*.se"), *root.glob("*/*.se")]
    except OSError:
        return []
    return [p for p in found if p.is_file()][:500]


# --- items --------------------------------------------------------------------------------------


def _item(label: str, kind: lsp.CompletionItemKind, detail: str | None = None,
          doc: str | None = None, insert: str | None = None,
          sort: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(
        label, kind=kind, detail=detail,
        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, doc) if doc else None,
        insert_text=insert, sort_text=(sort + label) if sort else None)
