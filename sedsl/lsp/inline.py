"""Inlay hints (after each statement of the network: its output shape and the parameters of
the network up to there) and code lenses (on the `network` line: the totals and the SE
overhead; on the `se` line and on each rule: the SE blocks and what they add)."""

from __future__ import annotations

from lsprotocol import types as lsp

from sedsl.errors import Span
from sedsl.language import ast
from sedsl.lsp.show import blocks, exact, overhead, pct, shape
from sedsl.lsp.view import View
from sedsl.targets.report import human


def inlay_hints(view: View, within: lsp.Range) -> list[lsp.InlayHint]:
    f = view.facts
    if f is None:
        return []
    hints = []
    for s in f.net.statements:
        if s.start == s.end:
            continue  # a value, or `identity`: nothing placed
        end = view.text.range(s.stmt.span).end
        if not (within.start.line <= end.line <= within.end.line):
            continue
        total = f.cumulative(s)
        label = f"{shape(f.shape(s.output))} · {human(total.params)} params"
        tip = (f"output {shape(f.shape(s.output))}; the network up to here: "
               f"{total.params:,} params, {total.flops:,} FLOPs ({f.convention})")
        hints.append(lsp.InlayHint(end, label, kind=lsp.InlayHintKind.Type,
                                   tooltip=tip, padding_left=True))
    return hints


def code_lenses(view: View) -> list[lsp.CodeLens]:
    f, module = view.facts, view.module
    if f is None or module is None:
        return []
    lenses = []
    for net in module.networks:
        at = _line(view, net.span)
        lenses.append(_lens(at, f"{exact(f.total.params)} params, {human(f.total.flops)} FLOPs "
                            f"({f.convention}) · base {human(f.base_total.params)} params, "
                            f"{human(f.base_total.flops)} FLOPs"))
        lenses.append(_lens(at, "SE: " + overhead(f.total, f.base_total, f.convention)))
    for section in module.se:
        lenses.append(_lens(_line(view, section.span), f"{blocks(f.total.se_blocks)}: "
                            + overhead(f.total, f.base_total, f.convention)))
        for rule in section.rules:
            lenses.append(_lens(_line(view, rule.span), rule_lens(view, rule)))
    return lenses


def rule_lens(view: View, rule: ast.Rule) -> str:
    f = view.facts
    assert f is not None
    cost = f.unit_costs(f.rule_units(rule.span))
    if not cost.se_blocks:
        return "0 SE blocks (replaced by later rules, or disabled)"
    share = pct(cost.params, f.total.se_params).lstrip("+")
    return (f"{blocks(cost.se_blocks)}: +{human(cost.params)} params ({share} of the SE "
            f"overhead), +{human(cost.flops)} FLOPs")


def _line(view: View, span: Span) -> lsp.Range:
    start = view.text.range(span).start
    return lsp.Range(start, start)


def _lens(where: lsp.Range, title: str) -> lsp.CodeLens:
    return lsp.CodeLens(where, lsp.Command(title, ""))
