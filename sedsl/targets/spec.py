"""Graph IR -> a `.se` spec, for imported models (`sedsl import`): the inverse of elaboration.
Exact or refused: never a spec of another network.

The graph is taken apart into sequences, residual units and parallel branches (a series-parallel
decomposition: a merge's branches start at its immediate dominator and share no layer; nested
channel concats, DenseNet's, are first rewritten as concats of two). The instances of one block
kind become one `block` definition whose parameters are the numbers that differ between them, a
projection shortcut or a residual connection that only some instances have becomes an `if`;
consecutive equal calls become `* n`. The spec is built as a syntax tree (sedsl.language.ast) and
printed by sedsl.language.printer, each op call from the op table's printed form (`op_call`).
The written text is compiled again and must compute what the graph computes, node for node.

Whatever the language cannot state is refused with a `NoSpecForm` that names the layer: a gate a
block computes itself (its own SE block), an op a spec cannot call, data flow that no sequence,
residual or parallel unit states.
"""

from __future__ import annotations

import itertools
import keyword
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeAlias

from sedsl.compile import passes
from sedsl.compile.passes import OUTPUT, se_units
from sedsl.compile.se_infer import NoRule, Wanted, fixed, infer, units_at
from sedsl.errors import SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, execution_order, inputs, record, records
from sedsl.ir.ops import MERGES, OPS, Attr, Op
from sedsl.ir.se import VARIANTS
from sedsl.language import ast, numbers
from sedsl.language.ast import GENERATED as G
from sedsl.language.printer import KEYWORDS, Unprintable, skeleton, unparse
from sedsl.record import Record, replace

# --- refusals -----------------------------------------------------------------------------------


class NoSpecForm(SpecError):
    """A graph, or a part of one, that the spec language cannot state."""


def _where(rec: Node, name: str) -> str:
    return f"`{name}`" + (f" (in `{rec.kind}`)" if rec.kind else "")


def _refuse_op(name: str, rec: Node) -> NoSpecForm:
    if rec.op == "mul":
        return NoSpecForm(f"{_where(rec, name)} multiplies a feature map by a gate the model "
                          "computes itself (an SE or attention block of its own); a spec states "
                          "SE blocks as `se` rules, which `sedsl import` does not write")
    return NoSpecForm(f"{_where(rec, name)} is a `{rec.op}`, which no spec can call")


# --- one op call, from the op table's printed form -----------------------------------------------

# Arguments that a block definition may turn into parameters: (op, argument) -> slot kind.
SLOTS = {("conv", "c_out"): "c", ("conv", "groups"): "c", ("linear", "c_out"): "c",
         ("pad_channels", "c_out"): "c", ("conv", "stride"): "stride"}
Slot: TypeAlias = Callable[[str, int], "ast.Expr | None"]  # (kind, value) -> an expression,
# or None for the value itself


def op_call(op: Op, attrs: dict[str, Attr], slot: Slot | None = None) -> ast.Expr:
    """The spec call of `op` with these attributes: `conv(64, 3, stride = 2)`, or a bare `bn`.
    `slot` may give the expression of a number a block definition makes a parameter."""
    if not op.user:
        raise NoSpecForm(f"`{op.name}` has no printed form")
    attrs = with_defaults(op, attrs)
    exprs: list[ast.Expr | None] = []
    written: list[bool] = []
    for a in op.args:
        value = attrs[a.name]
        kind = SLOTS.get((op.name, a.name))
        given = None
        if slot is not None and kind is not None and _scalar(value) is not None:
            given = slot(kind, _scalar(value) or 0)
        exprs.append(given)
        written.append(given is not None or _must_write(op, a.name, attrs))
    required = sum(1 for a in op.args if a.default is None and not a.derived)
    positional = op.positional if op.positional is not None else required
    last = max((i for i in range(min(positional, len(op.args))) if written[i]), default=-1)
    args = []
    for i, a in enumerate(op.args):
        if i <= last or written[i]:
            expr = exprs[i] or _literal(a.kind, attrs[a.name])
            args.append(ast.Arg(None if i <= last else a.name, expr, G))
    if not args:
        return ast.Name(op.name, G)
    return ast.Call(op.name, tuple(args), G, G)


def with_defaults(op: Op, attrs: Mapping[str, Attr]) -> dict[str, Attr]:
    """The attributes with the defaults of those a node leaves out (an import's `bn` has no
    `momentum`), as the elaborator fills them in."""
    full = {a.name: (a.default, a.default) if a.kind in ("pair", "pair0")
            and isinstance(a.default, int) and not isinstance(a.default, bool) else a.default
            for a in op.args if a.default is not None}
    return {**full, **attrs}


def _scalar(value: Attr) -> int | None:
    """An int, or a pair of equal ints, as one number; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1] \
            and isinstance(value[0], int):
        return value[0]
    return None


def _must_write(op: Op, name: str, attrs: dict[str, Attr]) -> bool:
    """An argument is written unless it has its default (or, derived, what `complete` gives)."""
    arg = next(a for a in op.args if a.name == name)
    value = attrs[name]
    if arg.derived:
        return bool(op.complete({**attrs, name: None})[name] != value)
    if arg.default is None:
        return True
    default = arg.default
    if arg.kind in ("pair", "pair0") and isinstance(default, int):
        default = (default, default)
    return bool(default != value)


def _literal(kind: str, value: Attr) -> ast.Expr:
    if kind == "bool":
        return ast.Bool(bool(value), G)
    if kind in ("pair", "pair0"):
        assert isinstance(value, tuple)
        if len(set(value)) == 1:
            return _number(int(value[0]))
        return ast.ShapeLit(tuple(int(v) for v in value), G)
    assert isinstance(value, int | float) and not isinstance(value, bool)
    return _number(value)


def _number(value: int | float | Fraction) -> ast.Number:
    try:
        exact = value if isinstance(value, Fraction) else numbers.python_number(value, None)
    except SpecError as err:
        raise NoSpecForm(f"the number {value!r}: {err.message}") from None
    return ast.Number(exact, G)


# --- the graph as data flow ----------------------------------------------------------------------


@dataclass
class Flow:
    """The graph's data flow, which the writer may rewrite: inputs by port, records, order."""

    ins: dict[str, list[str]]
    rec: dict[str, Node]
    order: list[str]  # topological, declaration order where the data flow allows
    output: str

    @classmethod
    def of(cls, g: Graph) -> Flow:
        order = execution_order(g)
        flow = cls({n: inputs(g, n) for n in order}, {n: record(g, n) for n in order}, order,
                   str(g.graph["output"]))
        used = flow.ancestors(flow.output)
        for n in order:
            if n not in used and n != flow.output:
                raise NoSpecForm(f"{_where(flow.rec[n], n)} computes something the network's "
                                 "output does not use")
        return flow

    def ancestors(self, n: str) -> set[str]:
        seen, todo = {n}, [n]
        while todo:
            for u in self.ins[todo.pop()]:
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return seen

    def channel_concat(self, n: str) -> bool:
        rec = self.rec[n]
        return rec.op == "concat" and rec.attrs.get("axis", 0) == 0

    def flatten_concats(self) -> None:
        """DenseNet's concats of all earlier outputs as concats of two: cat(x, a, b) after
        cat(x, a) is cat(cat(x, a), b); a concat of one tensor is that tensor."""
        original = {n: list(self.ins[n]) for n in self.order if self.channel_concat(n)}
        for n, ins in original.items():
            prefix = max((m for m, other in original.items()
                          if m != n and len(other) < len(ins) and ins[:len(other)] == other),
                         key=lambda m: len(original[m]), default=None)
            if prefix is not None:
                self.ins[n] = [prefix, *ins[len(original[prefix]):]]
        for n in original:
            if len(self.ins[n]) == 1:
                (src,) = self.ins[n]
                for m in self.order:
                    self.ins[m] = [src if u == n else u for u in self.ins[m]]
                self.output = src if self.output == n else self.output
                self.order.remove(n)
                del self.ins[n]

    def nest_concats(self) -> None:
        """A concat of a chain's outputs (VoVNet's OSA module, HGNet: cat(x, a, b) with b
        computed from a, a from x) as concats of two, nested from the right: cat(x, cat(a, b)),
        each a parallel concat of its input and what follows from it. The same channels in the
        same order; done wherever the first input dominates the others."""
        idom = dominators(self)

        def dominates(a: str, b: str) -> bool:
            while b != a and idom[b] != b:
                b = idom[b]
            return b == a

        def split(node: str, start: int, stop: int, name: str) -> str:
            """node's inputs [start:stop] as a concat of their own, inserted before it."""
            ins = self.ins[node]
            part = ins[start:stop]
            shapes = [self.rec[u].shape for u in part]
            self.rec[name] = replace(self.rec[node], shape=(sum(s[0] for s in shapes),
                                                            *shapes[0][1:]))
            self.ins[name], self.ins[node] = part, [*ins[:start], name, *ins[stop:]]
            self.order.insert(self.order.index(node), name)
            return name

        for n in [m for m in self.order if self.channel_concat(m)]:
            ins = self.ins[n]
            j = next((i for i in range(1, len(ins)) if not dominates(ins[0], ins[i])), len(ins))
            if j < 3:
                continue  # no chain of three from the first input
            node = n  # the new nodes' names are never printed: merges have no names
            if j < len(ins):  # SelecSLS: cat(a, b, c, skip) = cat(cat(a, b, c), skip)
                node = split(n, 0, j, f"{n}~p")
            k = 0
            while len(self.ins[node]) > 2:
                k += 1
                node = split(node, 1, len(self.ins[node]), f"{n}~{k}")

    def consumers(self) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {n: [] for n in self.order}
        for n in self.order:
            for port, u in enumerate(self.ins[n]):
                out[u].append((n, port))
        return out


def dominators(flow: Flow) -> dict[str, str]:
    """Each node's immediate dominator from the input (Cooper, Harvey and Kennedy, on a DAG in
    topological order)."""
    index = {n: i for i, n in enumerate(flow.order)}
    idom: dict[str, str] = {flow.order[0]: flow.order[0]}
    for n in flow.order[1:]:
        preds = flow.ins[n]
        d = preds[0]
        for p in preds[1:]:
            a, b = d, p
            while a != b:
                while index[a] > index[b]:
                    a = idom[a]
                while index[b] > index[a]:
                    b = idom[b]
            d = a
        idom[n] = d
    return idom


# --- the series-parallel tree --------------------------------------------------------------------


class Layer(Record):
    node: str


class Merge(Record):
    """`node` (an `op`) merges `branches`, each a chain from the merge's entry (empty: the entry
    itself), in port order."""

    node: str
    op: str
    branches: tuple[tuple[Part, ...], ...]


class Dag(Record):
    """A region of one entry and one exit (`node`) whose data flow no nesting of sequences,
    residual and parallel units states: written as a body of `from` statements. `nodes`: the
    region's nodes in execution order, its exit last."""

    node: str
    entry: str
    nodes: tuple[str, ...]


Part: TypeAlias = Layer | Merge | Dag


class _Tangled(Exception):
    """The series-parallel decomposition fails at `node`: it feeds paths that meet in a way no
    nesting states."""

    def __init__(self, node: str, message: str):
        super().__init__(message)
        self.node, self.message = node, message


def decompose(flow: Flow) -> tuple[Part, ...]:
    """The network as a chain of layers, merges and DAG regions. Where the nesting fails, the
    smallest region around the failing layer with one entry and one exit (its module's, or one
    between two layers every path passes) becomes a `Dag`, and the rest is taken apart again."""
    regions: list[frozenset[str]] = []
    consumers = flow.consumers()
    for _ in range(len(flow.order) + 1):
        view, dags = _collapsed(flow, regions, consumers)
        try:
            return _nested(view, dags)
        except _Tangled as err:
            region = _region(flow, err.node, regions, consumers)
            if region is None:
                raise NoSpecForm(err.message) from None
            regions = [r for r in regions if not r <= region] + [region]
    raise AssertionError("the regions grow each round")


def _nested(flow: Flow, dags: Mapping[str, Dag]) -> tuple[Part, ...]:
    """The series-parallel tree of a flow whose DAG regions are collapsed to their exits."""
    idom = dominators(flow)
    entry = flow.order[0]
    top = _chain(flow, idom, entry, flow.output, dags, set())
    implied: Counter[tuple[str, str, int]] = Counter()
    _edges(top, entry, implied)
    actual = Counter((u, n, port) for n in flow.order for port, u in enumerate(flow.ins[n]))
    if implied != actual:
        index = {n: i for i, n in enumerate(flow.order)}
        seen: Counter[str] = Counter(n for n in nodes_of(top) if n in index)  # regions' exits
        consumers = flow.consumers()
        twice = sorted((n for n, k in seen.items() if k > 1), key=index.__getitem__)
        forks = [n for n in twice if len(consumers[n]) > 1] or twice  # where the paths part
        raise _tangled(flow, forks[0] if forks else
                       min((actual - implied) or (implied - actual))[0])
    return top


def _tangled(flow: Flow, u: str) -> _Tangled:
    users = sorted(n for n in flow.order if u in flow.ins[n])
    return _Tangled(u, f"{_where(flow.rec[u], u)} feeds {', '.join(f'`{v}`' for v in users)} "
                    "by paths that meet in a way no sequence, residual unit or parallel unit "
                    "states")


Consumers: TypeAlias = dict[str, list[tuple[str, int]]]


def _collapsed(flow: Flow, regions: list[frozenset[str]],
               consumers: Consumers) -> tuple[Flow, dict[str, Dag]]:
    """The flow with each region as one node, its exit, reading the region's entry."""
    ins = dict(flow.ins)
    hidden: set[str] = set()
    dags: dict[str, Dag] = {}
    for region in regions:
        entry, exit = _ends(flow, region, consumers)
        assert entry is not None and exit is not None
        ins[exit] = [entry]
        hidden |= region - {exit}
        dags[exit] = Dag(exit, entry, tuple(n for n in flow.order if n in region))
    order = [n for n in flow.order if n not in hidden]
    return Flow({n: ins[n] for n in order}, flow.rec, order, flow.output), dags


def _ends(flow: Flow, region: frozenset[str],
          consumers: Consumers) -> tuple[str | None, str | None]:
    """A region's one entry (the node outside it that it reads) and one exit (its node read
    outside it), or None where there are several."""
    entries = {u for n in region for u in flow.ins[n] if u not in region}
    exits = {n for n in region
             if n == flow.output or any(v not in region for v, _ in consumers[n])}
    return (next(iter(entries)) if len(entries) == 1 else None,
            next(iter(exits)) if len(exits) == 1 else None)


def _region(flow: Flow, u: str, regions: list[frozenset[str]],
            consumers: Consumers) -> frozenset[str] | None:
    """The smallest region around `u` with one entry and one exit that holds every region it
    meets and is none of them: the layers of one of `u`'s modules (innermost first), else the
    layers between two of the layers every path from the input to the output passes."""
    for candidate in (*_module_regions(flow, u), *_cut_regions(flow, u)):
        if len(candidate) < 2 or any(candidate <= r for r in regions) or \
                any(r & candidate and not r <= candidate for r in regions):
            continue
        entry, exit = _ends(flow, candidate, consumers)
        if entry is not None and exit is not None:
            return candidate
    return None


def _module_regions(flow: Flow, u: str) -> Iterator[frozenset[str]]:
    parts = u.split(".")
    for k in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:k]) + "."
        yield frozenset(n for n in flow.order if n.startswith(prefix))


def _cut_regions(flow: Flow, u: str) -> Iterator[frozenset[str]]:
    """The layers after one cut (a dominator of the output) up to a later one, around `u`,
    smallest first."""
    idom = dominators(flow)
    cuts, c = [flow.output], flow.output
    while idom[c] != c:
        c = idom[c]
        cuts.append(c)
    cuts.reverse()
    before = flow.ancestors(u)
    index = {n: i for i, n in enumerate(flow.order)}
    starts = [c for c in cuts if c in before]  # cuts up to u (u itself, if it is one)
    ends = [c for c in cuts if index[c] > index[u]]
    spans = sorted(((len(starts) - 1 - i) + j, a, b) for i, a in enumerate(starts)
                   for j, b in enumerate(ends))
    ancestors: dict[str, set[str]] = {}
    for _, a, b in spans:
        for c in (a, b):
            if c not in ancestors:
                ancestors[c] = flow.ancestors(c)
        yield frozenset(ancestors[b] - ancestors[a])


def _chain(flow: Flow, idom: dict[str, str], entry: str, exit: str,
           dags: Mapping[str, Dag], seen: set[str]) -> tuple[Part, ...]:
    """The chain from `entry` to `exit`. A node met twice (`seen`: those met so far) is where
    paths meet that no nesting states: stop there (the tree would grow exponentially)."""
    parts: list[Part] = []
    n = exit
    while n != entry:
        if n in seen:
            raise _tangled(flow, idom[n] if len(flow.ins[n]) == 1 else n)
        seen.add(n)
        d = idom[n]
        preds = flow.ins[n]
        if n in dags:
            parts.append(dags[n])
        elif len(preds) == 1 and preds[0] == d:
            parts.append(Layer(n))
        else:
            branches = tuple(_chain(flow, idom, d, p, dags, seen) for p in preds)
            parts.append(Merge(n, flow.rec[n].op, branches))
        n = d
    return tuple(reversed(parts))


def _edges(parts: Sequence[Part], entry: str, out: Counter[tuple[str, str, int]]) -> str:
    """The edges a chain implies; returns its output node."""
    x = entry
    for part in parts:
        if isinstance(part, Layer | Dag):
            out[(x, part.node, 0)] += 1
            x = part.node
        else:
            for port, branch in enumerate(part.branches):
                out[(_edges(branch, x, out), part.node, port)] += 1
            x = part.node
    return x


def nodes_of(parts: Sequence[Part]) -> Iterator[str]:
    for part in parts:
        if isinstance(part, Dag):
            yield from part.nodes[:-1]
        if isinstance(part, Merge):
            for branch in part.branches:
                yield from nodes_of(branch)
        yield part.node


# --- the writer ----------------------------------------------------------------------------------


class Written(Record):
    """The spec: its text and its syntax tree."""

    text: str
    module: ast.Module


@dataclass
class Instance:
    """One block instance: a run of consecutive parts of one block."""

    block: str
    kind: str
    parts: tuple[Part, ...]
    c_in: int
    c_out: int
    key: object = None  # its form, numbers aside
    slots: list[tuple[str, str, int]] = field(default_factory=list)  # (region, kind, value)
    definition: Definition | None = None
    index: int = 0  # in its definition


@dataclass
class Definition:
    name: str
    instances: list[Instance]
    mode: str = "plain"  # plain | shortcut (some have a projection) | residual (some add x)
    params: list[str] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)  # parameter -> per instance
    exprs: dict[str, list[ast.Expr | None]] = field(default_factory=dict)  # region -> slots
    condition: ast.Expr | None = None

    def args(self, k: int) -> dict[str, int]:
        return {p: self.values[p][k] for p in self.params}


class _Split(Exception):
    """The instances cannot share this definition."""


def write_spec(g: Graph, se_text: str = "", se_graph: Graph | None = None) -> Written:
    """The `.se` spec of the base graph `g` (and an `se { ... }` text to add), or NoSpecForm
    naming what the language cannot state. `se_graph` is `g` with attention blocks (an imported
    model's own): the spec states them as `se` rules, in the written names, that give exactly
    those blocks (`--no-se` is then `g`)."""
    name = str(g.graph["name"])
    try:
        module = _Writer(Flow.of(g), g).module(se_text)
        text = unparse(module)
    except NoSpecForm as err:
        raise NoSpecForm(f"cannot write {name} as a spec: {err.message}") from None
    except Unprintable as err:
        raise NoSpecForm(f"cannot write {name} as a spec: {err}") from None
    written = verify(text, g)
    if se_graph is not None and se_units(se_graph):
        if se_text.strip():
            raise ValueError("write_spec takes an se text or an SE graph, not both")
        try:
            rules = infer(written, _wanted(g, se_graph, written))
        except NoRule as err:
            raise NoSpecForm(f"cannot write {name} as a spec: {err.message}") from None
        module = replace(module, se=(_section(rules),))
        text = unparse(module)
        verify(text, g, se_graph)
    return Written(text, module)


def _wanted(g: Graph, se_graph: Graph, written: Graph) -> list[Wanted]:
    """The attention blocks of `se_graph` (whose base is `g`) as blocks the written base graph
    should carry, in its names: each node of `g` is the node of `written` that computes the
    same (the same signature, `_signatures`)."""
    ours: dict[int, list[str]] = {}
    for n, sig in _signatures(written).items():
        ours.setdefault(sig, []).append(n)
    same = {n: ours[sig].pop(0) for n, sig in _signatures(g).items() if ours.get(sig)}
    out = []
    for (x, consumers), unit in units_at(se_graph).items():
        tag = next(r.se for _, r in records(se_graph) if r.se is not None and r.se.unit == unit)
        assert tag is not None
        steps = VARIANTS[tag.settings.variant].steps_for(tag.settings)
        if x not in same or any(c not in same for c, _ in consumers if (c, 0) != OUTPUT):
            raise NoSpecForm(f"the attention block `{unit}` recalibrates a tensor the written "
                             "spec does not have; this is a bug in sedsl's writer")
        there: set[tuple[str, int]] = set()
        for c, port in consumers:
            if (c, port) == OUTPUT:
                there.add(OUTPUT)
                continue
            ports = [p for p, u in enumerate(inputs(written, same[c])) if u == same[x]]
            there.add((same[c], port if port in ports else ports[0] if ports else port))
        rd = tag.rd_channels if any("rd" in (s.width, s.arg("c_in")) for s in steps) else None
        kernel = tag.settings.eca_kernel(tag.channels) \
            if any(s.kind == "channel_conv" and not s.arg("k") for s in steps) else None
        out.append(Wanted(same[x], frozenset(there), fixed(tag.settings), rd, kernel,
                          f"`{unit}`"))
    return out


class _Writer:
    def __init__(self, flow: Flow, g: Graph):
        self.flow = flow
        self.g = g
        self.rec = flow.rec
        flow.flatten_concats()
        flow.nest_concats()
        self.tree = decompose(flow)
        self.instances: dict[int, Instance] = {}  # id(first part) -> its instance
        self.definitions: list[Definition] = []
        self.names: set[str] = set(OPS) | set(KEYWORDS) | _BUILTINS

    # -- the module --

    def module(self, se_text: str) -> ast.Module:
        for inst in self._instances(self.tree):
            self.instances[id(inst.parts[0])] = inst
        self._define()
        net = ast.BlockDef(self._unique(_identifier(str(self.g.graph["name"]), "network")), (),
                           (ast.Input(tuple(self.g.graph["input"]), G), *self._stages()), G,
                           is_network=True)
        blocks = tuple(self._block(d) for d in self.definitions)
        se: tuple[ast.SeSection, ...] = ()
        if se_text.strip():
            se = (_section(se_text),)
        source = self.g.graph.get("file", "")
        note = ast.Comment(f"# {net.name}: written by `sedsl import` from {source}".rstrip(), G)
        return ast.Module("<written>", (), blocks, (net,), se, (note,))

    def _stages(self) -> list[ast.Stmt]:
        """One binding per stage (a top-level child of the model)."""
        taken: set[str] = set()
        out: list[ast.Stmt] = []
        for stage, elements in _runs_by(self._elements(self.tree, inline=False)):
            name = _unique_in(_layer_name(stage or "layer"), taken)
            if len(elements) == 1:
                value = elements[0].expr
                assert value is not None
            else:
                value = ast.Group(tuple(self._statements(elements)), G)
            out.append(ast.Bind(name, value, G, G))
        return out

    # -- block instances and their definitions --

    def _owner(self, part: Part) -> str | None:
        """The block a part belongs to (its merge layer aside: DenseNet's concat of a layer's
        output belongs to the next layer); `"*"` when it spans several."""
        if isinstance(part, Layer):
            return self.rec[part.node].block
        if isinstance(part, Dag):
            dag_blocks = {self.rec[n].block for n in part.nodes}
            return dag_blocks.pop() if len(dag_blocks) == 1 else "*"
        blocks = {self.rec[n].block for b in part.branches for n in nodes_of(b)}
        if not blocks:
            blocks = {self.rec[part.node].block}
        return blocks.pop() if len(blocks) == 1 else "*"

    def _segments(self, parts: Sequence[Part]) -> list[tuple[str | None, list[Part]]]:
        """Consecutive parts of one block instance together; the others one by one."""
        out: list[tuple[str | None, list[Part]]] = []
        for part in parts:
            owner = self._owner(part)
            block = owner if owner not in (None, "*") else None
            if block is not None and out and out[-1][0] == block:
                out[-1][1].append(part)
            else:
                out.append((block, [part]))
        return out

    def _instances(self, parts: Sequence[Part]) -> Iterator[Instance]:
        for block, seg in self._segments(parts):
            if block is not None:
                yield self._instance(block, seg)
                continue
            for part in seg:
                if isinstance(part, Merge):
                    for branch in part.branches:
                        yield from self._instances(branch)

    def _instance(self, block: str, parts: list[Part]) -> Instance:
        first, last = parts[0], parts[-1]
        entry = self._entry(first)
        rec = self.rec[last.node]
        kind = next((self.rec[n].kind for n in nodes_of(parts) if self.rec[n].block == block),
                    None) or "Block"
        inst = Instance(block, kind, tuple(parts), self.rec[entry].shape[0],
                        rec.shape[0])
        inst.key, inst.slots = self._form(inst.parts)
        return inst

    def _entry(self, part: Part) -> str:
        """The node a part reads."""
        n = part.node
        while True:
            if isinstance(part, Dag):
                return part.entry
            if isinstance(part, Layer):
                return self.flow.ins[n][0]
            branch = next((b for b in part.branches if b), None)
            if branch is None:
                return self.flow.ins[n][0]
            part, n = branch[0], branch[0].node

    def _form(self, parts: Sequence[Part]) -> tuple[object, list[tuple[str, str, int]]]:
        """An instance's body with its slot numbers as placeholders (its form), and the slots."""
        slots: list[tuple[str, str, int]] = []

        def record_slot(kind: str, value: int) -> ast.Expr:
            slots.append((self.region, kind, value))
            return ast.Name(f"<{kind}>", G)

        self.region = "main"
        return skeleton(self._body(parts, record_slot)), slots

    def _define(self) -> None:
        """Instances of a kind with one form share a definition; forms that differ only by a
        projection shortcut, or by the residual connection, share one under an `if`."""
        by_kind: dict[str, list[list[Instance]]] = {}
        for inst in self.instances.values():
            groups = by_kind.setdefault(inst.kind, [])
            same = next((grp for grp in groups if grp[0].key == inst.key), None)
            if same is None:
                groups.append([inst])
            else:
                same.append(inst)
        for kind, groups in by_kind.items():
            for instances, mode in self._merge(groups):
                d = Definition(self._unique(_identifier(kind, "Block")), instances, mode)
                try:
                    self._solve(d)
                except _Split:  # instances of one form always share a definition
                    raise AssertionError(f"{d.name}: no definition for one form") from None
                for k, inst in enumerate(d.instances):
                    inst.definition, inst.index = d, k
                self.definitions.append(d)

    def _merge(self, groups: list[list[Instance]]) -> Iterator[tuple[list[Instance], str]]:
        """The groups of one form (of one kind), each joined with another where they differ
        by a projection or a residual connection only and a rule says which have it."""
        pending = list(groups)
        while pending:
            grp, mode = pending.pop(0), "plain"
            for optional in ("shortcut", "residual"):
                partner = next((o for o in pending if self._pair(grp[0], o[0], optional)), None)
                if partner is None:
                    continue
                joined = sorted(grp + partner, key=self._position)
                try:
                    self._solve(Definition("", joined, optional))
                except _Split:
                    continue
                pending.remove(partner)
                grp, mode = joined, optional
                break
            yield grp, mode

    def _position(self, inst: Instance) -> int:
        return self.flow.order.index(inst.parts[0].node)

    def _pair(self, a: Instance, b: Instance, mode: str) -> bool:
        """Whether the forms of `a` and `b` differ only by the optional part of `mode`."""
        if mode == "shortcut":
            ra, rb = _without_shortcut(a.parts), _without_shortcut(b.parts)
        else:
            ra, rb = _without_residual(a.parts), _without_residual(b.parts)
        if ra is None or rb is None or (ra == a.parts) == (rb == b.parts):
            return False
        return self._form(ra)[0] == self._form(rb)[0]

    def _solve(self, d: Definition) -> None:
        """Name the slots: a number equal in every instance stays a number, a column equal to a
        parameter's (or a multiple of it) uses it, the others become parameters."""
        d.params, d.values, d.exprs = [], {}, {}
        every = list(range(len(d.instances)))
        main = [[s for s in i.slots if s[0] == "main"] for i in d.instances]
        if len({len(m) for m in main}) != 1:
            raise _Split
        d.exprs["main"] = [self._column(d, [m[j][2] for m in main], main[0][j][1], every)
                           for j in range(len(main[0]))]
        short = [k for k in every if any(s[0] == "short" for s in d.instances[k].slots)]
        if short:
            cols = [[s for s in d.instances[k].slots if s[0] == "short"] for k in short]
            if len({tuple(c) for c in ([(s[1],) for s in col] for col in cols)}) != 1:
                raise _Split
            d.exprs["short"] = [self._column(d, [c[j][2] for c in cols], cols[0][j][1], short)
                                for j in range(len(cols[0]))]
        d.condition = self._condition(d) if d.mode != "plain" else None
        d.params.sort(key=lambda p: p == "stride")  # required parameters first

    def _column(self, d: Definition, values: list[int], kind: str,
                which: list[int]) -> ast.Expr | None:
        for p, vs in d.values.items():
            if [vs[k] for k in which] == values:
                return ast.Name(p, G)
        if len(set(values)) == 1:
            return None
        if kind == "c":
            for p, vs in d.values.items():
                base = [vs[k] for k in which]
                if p != "stride" and all(b and v % b == 0 for v, b in zip(values, base,
                                                                         strict=True)):
                    ratios = {v // b for v, b in zip(values, base, strict=True)}
                    if len(ratios) == 1 and ratios != {1}:
                        return ast.BinOp("*", _number(ratios.pop()), ast.Name(p, G), G)
        if len(which) != len(d.instances):
            raise _Split  # a shortcut's numbers that no parameter gives
        p = "stride" if kind == "stride" and "stride" not in d.values else \
            f"c{sum(q.startswith('c') for q in d.params) + 1}"
        d.params.append(p)
        d.values[p] = values
        return ast.Name(p, G)

    def _condition(self, d: Definition) -> ast.Expr:
        """When some instances have the projection (or the residual connection): the rule, in
        the block's stride and input and output channels, that says which."""
        outs = [i.c_out for i in d.instances]
        every = list(range(len(d.instances)))
        out = self._column(d, outs, "c", every) if d.values else None
        if out is None:
            if len(set(outs)) != 1:
                raise _Split
            out = _number(outs[0])
        strides = d.values.get("stride", [1] * len(d.instances))
        changes = [s != 1 or i.c_in != o for s, i, o in zip(strides, d.instances, outs,
                                                            strict=True)]
        c_in = ast.Name("c_in", G)
        if d.mode == "shortcut":
            present = [_has_shortcut(i.parts) for i in d.instances]
            if present != changes:
                raise _Split
            test: ast.Expr = ast.BinOp("!=", c_in, out, G)
            if "stride" in d.values:
                test = ast.BinOp("or", ast.BinOp("!=", ast.Name("stride", G), _number(1), G),
                                 test, G)
            return test
        present = [_without_residual(i.parts) != i.parts for i in d.instances]
        if present != [not c for c in changes]:
            raise _Split
        test = ast.BinOp("==", c_in, out, G)
        if "stride" in d.values:
            test = ast.BinOp("and", ast.BinOp("==", ast.Name("stride", G), _number(1), G),
                             test, G)
        return test

    def _block(self, d: Definition) -> ast.BlockDef:
        params = tuple(ast.Param(p, _number(1) if p == "stride" else None, G) for p in d.params)
        template = next((i for i in d.instances if _has_shortcut(i.parts)), d.instances[0]) \
            if d.mode == "shortcut" else \
            next((i for i in d.instances if _without_residual(i.parts) != i.parts),
                 d.instances[0])
        counters = {"main": 0, "short": 0}

        def solved(kind: str, value: int) -> ast.Expr | None:
            expr = d.exprs[self.region][counters[self.region]]
            counters[self.region] += 1
            return expr

        self.region = "main"
        if d.mode == "residual":
            inner = _without_residual(template.parts)
            assert inner is not None and d.condition is not None
            plain = self._body(inner, solved)
            counters["main"] = 0
            wrapped = self._body(template.parts, solved)
            body: tuple[ast.Stmt, ...] = (ast.If(d.condition, wrapped, plain, G),)
        else:
            self.projection = d.condition
            body = self._body(template.parts, solved)
            self.projection = None
        return ast.BlockDef(d.name, params, body, G)

    # -- syntax ---

    region = "main"  # the part of a definition being written: "main", or "short" (projection)
    claimed = False  # the scope being written in is one whose `shortcut` a unit claims
    projection: ast.Expr | None = None  # the condition a definition's projection is under

    top_unit: str | None = None  # the merge of the residual unit an instance starts with

    def _body(self, parts: Sequence[Part], slot: Slot) -> tuple[ast.Stmt, ...]:
        """An instance's parts as statements (inside a definition: no block calls)."""
        self.top_unit = parts[0].node if parts and isinstance(parts[0], Merge) else None
        if len(parts) == 1 and isinstance(parts[0], Dag):  # the body is the region's
            return self._dag(parts[0], slot)
        elements = [self._part(p, slot) for p in parts]
        return tuple(self._statements(elements))

    def _part(self, part: Part, slot: Slot | None) -> El:
        rec = self.rec[part.node]
        if isinstance(part, Layer):
            if not OPS[rec.op].user:
                raise _refuse_op(part.node, rec)
            return El(op_call(OPS[rec.op], dict(rec.attrs), slot), rec.stage)
        if isinstance(part, Dag):
            return El(ast.Group(self._dag(part, slot), G), rec.stage, dag=True)
        return El(self._merge_expr(part, slot), rec.stage)

    def _dag(self, dag: Dag, slot: Slot | None) -> tuple[ast.Stmt, ...]:
        """A region as `from` statements: its layers in execution order, a chain of layers
        (each the only reader of the one before) one statement; a statement reads by `from`
        what is not the previous statement's output, and is named where a `from` reads it."""
        chains: list[list[str]] = []
        readers = Counter(u for n in dag.nodes for u in self.flow.ins[n])
        for n in dag.nodes:
            ins = self.flow.ins[n]
            if chains and len(ins) == 1 and ins[0] == chains[-1][-1] and readers[ins[0]] == 1:
                chains[-1].append(n)
            else:
                chains.append([n])
        names = {dag.entry: "input"}
        sources: list[list[str] | None] = []
        for k, chain in enumerate(chains):
            first = self.flow.ins[chain[0]]
            previous = chains[k - 1][-1] if k else dag.entry
            sources.append(None if first == [previous] else first)
        read = {u for srcs in sources if srcs for u in srcs}
        for k, chain in enumerate(chains):
            if chain[-1] in read and chain[-1] != dag.entry:
                names[chain[-1]] = f"t{k + 1}"
        out: list[ast.Stmt] = []
        for chain, srcs in zip(chains, sources, strict=True):
            items = [self._dag_layer(n, slot) for n in chain]
            value = items[0] if len(items) == 1 else ast.Seq(tuple(items), G)
            source = None if srcs is None else \
                ast.From(tuple(ast.Name(names[u], G) for u in srcs), G)
            if chain[-1] in names:
                out.append(ast.Bind(names[chain[-1]], value, G, G, source))
            else:
                out.append(ast.Place(value, G, source))
        return tuple(out)

    def _dag_layer(self, n: str, slot: Slot | None) -> ast.Expr:
        """One layer of a region: an op call, or the merge that starts a `from` statement."""
        rec = self.rec[n]
        if len(self.flow.ins[n]) == 1 and OPS[rec.op].user:
            return op_call(OPS[rec.op], dict(rec.attrs), slot)
        word = next((w for w, op in MERGES.items() if op.name == rec.op), None)
        if word is not None and (rec.op != "concat" or self.flow.channel_concat(n)):
            return ast.Name(word, G)
        raise _refuse_op(n, rec)

    def _merge_expr(self, part: Merge, slot: Slot | None) -> ast.Expr:
        rec = self.rec[part.node]
        branches = part.branches
        sides = _sides(part)
        if sides is not None:  # x + f(x), or g(x) + f(x): a residual unit (add commutes)
            # its body shares the scope that the unit's shortcut claims `shortcut` in
            saved_claim, self.claimed = self.claimed, self.claimed or bool(sides[1])
            body = self._branch_body(sides[0], slot)
            self.claimed = saved_claim
            shortcut = None
            if sides[1]:
                # the block's own unit (its first part) has the optional projection; units
                # nested in it or after it have theirs always
                top = part.node == self.top_unit
                saved, self.region = self.region, "short" if top else self.region
                shortcut = self._branch_body(sides[1], slot)
                self.region = saved
                if self.projection is not None and top:
                    shortcut = (ast.If(self.projection, shortcut, (), G),)
            return ast.Residual((), body, shortcut, G, None)
        word = next((w for w, op in MERGES.items() if op.name == rec.op), None)
        if word is not None and (rec.op != "concat" or self.flow.channel_concat(part.node)):
            if sum(1 for b in branches if not b) > 1:
                raise NoSpecForm(f"`{part.node}` merges its input with itself")
            saved_claim, self.claimed = self.claimed, False  # each branch has a scope
            stmts = tuple(ast.Place(self._branch_expr(b, slot), G) for b in branches)
            self.claimed = saved_claim
            return ast.Parallel(word, stmts, G, G)
        raise _refuse_op(part.node, rec)

    def _branch_body(self, parts: Sequence[Part], slot: Slot | None) -> tuple[ast.Stmt, ...]:
        return tuple(self._statements(self._elements(parts, inline=slot is not None, slot=slot)))

    def _branch_expr(self, parts: Sequence[Part], slot: Slot | None) -> ast.Expr:
        if not parts:
            return ast.Name("identity", G)
        elements = self._elements(parts, inline=slot is not None, slot=slot)
        if any(e.run is not None or e.dag for e in elements):  # a block run needs a name
            return ast.Group(tuple(self._statements(elements)), G)  # to be a run of instances
            # (SE rules), a region's statements a scope
        items = [e.expr for e in elements if e.expr is not None]
        return items[0] if len(items) == 1 else ast.Seq(tuple(items), G)

    def _elements(self, parts: Sequence[Part], inline: bool,
                  slot: Slot | None = None) -> list[El]:
        """A chain as layer expressions: inside a definition its parts; elsewhere block calls
        (runs of equal calls as `* n`), loose layers and units."""
        if inline:
            return [self._part(p, slot) for p in parts]
        out: list[El] = []
        for block, seg in self._segments(parts):
            if block is None:
                out += [self._part(p, None) for p in seg]
                continue
            inst = self.instances[id(seg[0])]
            d = inst.definition
            assert d is not None
            previous = out[-1] if out else None
            stage = self.rec[seg[-1].node].stage
            if previous is not None and previous.run is not None and previous.run[0] is d \
                    and previous.stage == stage and _repeats(d, previous.run[1],
                                                             d.args(inst.index)):
                previous.run = (d, previous.run[1], previous.run[2] + 1, previous.run[3])
                continue
            out.append(El(None, stage, (d, d.args(inst.index), 1, inst.block)))
        for e in out:
            if e.run is not None:
                e.expr = _call(*e.run[:3])
        return out

    def _statements(self, elements: list[El]) -> Iterator[ast.Stmt]:
        """Elements as statements: one from each call or unit, the bare names after a call
        joining it (`conv(64, 3) bn relu`). A block run is a binding of its own, and so are
        residual units with a shortcut where there are several: each needs a scope of its own,
        or they would all claim the name `shortcut`."""
        current: list[ast.Expr] = []
        projected = [e for e in elements
                     if isinstance(e.expr, ast.Residual) and e.expr.shortcut is not None]
        labelled = len(projected) > 1 or self.claimed
        taken: set[str] = {n for e in elements if e.run is None and not e.dag
                           and not (labelled and e in projected) for n in _names_in(e.expr)}
        units = iter(range(1, len(elements) + 1))
        for e in elements:
            assert e.expr is not None
            label = self._run_name(e, taken) if e.run is not None else None
            if e.dag:  # its statements' names need a scope of their own
                label = next(f"dag{k}" for k in itertools.count(1) if f"dag{k}" not in taken)
                taken.add(label)
            if (len(projected) > 1 or self.claimed) and e in projected:
                label = next(f"unit{k}" for k in units if f"unit{k}" not in taken)
                taken.add(label)
            if current and (label is not None or not isinstance(e.expr, ast.Name)
                            or isinstance(current[-1], ast.Residual | ast.Parallel | ast.Group)):
                yield _place(current)
                current = []
            if label is not None:
                yield ast.Bind(label, e.expr, G, G)
                continue
            current.append(e.expr)
        if current:
            yield _place(current)

    def _run_name(self, e: El, taken: set[str]) -> str:
        """A name for a block run beside other layers (a run needs a scope of its own: two
        unnamed residual units in one scope would both claim `shortcut`): the module that
        holds its instances (`denseblock1`; `b4` for `features.4`), or its block's name."""
        assert e.run is not None
        path = e.run[3].split(".")[1:]  # below the stage
        name = path[0] if path else ""
        if (not _free_layer_name(_b(name)) or _b(name) in taken) and len(path) > 1:
            name = "_".join(path)  # the first instance: `b0_1` for `stages.0.1`
        name = _b(name)
        if not _free_layer_name(name) or name in taken:
            name = _identifier(e.run[0].name.lower(), "unit")
            name = name if _free_layer_name(name) else f"{name}_"
            candidate, k = name, 2
            while candidate in taken:
                candidate, k = f"{name}_{k}", k + 1
            name = candidate
        taken.add(name)
        return name

    def _unique(self, name: str) -> str:
        name = _unique_in(name, self.names)
        return name


@dataclass
class El:
    """A layer expression of a chain and its stage; `run`: (definition, arguments, count,
    first instance's block) for block calls."""

    expr: ast.Expr | None
    stage: str | None
    run: tuple[Definition, dict[str, int], int, str] | None = None
    dag: bool = False  # a region of `from` statements


def _names_in(e: ast.Expr | None) -> Iterator[str]:
    """The names an unnamed layer expression binds in the scope it is placed in (a residual
    unit's body and a group share it; a binding, a branch and a shortcut have scopes of their
    own)."""
    if isinstance(e, ast.Seq):
        for item in e.items:
            yield from _names_in(item)
    elif isinstance(e, ast.Residual | ast.Group):
        for stmt in e.body:
            if isinstance(stmt, ast.Bind):
                yield stmt.name
            elif isinstance(stmt, ast.Place):
                yield from _names_in(stmt.value)


def _runs_by(elements: list[El]) -> Iterator[tuple[str | None, list[El]]]:
    group: list[El] = []
    for e in elements:
        if group and group[-1].stage != e.stage:
            yield group[-1].stage, group
            group = []
        group.append(e)
    if group:
        yield group[-1].stage, group


def _place(items: list[ast.Expr]) -> ast.Place:
    return ast.Place(items[0] if len(items) == 1 else ast.Seq(tuple(items), G), G)


def _repeats(d: Definition, first: dict[str, int], args: dict[str, int]) -> bool:
    """A call equal to the first of a run but at stride 1 (`* n` resets a block's `stride`)."""
    return args == {**first, **({"stride": 1} if "stride" in first else {})}


def _call(d: Definition, args: dict[str, int], count: int) -> ast.Expr:
    given = [ast.Arg("stride" if p == "stride" else None, _number(v), G)
             for p, v in args.items() if not (p == "stride" and v == 1)]
    call: ast.Expr = ast.Call(d.name, tuple(given), G, G) if given else ast.Name(d.name, G)
    return ast.BinOp("*", call, _number(count), G) if count > 1 else call


# --- optional parts ------------------------------------------------------------------------------


def _sides(part: Part) -> tuple[tuple[Part, ...], tuple[Part, ...]] | None:
    """An add of two branches as a residual unit: (its body, its shortcut: empty for x)."""
    if not isinstance(part, Merge) or part.op != "add" or len(part.branches) != 2:
        return None
    first, second = part.branches
    if not first and not second:
        return None
    return (second, first) if not first else (first, second)


def _has_shortcut(parts: Sequence[Part]) -> bool:
    sides = _sides(parts[0]) if parts else None
    return sides is not None and bool(sides[1])


def _without_shortcut(parts: tuple[Part, ...]) -> tuple[Part, ...] | None:
    """The parts with the first residual unit's projection removed (None: none to remove)."""
    sides = _sides(parts[0]) if parts else None
    if sides is None:
        return None
    if not sides[1]:
        return parts
    return (Merge(parts[0].node, "add", (sides[0], ())), *parts[1:])


def _without_residual(parts: tuple[Part, ...]) -> tuple[Part, ...] | None:
    """An instance that is one residual unit with the identity shortcut: its residual branch."""
    sides = _sides(parts[0]) if len(parts) == 1 else None
    if sides is not None:
        return sides[0] if not sides[1] else None
    return parts


# --- names ---------------------------------------------------------------------------------------

_BUILTINS = {"floor", "ceil", "round", "min", "max", "abs", "make_divisible", "identity"}


def _identifier(text: str, fallback: str) -> str:
    """`text` as a NAME of the language: other characters become `_`, no leading `_`."""
    clean = re.sub(r"\W", "_", text).strip("_") or fallback
    if clean[0].isdigit():
        clean = f"{fallback}_{clean}"
    return clean if clean not in KEYWORDS else f"{clean}_"


def _b(name: str) -> str:
    """A module index as a name: `4` -> `b4`."""
    return f"b{name}" if name[:1].isdigit() else name


def _layer_name(text: str) -> str:
    name = _identifier(text, "layer")
    return name if _allowed(name) else f"{name}_"


def _allowed(name: str) -> bool:
    """A name the elaborator lets a layer have."""
    from sedsl.compile.elaborate import MODULE_ATTRIBUTES

    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)) and name not in KEYWORDS and \
        not keyword.iskeyword(name) and name not in MODULE_ATTRIBUTES


def _free_layer_name(name: str) -> bool:
    """An allowed name that no automatic name beside it can take (`conv1`, `relu2`)."""
    base = re.fullmatch(r"([A-Za-z_]*?)\d+", name)
    return _allowed(name) and (base is None or base.group(1) not in OPS)


def _unique_in(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate = f"{name}{k}" if not name[-1].isdigit() else f"{name}_{k}"
        k += 1
    taken.add(candidate)
    return candidate


def _section(se_text: str) -> ast.SeSection:
    """An `se { ... }` text as a section of the written module (its layout is the printer's)."""
    from sedsl.compile.se_rules import se_section
    from sedsl.language.parse import parse

    section: ast.SeSection = _placeless(parse(se_section(se_text), "<se>").se[0])
    return section


def _placeless(node: Any) -> Any:
    """A copy of a syntax tree with every span made GENERATED (printed in the default layout)."""
    if isinstance(node, Record):
        values = {f: (G if f.endswith("span") and getattr(node, f) is not None else
                      _placeless(getattr(node, f))) for f in node._fields}
        return type(node)(**values)
    if isinstance(node, tuple):
        return tuple(_placeless(x) for x in node)
    return node


# --- the check: the written spec computes what the graph computes --------------------------------


def verify(text: str, g: Graph, se_graph: Graph | None = None) -> Graph:
    """Compile `text` and compare its graph with `g`, layer by layer and as a whole computation
    (concats of concats flattened), and its SE network with `se_graph` where given; NoSpecForm
    if they differ (a bug in this writer). Returns the written text's base graph."""
    from sedsl.compile.elaborate import elaborate
    from sedsl.language.library import load_library
    from sedsl.language.parse import parse

    name = str(g.graph["name"])
    try:
        module = parse(text, "<written>")
        done = elaborate(module, load_library(module, [], {}), {})
        se = passes.run(done.graph, passes.pipeline(done.se)) if se_graph is not None else None
    except SpecError as err:
        raise NoSpecForm(f"cannot write {name} as a spec: the written text does not compile "
                         f"({err.message}); this is a bug in sedsl's writer") from None
    ours, theirs = _computation(done.graph), _computation(g)
    if ours != theirs or tuple(done.graph.graph["input"]) != tuple(g.graph["input"]) or \
            (se is not None and se_graph is not None
             and _computation(se) != _computation(se_graph)):
        raise NoSpecForm(f"cannot write {name} as a spec: the written text computes something "
                         "else; this is a bug in sedsl's writer")
    return done.graph


def _signatures(g: Graph, layers: Counter[object] | None = None) -> dict[str, int]:
    """Each node's signature: a hash of its op, attributes, shape and its inputs' signatures
    (adds commute; concats of concats are flattened), equal for nodes that compute the same
    from the input. `layers` counts the layers (op, attributes, shape) on the way."""
    order = execution_order(g)
    flow = Flow({n: inputs(g, n) for n in order}, {n: record(g, n) for n in order}, order,
                str(g.graph["output"]))
    sig: dict[str, int] = {}
    parts: dict[str, tuple[int, ...]] = {}  # a concat: the signatures it joins, flattened
    for n in flow.order:
        rec = flow.rec[n]
        full = with_defaults(OPS[rec.op], rec.attrs)
        attrs = tuple(sorted((k, repr(v)) for k, v in full.items() if k != "branches"))
        ins = [sig[u] for u in flow.ins[n]]
        if flow.channel_concat(n):
            joined = tuple(x for u in flow.ins[n] for x in parts.get(u, (sig[u],)))
            parts[n] = joined
            sig[n] = joined[0] if len(joined) == 1 else hash(("concat", joined))
            continue
        if rec.op == "add":
            ins.sort()
        sig[n] = hash((rec.op, attrs, tuple(ins), rec.shape))
        if layers is not None:
            layers[(rec.op, attrs, rec.shape)] += 1
    return sig


def _computation(g: Graph) -> tuple[Counter[object], int]:
    """The layers (op, attributes, shapes) of `g` and a hash of its whole data flow."""
    layers: Counter[object] = Counter()
    sig = _signatures(g, layers)
    return layers, sig[str(g.graph["output"])]
