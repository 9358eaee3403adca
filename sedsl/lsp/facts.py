"""What the compiled graph says about the text: per statement, call and SE rule, the output
shape, the parameters and the FLOPs (exact, from `sedsl.targets.cost.node_costs`), with the SE
blocks each placed.

Nodes are addressed by their index in the base graph's insertion order: a statement or a block
call placed a contiguous run of them (`compiler.Recorder`). An SE block belongs to the run that
holds the last node of the block instance it sits in (its anchor), so the SE cost of
`conv4 = bottleneck(...) * 6` is that of the six SE blocks inside conv4's units."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from itertools import accumulate

from sedsl.errors import Span
from sedsl.ir.node import record, records
from sedsl.ir.ops import Shape
from sedsl.language import ast
from sedsl.lsp.compiler import Analysis, Network, Statement
from sedsl.record import Record
from sedsl.targets.cost import NodeCost, node_costs


class Cost(Record):
    """Parameters and FLOPs of some nodes, with the SE blocks among them."""

    params: int = 0
    flops: int = 0
    se_params: int = 0
    se_flops: int = 0
    se_blocks: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops,
                    self.se_params + other.se_params, self.se_flops + other.se_flops,
                    self.se_blocks + other.se_blocks)


class Unit(Record):
    """One SE block: its name, the block instance it sits in, its anchor, its cost."""

    name: str
    block: str
    anchor: int
    rule: Span
    cost: Cost
    channels: int  # C, the channels it scales
    reduced: int  # its reduced width (C for variants without one)


class Facts:
    """Queries over one compiled network; built once per analysis."""

    def __init__(self, analysis: Analysis, convention: str = "fvcore"):
        net = analysis.network
        assert net is not None
        self.analysis, self.net, self.convention = analysis, net, convention
        self.names = list(net.base.nodes)
        costs = {c.name: c for c in node_costs(net.se_graph, convention)}
        self._params = [0, *accumulate(costs[n].params for n in self.names)]
        self._flops = [0, *accumulate(costs[n].flops for n in self.names)]
        self.units = sorted(_units(net, self.names, costs), key=lambda u: u.anchor)
        self._anchors = [u.anchor for u in self.units]
        self._unit_params = [0, *accumulate(u.cost.params for u in self.units)]
        self._unit_flops = [0, *accumulate(u.cost.flops for u in self.units)]
        self.base_total = Cost(self._params[-1], self._flops[-1])
        self.total = self.cost([(0, len(self.names))])
        self._by_span: dict[Span, list[int]] = {}
        for i, name in enumerate(self.names):
            self._by_span.setdefault(record(net.base, name).span, []).append(i)

    # -- cost of runs of nodes --

    def cost(self, runs: Iterable[tuple[int, int]], se: bool = True) -> Cost:
        """The nodes of the runs, and (with `se`) the SE blocks anchored in them."""
        total = Cost()
        for start, end in runs:
            lo, hi = (bisect.bisect_left(self._anchors, x) for x in (start, end))
            if not se:
                lo = hi
            se_params = self._unit_params[hi] - self._unit_params[lo]
            se_flops = self._unit_flops[hi] - self._unit_flops[lo]
            total += Cost(self._params[end] - self._params[start] + se_params,
                          self._flops[end] - self._flops[start] + se_flops,
                          se_params, se_flops, hi - lo)
        return total

    def shape(self, node: str) -> Shape:
        return record(self.net.base, node).shape

    # -- statements --

    def statement(self, s: Statement) -> Cost:
        return self.cost([(s.start, s.end)])

    def cumulative(self, s: Statement) -> Cost:
        """Everything up to the end of the statement, the input included."""
        return self.cost([(0, s.end)])

    def copies(self, s: Statement) -> list[tuple[str, Cost]]:
        """For `name = layer * n`: each copy (`name.block1` ...) and its cost."""
        if not isinstance(s.stmt, ast.Bind) or not _is_repeat(s.stmt.value):
            return []
        runs: dict[str, list[int]] = {}
        copy = re.compile(re.escape(s.stmt.name) + r"\.block[0-9]+(?=\.|$)")
        for i in range(s.start, s.end):
            m = copy.match(self.names[i])
            if m:
                runs.setdefault(m.group(), []).append(i)
        return [(copy, self.cost([(ix[0], ix[-1] + 1)])) for copy, ix in runs.items()]

    def at(self, line: int, col: int) -> Statement | None:
        """The innermost top-level statement (of the network) at a 1-based position."""
        best: Statement | None = None
        for s in self.net.statements:
            span = s.stmt.span
            if (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col) and (
                    best is None or _size(span) < _size(best.stmt.span)):
                best = s
        return best

    # -- calls and rules --

    def call_runs(self, span: Span) -> list[tuple[int, int]]:
        """The runs of nodes a call at `span` placed: a block call's copies, an op's nodes."""
        runs = list(self.net.calls.get(span, []))
        runs += [(i, i + 1) for i in self._by_span.get(span, [])]
        return sorted(runs)

    def rule_units(self, rule: Span) -> list[Unit]:
        return [u for u in self.units if u.rule == rule]

    def output(self, runs: list[tuple[int, int]]) -> Shape | None:
        """The shape of the last node of the last run (a placement's output)."""
        for start, end in reversed(runs):
            if end > start:
                return self.shape(self.names[end - 1])
        return None

    def unit_costs(self, units: list[Unit]) -> Cost:
        return Cost(sum(u.cost.params for u in units), sum(u.cost.flops for u in units),
                    sum(u.cost.params for u in units), sum(u.cost.flops for u in units),
                    len(units))


def _units(net: Network, names: list[str], costs: dict[str, NodeCost]) -> list[Unit]:
    last: dict[str, int] = {}
    for i, name in enumerate(names):
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            last[".".join(parts[:k])] = i
    members: dict[str, list[str]] = {}
    for name, rec in records(net.se_graph):
        if rec.se is not None:
            members.setdefault(rec.se.unit, []).append(name)
    units = []
    for unit, nodes in members.items():
        rec = record(net.se_graph, nodes[0])
        block = rec.block or ""
        params = sum(costs[n].params for n in nodes)
        flops = sum(costs[n].flops for n in nodes)
        assert rec.se is not None
        units.append(Unit(unit, block, last.get(block, len(names) - 1), rec.span,
                          Cost(params, flops, params, flops, 1), rec.se.channels,
                          rec.se.rd_channels))
    return units


def _size(span: Span) -> tuple[int, int]:
    return span.end_line - span.line, span.end_col - span.col


def _is_repeat(expr: ast.Expr) -> bool:
    return isinstance(expr, ast.BinOp) and expr.op == "*" and not isinstance(
        expr.left, ast.Number)
