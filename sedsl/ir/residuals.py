"""Residual units in a graph: which adds are a block's residual add, which of their inputs is
the residual branch and which the shortcut. One meaning for the importer (every add of a torch
model) and the elaborator (the adds a spec writes with `from a, b add`), so that `at
residual.end` finds the same adds in an import and in the spec written back from it."""

from __future__ import annotations

from collections.abc import Collection

from sedsl.ir.graph import Graph
from sedsl.ir.node import inputs, record, records
from sedsl.record import replace


def mark_residuals(g: Graph, adds: Collection[str] | None = None) -> None:
    """Label each block's residual add: ports (residual, shortcut), and its branches' nodes.

    A residual add takes the block's input (or a projection of it: the shorter path) and a
    branch from it; the two paths share no node. A block with a second input may add it as the
    shortcut (timm's DLA: a tree projects its input for its first unit): the other path, from
    the block's input, is the residual branch and the shortcut has no layer in the block.

    The importer marks every add so; the elaborator the adds that `from a, b add` wrote (`adds`),
    so that a spec written back from an import marks the adds the import did."""
    members: dict[str, set[str]] = {}
    for name, rec in records(g):
        if rec.block is not None:
            members.setdefault(rec.block, set()).add(name)
    for name, rec in list(records(g)):
        if rec.op != "add" or rec.block is None or g.in_degree(name) != 2 or \
                (adds is not None and name not in adds):
            continue
        inside = members[rec.block]
        entry = {u for u, v in g.in_edges(inside) if u not in inside}
        srcs = inputs(g, name)
        sides = _sides(g, srcs, inside, entry)
        if sides is None:
            continue
        (long, residual), (short, shortcut) = sides
        for n in residual:
            g.nodes[n]["record"] = replace(record(g, n), branch="residual")
        for n in shortcut:
            g.nodes[n]["record"] = replace(record(g, n), branch="shortcut")
        g.remove_edges_from([(s, name) for s in srcs])
        g.add_edge(srcs[long], name, port=0)
        g.add_edge(srcs[short], name, port=1)
        g.nodes[name]["record"] = replace(rec, attrs={**rec.attrs,
                                                      "branches": ("residual", "shortcut")})


def _sides(g: Graph, srcs: list[str], inside: set[str], entry: set[str]
           ) -> tuple[tuple[int, set[str]], tuple[int, set[str]]] | None:
    """((port, nodes) of the residual branch, (port, nodes) of the shortcut) of an add of
    `srcs` in a block (`inside`, whose inputs are `entry`), or None: no residual unit."""
    if len(entry) == 1:
        (x,) = entry
        p0, p1 = (_path(g, u, inside, x) for u in srcs)
        if p0 is None or p1 is None or p0 & p1 or len(p0) == len(p1):
            return None
        short, long = (0, 1) if len(p0) < len(p1) else (1, 0)
        return (long, (p0, p1)[long]), (short, (p0, p1)[short])
    for short, long in ((1, 0), (0, 1)):
        if srcs[short] not in entry:
            continue
        for x in sorted(entry - {srcs[short]}):
            path = _path(g, srcs[long], inside, x)
            if path:
                return (long, path), (short, set())
    return None


def _path(g: Graph, u: str, inside: set[str], x: str) -> set[str] | None:
    """The block's nodes that feed `u` (u included), if they all start from the input `x`."""
    if u == x:
        return set()
    if u not in inside:
        return None
    seen, todo = {u}, [u]
    while todo:
        for p in g.predecessors(todo.pop()):
            if p == x:
                continue
            if p not in inside:
                return None
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen
