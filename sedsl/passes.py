"""Passes: plain functions graph -> graph. None mutates its input.

    PIPELINE: apply_se, verify          (what `sedsl.load` runs)
    LOWERING: fuse_se, verify           (what the fused torch lowering runs on top)
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import networkx as nx

from sedsl.errors import Span, SpecError, did_you_mean
from sedsl.ir import ROLES, Node, input_shapes, inputs, record, records
from sedsl.ops import ACTIVATIONS, OPS, Attr
from sedsl.se import SeConfig, SeRule, SeSettings

Pass = Callable[[nx.DiGraph], nx.DiGraph]
OUTPUT = ("<output>", 0)  # a pseudo-consumer: the graph's output


# --- where blocks are ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A tensor inside a block where an SE block can go: its producer, the consumers to rewire."""

    producer: str
    consumers: tuple[tuple[str, int], ...]  # (node, port); OUTPUT for the network's output
    branch: str | None


def instances(g: nx.DiGraph) -> dict[str, str | None]:
    """Block instance path -> its block kind, in network order."""
    found: dict[str, str | None] = {}
    for _, rec in records(g):
        if rec.block is not None and rec.block not in found:
            found[rec.block] = rec.kind
    return found


def scopes(g: nx.DiGraph) -> dict[str, list[str]]:
    """Scope path -> its child scopes in network order ("" is the root)."""
    children: dict[str, list[str]] = {}
    for name in g.nodes:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent, child = ".".join(parts[: i - 1]), ".".join(parts[:i])
            siblings = children.setdefault(parent, [])
            if child not in siblings:
                siblings.append(child)
    return children


def _subtree(g: nx.DiGraph, block: str) -> set[str]:
    prefix = block + "."
    return {n for n, r in records(g) if r.block == block or (r.block or "").startswith(prefix)}


def _consumers(g: nx.DiGraph, node: str) -> tuple[tuple[str, int], ...]:
    out = tuple((v, p) for _, v, p in g.out_edges(node, data="port"))
    return out + ((OUTPUT,) if g.graph.get("output") == node else ())


def find_point(g: nx.DiGraph, block: str, rule: SeRule) -> Point | None:
    """Where `rule` puts an SE block in `block`, or None if the block has no such point."""
    inside = _subtree(g, block)
    if rule.where == "after":
        node = f"{block}.{rule.target}"
        return Point(node, _consumers(g, node), record(g, node).branch) if node in inside else None
    branch, end = rule.target.rsplit(".", 1)
    if branch == "block":
        return _exit(g, inside) if end == "end" else _entry(g, inside, None)
    merges = [n for n in inside if record(g, n).block == block
              and branch in record(g, n).attrs.get("branches", ())]  # type: ignore[operator]
    if len(merges) > 1:
        raise SpecError(f"`{rule.target}` is ambiguous in {block}: it has {len(merges)} "
                        f"`{branch}` branches", rule.span, "name the units apart")
    if not merges:
        return None
    merge = merges[0]
    port = record(g, merge).attrs["branches"].index(branch)  # type: ignore[union-attr]
    members = {n for n in inside if record(g, n).branch == branch and record(g, n).block == block}
    if end == "start" and members:
        return _entry(g, members, branch)
    return Point(inputs(g, merge)[port], ((merge, port),), branch)  # the end, or an empty branch


def _entry(g: nx.DiGraph, members: set[str], branch: str | None) -> Point | None:
    """The tensor flowing into a set of nodes, and the edges that carry it in."""
    edges = [(u, v, p) for u, v, p in g.in_edges(members, data="port") if u not in members]
    producers = {u for u, _, _ in edges}
    if len(producers) != 1:
        return None
    return Point(producers.pop(), tuple((v, p) for _, v, p in edges), branch)


def _exit(g: nx.DiGraph, members: set[str]) -> Point | None:
    """The tensor leaving a set of nodes, and all its consumers."""
    last = [n for n in members if any(c[0] not in members for c in _consumers(g, n))]
    return Point(last[0], _consumers(g, last[0]), None) if len(last) == 1 else None


def _select(g: nx.DiGraph, rule: SeRule, tree: dict[str, list[str]],
            found: dict[str, str | None]) -> list[str]:
    """The block instances a rule's `in` and `of` clauses pick, in network order."""
    chosen: list[str] = []
    for first, last, span in rule.ranges:
        parent = first.rsplit(".", 1)[0] if "." in first else ""
        if last is not None and parent and not last.startswith(parent + "."):
            last = f"{parent}.{last}"  # conv4.block1..block3
        siblings = tree.get(parent, [])
        for end in (first, last):
            if end is not None and end not in siblings:
                raise SpecError(f"no block or stage is called `{end}`", span,
                                did_you_mean(end.rsplit(".", 1)[-1],
                                             [s.rsplit(".", 1)[-1] for s in siblings]))
        i = siblings.index(first)
        j = siblings.index(last) if last is not None else i
        if j < i:
            raise SpecError(f"`{first}..{last}` runs backwards", span)
        chosen += siblings[i : j + 1]
    picked = [b for b in found
              if not chosen or any(b == s or b.startswith(s + ".") for s in chosen)]
    for kind in rule.kinds:
        if kind not in found.values():
            raise SpecError(f"no block of kind `{kind}` in this network", rule.span,
                            did_you_mean(kind, [k for k in found.values() if k]))
    return [b for b in picked if not rule.kinds or found[b] in rule.kinds]


# --- apply_se -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Insertion:
    block: str
    kind: str | None
    point: Point
    settings: SeSettings
    span: Span


def plan_se(g: nx.DiGraph) -> list[Insertion]:
    """Resolve the SE rules against the graph: one insertion per (block, point), last rule wins."""
    config = SeConfig.from_json(g.graph["se"])
    tree, found = scopes(g), instances(g)
    plan: dict[tuple[str, str, str], Insertion] = {}
    for rule in config.rules:
        matched = 0
        for block in _select(g, rule, tree, found):
            point = find_point(g, block, rule)
            if point is not None:
                plan[(block, rule.where, rule.target)] = Insertion(
                    block, found[block], point, rule.settings, rule.span)
                matched += 1
        if not matched:
            where = " in " + ", ".join(a + (f"..{b}" if b else "") for a, b, _ in rule.ranges) \
                if rule.ranges else ""
            what = f"a layer `{rule.target}`" if rule.where == "after" else f"a `{rule.target}`"
            raise SpecError(f"this SE rule matches nothing: no block{where} has {what}",
                            rule.span, _rule_hint(g, rule))
    return [ins for ins in plan.values() if ins.settings.enabled]


def _rule_hint(g: nx.DiGraph, rule: SeRule) -> str:
    found = instances(g)
    kinds = sorted({k for k in found.values() if k})
    if rule.where == "after":
        return "name a layer of the block, e.g. `after relu2`"
    return ("residual units have residual.start/.end and shortcut.end; every block has "
            f"block.start/.end; block kinds here: {', '.join(kinds) or 'none'}")


def apply_se(g: nx.DiGraph) -> nx.DiGraph:
    """Insert the SE blocks that the rules in g.graph["se"] ask for."""
    return insert_se(g, plan_se(g))


def insert_se(g: nx.DiGraph, plan: Iterable[Insertion]) -> nx.DiGraph:
    source = {(v, p): u for u, v, p in g.edges(data="port")}
    source[OUTPUT] = g.graph["output"]
    follows: dict[str, list[tuple[str, Node, list[str]]]] = {}  # node -> SE nodes after it
    taken = set(g.nodes)
    for ins in plan:
        u = source[ins.point.consumers[0]] if ins.point.consumers else ins.point.producer
        nodes = _se_nodes(g, ins, u, taken)
        follows.setdefault(u, []).extend(nodes)
        for consumer in ins.point.consumers:
            source[consumer] = nodes[-1][0]
    out = nx.DiGraph(**{**g.graph, "output": source[OUTPUT]})

    def emit(name: str) -> None:
        for se_name, rec, _ in follows.get(name, []):
            out.add_node(se_name, record=rec)
            emit(se_name)

    for name, rec in records(g):
        out.add_node(name, record=rec)
        emit(name)
    for (v, p), u in source.items():
        if (v, p) != OUTPUT:
            out.add_edge(u, v, port=p)
    for chain in follows.values():
        for name, _, srcs in chain:
            for p, u in enumerate(srcs):
                out.add_edge(u, name, port=p)
    return out


def _se_nodes(g: nx.DiGraph, ins: Insertion, u: str,
              taken: set[str]) -> list[tuple[str, Node, list[str]]]:
    """squeeze -> fc1 -> excite -> fc2 -> gate -> scale (x * s), named <block>.se[k].*"""
    s, rec_u = ins.settings, record(g, u)
    if len(rec_u.shape) != 3:
        raise SpecError(f"an SE block needs a CxHxW feature map; {ins.block} has a flat one here",
                        ins.span)
    c, (_, h, w) = rec_u.shape[0], rec_u.shape
    base = c if s.base == "channels" else block_input_channels(g, ins.block)
    rd = s.reduced(base)
    if rd < 1:
        raise SpecError(f"ratio {s.ratio} leaves no channels in the SE block of {ins.block} "
                        f"({base} / {s.ratio} rounds to {rd})", ins.span,
                        "use a smaller ratio here, or an explicit width")
    scope = f"{ins.block}.se"
    k = 1
    while any(n == scope or n.startswith(scope + ".") for n in taken):
        k += 1
        scope = f"{ins.block}.se{k}"
    taken.add(scope)
    conv: dict[str, Attr] = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0),
                             "dilation": (1, 1), "groups": 1, "bias": s.bias}
    steps: list[tuple[str, str, dict[str, Attr], tuple[int, ...], list[str]]] = [
        ("squeeze", "squeeze", {"mode": s.squeeze}, (c, 1, 1), [u]),
        ("fc1", "conv", {"c_out": rd, **conv}, (rd, 1, 1), ["squeeze"]),
        ("act", s.excite, {}, (rd, 1, 1), ["fc1"]),
        ("fc2", "conv", {"c_out": c, **conv}, (c, 1, 1), ["act"]),
        ("gate", s.gate, {}, (c, 1, 1), ["fc2"]),
        ("scale", "mul", {}, (c, h, w), [u, "gate"]),
    ]
    stage = ins.block.split(".")[0]
    nodes = []
    for local, op, attrs, shape, srcs in steps:
        rec = Node(op, attrs, shape, stage, ins.block, ins.kind, ins.point.branch, "se", ins.span)
        full = [x if x == u else f"{scope}.{x}" for x in srcs]
        nodes.append((f"{scope}.{local}", rec, full))
    return nodes


def block_input_channels(g: nx.DiGraph, block: str) -> int:
    """Channels of the tensor entering a block instance."""
    entry = _entry(g, _subtree(g, block), None)
    assert entry is not None, "a block instance has one input"
    return record(g, entry.producer).shape[0]


# --- fuse_se ------------------------------------------------------------------------------------


def fuse_se(g: nx.DiGraph) -> nx.DiGraph:
    """SE block [+ residual add [+ activation]] -> one `se` node (the fused kernel)."""
    fusions = [f for f in (_match_se(g, n) for n, r in records(g) if r.op == "mul" and
                           r.role == "se") if f is not None]
    if not fusions:
        return g
    drop = {n for f in fusions for n in f[1]}
    first = {f[1][0]: f for f in fusions}
    out = nx.DiGraph(**g.graph)
    rename = {n: f[0] for f in fusions for n in f[1]}
    for name, rec in records(g):
        if name in first:
            scope, _, fused, _ = first[name]
            out.add_node(scope, record=fused)
        elif name not in drop:
            out.add_node(name, record=rec)
    for scope, _, _, srcs in fusions:
        for p, u in enumerate(srcs):
            out.add_edge(rename.get(u, u), scope, port=p)
    for u, v, p in g.edges(data="port"):
        if v not in drop:
            out.add_edge(rename.get(u, u), v, port=p)
    out.graph["output"] = rename.get(g.graph["output"], g.graph["output"])
    return out


def _match_se(g: nx.DiGraph, mul: str) -> tuple[str, list[str], Node, list[str]] | None:
    scope = mul.rsplit(".", 1)[0]
    names = [f"{scope}.{x}" for x in ("squeeze", "fc1", "act", "fc2", "gate")]
    if not all(n in g for n in names) or inputs(g, mul)[1] != names[-1]:
        return None
    u = inputs(g, mul)[0]
    squeeze, fc1, act, _, gate = (record(g, n) for n in names)
    members, srcs, last = [*names, mul], [u], mul
    merge_act = "none"
    add = _sole_consumer(g, mul)
    if add is not None and record(g, add).op == "add" and g.in_degree(add) == 2:
        members.append(add)
        srcs.append(next(x for x in inputs(g, add) if x != mul))
        last = add
        post = _sole_consumer(g, add)
        if post is not None and record(g, post).op in ACTIVATIONS:
            members.append(post)
            merge_act = record(g, post).op
            last = post
    attrs: dict[str, Attr] = {"rd_channels": fc1.shape[0], "squeeze": squeeze.attrs["mode"],
             "excite": act.op, "gate": gate.op, "bias": bool(fc1.attrs["bias"]),
             "act": merge_act}
    fused = replace(record(g, last), op="se", attrs=attrs, role="se", span=squeeze.span,
                    branch=squeeze.branch)
    return scope, members, fused, srcs


def _sole_consumer(g: nx.DiGraph, node: str) -> str | None:
    succ = list(g.successors(node))
    if len(succ) != 1 or g.graph.get("output") == node:
        return None
    return str(succ[0])


# --- verify -------------------------------------------------------------------------------------


def verify(g: nx.DiGraph) -> nx.DiGraph:
    """Check the IR's invariants; raise a SpecError naming the node and the fix."""
    if "input" not in g or g.graph.get("output") not in g:
        raise SpecError("the graph needs an `input` node and an existing `output` node")
    if not nx.is_directed_acyclic_graph(g):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(g))
        raise SpecError(f"the graph has a cycle: {cycle}")
    for name, rec in records(g):
        _verify_node(g, name, rec)
    return g


def _verify_node(g: nx.DiGraph, name: str, rec: Node) -> None:
    def broken(message: str) -> SpecError:
        return SpecError(f"IR node `{name}`: {message}", rec.span)

    if not isinstance(rec, Node):
        raise broken("carries no Node record under 'record'")
    if not all(p.isdigit() or (p.isidentifier() and not keyword.iskeyword(p))
               for p in name.split(".")):
        raise broken("its name must be dotted Python identifiers (or indices: `layer1.0.conv1`)")
    if rec.op not in OPS:
        raise broken(f"unknown op `{rec.op}`; ops are {', '.join(sorted(OPS))}")
    if rec.role not in ROLES:
        raise broken(f"role must be one of {ROLES}, not {rec.role!r}")
    ports = sorted(p for _, _, p in g.in_edges(name, data="port"))
    if ports != list(range(len(ports))):
        raise broken(f"input ports must be 0..{len(ports) - 1}, got {ports}")
    arity = OPS[rec.op].arity
    if (arity is not None and len(ports) != arity) or (arity is None and len(ports) < 1):
        raise broken(f"`{rec.op}` takes {arity or 'several'} inputs, it has {len(ports)}")
    try:
        shape = OPS[rec.op].infer(rec.attrs, input_shapes(g, name))
    except SpecError as err:
        raise broken(err.message) from None
    if shape != rec.shape:
        raise broken(f"recorded shape {rec.shape} but its inputs give {shape}")


PIPELINE: tuple[Pass, ...] = (apply_se, verify)
LOWERING: tuple[Pass, ...] = (fuse_se, verify)


def run(g: nx.DiGraph, passes: Iterable[Pass]) -> nx.DiGraph:
    for p in passes:
        g = p(g)
    return g


__all__ = ["LOWERING", "PIPELINE", "apply_se", "fuse_se", "plan_se", "run", "verify"]
