"""Hover: on a statement of the network, its output shape, parameters and FLOPs (per copy and
in total for `* n`); on an op, its arguments and what it computes; on a block, its signature
and where it is defined; either with what this call placed; on an SE rule, the blocks it places
and what they add; on a setting or a network parameter, its value and the values it takes."""

from __future__ import annotations

from collections.abc import Callable

from lsprotocol import types as lsp

from sedsl.errors import Span
from sedsl.ir.ops import OPS
from sedsl.language import ast
from sedsl.language.evaluate import show as show_value
from sedsl.lsp import words
from sedsl.lsp.compiler import Statement
from sedsl.lsp.facts import Cost
from sedsl.lsp.show import arg_text, blocks, compress, exact, overhead, pct, shape
from sedsl.lsp.syntax import name_span, walk
from sedsl.lsp.view import View

Found = tuple[str, Span] | None


def hover(view: View, pos: lsp.Position) -> lsp.Hover | None:
    if view.module is None:
        return None
    line, col = view.text.span_at(view.path, pos)
    finders: tuple[Callable[[View, int, int], Found], ...] = (
        _se, _use, _reference, _declaration, _statement)
    for finder in finders:
        found = finder(view, line, col)
        if found is not None:
            text, span = found
            return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text),
                             view.text.range(span))
    return None


# --- the network's statements -------------------------------------------------------------------


def _statement(view: View, line: int, col: int) -> Found:
    if view.facts is None:
        return None
    s = view.facts.at(line, col)
    if s is None:
        return None
    return statement_text(view, s), s.stmt.span


def statement_text(view: View, s: Statement) -> str:
    """What one statement of the network places: shape, cost, copies, SE blocks."""
    f = view.facts
    assert f is not None
    name = s.stmt.name if isinstance(s.stmt, ast.Bind) else None
    if s.start == s.end and name is not None and view.analysis.network is not None:
        value = view.analysis.network.params.get(name)
        if value is not None:
            return f"**{name}** = `{show_value(value)}`"
    cost = f.statement(s)
    head = f"**{name}** → `{shape(f.shape(s.output))}`" if name else \
        f"→ `{shape(f.shape(s.output))}`"
    lines = [head, "", f"- params: {exact(cost.params)}",
             f"- FLOPs ({f.convention}): {exact(cost.flops)}"]
    copies = f.copies(s)
    if len(copies) > 1:
        lines.append(f"- per copy ({len(copies)}): " + _copies(copies))
    if cost.se_blocks:
        lines.append(f"- of which SE: {blocks(cost.se_blocks)}, {cost.se_params:,} params, "
                     f"{cost.se_flops:,} FLOPs")
    lines.append(f"- params of the network up to here: {exact(f.cumulative(s).params)}")
    return "\n".join(lines)


def _copies(copies: list[tuple[str, Cost]]) -> str:
    """block1 P params, F FLOPs; block2..block6 P params, F FLOPs each."""
    groups: list[tuple[list[str], Cost]] = []
    for name, cost in copies:
        if groups and groups[-1][1] == cost:
            groups[-1][0].append(name)
        else:
            groups.append(([name], cost))
    parts = []
    for names, cost in groups:
        label = compress(names).split(".", 1)[-1] if "." in names[0] else names[0]
        each = " each" if len(names) > 1 else ""
        parts.append(f"{label} {cost.params:,} params, {cost.flops:,} FLOPs{each}")
    return "; ".join(parts)


# --- calls: ops, blocks, built-ins, parameters ----------------------------------------------------


def _reference(view: View, line: int, col: int) -> Found:
    module = view.module
    assert module is not None
    best: tuple[str, Span, Span] | None = None  # name, its span, the whole call's span
    for node in walk(module):
        if isinstance(node, ast.Call) and view.inside(node.func_span, line, col):
            best = (node.func, node.func_span, node.span)
        elif isinstance(node, ast.Name) and view.inside(node.span, line, col):
            best = (node.id, node.span, node.span)
    if best is None:
        return None
    name, span, call = best
    text = _describe(view, name, call, line, col)
    return (text, span) if text else None


def _describe(view: View, name: str, call: Span, line: int, col: int) -> str | None:
    params = _network_params(view, line, col)
    if name in params:
        return _param_text(view, params[name])
    lib = view.analysis.library
    if name in OPS and OPS[name].user:
        return _op_text(name) + _placed(view, call, se=False)
    if lib is not None and name in lib.blocks:
        text = _block_text(view, lib.blocks[name]) + _placed(view, call)
        return text + _stage_of(view, call)
    if name in words.BUILTINS:
        return f"**{name}** — built-in function\n\n{words.BUILTINS[name]}"
    if name in words.LAYER_BUILTINS:
        return f"**{name}** — inside a block, {words.LAYER_BUILTINS[name]}"
    if name == "identity":
        return "**identity** — its input: adds nothing to the graph"
    return None


def _op_text(name: str) -> str:
    op = OPS[name]
    args = ", ".join(arg_text(a) for a in op.args)
    sig = f"**{name}**({args})" if op.args else f"**{name}**"
    example = f"\n\ne.g. `{op.example}`" if op.example else ""
    return f"{sig} — op\n\n{op.doc}{example}"


def _block_text(view: View, block: ast.BlockDef) -> str:
    params = ", ".join(view.snippet(p.span) or p.name for p in block.params)
    where = f"{block.span.file}:{block.span.line}" if block.span.file != view.path \
        else f"line {block.span.line}"
    return f"**{block.name}**({params}) — block, defined at {where}"


def _placed(view: View, call: Span, se: bool = True) -> str:
    """What the call placed: its nodes' output shapes and cost (every copy, every instance),
    with the SE blocks inside the block instances it made (`se`; an op makes none)."""
    f = view.facts
    if f is None:
        return ""
    runs = f.call_runs(call)
    if not runs:
        return ""
    cost = f.cost(runs, se)
    shapes = list(dict.fromkeys(shape(f.shape(f.names[e - 1])) for s, e in runs if e > s))
    times = f"{len(runs)} times" if len(runs) > 1 else "once"
    text = (f"\n\nplaced {times} here → `{', '.join(shapes)}`\n\n"
            f"- params: {exact(cost.params)}\n- FLOPs ({f.convention}): {exact(cost.flops)}")
    if cost.se_blocks:
        text += f"\n- of which SE: {blocks(cost.se_blocks)}, {cost.se_params:,} params"
    return text


def _stage_of(view: View, call: Span) -> str:
    """A block call that is a whole statement of the network: that statement's facts."""
    f = view.facts
    if f is None:
        return ""
    for s in f.net.statements:
        value = s.stmt.value
        inner = value.left if isinstance(value, ast.BinOp) else value
        if isinstance(inner, ast.Call) and inner.span == call:
            return "\n\n---\n\n" + statement_text(view, s)
    return ""


def _network_params(view: View, line: int, col: int) -> dict[str, ast.Param]:
    module = view.module
    assert module is not None
    for net in module.networks:
        if view.inside(net.span, line, col):
            return {p.name: p for p in net.params}
    return {}


def _param_text(view: View, param: ast.Param) -> str:
    default = view.snippet(param.default.span) if param.default is not None else "none"
    net = view.analysis.network
    value = net.params.get(param.name) if net is not None else None
    overridden = dict(view.analysis.snapshot.settings.overrides).get(param.name)
    now = f" = `{show_value(value)}`" if value is not None else ""
    lines = [f"**{param.name}**{now} — network parameter", "",
             f"- default: `{default}`"]
    if overridden is not None:
        lines.append(f"- set to `{overridden}` by `sedsl.set`")
    lines.append(f"- takes: {_takes(view, param)}")
    lines.append(f"- override: `sedsl.set` {{\"{param.name}\": \"...\"}} or "
                 f"`--set {param.name}=...`")
    return "\n".join(lines)


def _takes(view: View, param: ast.Param) -> str:
    if param.choices:  # declared: `size: "b0" | "b1" = "b0"`
        return "one of " + ", ".join(f"`{view.snippet(c.span) or '?'}`" for c in param.choices)
    d = param.default
    if isinstance(d, ast.Bool):
        return "true or false"
    if isinstance(d, ast.Number):
        return "a number"
    if isinstance(d, ast.ShapeLit):
        return "a shape (3x224x224)"
    if isinstance(d, ast.String):
        seen = sorted(_compared(view, param.name) | {d.value})
        return "a string; the spec tests " + ", ".join(f'"{s}"' for s in seen)
    return "a layer, by name (relu6)" if d is not None else "a value"


def _compared(view: View, name: str) -> set[str]:
    """The strings the spec compares a parameter with (`layout == "timm"`)."""
    found = set()
    for node in walk(view.module):
        if isinstance(node, ast.BinOp) and node.op in ("==", "!="):
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Name) and s.id == name for s in sides):
                found |= {s.value for s in sides if isinstance(s, ast.String)}
    return found


def _declaration(view: View, line: int, col: int) -> Found:
    """A block's or network's name where it is defined; a network parameter in its header."""
    module = view.module
    assert module is not None
    for net in module.networks:
        for p in net.params:
            if view.inside(p.span, line, col):
                return _param_text(view, p), p.span
    for block in module.blocks:
        span = name_span(block, view.text)
        if view.inside(span, line, col):
            return _block_text(view, block), span
    return None


# --- use lines ----------------------------------------------------------------------------------


def _use(view: View, line: int, col: int) -> Found:
    module = view.module
    assert module is not None
    for use in module.uses:
        if view.inside(use.span, line, col):
            file = next((f for f, s in view.analysis.origins.items() if s == use.span), None)
            lib = view.analysis.library
            defined = sorted(n for n, b in (lib.blocks.items() if lib else ())
                             if b.span.file == file)
            where = f"`{file}`" if file else "not found"
            return (f"**use** `{use.path}` → {where}\n\nblocks: "
                    + (", ".join(f"`{n}`" for n in defined) or "none")), use.span
    return None


# --- the se section -----------------------------------------------------------------------------


def _se(view: View, line: int, col: int) -> Found:
    module = view.module
    assert module is not None
    for section in module.se:
        if not view.inside(section.span, line, col):
            continue
        for rule in section.rules:
            for s in rule.settings:
                if view.inside(s.span, line, col):
                    return _setting_text(view, s, rule), s.span
            if view.inside(rule.span, line, col):
                return rule_text(view, rule), rule.span
        for s in section.settings:
            if view.inside(s.span, line, col):
                return _setting_text(view, s, None), s.span
        if line == section.span.line:
            return se_text(view), section.span
    return None


def se_text(view: View) -> str:
    f = view.facts
    if f is None:
        return "**se** — the SE settings and rules"
    return (f"**se** — {blocks(f.total.se_blocks)}\n\n"
            f"- {overhead(f.total, f.base_total, f.convention)}\n"
            f"- SE network: {exact(f.total.params)} params, {exact(f.total.flops)} FLOPs\n"
            f"- base network: {exact(f.base_total.params)} params, "
            f"{exact(f.base_total.flops)} FLOPs")


def rule_text(view: View, rule: ast.Rule) -> str:
    head = f"**{view.snippet(rule.span).split('{')[0].strip()}** — SE rule"
    point = words.point(rule.target) if rule.where == "at" else \
        f"after the layer `{rule.target}` of each block"
    lines = [head, "", f"- where: {point or rule.target}"]
    f = view.facts
    if f is not None:
        units = f.rule_units(rule.span)
        cost = f.unit_costs(units)
        placed = compress([u.block for u in units]) or "nothing (later rules replace it, or it "\
            "is disabled)"
        lines.append(f"- places {blocks(len(units))}: {placed}")
        if units:
            lines.append(f"- adds {cost.params:,} params ({pct(cost.params, f.base_total.params)}"
                         f" of the base network), {cost.flops:,} FLOPs "
                         f"({pct(cost.flops, f.base_total.flops)}, {f.convention})")
            widths = sorted({(u.channels, u.reduced) for u in units})
            lines.append("- reduced widths: " + ", ".join(f"{c} → {r}" for c, r in widths))
    return "\n".join(lines)


def _setting_text(view: View, s: ast.Setting, rule: ast.Rule | None) -> str:
    meaning, takes = words.SETTINGS.get(s.name, ("not an SE setting", ""))
    scope = "this rule's blocks" if rule is not None else "every rule"
    lines = [f"**{s.name}** = `{view.snippet(s.value.span)}` — SE setting, for {scope}", "",
             f"- {meaning}", f"- takes: {takes}", f"- default: `{words.default(s.name)}`"
             if s.name in words.SETTINGS else ""]
    overridden = dict(view.analysis.snapshot.settings.overrides).get(s.name)
    if overridden is not None:
        lines.append(f"- `sedsl.set` makes it `{overridden}`"
                     + (" (this rule's own setting wins)" if rule is not None else ""))
    return "\n".join(x for x in lines if x is not None)
